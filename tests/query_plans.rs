//! Every statement on a hot path is served by an index and costs what its
//! work costs, not what its table holds: the send queue, acks and receipts
//! (a message by its WhatsApp id), the webhook claim, session status, the
//! node's renewal, placement and commands. The tables are filled the way a
//! busy server's are (most messages long delivered, most outbox rows done,
//! every session placed) and analysed; each plan is read with `EXPLAIN`
//! on Postgres (sequential scans priced out) and `EXPLAIN QUERY PLAN` on
//! SQLite. Each statement is then run at 1,000 and at 10,000 tenants (ten
//! times every table, the same amount of work waiting) and must cost about
//! as much at both sizes: as many pages touched on Postgres, as many
//! virtual-machine steps on SQLite.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::TestDb;
use sqlx::Connection;
use wago::store::plans::{HotQuery, Sample};

db_tests!(
    every_hot_query_uses_its_index,
    hot_queries_cost_the_same_at_ten_times_the_rows,
    prepared_hot_queries_stay_cheap_as_messages_grow_unanalysed
);

/// The numbers 1 to `count` as the rows `n(i)`, for an `INSERT … SELECT`.
fn up_to(count: usize) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})")
}

/// `n` tenants with their sessions (all placed but 10, whose leases were
/// released and which wait on the placement queue), 40 messages each, 40 outbox rows each, a webhook queue each
/// and 2 commands each. The work waiting is the same at any `n`: 400
/// queued sends, 400 pending and 400 failed deliveries, 100 due queues, 20
/// pending commands, 10 sessions to place.
fn fill(n: usize) -> Vec<String> {
    vec![
        format!(
            "{} INSERT INTO tenants (id, name, created_at) SELECT 't' || i, 'tenant-' || i, 0 FROM n",
            up_to(n)
        ),
        format!(
            "{} INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind,
                                      status, timestamp, created_at, updated_at)
             SELECT 't' || (1 + i % {n}), CASE WHEN i % 3 = 0 THEN 'in' ELSE 'out' END, 'm' || i,
                    'c' || (i % 50), 's', 'conversation',
                    CASE WHEN i % 3 = 0 THEN 'received' WHEN i <= 600 THEN 'queued' ELSE 'read' END,
                    i, i, i FROM n",
            up_to(40 * n)
        ),
        // A file beside every fourth message; the first 100 still kept.
        "INSERT INTO media (message_row, tenant_id, kind, mimetype, size, sha256, state,
                            storage_key, created_at)
         SELECT id, tenant_id, 'image', 'image/jpeg', 1, 'x',
                CASE WHEN id <= 400 THEN 'stored' ELSE 'released' END,
                CASE WHEN id <= 400 THEN 'k' || id END, id
           FROM messages WHERE id % 4 = 1"
            .to_owned(),
        format!(
            "{} INSERT INTO webhook_outbox (tenant_id, event_id, event, sequence, payload, status,
                                            next_attempt_at, created_at)
             SELECT 't' || (1 + i % {n}), 'e' || i, 'message.received', i, '{{}}',
                    CASE WHEN i <= 400 THEN 'pending' WHEN i <= 800 THEN 'failed'
                         ELSE 'delivered' END, i, i FROM n",
            up_to(40 * n)
        ),
        format!(
            "{} INSERT INTO webhook_queues (tenant_id, due_at)
             SELECT 't' || i, CASE WHEN i <= 100 THEN i END FROM n",
            up_to(n)
        ),
        format!(
            "{} INSERT INTO session_status (tenant_id, state, node_id, lease_token, since, updated_at)
             SELECT 't' || i, CASE WHEN i % 10 = 0 THEN 'unpaired' ELSE 'connected' END,
                    'node-' || (i % 3), 1, 0, 0 FROM n",
            up_to(n)
        ),
        format!(
            "{} INSERT INTO session_leases (session_id, owner_node, instance, token, held, acquired_at)
             SELECT 't' || i, 'node-' || (i % 3), 'wago:' || (i % 3), 1,
                    CASE WHEN i <= 10 THEN 0 ELSE 1 END, 0 FROM n",
            up_to(n)
        ),
        "INSERT INTO placement_queue (tenant_id, queued_at)
         SELECT session_id, 0 FROM session_leases WHERE held = 0"
            .to_owned(),
        "INSERT INTO nodes (id, instance, address, started_at, heartbeat_at, expires_at)
         VALUES ('node-0', 'wago:0', 'a', 0, 0, 9000000000000),
                ('node-1', 'wago:1', 'a', 0, 0, 9000000000000),
                ('node-2', 'wago:2', 'a', 0, 0, 9000000000000)"
            .to_owned(),
        format!(
            "{} INSERT INTO session_commands (tenant_id, kind, status, created_at, updated_at)
             SELECT 't' || (1 + i % {n}), 'logout',
                    CASE WHEN i <= 20 THEN 'pending' ELSE 'done' END, i, i FROM n",
            up_to(2 * n)
        ),
        "ANALYZE".to_owned(),
    ]
}

