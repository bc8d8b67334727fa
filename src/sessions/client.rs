//! Building one session's `whatsapp-rust` client: where it connects, which
//! version it announces, and the HTTP client it may use.
//!
//! A sandbox build weakens the client's certificate check, so it refuses
//! any server that is not on a loopback address: such a build can only ever
//! talk to a sandbox.

use std::io::Read as _;
use std::sync::Arc;

use wacore::types::events::{Event, EventHandler};
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;

use super::inbound::Inbound;
use super::transport::{Fence, FencedFactory};
use super::{SessionError, SessionSettings};
use crate::store::protocol::SessionStore;

/// Where sessions connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// WhatsApp itself (the client's built-in address).
    WhatsApp,
    /// A server at this WebSocket URL (`WA_SERVER_URL`), usually a sandbox.
    Url(String),
}

impl Endpoint {
    /// Refuses what this build must not connect to.
    pub fn check(&self) -> Result<(), SessionError> {
        if !cfg!(feature = "sandbox") {
            return Ok(());
        }
        let loopback = match self {
            Endpoint::WhatsApp => false,
            Endpoint::Url(raw) => url::Url::parse(raw).ok().is_some_and(|u| match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            }),
        };
        if loopback {
            Ok(())
        } else {
            Err(SessionError::NotASandbox)
        }
    }
}

/// Starts the client of one session on its protocol store. Events go to
/// `events`; inbound messages are stored by `inbound` before they are acked;
/// `fence` can close its connection from outside.
pub(super) async fn start(
    settings: &SessionSettings,
    store: SessionStore,
    inbound: Inbound,
    events: impl EventHandler + 'static,
    fence: Fence,
) -> Result<BotHandle, SessionError> {
    settings.endpoint.check()?;
    let transport = match &settings.endpoint {
        Endpoint::WhatsApp => TokioWebSocketTransportFactory::new(),
        Endpoint::Url(url) => TokioWebSocketTransportFactory::new().with_url(url),
    };
    let node_fence = store.write_fence().clone();
    let mut builder = Bot::builder()
        .with_backend_arc(Arc::new(store))
        .with_transport_factory(FencedFactory::new(transport, fence, node_fence))
        .with_http_client(HttpClient(settings.http.clone()))
        .with_runtime(whatsapp_rust::TokioRuntime)
        .with_inbound_durability_hook(inbound)
        .with_event_handler(events);
    if let Some(version) = settings.version {
        builder = builder.with_version(version);
    }
    if let Some(name) = &settings.push_name {
        builder = builder.with_push_name(name.clone());
    }
    let bot = builder
        .build()
        .await
        .map_err(|e| SessionError::Client(e.to_string()))?;
    Ok(bot.spawn())
}

/// Forwards the client's events that the session task acts on. The
/// client calls this synchronously and must never block on it.
///
/// State events (QR codes, pairing, connected, disconnected, logged out)
/// are never dropped: they go to [`StateEvents`], where only a QR code
/// that a newer one replaces may be shed. Acks and receipts go to a
/// bounded channel; one that finds it full is shed, logged and counted
/// (`wago_client_events_shed_total`): a lost ack leaves its send queued,
/// to go again with the same id (the recipient drops the repeat), and a
/// lost receipt leaves a status behind.
pub(super) struct Forward {
    pub acks: tokio::sync::mpsc::Sender<Arc<Event>>,
    pub states: StateEvents,
}

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        match event.as_ref() {
            Event::PairingQrCode(_)
            | Event::PairSuccess(_)
            | Event::Connected(_)
            | Event::Disconnected(_)
            | Event::LoggedOut(_)
            | Event::PairingQrCodesExhausted(_) => self.states.push(event),
            Event::Receipt(_) | Event::ServerAck(_) => match self.acks.try_send(event) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
                    let kind = if matches!(event.as_ref(), Event::Receipt(_)) {
                        "receipt"
                    } else {
                        "ack"
                    };
                    crate::metrics::client_event_shed(kind);
                    tracing::warn!(kind, "session task is behind; shed a client event");
                }
                // The task has ended.
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
            },
            _ => {}
        }
    }
}

/// The session's state events, in order, waiting for its task: pushed
/// without blocking and without loss. The queue is bounded by shedding
/// QR codes that a newer one replaces; the other events are a handful per
/// connection.
#[derive(Clone, Default)]
pub(super) struct StateEvents(Arc<StateQueue>);

#[derive(Default)]
struct StateQueue {
    events: std::sync::Mutex<std::collections::VecDeque<Arc<Event>>>,
    ready: tokio::sync::Notify,
}

/// QR codes kept waiting at most; older ones are replaced anyway.
const WAITING_QR_CODES: usize = 4;

impl StateEvents {
    fn push(&self, event: Arc<Event>) {
        let mut events = self.0.events.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(event.as_ref(), Event::PairingQrCode(_)) {
            let codes = events
                .iter()
                .filter(|e| matches!(e.as_ref(), Event::PairingQrCode(_)))
                .count();
            if codes >= WAITING_QR_CODES
                && let Some(oldest) = events
                    .iter()
                    .position(|e| matches!(e.as_ref(), Event::PairingQrCode(_)))
            {
                events.remove(oldest);
                crate::metrics::client_event_shed("qr_code");
            }
        }
        events.push_back(event);
        drop(events);
        self.0.ready.notify_one();
    }

