//! `wago sandbox --listen ... --state ...` as a user runs it: it prints
//! where it listens, serves the control API, and on Ctrl-C writes its state
//! file and exits cleanly.
#![cfg(feature = "sandbox")]

mod support_sandbox;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support_sandbox::{Control, TempState};

#[tokio::test]
async fn wago_sandbox_serves_and_keeps_its_state() {
    let state = TempState::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wago"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state.0)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("wago starts");
    let stdout = child.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("a line in time")
        .expect("reader")
        .expect("stdout line");
    let control_url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no control URL in {line:?}"));
    let addr = control_url
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let control = Control::new(addr);

    assert_eq!(
        control.get("/sandbox/health").await,
        (200, json!({ "ok": true }))
    );
    let created = control.create_phone("62811000501").await;

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let exit = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("exits in time")
        .expect("waiter")
        .expect("exit status");
    assert!(exit.success(), "{exit:?}");

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state.0).expect("state file")).expect("JSON");
    let accounts = saved["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["phone"], "62811000501");
    assert_eq!(accounts[0]["lid"].to_string(), created.lid);
}
