//! Messaging end to end: WAGO's API, its sessions and the sandbox's
//! simulated phones, with real Signal encryption on the wire. Sends reach
//! the phone and come back with receipts; what the phone sends lands in
//! the persisted inbox and the webhook; two tenants never see each other's
//! messages; and a crash of the server loses neither. Every test runs on
//! SQLite and on Postgres.
#![cfg(feature = "sandbox")]

mod common;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;
mod support_wago;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::TestDb;
use common::receiver::Receiver;
use support_sandbox::{Control, STEP, Sandbox};
use support_wago::{Tenant, spawn, text_to};

const ACME: &str = "62811000301";
const BOB: &str = "62812000302";
const CAROL: &str = "62812000303";

/// Texts `phone` received, as `(from, text)`.
async fn phone_inbox(sandbox: &Sandbox, phone: &str) -> Vec<Value> {
    let (status, body) = sandbox.get(&format!("/phones/{phone}/messages")).await;
    assert_eq!(status, 200, "GET /phones/{phone}/messages: {body}");
    body.as_array().cloned().unwrap_or_default()
}

/// Polls the phone's inbox until it holds `n` texts.
async fn phone_inbox_until(
    sandbox: &Sandbox,
    phone: &str,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let inbox = phone_inbox(sandbox, phone).await;
        if inbox.len() >= n {
            return inbox;
        }
        assert!(
            start.elapsed() < within,
            "{phone} got {} of {n} texts: {inbox:?}",
            inbox.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn phone_sends(sandbox: &Control, from: &str, to: &str, text: &str) -> String {
    let (status, body) = sandbox
        .post(
            &format!("/phones/{from}/messages"),
            json!({ "to": to, "text": text }),
        )
        .await;
    assert_eq!(status, 200, "POST /phones/{from}/messages: {body}");
    body["id"].as_str().expect("a message id").to_owned()
}

/// Polls `GET /messages/{id}` until its status is `want`.
async fn status_until(app: &common::TestApp, tenant: &Tenant, id: &str, want: &str) {
    let start = Instant::now();
    loop {
        let (_, body) = tenant.get(app, &format!("/messages/{id}")).await;
        if body["status"] == want {
            return;
        }
        assert!(
            start.elapsed() < STEP,
            "message {id} never became {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the tenant's inbox until it holds `n` messages; returns them all.
async fn inbox_until(
    app: &common::TestApp,
    tenant: &Tenant,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = tenant
                .get(app, &format!("/messages?after={after}&limit=1000"))
                .await;
            assert_eq!(status, 200, "{page}");
            let items = page["messages"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                break;
            }
            after = page["next_after"].as_i64().unwrap();
            all.extend(items);
        }
        if all.len() >= n {
            return all;
        }
        assert!(start.elapsed() < within, "inbox has {} of {n}", all.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn texts_and_otps_reach_the_phone_with_receipts(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ACME).await;
    sandbox.create_phone(BOB).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    let hook = Receiver::start().await;
    let (status, _) = acme.post(&app, "/webhook", json!({})).await;
    assert_eq!(status, 405, "PUT, not POST");
    acme.webhook(&app, &hook.url(), &["message.status"]).await;
    acme.pair(&app, &sandbox, ACME).await;

    let (status, sent) = acme
        .post(&app, "/send-text", text_to(BOB, "halo bob"))
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["status"], "sent");
    let text_id = sent["message_id"].as_str().unwrap().to_owned();

    let body = json!({ "to": BOB, "code": "654321", "template": "[MyApp] OTP: %s (5 menit)" });
    let (status, otp) = acme.post(&app, "/send-otp", body).await;
    assert_eq!(status, 200, "{otp}");
    let otp_id = otp["message_id"].as_str().unwrap().to_owned();

    let inbox = phone_inbox_until(&sandbox, BOB, 2, STEP).await;
    let texts: Vec<(&str, &str)> = inbox
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        vec![(ACME, "halo bob"), (ACME, "[MyApp] OTP: 654321 (5 menit)")]
    );

    // The phone's delivery receipts, then its read receipts.
    status_until(&app, &acme, &text_id, "delivered").await;
    status_until(&app, &acme, &otp_id, "delivered").await;
    let (status, _) = sandbox
        .post(&format!("/phones/{BOB}/read"), json!({ "from": ACME }))
        .await;
    assert_eq!(status, 200);
    status_until(&app, &acme, &text_id, "read").await;
    status_until(&app, &acme, &otp_id, "read").await;

    // Each change reached the webhook, in order per message.
    let events = hook.wait_for(6, STEP).await;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for event in &events {
        let body = event.json();
        assert_eq!(body["event"], "message.status");
        seen.entry(body["message_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["status"].as_str().unwrap().to_owned());
    }
    for id in [&text_id, &otp_id] {
        assert_eq!(seen[id.as_str()], vec!["sent", "delivered", "read"], "{id}");
    }
}

async fn what_the_phone_sends_is_stored_and_paged(db: TestDb) {
    let sandbox = Sandbox::start().await;
    for phone in [ACME, BOB, CAROL] {
        sandbox.create_phone(phone).await;
    }
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, ACME).await;

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(phone_sends(&sandbox, BOB, ACME, &format!("bob {i}")).await);
    }
    // The client works on each sender's messages in parallel: Carol writes
    // once Bob's are in, so that the order across chats is known.
    inbox_until(&app, &acme, 5, STEP).await;
    phone_sends(&sandbox, CAROL, ACME, "carol 0").await;
    let all = inbox_until(&app, &acme, 6, STEP).await;
    assert_eq!(all.len(), 6, "each once: {all:?}");
    let bob_jid = format!("{BOB}@s.whatsapp.net");
    for (i, m) in all.iter().take(5).enumerate() {
        assert_eq!(m["text"], format!("bob {i}"), "oldest first");
        assert_eq!(m["message_id"], ids[i].as_str());
        assert_eq!(m["chat_id"], bob_jid.as_str());
        assert_eq!(m["sender_id"], bob_jid.as_str());
        assert_eq!(m["kind"], "conversation");
    }

    // Pages of two, following next_after.
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let (_, page) = acme
            .get(&app, &format!("/messages?limit=2&after={after}"))
            .await;
        let n = page["messages"].as_array().unwrap().len();
        if n == 0 {
            assert_eq!(page["next_after"], after, "an empty page keeps the cursor");
            break;
        }
        pages.push(n);
        after = page["next_after"].as_i64().unwrap();
    }
    assert_eq!(pages, vec![2, 2, 2]);

    // One chat only, by number or by JID.
    let (_, carol) = acme.get(&app, &format!("/messages?chat={CAROL}")).await;
    let carol = carol["messages"].as_array().unwrap().clone();
    assert_eq!(carol.len(), 1);
    assert_eq!(carol[0]["text"], "carol 0");
    let (_, bob) = acme.get(&app, &format!("/messages?chat={bob_jid}")).await;
    assert_eq!(bob["messages"].as_array().unwrap().len(), 5);

    // The inbound message, by its id.
    let (status, one) = acme.get(&app, &format!("/messages/{}", ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(one["direction"], "inbound");
    assert_eq!(one["text"], "bob 0");
}

async fn two_tenants_talk_and_never_mix(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ACME).await;
    sandbox.create_phone(BOB).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    let globex = Tenant::create(&app, "globex").await;
    let hook = Receiver::start().await;
    for tenant in [&acme, &globex] {
        tenant
            .webhook(&app, &hook.url(), &["message.received"])
            .await;
    }
    acme.pair(&app, &sandbox, ACME).await;
    globex.pair(&app, &sandbox, BOB).await;

    let (status, sent) = acme
        .post(&app, "/send-text", text_to(BOB, "from acme"))
        .await;
    assert_eq!(status, 200, "{sent}");
    let (status, _) = globex
        .post(&app, "/send-text", text_to(ACME, "from globex"))
        .await;
    assert_eq!(status, 200);

    let at_globex = inbox_until(&app, &globex, 1, STEP).await;
    let at_acme = inbox_until(&app, &acme, 1, STEP).await;
    assert_eq!(at_globex.len(), 1);
    assert_eq!(at_globex[0]["text"], "from acme");
    assert_eq!(at_globex[0]["message_id"], sent["message_id"]);
    assert_eq!(at_acme.len(), 1);
    assert_eq!(at_acme[0]["text"], "from globex");
    // Globex cannot read acme's send by id.
    let id = sent["message_id"].as_str().unwrap();
    let (_, seen) = globex.get(&app, &format!("/messages/{id}")).await;
    assert_eq!(
        seen["direction"], "inbound",
        "globex sees only its own copy"
    );

    let events = hook.wait_for(2, STEP).await;
    let tenants: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let b = e.json();
            (
                b["tenant"].as_str().unwrap().to_owned(),
                b["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        tenants.contains(&(acme.id.clone(), "from globex".to_owned())),
        "{tenants:?}"
    );
    assert!(
        tenants.contains(&(globex.id.clone(), "from acme".to_owned())),
        "{tenants:?}"
    );
}

async fn a_crash_loses_neither_accepted_sends_nor_received_messages(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ACME).await;
    sandbox.create_phone(BOB).await;
    // A hundred sends a second, so the crash finds some still queued.
    let paced = [("SEND_RATE_PER_MINUTE", "6000"), ("SEND_BURST", "1")];
    let app = spawn(&db, &sandbox, &paced).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, ACME).await;

    const SENDS: usize = 200;
    const RECEIVED: usize = 200;
    // Each answered send's id, as the client learns it.
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut requests = Vec::new();
    for i in 0..SENDS {
        let body = json!({ "to": BOB, "text": format!("send {i}"), "queue": true });
        let request = app
            .http
            .post(app.url("/send-text"))
            .header("X-API-Key", &acme.key)
            .json(&body);
        let answered = answered.clone();
        requests.push(tokio::spawn(async move {
            let response = request.send().await.ok()?;
            let body: Value = response.json().await.ok()?;
            let id = body["message_id"].as_str()?.to_owned();
            answered.lock().unwrap().push(id);
            Some(())
        }));
    }
    // Bob writes half his messages while the server runs (the crash cuts
    // into them) and the other half while it is down (they wait in the
    // offline queue for the next login).
    let bob = Control::new(sandbox.addr);
    let first_half = tokio::spawn(async move {
        for i in 0..RECEIVED / 2 {
            phone_sends(&bob, BOB, ACME, &format!("recv {i}")).await;
        }
    });
    // Kill the server once a quarter of the sends were answered and some
    // of Bob's messages stored.
    let start = Instant::now();
    loop {
        let stored: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE direction = 'in'")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        if answered.lock().unwrap().len() >= SENDS / 4 && stored >= 10 {
            break;
        }
        assert!(start.elapsed() < STEP, "sends or receives are not going on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.crash();
    for request in requests {
        request.abort();
    }
    first_half.await.expect("bob wrote the first half");
    for i in RECEIVED / 2..RECEIVED {
        phone_sends(&sandbox, BOB, ACME, &format!("recv {i}")).await;
    }
    let ids = answered.lock().unwrap().clone();
    assert!(!ids.is_empty(), "no send was accepted before the crash");
    // The crash came mid-stream: some accepted sends had not gone out yet.
    let store = db.store().await;
    let queued: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE direction = 'out' AND status = 'queued'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(
        queued > 0,
        "every send went out before the crash: nothing was tested"
    );
    store.close().await;

    let app = spawn(&db, &sandbox, &paced).await;
    acme.wait_state(&app, "connected").await;

    // Every accepted send reaches the phone exactly once.
    let within = Duration::from_secs(60);
    let start = Instant::now();
    loop {
        let inbox = phone_inbox(&sandbox, BOB).await;
        let got: Vec<&str> = inbox.iter().map(|m| m["id"].as_str().unwrap()).collect();
        if ids.iter().all(|id| got.contains(&id.as_str())) {
            for id in &ids {
                assert_eq!(got.iter().filter(|g| *g == id).count(), 1, "{id} twice");
            }
            break;
        }
        assert!(
            start.elapsed() < within,
            "accepted sends missing at the phone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every message the phone sent is in the inbox exactly once.
    let all = inbox_until(&app, &acme, RECEIVED, within).await;
    let texts: Vec<&str> = all.iter().map(|m| m["text"].as_str().unwrap()).collect();
    for i in 0..RECEIVED {
        let want = format!("recv {i}");
        assert_eq!(
            texts.iter().filter(|t| **t == want).count(),
            1,
            "{want}: {texts:?}"
        );
    }
}

db_tests!(
    a_send_whose_wake_up_was_lost_goes_at_the_sweep,
    without_the_sweep_a_lost_wake_up_waits_for_the_next_one,
    a_send_the_pace_holds_back_answers_queued_at_once,
    one_idempotency_key_sent_at_once_sends_once,
    a_send_to_a_number_not_on_whatsapp_fails,
    texts_and_otps_reach_the_phone_with_receipts,
    what_the_phone_sends_is_stored_and_paged,
    two_tenants_talk_and_never_mix,
    a_crash_loses_neither_accepted_sends_nor_received_messages,
);

/// A paired tenant (ACME) with a send to BOB written straight to the store,
/// as if its wake-up had been lost; the node sweeps every `sweep`.
async fn a_send_without_its_wake_up(
    db: &TestDb,
    sweep: &str,
    text: &str,
) -> (Sandbox, common::TestApp, Tenant) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ACME).await;
    sandbox.create_phone(BOB).await;
    let app = spawn(db, &sandbox, &[("SEND_QUEUE_SWEEP", sweep)]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, ACME).await;

    let message_id = wago::sessions::new_message_id();
    let chat_id = format!("{BOB}@s.whatsapp.net");
    let row = wago::store::messages::NewOutbound {
        message_id: &message_id,
        chat_id: &chat_id,
        kind: "conversation",
        text,
        idempotency_key: None,
    };
    let tenant = wago::tenants::TenantId::from_raw(acme.id.clone());
    app.store
        .accept_outbound(&tenant, "", &row)
        .await
        .expect("written straight to the store");
    (sandbox, app, acme)
}

/// A send written with no wake-up for its queue (as if the signal were
/// lost) is found by the node's sweep and goes; the queue itself never
/// polls.
async fn a_send_whose_wake_up_was_lost_goes_at_the_sweep(db: TestDb) {
    let (sandbox, _app, _acme) = a_send_without_its_wake_up(&db, "1s", "found by the sweep").await;
    let inbox = phone_inbox_until(&sandbox, BOB, 1, STEP).await;
    assert_eq!(inbox[0]["text"], "found by the sweep");
}

/// The control for the test above: with the sweep an hour away, the same
/// row stays queued (nothing else wakes the queue; three of the sweeps
/// above pass meanwhile). A send accepted on this node then hands its row
/// to the queue, which sends it without reading the database: the row
/// whose wake-up was lost still waits for the sweep (or a reconnect).
async fn without_the_sweep_a_lost_wake_up_waits_for_the_next_one(db: TestDb) {
    let (sandbox, app, acme) = a_send_without_its_wake_up(&db, "1h", "lost its wake-up").await;
    // An absence can only be watched for a while: three sweeps' worth.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = sandbox.get(&format!("/phones/{BOB}/messages")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 0, "nothing went: {body}");

    let (status, body) = acme
        .post(
            &app,
            "/send-text",
            json!({ "to": BOB, "text": "handed to the queue" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Had the queue read the database, the older row would have gone first.
    let inbox = phone_inbox_until(&sandbox, BOB, 1, STEP).await;
    let texts: Vec<&str> = inbox.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["handed to the queue"]);
    let tenant = wago::tenants::TenantId::from_raw(acme.id.clone());
    let queued = app.store.queued_outbound(&tenant, 10).await.unwrap();
    let texts: Vec<_> = queued.iter().map(|r| r.text.as_deref()).collect();
    assert_eq!(texts, [Some("lost its wake-up")], "still queued");
}

/// At 60 a minute with a burst of 2, the first two sends go at once and
/// answer `sent`; the next ones answer `202 queued` while still queued,
/// each with a later `expected_at`, and all of them go, in order.
async fn a_send_the_pace_holds_back_answers_queued_at_once(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ACME).await;
    sandbox.create_phone(BOB).await;
    let paced = [("SEND_RATE_PER_MINUTE", "60"), ("SEND_BURST", "2")];
    let app = spawn(&db, &sandbox, &paced).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, ACME).await;

    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(
            acme.post(&app, "/send-text", text_to(BOB, &format!("n{i}")))
                .await,
        );
    }
    for (status, body) in &answers[..2] {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["status"], "sent");
        assert!(body.get("expected_at").is_none(), "{body}");
    }
    common::assert_held_in_order(&answers[2..]);
    let texts: Vec<String> = phone_inbox_until(&sandbox, BOB, 5, STEP)
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts, ["n0", "n1", "n2", "n3", "n4"]);
}

