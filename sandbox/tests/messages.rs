//! Messages through the sandbox with the real `whatsapp-rust` client and
//! real Signal encryption: companion -> simulated phone and back, receipts,
//! the offline queue, retry receipts, companions of two accounts, and
//! unknown numbers.

use std::time::{Duration, Instant};

use crate::support::{Companion, STEP, Sandbox, TempState, config, pair};
use serde_json::json;
use wacore::types::events::Event;
use wacore::types::presence::ReceiptType;
use wago_sandbox::{InboxItem, RunningSandbox};

const A: &str = "62811000201";
const B: &str = "62811000202";
const C: &str = "62811000203";

/// A sandbox with two accounts and a companion paired to the first.
async fn start(first: &str, second: &str) -> (Sandbox, Companion, u16) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(first).await;
    sandbox.create_phone(second).await;
    let (companion, device) = pair(&sandbox, first).await;
    (sandbox, companion, device)
}

/// [`start`], with a state file.
async fn start_kept(state: &TempState) -> (Sandbox, Companion, u16) {
    let sandbox = Sandbox::start_with(config().with_state_file(&state.0)).await;
    sandbox.create_phone(A).await;
    sandbox.create_phone(B).await;
    let (companion, device) = pair(&sandbox, A).await;
    (sandbox, companion, device)
}

/// Stops a sandbox and starts it again on its port and state file.
async fn restart(sandbox: Sandbox, state: &TempState) -> Sandbox {
    let addr = sandbox.inner.addr();
    sandbox.inner.shutdown().await.expect("clean shutdown");
    let mut config = config().with_state_file(&state.0);
    config.listen = addr;
    Sandbox::start_with(config).await
}

