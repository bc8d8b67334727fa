//! The mock-server contract of the client library's own end-to-end suite:
//! `POST /admin/mock-phone/scan-qr` pairs a companion to the account its
//! push name stands for (one number per push name, the next device id for
//! each further companion), and push-name flags select server behaviours.

use crate::support::{Companion, Sandbox};

/// Pairs a fresh client presenting `push_name` by the raw-body scan;
/// returns it, connected, with its phone number and device id.
async fn scan(sandbox: &Sandbox, push_name: &str) -> (Companion, String, u64) {
    let mut companion = Companion::named(&sandbox.ws_url(), push_name).await;
    let qr = companion.next_qr().await;
    let (status, linked) = sandbox.scan_qr(&qr).await;
    assert_eq!(status, 200, "scan-qr: {linked}");
    companion.connected().await;
    let phone = linked["phone"].as_str().expect("a phone").to_owned();
    let device = linked["device"].as_u64().expect("a device id");
    (companion, phone, device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_push_name_is_one_number_with_a_device_per_companion() {
    let sandbox = Sandbox::start().await;
    let (first, alice, one) = scan(&sandbox, "alice_1").await;
    let (second, again, two) = scan(&sandbox, "alice_1").await;
    assert_eq!(alice, again, "the same push name is the same number");
    assert_eq!((one, two), (1, 2));
    let (third, bob, device) = scan(&sandbox, "bob_1").await;
    assert_ne!(bob, alice, "a new push name is a new number");
    assert_eq!(device, 1);
    let view = sandbox
        .phone_until(&alice, "both companions online", |v| v.online == [1, 2])
        .await;
    assert_eq!(view.devices, vec![0, 1, 2]);
    // The client learns the number the sandbox gave it.
    let pn = first.client().pn().expect("a number after pairing");
    assert_eq!(pn.user, alice);
    for companion in [first, second, third] {
        companion.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_a_qr_nobody_shows_is_refused() {
    let sandbox = Sandbox::start().await;
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (status, body) = sandbox.scan_qr(&format!("2@none,{key},{key},{key}")).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = sandbox.scan_qr("not a qr").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_push_name_gets_a_new_number_each_time() {
    let sandbox = Sandbox::start().await;
    let (first, one, _) = scan(&sandbox, "").await;
    let (second, two, _) = scan(&sandbox, "").await;
    assert_ne!(one, two);
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_companion_confirms_delivery_to_a_push_name_account() {
    use std::time::Duration;
    use wacore::types::presence::ReceiptType;

    let sandbox = Sandbox::start().await;
    let (mut alice, _, _) = scan(&sandbox, "alice_2").await;
    let (bob, bob_phone, _) = scan(&sandbox, "bob_2").await;
    let store = bob.store.clone();
    bob.stop().await;
    sandbox
        .phone_until(&bob_phone, "bob offline", |v| v.online.is_empty())
        .await;

    // A delivery receipt is active, or `inactive` from a client that has
    // not said it is available yet (a restarted one races its presence
    // against its offline messages).
    let delivered = |id: String| {
        move |e: &wacore::types::events::Event| match e {
            wacore::types::events::Event::Receipt(r)
                if matches!(r.r#type, ReceiptType::Delivered | ReceiptType::Inactive)
                    && r.message_ids.contains(&id) =>
            {
                Some(())
            }
            _ => None,
        }
    };
    let id = alice.send_text(&bob_phone, "are you there?").await;
    let early = tokio::time::timeout(
        Duration::from_secs(2),
        alice.wait_for(
            "a delivery receipt",
            Duration::from_secs(10),
            delivered(id.clone()),
        ),
    );
    assert!(early.await.is_err(), "delivered while no companion was on");

    let mut bob = Companion::start(&sandbox.ws_url(), store).await;
    assert_eq!(bob.texts(1).await[0].text, "are you there?");
    alice
        .wait_for("a delivery receipt", Duration::from_secs(30), delivered(id))
        .await;
    alice.stop().await;
    bob.stop().await;
}
