//! Presence and typing between two accounts: a subscriber hears whether
//! the other is available; a typing state reaches the recipient while it
//! is connected, and at its next login only while it is still fresh.

use std::time::Duration;

use crate::support::{Companion, Sandbox, config, pair};
use wacore::types::events::Event;

async fn two_accounts(sandbox: &Sandbox) -> (Companion, Companion) {
    sandbox.create_phone("62811000031").await;
    sandbox.create_phone("62811000032").await;
    let (a, _) = pair(sandbox, "62811000031").await;
    let (b, _) = pair(sandbox, "62811000032").await;
    (a, b)
}

fn typing(event: &Event) -> Option<()> {
    matches!(event, Event::ChatPresence(_)).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_hears_the_others_presence() {
    let sandbox = Sandbox::start().await;
    let (a, mut b) = two_accounts(&sandbox).await;
    a.client()
        .presence()
        .set_available()
        .await
        .expect("presence");
    let jid_a = whatsapp_rust::Jid::pn("62811000031");
    b.client()
        .presence()
        .subscribe(&jid_a)
        .await
        .expect("subscribe");
    b.wait_for("A's presence", Duration::from_secs(10), |e| match e {
        Event::Presence(p) if p.from.user == "62811000031" => Some(()),
        _ => None,
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_a_connected_recipient() {
    let sandbox = Sandbox::start().await;
    let (a, mut b) = two_accounts(&sandbox).await;
    let jid_b = whatsapp_rust::Jid::pn("62811000032");
    a.client()
        .chatstate()
        .send_composing(&jid_b)
        .await
        .expect("typing");
    b.wait_for("typing", Duration::from_secs(10), typing).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_waits_for_an_offline_recipient_only_while_fresh() {
    let mut config = config();
    config.chatstate_ttl = Duration::from_secs(2);
    let sandbox = Sandbox::start_with(config).await;
    let (a, b) = two_accounts(&sandbox).await;
    let store = b.store.clone();
    b.stop().await;
    sandbox
        .phone_until("62811000032", "B offline", |v| v.online.is_empty())
        .await;
    let jid_b = whatsapp_rust::Jid::pn("62811000032");

    // Fresh at the next login: delivered.
    a.client()
        .chatstate()
        .send_composing(&jid_b)
        .await
        .expect("typing");
    let mut b = Companion::start(&sandbox.ws_url(), store.clone()).await;
    b.wait_for("fresh typing", Duration::from_secs(10), typing)
        .await;
    b.stop().await;
    sandbox
        .phone_until("62811000032", "B offline again", |v| v.online.is_empty())
        .await;

    // Older than the TTL at the next login: dropped.
    a.client()
        .chatstate()
        .send_paused(&jid_b)
        .await
        .expect("typing");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut b = Companion::start(&sandbox.ws_url(), store).await;
    b.logged_in().await;
    let late = tokio::time::timeout(
        Duration::from_secs(2),
        b.wait_for("stale typing", Duration::from_secs(10), typing),
    );
    assert!(late.await.is_err(), "a stale typing state was delivered");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_subscriber_gets_the_missed_presence_once() {
    let sandbox = Sandbox::start().await;
    let (a, mut b) = two_accounts(&sandbox).await;
    let jid_a = whatsapp_rust::Jid::pn("62811000031");
    let from_a = |e: &Event| match e {
        Event::Presence(p) if p.from.user == "62811000031" => Some(()),
        _ => None,
    };
    b.client()
        .presence()
        .subscribe(&jid_a)
        .await
        .expect("subscribe");
    b.wait_for("A's presence", Duration::from_secs(10), from_a)
        .await;
    let store = b.store.clone();
    b.stop().await;
    sandbox
        .phone_until("62811000032", "B offline", |v| v.online.is_empty())
        .await;
    let client = a.client();
    let presence = client.presence();
    for _ in 0..3 {
        presence.set_unavailable().await.expect("presence");
        presence.set_available().await.expect("presence");
    }
    // The stanzas are on their way; let the sandbox take them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Six changes while B was away: it hears of A again, but not six times.
    let mut b = Companion::start(&sandbox.ws_url(), store).await;
    b.wait_for("A's missed presence", Duration::from_secs(10), from_a)
        .await;
    let mut more = 0;
    while tokio::time::timeout(
        Duration::from_secs(2),
        b.wait_for("more presence", Duration::from_secs(10), from_a),
    )
    .await
    .is_ok()
    {
        more += 1;
        assert!(more < 2, "missed presences were not coalesced: {more} more");
    }
    a.stop().await;
    b.stop().await;
}

/// The server answers a new connection's hello only after the connect
/// latency, as a server a network round trip away does: a client that
/// reconnects at once is offline for at least that long, so a typing state
/// sent meanwhile waits for its login, and arrives then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_at_once_is_offline_for_the_connect_latency() {
    let mut slow = config();
    slow.connect_latency = Duration::from_millis(300);
    let sandbox = Sandbox::start_with(slow).await;
    let (a, mut b) = two_accounts(&sandbox).await;
    let b_jid = b.client().pn().expect("a JID").to_non_ad();

    let started = std::time::Instant::now();
    b.client().reconnect_immediately().await;
    while b.client().is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the reconnect was never seen"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.client()
        .chatstate()
        .send_composing(&b_jid)
        .await
        .expect("typing");
    b.wait_for(
        "typing after the reconnect",
        Duration::from_secs(10),
        typing,
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "back before the connect latency passed"
    );
    a.stop().await;
    b.stop().await;
}
