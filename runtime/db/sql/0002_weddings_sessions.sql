CREATE TABLE weddings (
    id          uuid PRIMARY KEY,
    name        text        NOT NULL,
    date        date        NOT NULL,
    timezone    text        NOT NULL,
    status      text        NOT NULL DEFAULT 'planning'
                CHECK (status IN ('planning', 'wedding_day', 'completed', 'cancelled')),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Contact details are Fernet tokens (field-level encryption); never plaintext.
CREATE TABLE wedding_members (
    wedding_id   uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    user_id      text        NOT NULL,
    role         text        NOT NULL
                 CHECK (role IN ('couple', 'planner', 'vendor', 'family', 'guest')),
    display_name text,
    email_enc    bytea,
    phone_enc    bytea,
    added_by     text        NOT NULL,
    added_at     timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (wedding_id, user_id)
);
CREATE INDEX wedding_members_user ON wedding_members (user_id);

-- Only the SHA-256 of a session token is stored.
CREATE TABLE sessions (
    id                 uuid PRIMARY KEY,
    wedding_id         uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    user_id            text        NOT NULL,
    token_hash         bytea       NOT NULL UNIQUE,
    device_fingerprint text,
    ip                 inet,
    user_agent         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_seen_at       timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    ended_at           timestamptz,
    end_reason         text
);
CREATE INDEX sessions_active ON sessions (wedding_id, user_id) WHERE ended_at IS NULL;

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    wedding_id  uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    ip          inet,
    at          timestamptz NOT NULL DEFAULT now(),
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_wedding ON audit_log (wedding_id, id DESC);
