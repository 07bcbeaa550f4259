-- Presence analytics: one row per member per wedding per local day of the wedding.
-- Bit i of `present` / `active` is minute i since that day's local midnight (bit(1500)
-- so a 25-hour DST day fits). Samples OR their bit in, so a repeated sample, a restarted
-- worker or two worker replicas never count a minute twice.
CREATE TABLE presence_minutes (
    wedding_id  uuid       NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    user_id     text       NOT NULL,
    day         date       NOT NULL,
    present     bit(1500)  NOT NULL,
    active      bit(1500)  NOT NULL,
    PRIMARY KEY (wedding_id, day, user_id)
);
