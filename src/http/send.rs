//! Sending: `POST /send-text` and `POST /send-otp`.
//!
//! A send is written as a `queued` row (with its WhatsApp id fixed) before
//! anything goes out, so an accepted send survives a crash; the session's
//! queue sends it. A connected session sends at once and the request waits
//! for the outcome, unless the number's pace holds the send back: then it
//! answers `202 queued` at once, with when the send should go. `"queue":
//! true` accepts the send while the session is down. `Idempotency-Key`
//! makes a retried request answer as the first did.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, TenantAuth};
use crate::sessions::{Phone, SendOutcome, SessionError, SessionState, new_message_id};
use crate::store::messages::{Accepted, NewOutbound, OutboundMessage};
use crate::store::rfc3339;
use crate::tenants::TenantId;
use crate::types::MessageStatus;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_text))
        .routes(routes!(send_otp))
}

/// The longest text WhatsApp takes in one message.
pub(super) const MAX_TEXT_CHARS: usize = 65_536;
/// How long a request waits for its send before answering `queued`.
const SEND_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_OTP_TEMPLATE: &str = "Your verification code is %s. Do not share it with anyone.";

/// A text to one number.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendText {
    /// The recipient's phone number, digits with an optional `+`.
    #[schema(example = "62812000002")]
    to: String,
    /// At most 65,536 characters, not only blanks.
    #[schema(example = "halo")]
    text: String,
    /// Accept the send while the session is not connected; it goes when
    /// the session connects (`202 queued`).
    #[serde(default)]
    queue: bool,
}

/// A one-time code to one number, in a template.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendOtp {
    #[schema(example = "62812000002")]
    to: String,
    /// 1 to 32 letters, digits or dashes.
    #[schema(example = "482913")]
    code: String,
    /// The text, with exactly one `%s` where the code goes (default:
    /// "Your verification code is %s. Do not share it with anyone.").
    template: Option<String>,
    #[serde(default)]
    queue: bool,
}

/// A validated send.
struct Send {
    to: Phone,
    text: String,
    queue: bool,
    idempotency_key: Option<String>,
}

impl Send {
    fn new(to: &str, text: String, queue: bool, headers: &HeaderMap) -> ApiResult<Self> {
        Ok(Send {
            to: Phone::parse(to).map_err(|e| ApiError::invalid("to", e))?,
            text,
            queue,
            idempotency_key: idempotency_key(headers)?,
        })
    }
}

/// Send a text. It is written before it goes and sent at the number's
/// pace; the answer waits for WhatsApp's acknowledgement (up to 30 s) unless
/// the pace holds the send back.
#[utoipa::path(
    post,
    path = "/send-text",
    tag = "send",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a request repeated with the same key gets the first one's answer, and nothing is sent twice.")),
    request_body = SendText,
    responses(
        (status = 200, description = "Sent (acknowledged by WhatsApp), or `failed` (refused by it).", body = SendAnswer),
        (status = 202, description = "Accepted and queued: held back by the number's pace (with `expected_at`), not yet acknowledged, or sent with `queue` while the session is down.", body = SendAnswer),
        (status = 503, description = "The session is not connected (`session_not_connected`); send with `queue` to have it go later.", body = ErrorBody),
    ),
)]
async fn send_text(
    auth: TenantAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendText>,
) -> ApiResult<(StatusCode, Json<SendAnswer>)> {
    let text = check_text("text", body.text)?;
    let send = Send::new(&body.to, text, body.queue, &headers)?;
    timed(deliver(&state, &auth.tenant_id, send)).await
}

/// Send a one-time code in a template; otherwise as `/send-text`.
#[utoipa::path(
    post,
    path = "/send-otp",
    tag = "send",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a request repeated with the same key gets the first one's answer, and nothing is sent twice.")),
    request_body = SendOtp,
    responses(
        (status = 200, description = "Sent (acknowledged by WhatsApp), or `failed` (refused by it).", body = SendAnswer),
        (status = 202, description = "Accepted and queued (see `/send-text`).", body = SendAnswer),
        (status = 503, description = "The session is not connected (`session_not_connected`).", body = ErrorBody),
    ),
)]
async fn send_otp(
    auth: TenantAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendOtp>,
) -> ApiResult<(StatusCode, Json<SendAnswer>)> {
    let code = body.code.trim();
    if code.is_empty()
        || code.len() > 32
        || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::invalid(
            "code",
            "must be 1 to 32 letters, digits or dashes",
        ));
    }
    let template = body.template.as_deref().unwrap_or(DEFAULT_OTP_TEMPLATE);
    if template.matches("%s").count() != 1 {
        return Err(ApiError::invalid(
            "template",
            "must contain exactly one %s, where the code goes",
        ));
    }
    let text = check_text("template", template.replacen("%s", code, 1))?;
    let send = Send::new(&body.to, text, body.queue, &headers)?;
    timed(deliver(&state, &auth.tenant_id, send)).await
}

pub(super) fn check_text(field: &str, text: String) -> ApiResult<String> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(text)
}

