//! The memory a 100 MB document costs: `cargo bench --features sandbox
//! --bench media`.
//!
//! A sandbox (`wago sandbox`) and a WAGO server (`wago serve`, SQLite) run
//! as separate processes; one tenant is paired. The bench sends a
//! `BENCH_MEDIA_MB` (default 100) MB document through `/send-document`
//! (multipart, streamed from a file) and waits until the sandbox's phone
//! has fetched, decrypted and verified it; then that phone sends a file as
//! large back, which the session fetches and checks before it is stored,
//! and the bench downloads it again from `GET /messages/{id}/media`. It
//! prints the server's resident memory before, and its high-water mark
//! (`VmHWM`) after each half, with the time each took.

#[path = "../tests/support_nodes/mod.rs"]
mod support_nodes;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::io::Write as _;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use support_nodes::{Node, SandboxProcess, create_tenants, pair_all};
use support_sandbox::Control;

const MIB: u64 = 1024 * 1024;

#[tokio::main]
async fn main() {
    let mb: u64 = std::env::var("BENCH_MEDIA_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let size = (mb * 1_000_000).min(100 * MIB) as usize;
    let dir = tempfile::tempdir().expect("a temp dir");
    let sandbox = SandboxProcess::start().await;
    let dsn = format!("sqlite://{}", dir.path().join("wago.db").display());
    let media_dir = dir.path().join("media").display().to_string();
    let mut node = Node::start_with(
        "media-bench",
        &dsn,
        &sandbox.control,
        "30s",
        &[("MEDIA_DIR", media_dir.as_str())],
    );
    let tenants = create_tenants(&node, &sandbox.control, 1).await;
    pair_all(&node, &sandbox.control, &tenants, 1).await;
    let tenant = &tenants[0];
    let peer = "628129990101";
    sandbox.control.create_phone(peer).await;
    let pid = node.child.id();
    println!("media bench: a {size}-byte document each way, `wago serve` on SQLite");
    println!("  server RSS once paired: {} KiB", status_kib(pid, "VmRSS"));

    // Sending: the file streams from disk into the multipart body.
    let path = dir.path().join("outbound.bin");
    let sha = write_file(&path, size, 7);
    let started = Instant::now();
    let file = tokio::fs::File::open(&path).await.expect("the file");
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let part = reqwest::multipart::Part::stream_with_length(body, size as u64)
        .file_name("big.pdf")
        .mime_str("application/pdf")
        .expect("a MIME type");
    let form = reqwest::multipart::Form::new()
        .text("to", peer)
        .part("file", part);
    let answer = node
        .http
        .post(format!("{}/send-document", node.api))
        .header("X-API-Key", &tenant.key)
        .multipart(form)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("the server answers");
    let status = answer.status();
    let sent: serde_json::Value = answer.json().await.expect("JSON");
    assert!(status.is_success(), "{status}: {sent}");
    let id = sent["message_id"].as_str().expect("an id").to_owned();
    wait_verified(&sandbox.control, peer, &id, &sha).await;
    println!(
        "  send: accepted, uploaded and verified by the phone in {:.1} s; server VmHWM {} KiB",
        started.elapsed().as_secs_f64(),
        status_kib(pid, "VmHWM")
    );

    // Receiving: the phone sends a file as large; the session fetches it
    // before the message is stored.
    let inbound = pattern(size, 11);
    let inbound_sha = hex::encode(Sha256::digest(&inbound));
    let started = Instant::now();
    let sent = sandbox
        .control
        .http
        .post(sandbox.control.url(&format!(
            "/phones/{peer}/media?to={}&kind=document&file_name=back.pdf",
            tenant.phone
        )))
        .body(inbound)
        .send()
        .await
        .expect("the sandbox answers");
    assert_eq!(sent.status(), 200);
    let sent: serde_json::Value = sent.json().await.expect("JSON");
    let id = sent["id"].as_str().expect("an id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, message) = node.get(&tenant.key, &format!("/messages/{id}")).await;
        if status == 200 {
            assert_eq!(message["media"]["state"], "stored", "{message}");
            break;
        }
        assert!(Instant::now() < deadline, "the file never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fetched = started.elapsed();
    let served = node
        .http
        .get(format!("{}/messages/{id}/media", node.api))
        .header("X-API-Key", &tenant.key)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(served.status(), 200);
    let mut hash = Sha256::new();
    let mut bytes = 0usize;
    let mut chunks = served.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("a chunk");
        bytes += chunk.len();
        hash.update(&chunk);
    }
    assert_eq!(bytes, size);
    assert_eq!(hex::encode(hash.finalize()), inbound_sha);
    println!(
        "  receive: fetched, decrypted, checked and stored in {:.1} s, served back in {:.1} s; server VmHWM {} KiB",
        fetched.as_secs_f64(),
        (started.elapsed() - fetched).as_secs_f64(),
        status_kib(pid, "VmHWM")
    );
    node.terminate();
}

/// `size` bytes of a pattern that differs per `seed`.
fn pattern(size: usize, seed: u32) -> Vec<u8> {
    (0..size as u32)
        .map(|i| ((i.wrapping_mul(31) ^ seed) % 251) as u8)
        .collect()
}

/// Writes the pattern to `path` a MiB at a time; returns its SHA-256.
fn write_file(path: &std::path::Path, size: usize, seed: u32) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("a file"));
    let mut hash = Sha256::new();
    let mut written = 0usize;
    while written < size {
        let n = (size - written).min(MIB as usize);
        let chunk: Vec<u8> = (written..written + n)
            .map(|i| (((i as u32).wrapping_mul(31) ^ seed) % 251) as u8)
            .collect();
        hash.update(&chunk);
        file.write_all(&chunk).expect("written");
        written += n;
    }
    file.flush().expect("flushed");
    hex::encode(hash.finalize())
}

/// Polls the phone's inbox until message `id` is there, verified.
async fn wait_verified(sandbox: &Control, phone: &str, id: &str, sha: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, inbox) = sandbox.get(&format!("/phones/{phone}/messages")).await;
        if let Some(m) = inbox
            .as_array()
            .and_then(|all| all.iter().find(|m| m["id"] == id))
        {
            assert_eq!(m["media"]["verified"], true, "{m}");
            assert_eq!(m["media"]["sha256"], sha);
            return;
        }
        assert!(Instant::now() < deadline, "the phone never got {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `/proc/<pid>/status` figure, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
