//! Several nodes on one Postgres, as separate `wago serve` processes with
//! an in-process sandbox: `cargo bench --features sandbox --bench nodes`.
//!
//! - takeover, for `BENCH_SESSIONS` sessions (default `100,1000`) spread
//!   over two nodes with `SESSION_LEASE_TTL` = `BENCH_LEASE` (default 10s):
//!   `kill -9` of one node, then the time until every session is connected
//!   on the other; then SIGTERM of a node, and the time until its sessions
//!   are connected on the other (a clean handover);
//! - sends with one, two and three nodes: `BENCH_TENANTS` tenants (default
//!   30), `BENCH_MESSAGES` (default 3,000) `POST /send-text` requests spread
//!   over the live nodes, 32 in flight, no send pace: sends per second and
//!   p50/p99 request time (each request waits for WhatsApp's ack, through
//!   whichever node runs the session).
//!
//! All processes share the machine, so more nodes add no CPU here: the
//! send figures show what routing a send to its owner costs.

#[path = "support_db/mod.rs"]
mod support_db;
#[path = "../tests/support_nodes/mod.rs"]
mod support_nodes;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support_db::env_or;
use support_nodes::{Node, Tenant, create_tenants, pair_all, wait_all_connected, wait_spread};
use support_sandbox::Sandbox;

const RECIPIENT: &str = "628129990001";

#[tokio::main]
async fn main() {
    support_sandbox::init_logs();
    let sizes: Vec<usize> = env_or("BENCH_SESSIONS", "100,1000")
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let lease = env_or("BENCH_LEASE", "10s");
    for n in sizes {
        support_db::each_database(|label, dsn| {
            let lease = lease.clone();
            async move {
                if label == "SQLite" {
                    return; // one node per SQLite database
                }
                takeover(&dsn, n, &lease).await;
            }
        })
        .await;
    }
    support_db::each_database(|label, dsn| async move {
        if label != "SQLite" {
            sends(&dsn).await;
        }
    })
    .await;
}

async fn takeover(dsn: &str, n: usize, lease: &str) {
    let sandbox = Sandbox::start().await;
    let a = Node::start("node-a", dsn, &sandbox, lease);
    let mut b = Node::start("node-b", dsn, &sandbox, lease);
    let started = Instant::now();
    let tenants = create_tenants(&a, &sandbox, n).await;
    pair_all(&a, &sandbox, &tenants, 50).await;
    let paired = started.elapsed();
    let spread = wait_spread(&a, 2, n as i64, Duration::from_secs(600)).await;
    wait_all_connected(&a, &tenants, None, Duration::from_secs(300)).await;
    println!(
        "{n} sessions: paired through one node in {paired:.1?}, spread over two in {spread:.1?}"
    );

    Command::new("kill")
        .args(["-9", &b.child.id().to_string()])
        .status()
        .expect("kill");
    let after_kill =
        wait_all_connected(&a, &tenants, Some("node-b"), Duration::from_secs(600)).await;
    println!(
        "  kill -9 of one of two nodes (lease {lease}): all {n} connected again {after_kill:.1?} after the kill"
    );

    b = Node::start("node-b", dsn, &sandbox, lease);
    wait_spread(&a, 2, n as i64, Duration::from_secs(600)).await;
    wait_all_connected(&a, &tenants, None, Duration::from_secs(300)).await;
    b.terminate();
    let handover = wait_all_connected(&a, &tenants, Some("node-b"), Duration::from_secs(600)).await;
    println!(
        "  SIGTERM of one of two nodes: all {n} connected on the other {handover:.1?} after it"
    );
}

async fn sends(dsn: &str) {
    let tenants_n: usize = env_or("BENCH_TENANTS", "30").parse().unwrap_or(30);
    let messages: usize = env_or("BENCH_MESSAGES", "3000").parse().unwrap_or(3000);
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(RECIPIENT).await;
    let mut nodes = vec![Node::start("node-a", dsn, &sandbox, "10s")];
    let tenants = create_tenants(&nodes[0], &sandbox, tenants_n).await;
    pair_all(&nodes[0], &sandbox, &tenants, 30).await;
    for k in 1..=3 {
        if k > 1 {
            let name = format!("node-{}", ['a', 'b', 'c'][k - 1]);
            nodes.push(Node::start(&name, dsn, &sandbox, "10s"));
            wait_spread(&nodes[0], k, tenants_n as i64, Duration::from_secs(120)).await;
        }
        wait_all_connected(&nodes[0], &tenants, None, Duration::from_secs(120)).await;
        let (rate, p50, p99, ok) = send_burst(&nodes, &tenants, messages, k).await;
        println!(
            "sends with {k} node(s), {tenants_n} tenants: {rate:.0}/s, p50 {p50:.1?}, p99 {p99:.1?} \
             ({ok} of {messages} answered sent)"
        );
    }
}

async fn send_burst(
    nodes: &[Node],
    tenants: &[Tenant],
    messages: usize,
    round: usize,
) -> (f64, Duration, Duration, usize) {
    let start = Instant::now();
    let mut times: Vec<(Duration, bool)> = futures_util::stream::iter(0..messages)
        .map(|i| {
            let node = &nodes[i % nodes.len()];
            let tenant = &tenants[i % tenants.len()];
            async move {
                let began = Instant::now();
                let (status, body) = node
                    .post(
                        &tenant.key,
                        "/send-text",
                        json!({ "to": RECIPIENT, "text": format!("bench {round} {i}") }),
                    )
                    .await;
                (began.elapsed(), status == 200 && body["status"] == "sent")
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let ok = times.iter().filter(|(_, ok)| *ok).count();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)].0;
    (
        messages as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99),
        ok,
    )
}
