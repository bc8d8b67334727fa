//! Sandbox benchmark: `cargo bench --features sandbox --bench sandbox`.
//!
//! Prints (1) the time from starting one fresh client to its `Connected`,
//! pairing by QR included, and its IK re-login; (2) pairings per second
//! with 200 clients pairing at once; (3) the sandbox's memory per connected
//! client. The sandbox runs in a child process (this binary, re-executed
//! with `--sandbox-child`) so its RSS, which it reads from its own
//! /proc/self/status, holds the sandbox alone and none of the clients.
//!
//! Environment: `BENCH_CLIENTS` (default 200).

#[path = "../tests/support_sandbox/mod.rs"]
mod support_sandbox;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

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
    let config = wago::sandbox::SandboxConfig::new("127.0.0.1:0".parse().expect("addr"));
    let sandbox = wago::sandbox::start(config).await.expect("sandbox starts");
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
    for companion in pairing_took.1 {
        companion.stop().await;
    }
    child.stop();
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
