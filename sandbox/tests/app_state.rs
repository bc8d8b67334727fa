//! App state across an account's devices: a change one companion makes
//! (its push name) is kept by the server and reaches the account's other
//! companion, which applies it.

use std::time::Duration;

use crate::support::{Sandbox, pair};
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

/// The phone writes its own push name into app state when its first
/// companion links: a companion takes it in its first sync, and so does
/// one that links later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_companion_takes_the_phones_push_name() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000062").await;
    let mut companions = Vec::new();
    for _ in 0..2 {
        let (companion, _) = pair(&sandbox, "62811000062").await;
        assert_ne!(companion.client().push_name(), "");
        let started = std::time::Instant::now();
        while companion.client().push_name() != "+62811000062" {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the companion kept the name {:?}",
                companion.client().push_name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        companions.push(companion);
    }
    for companion in companions {
        companion.stop().await;
    }
}
