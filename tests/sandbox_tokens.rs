//! Restricted accounts and privacy tokens: an account whose push name
//! asks for it (`restricted:`) refuses a stranger's first message with a
//! 463 nack; once it issues the stranger a trusted-contact token, the
//! stranger's client holds it, attaches it, and the message goes through.
#![cfg(feature = "sandbox")]

mod support_sandbox;

use std::time::Duration;

use support_sandbox::{Companion, Sandbox};
use whatsapp_rust::NodeFilter;

async fn scan(sandbox: &Sandbox, push_name: &str) -> (Companion, String) {
    let mut companion = Companion::named(&sandbox.ws_url(), push_name).await;
    let qr = companion.next_qr().await;
    let (status, linked) = sandbox.scan_qr(&qr).await;
    assert_eq!(status, 200, "scan-qr: {linked}");
    companion.connected().await;
    (
        companion,
        linked["phone"].as_str().expect("a phone").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_account_takes_messages_only_with_its_token() {
    let sandbox = Sandbox::start().await;
    let (mut rita, r_phone) = scan(&sandbox, "restricted:rita").await;
    let (mut sam, s_phone) = scan(&sandbox, "sam").await;
    let (stranger, _) = scan(&sandbox, "stan").await;

    // A stranger's first message is refused.
    let nack = stranger
        .client()
        .wait_for_node(NodeFilter::tag("ack").attr("error", "463"));
    stranger.send_text(&r_phone, "hello?").await;
    tokio::time::timeout(Duration::from_secs(10), nack)
        .await
        .expect("a 463 nack in time")
        .expect("the nack");

    // Rita writes to Sam: her client issues him a token, his keeps it...
    rita.send_text(&s_phone, "hi sam").await;
    assert_eq!(sam.texts(1).await[0].text, "hi sam");
    let key = rita.client().lid().expect("a LID").user.to_string();
    let started = std::time::Instant::now();
    while sam
        .client()
        .tc_token()
        .get(&key)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no token stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and attaches it to his reply, which goes through.
    sam.send_text(&r_phone, "hi rita").await;
    assert_eq!(rita.texts(1).await[0].text, "hi rita");
    for companion in [rita, sam, stranger] {
        companion.stop().await;
    }
}
