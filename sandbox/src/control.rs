//! The control API (API.md, "Sandbox control API"): create simulated users,
//! let their phones scan a QR or unlink companions, look at an account,
//! and have a phone send texts, list the texts it got, and read them.
//! Every error is `{"error": "<code>", "message": "..."}` with the status
//! API.md gives that code.
//!
//! Every route is registered with `utoipa_axum::routes!`, which adds the
//! handler and its annotation together, so nothing is served undocumented;
//! the document is served at `GET /sandbox/openapi.json`.
//!
//! Handlers parse input into sandbox types and call `pairing` or
//! `messages`; they own no protocol logic.

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accounts::{AccountView, DirectoryError, Phone, Received, ReceivedMedia};
use super::messages::{self, SendError};
use super::online::Login;
use super::pairing::{self, LinkError, Linked};
use super::server::Shared;

/// An error of the control API (and of its Rust twins on `RunningSandbox`).
#[derive(Debug, thiserror::Error)]
///
/// Each variant carries the sentence the HTTP answer's `message` gives.
pub enum ApiError {
    /// A malformed request: a QR code that is not one, a missing field (400).
    #[error("{0}")]
    BadRequest(String),
    /// No account for that number (404).
    #[error("{0}")]
    NotFound(String),
    /// The account exists already; no companion shows that QR or pair
    /// code; the companion refused the pairing or went away (409).
    #[error("{0}")]
    Conflict(String),
    /// A phone number, text or pair code that is not one (422).
    #[error("{0}")]
    InvalidField(String),
    /// The companion did not answer in time, or no awaited text came (504).
    #[error("{0}")]
    Timeout(String),
    /// A fault of the sandbox (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::InvalidField(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField)
            }
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

/// What went wrong, for programs; `message` says it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not what the route takes (not JSON, a field
    /// missing), or a malformed QR code.
    BadRequest,
    /// No such account, or no such route in the sandbox.
    NotFound,
    /// The route does not take that method.
    MethodNotAllowed,
    /// The account exists already, or no companion is showing that QR
    /// or pair code, or the companion refused or went away.
    Conflict,
    /// A phone number or pair code that is not one.
    InvalidField,
    /// The companion did not answer the pairing in time.
    Timeout,
    /// A fault of the sandbox.
    Internal,
}

/// Every error answer: `{"error": "<code>", "message": "<sentence>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// A sentence for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
        };
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
            SendError::BadPhone(_) | SendError::EmptyText | SendError::EmptyFile => {
                ApiError::InvalidField(message)
            }
            SendError::Encrypt(_) | SendError::Media(_) => ApiError::Internal(message),
        }
    }
}

/// A text a simulated phone received, as `GET /phones/{phone}/messages`
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InboxItem {
    /// The WhatsApp message id.
    pub id: String,
    /// The sender's phone number.
    pub from: String,
    /// The text.
    pub text: String,
    /// When the sandbox received it, RFC 3339 (UTC).
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// A media message's file, as the phone fetched, decrypted and checked
    /// it (`text` is then its caption, or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<ReceivedMedia>,
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
            media: text.media.clone(),
        }
    }
}

/// `GET /sandbox/health`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `true`: the sandbox answers.
    ok: bool,
}

/// The companions an unlink removed.
#[derive(Serialize, ToSchema)]
struct Unlinked {
    /// The phone as the path gave it.
    phone: String,
    /// The device ids removed (none when it had no companion).
    removed: Vec<u16>,
}

/// A text the phone sent.
#[derive(Serialize, ToSchema)]
struct Sent {
    /// The new message's WhatsApp id.
    id: String,
}

/// What a read did.
#[derive(Serialize, ToSchema)]
struct ReadCount {
    /// How many texts were marked read (0 when none was unread).
    read: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WAGO sandbox control API",
        description = "The control API of the simulated WhatsApp server (`wago sandbox`): \
            create accounts with simulated phones, link companions by QR or pair code, \
            unlink them, and have a phone send, list and read texts. It is served on the \
            sandbox's port, beside the WebSocket at `/ws/chat`. It has no authentication. \
            Every error is `{\"error\": \"<code>\", \"message\": \"<sentence>\"}`.",
        license(name = "MIT"),
    ),
    tags((name = "sandbox", description = "The simulated WhatsApp server's controls.")),
    components(schemas(ErrorBody)),
)]
struct ControlDoc;

