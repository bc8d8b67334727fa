//! Unlinking: the phone removes its companions, which are logged out the way
//! WhatsApp does it and refused at their next login; a companion that logs
//! itself out leaves the account.

use std::time::Duration;

use crate::support::{Companion, Sandbox, pair};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_companions_are_logged_out_and_refused_later() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000201").await;
    let (mut first, _) = pair(&sandbox, "62811000201").await;
    let (mut second, _) = pair(&sandbox, "62811000201").await;
    sandbox
        .phone_until("62811000201", "both online", |v| v.online == [1, 2])
        .await;

    let (status, body) = sandbox.post("/phones/62811000201/unlink", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], json!([1, 2]));
    first.logged_out().await;
    second.logged_out().await;
    let view = sandbox
        .phone_until("62811000201", "nobody online", |v| v.online.is_empty())
        .await;
    assert_eq!(view.devices, vec![0]);
    let store = first.store.clone();
    first.stop().await;
    second.stop().await;

    // The removed device tries again: refused, LoggedOut, and no retrying.
    let logins = sandbox.inner.stats().logins;
    let mut again = Companion::start(&sandbox.ws_url(), store).await;
    again
        .wait_for("LoggedOut", crate::support::STEP, |e| match e {
            wacore::types::events::Event::Connected(_) => panic!("an unlinked device connected"),
            wacore::types::events::Event::LoggedOut(_) => Some(()),
            _ => None,
        })
        .await;
    let handshakes = handshakes(&sandbox);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        handshakes,
        self::handshakes(&sandbox),
        "the client kept retrying"
    );
    assert_eq!(sandbox.inner.stats().logins, logins);
    assert_eq!(sandbox.phone("62811000201").await.devices, vec![0]);
    again.stop().await;
}

fn handshakes(sandbox: &Sandbox) -> u64 {
    let s = sandbox.inner.stats();
    s.xx_handshakes + s.ik_handshakes + s.fallback_handshakes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_that_logs_out_leaves_the_account() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000202").await;
    let (mut companion, device) = pair(&sandbox, "62811000202").await;
    companion.client().logout().await;
    companion.logged_out().await;
    let view = sandbox
        .phone_until("62811000202", "device gone", |v| v.devices == [0])
        .await;
    assert!(view.online.is_empty(), "{view:?}");
    assert_eq!(sandbox.inner.prekey_count("62811000202", device), None);
    companion.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinking_an_unknown_phone_is_404() {
    let sandbox = Sandbox::start().await;
    let (status, body) = sandbox.post("/phones/62811000299/unlink", json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found");
}
