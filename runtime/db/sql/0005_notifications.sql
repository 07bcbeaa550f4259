-- Notifications: what each member was told (in-app), the outbox and delivery log of every
-- channel, preferences, push subscriptions, webhook endpoints and emergency escalations.

-- One row per (event, recipient): the in-app notification, listed by GET /api/notifications.
CREATE TABLE notifications (
    id              uuid        PRIMARY KEY,
    wedding_id      uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    user_id         text        NOT NULL,
    event_id        text        NOT NULL,
    event_seq       bigint      NOT NULL,
    event_type      text        NOT NULL,
    category        text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    read_at         timestamptz,
    acknowledged_at timestamptz,
    UNIQUE (event_id, user_id)
);
CREATE INDEX notifications_inbox ON notifications (user_id, (read_at IS NULL) DESC, created_at DESC);

-- The outbox and the delivery log in one table: a row per (event, recipient, channel)
-- (per round for escalations, per endpoint for webhooks). `key` is the idempotency key
-- handed to the provider; its uniqueness is what makes a redelivered event send nothing twice.
CREATE TABLE deliveries (
    id              bigserial   PRIMARY KEY,
    key             text        NOT NULL UNIQUE,
    wedding_id      uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    notification_id uuid        REFERENCES notifications (id) ON DELETE CASCADE,
    event_id        text,
    user_id         text,
    webhook_id      uuid,
    channel         text        NOT NULL
                    CHECK (channel IN ('in_app', 'email', 'sms', 'push', 'webhook')),
    category        text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead', 'skipped')),
    reason          text,       -- why it waits or was skipped: quiet_hours, unseen, digest, ...
    unless_read     boolean     NOT NULL DEFAULT false,  -- skip if the in-app one was read
    digest          boolean     NOT NULL DEFAULT false,
    payload         jsonb       NOT NULL DEFAULT '{}',   -- webhooks: the signed body
    attempts        integer     NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL,
    claimed_at      timestamptz,
    claimed_by      integer,    -- the sending process's advisory lock: free = it died
    sent_at         timestamptz,
    provider_ref    text,
    last_error      text,
    created_at      timestamptz NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status IN ('pending', 'sending');
CREATE INDEX deliveries_wedding ON deliveries (wedding_id, id DESC);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, status) WHERE webhook_id IS NOT NULL;

-- Every attempt: channel, result, error, time (never the address).
CREATE TABLE delivery_attempts (
    delivery_id bigint      NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL,
    result      text        NOT NULL CHECK (result IN ('sent', 'failed', 'interrupted', 'skipped')),
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE notification_preferences (
    wedding_id  uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    prefs       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (wedding_id, user_id)
);

-- Web Push subscriptions belong to a user (every wedding they are in), one per browser.
CREATE TABLE push_subscriptions (
    id          uuid        PRIMARY KEY,
    user_id     text        NOT NULL,
    endpoint    text        NOT NULL UNIQUE,
    p256dh      text        NOT NULL,
    auth        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id);

CREATE TABLE webhooks (
    id            uuid        PRIMARY KEY,
    wedding_id    uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    url           text        NOT NULL,
    events        text[]      NOT NULL,
    secret_enc    bytea       NOT NULL,
    enabled       boolean     NOT NULL DEFAULT true,
    disabled_at   timestamptz,
    disabled_reason text,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_wedding ON webhooks (wedding_id);

-- Emergencies re-sent by SMS to the couple and planner until someone acknowledges.
CREATE TABLE escalations (
    event_id        text        PRIMARY KEY,
    wedding_id      uuid        NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    round           integer     NOT NULL DEFAULT 0,
    next_at         timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text
);
CREATE INDEX escalations_due ON escalations (next_at) WHERE acknowledged_at IS NULL;