async fn every_hot_query_uses_its_index(db: TestDb) {
    let store = db.store().await;
    for sql in fill(1000) {
        sqlx::query(&sql).execute(store.pool()).await.unwrap();
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

/// Each hot statement costs about as much with ten times the rows in
/// every table (the B-trees may grow a level): on Postgres the pages it
/// touches, on SQLite the virtual-machine steps it runs (each row it
/// visits costs steps). One that reads rows in proportion to its table
/// fails here, unless it says why it may.
async fn hot_queries_cost_the_same_at_ten_times_the_rows(first: TestDb) {
    let postgres = matches!(first, TestDb::Postgres { .. });
    let unit = if postgres { "pages" } else { "steps" };
    let mut first = Some(first);
    let mut costs = Vec::new();
    for n in [1_000, 10_000] {
        let db = match first.take() {
            Some(db) => db,
            None if postgres => TestDb::postgres().await,
            None => TestDb::sqlite().await,
        };
        let store = db.store().await;
        for sql in fill(n) {
            sqlx::query(&sql).execute(store.pool()).await.unwrap();
        }
        let mut at_n = Vec::new();
        for query in store.hot_queries() {
            let cost = if postgres {
                let pages = store.buffers(&query).await.unwrap_or_else(|e| {
                    panic!("EXPLAIN ANALYZE of {}: {e}", query.name);
                });
                pages.expect("Postgres counts pages") as u64
            } else {
                sqlite_steps(&db.dsn(), &query).await
            };
            at_n.push((query.name, query.grows, cost));
        }
        costs.push(at_n);
        store.close().await;
    }
    let mut grew = Vec::new();
    for ((name, grows, small), (_, _, large)) in costs[0].iter().zip(&costs[1]) {
        println!("{name}: {small} {unit} at 1,000 tenants, {large} at 10,000");
        if *large > 2 * small + 8 {
            match grows {
                Some(why) => println!("  (grows, as it may: {why})"),
                None => grew.push(format!("{name}: {small} -> {large} {unit}")),
            }
        }
    }
    assert!(grew.is_empty(), "cost grows with the table: {grew:?}");
}

/// `count` more tenants, each with 40 messages long delivered or read and
/// 40 outbox rows long delivered: the tables grow, the work waiting does
/// not.
fn grow(count: usize) -> Vec<String> {
    vec![
        format!(
            "{} INSERT INTO tenants (id, name, created_at) SELECT 'g' || i, 'grown-' || i, 0 FROM n",
            up_to(count)
        ),
        format!(
            "{} INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind,
                                      status, timestamp, created_at, updated_at)
             SELECT 'g' || (1 + i % {count}), CASE WHEN i % 3 = 0 THEN 'in' ELSE 'out' END,
                    'gm' || i, 'c' || (i % 50), 's', 'conversation',
                    CASE WHEN i % 3 = 0 THEN 'received' ELSE 'read' END, i, i, i FROM n",
            up_to(40 * count)
        ),
        format!(
            "{} INSERT INTO webhook_outbox (tenant_id, event_id, event, sequence, payload, status,
                                            next_attempt_at, created_at)
             SELECT 'g' || (1 + i % {count}), 'ge' || i, 'message.received', i, '{{}}',
                    'delivered', i, i FROM n",
            up_to(40 * count)
        ),
    ]
}

