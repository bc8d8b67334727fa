//! One port, two protocols: WhatsApp's clients fetch media over `https://`
//! while the WebSocket and the control API stay plain HTTP. Each accepted
//! connection is sorted by its first byte (a TLS handshake record starts
//! with 22), and TLS ones are served with a certificate the sandbox makes
//! for itself at start, for `127.0.0.1`, `::1` and `localhost`. A client
//! that verifies certificates trusts that one
//! ([`RunningSandbox::media_certificate_pem`](crate::RunningSandbox::media_certificate_pem)),
//! and nothing else about its TLS changes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A connection, plain or TLS.
pub(crate) type Io = Either<TcpStream, TlsStream<TcpStream>>;

/// How long a connection may take to say what it speaks and, for TLS, to
/// finish the handshake.
const SORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sorted connections waiting for the server at most.
const WAITING: usize = 64;

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 22;

/// The sandbox's own certificate and the acceptor that serves it.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    certificate_pem: String,
}

impl Tls {
    /// A fresh self-signed certificate for the loopback names.
    pub fn generate() -> io::Result<Self> {
        let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        let certified = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der())
            .map_err(io::Error::other)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .map_err(io::Error::other)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate_pem: certified.cert.pem(),
        })
    }

    /// The certificate, PEM-encoded, for clients to trust.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }
}

/// Hands axum the connections that [`sort`] has sorted.
pub(crate) struct SortingListener {
    sorted: mpsc::Receiver<(Io, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for SortingListener {
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Io, SocketAddr) {
        match self.sorted.recv().await {
            Some(accepted) => accepted,
            // The accept loop has stopped: the sandbox is shutting down,
            // and the server stops on the same signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts on `listener` until `stop`, sorting each connection on a task of
/// its own so that a slow one holds up nobody else.
pub(crate) fn sort(
    listener: TcpListener,
    tls: &Tls,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> io::Result<SortingListener> {
    let local = listener.local_addr()?;
    let (sorted, waiting) = mpsc::channel(WAITING);
    let acceptor = tls.acceptor.clone();
    let spawner = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was taken: back off a moment rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Stanzas are small writes answered at once: without
            // TCP_NODELAY each waits out the peer's delayed ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            let (acceptor, sorted) = (acceptor.clone(), sorted.clone());
            spawner.spawn(async move {
                match tokio::time::timeout(SORT_TIMEOUT, open(tcp, &acceptor)).await {
                    Ok(Ok(io)) => {
                        let _ = sorted.send((io, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection dropped"),
                    Err(_) => tracing::debug!(%peer, "connection said nothing in time"),
                }
            });
        }
    });
    Ok(SortingListener {
        sorted: waiting,
        local,
    })
}

/// Plain, or TLS once the handshake is done.
async fn open(tcp: TcpStream, acceptor: &TlsAcceptor) -> io::Result<Io> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
        Ok(Either::Right(acceptor.accept(tcp).await?))
    } else {
        Ok(Either::Left(tcp))
    }
}
