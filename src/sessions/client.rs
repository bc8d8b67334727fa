//! Building one session's `whatsapp-rust` client: where it connects, which
//! version it announces, and the HTTP client it may use.
//!
//! A sandbox build weakens the client's certificate check, so it refuses
//! any server that is not on a loopback address: such a build can only ever
//! talk to a sandbox.

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
    let mut builder = Bot::builder()
        .with_backend_arc(Arc::new(store))
        .with_transport_factory(FencedFactory::new(transport, fence))
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

/// Forwards the client's events that the session task acts on into its
/// bounded channel. The client calls this synchronously and must never
/// block on it, so an event that finds the channel full is dropped and
/// logged: a lost ack leaves its send queued, to go again with the same id
/// (the recipient drops the repeat); a lost receipt leaves a status behind.
pub(super) struct Forward(pub tokio::sync::mpsc::Sender<Arc<Event>>);

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        let wanted = matches!(
            event.as_ref(),
            Event::PairingQrCode(_)
                | Event::PairSuccess(_)
                | Event::Connected(_)
                | Event::Disconnected(_)
                | Event::LoggedOut(_)
                | Event::PairingQrCodesExhausted(_)
                | Event::Receipt(_)
                | Event::ServerAck(_)
        );
        if !wanted {
            return;
        }
        match self.0.try_send(event) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
                tracing::warn!(event = ?std::mem::discriminant(event.as_ref()), "session task is behind; dropped a client event");
            }
            // The task has ended.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The client's HTTP needs (version lookup, media) on WAGO's reqwest client.
struct HttpClient(reqwest::Client);

#[async_trait::async_trait]
impl wacore::net::HttpClient for HttpClient {
    async fn execute(
        &self,
        request: wacore::net::HttpRequest,
    ) -> anyhow::Result<wacore::net::HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut call = self.0.request(method, &request.url);
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        if let Some(body) = request.body {
            call = call.body(body);
        }
        let response = call.send().await?;
        let status_code = response.status().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(wacore::net::HttpResponse { status_code, body })
    }
}

#[cfg(test)]
mod tests {
    use wacore::types::events::{Connected, OfflineSyncCompleted};

    use super::*;

    #[test]
    fn the_event_channel_stays_bounded_and_never_blocks_the_client() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let forward = Forward(tx);
        // Events the task does not act on are not queued at all.
        forward.handle_event(Arc::new(Event::OfflineSyncCompleted(
            OfflineSyncCompleted::builder().count(3).build(),
        )));
        // A full channel drops the event instead of growing or blocking.
        for _ in 0..5 {
            forward.handle_event(Arc::new(Event::Connected(Connected::builder().build())));
        }
        let mut queued = 0;
        while let Ok(event) = rx.try_recv() {
            assert!(matches!(event.as_ref(), Event::Connected(_)));
            queued += 1;
        }
        assert_eq!(queued, 2);
    }
}
