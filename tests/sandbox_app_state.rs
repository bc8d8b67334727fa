//! App state across an account's devices: a change one companion makes
//! (its push name) is kept by the server and reaches the account's other
//! companion, which applies it.
#![cfg(feature = "sandbox")]

mod support_sandbox;

use std::time::Duration;

use support_sandbox::{Sandbox, pair};
use wacore::types::events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_name_set_on_one_device_reaches_the_other() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000061").await;
    let (first, _) = pair(&sandbox, "62811000061").await;
    let (mut second, _) = pair(&sandbox, "62811000061").await;
    first
        .client()
        .profile()
        .set_push_name("Renamed Here")
        .await
        .expect("push name set");
    second
        .wait_for("the new push name", Duration::from_secs(15), |e| match e {
            Event::SelfPushNameUpdated(u) if u.new_name == "Renamed Here" => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(second.client().push_name(), "Renamed Here");
    first.stop().await;
    second.stop().await;
}
