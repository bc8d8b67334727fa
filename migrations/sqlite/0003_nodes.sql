-- Several nodes on one database: who is alive, what every session is
-- doing (written by its owner, read by every node), and commands handed
-- to a session's owner. Times are unix milliseconds.

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    -- Where its HTTP API listens, as the node sees it.
    address      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Live until then by the database's clock; 0 once it left cleanly.
    expires_at   BIGINT NOT NULL
);

CREATE TABLE session_status (
    tenant_id     TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    -- unpaired, pairing, connecting, connected, disconnected, logged_out
    state         TEXT NOT NULL,
    jid           TEXT,
    push_name     TEXT,
    error         TEXT,
    -- The QR code on show while pairing, and when it stops being valid.
    qr            TEXT,
    qr_expires_at BIGINT,
    -- The owner that wrote this row: its node and its lease's token. The
    -- row describes a running session only while that very lease is live.
    node_id       TEXT,
    lease_token   BIGINT,
    -- When `state` was entered.
    since         BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- Placement counts and picks the sessions that should be running.
CREATE INDEX session_status_by_state ON session_status (state, tenant_id);

CREATE TABLE session_commands (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- logout, pair_code, stop
    kind       TEXT NOT NULL,
    argument   TEXT,
    -- pending, running, done, failed, expired
    status     TEXT NOT NULL,
    result     TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX session_commands_pending ON session_commands (tenant_id, id)
    WHERE status = 'pending';

-- A node renews all its leases in one statement.
CREATE INDEX session_leases_by_owner ON session_leases (owner_node) WHERE expires_at > 0;
-- The send queue reads a tenant's queued sends in order.
CREATE INDEX messages_queued ON messages (tenant_id, id)
    WHERE direction = 'out' AND status = 'queued';
-- Acks and receipts find a message by its WhatsApp id.
CREATE INDEX messages_by_message_id ON messages (tenant_id, message_id);