/// Every control route with its description.
fn api() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::with_openapi(ControlDoc::openapi())
        .routes(routes!(post_phone))
        .routes(routes!(get_phone))
        .routes(routes!(post_link))
        .routes(routes!(post_link_code))
        .routes(routes!(post_unlink))
        .routes(routes!(post_message, get_messages))
        .merge(OpenApiRouter::new().routes(routes!(post_media)).layer(
            axum::extract::DefaultBodyLimit::max(super::media::MAX_UPLOAD),
        ))
        .routes(routes!(post_read))
        .routes(routes!(health))
        .routes(routes!(media_certificate))
        .routes(routes!(connections))
        .routes(routes!(openapi_json))
        .routes(routes!(super::mock::scan_qr))
}

/// The control router: `api()` with JSON errors for unknown routes and
/// methods.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    let (router, _) = api().split_for_parts();
    router
        .fallback(|| async { ApiError::NotFound("no such route in the sandbox".into()) })
        .method_not_allowed_fallback(|| async {
            let body = ErrorBody {
                error: ErrorCode::MethodNotAllowed,
                message: "this route does not take that method".into(),
            };
            (StatusCode::METHOD_NOT_ALLOWED, Json(body))
        })
}

/// The control API's OpenAPI 3.1 document, built once.
pub(crate) fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        let mut doc = api().into_openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc
    });
    &DOC
}

/// The phone number of the account, in the path.
const PHONE: &str = "An account's phone number: 7 to 15 digits with the country code, not \
    starting with 0 (a leading `+`, spaces and dashes are dropped).";

/// A new account.
#[derive(Deserialize, ToSchema)]
struct NewPhone {
    /// Its phone number: 7 to 15 digits with the country code, not starting
    /// with 0 (a leading `+`, spaces and dashes are dropped).
    phone: String,
}

/// What the phone scans.
#[derive(Deserialize, ToSchema)]
struct Scan {
    /// The QR string the companion shows (`ref,noise key,identity key,adv
    /// secret[,…]`).
    qr: String,
}

/// What the phone's user types.
#[derive(Deserialize, ToSchema)]
struct EnteredCode {
    /// The 8-character pair code the companion shows (a dash allowed).
    code: String,
}

/// A text to send.
#[derive(Deserialize, ToSchema)]
struct NewText {
    /// The recipient's phone number (an account of this sandbox).
    to: String,
    /// Not empty.
    text: String,
}

/// A file a phone sends: what the message says of it (the file itself is
/// the request's body).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NewMedia {
    /// The recipient's phone number (an account of this sandbox).
    pub to: String,
    /// `image`, `video`, `audio`, `document` or `sticker`.
    #[param(value_type = String)]
    pub kind: super::media::Kind,
    /// The MIME type the message names (default: the kind's usual one).
    pub mimetype: Option<String>,
    /// A document's file name.
    pub file_name: Option<String>,
    /// An image's, a video's or a document's caption.
    pub caption: Option<String>,
    /// Audio: a voice note rather than a file.
    #[serde(default)]
    pub voice: bool,
    /// Host a blob that does not decrypt (one byte flipped), as a corrupted
    /// download would be: the recipient's client must refuse it.
    #[serde(default)]
    pub tamper: bool,
}

/// Whose texts to read.
#[derive(Deserialize, ToSchema)]
struct ReadFrom {
    /// The sender's phone number.
    from: String,
}

/// The sandbox answers.
#[utoipa::path(
    get,
    path = "/sandbox/health",
    tag = "sandbox",
    responses((status = 200, description = "Always `{\"ok\": true}`.", body = Health)),
)]
async fn health() -> Json<Health> {
    Json(Health { ok: true })
}

/// The certificate of the sandbox's media host, PEM-encoded.
///
/// WhatsApp clients reach media over `https://` on the sandbox's own port;
/// a client that verifies certificates trusts this one (made at start for
/// `127.0.0.1`, `::1` and `localhost`; a restart makes a new one).
#[utoipa::path(
    get,
    path = "/sandbox/media-certificate",
    tag = "sandbox",
    responses((
        status = 200,
        description = "The certificate.",
        body = String,
        content_type = "application/x-pem-file"
    )),
)]
async fn media_certificate(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        shared.tls.certificate_pem().to_owned(),
    )
        .into_response()
}

