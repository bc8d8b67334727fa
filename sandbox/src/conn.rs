//! One client connection, from the upgraded socket to its end: the Noise
//! handshake, then the encrypted node channel handed to `pairing` (a new
//! companion showing a QR) or `login` (a registered device).
//!
//! Whatever a client does wrong ends its own connection with a log line and
//! nothing else; no error here reaches the listener.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::Instrument as _;
use wacore_binary::Node;
use wacore_noise::NoiseCipher;

use super::frame::{self, FrameError, FrameStream};
use super::noise::{self, Established, HandshakeError, Pattern};
use super::server::Shared;
use super::{login, pairing};

/// How long a client may take to close after the server's last stanza.
const LINGER: std::time::Duration = std::time::Duration::from_secs(3);

/// The byte stream under a client's WebSocket.
pub(crate) type Io = TokioIo<hyper::upgrade::Upgraded>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("frame does not decrypt: {0}")]
    Cipher(#[from] wacore_noise::NoiseError),
    #[error("node does not decode: {0}")]
    Node(#[from] wacore_binary::BinaryError),
    #[error("{0} timed out")]
    TimedOut(&'static str),
    #[error("frame counter exhausted")]
    Counter,
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Serves one upgraded connection until it ends; logs how it ended.
pub(crate) async fn serve(shared: Arc<Shared>, io: Io, conn: u64) {
    let span = tracing::info_span!("conn", id = conn, device = tracing::field::Empty);
    async move {
        let _open = OpenGauge::new(&shared);
        let ws =
            WebSocketStream::from_raw_socket(io, Role::Server, Some(frame::websocket_config()))
                .await;
        // Shutdown drops the connection wherever it is; nothing it holds
        // outlives the sandbox.
        let outcome = tokio::select! {
            outcome = run(&shared, FrameStream::new(ws), conn) => outcome,
            _ = shared.cancel.cancelled() => Ok(()),
        };
        match outcome {
            Ok(()) => tracing::debug!("connection closed"),
            Err(ConnError::Frame(FrameError::Closed)) => tracing::debug!("client went away"),
            Err(e) => tracing::info!(error = %e, "connection dropped"),
        }
    }
    .instrument(span)
    .await
}

async fn run(
    shared: &Arc<Shared>,
    mut frames: FrameStream<Io>,
    conn: u64,
) -> Result<(), ConnError> {
    let limit = shared.config.handshake_timeout;
    tokio::time::sleep(shared.config.connect_latency).await;
    let handshake = noise::respond(&shared.key, &mut frames, shared.now());
    let established = tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| ConnError::TimedOut("handshake"))??;
    tracing::debug!(pattern = ?established.pattern, "handshake done");
    let counter = match established.pattern {
        Pattern::Xx => &shared.counters.xx,
        Pattern::Ik => &shared.counters.ik,
        Pattern::XxFallback => &shared.counters.fallback,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let Established {
        client_static,
        payload,
        write,
        read,
        ..
    } = established;
    let mut channel = NodeChannel::new(frames, write, read);
    let outcome = if payload.username.is_some() {
        login::serve(shared, &mut channel, conn, client_static, payload).await
    } else if payload.device_pairing_data.as_option().is_some() {
        pairing::serve(shared, &mut channel, client_static, payload).await
    } else {
        Err(ConnError::Protocol(
            "payload neither logs in nor registers".into(),
        ))
    };
    channel.close().await;
    outcome
}

/// Counts a connection task while it lives.
struct OpenGauge(Arc<Shared>);

impl OpenGauge {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        Self(shared.clone())
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Nodes over the Noise transport: each direction counts frames from 0.
pub(crate) struct NodeChannel {
    frames: FrameStream<Io>,
    write: NoiseCipher,
    read: NoiseCipher,
    sent: u32,
    received: u32,
}

impl NodeChannel {
    fn new(frames: FrameStream<Io>, write: NoiseCipher, read: NoiseCipher) -> Self {
        Self {
            frames,
            write,
            read,
            sent: 0,
            received: 0,
        }
    }

    pub async fn send(&mut self, node: &Node) -> Result<(), ConnError> {
        tracing::trace!(node = %wacore::xml::DisplayableNode(node), ">>");
        let plain = wacore_binary::marshal::marshal(node)?;
        let sealed = self.write.encrypt_with_counter(self.sent, &plain)?;
        self.sent = self.sent.checked_add(1).ok_or(ConnError::Counter)?;
        self.frames.send(&sealed).await?;
        Ok(())
    }

    pub async fn recv(&mut self) -> Result<Node, ConnError> {
        let mut frame = self.frames.recv().await?;
        self.read
            .decrypt_in_place_with_counter(self.received, &mut frame)?;
        self.received = self.received.checked_add(1).ok_or(ConnError::Counter)?;
        let unpacked = wacore_binary::util::unpack(&frame)?;
        let node = wacore_binary::marshal::unmarshal_ref(&unpacked)?.to_owned();
        tracing::trace!(node = %wacore::xml::DisplayableNode(&node), "<<");
        Ok(node)
    }

    /// Sends a last stanza (a stream error, a failure) and lets the client
    /// close: closing first races the client's reading of it, and a client
    /// that sees the socket drop before a 515 reconnects twice.
    pub async fn send_last(&mut self, node: &Node) {
        if let Err(e) = self.send(node).await {
            tracing::debug!(error = %e, "could not send the last stanza");
            return;
        }
        let drain = async { while self.frames.recv().await.is_ok() {} };
        if tokio::time::timeout(LINGER, drain).await.is_err() {
            tracing::debug!("client did not close after the last stanza");
        }
    }

    async fn close(&mut self) {
        self.frames.close().await;
    }
}

/// Reads a string attribute of a node the client sent.
pub(crate) fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

/// The byte content of a node, if it has any.
pub(crate) fn bytes(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(wacore_binary::NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}
