//! The real `whatsapp-rust` client pairs with the sandbox by QR, logs in
//! again on the same store, and survives a sandbox restart with `--state`.

use std::time::{Duration, Instant};

use crate::support::{Companion, Sandbox, pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_pairs_by_qr_and_connects() {
    let sandbox = Sandbox::start().await;
    let created = sandbox.create_phone("62811000001").await;
    assert_eq!(created.devices, vec![0]);
    assert!(created.online.is_empty());

    let started = Instant::now();
    let mut companion = Companion::fresh(&sandbox.ws_url()).await;
    let qr = companion.next_qr().await;
    let (status, linked) = sandbox.link("62811000001", &qr).await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["device"], 1);
    assert_eq!(linked["jid"], "62811000001:1@s.whatsapp.net");
    companion.connected().await;
    // The phone's app-state key share spares the client its 10 s wait.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "Connected after {took:?}");

    let view = sandbox
        .phone_until("62811000001", "device 1 online", |v| v.online == [1])
        .await;
    assert_eq!(view.devices, vec![0, 1]);
    assert_eq!(view.lid, created.lid);
    // The client uploads its prekeys from a task of its own after
    // Connected, the last of its start-up queries; every one of them must
    // have had a real answer.
    companion.prekeys_uploaded().await;
    let prekeys = sandbox.inner.prekey_count("62811000001", 1);
    assert!(
        prekeys.is_some_and(|n| n > 0),
        "prekeys stored: {prekeys:?}"
    );
    let stats = sandbox.inner.stats();
    assert_eq!(stats.unimplemented_iqs, 0, "{stats:?}");
    // The phone says at pairing that the account is 1:1-LID-migrated.
    let device = companion
        .client()
        .persistence_manager()
        .get_device_snapshot();
    assert!(device.lid_migrated, "the account is LID-migrated");
    companion.stop().await;
    sandbox
        .phone_until("62811000001", "device 1 offline", |v| v.online.is_empty())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_companion_gets_the_next_device_id() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000002").await;
    let (first, one) = pair(&sandbox, "62811000002").await;
    let (second, two) = pair(&sandbox, "62811000002").await;
    assert_eq!((one, two), (1, 2));
    let view = sandbox
        .phone_until("62811000002", "both online", |v| v.online == [1, 2])
        .await;
    assert_eq!(view.devices, vec![0, 1, 2]);
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_companion_logs_in_again_with_ik() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000003").await;
    let (companion, _) = pair(&sandbox, "62811000003").await;
    let store = companion.store.clone();
    companion.stop().await;
    let before = sandbox.inner.stats();
    assert_eq!(before.ik_handshakes, 0, "{before:?}");

    // A new client on the same store: no QR, straight to Connected, by IK.
    let mut again = Companion::start(&sandbox.ws_url(), store).await;
    again.logged_in().await;
    let after = sandbox.inner.stats();
    assert_eq!(after.ik_handshakes, 1, "{after:?}");
    assert_eq!(after.xx_handshakes, before.xx_handshakes, "{after:?}");
    let view = sandbox
        .phone_until("62811000003", "device 1 back online", |v| v.online == [1])
        .await;
    assert_eq!(view.devices, vec![0, 1]);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companions_fetch_each_others_prekey_bundles() {
    use wacore::iq::prekeys::PreKeyFetchSpec;
    use whatsapp_rust::Jid;

    let sandbox = Sandbox::start().await;
    let view = sandbox.create_phone("62811000004").await;
    let (first, _) = pair(&sandbox, "62811000004").await;
    let (second, _) = pair(&sandbox, "62811000004").await;
    let before = sandbox.inner.prekey_count("62811000004", 2);
    let asked = vec![
        Jid::pn_device("62811000004", 0),
        Jid::pn_device("62811000004", 2),
        Jid::lid_device(view.lid.as_str(), 2),
        Jid::pn_device("62811000004", 9),
    ];
    let outcome = first
        .client()
        .execute(PreKeyFetchSpec::new(asked.clone()))
        .await
        .expect("bundles");
    // The phone's and device 2's bundles (by number and by LID), each as
    // asked; device 9 does not exist.
    for jid in &asked[..3] {
        assert!(outcome.bundles.contains_key(jid), "no bundle for {jid}");
    }
    assert!(!outcome.bundles.contains_key(&asked[3]));
    let after = sandbox.inner.prekey_count("62811000004", 2);
    assert_eq!(
        after,
        before.map(|n| n - 2),
        "one one-time prekey per bundle"
    );
    first.stop().await;
    second.stop().await;
}
