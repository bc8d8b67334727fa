//! Several `wago serve` processes on one Postgres database and one sandbox:
//! every node answers for every session with the owner's answer, sessions
//! spread evenly, move when a node is killed or stopped, and nothing
//! accepted or delivered is lost or doubled on the way.
//!
//! The nodes are real processes (the binary under test); the sandbox and
//! the webhook receiver run in the test. Figures are printed, not asserted
//! on time.
#![cfg(feature = "sandbox")]

mod common;
mod support_nodes;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::TestDb;
use common::receiver::Receiver;
use support_nodes::{
    Node, Tenant, create_tenants, pair_all, placement, wait_all_connected, wait_spread, wait_state,
};
use support_sandbox::{STEP, Sandbox};

/// Short, so that failover is quick; renewed every third of it.
const LEASE: &str = "6s";
/// The number every tenant writes to.
const RECIPIENT: &str = "62899000001";

/// The texts `phone` received, as (text, count).
async fn inbox(sandbox: &Sandbox, phone: &str) -> HashMap<String, usize> {
    let (status, body) = sandbox.get(&format!("/phones/{phone}/messages")).await;
    assert_eq!(status, 200, "{body}");
    let mut counts = HashMap::new();
    for m in body.as_array().unwrap() {
        *counts
            .entry(m["text"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// Three nodes, sixty tenants: the sessions spread within one of even, and
/// every tenant route, asked of a node that does not run the session,
/// answers with what the owner did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_for_every_session() {
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(RECIPIENT).await;
    let a = Node::start("node-a", &db.dsn(), &sandbox, LEASE);
    let tenants = create_tenants(&a, &sandbox, 60).await;
    let started = Instant::now();
    pair_all(&a, &sandbox, &tenants, 10).await;
    println!("paired 60 sessions on one node in {:?}", started.elapsed());

    let b = Node::start("node-b", &db.dsn(), &sandbox, LEASE);
    let c = Node::start("node-c", &db.dsn(), &sandbox, LEASE);
    let spread = wait_spread(&c, 3, 60, Duration::from_secs(120)).await;
    println!(
        "spread 60 sessions over 3 nodes in {spread:?}: {:?}",
        placement(&a).await
    );
    wait_all_connected(&b, &tenants, None, STEP).await;
    let nodes = [&a, &b, &c];
    let by_name = |name: &str| *nodes.iter().find(|n| n.name == name).unwrap();

    // Every node gives the same answer for every session.
    for t in &tenants {
        let answers: Vec<Value> = futures_util::future::join_all(
            nodes
                .iter()
                .map(|n| async { n.get(&t.key, "/session").await.1 }),
        )
        .await;
        assert_eq!(answers[0]["state"], "connected", "{}", answers[0]);
        assert!(answers[0]["node"].is_string(), "{}", answers[0]);
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    }

    // One tenant per owner, served by the two nodes that do not run it.
    let mut owners_seen = HashSet::new();
    for t in &tenants {
        // A session re-paired below may move a neighbour on (placement
        // evens the count out again): wait until this one has its owner.
        let session = wait_state(&a, t, "connected").await;
        let owner = match session["node"].as_str() {
            Some(node) => node.to_owned(),
            None => continue,
        };
        if !owners_seen.insert(owner.clone()) {
            continue;
        }
        let others: Vec<&Node> = nodes.iter().copied().filter(|n| n.name != owner).collect();
        let (asker, reader) = (others[0], others[1]);

        let text = format!("from {} through {}", t.id, asker.name);
        let (status, sent) = asker
            .post(
                &t.key,
                "/send-text",
                json!({ "to": RECIPIENT, "text": text }),
            )
            .await;
        assert_eq!(status, 200, "a send through a non-owner: {sent}");
        assert_eq!(sent["status"], "sent", "{sent}");
        let id = sent["message_id"].as_str().unwrap();
        let (status, message) = reader.get(&t.key, &format!("/messages/{id}")).await;
        assert_eq!(status, 200, "{message}");
        assert_eq!(message["direction"], "outbound", "{message}");
        assert_ne!(message["status"], "queued", "{message}");
        let start = Instant::now();
        while inbox(&sandbox, RECIPIENT).await.get(&text) != Some(&1) {
            assert!(
                start.elapsed() < STEP,
                "{text:?} never reached the phone once"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, otp) = asker
            .post(
                &t.key,
                "/send-otp",
                json!({ "to": RECIPIENT, "code": "424242" }),
            )
            .await;
        assert_eq!((status, &otp["status"]), (200, &json!("sent")), "{otp}");
        let (status, inbox_page) = reader.get(&t.key, "/messages").await;
        assert_eq!(status, 200, "{inbox_page}");
        let hook = json!({ "url": "http://127.0.0.1:9/hook", "events": ["message.received"] });
        let (status, set) = asker
            .call(
                reqwest::Method::PUT,
                "/webhook",
                ("X-API-Key", &t.key),
                Some(hook),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{set}");
        let (status, shown) = reader.get(&t.key, "/webhook").await;
        assert_eq!(
            (status, &shown["url"]),
            (200, &json!("http://127.0.0.1:9/hook")),
            "{shown}"
        );
        let (status, deliveries) = reader.get(&t.key, "/webhook/deliveries").await;
        assert_eq!(status, 200, "{deliveries}");

        let (status, body) = asker.post(&t.key, "/session/logout", json!({})).await;
        assert_eq!(status, 200, "a logout through a non-owner: {body}");
        assert_eq!(body["state"], "logged_out", "{body}");
        assert_eq!(
            by_name(&owner).get(&t.key, "/session").await.1["state"],
            "logged_out"
        );
        sandbox
            .phone_until(&t.phone, "the companion unlinked", |p| p.devices == vec![0])
            .await;

        // A QR code asked of one node starts pairing there; another node
        // serves the same code, and a pair code for that session.
        let (status, qr) = asker.get(&t.key, "/session/qr").await;
        assert_eq!(status, 200, "{qr}");
        let (_, session) = reader.get(&t.key, "/session").await;
        assert_eq!(session["state"], "pairing", "{session}");
        assert_eq!(session["node"], asker.name.as_str(), "{session}");
        let (status, qr_elsewhere) = reader.get(&t.key, "/session/qr").await;
        assert_eq!(status, 200, "{qr_elsewhere}");
        let (_, qr_again) = asker.get(&t.key, "/session/qr").await;
        assert!(
            qr_elsewhere["qr"] == qr["qr"] || qr_elsewhere["qr"] == qr_again["qr"],
            "{qr} / {qr_elsewhere}"
        );
        let (status, code) = reader
            .post(&t.key, "/session/pair-code", json!({ "phone": t.phone }))
            .await;
        assert_eq!(status, 200, "a pair code through a non-owner: {code}");
        let (status, linked) = sandbox
            .post(
                &format!("/phones/{}/link-code", t.phone),
                json!({ "code": code["code"] }),
            )
            .await;
        assert_eq!(status, 200, "{linked}");
        wait_state(by_name(&owner), t, "connected").await;
    }
    assert_eq!(owners_seen.len(), 3, "every node ran sessions");
}

/// Sends through whichever node answers: the same `Idempotency-Key` again
/// on another node when one does not answer, so every send is accepted
/// exactly once. Returns the message id.
async fn send_anywhere(
    nodes: &[&Node],
    first: usize,
    tenant: &Tenant,
    text: &str,
    key: &str,
) -> String {
    let start = Instant::now();
    for attempt in 0.. {
        let node = nodes[(first + attempt) % nodes.len()];
        let (status, body) = node
            .call(
                reqwest::Method::POST,
                "/send-text",
                ("X-API-Key", &tenant.key),
                Some(json!({ "to": RECIPIENT, "text": text, "queue": true })),
                &[("Idempotency-Key", key)],
            )
            .await;
        if status == 200 || status == 202 {
            return body["message_id"].as_str().unwrap().to_owned();
        }
        assert!(
            status == 0 && start.elapsed() < STEP,
            "send {text:?} through {}: {status} {body}",
            node.name
        );
    }
    unreachable!()
}

/// Waits until `check` holds for the texts on `phone` (text -> the ids it
/// came with, as many as arrived).
async fn phone_until(
    sandbox: &Sandbox,
    phone: &str,
    what: &str,
    check: impl Fn(&HashMap<String, Vec<String>>) -> bool,
) -> HashMap<String, Vec<String>> {
    let start = Instant::now();
    loop {
        let (_, body) = sandbox.get(&format!("/phones/{phone}/messages")).await;
        let mut texts: HashMap<String, Vec<String>> = HashMap::new();
        for m in body.as_array().unwrap() {
            texts
                .entry(m["text"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(m["id"].as_str().unwrap_or_default().to_owned());
        }
        if check(&texts) {
            return texts;
        }
        assert!(
            start.elapsed() < STEP * 2,
            "{what}: {} texts on {phone}",
            texts.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three nodes under send and receive load; one is killed with `kill -9`.
/// Its sessions connect again on the survivors without pairing, and every
/// message is counted exactly once at both ends: the recipient's phone for
/// sends, the tenants' inboxes and the webhook receiver for receipts.
/// A send asked of a node that does not run the session, which the
/// number's pace holds back on the owner, answers 202 at once with when it
/// should go: the owner tells the asking node over NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_send_answers_queued_through_any_node() {
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(RECIPIENT).await;
    let paced = [("SEND_RATE_PER_MINUTE", "60"), ("SEND_BURST", "1")];
    let a = Node::start_with("node-a", &db.dsn(), &sandbox, LEASE, &paced);
    let tenants = create_tenants(&a, &sandbox, 1).await;
    pair_all(&a, &sandbox, &tenants, 1).await;
    let b = Node::start_with("node-b", &db.dsn(), &sandbox, LEASE, &paced);
    wait_spread(&a, 2, 1, STEP).await;
    let owner = wait_state(&a, &tenants[0], "connected").await;
    assert_eq!(
        owner["node"], "node-a",
        "one session stays on the first node"
    );

    let mut answers = Vec::new();
    for i in 0..3 {
        let body = json!({ "to": RECIPIENT, "text": format!("paced {i}") });
        answers.push(b.post(&tenants[0].key, "/send-text", body).await);
    }
    assert_eq!(answers[0].0, 200, "the burst goes at once: {answers:?}");
    assert_eq!(answers[0].1["status"], "sent");
    common::assert_held_in_order(&answers[1..]);
    let got = phone_until(&sandbox, RECIPIENT, "three paced sends", |texts| {
        (0..3).all(|i| texts.contains_key(&format!("paced {i}")))
    })
    .await;
    for i in 0..3 {
        assert_eq!(got[&format!("paced {i}")].len(), 1, "once each: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_sends_nothing_twice() {
    const TENANTS: usize = 12;
    const ROUNDS: usize = 20;
    const KILL_AT: usize = 8;
    const SENDER: &str = "62899000002";
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(RECIPIENT).await;
    sandbox.create_phone(SENDER).await;
    let receiver = Receiver::start().await;
    let a = Node::start("node-a", &db.dsn(), &sandbox, LEASE);
    let b = Node::start("node-b", &db.dsn(), &sandbox, LEASE);
    let c = Node::start("node-c", &db.dsn(), &sandbox, LEASE);
    let tenants = create_tenants(&a, &sandbox, TENANTS).await;
    for t in &tenants {
        let (status, body) = a
            .call(
                reqwest::Method::PUT,
                "/webhook",
                ("X-API-Key", &t.key),
                Some(json!({ "url": receiver.url(), "events": ["message.received"] })),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    pair_all(&a, &sandbox, &tenants, 10).await;
    wait_spread(&a, 3, TENANTS as i64, Duration::from_secs(60)).await;
    let devices_before: Vec<Vec<u16>> = {
        let mut all = Vec::new();
        for t in &tenants {
            all.push(sandbox.phone(&t.phone).await.devices);
        }
        all
    };

    // Each round: every tenant sends one text and receives one. The kill
    // comes mid-way; the rounds go on while the survivors take over.
    let accepted = Mutex::new(HashMap::new());
    let round = |round: usize, alive: Vec<&'static str>| {
        let nodes: Vec<&Node> = [&a, &b, &c]
            .into_iter()
            .filter(|n| alive.contains(&n.name.as_str()))
            .collect();
        let (tenants, sandbox, accepted) = (&tenants, &sandbox, &accepted);
        async move {
            let sends = tenants.iter().enumerate().map(|(i, t)| {
                let text = format!("out {i} {round}");
                let key = format!("key-{i}-{round}");
                let nodes = nodes.clone();
                async move {
                    let id = send_anywhere(&nodes, i + round, t, &text, &key).await;
                    (text, id)
                }
            });
            let sent = futures_util::future::join_all(sends).await;
            accepted.lock().unwrap().extend(sent);
            for (i, t) in tenants.iter().enumerate() {
                let (status, body) = sandbox
                    .post(
                        &format!("/phones/{SENDER}/messages"),
                        json!({ "to": t.phone, "text": format!("in {i} {round}") }),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    for r in 0..KILL_AT {
        round(r, vec!["node-a", "node-b", "node-c"]).await;
    }
    let victim = c.child.id();
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .expect("kill");
    let killed_at = Instant::now();
    println!("killed node-c (pid {victim}) after round {KILL_AT}");
    let rest = async {
        for r in KILL_AT..ROUNDS {
            round(r, vec!["node-a", "node-b"]).await;
        }
    };
    let watch = async {
        // node-c's sessions are disconnected (nobody runs them) once its
        // leases lapse, then connected on a survivor.
        wait_all_connected(&a, &tenants, Some("node-c"), STEP * 2).await;
        killed_at.elapsed()
    };
    let ((), takeover) = tokio::join!(rest, watch);
    let accepted = accepted.into_inner().unwrap();

    // Sends: each text reached the recipient under exactly one id.
    let texts = phone_until(&sandbox, RECIPIENT, "every send arrives", |texts| {
        accepted.keys().all(|t| texts.contains_key(t))
    })
    .await;
    let mut redelivered = 0;
    for (text, id) in &accepted {
        let ids = &texts[text];
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{text:?} arrived under several ids: {ids:?}"
        );
        assert!(
            distinct.contains(id),
            "{text:?} arrived as {ids:?}, accepted as {id}"
        );
        redelivered += ids.len() - 1;
    }

    // Receipts: every tenant's inbox holds each of its texts once, and the
    // webhook received each once (a redelivery carries the same webhook-id).
    let expected = TENANTS * ROUNDS;
    for (i, t) in tenants.iter().enumerate() {
        let start = Instant::now();
        loop {
            let (status, body) = a.get(&t.key, "/messages?limit=1000").await;
            assert_eq!(status, 200, "{body}");
            let mut seen: HashMap<String, usize> = HashMap::new();
            for m in body["messages"].as_array().unwrap() {
                *seen
                    .entry(m["text"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            assert!(
                seen.values().all(|n| *n == 1),
                "a text stored twice: {seen:?}"
            );
            if (0..ROUNDS).all(|r| seen.contains_key(&format!("in {i} {r}"))) {
                assert_eq!(seen.len(), ROUNDS, "{seen:?}");
                break;
            }
            assert!(
                start.elapsed() < STEP * 2,
                "tenant {i} has {} of {ROUNDS}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let hooks = receiver.wait_for(expected, STEP * 2).await;
    let mut events: HashMap<String, HashSet<String>> = HashMap::new();
    for hook in &hooks {
        let body = hook.json();
        let text = body["data"]["text"]
            .as_str()
            .or(body["text"].as_str())
            .unwrap_or_default()
            .to_owned();
        events
            .entry(text)
            .or_default()
            .insert(hook.header("webhook-id").to_owned());
    }
    assert_eq!(
        events.len(),
        expected,
        "webhooks for {} of {expected} texts",
        events.len()
    );
    assert!(
        events.values().all(|ids| ids.len() == 1),
        "a received message became two events"
    );

    for (t, before) in tenants.iter().zip(&devices_before) {
        assert_eq!(
            &sandbox.phone(&t.phone).await.devices,
            before,
            "no new pairing"
        );
    }
    println!(
        "kill -9 of 1 of 3 nodes ({TENANTS} sessions, lease {LEASE}): all connected again \
         {takeover:?} after the kill; sent {} accepted, {} arrived, 0 lost, 0 under two ids, \
         {redelivered} redelivered with the same id; received {expected}, stored {expected}, \
         webhooks {} for {} events, 0 lost, 0 doubled",
        accepted.len(),
        accepted.len(),
        hooks.len(),
        events.len(),
    );
}

/// A rolling restart: each of three nodes in turn gets SIGTERM, hands its
/// sessions over at once (without waiting for its leases to run out), and
/// comes back under its own id. No session asks for a QR code on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_shows_no_qr_code() {
    const TENANTS: usize = 9;
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    let names = ["node-a", "node-b", "node-c"];
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|n| Node::start(n, &db.dsn(), &sandbox, LEASE))
        .collect();
    let tenants = create_tenants(&nodes[0], &sandbox, TENANTS).await;
    pair_all(&nodes[0], &sandbox, &tenants, 10).await;
    wait_spread(&nodes[0], 3, TENANTS as i64, Duration::from_secs(60)).await;

    let mut figures = Vec::new();
    for i in 0..names.len() {
        let w = (i + 1) % names.len();
        let before = placement(&nodes[w]).await;
        nodes[i].terminate();
        let stopped = Instant::now();
        let handover = wait_all_connected(&nodes[w], &tenants, Some(names[i]), STEP).await;
        for t in &tenants {
            let (_, session) = nodes[w].get(&t.key, "/session").await;
            assert_eq!(session["state"], "connected", "{session}");
        }
        nodes[i] = Node::start(names[i], &db.dsn(), &sandbox, LEASE);
        let back = wait_spread(&nodes[w], 3, TENANTS as i64, Duration::from_secs(60)).await;
        wait_all_connected(&nodes[w], &tenants, None, STEP).await;
        figures.push(format!(
            "{}: {} sessions handed over in {handover:?} (lease {LEASE}), spread again {back:?} after its restart",
            names[i],
            before.get(names[i]).copied().unwrap_or(0),
        ));
        assert!(stopped.elapsed() < STEP * 3);
    }
    for t in &tenants {
        let account = sandbox.phone(&t.phone).await;
        assert_eq!(
            account.devices,
            vec![0, 1],
            "no new pairing for {}",
            t.phone
        );
    }
    println!(
        "rolling restart of 3 nodes, {TENANTS} sessions:\n  {}",
        figures.join("\n  ")
    );
}

/// A TCP proxy in front of Postgres that the test can cut. While cut, no
/// byte moves on any connection (they stay open, as in a network
/// partition) and new connections hang; healing closes the stalled ones,
/// as their peers would once the network came back, and forwards again.
struct DbProxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    _task: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                pumps.spawn(pump(client, upstream, cut_rx.clone()));
            }
        });
        DbProxy {
            addr,
            cut,
            _task: task,
        }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }
}

async fn pump(
    mut client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    if *cut.borrow() {
        // Hangs until healed, then closes.
        let _ = cut.wait_for(|c| !*c).await;
        return;
    }
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = cut.wait_for(|c| *c) => {}
    }
    // Cut: both sockets stay open and silent until healed.
    let _ = cut.wait_for(|c| !*c).await;
}

/// The sandbox's log of logins: (device, opened, closed, overlapped).
async fn logins(sandbox: &Sandbox) -> Vec<(String, u64, Option<u64>, bool)> {
    let (status, body) = sandbox.get("/sandbox/connections").await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["device"].as_str().unwrap().to_owned(),
                l["opened_ms"].as_u64().unwrap(),
                l["closed_ms"].as_u64(),
                l["overlapped"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Every tenant's number still has just the phone and the one linked
/// device: nothing was paired again.
async fn assert_no_new_pairing(sandbox: &Sandbox, tenants: &[Tenant]) {
    for t in tenants {
        assert_eq!(
            sandbox.phone(&t.phone).await.devices,
            vec![0, 1],
            "no new pairing"
        );
    }
}

/// For every device, its connections never overlap; returns the shortest
/// gap between one connection's end and the next one's login (ms), among
/// connections that ended after `since` (unix ms).
fn assert_no_overlap(logins: &[(String, u64, Option<u64>, bool)], since: u64) -> Option<i64> {
    let mut by_device: BTreeMap<&str, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    for (device, opened, closed, overlapped) in logins {
        assert!(!overlapped, "{device} logged in twice at once: {logins:?}");
        by_device
            .entry(device)
            .or_default()
            .push((*opened, *closed));
    }
    let mut shortest = None;
    for (device, mut lives) in by_device {
        lives.sort();
        for pair in lives.windows(2) {
            let closed = pair[0].1.unwrap_or_else(|| {
                panic!("{device}: a connection never closed before the next: {lives:?}")
            });
            let gap = pair[1].0 as i64 - closed as i64;
            assert!(gap >= 0, "{device}: connections overlap by {} ms", -gap);
            if closed >= since {
                shortest = Some(shortest.map_or(gap, |s: i64| s.min(gap)));
            }
        }
    }
    shortest
}

/// A node that loses its database while its WhatsApp connections are up
/// stops its clients before its leases lapse; the other node takes the
/// sessions over, and the sandbox never sees two connections of a device.
/// When the database comes back, the node rejoins and takes its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_its_database_never_doubles_a_connection() {
    const TENANTS: usize = 6;
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut through_proxy = url::Url::parse(&db.dsn()).unwrap();
    through_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let a = Node::start("node-a", &db.dsn(), &sandbox, LEASE);
    let _b = Node::start("node-b", through_proxy.as_str(), &sandbox, LEASE);
    let tenants = create_tenants(&a, &sandbox, TENANTS).await;
    pair_all(&a, &sandbox, &tenants, 10).await;
    wait_spread(&a, 2, TENANTS as i64, Duration::from_secs(60)).await;
    wait_all_connected(&a, &tenants, None, STEP).await;
    assert_no_overlap(&logins(&sandbox).await, 0);

    proxy.cut();
    let cut_at = Instant::now();
    let cut_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let takeover = wait_all_connected(&a, &tenants, Some("node-b"), STEP * 2).await;
    let gap = assert_no_overlap(&logins(&sandbox).await, cut_ms)
        .expect("node-b's connections ended after the cut");
    println!(
        "node-b cut from Postgres (lease {LEASE}): its sessions connected on node-a {takeover:?} \
         after the cut; shortest gap between a device's old and new connection {gap} ms"
    );
    assert!(cut_at.elapsed() < STEP * 2);

    proxy.heal();
    let back = wait_spread(&a, 2, TENANTS as i64, Duration::from_secs(60)).await;
    wait_all_connected(&a, &tenants, None, STEP).await;
    assert_no_overlap(&logins(&sandbox).await, 0);
    println!("node-b rejoined and took its share {back:?} after the database came back");
    assert_no_new_pairing(&sandbox, &tenants).await;
}

/// A second `wago serve` with a `NODE_ID` that a running process holds
/// refuses to start (exit code 3) once it has seen the first renew its
/// claim, and never runs a session meanwhile; after the first is killed
/// with `kill -9`, a new process under that id waits until the claim
/// lapses, then takes the node over. The sandbox never sees a device
/// connected twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_node_id() {
    const TENANTS: usize = 3;
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    let mut a = Node::start("node-a", &db.dsn(), &sandbox, LEASE);
    let tenants = create_tenants(&a, &sandbox, TENANTS).await;
    pair_all(&a, &sandbox, &tenants, 10).await;
    wait_all_connected(&a, &tenants, None, STEP).await;

    let (mut twin, log, listening) = Node::spawn("node-a", &db.dsn(), &sandbox, LEASE, &[]);
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || twin.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3), "{:?}", log.lock().unwrap());
    assert!(listening.try_recv().is_err(), "it never served");
    // The process has exited; its last lines may still be on their way
    // from the pipe to the log.
    let read_from = Instant::now();
    let said = loop {
        let said = log.lock().unwrap().join("\n");
        if said.contains("NODE_ID node-a is in use") || read_from.elapsed() > STEP {
            break said;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(said.contains("NODE_ID node-a is in use"), "{said}");
    println!(
        "a second process with a live NODE_ID refused after {:?}",
        started.elapsed()
    );
    assert_no_overlap(&logins(&sandbox).await, 0);

    // Killed: its claim lives on until it lapses; a new process waits
    // that long, never less, then runs every session again.
    Command::new("kill")
        .args(["-9", &a.child.id().to_string()])
        .status()
        .expect("kill");
    let _ = a.child.wait();
    let killed = Instant::now();
    let back = Node::start_with("node-a", &db.dsn(), &sandbox, LEASE, &[]);
    let took = wait_all_connected(&back, &tenants, None, STEP * 2).await;
    println!(
        "after kill -9, a new node-a served {:?} after the kill (lease {LEASE}) and had every \
         session connected {took:?} later",
        killed.elapsed()
    );
    assert_no_overlap(&logins(&sandbox).await, 0);
    assert_no_new_pairing(&sandbox, &tenants).await;
}

/// A node paused (`SIGSTOP`) past its lease, with paced sends still
/// queued, loses its session to another node, which sends the rest; once
/// resumed (`SIGCONT`) it sends and writes nothing for that session: its
/// own clock has passed the renewal deadline, so it fences itself before
/// anything else, claims its row again and rejoins. The recipient gets
/// every text once and no send is marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_sends_nothing_once_its_lease_ended() {
    const TEXTS: usize = 6;
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(RECIPIENT).await;
    // One text every 3 s on node-a, so it holds queued ones when paused.
    let paced = [("SEND_RATE_PER_MINUTE", "20"), ("SEND_BURST", "1")];
    let a = Node::start_with("node-a", &db.dsn(), &sandbox, LEASE, &paced);
    let tenants = create_tenants(&a, &sandbox, 1).await;
    pair_all(&a, &sandbox, &tenants, 1).await;
    let b = Node::start("node-b", &db.dsn(), &sandbox, LEASE);
    wait_spread(&b, 2, 1, STEP).await;
    let owner = wait_state(&b, &tenants[0], "connected").await;
    assert_eq!(owner["node"], "node-a", "the first node keeps it");

    for i in 0..TEXTS {
        let text = format!("paused {i}");
        send_anywhere(&[&b], 0, &tenants[0], &text, &format!("pause-{i}")).await;
    }
    phone_until(&sandbox, RECIPIENT, "the first text", |t| {
        t.contains_key("paused 0")
    })
    .await;
    let pid = a.child.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let stopped = Instant::now();
    let sent_before = inbox(&sandbox, RECIPIENT).await.len();
    let took = wait_all_connected(&b, &tenants, Some("node-a"), STEP * 2).await;
    let got = phone_until(&sandbox, RECIPIENT, "every text", |t| {
        (0..TEXTS).all(|i| t.contains_key(&format!("paused {i}")))
    })
    .await;
    assert_eq!(got.len(), TEXTS);
    println!(
        "node-a paused with {sent_before} of {TEXTS} texts sent: node-b ran the session \
         {took:?} after the pause and sent the rest"
    );
    assert!(sent_before < TEXTS, "node-a still held queued texts");
    assert!(stopped.elapsed() > Duration::from_secs(6), "past the lease");

    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let resumed = Instant::now();
    loop {
        let said = a.log.lock().unwrap().join("\n");
        if said.contains("claimed the node again") {
            assert!(
                said.contains("stopping every session of this node"),
                "it fenced itself first"
            );
            break;
        }
        assert!(resumed.elapsed() < STEP, "node-a never claimed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It rejoins and gets its share back; its sends then come from the rows.
    wait_spread(&b, 2, 1, STEP).await;
    wait_all_connected(&b, &tenants, None, STEP).await;
    let counts = inbox(&sandbox, RECIPIENT).await;
    for i in 0..TEXTS {
        assert_eq!(counts.get(&format!("paused {i}")), Some(&1), "{counts:?}");
    }
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM messages WHERE direction = 'out' GROUP BY status",
    )
    .fetch_all(&sqlx::PgPool::connect(&db.dsn()).await.unwrap())
    .await
    .unwrap();
    assert!(
        statuses
            .iter()
            .all(|(s, _)| ["sent", "delivered", "read"].contains(&s.as_str())),
        "{statuses:?}"
    );
    // The only connection that overlapped another is the one node-b opened
    // while node-a was frozen (a paused process cannot close its socket;
    // the server drops it, as WhatsApp does).
    let overlapped = logins(&sandbox).await.iter().filter(|l| l.3).count();
    assert!(overlapped <= 1, "{:?}", logins(&sandbox).await);
}

/// Sessions handed over in the middle of a burst of sends (a second node
/// joins, so half the sessions move): every send goes out exactly once,
/// under the id it was accepted with, and none is marked failed; a send
/// whose fate the old owner could not know stays queued for the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_in_a_send_burst_fails_and_doubles_nothing() {
    const TENANTS: usize = 4;
    const PER_TENANT: usize = 20;
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(RECIPIENT).await;
    // One text a second per number: the burst drains for 20 s, so the
    // hand-over falls in the middle of it.
    let paced = [("SEND_RATE_PER_MINUTE", "60"), ("SEND_BURST", "1")];
    let a = Node::start_with("node-a", &db.dsn(), &sandbox, LEASE, &paced);
    let tenants = create_tenants(&a, &sandbox, TENANTS).await;
    pair_all(&a, &sandbox, &tenants, 10).await;
    wait_all_connected(&a, &tenants, None, STEP).await;

    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let ids = Mutex::new(HashMap::new());
    let burst = futures_util::future::join_all(tenants.iter().enumerate().map(|(n, t)| {
        let (accepted, ids, a) = (&accepted, &ids, &a);
        async move {
            for i in 0..PER_TENANT {
                let text = format!("burst {n}-{i}");
                let id = send_anywhere(&[a], 0, t, &text, &format!("burst-{n}-{i}")).await;
                ids.lock().unwrap().insert(text, id);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }));
    let join = async {
        while accepted.load(std::sync::atomic::Ordering::SeqCst) < TENANTS * PER_TENANT / 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = tokio::task::block_in_place(|| {
            Node::start_with("node-b", &db.dsn(), &sandbox, LEASE, &paced)
        });
        let at = accepted.load(std::sync::atomic::Ordering::SeqCst);
        // Counted as soon as the sessions have moved, while the burst goes on.
        let spread = wait_spread(&a, 2, TENANTS as i64, STEP).await;
        let arrived = inbox(&sandbox, RECIPIENT).await.len();
        (b, at, spread, arrived)
    };
    let ((b, joined_at, spread, arrived_by_then), _) =
        futures_util::future::join(join, burst).await;
    let total = TENANTS * PER_TENANT;
    assert!(
        arrived_by_then < total,
        "the hand-over came after the burst"
    );
    let got = phone_until(&sandbox, RECIPIENT, "every burst text", |texts| {
        texts.keys().filter(|t| t.starts_with("burst ")).count() == total
    })
    .await;
    let ids = ids.into_inner().unwrap();
    for (text, arrived) in got.iter().filter(|(t, _)| t.starts_with("burst ")) {
        assert_eq!(
            arrived,
            &vec![ids[text].clone()],
            "{text}: once, under its id"
        );
    }
    // Statuses settle in batches; none may be failed, none left queued.
    let pool = sqlx::PgPool::connect(&db.dsn()).await.unwrap();
    let start = Instant::now();
    loop {
        let statuses: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM messages WHERE direction = 'out' GROUP BY status",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(!statuses.iter().any(|(s, _)| s == "failed"), "{statuses:?}");
        if statuses.iter().all(|(s, _)| s != "queued") {
            break;
        }
        assert!(start.elapsed() < STEP, "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{total} paced sends, node-b joined after {joined_at} were accepted; sessions spread \
         {spread:?} later, when {arrived_by_then} had arrived; every text arrived once, none \
         failed"
    );
    drop(b);
}

/// A TCP proxy to Postgres that delays every byte by a settable time, in
/// order and without cutting anything: a slow network or a slow database
/// as the node sees it.
struct SlowProxy {
    addr: std::net::SocketAddr,
    delay: tokio::sync::watch::Sender<Duration>,
    _task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (delay, delay_rx) = tokio::sync::watch::channel(Duration::ZERO);
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let delay = delay_rx.clone();
                pumps.spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_in, client_out) = client.into_split();
                    let (server_in, server_out) = server.into_split();
                    tokio::join!(
                        delay_line(client_in, server_out, delay.clone()),
                        delay_line(server_in, client_out, delay),
                    );
                });
            }
        });
        SlowProxy {
            addr,
            delay,
            _task: task,
        }
    }

    fn set_delay(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }
}

/// Forwards `from` to `to`, each chunk `delay` after it was read.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: tokio::sync::watch::Receiver<Duration>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let due = tokio::time::Instant::now() + *delay.borrow();
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// A node whose database answers late (every byte delayed past the lease,
/// nothing cut) loses its sessions to another node, which cuts its
/// connections first; whatever the slow node wrote late never lands over
/// the new owner's protocol rows: messages keep going out and being
/// decrypted both ways, while it is slow and after it recovers and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_database_never_lets_a_late_write_overwrite_the_new_owner() {
    const TENANTS: usize = 2;
    const SENDER: &str = "62899000004";
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(RECIPIENT).await;
    sandbox.create_phone(SENDER).await;
    let proxy = SlowProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut through_proxy = url::Url::parse(&db.dsn()).unwrap();
    through_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let a = Node::start("node-a", &db.dsn(), &sandbox, LEASE);
    let b = Node::start("node-b", through_proxy.as_str(), &sandbox, LEASE);
    let tenants = create_tenants(&a, &sandbox, TENANTS).await;
    pair_all(&a, &sandbox, &tenants, 10).await;
    wait_spread(&a, 2, TENANTS as i64, Duration::from_secs(60)).await;
    wait_all_connected(&a, &tenants, None, STEP).await;

    // Both ways, every tenant: a text out (through node-a, which forwards
    // to the owner) and a text in, each of which must be decrypted.
    let exchange = |round: &'static str| {
        let (tenants, sandbox, a) = (&tenants, &sandbox, &a);
        async move {
            for (i, t) in tenants.iter().enumerate() {
                let text = format!("{round} out {i}");
                send_anywhere(&[a], 0, t, &text, &format!("{round}-{i}")).await;
                let (status, body) = sandbox
                    .post(
                        &format!("/phones/{SENDER}/messages"),
                        json!({ "to": t.phone, "text": format!("{round} in {i}") }),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
            phone_until(sandbox, RECIPIENT, round, |texts| {
                (0..tenants.len()).all(|i| texts.contains_key(&format!("{round} out {i}")))
            })
            .await;
            for (i, t) in tenants.iter().enumerate() {
                let want = format!("{round} in {i}");
                let start = Instant::now();
                loop {
                    let (status, body) = a.get(&t.key, "/messages?limit=1000").await;
                    assert_eq!(status, 200, "{body}");
                    let stored = body["messages"].as_array().unwrap();
                    if stored.iter().any(|m| m["text"] == want.as_str()) {
                        break;
                    }
                    assert!(start.elapsed() < STEP, "{want:?} was never stored: {body}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    exchange("before").await;

    // Past the lease: node-b's renewals arrive too late, node-a cuts its
    // connections and takes its sessions.
    proxy.set_delay(Duration::from_secs(8));
    let took = wait_all_connected(&a, &tenants, Some("node-b"), STEP * 2).await;
    exchange("slow").await;
    let said = a.log.lock().unwrap().join("\n");
    assert!(
        said.contains("cut the database connections of a lapsed node"),
        "node-a fenced node-b before taking over"
    );

    proxy.set_delay(Duration::ZERO);
    let back = wait_spread(&a, 2, TENANTS as i64, Duration::from_secs(90)).await;
    wait_all_connected(&a, &tenants, None, STEP).await;
    exchange("after").await;
    println!(
        "node-b's database slowed by 8 s (lease {LEASE}): its sessions ran on node-a {took:?} \
         later; it rejoined {back:?} after the delay ended; every text before, during and \
         after went out and came in decrypted"
    );
    assert_no_new_pairing(&sandbox, &tenants).await;
    drop(b);
}

/// A logout asked while the session's owner is paused is never carried out
/// later: one whose requester gave up (after the 15 s wait) is withdrawn
/// by that requester, and one whose requester died while waiting is
/// withdrawn by the owner when it comes back, because by then no one can
/// be waiting for it. The device stays linked and the session connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_asked_while_the_owner_is_down_never_runs_later() {
    // Long enough that the owner keeps its lease through the pause.
    const LONG_LEASE: &str = "60s";
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    let a = Node::start("node-a", &db.dsn(), &sandbox, LONG_LEASE);
    let tenants = create_tenants(&a, &sandbox, 1).await;
    let tenant = &tenants[0];
    pair_all(&a, &sandbox, &tenants, 1).await;
    let b = Node::start("node-b", &db.dsn(), &sandbox, LONG_LEASE);
    let mut c = Node::start("node-c", &db.dsn(), &sandbox, LONG_LEASE);
    let owner = wait_state(&b, tenant, "connected").await;
    assert_eq!(owner["node"], "node-a");
    let devices = sandbox.phone(&tenant.phone).await.devices;
    let pool = sqlx::PgPool::connect(&db.dsn()).await.unwrap();
    let commands = || async {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, status FROM session_commands ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows
    };

    let pid = a.child.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let paused = Instant::now();
    // Two logouts: node-b's requester waits and gives up; node-c's dies
    // while its command is still pending.
    let gave_up = async {
        b.call(
            reqwest::Method::POST,
            "/session/logout",
            ("X-API-Key", &tenant.key),
            None,
            &[],
        )
        .await
    };
    let died = async {
        let rows_at_least = |n: usize| async move {
            while commands().await.len() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // After node-b's, so that the rows are in this order.
        rows_at_least(1).await;
        let ask = c.call(
            reqwest::Method::POST,
            "/session/logout",
            ("X-API-Key", &tenant.key),
            None,
            &[],
        );
        tokio::select! {
            answer = ask => panic!("node-c answered while the owner was paused: {answer:?}"),
            _ = rows_at_least(2) => {}
        }
    };
    let ((status, body), ()) = tokio::join!(gave_up, died);
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "timeout", "{body}");
    c.child.kill().unwrap();
    let _ = c.child.wait();
    let rows = commands().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0].1, "expired",
        "the requester withdrew its own: {rows:?}"
    );
    assert_eq!(
        rows[1].1, "pending",
        "the dead requester's is left: {rows:?}"
    );

    // Once the pending one is older than any requester waits (15 s), no
    // one can be waiting for either. Then the owner comes back and looks
    // at it at once.
    loop {
        let (age,): (i64,) = sqlx::query_as(
            "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - created_at
               FROM session_commands WHERE id = $1",
        )
        .bind(rows[1].0)
        .fetch_one(&pool)
        .await
        .unwrap();
        if age > 16_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let resumed = Instant::now();
    let settled = loop {
        let rows = commands().await;
        if rows.iter().all(|r| r.1 != "pending") {
            break rows;
        }
        assert!(resumed.elapsed() < STEP, "node-a never looked: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "owner paused {:?}; the dead requester's logout was withdrawn {:?} after it resumed",
        resumed - paused,
        resumed.elapsed()
    );
    assert!(
        settled.iter().all(|r| r.1 == "expired"),
        "a stale logout ran: {settled:?}"
    );
    let after = wait_state(&b, tenant, "connected").await;
    assert_eq!(after["node"], "node-a", "{after}");
    assert_eq!(sandbox.phone(&tenant.phone).await.devices, devices);
}

/// WhatsApp unreachable from the node that must take sessions over (new
/// connections to it hang): more sessions than a node starts at once (64)
/// are stuck connecting, yet placement goes on past them, so the node
/// holds every session of the node that died; once WhatsApp answers again
/// they all connect, with no pairing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stuck_connecting_do_not_stop_failover() {
    const TENANTS: usize = 70;
    let db = TestDb::postgres().await;
    let sandbox = Sandbox::start().await;
    let mut x = Node::start("node-x", &db.dsn(), &sandbox, LEASE);
    let tenants = create_tenants(&x, &sandbox, TENANTS).await;
    pair_all(&x, &sandbox, &tenants, 35).await;
    wait_all_connected(&x, &tenants, None, STEP).await;

    // node-a reaches WhatsApp through a proxy that is cut: a connection
    // is accepted and then nothing moves.
    let whatsapp = DbProxy::start(sandbox.addr).await;
    whatsapp.cut();
    let url = format!("ws://{}/ws/chat", whatsapp.addr);
    let a = Node::start_with(
        "node-a",
        &db.dsn(),
        &sandbox,
        LEASE,
        &[("WA_SERVER_URL", url.as_str())],
    );
    wait_spread(&a, 2, TENANTS as i64, STEP).await;
    let _ = x.child.kill();
    let _ = x.child.wait();
    let killed = Instant::now();
    // Every session goes to node-a, though none of them can connect.
    let held = loop {
        let now = placement(&a).await;
        if now.get("node-a") == Some(&(TENANTS as i64)) && now.len() == 1 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < STEP * 3,
            "node-a stopped taking sessions: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, body) = a.get(&tenants[0].key, "/session").await;
    assert_ne!(body["state"], "connected", "{body}");

    whatsapp.heal();
    let healed = Instant::now();
    wait_all_connected(&a, &tenants, Some("node-x"), STEP * 2).await;
    println!(
        "WhatsApp unreachable: node-a held all {TENANTS} sessions {held:?} after node-x died \
         (lease {LEASE}); they connected {:?} after it was reachable again",
        healed.elapsed()
    );
    assert_no_new_pairing(&sandbox, &tenants).await;
}
