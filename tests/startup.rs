//! Start-up: configuration errors from the real binary, and the SQLite
//! one-process lock.

mod common;

use std::process::Command;

use common::{TestApp, TestDb};

#[test]
fn bad_configuration_stops_the_binary_naming_each_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_wago"))
        .arg("serve")
        .env_clear()
        .env("PORT", "99999")
        .env("DSN", "mysql://localhost/x")
        .env("WEBHOOK_URL", "not a url")
        .output()
        .expect("run wago");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in ["PORT", "DSN", "WEBHOOK_URL"] {
        assert!(
            stderr.contains(&format!("- {name}:")),
            "{name} in: {stderr}"
        );
    }
}

/// `wago migrate` prepares a database and exits; `LOG_FORMAT=json` makes
/// every log line a JSON object.
#[test]
fn migrate_prepares_the_database_and_logs_can_be_json() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("fresh.db");
    let out = Command::new(env!("CARGO_BIN_EXE_wago"))
        .arg("migrate")
        .env_clear()
        .env("DSN", format!("sqlite://{}", db.display()))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .output()
        .expect("run wago");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
    let names = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("sqlite://{}", db.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("the migrated file opens");
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        names.join("\n")
    });
    for table in [
        "tenants",
        "messages",
        "webhook_outbox",
        "wa_devices",
        "session_leases",
    ] {
        assert!(names.lines().any(|n| n == table), "{table} in {names}");
    }

    // The server's log lines are JSON objects; it is killed once it has
    // said the database is ready.
    let mut child = Command::new(env!("CARGO_BIN_EXE_wago"))
        .arg("serve")
        .env_clear()
        .env("DSN", format!("sqlite://{}", db.display()))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_TOKEN", "an-admin-token-for-tests")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wago");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
        if line.starts_with("wago:") {
            continue; // the start-up notes on stderr that are not the log
        }
        let parsed: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        let message = parsed["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.push(message.clone());
        if message == "database ready" {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|m| m == "database ready"), "{seen:?}");
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused_until_the_first_stops() {
    let db = TestDb::sqlite().await;
    let first = TestApp::spawn(&db, &[]).await;
    let config = common::test_config(&db, &[]);
    let err = match wago::app::App::build(&config).await {
        Ok(_) => panic!("a second server on the same SQLite file must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("another wago process"), "{err}");
    assert!(err.contains("Postgres"), "{err}");
    first.stop().await;
    let second = TestApp::spawn(&db, &[]).await;
    second.stop().await;
}
