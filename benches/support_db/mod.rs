//! The databases a benchmark runs on: a fresh SQLite file, then a fresh
//! Postgres database made (and dropped afterwards) through
//! `WAGO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). `BENCH_DB=sqlite` or
//! `BENCH_DB=postgres` picks one.

use std::future::Future;

use sqlx::Connection;

/// Runs `bench(label, dsn)` on each database in turn.
pub async fn each_database<F, Fut>(mut bench: F)
where
    F: FnMut(&'static str, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let only = std::env::var("BENCH_DB").unwrap_or_default();
    let dir = tempfile::tempdir().expect("temp dir");
    if only.is_empty() || only == "sqlite" {
        let dsn = format!("sqlite://{}", dir.path().join("bench.db").display());
        bench("SQLite", dsn).await;
    }
    if only == "sqlite" {
        return;
    }
    let admin = std::env::var("WAGO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match sqlx::PgConnection::connect(&admin).await {
        Ok(mut conn) => {
            let name = format!("wago_bench_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create db");
            let mut url = url::Url::parse(&admin).expect("url");
            url.set_path(&name);
            bench("Postgres", url.to_string()).await;
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
        Err(e) => println!("Postgres: not measured ({e})"),
    }
}

/// An in-process WAGO on `dsn` for the webhook benches: a random port,
/// and webhooks allowed to the receiver on loopback.
#[allow(dead_code)] // not every bench that reads this file starts one
pub fn webhook_config(dsn: &str) -> wago::config::Config {
    let vars = [
        ("DSN", dsn),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("ADMIN_TOKEN", "bench-admin-token-0123456789"),
        ("WEBHOOK_ALLOW_PRIVATE", "true"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    wago::config::Config::from_map(&vars).expect("bench config")
}

/// A bench setting from the environment, or its default.
#[allow(dead_code)] // not every bench that reads this file has settings
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Logs to stderr, filtered by `RUST_LOG`.
#[allow(dead_code)] // not every bench that reads this file logs this way
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}
