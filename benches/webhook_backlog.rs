//! A webhook backlog must not stall delivery: the dispatcher's claim costs
//! what it takes, not what waits.
//!
//! `cargo bench --bench webhook_backlog` fills the outbox with due rows
//! spread over 1,000 tenants (`BACKLOG`, default `100000,1000000`), on
//! SQLite and on Postgres (`BENCH_DB` picks one), and prints for each size:
//! - one claim of 32 tenants and one read of a tenant's next 100 rows, in
//!   milliseconds (median and worst of 10), on Postgres first with the
//!   statistics of the empty tables (stale), then after `ANALYZE` (fresh);
//! - on Postgres, `EXPLAIN ANALYZE` of both statements, stale and fresh;
//! - deliveries per second while the dispatcher works through the backlog
//!   to a receiver on loopback, over its first `DELIVER` rows (default
//!   20000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row;
use tokio_util::sync::CancellationToken;
use wago::app::App;
use wago::store::webhooks::Hold;
use wago::store::{DbKind, Store, now_ms};
use wago::tenants::TenantId;

#[path = "support_db/mod.rs"]
mod support_db;

const TENANTS: i64 = 1_000;
const CLAIM: i64 = 32;
const ROWS: i64 = 100;

#[tokio::main]
async fn main() {
    support_db::init_tracing();
    let sizes: Vec<i64> = std::env::var("BACKLOG")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BACKLOG: a list of row counts"))
        .collect();
    let deliver: u64 = std::env::var("DELIVER")
        .ok()
        .map_or(20_000, |s| s.parse().expect("DELIVER: a count"));
    let (base, received) = start_receiver().await;
    for size in sizes {
        support_db::each_database(|label, dsn| {
            let (base, received) = (base.clone(), received.clone());
            async move { run(label, &dsn, size, deliver, &base, &received).await }
        })
        .await;
    }
}

async fn start_receiver() -> (String, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, received)
}

async fn run(db: &str, dsn: &str, size: i64, deliver: u64, base: &str, received: &AtomicU64) {
    let config = support_db::webhook_config(dsn);
    let store = Store::connect(&config.dsn).await.expect("connect");
    store.migrate().await.expect("migrate");
    if store.kind() == DbKind::Postgres {
        // Statistics of empty tables, kept while the rows go in.
        for sql in [
            "ANALYZE",
            "ALTER TABLE webhook_outbox SET (autovacuum_enabled = false)",
            "ALTER TABLE webhook_queues SET (autovacuum_enabled = false)",
        ] {
            sqlx::query(sql).execute(store.pool()).await.expect(sql);
        }
    }
    let started = Instant::now();
    fill(&store, size, base).await;
    println!(
        "{db:8} | backlog {size:>9} | filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if store.kind() == DbKind::Postgres {
        measure(db, size, "stale statistics", &store).await;
        sqlx::query("ANALYZE")
            .execute(store.pool())
            .await
            .expect("analyze");
    }
    measure(db, size, "fresh statistics", &store).await;

    // The dispatcher works through the backlog.
    let app = App::build(&config).await.expect("app");
    let stop = CancellationToken::new();
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    let task = tokio::spawn(app.run(stop.clone()));
    let deadline = started + Duration::from_secs(300);
    let mut last = Instant::now();
    while received.load(Ordering::Relaxed) - before < deliver && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "  {db}: {} of {deliver} delivered",
                received.load(Ordering::Relaxed) - before
            );
        }
    }
    let done = received.load(Ordering::Relaxed) - before;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{db:8} | backlog {size:>9} | dispatcher: {done} delivered in {secs:.1} s = {:.0} deliveries/s",
        done as f64 / secs
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    store.close().await;
}

