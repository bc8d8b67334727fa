-- The webhook claim costs what it takes, not what waits. One row per
-- tenant that has ever had a delivery says when its earliest waiting
-- delivery is due and which dispatcher holds the tenant; dispatchers claim
-- tenants from here, then read only the claimed tenants' first rows.
-- Times are unix milliseconds.

CREATE TABLE webhook_queues (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    -- When the earliest pending or failed delivery is due; NULL when none
    -- waits.
    due_at       BIGINT,
    -- The dispatcher delivering this tenant's events, and until when.
    locked_until BIGINT,
    lease_token  TEXT
);
CREATE INDEX webhook_queues_due ON webhook_queues (due_at) WHERE due_at IS NOT NULL;

INSERT INTO webhook_queues (tenant_id, due_at)
    SELECT tenant_id, MIN(next_attempt_at) FROM webhook_outbox
    WHERE status IN ('pending', 'failed') GROUP BY tenant_id;

-- A tenant's next rows: never-tried ones in the order they were written,
-- retries by when they are due. Both stay as small as the backlog.
CREATE INDEX webhook_outbox_pending ON webhook_outbox (tenant_id, id)
    WHERE status = 'pending';
CREATE INDEX webhook_outbox_retrying ON webhook_outbox (tenant_id, next_attempt_at)
    WHERE status = 'failed';

-- Rows are no longer leased one by one: the tenant's queue is.
DROP INDEX webhook_outbox_due;
DROP INDEX webhook_outbox_leased;
ALTER TABLE webhook_outbox DROP COLUMN locked_until;
ALTER TABLE webhook_outbox DROP COLUMN lease_token;