/// Every login (the last 10,000), oldest first.
///
/// With when each ended and whether it overlapped another login of its
/// device.
#[utoipa::path(
    get,
    path = "/sandbox/connections",
    tag = "sandbox",
    responses((status = 200, description = "The logins, oldest first.", body = Vec<Login>)),
)]
async fn connections(State(shared): State<Arc<Shared>>) -> Json<Vec<Login>> {
    Json(shared.online.logins().into_iter().collect())
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/sandbox/openapi.json",
    tag = "sandbox",
    responses((status = 200, description = "The document.", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    static JSON: LazyLock<String> =
        LazyLock::new(|| serde_json::to_string(document()).expect("the document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}

/// A new account, with its simulated phone as device 0.
#[utoipa::path(
    post,
    path = "/phones",
    tag = "sandbox",
    request_body = NewPhone,
    responses(
        (status = 201, description = "The account.", body = AccountView),
        (status = 400, description = "The body is not JSON, not sent as `application/json`, or has no `phone` string (`bad_request`).", body = ErrorBody),
        (status = 409, description = "The number has an account already (`conflict`).", body = ErrorBody),
        (status = 422, description = "Not a phone number (`invalid_field`).", body = ErrorBody),
        (status = 500, description = "No LID or number left to give (`internal`).", body = ErrorBody),
    ),
)]
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

/// An account: its devices, and which of them are online.
#[utoipa::path(
    get,
    path = "/phones/{phone}",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE)),
    responses(
        (status = 200, description = "The account.", body = AccountView),
        (status = 404, description = "No account for that phone, or not a phone number (`not_found`).", body = ErrorBody),
    ),
)]
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

/// The account's phone scans a companion's QR code.
///
/// The companion showing it, connected to the sandbox, is linked as the
/// account's next device. Answers once the companion has accepted the
/// pairing.
#[utoipa::path(
    post,
    path = "/phones/{phone}/link",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE)),
    request_body = Scan,
    responses(
        (status = 200, description = "The companion is linked.", body = Linked),
        (status = 400, description = "The body is not JSON, not sent as `application/json`, or has no `qr` string; or the QR is malformed (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No account for that phone (`not_found`).", body = ErrorBody),
        (status = 409, description = "No connected companion shows that QR, its keys do not match, the companion refused or went away, or the account has no device ids left (`conflict`).", body = ErrorBody),
        (status = 504, description = "The companion did not answer within the pairing timeout (`timeout`).", body = ErrorBody),
    ),
)]
async fn post_link(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<Scan>, JsonRejection>,
) -> Result<Json<Linked>, ApiError> {
    let Json(body) = body?;
    Ok(Json(pairing::link(&shared, &phone, &body.qr).await?))
}

/// The account's phone enters a companion's pair code.
///
/// The companion showing the code for this number, connected to the
/// sandbox, is linked as the account's next device. Answers once the
/// companion has accepted the pairing.
#[utoipa::path(
    post,
    path = "/phones/{phone}/link-code",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE)),
    request_body = EnteredCode,
    responses(
        (status = 200, description = "The companion is linked.", body = Linked),
        (status = 400, description = "The body is not JSON, not sent as `application/json`, or has no `code` string (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No account for that phone (`not_found`).", body = ErrorBody),
        (status = 409, description = "No connected companion shows a pair code for this number, the companion refused or went away, or the account has no device ids left (`conflict`).", body = ErrorBody),
        (status = 422, description = "Not a pair code: 8 characters of 1-9 and A-Z without I, O and U (`invalid_field`).", body = ErrorBody),
        (status = 504, description = "The companion did not answer within the pairing timeout (`timeout`).", body = ErrorBody),
    ),
)]
async fn post_link_code(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<EnteredCode>, JsonRejection>,
) -> Result<Json<Linked>, ApiError> {
    let Json(body) = body?;
    Ok(Json(pairing::link_code(&shared, &phone, &body.code).await?))
}