/// 1,000 tenants with a webhook each, `size` due outbox rows spread over
/// them, and their queues due.
async fn fill(store: &Store, size: i64, base: &str) {
    let payload = format!(
        r#"{{"event":"message.received","text":"{}"}}"#,
        "x".repeat(200)
    );
    let statements = [
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {TENANTS})
             INSERT INTO tenants (id, name, created_at) SELECT 't' || i, 'tenant-' || i, 0 FROM n"
        ),
        format!(
            "INSERT INTO webhook_endpoints (tenant_id, url, secret, events, enabled, trusted,
                                            created_at, updated_at)
             SELECT id, '{base}/hook', NULL, '[\"message.received\"]', 1, 1, 0, 0 FROM tenants"
        ),
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {size})
             INSERT INTO webhook_outbox (tenant_id, event_id, event, sequence, payload, status,
                                         next_attempt_at, created_at)
             SELECT 't' || (1 + i % {TENANTS}), 'e' || i, 'message.received', i, '{payload}',
                    'pending', i, i FROM n"
        ),
        "INSERT INTO webhook_queues (tenant_id, due_at)
         SELECT tenant_id, MIN(next_attempt_at) FROM webhook_outbox GROUP BY tenant_id"
            .to_owned(),
    ];
    for sql in statements {
        sqlx::query(&sql).execute(store.pool()).await.expect("fill");
    }
}

/// Times the claim and the read of a claimed tenant's rows, then lets the
/// claimed tenants go.
async fn measure(db: &str, size: i64, label: &str, store: &Store) {
    if store.kind() == DbKind::Postgres {
        explain(store, label).await;
    }
    let mut claims = Vec::new();
    let mut reads = Vec::new();
    let mut held: Vec<(String, TenantId)> = Vec::new();
    for round in 0..10 {
        let token = format!("bench-{round}");
        let started = Instant::now();
        let tenants = store
            .claim_queues(&token, now_ms() + 600_000, CLAIM)
            .await
            .expect("claim");
        claims.push(started.elapsed());
        assert_eq!(tenants.len() as i64, CLAIM, "every tenant has rows due");
        let started = Instant::now();
        let rows = store.due_deliveries(&tenants[0], ROWS).await.expect("rows");
        reads.push(started.elapsed());
        assert_eq!(rows.len() as i64, ROWS.min(size / TENANTS));
        held.extend(tenants.into_iter().map(|t| (token.clone(), t)));
    }
    for (token, tenant) in held {
        store
            .settle_deliveries(&tenant, &token, &[], Hold::Release)
            .await
            .expect("release");
    }
    println!(
        "{db:8} | backlog {size:>9} | {label:16} | claim of {CLAIM} tenants: {} | a tenant's next {ROWS} rows: {}",
        spread(&mut claims),
        spread(&mut reads)
    );
}

fn spread(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.2} ms, worst {:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    )
}

/// `EXPLAIN ANALYZE` of the claim and of the read, rolled back.
async fn explain(store: &Store, label: &str) {
    let queries = store.hot_queries();
    let find = |name: &str| {
        queries
            .iter()
            .find(|q| q.name == name)
            .unwrap_or_else(|| panic!("no hot query named {name}"))
    };
    let claim = find("tenants with webhook deliveries due");
    let rows = find("a tenant's due deliveries");
    let mut tx = store.pool().begin().await.expect("begin");
    let (claim_sql, rows_sql) = (
        format!("EXPLAIN ANALYZE {}", claim.sql),
        format!("EXPLAIN ANALYZE {}", rows.sql),
    );
    let plans = [
        sqlx::query(&claim_sql)
            .bind(now_ms() + 600_000)
            .bind("explain")
            .bind(now_ms())
            .bind(CLAIM),
        sqlx::query(&rows_sql).bind("t1").bind(now_ms()).bind(ROWS),
    ];
    for plan in plans {
        let lines = plan.fetch_all(&mut *tx).await.expect("explain");
        println!("  Postgres, {label}:");
        for line in lines {
            println!("    {}", line.try_get::<String, _>(0).unwrap_or_default());
        }
    }
    tx.rollback().await.expect("rollback");
}
