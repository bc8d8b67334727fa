//! Every statement on a hot path is served by an index: the send queue,
//! acks and receipts (a message by its WhatsApp id), the webhook claim,
//! session status, lease renewal, placement and commands. The tables are
//! filled the way a busy server's are (most messages long delivered, most
//! outbox rows done, a thousand sessions) and analysed, then each plan is
//! read with `EXPLAIN` on Postgres (sequential scans priced out) and
//! `EXPLAIN QUERY PLAN` on SQLite.

mod common;

use common::TestDb;

db_tests!(every_hot_query_uses_its_index);

/// A thousand tenants with their sessions, 40,000 messages (1 in 100
/// queued), 40,000 outbox rows (1 in 50 pending, 1 in 50 failed), webhook
/// queues (1 in 10 due), 2,000 commands (1 in 100 pending).
const FILL: [&str; 9] = [
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
     INSERT INTO tenants (id, name, created_at) SELECT 't' || i, 'tenant-' || i, 0 FROM n",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
     INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind, status,
                           timestamp, created_at, updated_at)
     SELECT 't' || (1 + i % 1000), CASE WHEN i % 3 = 0 THEN 'in' ELSE 'out' END, 'm' || i,
            'c' || (i % 50), 's', 'conversation',
            CASE WHEN i % 3 = 0 THEN 'received' WHEN i % 100 = 1 THEN 'queued' ELSE 'read' END,
            i, i, i FROM n",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
     INSERT INTO webhook_outbox (tenant_id, event_id, event, sequence, payload, status,
                                 next_attempt_at, created_at)
     SELECT 't' || (1 + i % 1000), 'e' || i, 'message.received', i, '{}',
            CASE WHEN i % 50 = 0 THEN 'pending' WHEN i % 50 = 1 THEN 'failed'
                 ELSE 'delivered' END, i, i FROM n",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
     INSERT INTO webhook_queues (tenant_id, due_at)
     SELECT 't' || i, CASE WHEN i % 10 = 0 THEN i END FROM n",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
     INSERT INTO session_status (tenant_id, state, node_id, lease_token, since, updated_at)
     SELECT 't' || i, CASE WHEN i % 10 = 0 THEN 'unpaired' ELSE 'connected' END,
            'node-' || (i % 3), 1, 0, 0 FROM n",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
     INSERT INTO session_leases (session_id, owner_node, instance, token, held, acquired_at)
     SELECT 't' || i, 'node-' || (i % 3), 'wago:' || (i % 3), 1, 1, 0 FROM n",
    "INSERT INTO nodes (id, instance, address, started_at, heartbeat_at, expires_at)
     VALUES ('node-0', 'wago:0', 'a', 0, 0, 9000000000000),
            ('node-1', 'wago:1', 'a', 0, 0, 9000000000000),
            ('node-2', 'wago:2', 'a', 0, 0, 9000000000000)",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
     INSERT INTO session_commands (tenant_id, kind, status, created_at, updated_at)
     SELECT 't' || (1 + i % 1000), 'logout',
            CASE WHEN i % 100 = 0 THEN 'pending' ELSE 'done' END, i, i FROM n",
    "ANALYZE",
];

async fn every_hot_query_uses_its_index(db: TestDb) {
    let store = db.store().await;
    for sql in FILL {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let queries = store.hot_queries();
    assert!(queries.len() >= 8);
    let mut wrong = Vec::new();
    for query in &queries {
        let plan = store.explain(query).await.unwrap_or_else(|e| {
            panic!("EXPLAIN of {}: {e}", query.name);
        });
        if let Some(fault) = query.fault(&plan) {
            wrong.push(format!("{} {fault}:\n{plan}", query.name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