    /// Waits until events wait, then takes them all, oldest first.
    pub(super) async fn next(&self) -> Vec<Arc<Event>> {
        loop {
            let taken: Vec<Arc<Event>> = self
                .0
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .collect();
            if !taken.is_empty() {
                return taken;
            }
            self.0.ready.notified().await;
        }
    }
}

/// The client's HTTP needs (version lookup, media) on WAGO's reqwest client.
struct HttpClient(reqwest::Client);

/// Chunks of an upload read ahead of the socket, at most.
const UPLOAD_CHUNKS_AHEAD: usize = 4;
/// The size of one chunk read from an upload's file.
const UPLOAD_CHUNK: usize = 64 * 1024;

impl HttpClient {
    fn call(&self, request: &wacore::net::HttpRequest) -> anyhow::Result<reqwest::RequestBuilder> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut call = self.0.request(method, &request.url);
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        Ok(call)
    }
}

/// A response body read on a blocking thread, a chunk at a time.
struct BlockingBody {
    runtime: tokio::runtime::Handle,
    chunks:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    /// What is left of the last chunk.
    left: bytes::Bytes,
}

impl std::io::Read for BlockingBody {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        use futures_util::StreamExt as _;
        while self.left.is_empty() {
            match self.runtime.block_on(self.chunks.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.left = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buffer.len().min(self.left.len());
        buffer[..n].copy_from_slice(&self.left.split_to(n));
        Ok(n)
    }
}

async fn answer(call: reqwest::RequestBuilder) -> anyhow::Result<wacore::net::HttpResponse> {
    let response = call.send().await?;
    let status_code = response.status().as_u16();
    let body = response.bytes().await?.to_vec();
    Ok(wacore::net::HttpResponse { status_code, body })
}

#[async_trait::async_trait]
impl wacore::net::HttpClient for HttpClient {
    async fn execute(
        &self,
        request: wacore::net::HttpRequest,
    ) -> anyhow::Result<wacore::net::HttpResponse> {
        let mut call = self.call(&request)?;
        if let Some(body) = request.body {
            call = call.body(body);
        }
        answer(call).await
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    /// A download read as it arrives: the client calls this on a blocking
    /// thread and decrypts from the reader into a file.
    fn execute_streaming(
        &self,
        request: wacore::net::HttpRequest,
    ) -> anyhow::Result<wacore::net::StreamingHttpResponse> {
        let runtime = tokio::runtime::Handle::try_current()?;
        let call = self.call(&request)?;
        let response = runtime.block_on(call.send())?;
        let status_code = response.status().as_u16();
        let body = BlockingBody {
            runtime,
            chunks: Box::pin(response.bytes_stream()),
            left: bytes::Bytes::new(),
        };
        Ok(wacore::net::StreamingHttpResponse {
            status_code,
            body: Box::new(body),
        })
    }

    fn supports_upload_streaming(&self) -> bool {
        true
    }

    /// Streams an upload from its reader (a file of ciphertext) in
    /// bounded chunks: the client calls this on a blocking thread, which
    /// reads, while the runtime sends.
    fn execute_upload(
        &self,
        request: wacore::net::HttpRequest,
        mut body: wacore::net::UploadBody,
        content_length: u64,
    ) -> anyhow::Result<wacore::net::HttpResponse> {
        let runtime = tokio::runtime::Handle::try_current()?;
        let (chunks, mut read) =
            tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(UPLOAD_CHUNKS_AHEAD);
        let stream = futures_util::stream::poll_fn(move |cx| read.poll_recv(cx));
        let call = self
            .call(&request)?
            .header(reqwest::header::CONTENT_LENGTH, content_length)
            .body(reqwest::Body::wrap_stream(stream));
        let sent = runtime.spawn(answer(call));
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        loop {
            let chunk = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => Ok(bytes::Bytes::copy_from_slice(&buffer[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            // The request ended early (refused, a dropped connection): its
            // answer says why.
            if chunks.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
        drop(chunks);
        runtime.block_on(sent)?
    }
}

#[cfg(test)]
mod tests {
    use wacore::types::events::{Connected, OfflineSyncCompleted};

    use super::*;

    #[tokio::test]
    async fn state_events_are_never_shed_and_acks_are_bounded() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let states = StateEvents::default();
        let forward = Forward {
            acks: tx,
            states: states.clone(),
        };
        // Events the task does not act on are not queued at all.
        forward.handle_event(Arc::new(Event::OfflineSyncCompleted(
            OfflineSyncCompleted::builder().count(3).build(),
        )));
        // A full ack channel sheds acks instead of growing or blocking...
        for i in 0..5 {
            forward.handle_event(Arc::new(Event::ServerAck(ack(i))));
        }
        let mut queued = 0;
        while let Ok(event) = rx.try_recv() {
            assert!(matches!(event.as_ref(), Event::ServerAck(_)));
            queued += 1;
        }
        assert_eq!(queued, 2);
        // ...while state events all wait, in order, however many come.
        for _ in 0..100 {
            forward.handle_event(Arc::new(Event::Connected(Connected::builder().build())));
        }
        forward.handle_event(Arc::new(Event::LoggedOut(
            wacore::types::events::LoggedOut::builder()
                .on_connect(false)
                .reason(wacore::types::events::ConnectFailureReason::LoggedOut)
                .build(),
        )));
        let taken = states.next().await;
        assert_eq!(taken.len(), 101);
        assert!(matches!(taken[100].as_ref(), Event::LoggedOut(_)));
    }

    fn ack(i: u32) -> wacore::types::events::ServerAck {
        wacore::types::events::ServerAck::builder()
            .id(format!("3EB0{i}"))
            .build()
    }
}
