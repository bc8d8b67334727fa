//! WAGO under load, as a user would run it: `cargo bench --features
//! sandbox --bench load`.
//!
//! A sandbox (`wago sandbox`) and a WAGO server (`wago serve`) run as
//! separate processes, on SQLite and then on Postgres (`BENCH_DB` picks
//! one). For each N in `BENCH_N` (default `100,1000`) the bench creates N
//! tenants and pairs them all through the HTTP API and the sandbox's
//! control API, then prints:
//! - the time to pair and connect the N sessions;
//! - idle: the server's RSS per connected session, its CPU use, and (on
//!   Postgres) the table accesses, rows read and rows written per second
//!   (from `pg_stat_user_tables`), over `BENCH_IDLE` (default 10s) of doing
//!   nothing, 10 s after the last pairing;
//! - the time from a restart to all N sessions `connected` again, after
//!   SIGTERM and after `kill -9` (`SESSION_LEASE_TTL` = `BENCH_LEASE`,
//!   default 10s);
//! - `/send-text` across tenants: throughput with 32 requests in flight
//!   (`BENCH_SENDS`, default 5,000), and request time p50/p99 at a fixed
//!   `BENCH_RATE` per second (default 1,000) for five seconds; every send
//!   is answered `sent` only once the sandbox acknowledged it, and the
//!   recipient's inbox is counted: none lost, none twice; and what one
//!   send of the 32-in-flight run cost, its ack and receipts included:
//!   the CPU of the `wago serve` process, and on Postgres the CPU of every
//!   `postgres` process, the statements, round trips and pings on WAGO's
//!   connections (read by a counting hop WAGO reaches the database
//!   through, `support_db/wire.rs`) and the commits;
//! - inbound messages (a sandbox phone's sends to the tenants' numbers, at
//!   `BENCH_INBOUND` per second, default 500, for five seconds) to their
//!   webhook's receipt, p50/p99, the receiver in a third process (this
//!   bench's binary, run again as one); every message counted at the
//!   receiver: none lost, none twice; and the same costs per message as
//!   for a send, its webhook delivery included;
//! - webhook deliveries per second, for one tenant and across all: the
//!   deliveries made so far are replayed (one tenant gets 2,000 more
//!   messages first) and the receiver counts them arriving again.
//!
//! A figure that misses the target the project set for it says by how
//! much. A progress line goes to stderr while it runs.

#[path = "support_db/mod.rs"]
mod support_db;
#[path = "../tests/support_nodes/mod.rs"]
mod support_nodes;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;
#[path = "support_db/wire.rs"]
mod wire;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use sqlx::Connection;
use support_db::env_or;
use support_nodes::{Node, SandboxProcess, Tenant, create_tenants, pair_all, wait_connected_count};
use support_sandbox::Control;
use wire::{WireCounter, WireCounts};

const RECIPIENT: &str = "628129990001";
/// The phone that writes to every tenant's number.
const WRITER: &str = "628129990002";
/// Set in the environment of this binary run as the webhook receiver.
const RECEIVER_ROLE: &str = "WAGO_BENCH_RECEIVER";

fn duration_env(name: &str, default: &str) -> Duration {
    let raw = env_or(name, default);
    wago::config::parse_duration(&raw).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::main]
async fn main() {
    if std::env::var_os(RECEIVER_ROLE).is_some() {
        return receiver::serve().await;
    }
    let sizes: Vec<usize> = env_or("BENCH_N", "100,1000")
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_N: a list of counts"))
        .collect();
    for n in sizes {
        support_db::each_database(|label, dsn| async move { run(label, &dsn, n).await }).await;
    }
}

