-- Retention: the event archive (history JetStream no longer holds), per-wedding archive
-- marks, hot-retention settings per wedding, presence roll-ups and the jobs' run log.

-- How long a wedding's events stay in JetStream (NULL: the server default), and when it
-- was completed (events are archived a configurable time after that).
ALTER TABLE weddings ADD COLUMN hot_days integer CHECK (hot_days BETWEEN 1 AND 3650);
ALTER TABLE weddings ADD COLUMN completed_at timestamptz;
-- The events stream's last seq when the wedding was created: every event of the wedding
-- has a higher seq, so purges below it (other weddings archived) cost it nothing.
ALTER TABLE weddings ADD COLUMN events_from bigint;

CREATE FUNCTION weddings_completed_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed' THEN
        NEW.completed_at := now();
    ELSIF NEW.status <> 'completed' THEN
        NEW.completed_at := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER weddings_completed_at BEFORE UPDATE OF status ON weddings
    FOR EACH ROW EXECUTE FUNCTION weddings_completed_at();

-- Events moved out of WEDSYNC_EVENTS, partitioned by the month JetStream stored them in
-- (partitions are created by the archive job as needed). `seq` is the stream seq; `data`
-- the exact stored bytes (the event envelope, JSON). A seq's `stored_at` never changes, so
-- (seq, stored_at) is as unique as seq and an archived event is inserted at most once.
CREATE TABLE event_archive (
    wedding_id  uuid        NOT NULL,
    seq         bigint      NOT NULL,
    channel     text        NOT NULL,
    stored_at   timestamptz NOT NULL,
    data        bytea       NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (seq, stored_at)
) PARTITION BY RANGE (stored_at);
CREATE INDEX event_archive_wedding ON event_archive (wedding_id, seq);

-- Per wedding: every one of its events with seq <= purged_upto is in the archive (and no
-- longer in JetStream); last_seq is the newest archived seq (the head once JetStream holds
-- none of the wedding's events).
CREATE TABLE archive_marks (
    wedding_id  uuid        PRIMARY KEY,
    purged_upto bigint      NOT NULL DEFAULT 0,
    last_seq    bigint      NOT NULL DEFAULT 0,
    archived    bigint      NOT NULL DEFAULT 0,  -- events moved so far
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Presence minutes of days past the detail window, rolled up to counts.
CREATE TABLE presence_days (
    wedding_id      uuid    NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    user_id         text    NOT NULL,
    day             date    NOT NULL,
    present_minutes integer NOT NULL,
    active_minutes  integer NOT NULL,
    PRIMARY KEY (wedding_id, day, user_id)
);

-- One row per job run: what it did, whether it finished, and its invariant's verdict.
CREATE TABLE retention_runs (
    id          bigserial   PRIMARY KEY,
    job         text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    ok          boolean,
    counts      jsonb       NOT NULL DEFAULT '{}',
    error       text
);
CREATE INDEX retention_runs_job ON retention_runs (job, id DESC);
