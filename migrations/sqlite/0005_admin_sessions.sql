-- Signed-in admin pages: one row per browser session. The cookie holds a
-- random value; only its SHA-256 is stored. Times are unix milliseconds.
CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,
    -- Sent back in X-CSRF-Token with every request that changes something.
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX admin_sessions_by_expiry ON admin_sessions (expires_at);
