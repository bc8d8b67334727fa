-- Sessions with a linked device that no node runs: freed by a release (a
-- hand-over, a failed start), by a node fenced after it lapsed, or by a
-- node's restart. Placement takes from here, in proportion to what moves,
-- instead of walking every session; a row goes once a node holds the
-- session's lease. A slow full walk still finds anything missed.
CREATE TABLE placement_queue (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    queued_at BIGINT NOT NULL,
    -- The node instance that took the row to start the session, and when;
    -- another node may take it once that is old (the taker died first).
    taken_by  TEXT,
    taken_at  BIGINT
);
CREATE INDEX placement_queue_by_time ON placement_queue (queued_at);
