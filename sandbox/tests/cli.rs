//! `wago-sandbox --listen ... --state ...` as a user runs it: it prints
//! where it listens, serves the control API, and on Ctrl-C writes its state
//! file and exits cleanly.

use std::process::Command;

#[tokio::test]
async fn wago_sandbox_serves_and_keeps_its_state() {
    crate::support::serves_and_keeps_its_state(Command::new(env!("CARGO_BIN_EXE_wago-sandbox")))
        .await;
}
