-- Nothing acknowledged is ever lost (docs/runtime.md, docs/conflicts.md).

-- The conflicts worker's result events, written in the same transaction as the state they
-- describe and published to WEDSYNC_EVENTS only after that commit, in id order per
-- partition, by the outbox relay (workers/conflicts/outbox.py). A row is deleted in the
-- transaction that records its stream seq, so an event exists in JetStream only for a
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
