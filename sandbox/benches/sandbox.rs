//! Sandbox benchmark: `cargo bench -p wago-sandbox --bench sandbox`.
//!
//! Prints (1) the time from starting one fresh client to its `Connected`,
//! pairing by QR included, and its IK re-login; (2) pairings per second
//! with 200 clients pairing at once; (3) the sandbox's memory per connected
//! client; (4) messages per second through the sandbox with 100 connected
//! clients, simulated phones to clients and clients to phones, each message
//! end-to-end encrypted and decrypted; (5) p50/p99 from a phone's send (the
//! control API call) to the client's message event. The sandbox runs in a
//! child process (this binary, re-executed with `--sandbox-child`) so its
//! RSS, which it reads from its own /proc/self/status, holds the sandbox
//! alone and none of the clients.
//!
//! Environment: `BENCH_CLIENTS` (default 200), `BENCH_MESSAGING_CLIENTS`
//! (default 100), `BENCH_MESSAGES` per client and direction (default 50).

#[path = "../tests/support/mod.rs"]
mod support_sandbox;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support_sandbox::{Companion, Control, pair};

const CHILD_FLAG: &str = "--sandbox-child";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if std::env::args().any(|a| a == CHILD_FLAG) {
        runtime.block_on(serve_child());
    } else {
        runtime.block_on(bench());
    }
}

