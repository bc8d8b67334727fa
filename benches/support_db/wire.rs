//! A counting hop between WAGO and Postgres: it forwards every byte both
//! ways and reads the client's side of the wire protocol, so a bench can
//! say how many statements, round trips and pings a unit of work cost.
//!
//! After the start-up exchange every frontend message is one type byte and
//! a four-byte length (counting itself). A simple query (`Q`) is one
//! statement and one round trip; an extended-protocol statement is an
//! execute (`E`) and a round trip ends at each `Sync` (`S`). A `Sync` with
//! no statement since the last one is sqlx's ping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What crossed the wire so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct WireCounts {
    pub statements: u64,
    pub round_trips: u64,
    pub pings: u64,
}

impl std::ops::Sub for WireCounts {
    type Output = WireCounts;
    fn sub(self, before: WireCounts) -> WireCounts {
        WireCounts {
            statements: self.statements - before.statements,
            round_trips: self.round_trips - before.round_trips,
            pings: self.pings - before.pings,
        }
    }
}

#[derive(Default)]
struct Counters {
    statements: AtomicU64,
    round_trips: AtomicU64,
    pings: AtomicU64,
}

/// The hop: connect to `addr` instead of Postgres.
pub struct WireCounter {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl WireCounter {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counters = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, counters).await;
                    }
                });
            }
        });
        WireCounter {
            addr,
            counters,
            task,
        }
    }

    pub fn counts(&self) -> WireCounts {
        WireCounts {
            statements: self.counters.statements.load(Ordering::Relaxed),
            round_trips: self.counters.round_trips.load(Ordering::Relaxed),
            pings: self.counters.pings.load(Ordering::Relaxed),
        }
    }

    /// `dsn` with its host and port replaced by this hop's.
    pub fn dsn(&self, dsn: &str) -> String {
        let mut url = url::Url::parse(dsn).expect("a Postgres URL");
        url.set_host(Some(&self.addr.ip().to_string()))
            .expect("host");
        url.set_port(Some(self.addr.port())).expect("port");
        url.to_string()
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let up = async {
        let mut reader = Reader::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            reader.feed(&buf[..n], &counters);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    tokio::join!(down, up);
}

/// Splits the client's byte stream into messages.
#[derive(Default)]
struct Reader {
    pending: Vec<u8>,
    /// Past the untyped start-up messages (SSL request, start-up).
    started: bool,
    /// A statement since the last `Sync`.
    statement_since_sync: bool,
}

const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

impl Reader {
    fn feed(&mut self, bytes: &[u8], counters: &Counters) {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            if !self.started {
                // Length (itself included), then a code or the protocol.
                if rest.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes(rest[0..4].try_into().unwrap()) as usize;
                if rest.len() < len {
                    break;
                }
                let code = u32::from_be_bytes(rest[4..8].try_into().unwrap());
                if code != SSL_REQUEST && code != GSS_REQUEST {
                    self.started = true;
                }
                at += len;
                continue;
            }
            if rest.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            if rest.len() < 1 + len {
                break;
            }
            match rest[0] {
                b'Q' => {
                    counters.statements.fetch_add(1, Ordering::Relaxed);
                    counters.round_trips.fetch_add(1, Ordering::Relaxed);
                }
                b'E' => {
                    counters.statements.fetch_add(1, Ordering::Relaxed);
                    self.statement_since_sync = true;
                }
                b'S' => {
                    counters.round_trips.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::take(&mut self.statement_since_sync) {
                        counters.pings.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
            at += 1 + len;
        }
        self.pending.drain(..at);
    }
}
