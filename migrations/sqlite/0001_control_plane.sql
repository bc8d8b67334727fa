-- Control plane: tenants, their API keys, messages and webhook delivery.
-- Times are unix milliseconds (INTEGER), the same on Postgres (BIGINT).

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    store_dsn  TEXT,
    -- The last `sequence` given to one of this tenant's events.
    event_seq  INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    -- 'admin' for keys handed out by the admin API, 'env' for API_KEY.
    source       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    direction       TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    message_id      TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    sender_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    text            TEXT,
    status          TEXT NOT NULL,
    error           TEXT,
    idempotency_key TEXT,
    timestamp       INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- WhatsApp may deliver a message again after a crash: store it once.
CREATE UNIQUE INDEX messages_once ON messages (tenant_id, direction, chat_id, sender_id, message_id);
CREATE INDEX messages_by_tenant ON messages (tenant_id, direction, id);
CREATE UNIQUE INDEX messages_by_idempotency_key ON messages (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE webhook_endpoints (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    secret     TEXT,
    -- JSON array of event names.
    events     TEXT NOT NULL,
    enabled    INTEGER NOT NULL DEFAULT 1,
    -- Why delivery stopped (a 410 Gone answer), until the URL is set again.
    disabled_reason TEXT,
    -- Set by the operator (WEBHOOK_URL): exempt from the private-address guard.
    trusted    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE webhook_outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- Sent as webhook-id; stable across retries so receivers can deduplicate.
    event_id         TEXT NOT NULL UNIQUE,
    event            TEXT NOT NULL,
    sequence         INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    -- pending (never tried), failed (a retry is due), delivered, dead.
    status           TEXT NOT NULL,
    -- Tries counted against the retry schedule (a replay starts it again).
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    -- The dispatcher holding this row, and until when.
    locked_until     INTEGER,
    lease_token      TEXT,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
-- Only rows still to deliver, and only leased ones: both stay small.
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX webhook_outbox_leased ON webhook_outbox (tenant_id)
    WHERE status IN ('pending', 'failed') AND locked_until IS NOT NULL;
CREATE INDEX webhook_outbox_by_tenant ON webhook_outbox (tenant_id, id);

CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id       INTEGER NOT NULL REFERENCES webhook_outbox(id) ON DELETE CASCADE,
    attempted_at    INTEGER NOT NULL,
    status_code     INTEGER,
    error           TEXT,
    latency_ms      INTEGER NOT NULL,
    response_prefix TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (outbox_id, id);