/// The child: a sandbox on a random port. Prints its address, then answers
/// each `rss` line on stdin with its VmRSS in KiB; stops at end of input.
async fn serve_child() {
    let mut config = wago_sandbox::SandboxConfig::new("127.0.0.1:0".parse().expect("addr"));
    // The server's own cost is measured, without the simulated round trip.
    config.connect_latency = std::time::Duration::ZERO;
    let sandbox = wago_sandbox::start(config).await.expect("sandbox starts");
    println!("{}", sandbox.addr());
    let lines = tokio::task::spawn_blocking(|| {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("rss") => println!("{}", rss_kib()),
                _ => break,
            }
        }
    });
    let _ = lines.await;
    let _ = sandbox.shutdown().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct SandboxChild {
    process: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl SandboxChild {
    fn spawn() -> (Self, std::net::SocketAddr) {
        let exe = std::env::current_exe().expect("own path");
        let mut process = Command::new(exe)
            .arg(CHILD_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sandbox child starts");
        let stdin = process.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(process.stdout.take().expect("stdout"));
        let addr = read_line(&mut stdout).parse().expect("an address");
        let child = Self {
            process,
            stdin,
            stdout,
        };
        (child, addr)
    }

    fn rss_kib(&mut self) -> u64 {
        writeln!(self.stdin, "rss").expect("ask the child");
        read_line(&mut self.stdout).parse().expect("a number")
    }

    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.process.wait();
    }
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a line from the child");
    line.trim().to_owned()
}

async fn bench() {
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (mut child, addr) = SandboxChild::spawn();
    let control = std::sync::Arc::new(Control::new(addr));
    println!("sandbox benchmark (sandbox in its own process at {addr})");

    one_client(&control).await;
    let idle = child.rss_kib();
    let pairing_took = many_clients(&control, clients).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = child.rss_kib();
    println!(
        "{clients} clients pairing at once: all Connected after {:.2} s = {:.1} pairings/s",
        pairing_took.0.as_secs_f64(),
        clients as f64 / pairing_took.0.as_secs_f64()
    );
    let per_client = loaded.saturating_sub(idle) as f64 / clients as f64;
    println!(
        "sandbox memory: RSS {idle} KiB before, {loaded} KiB with {clients} connected = \
         {per_client:.1} KiB per connected client"
    );
    println!(
        "  (sandbox process only: each client's account, simulated phone, device record with \
         its 812 uploaded prekeys, connection task, WebSocket and Noise state and allocator \
         slack; the clients run in the benchmark's own process and are not counted)"
    );
    let messaging: usize = env_or("BENCH_MESSAGING_CLIENTS", 100).min(clients);
    let per_client: usize = env_or("BENCH_MESSAGES", 50);
    let mut companions = pairing_took.1;
    let rest = companions.split_off(messaging.min(companions.len()));
    messages(&control, companions, per_client).await;
    for companion in rest {
        companion.stop().await;
    }
    child.stop();
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each companion's account gets a peer phone; messages go both ways.
async fn messages(control: &std::sync::Arc<Control>, companions: Vec<Companion>, n: usize) {
    let clients = companions.len();
    let mut pairs = Vec::with_capacity(clients);
    for (i, companion) in companions.into_iter().enumerate() {
        let peer = format!("62816{i:07}");
        control.create_phone(&peer).await;
        let own = companion
            .client()
            .pn()
            .map(|jid| jid.user.to_string())
            .expect("a paired client knows its number");
        pairs.push((companion, own, peer));
    }
    let total = (clients * n) as f64;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut companion, own, peer) in pairs {
        let control = control.clone();
        tasks.spawn(async move {
            let sends = (0..n).map(|k| phone_sends(&control, &peer, &own, k));
            futures_util::future::join_all(sends).await;
            companion.texts(n).await;
            (companion, own, peer)
        });
    }
    let pairs = tasks.join_all().await;
    let took = started.elapsed().as_secs_f64();
    println!(
        "{clients} clients, phones -> clients: {} messages in {took:.2} s = {:.0} messages/s",
        total,
        total / took
    );

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (companion, own, peer) in pairs {
        let control = control.clone();
        tasks.spawn(async move {
            for k in 0..n {
                companion.send_text(&peer, &format!("balas {k}")).await;
            }
            inbox_holds(&control, &peer, n).await;
            (companion, own, peer)
        });
    }
    let pairs = tasks.join_all().await;
    let took = started.elapsed().as_secs_f64();
    println!(
        "{clients} clients, clients -> phones: {} messages in {took:.2} s = {:.0} messages/s",
        total,
        total / took
    );
    latency(control, pairs).await;
}

async fn phone_sends(control: &Control, from: &str, to: &str, k: usize) {
    let body = json!({ "to": to, "text": format!("pesan {k}") });
    let (status, answer) = control
        .post(&format!("/phones/{from}/messages"), body)
        .await;
    assert_eq!(status, 200, "send: {answer}");
}

async fn inbox_holds(control: &Control, phone: &str, n: usize) {
    loop {
        let (_, items) = control.get(&format!("/phones/{phone}/messages")).await;
        if items.as_array().is_some_and(|a| a.len() >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The time from a phone's send to the client's message event, one
/// message at a time per client: first one client alone, then all at once.
async fn latency(control: &std::sync::Arc<Control>, mut pairs: Vec<(Companion, String, String)>) {
    const ROUNDS: usize = 20;
    if let Some((companion, own, peer)) = pairs.first_mut() {
        let alone = round_trips(control, companion, own, peer, 100).await;
        print_latency("1 client alone", alone);
    }
    let clients = pairs.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut companion, own, peer) in pairs {
        let control = control.clone();
        tasks.spawn(async move {
            let times = round_trips(&control, &mut companion, &own, &peer, ROUNDS).await;
            companion.stop().await;
            times
        });
    }
    let times = tasks.join_all().await.into_iter().flatten().collect();
    print_latency(&format!("{clients} clients at once"), times);
}

async fn round_trips(
    control: &Control,
    companion: &mut Companion,
    own: &str,
    peer: &str,
    rounds: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for k in 0..rounds {
        let started = Instant::now();
        phone_sends(control, peer, own, k).await;
        companion.texts(1).await;
        times.push(started.elapsed());
    }
    times
}

fn print_latency(who: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "phone send -> client message event, {who} ({} messages, one at a time per \
         client): p50 {:.1} ms, p99 {:.1} ms",
        times.len(),
        at(0.5),
        at(0.99)
    );
}

/// One fresh client to `Connected` (QR pairing included), then its IK
/// re-login on the same store; five rounds, each on a new account.
async fn one_client(control: &Control) {
    let mut fresh = Vec::new();
    let mut again = Vec::new();
    for round in 0..5 {
        let phone = format!("62813{round:07}");
        control.create_phone(&phone).await;
        let started = Instant::now();
        let (companion, _) = pair(control, &phone).await;
        fresh.push(started.elapsed());
        let store = companion.store.clone();
        companion.stop().await;
        let started = Instant::now();
        let mut relogin = Companion::start(&control.ws_url(), store).await;
        relogin.logged_in().await;
        again.push(started.elapsed());
        relogin.stop().await;
    }
    println!(
        "one client, start to Connected with QR pairing: {} (median {})",
        list(&fresh),
        median(&mut fresh)
    );
    println!(
        "one client, start to Connected by IK re-login: {} (median {})",
        list(&again),
        median(&mut again)
    );
}

async fn many_clients(control: &std::sync::Arc<Control>, n: usize) -> (Duration, Vec<Companion>) {
    let phones: Vec<String> = (0..n).map(|i| format!("62814{i:07}")).collect();
    for phone in &phones {
        control.create_phone(phone).await;
    }
    let started = Instant::now();
    let mut pairing = tokio::task::JoinSet::new();
    for phone in phones {
        let control = control.clone();
        pairing.spawn(async move { pair(&control, &phone).await.0 });
    }
    let mut companions = Vec::with_capacity(n);
    while let Some(companion) = pairing.join_next().await {
        companions.push(companion.expect("a pairing"));
    }
    (started.elapsed(), companions)
}

fn list(times: &[Duration]) -> String {
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1000.0))
        .collect();
    ms.join(", ")
}

fn median(times: &mut [Duration]) -> String {
    times.sort();
    format!("{:.0} ms", times[times.len() / 2].as_secs_f64() * 1000.0)
}
