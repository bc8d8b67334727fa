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