async fn run(db: &str, dsn: &str, n: usize) {
    let lease = env_or("BENCH_LEASE", "10s");
    let idle = duration_env("BENCH_IDLE", "10s");
    let sandbox = SandboxProcess::start().await;
    let sandbox = &sandbox.control;
    sandbox.create_phone(RECIPIENT).await;
    let settings = [("SEND_RATE_PER_MINUTE", "0"), ("API_RATE_LIMIT", "0")];
    // On Postgres WAGO talks to the database through a counting hop.
    let wire = match dsn.starts_with("postgres") {
        true => Some(WireCounter::start(postgres_addr(dsn)).await),
        false => None,
    };
    let node_dsn = wire.as_ref().map_or(dsn.to_owned(), |w| w.dsn(dsn));
    let meter = Meter {
        dsn,
        wire: wire.as_ref(),
    };
    let mut node = Node::start_with("load", &node_dsn, sandbox, &lease, &settings);
    let label = format!("{db:8} | N = {n:>5}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_rss = rss_kib(node.child.id());

    progress(&format!("{db}: creating {n} tenants"));
    let tenants = create_tenants(&node, sandbox, n).await;
    progress(&format!("{db}: pairing {n} sessions"));
    let started = Instant::now();
    pair_all(&node, sandbox, &tenants, 50).await;
    let paired = started.elapsed();
    println!(
        "{label} | paired and connected in {:.1} s",
        paired.as_secs_f64()
    );

    // Idle, once the work that follows pairing has settled.
    progress(&format!("{db}: settling, then idle for {idle:?}"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu_before = cpu_ticks(node.child.id());
    let work_before = table_work(dsn).await;
    let idle_started = Instant::now();
    tokio::time::sleep(idle).await;
    let secs = idle_started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(node.child.id()) - cpu_before) as f64 / ticks_per_second() / secs;
    // Statistics reach the view within a second or so of each statement.
    let accesses = match (work_before, table_work(dsn).await) {
        (Some(a), Some(b)) => format!(
            "{:.1} table accesses/s, {:.1} rows read/s, {:.1} rows written/s",
            (b[0] - a[0]) as f64 / secs,
            (b[1] - a[1]) as f64 / secs,
            (b[2] - a[2]) as f64 / secs,
        ),
        _ => "table accesses not counted on SQLite".to_owned(),
    };
    let rss = rss_kib(node.child.id());
    let per_session = rss.saturating_sub(base_rss) as f64 / n as f64;
    println!(
        "{label} | idle: RSS {rss} KiB ({per_session:.0} KiB per session{}), CPU {:.1}%, {accesses}",
        versus(per_session, 128.0, "KiB", false),
        cpu * 100.0
    );

    // Restarts.
    for how in ["SIGTERM", "kill -9"] {
        progress(&format!("{db}: restart after {how}"));
        let signal = if how == "SIGTERM" { "-TERM" } else { "-KILL" };
        Command::new("kill")
            .args([signal, &node.child.id().to_string()])
            .status()
            .expect("kill");
        let _ = node.child.wait();
        let stopped = Instant::now();
        node = Node::start_with("load", &node_dsn, sandbox, &lease, &settings);
        // The database is this run's own: every session in it is ours.
        wait_connected_count(&node, n, Duration::from_secs(900)).await;
        let back = stopped.elapsed().as_secs_f64();
        let target = if n >= 10_000 { 30.0 } else { 5.0 };
        println!(
            "{label} | restart after {how}: all {n} connected again in {back:.1} s{}",
            versus(back, target, "s", false)
        );
    }

    // Sends.
    let sends: usize = env_or("BENCH_SENDS", "5000").parse().expect("BENCH_SENDS");
    let inbox_before = inbox(sandbox).await;
    let work_before = meter.read(node.child.id()).await;
    progress(&format!("{db}: {sends} sends, 32 in flight"));
    let started = Instant::now();
    let times = send_many(&node, &tenants, sends, 32, None).await;
    let rate = sends as f64 / started.elapsed().as_secs_f64();
    println!(
        "{label} | /send-text, 32 in flight: {rate:.0}/s{}, {}",
        versus(rate, 5000.0, "/s", true),
        summary(&times)
    );
    // The acks' and receipts' own work lands within moments.
    tokio::time::sleep(SETTLE).await;
    let work = meter.read(node.child.id()).await;
    println!(
        "{label} | per send (its ack and receipts included): {}",
        work_before.per(&work, sends)
    );
    let per_second: f64 = env_or("BENCH_RATE", "1000").parse().expect("BENCH_RATE");
    let count = (per_second * 5.0) as usize;
    progress(&format!("{db}: {count} sends at {per_second}/s"));
    let times = send_many(&node, &tenants, count, 4096, Some(per_second)).await;
    let p99 = quantile(&times, 0.99).as_secs_f64() * 1000.0;
    println!(
        "{label} | /send-text at {per_second}/s: {}{}",
        summary(&times),
        versus(p99, 20.0, "ms at p99", false)
    );
    let accepted = sends + count;
    check_inbox(sandbox, inbox_before, accepted, &label).await;
    inbound(&node, sandbox, &tenants, &label, &meter).await;
    drop(node);
}

/// A phone writes to the tenants' numbers at a fixed rate; each message's
/// time from the phone's send to its webhook's arrival at the receiver.
async fn inbound(
    node: &Node,
    sandbox: &Control,
    tenants: &[Tenant],
    label: &str,
    meter: &Meter<'_>,
) {
    let receiver = receiver::Process::start();
    sandbox.create_phone(WRITER).await;
    for tenant in tenants {
        let (status, body) = node
            .call(
                reqwest::Method::PUT,
                "/webhook",
                ("X-API-Key", &tenant.key),
                Some(json!({ "url": receiver.url(), "events": ["message.received"] })),
                &[],
            )
            .await;
        assert_eq!(status, 200, "PUT /webhook: {body}");
    }
    let per_second: f64 = env_or("BENCH_INBOUND", "500")
        .parse()
        .expect("BENCH_INBOUND");
    let count = (per_second * 5.0) as usize;
    progress(&format!("inbound: {count} messages at {per_second}/s"));
    let work_before = meter.read(node.child.id()).await;
    let started = Instant::now();
    let sent: Vec<(String, u128)> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let due = started + Duration::from_secs_f64(i as f64 / per_second);
            tokio::time::sleep_until(due.into()).await;
            let tenant = &tenants[i % tenants.len()];
            let text = format!("inbound {i}");
            let at = receiver::now_us();
            let (status, body) = sandbox
                .post(
                    &format!("/phones/{WRITER}/messages"),
                    json!({ "to": tenant.phone, "text": text }),
                )
                .await;
            assert_eq!(status, 200, "the phone sends: {body}");
            (text, at)
        })
        .buffer_unordered(1024)
        .collect()
        .await;
    let arrivals = receiver.wait_for(count, Duration::from_secs(120)).await;
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(text, at)| {
            let arrived = arrivals.get(text)?.0;
            Some(Duration::from_micros(arrived.saturating_sub(*at) as u64))
        })
        .collect();
    latencies.sort();
    let twice = arrivals.values().filter(|(_, n)| *n > 1).count();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{label} | inbound at {per_second}/s to webhook: p50 {:.1} ms, p99 {:.1} ms{}, {} of {count} arrived, {twice} twice",
        at(0.5),
        at(0.99),
        versus(at(0.99), 50.0, "ms at p99", false),
        latencies.len()
    );
    tokio::time::sleep(SETTLE).await;
    let work = meter.read(node.child.id()).await;
    println!(
        "{label} | per inbound message (its webhook delivery included): {}",
        work_before.per(&work, count)
    );

    // One tenant gets more to deliver, then deliveries are replayed.
    let extra = 2_000;
    progress(&format!("webhooks: {extra} more messages to one tenant"));
    futures_util::stream::iter(0..extra)
        .map(|i| async move {
            let (status, body) = sandbox
                .post(
                    &format!("/phones/{WRITER}/messages"),
                    json!({ "to": tenants[0].phone, "text": format!("one tenant {i}") }),
                )
                .await;
            assert_eq!(status, 200, "the phone sends: {body}");
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    receiver
        .wait_for(count + extra, Duration::from_secs(120))
        .await;
    for (scope, what, target) in [
        (&tenants[..1], "one tenant", Some(1000.0)),
        (tenants, "all tenants", None),
    ] {
        progress(&format!("webhooks: replaying {what}"));
        let before = receiver.total().await;
        let started = Instant::now();
        let mut replayed = 0;
        for tenant in scope {
            let (status, body) = node
                .post(
                    &tenant.key,
                    "/webhook/deliveries/replay",
                    json!({ "status": "delivered" }),
                )
                .await;
            assert_eq!(status, 200, "replay: {body}");
            replayed += body["replayed"].as_u64().unwrap_or(0);
        }
        while receiver.total().await < before + replayed
            && started.elapsed() < Duration::from_secs(300)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let arrived = receiver.total().await - before;
        let rate = arrived as f64 / started.elapsed().as_secs_f64();
        println!(
            "{label} | webhook deliveries, {what}: {arrived} of {replayed} in {:.1} s = {rate:.0}/s{}",
            started.elapsed().as_secs_f64(),
            target.map_or_else(String::new, |t| versus(rate, t, "/s", true))
        );
    }
}

/// The webhook receiver, in a process of its own: this binary again.
mod receiver {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::body::Bytes;
    use axum::extract::State;

    /// Message text -> (first arrival in µs since the epoch, arrivals).
    type Arrivals = Arc<Mutex<HashMap<String, (u128, u32)>>>;

    pub fn now_us() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    }

    /// Serves `POST /hook` (records) and `GET /arrivals` (reports) until
    /// killed; prints its address first.
    pub async fn serve() {
        let arrivals: Arrivals = Arc::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .route("/arrivals", axum::routing::get(report))
            .with_state(arrivals);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        axum::serve(listener, app).await.expect("serve");
    }

    async fn record(State(arrivals): State<Arrivals>, body: Bytes) -> &'static str {
        let at = now_us();
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = event["text"].as_str().unwrap_or_default().to_owned();
        let mut arrivals = arrivals.lock().expect("lock");
        let entry = arrivals.entry(text).or_insert((at, 0));
        entry.1 += 1;
        "ok"
    }

    async fn report(State(arrivals): State<Arrivals>) -> axum::Json<HashMap<String, (u128, u32)>> {
        axum::Json(arrivals.lock().expect("lock").clone())
    }

    pub struct Process {
        child: Child,
        addr: String,
    }

    impl Process {
        pub fn start() -> Self {
            let mut child = Command::new(std::env::current_exe().expect("this binary"))
                .env(super::RECEIVER_ROLE, "1")
                .stdout(Stdio::piped())
                .spawn()
                .expect("the receiver starts");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("the receiver says where it listens");
            Process {
                child,
                addr: line.trim().to_owned(),
            }
        }

        pub fn url(&self) -> String {
            format!("http://{}/hook", self.addr)
        }

        /// Every arrival so far, repeats included.
        pub async fn total(&self) -> u64 {
            self.arrivals()
                .await
                .values()
                .map(|(_, n)| u64::from(*n))
                .sum()
        }

        async fn arrivals(&self) -> HashMap<String, (u128, u32)> {
            reqwest::get(format!("http://{}/arrivals", self.addr))
                .await
                .expect("the receiver answers")
                .json()
                .await
                .expect("arrivals")
        }

        /// The arrivals once `count` distinct messages arrived, or at the
        /// deadline.
        pub async fn wait_for(
            &self,
            count: usize,
            within: Duration,
        ) -> HashMap<String, (u128, u32)> {
            let started = Instant::now();
            loop {
                let arrivals = self.arrivals().await;
                if arrivals.len() >= count || started.elapsed() > within {
                    return arrivals;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `count` sends spread over the tenants, `in_flight` at most at once, at
/// `rate` per second if given (else as fast as they are answered): each
/// request's time and whether it answered `sent`.
async fn send_many(
    node: &Node,
    tenants: &[Tenant],
    count: usize,
    in_flight: usize,
    rate: Option<f64>,
) -> Vec<(Duration, bool)> {
    let started = Instant::now();
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let tenant = &tenants[i % tenants.len()];
            let began = Instant::now();
            let (status, body) = node
                .post(
                    &tenant.key,
                    "/send-text",
                    json!({ "to": RECIPIENT, "text": format!("load {} {i}", started.elapsed().as_nanos()) }),
                )
                .await;
            (began.elapsed(), status == 200 && body["status"] == "sent")
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

fn quantile(times: &[(Duration, bool)], q: f64) -> Duration {
    let mut sorted: Vec<Duration> = times.iter().map(|t| t.0).collect();
    sorted.sort();
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn summary(times: &[(Duration, bool)]) -> String {
    let ok = times.iter().filter(|t| t.1).count();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, {ok} of {} answered sent",
        ms(quantile(times, 0.5)),
        ms(quantile(times, 0.99)),
        times.len()
    )
}

/// " (target X: missed by Y)" when a figure misses its target.
fn versus(value: f64, target: f64, unit: &str, higher_is_better: bool) -> String {
    let missed = if higher_is_better {
        value < target
    } else {
        value > target
    };
    if missed {
        format!(
            " (target {target} {unit}: missed by {:.1}%)",
            ((value - target).abs() / target) * 100.0
        )
    } else {
        String::new()
    }
}

async fn inbox(sandbox: &Control) -> Vec<String> {
    let (status, body) = sandbox.get(&format!("/phones/{RECIPIENT}/messages")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .into_iter()
        .flatten()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every accepted send arrived once.
async fn check_inbox(sandbox: &Control, before: Vec<String>, accepted: usize, label: &str) {
    let started = Instant::now();
    let texts = loop {
        let texts = inbox(sandbox).await;
        if texts.len() >= before.len() + accepted || started.elapsed() > Duration::from_secs(120) {
            break texts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let new = &texts[before.len().min(texts.len())..];
    let distinct: HashSet<&String> = new.iter().collect();
    println!(
        "{label} | recipient got {} of {accepted} sends, {} twice",
        distinct.len(),
        new.len() - distinct.len()
    );
}

fn progress(what: &str) {
    eprintln!("  … {what}");
}

/// The process's resident set, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User and system CPU ticks the process used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn ticks_per_second() -> f64 {
    100.0 // USER_HZ on Linux
}

/// How long the work of a phase goes on after its last answer (acks,
/// receipts, webhook bookkeeping), and how long Postgres takes to publish
/// its statistics.
const SETTLE: Duration = Duration::from_secs(2);

/// Reads what the server and its database did so far.
struct Meter<'a> {
    /// The database, reached directly (the statistics are read here).
    dsn: &'a str,
    /// The hop WAGO's connections go through (Postgres only).
    wire: Option<&'a WireCounter>,
}

/// The work done up to a moment.
struct Reading {
    wago_ticks: u64,
    postgres_ticks: u64,
    wire: Option<WireCounts>,
    commits: Option<i64>,
}

impl Meter<'_> {
    async fn read(&self, wago: u32) -> Reading {
        Reading {
            wago_ticks: cpu_ticks(wago),
            postgres_ticks: self.wire.map_or(0, |_| postgres_ticks()),
            wire: self.wire.map(WireCounter::counts),
            commits: commits(self.dsn).await,
        }
    }
}

impl Reading {
    /// The work from this reading to `after`, per one of `units`.
    fn per(&self, after: &Reading, units: usize) -> String {
        let units = units as f64;
        let us = |ticks: u64| ticks as f64 / ticks_per_second() / units * 1e6;
        let mut parts = vec![format!(
            "WAGO {:.0} us CPU",
            us(after.wago_ticks - self.wago_ticks)
        )];
        if let (Some(before), Some(now)) = (self.wire, after.wire) {
            let wire = now - before;
            parts.push(format!(
                "Postgres {:.0} us CPU",
                us(after.postgres_ticks - self.postgres_ticks)
            ));
            parts.push(format!(
                "{:.2} statements, {:.2} round trips ({:.2} of them pings)",
                wire.statements as f64 / units,
                wire.round_trips as f64 / units,
                wire.pings as f64 / units
            ));
        }
        if let (Some(before), Some(now)) = (self.commits, after.commits) {
            parts.push(format!("{:.2} commits", (now - before) as f64 / units));
        }
        parts.join(", ")
    }
}

/// CPU ticks every `postgres` process on this machine used so far.
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(cpu_ticks)
        .sum()
}

/// The address of the Postgres server in `dsn`.
fn postgres_addr(dsn: &str) -> std::net::SocketAddr {
    let url = url::Url::parse(dsn).expect("a Postgres URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5432);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .expect("the Postgres host resolves")
        .next()
        .expect("an address")
}

/// Transactions committed in the bench's Postgres database so far (the
/// statistics lag by about a second).
async fn commits(dsn: &str) -> Option<i64> {
    if !dsn.starts_with("postgres") {
        return None;
    }
    let mut conn = sqlx::PgConnection::connect(dsn).await.ok()?;
    sqlx::query_scalar(
        "SELECT CAST(xact_commit AS BIGINT) FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .ok()
}

/// The database's work on WAGO's tables so far: table accesses (index and
/// sequential scans plus rows inserted: the statements that touch data;
/// pings and the bench's own reading of the statistics are not counted),
/// rows read (by scans and index fetches) and rows written (inserted,
/// updated, deleted).
async fn table_work(dsn: &str) -> Option<[i64; 3]> {
    if !dsn.starts_with("postgres") {
        return None;
    }
    let mut conn = sqlx::PgConnection::connect(dsn).await.ok()?;
    let row: (i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(seq_scan + COALESCE(idx_scan, 0) + n_tup_ins), 0) AS BIGINT),
                CAST(COALESCE(SUM(seq_tup_read + COALESCE(idx_tup_fetch, 0)), 0) AS BIGINT),
                CAST(COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) AS BIGINT)
           FROM pg_stat_user_tables",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    Some([row.0, row.1, row.2])
}
