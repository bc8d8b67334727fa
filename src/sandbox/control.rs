//! The control API (API.md, "Sandbox control API"): create simulated users,
//! let their phones scan a QR or unlink companions, look at an account,
//! and have a phone send texts, list the texts it got, and read them.
//! Every error is `{"error": "<code>", "message": "..."}` with the status
//! API.md gives that code.
//!
//! Handlers parse input into sandbox types and call `pairing` or
//! `messages`; they own no protocol logic.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::accounts::{AccountView, DirectoryError, Phone, Received};
use super::messages::{self, SendError};
use super::pairing::{self, LinkError, Linked};
use super::server::Shared;

/// An error of the control API (and of its Rust twins on `RunningSandbox`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidField(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::InvalidField(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let body = json!({ "error": code, "message": self.to_string() });
        (status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        let message = e.to_string();
        match e {
            LinkError::UnknownPhone(_) => ApiError::NotFound(message),
            LinkError::BadQr(_) => ApiError::BadRequest(message),
            LinkError::BadCode => ApiError::InvalidField(message),
            LinkError::TimedOut => ApiError::Timeout(message),
            LinkError::NotShowing
            | LinkError::NoCode
            | LinkError::KeyMismatch
            | LinkError::Refused(_)
            | LinkError::Gone
            | LinkError::Full => ApiError::Conflict(message),
        }
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        let message = e.to_string();
        match e {
            SendError::UnknownPhone(_) => ApiError::NotFound(message),
            SendError::BadPhone(_) | SendError::EmptyText => ApiError::InvalidField(message),
            SendError::Encrypt(_) => ApiError::Internal(message),
        }
    }
}

/// A text a simulated phone received, as `GET /phones/{phone}/messages`
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// The WhatsApp message id.
    pub id: String,
    /// The sender's phone number.
    pub from: String,
    pub text: String,
    /// When the sandbox received it, RFC 3339 (UTC).
    pub timestamp: String,
}

impl From<&Received> for InboxItem {
    fn from(text: &Received) -> Self {
        let at = time::OffsetDateTime::from_unix_timestamp(text.at as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let timestamp = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            id: text.id.clone(),
            from: text.from.to_string(),
            text: text.text.clone(),
            timestamp,
        }
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/phones", post(post_phone))
        .route("/phones/{phone}", get(get_phone))
        .route("/phones/{phone}/link", post(post_link))
        .route("/phones/{phone}/link-code", post(post_link_code))
        .route("/phones/{phone}/unlink", post(post_unlink))
        .route(
            "/phones/{phone}/messages",
            post(post_message).get(get_messages),
        )
        .route("/phones/{phone}/read", post(post_read))
        .route("/sandbox/health", get(health))
        .route("/sandbox/connections", get(connections))
        .route("/admin/mock-phone/scan-qr", post(super::mock::scan_qr))
        .fallback(|| async { ApiError::NotFound("no such route in the sandbox".into()) })
}

#[derive(Deserialize)]
struct NewPhone {
    phone: String,
}

#[derive(Deserialize)]
struct Scan {
    qr: String,
}

#[derive(Deserialize)]
struct EnteredCode {
    code: String,
}

#[derive(Deserialize)]
struct NewText {
    to: String,
    text: String,
}

#[derive(Deserialize)]
struct ReadFrom {
    from: String,
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "ok": true }))
}

/// `GET /sandbox/connections`: every login (the last 10,000), oldest first,
/// with when it ended and whether it overlapped another of its device.
async fn connections(State(shared): State<Arc<Shared>>) -> Json<Vec<super::online::Login>> {
    Json(shared.online.logins())
}

async fn post_phone(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<NewPhone>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let Json(body) = body?;
    let view = create_phone(&shared, &body.phone)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `POST /phones`: a new account with its simulated phone.
pub(crate) fn create_phone(shared: &Shared, phone: &str) -> Result<AccountView, ApiError> {
    let phone = Phone::parse(phone).map_err(|e| ApiError::InvalidField(format!("phone: {e}")))?;
    match shared.directory.create(phone, shared.now()) {
        Ok(account) => tracing::info!(%phone, lid = %account.lid, "account created"),
        Err(e @ DirectoryError::Exists(_)) => return Err(ApiError::Conflict(e.to_string())),
        Err(e @ (DirectoryError::NoLid | DirectoryError::NoNumber)) => {
            return Err(ApiError::Internal(e.to_string()));
        }
    }
    shared.state_changed();
    shared
        .view(phone)
        .ok_or_else(|| ApiError::Internal("account vanished".into()))
}

async fn get_phone(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Phone::parse(&phone)
        .ok()
        .and_then(|p| shared.view(p))
        .map(Json)
        .ok_or_else(|| unknown(&phone))
}

async fn post_link(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<Scan>, JsonRejection>,
) -> Result<Json<Linked>, ApiError> {
    let Json(body) = body?;
    Ok(Json(pairing::link(&shared, &phone, &body.qr).await?))
}

async fn post_link_code(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<EnteredCode>, JsonRejection>,
) -> Result<Json<Linked>, ApiError> {
    let Json(body) = body?;
    Ok(Json(pairing::link_code(&shared, &phone, &body.code).await?))
}

async fn post_unlink(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let removed = unlink_phone(&shared, &phone)?;
    Ok(Json(json!({ "phone": phone, "removed": removed })))
}

/// `POST /phones/{phone}/unlink`: the removed device ids.
pub(crate) fn unlink_phone(shared: &Shared, phone: &str) -> Result<Vec<u16>, ApiError> {
    let account = Phone::parse(phone)
        .ok()
        .and_then(|p| shared.directory.get(p))
        .ok_or_else(|| unknown(phone))?;
    Ok(pairing::unlink(shared, &account))
}

fn unknown(phone: &str) -> ApiError {
    ApiError::NotFound(format!("no account for phone {phone}"))
}

async fn post_message(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<NewText>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let id = send_text(&shared, &phone, &body.to, &body.text).await?;
    Ok(Json(json!({ "id": id })))
}

/// `POST /phones/{phone}/messages`: the new message's id.
pub(crate) async fn send_text(
    shared: &Shared,
    phone: &str,
    to: &str,
    text: &str,
) -> Result<String, ApiError> {
    Ok(messages::send_text(shared, phone, to, text).await?)
}

async fn get_messages(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
) -> Result<Json<Vec<InboxItem>>, ApiError> {
    Ok(Json(inbox(&shared, &phone)?))
}

/// `GET /phones/{phone}/messages`: the phone's texts, oldest first.
pub(crate) fn inbox(shared: &Shared, phone: &str) -> Result<Vec<InboxItem>, ApiError> {
    let account = Phone::parse(phone)
        .ok()
        .and_then(|p| shared.directory.get(p))
        .ok_or_else(|| unknown(phone))?;
    let state = account.lock();
    Ok(state.inbox.iter().map(InboxItem::from).collect())
}

async fn post_read(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<ReadFrom>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let read = read(&shared, &phone, &body.from)?;
    Ok(Json(json!({ "read": read })))
}

/// `POST /phones/{phone}/read`: how many texts were read.
pub(crate) fn read(shared: &Shared, phone: &str, from: &str) -> Result<usize, ApiError> {
    Ok(messages::read(shared, phone, from)?)
}