crate::text_enum! {
    /// The statuses a send answers with.
    enum SendStatus {
        Queued = "queued",
        Sent = "sent",
        Failed = "failed",
    }
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(key) if !key.is_empty() && key.len() <= 255 => Ok(Some(key.to_owned())),
        _ => Err(ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Records how long a send took to answer, by the status answered.
pub(super) async fn timed(
    deliver: impl Future<Output = ApiResult<(StatusCode, Json<SendAnswer>)>>,
) -> ApiResult<(StatusCode, Json<SendAnswer>)> {
    let started = std::time::Instant::now();
    let answer = deliver.await;
    if let Ok((_, Json(body))) = &answer {
        crate::metrics::send_answered(body.status, started.elapsed());
    }
    answer
}

async fn deliver(
    state: &AppState,
    tenant: &TenantId,
    send: Send,
) -> ApiResult<(StatusCode, Json<SendAnswer>)> {
    if let Some(key) = &send.idempotency_key
        && let Some(first) = state.store.find_idempotent_send(tenant, key).await?
    {
        return Ok(answer(&first));
    }
    let (connected, sender) = ready_to_send(state, tenant, send.queue).await?;
    let message_id = new_message_id();
    let chat_id = send.to.jid();
    let row = NewOutbound {
        message_id: &message_id,
        chat_id: &chat_id,
        kind: "conversation",
        text: &send.text,
        idempotency_key: send.idempotency_key.as_deref(),
    };
    let row = match state.store.accept_outbound(tenant, &sender, &row).await? {
        Accepted::Repeat(first) => return Ok(answer(&first)),
        Accepted::New(row) => row,
    };
    dispatch(state, tenant, row, connected).await
}

/// Whether the session is connected, and the account's bare JID (the
/// sender of what it sends). A session that is not connected refuses the
/// send unless `queue` asks to keep it until it is.
pub(super) async fn ready_to_send(
    state: &AppState,
    tenant: &TenantId,
    queue: bool,
) -> ApiResult<(bool, String)> {
    // From the session's task when it runs here, else from its status row.
    let (session, jid) = state.sessions.state_for_send(tenant).await?;
    let connected = session == SessionState::Connected;
    if !connected && !queue {
        return Err(ApiError::SessionNotConnected(format!(
            "the session is {session}; pair or reconnect it, or send with \"queue\": true"
        )));
    }
    Ok((connected, jid.as_deref().map(bare_jid).unwrap_or_default()))
}

/// Hands a written send to its session and answers with how it went.
pub(super) async fn dispatch(
    state: &AppState,
    tenant: &TenantId,
    row: OutboundMessage,
    connected: bool,
) -> ApiResult<(StatusCode, Json<SendAnswer>)> {
    tracing::info!(tenant_id = %tenant, message_id = %row.message_id, "send accepted");
    if !connected {
        // Sent when the session connects, on whichever node runs it.
        state.sessions.submit(tenant, &row, None).await?;
        return Ok(answer(&row));
    }
    match state.sessions.submit(tenant, &row, Some(SEND_WAIT)).await {
        // The session told how it went.
        Ok(SendOutcome::Settled(Some(status))) => Ok(answer(&OutboundMessage { status, ..row })),
        Ok(SendOutcome::Settled(None)) => Ok(answer(&refreshed(state, tenant, row).await?)),
        Ok(SendOutcome::Held { until_ms }) => {
            let (code, Json(mut body)) = answer(&row);
            body.expected_at = Some(rfc3339(until_ms));
            Ok((code, Json(body)))
        }
        // Still waiting (the number's pace, a slow server, another node):
        // it stays queued and goes exactly once.
        Err(SessionError::Timeout(_)) => Ok(answer(&row)),
        // The session went away meanwhile (a hand-over, a fence, a lost
        // connection): whether the server got the send is unknown, so it
        // is never reported failed. It stays queued under its message id
        // and goes (again, deduplicated by that id) when the session runs.
        Err(e) => {
            tracing::info!(error = %e, message_id = %row.message_id, "send interrupted; it stays queued");
            Ok(answer(&refreshed(state, tenant, row).await?))
        }
    }
}

async fn refreshed(
    state: &AppState,
    tenant: &TenantId,
    row: OutboundMessage,
) -> ApiResult<OutboundMessage> {
    Ok(
        match state.store.get_message(tenant, &row.message_id).await? {
            Some(now) => OutboundMessage {
                status: now.status,
                error: now.error,
                ..row
            },
            None => row,
        },
    )
}

/// The answer to a send.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendAnswer {
    /// The WhatsApp message id, fixed when the send was accepted.
    pub message_id: String,
    /// `sent`, `queued` or `failed`.
    #[schema(value_type = SendStatus)]
    pub status: MessageStatus,
    /// When a send the number's pace holds back should go (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_at: Option<String>,
}

/// 202 while a send waits in the queue, 200 once it went out. The answer
/// reports the send itself (a repeat gets the first answer): receipts that
/// moved it further are for `GET /messages/{id}` and the webhook to tell.
pub(super) fn answer(row: &OutboundMessage) -> (StatusCode, Json<SendAnswer>) {
    let (code, status) = match row.status {
        MessageStatus::Queued => (StatusCode::ACCEPTED, MessageStatus::Queued),
        MessageStatus::Failed => (StatusCode::OK, MessageStatus::Failed),
        _ => (StatusCode::OK, MessageStatus::Sent),
    };
    let body = SendAnswer {
        message_id: row.message_id.clone(),
        status,
        expected_at: None,
    };
    (code, Json(body))
}

/// `62811:3@s.whatsapp.net` as `62811@s.whatsapp.net`.
fn bare_jid(jid: &str) -> String {
    match (jid.split_once('@'), jid.split_once(':')) {
        (Some((user, server)), Some(_)) => {
            let user = user.split(':').next().unwrap_or(user);
            format!("{user}@{server}")
        }
        _ => jid.to_owned(),
    }
}