/// Polls the phone's inbox until it holds `n` texts.
async fn inbox(sandbox: &RunningSandbox, phone: &str, n: usize) -> Vec<InboxItem> {
    let start = Instant::now();
    loop {
        let items = sandbox.inbox(phone).await.expect("an inbox");
        if items.len() >= n {
            return items;
        }
        assert!(
            start.elapsed() < STEP,
            "{phone} has {items:?}, waited for {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until nothing is queued for the device any more.
async fn drained(sandbox: &RunningSandbox, phone: &str, device: u16) {
    let start = Instant::now();
    while sandbox.queued(phone, device) != Some(0) {
        let left = sandbox.queued(phone, device);
        assert!(start.elapsed() < STEP, "still queued: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_go_both_ways_and_the_second_is_a_signal_message() {
    let (sandbox, mut a, _) = start(A, B).await;

    let first = a.send_text(B, "halo dari A").await;
    let items = inbox(&sandbox.inner, B, 1).await;
    assert_eq!(
        (
            items[0].id.as_str(),
            items[0].from.as_str(),
            items[0].text.as_str()
        ),
        (first.as_str(), A, "halo dari A")
    );
    let stats = sandbox.inner.stats();
    assert_eq!(
        (stats.phone_received_pkmsg, stats.phone_received_msg),
        (1, 0)
    );

    // The phone answers on the session the companion started.
    let reply = sandbox.inner.send_text(B, A, "halo juga").await.unwrap();
    let got = a.texts(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str()),
        (reply.as_str(), "halo juga")
    );
    assert_eq!(got[0].sender.user, B);
    assert_eq!(sandbox.inner.stats().phone_sent_msg, 1);

    // Now both sides have answered: a plain Signal message, no prekey header.
    a.send_text(B, "kedua").await;
    let items = inbox(&sandbox.inner, B, 2).await;
    assert_eq!(items[1].text, "kedua");
    let stats = sandbox.inner.stats();
    assert_eq!(
        (stats.phone_received_pkmsg, stats.phone_received_msg),
        (1, 1)
    );
    assert_eq!(stats.decrypt_failures, 0, "{stats:?}");
    assert_eq!(stats.unimplemented_iqs, 0, "{stats:?}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_and_read_receipts_reach_the_sender() {
    let (sandbox, mut a, _) = start(A, B).await;

    let one = a.send_text(B, "satu").await;
    let two = a.send_text(B, "dua").await;
    a.receipt(&one, ReceiptType::Delivered).await;
    a.receipt(&two, ReceiptType::Delivered).await;
    inbox(&sandbox.inner, B, 2).await;

    // Over the control API, as a script would.
    let (status, body) = sandbox
        .post(&format!("/phones/{B}/read"), json!({ "from": A }))
        .await;
    assert_eq!((status, body["read"].as_u64()), (200, Some(2)), "{body}");
    let read = a.receipt(&one, ReceiptType::Read).await;
    assert!(read.message_ids.contains(&two), "{:?}", read.message_ids);
    // A wrote to B's LID (found by its number): the receipt comes from it.
    assert_eq!(read.source.sender.user, sandbox.phone(B).await.lid);
    // Read once: nothing is left to read.
    assert_eq!(sandbox.inner.read(B, A).await.unwrap(), 0);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_companion_gets_its_messages_in_order_at_login() {
    let (sandbox, a, device) = start(A, B).await;
    drained(&sandbox.inner, A, device).await;
    let store = a.store.clone();
    a.stop().await;

    let mut sent = Vec::new();
    for n in 0..5 {
        let (status, body) = sandbox
            .post(
                &format!("/phones/{B}/messages"),
                json!({ "to": A, "text": format!("pesan {n}") }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        sent.push(body["id"].as_str().expect("an id").to_owned());
    }
    assert_eq!(sandbox.inner.queued(A, device), Some(5));

    let mut again = Companion::start(&sandbox.ws_url(), store).await;
    again.logged_in().await;
    let got = again.texts(5).await;
    let ids: Vec<&str> = got.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(got.iter().all(|t| t.offline), "{got:?}");
    assert_eq!(got[4].text, "pesan 4");
    // Each left the queue with its delivery receipt.
    drained(&sandbox.inner, A, device).await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_arrive_once_each_and_in_order() {
    const N: usize = 1_000;
    let (sandbox, mut a, device) = start(A, B).await;
    let mut sent = Vec::with_capacity(N);
    for n in 0..N {
        let text = format!("nomor {n}");
        sent.push(sandbox.inner.send_text(B, A, &text).await.unwrap());
    }
    let got = a.texts(N).await;
    let texts: Vec<String> = got.iter().map(|t| t.text.clone()).collect();
    let expected: Vec<String> = (0..N).map(|n| format!("nomor {n}")).collect();
    assert_eq!(texts, expected);
    let ids: Vec<String> = got.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, sent);
    drained(&sandbox.inner, A, device).await;
    // Nothing more comes: no duplicates.
    let extra = tokio::time::timeout(Duration::from_millis(500), a.texts(1)).await;
    assert!(extra.is_err(), "a message came twice");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companions_of_two_accounts_talk_to_each_other() {
    let (sandbox, mut a, _) = start(A, C).await;
    let (mut c, _) = pair(&sandbox, C).await;

    let id = a.send_text(C, "dari tenant A").await;
    let got = c.texts(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str()),
        (id.as_str(), "dari tenant A")
    );
    // A's client found C's LID and wrote to it (the account is
    // LID-migrated), so C hears from A's LID, with A's number beside it.
    let a_lid = sandbox.phone(A).await.lid;
    assert_eq!(
        (got[0].sender.user.as_str(), got[0].sender.device),
        (a_lid.as_str(), 1)
    );
    let alt = got[0].sender_alt.as_ref().expect("the number beside it");
    assert_eq!(alt.user, A);
    // C's phone is one of C's devices: it has the text too.
    assert_eq!(inbox(&sandbox.inner, C, 1).await[0].text, "dari tenant A");
    // Delivered by C's companion (forwarded by the sandbox), from the LID
    // the receipt was addressed to.
    let receipt = a.receipt(&id, ReceiptType::Delivered).await;
    assert_eq!(receipt.source.sender.user, sandbox.phone(C).await.lid);

    let back = c.send_text(A, "balasan dari C").await;
    let got = a.texts(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str()),
        (back.as_str(), "balasan dari C")
    );
    assert!(sandbox.inner.stats().relayed >= 2);
    a.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_that_lost_its_session_gets_the_message_again() {
    use wacore::types::jid::JidExt as _;
    use whatsapp_rust::Jid;

    let (sandbox, mut a, _) = start(A, B).await;
    let b = sandbox.phone(B).await;
    sandbox.inner.send_text(B, A, "pertama").await.unwrap();
    a.texts(1).await;
    // An answer: the phone's side of the session is acknowledged.
    a.send_text(B, "balas").await;
    inbox(&sandbox.inner, B, 1).await;
    let store = a.store.clone();
    a.stop().await;
    for jid in [Jid::pn_device(B, 0), Jid::lid_device(b.lid.as_str(), 0)] {
        let address = jid.to_protocol_address_string();
        store
            .delete_session(&address)
            .await
            .expect("session deleted");
    }

    // The phone still has its session: a `msg` the client cannot decrypt.
    let mut a = Companion::start(&sandbox.ws_url(), store).await;
    a.logged_in().await;
    let id = sandbox.inner.send_text(B, A, "kedua").await.unwrap();
    let got = a.texts(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str()),
        (id.as_str(), "kedua")
    );
    // First the plain `msg`, then, after the retry receipt, a fresh pkmsg.
    let stats = sandbox.inner.stats();
    assert_eq!(
        (stats.phone_sent_pkmsg, stats.phone_sent_msg),
        (2, 1),
        "{stats:?}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_numbers_get_a_clear_error() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(A).await;
    let (mut a, _) = pair(&sandbox, A).await;

    // The control API: 404 for an unknown sender or recipient.
    let (status, body) = sandbox
        .post(
            &format!("/phones/{A}/messages"),
            json!({ "to": "62899000001", "text": "x" }),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = sandbox.get("/phones/62899000001/messages").await;
    assert_eq!(status, 404);
    let (status, _) = sandbox
        .post(
            &format!("/phones/{A}/messages"),
            json!({ "to": "abc", "text": "x" }),
        )
        .await;
    assert_eq!(status, 422);

    // The client: the usync finds no devices, and the server refuses the
    // message (which still carries the copy for the sender's own phone).
    let id = a.send_text("62899000001", "halo?").await;
    let error = a
        .wait_for("a nack", STEP, |e| match e {
            Event::ServerAck(ack) if ack.id == id => Some(ack.error.clone()),
            _ => None,
        })
        .await;
    assert_eq!(error.as_deref(), Some("404"));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_never_confirmed_comes_again_at_the_next_login() {
    let (sandbox, a, device) = start(A, B).await;
    drained(&sandbox.inner, A, device).await;
    let store = a.store.clone();
    a.stop().await;

    // The client gets the message but cannot commit it: no receipt.
    let mut failing = Companion::start_with(&sandbox.ws_url(), store.clone(), Some(false)).await;
    failing.logged_in().await;
    let id = sandbox.inner.send_text(B, A, "simpan").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sandbox.inner.queued(A, device), Some(1));
    failing.stop().await;

    let mut again = Companion::start_with(&sandbox.ws_url(), store, Some(true)).await;
    again.logged_in().await;
    let got = again.texts(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str()),
        (id.as_str(), "simpan")
    );
    drained(&sandbox.inner, A, device).await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_working_after_a_restart_with_state() {
    let state = TempState::new();
    let (first, mut a, _) = start_kept(&state).await;
    a.send_text(B, "sebelum").await;
    inbox(&first.inner, B, 1).await;
    first.inner.send_text(B, A, "balas sebelum").await.unwrap();
    a.texts(1).await;
    let second = restart(first, &state).await;
    a.logged_in().await;
    // Both ways on the sessions from before: plain `msg`, nothing new.
    second.inner.send_text(B, A, "sesudah").await.unwrap();
    assert_eq!(a.texts(1).await[0].text, "sesudah");
    a.send_text(B, "juga sesudah").await;
    let items = inbox(&second.inner, B, 2).await;
    assert_eq!(items[1].text, "juga sesudah");
    let stats = second.inner.stats();
    assert_eq!(
        (stats.phone_sent_pkmsg, stats.phone_sent_msg),
        (0, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.phone_received_pkmsg, stats.phone_received_msg),
        (0, 1),
        "{stats:?}"
    );
    assert_eq!(stats.decrypt_failures, 0, "{stats:?}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_other_companion_gets_its_copy() {
    let (sandbox, mut a1, _) = start(A, B).await;
    let (mut a2, _) = pair(&sandbox, A).await;
    // The first companion takes the sandbox's word of the new device.
    a1.wait_for("the device list update", STEP, |e| {
        matches!(e, Event::DeviceListUpdate(_)).then_some(())
    })
    .await;
    let id = a1.send_text(B, "dari perangkat satu").await;
    let got = a2.texts(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str()),
        (id.as_str(), "dari perangkat satu")
    );
    // Between an account's own devices, the sender goes by its LID.
    let lid = sandbox.phone(A).await.lid;
    assert_eq!(
        (got[0].sender.user.as_str(), got[0].sender.device),
        (lid.as_str(), 1)
    );
    assert!(got[0].sender.is_lid());
    assert_eq!(
        inbox(&sandbox.inner, B, 1).await[0].text,
        "dari perangkat satu"
    );
    a1.stop().await;
    a2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_survive_a_restart_with_state() {
    let state = TempState::new();
    let (first, a, device) = start_kept(&state).await;
    drained(&first.inner, A, device).await;
    let store = a.store.clone();
    a.stop().await;
    let id = first.inner.send_text(B, A, "menunggu").await.unwrap();
    let second = restart(first, &state).await;
    assert_eq!(second.inner.queued(A, device), Some(1));
    let mut again = Companion::start(&second.ws_url(), store).await;
    again.logged_in().await;
    let got = again.texts(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].text.as_str()),
        (id.as_str(), "menunggu")
    );
    drained(&second.inner, A, device).await;
    again.stop().await;
}

/// What a phone sends, its own companions get too: a message from their
/// own account, in the chat with the recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phones_text_reaches_its_own_companions_as_sent_by_them() {
    let (sandbox, _b, _) = start(B, A).await;
    let (mut a, _) = pair(&sandbox, A).await;
    let id = sandbox
        .inner
        .send_text(A, B, "dari ponsel A")
        .await
        .expect("the phone sends");
    let (from_me, chat, text) = a
        .wait_for("the phone's own text", STEP, |e| match e {
            Event::Messages(batch) => batch.messages.iter().find(|m| m.info.id == id).map(|m| {
                (
                    m.info.source.is_from_me,
                    m.info.source.chat.user.to_string(),
                    m.message.conversation.clone(),
                )
            }),
            _ => None,
        })
        .await;
    assert!(from_me, "sent by the companion's own account");
    assert_eq!(chat, B, "in the chat with the recipient");
    assert_eq!(text.as_deref(), Some("dari ponsel A"));
    assert_eq!(inbox(&sandbox.inner, B, 1).await[0].text, "dari ponsel A");
    drained(&sandbox.inner, A, 1).await;
    a.stop().await;
}
