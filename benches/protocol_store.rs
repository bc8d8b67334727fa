//! Per-call cost of the protocol store's hot methods (what the client does
//! for every message: load and store a Signal session, load a prekey and an
//! identity) on SQLite and on Postgres. Prints figures; asserts nothing.
//!
//! `cargo bench --bench protocol_store`. Postgres is the server at
//! WAGO_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres),
//! where the bench creates a database of its own and drops it at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::Connection;
use wacore::store::traits::SignalStore;
use wago::config::Dsn;
use wago::store::{SessionId, SessionStore, Store};

/// Other sessions sharing the tables, so lookups search a shared index.
const NEIGHBOURS: usize = 10;
/// Rows of each kind per session.
const ROWS: u32 = 1000;
const SESSION_RECORD_BYTES: usize = 1500;
const PREKEY_RECORD_BYTES: usize = 100;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = Dsn::Sqlite(dir.path().join("bench.db"));
        run("sqlite", &sqlite).await;

        let admin = std::env::var("WAGO_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        match BenchDatabase::create(&admin).await {
            Ok(db) => {
                run("postgres", &Dsn::Postgres(db.url.clone())).await;
                db.drop().await;
            }
            Err(e) => println!("postgres: skipped, no server at {admin} ({e})"),
        }
    });
}

async fn run(label: &str, dsn: &Dsn) {
    let store = Store::connect(dsn).await.expect("connect");
    store.migrate().await.expect("migrate");
    for n in 0..NEIGHBOURS {
        fill(&store.session_store(SessionId::from_raw(&format!("neighbour-{n}")))).await;
    }
    let s = store.session_store(SessionId::from_raw("bench"));
    fill(&s).await;

    println!(
        "{label}: {} sessions x {ROWS} rows of each kind",
        NEIGHBOURS + 1
    );
    let record = vec![7u8; SESSION_RECORD_BYTES];
    let address = |i: u32| format!("1555{:07}:1@s.whatsapp.net", i % ROWS);
    time(label, "get_session", 2000, |i| {
        let (s, a) = (s.clone(), address(i));
        async move { s.get_session(&a).await.map(|r| assert!(r.is_some())) }
    })
    .await;
    time(label, "put_session", 500, |i| {
        let (s, a, r) = (s.clone(), address(i), record.clone());
        async move { s.put_session(&a, &r).await }
    })
    .await;
    time(label, "put_sessions_batch (8 per call)", 200, |i| {
        let s = s.clone();
        let batch: Vec<(Arc<str>, Bytes)> = (0..8)
            .map(|k| (Arc::from(address(i * 8 + k)), Bytes::from(record.clone())))
            .collect();
        async move { s.put_sessions_batch(&batch).await }
    })
    .await;
    time(label, "load_prekey", 2000, |i| {
        let s = s.clone();
        async move {
            s.load_prekey(i % ROWS + 1)
                .await
                .map(|r| assert!(r.is_some()))
        }
    })
    .await;
    time(label, "load_identity", 2000, |i| {
        let (s, a) = (s.clone(), address(i));
        async move { s.load_identity(&a).await.map(|r| assert!(r.is_some())) }
    })
    .await;
    store.close().await;
}

/// `ROWS` sessions, prekeys and identities in `s`, written in batches.
async fn fill(s: &SessionStore) {
    let sessions: Vec<(Arc<str>, Bytes)> = (0..ROWS)
        .map(|i| {
            let address = format!("1555{i:07}:1@s.whatsapp.net");
            (
                Arc::from(address),
                Bytes::from(vec![1u8; SESSION_RECORD_BYTES]),
            )
        })
        .collect();
    s.put_sessions_batch(&sessions).await.expect("sessions");
    let identities: Vec<(Arc<str>, [u8; 32])> =
        sessions.iter().map(|(a, _)| (a.clone(), [2; 32])).collect();
    s.put_identities_batch(&identities)
        .await
        .expect("identities");
    let prekeys: Vec<(u32, Bytes)> = (1..=ROWS)
        .map(|id| (id, Bytes::from(vec![3u8; PREKEY_RECORD_BYTES])))
        .collect();
    s.store_prekeys_batch(&prekeys, true)
        .await
        .expect("prekeys");
}

/// Runs `call` `n` times in a row after a short warm-up; prints the mean
/// and the 50th and 99th percentiles of one call.
async fn time<F, Fut, E>(label: &str, name: &str, n: u32, call: F)
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Debug,
{
    for i in 0..n / 10 {
        call(i).await.expect("warm-up call");
    }
    let mut took: Vec<Duration> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        call(i).await.expect("call");
        took.push(start.elapsed());
    }
    took.sort();
    let mean = took.iter().sum::<Duration>() / n;
    let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
    println!(
        "  {label:<8} {name:<32} {n:>5} calls  mean {:>8.1} us  p50 {:>8.1} us  p99 {:>8.1} us",
        micros(mean),
        micros(pct(50)),
        micros(pct(99)),
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A Postgres database made for one run and dropped after it.
struct BenchDatabase {
    admin: String,
    name: String,
    url: String,
}

impl BenchDatabase {
    async fn create(admin: &str) -> Result<Self, sqlx::Error> {
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        let name = format!("wago_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let mut url = url::Url::parse(admin).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        url.set_path(&name);
        Ok(BenchDatabase {
            admin: admin.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    async fn drop(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::query(&sql).execute(&mut conn).await;
        }
    }
}