/// Nothing may count on `ANALYZE` having run: autovacuum may be off, or
/// behind. A statement first run while `messages` was empty (a new
/// database) must cost as little once it holds 100,000 rows. On Postgres
/// each hot statement the store keeps prepared is prepared by name on a
/// connection of the store's own pool and run six times, after which
/// Postgres may keep a generic plan made for the empty tables, then
/// measured again once the tables grew; one the store does not keep
/// prepared is planned with its values at both sizes. On SQLite the steps
/// are counted at both sizes.
async fn prepared_hot_queries_stay_cheap_as_messages_grow_unanalysed(db: TestDb) {
    let postgres = matches!(db, TestDb::Postgres { .. });
    let store = db.store().await;
    // 25 tenants, their sessions and queues, no message and no outbox
    // row yet. No ANALYZE.
    for sql in fill(25).into_iter().filter(|sql| {
        sql != "ANALYZE"
            && !sql.contains("INSERT INTO messages")
            && !sql.contains("INSERT INTO webhook_outbox")
    }) {
        sqlx::query(&sql).execute(store.pool()).await.unwrap();
    }
    let queries = store.hot_queries();
    let mut conn = match postgres {
        true => Some(store.pool().acquire().await.unwrap()),
        false => None,
    };
    let mut small = Vec::new();
    for (i, query) in queries.iter().enumerate() {
        let cost = match conn.as_mut() {
            Some(_) if !query.prepared => store.buffers(query).await.unwrap().unwrap() as u64,
            Some(conn) => {
                let conn: &mut sqlx::AnyConnection = conn;
                sqlx::raw_sql(&format!("PREPARE hot{i} AS {}", query.sql))
                    .execute(&mut *conn)
                    .await
                    .unwrap_or_else(|e| panic!("PREPARE {}: {e}", query.name));
                for _ in 0..6 {
                    run_rolled_back(conn, &format!("EXECUTE hot{i}{}", query.literals())).await;
                }
                prepared_buffers(conn, i, query).await
            }
            None => sqlite_steps(&db.dsn(), query).await,
        };
        small.push(cost);
    }
    // 2,500 tenants more: 100,000 messages.
    for sql in grow(2_500) {
        sqlx::query(&sql).execute(store.pool()).await.unwrap();
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 100_000);
    let unit = if postgres { "pages" } else { "steps" };
    let mut grew = Vec::new();
    for (i, query) in queries.iter().enumerate() {
        let large = match conn.as_mut() {
            Some(_) if !query.prepared => store.buffers(query).await.unwrap().unwrap() as u64,
            Some(conn) => prepared_buffers(&mut *conn, i, query).await,
            None => sqlite_steps(&db.dsn(), query).await,
        };
        println!(
            "{}: {} {unit} with no message, {large} at 100,000",
            query.name, small[i]
        );
        if large > 2 * small[i] + 8 {
            match query.grows {
                Some(why) => println!("  (grows, as it may: {why})"),
                None => grew.push(format!("{}: {} -> {large} {unit}", query.name, small[i])),
            }
        }
    }
    assert!(grew.is_empty(), "cost grows with the table: {grew:?}");
}

async fn run_rolled_back(conn: &mut sqlx::AnyConnection, sql: &str) -> Vec<String> {
    let mut tx = conn.begin().await.unwrap();
    let rows = sqlx::raw_sql(sql)
        .fetch_all(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.rollback().await.unwrap();
    use sqlx::Row;
    rows.iter()
        .filter_map(|row| row.try_get::<String, _>(0).ok())
        .collect()
}

/// The pages the statement prepared as `hot{i}` touches, run once the way
/// its cached plan says.
async fn prepared_buffers(conn: &mut sqlx::AnyConnection, i: usize, query: &HotQuery) -> u64 {
    let sql = format!(
        "EXPLAIN (ANALYZE, BUFFERS) EXECUTE hot{i}{}",
        query.literals()
    );
    let plan = run_rolled_back(conn, &sql).await;
    wago::store::plans::buffers_in(&plan) as u64
}

/// The SQLite virtual-machine steps `query` runs once, counted by a
/// progress handler called at every step, in a transaction that is
/// rolled back, so a write changes nothing.
async fn sqlite_steps(dsn: &str, query: &HotQuery) -> u64 {
    let mut conn = sqlx::SqliteConnection::connect(dsn).await.unwrap();
    let steps = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&steps);
    conn.lock_handle()
        .await
        .unwrap()
        .set_progress_handler(1, move || {
            counter.fetch_add(1, Ordering::Relaxed);
            true
        });
    let statement = || {
        query
            .params
            .iter()
            .fold(sqlx::query(&query.sql), |statement, param| match param {
                Sample::Text(t) => statement.bind(*t),
                Sample::Int(i) => statement.bind(*i),
            })
    };
    // Once to read the schema and prepare the statement, which cost steps
    // of their own, then once counted.
    let mut counted = 0;
    for counting in [false, true] {
        let mut tx = conn.begin().await.unwrap();
        steps.store(0, Ordering::Relaxed);
        statement()
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", query.name));
        if counting {
            counted = steps.load(Ordering::Relaxed);
        }
        tx.rollback().await.unwrap();
    }
    counted
}
