//! `wago sandbox` (a sandbox build of the server) runs the same sandbox as
//! the `wago-sandbox` program, with the same flags.
#![cfg(feature = "sandbox")]

#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::process::Command;

#[tokio::test]
async fn wago_sandbox_serves_and_keeps_its_state() {
    let mut wago = Command::new(env!("CARGO_BIN_EXE_wago"));
    wago.arg("sandbox");
    support_sandbox::serves_and_keeps_its_state(wago).await;
}
