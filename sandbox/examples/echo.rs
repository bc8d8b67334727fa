//! A plain `whatsapp-rust` client against a sandbox in this process: the
//! client shows a QR code, a simulated phone scans it, the client sends a
//! text to another simulated phone, sees it delivered and read, and gets the
//! reply.
//!
//! ```sh
//! cargo run -p wago-sandbox --example echo
//! ```
//!
//! The client is built with whatsapp-rust's `danger-skip-cert-chain-verify`
//! feature (a dev-dependency of this crate): a sandbox cannot present a
//! certificate signed by WhatsApp's root key. Keep that feature out of
//! anything that talks to WhatsApp itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use wacore::store::InMemoryBackend;
use wacore::types::events::{Event, EventHandler};
use wacore::types::presence::ReceiptType;
use wago_sandbox::{SandboxConfig, start};
use whatsapp_rust::Jid;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;

/// The number the client links to as a companion device.
pub const ME: &str = "15550100001";
/// Someone to write to.
pub const FRIEND: &str = "15550100002";

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let echo = run().await?;
    println!(
        "linked as device {} of {ME}; sent {:?} to {FRIEND}: delivered, read; reply {:?}",
        echo.device, echo.sent_id, echo.reply
    );
    Ok(())
}

/// What the conversation showed.
#[derive(Debug)]
pub struct Echo {
    /// The device id the phone gave the client.
    pub device: u16,
    /// The id of the client's text.
    pub sent_id: String,
    /// The text the friend's phone got.
    pub received: String,
    /// The friend's answer, as the client decrypted it.
    pub reply: String,
}

pub async fn run() -> anyhow::Result<Echo> {
    let sandbox = start(SandboxConfig::loopback()).await?;
    sandbox.create_phone(ME)?;
    sandbox.create_phone(FRIEND)?;

    // A client as any bot builds one, pointed at the sandbox.
    let (tx, mut events) = mpsc::unbounded_channel();
    let bot = Bot::builder()
        .with_backend_arc(Arc::new(InMemoryBackend::new()))
        .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(sandbox.ws_url()))
        .with_http_client(NoInternet)
        .with_runtime(whatsapp_rust::TokioRuntime)
        // A fixed version, so the client does not look one up online.
        .with_version((2, 3000, 1_023_000_000))
        .with_event_handler(Forward(tx))
        .build()
        .await?;
    let handle = bot.spawn();

    // The client shows a QR code; my phone scans it.
    let qr = next(&mut events, "a QR code", |e| match e {
        Event::PairingQrCode(qr) => Some(qr.code.clone()),
        _ => None,
    })
    .await?;
    let linked = sandbox.link(ME, &qr).await?;
    next(&mut events, "Connected", |e| {
        matches!(e, Event::Connected(_)).then_some(())
    })
    .await?;

    // A text to my friend: their phone gets it and says so.
    let sent_id = handle
        .client()
        .send_text(Jid::pn(FRIEND), "ping")
        .await?
        .message_id;
    let received = sandbox
        .wait_for_text(FRIEND, STEP, |t| t.id == sent_id)
        .await?;
    receipt(&mut events, &sent_id, ReceiptType::Delivered).await?;

    // My friend reads it and answers.
    sandbox.read(FRIEND, ME).await?;
    receipt(&mut events, &sent_id, ReceiptType::Read).await?;
    sandbox.send_text(FRIEND, ME, "pong").await?;
    let reply = next(&mut events, "the reply", |e| match e {
        Event::Messages(batch) => batch
            .messages
            .iter()
            .find_map(|m| m.message.conversation.clone()),
        _ => None,
    })
    .await?;

    handle.shutdown().await;
    sandbox.shutdown().await?;
    Ok(Echo {
        device: linked.device,
        sent_id,
        received: received.text,
        reply,
    })
}

/// Hands the client's events to `run`.
struct Forward(mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.send(event);
    }
}

/// The client asks for HTTP only for media and version lookups; here it
/// needs none.
struct NoInternet;

#[async_trait::async_trait]
impl wacore::net::HttpClient for NoInternet {
    async fn execute(
        &self,
        request: wacore::net::HttpRequest,
    ) -> anyhow::Result<wacore::net::HttpResponse> {
        anyhow::bail!("no internet here (asked for {})", request.url)
    }
}

/// The first event `pick` accepts; the others are skipped.
async fn next<T>(
    events: &mut mpsc::UnboundedReceiver<Arc<Event>>,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> anyhow::Result<T> {
    let found = tokio::time::timeout(STEP, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(&event) {
                return Some(found);
            }
        }
        None
    })
    .await;
    found
        .with_context(|| format!("no {what} within {STEP:?}"))?
        .with_context(|| format!("the client stopped before {what}"))
}

async fn receipt(
    events: &mut mpsc::UnboundedReceiver<Arc<Event>>,
    id: &str,
    kind: ReceiptType,
) -> anyhow::Result<()> {
    let what = format!("a {kind:?} receipt for {id}");
    next(events, &what, |e| match e {
        Event::Receipt(r) => {
            (r.r#type == kind && r.message_ids.iter().any(|m| m == id)).then_some(())
        }
        _ => None,
    })
    .await
}
