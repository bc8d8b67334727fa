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