/// Eight requests with one `Idempotency-Key` at the same moment: every one
/// answers with the first send (none fails), and there is one send.
async fn one_idempotency_key_sent_at_once_sends_once(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ACME).await;
    sandbox.create_phone(BOB).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, ACME).await;

    let key = [("Idempotency-Key", "order-7")];
    let requests = (0..8)
        .map(|_| acme.post_with(&app, "/send-text", text_to(BOB, "your order shipped"), &key));
    let answers = futures_util::future::join_all(requests).await;
    let first = &answers[0].1["message_id"];
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 202, "{status} {body}");
        assert_eq!(&body["message_id"], first, "{answers:?}");
    }
    phone_inbox_until(&sandbox, BOB, 1, STEP).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE direction = 'out'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1, "one send row for one key");
}

/// A number WhatsApp does not know: the send goes out, the server refuses
/// it, and the message becomes `failed` with the reason.
async fn a_send_to_a_number_not_on_whatsapp_fails(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ACME).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, ACME).await;

    let (status, body) = acme
        .post(&app, "/send-text", text_to("62899999999", "anyone?"))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["message_id"].as_str().unwrap();
    status_until(&app, &acme, id, "failed").await;
    let (_, row) = acme.get(&app, &format!("/messages/{id}")).await;
    assert!(row["error"].as_str().unwrap().contains("refused"), "{row}");
}
