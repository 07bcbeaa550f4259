-- Live documents (issue 21, docs/documents.md): one row per named Yjs document of a
-- wedding. Its updates live in JetStream (WEDSYNC_DOCS, wedsync.doc.<wedding>.<id>); the
-- documents worker folds them into snapshots here. ``head_seq``: the newest stream seq of
-- the document the worker has seen; ``snapshot_seq``: the newest one folded into a snapshot.
CREATE TABLE documents (
    id           uuid        PRIMARY KEY,
    wedding_id   uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    owner_id     text,       -- the member of a private document (vows:, speech:)
    shared       boolean     NOT NULL DEFAULT false,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    head_seq     bigint      NOT NULL DEFAULT 0,
    snapshot_seq bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (wedding_id, name)
);
CREATE INDEX documents_dirty ON documents (updated_at) WHERE head_seq > snapshot_seq;

-- Versions: the whole document (a Yjs update from the empty document) as of ``seq``,
-- the newest stream seq folded in. The newest row is what a room loads before the tail.
CREATE TABLE document_snapshots (
    document_id uuid        NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq         bigint      NOT NULL,
    state       bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, seq)
);

-- Who changed a document between two snapshots: one row per (snapshot, author).
CREATE TABLE document_authors (
    document_id uuid        NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq         bigint      NOT NULL,  -- the snapshot these updates were folded into
    user_id     text        NOT NULL,
    updates     integer     NOT NULL,
    PRIMARY KEY (document_id, seq, user_id)
);
CREATE INDEX document_authors_user ON document_authors (user_id);