/// Removes every companion of the account.
///
/// As "log out of all devices" on the phone does: their connections are
/// told and closed.
#[utoipa::path(
    post,
    path = "/phones/{phone}/unlink",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE)),
    responses(
        (status = 200, description = "The companions removed.", body = Unlinked),
        (status = 404, description = "No account for that phone, or not a phone number (`not_found`).", body = ErrorBody),
    ),
)]
async fn post_unlink(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
) -> Result<Json<Unlinked>, ApiError> {
    let removed = unlink_phone(&shared, &phone)?;
    Ok(Json(Unlinked { phone, removed }))
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

/// The account's phone sends a text to another account.
///
/// The text goes to the recipient's phone inbox and, encrypted, to its
/// companions; the sender's own companions get a copy.
#[utoipa::path(
    post,
    path = "/phones/{phone}/messages",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE)),
    request_body = NewText,
    responses(
        (status = 200, description = "Sent.", body = Sent),
        (status = 400, description = "The body is not JSON, not sent as `application/json`, or lacks `to` or `text` (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No account for the sender or the recipient (`not_found`).", body = ErrorBody),
        (status = 422, description = "The sender or recipient is not a phone number, or the text is empty (`invalid_field`).", body = ErrorBody),
        (status = 500, description = "The phone could not encrypt to a companion (`internal`).", body = ErrorBody),
    ),
)]
async fn post_message(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<NewText>, JsonRejection>,
) -> Result<Json<Sent>, ApiError> {
    let Json(body) = body?;
    let id = send_text(&shared, &phone, &body.to, &body.text).await?;
    Ok(Json(Sent { id }))
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

/// The account's phone sends a file to another account.
///
/// The phone encrypts it as a client would, keeps the blob on the media
/// host and sends the message that names it: the recipient's phone keeps
/// what it makes of it, its companions download it over TLS.
#[utoipa::path(
    post,
    path = "/phones/{phone}/media",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE), NewMedia),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file, up to 100 MiB."),
    responses(
        (status = 200, description = "Sent.", body = Sent),
        (status = 400, description = "A query parameter is missing or wrong (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No account for the sender or the recipient (`not_found`).", body = ErrorBody),
        (status = 422, description = "The sender or recipient is not a phone number, or the file is empty (`invalid_field`).", body = ErrorBody),
    ),
)]
async fn post_media(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    query: Result<axum::extract::Query<NewMedia>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Json<Sent>, ApiError> {
    let axum::extract::Query(media) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let id = send_media(&shared, &phone, media, body.to_vec()).await?;
    Ok(Json(Sent { id }))
}

/// `POST /phones/{phone}/media`: the new message's id.
pub(crate) async fn send_media(
    shared: &Shared,
    phone: &str,
    media: NewMedia,
    bytes: Vec<u8>,
) -> Result<String, ApiError> {
    let file = messages::PhoneMedia {
        kind: media.kind,
        bytes,
        mimetype: media.mimetype,
        file_name: media.file_name,
        caption: media.caption,
        voice: media.voice,
        tamper: media.tamper,
    };
    Ok(messages::send_media(shared, phone, &media.to, file).await?)
}

/// The texts the account's phone received, oldest first.
#[utoipa::path(
    get,
    path = "/phones/{phone}/messages",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE)),
    responses(
        (status = 200, description = "The texts, oldest first.", body = Vec<InboxItem>),
        (status = 404, description = "No account for that phone, or not a phone number (`not_found`).", body = ErrorBody),
    ),
)]
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

/// The account's phone reads every unread text from one sender.
///
/// The sender's devices get read receipts.
#[utoipa::path(
    post,
    path = "/phones/{phone}/read",
    tag = "sandbox",
    params(("phone" = String, Path, description = PHONE)),
    request_body = ReadFrom,
    responses(
        (status = 200, description = "How many texts were read.", body = ReadCount),
        (status = 400, description = "The body is not JSON, not sent as `application/json`, or has no `from` string (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No account for that phone (`not_found`).", body = ErrorBody),
        (status = 422, description = "The path's phone or `from` is not a phone number (`invalid_field`).", body = ErrorBody),
    ),
)]
async fn post_read(
    State(shared): State<Arc<Shared>>,
    Path(phone): Path<String>,
    body: Result<Json<ReadFrom>, JsonRejection>,
) -> Result<Json<ReadCount>, ApiError> {
    let Json(body) = body?;
    let read = read(&shared, &phone, &body.from)?;
    Ok(Json(ReadCount { read }))
}

/// `POST /phones/{phone}/read`: how many texts were read.
pub(crate) fn read(shared: &Shared, phone: &str, from: &str) -> Result<usize, ApiError> {
    Ok(messages::read(shared, phone, from)?)
}
