-- Nothing acknowledged is ever lost (docs/runtime.md, docs/conflicts.md).

-- The conflicts worker's result events, written in the same transaction as the state they
-- describe and published to WEDSYNC_EVENTS only after that commit, in id order per
-- partition, by the outbox relay (workers/conflicts/outbox.py). A row is deleted in the
-- statement that records its stream seq, so an event exists in JetStream only for a
-- committed change, and each is published exactly once (Nats-Msg-Id deduplicates a retry
-- inside the stream's duplicate window; an older retry is looked up in the stream first).
CREATE TABLE event_outbox (
    id            bigserial   PRIMARY KEY,
    partition     integer     NOT NULL,
    wedding_id    uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    subject       text        NOT NULL,
    msg_id        text        NOT NULL UNIQUE,
    payload       bytea       NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- since when a publish of it may have happened (the outcome of a try may be unknown):
    -- written with the row, which is relayed right after its commit
    first_try_at  timestamptz
);
CREATE INDEX event_outbox_partition ON event_outbox (partition, id);
CREATE INDEX event_outbox_wedding ON event_outbox (wedding_id);

-- Wakes the relay of each partition rows were written for, when the transaction commits
-- (a notification is delivered at commit, and not at all on rollback); a trigger rather
-- than a NOTIFY statement: no extra round trip per change.
CREATE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wedsync_outbox', p::text) FROM (SELECT DISTINCT partition AS p FROM added) q;
    RETURN NULL;
END $$;
CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();

-- Per wedding, the stream seq of its newest event the relay confirmed: an unconfirmed row
-- can only be stored after it (rows are published and confirmed in order). Apart from
-- wedding_state, whose row the conflicts worker holds FOR UPDATE while it applies a
-- change: the relay must not wait for that lock (nor make the worker wait for its own).
CREATE TABLE outbox_published (
    wedding_id  uuid    PRIMARY KEY REFERENCES weddings (id) ON DELETE CASCADE,
    seq         bigint  NOT NULL
);

-- Failures of a worker's handler on healthy infrastructure, per message: what counts
-- towards the dead-letter limit. Outages of NATS or PostgreSQL are not written here (the
-- runner waits them out and retries without counting), so JetStream's delivery count is
-- not used: it also counts redeliveries caused by outages and restarts.
CREATE TABLE worker_failures (
    consumer    text        NOT NULL,
    stream      text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    failures    integer     NOT NULL,
    last_error  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream, stream_seq)
);
