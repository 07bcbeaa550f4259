-- The authoritative shared state of each wedding, written only by the conflicts worker.

-- One row per wedding: `seq` is the WEDSYNC_EVENTS seq of the last event the worker
-- published for it. The worker holds this row FOR UPDATE while it publishes and commits;
-- GET /state holds it FOR SHARE, so a snapshot never misses a published event.
CREATE TABLE wedding_state (
    wedding_id  uuid   PRIMARY KEY REFERENCES weddings (id) ON DELETE CASCADE,
    seq         bigint NOT NULL DEFAULT 0
);

-- Every entity ever created; a deleted one stays as a tombstone (delete wins over later
-- updates). field_versions: field → the entity version that last changed it.
CREATE TABLE entities (
    wedding_id     uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    kind           text        NOT NULL,
    entity_id      text        NOT NULL,
    version        integer     NOT NULL,
    deleted        boolean     NOT NULL DEFAULT false,
    fields         jsonb       NOT NULL,
    field_versions jsonb       NOT NULL,
    field_authors  jsonb       NOT NULL,
    created_by     text        NOT NULL,
    updated_by     text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (wedding_id, kind, entity_id)
);

-- Budget changes waiting for a couple member's decision.
CREATE TABLE approvals (
    id            uuid        PRIMARY KEY,
    wedding_id    uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    change        jsonb       NOT NULL,
    requested_by  text        NOT NULL,
    requested_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'granted', 'denied', 'expired')),
    decided_by    text,
    decided_at    timestamptz
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE status = 'pending';
