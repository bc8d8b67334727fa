//! The persisted inbox: `GET /messages`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery, TenantAuth};
use super::{AppState, rfc3339};
use crate::media::MediaKind;
use crate::store::media::{MediaInfo, MediaState};
use crate::store::messages::InboxQuery;
use crate::types::MessageStatus;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages))
        .routes(routes!(show_message))
        .routes(routes!(message_media))
}

/// A page of the inbox, oldest first.
#[derive(Serialize, ToSchema)]
struct InboxPage {
    messages: Vec<InboxMessage>,
    /// Pass as `after` for the next page (the last `id` of this one, or
    /// `after` itself when the page is empty).
    next_after: i64,
}

/// A received message.
#[derive(Serialize, ToSchema)]
struct InboxMessage {
    /// The inbox's own increasing id: page with `after`.
    id: i64,
    /// WhatsApp's id of the message.
    message_id: String,
    chat_id: String,
    sender_id: String,
    /// The text, or `""` for a message without one.
    text: String,
    kind: String,
    /// When WhatsApp says it was sent (RFC 3339).
    timestamp: String,
    /// A media message's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<MediaInfo>,
}

crate::text_enum! {
    /// Which way a message went.
    enum Direction {
        Inbound = "inbound",
        Outbound = "outbound",
    }
}

/// One message of either direction, with its status.
#[derive(Serialize, ToSchema)]
pub(super) struct MessageDetail {
    id: i64,
    message_id: String,
    direction: Direction,
    chat_id: String,
    sender_id: String,
    text: String,
    kind: String,
    status: MessageStatus,
    /// Why, for `failed`.
    error: Option<String>,
    /// RFC 3339.
    timestamp: String,
    /// When the status last changed (RFC 3339).
    updated_at: String,
    /// A media message's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<MediaInfo>,
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// Query values arrive as strings so that a bad one names its field (422)
/// instead of failing the whole query string.
#[derive(Deserialize)]
struct ListQuery {
    chat: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The persisted inbox: received messages, oldest first.
#[utoipa::path(
    get,
    path = "/messages",
    tag = "messages",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(
        ("chat" = Option<String>, Query, description = "Only this chat: a JID, or a phone number for its personal chat."),
        ("after" = Option<i64>, Query, description = "Only messages whose `id` is greater (default 0).", minimum = 0),
        ("limit" = Option<i64>, Query, description = "At most this many (default 100).", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "A page of the inbox.", body = InboxPage),
        (status = 422, description = "A bad query parameter (`invalid_field`).", body = ErrorBody),
    ),
)]
async fn list_messages(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<InboxPage>> {
    let after = super::query_number("after", q.after.as_deref(), 0, 0..=i64::MAX)?;
    let limit = super::query_number("limit", q.limit.as_deref(), DEFAULT_LIMIT, 1..=MAX_LIMIT)?;
    let chat = q.chat.as_deref().map(chat_jid).transpose()?;
    let messages = state
        .store
        .list_inbound(
            &auth.tenant_id,
            &InboxQuery {
                chat: chat.as_deref(),
                after,
                limit,
            },
        )
        .await?;
    let next_after = messages.last().map_or(after, |m| m.id);
    let with_files: Vec<i64> = messages
        .iter()
        .filter(|m| MediaKind::of_message_kind(&m.kind).is_some())
        .map(|m| m.id)
        .collect();
    let mut files = if with_files.is_empty() {
        Default::default()
    } else {
        state.store.media_of_rows(&with_files).await?
    };
    let messages = messages
        .into_iter()
        .map(|m| InboxMessage {
            media: files.remove(&m.id).map(|f| f.info(&m.message_id)),
            id: m.id,
            message_id: m.message_id,
            chat_id: m.chat_id,
            sender_id: m.sender_id,
            text: m.text.unwrap_or_default(),
            kind: m.kind,
            timestamp: rfc3339(m.timestamp),
        })
        .collect();
    Ok(Json(InboxPage {
        messages,
        next_after,
    }))
}

/// One message of either direction by its WhatsApp id, with its status.
#[utoipa::path(
    get,
    path = "/messages/{message_id}",
    tag = "messages",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(("message_id" = String, Path, description = "The WhatsApp message id.")),
    responses(
        (status = 200, description = "The message.", body = MessageDetail),
        (status = 404, description = "No such message (`not_found`).", body = ErrorBody),
    ),
)]
async fn show_message(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiPath(message_id): ApiPath<String>,
) -> ApiResult<Json<MessageDetail>> {
    let m = state
        .store
        .get_message(&auth.tenant_id, &message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let media = match MediaKind::of_message_kind(&m.kind) {
        Some(_) => state
            .store
            .media_of_row(m.id)
            .await?
            .map(|row| row.info(&m.message_id)),
        None => None,
    };
    Ok(Json(detail(m, media)))
}

/// The file of a media message, as it was sent or received.
#[utoipa::path(
    get,
    path = "/messages/{message_id}/media",
    tag = "messages",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(("message_id" = String, Path, description = "The WhatsApp message id.")),
    responses(
        (status = 200, description = "The file, with its `Content-Type`, `Content-Length` and, for a document, its name in `Content-Disposition`.", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such message, or not a media message (`not_found`).", body = ErrorBody),
        (status = 410, description = "The file is no longer kept (released once sent, or expired) or could not be fetched from WhatsApp (`gone`, saying which).", body = ErrorBody),
    ),
)]
async fn message_media(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiPath(message_id): ApiPath<String>,
) -> ApiResult<axum::response::Response> {
    use axum::http::header;
    let m = state
        .store
        .get_message(&auth.tenant_id, &message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let media = state
        .store
        .media_of_row(m.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("the message carries no file".into()))?;
    let gone = |why: String| ApiError::Gone(why);
    let Some(key) = &media.storage_key else {
        return Err(gone(match media.state {
            MediaState::Released => "the file was let go once WhatsApp took it".into(),
            MediaState::Expired => "the file was deleted by retention".into(),
            _ => format!(
                "the file could not be fetched from WhatsApp: {}",
                media.error.as_deref().unwrap_or("no reason recorded")
            ),
        }));
    };
    let reader = state
        .media
        .storage
        .open(key)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("opening the file: {e}")))?
        .ok_or_else(|| gone("the file is missing from the media storage".into()))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let mut response = axum::response::Response::new(body);
    let headers = response.headers_mut();
    let value = |v: &str| axum::http::HeaderValue::from_str(v).ok();
    if let Some(v) = value(&media.mimetype) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, media.size.into());
    if let Some(v) = value(&format!("\"{}\"", media.sha256)) {
        headers.insert(header::ETAG, v);
    }
    if let Some(name) = &media.file_name
        && let Some(v) = value(&content_disposition(name))
    {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// `attachment` with the name as a quoted ASCII fallback and as RFC 8187
/// UTF-8.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

pub(super) fn detail(
    m: crate::store::messages::StoredMessage,
    media: Option<MediaInfo>,
) -> MessageDetail {
    MessageDetail {
        id: m.id,
        message_id: m.message_id,
        direction: if m.direction == "out" {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        chat_id: m.chat_id,
        sender_id: m.sender_id,
        text: m.text.unwrap_or_default(),
        kind: m.kind,
        status: m.status,
        error: m.error,
        timestamp: rfc3339(m.timestamp),
        updated_at: rfc3339(m.updated_at),
        media,
    }
}

/// A chat filter: a JID as given, or a bare number (with an optional `+`)
/// as that number's personal chat.
fn chat_jid(raw: &str) -> ApiResult<String> {
    let raw = raw.trim();
    if raw.contains('@') {
        return Ok(raw.to_owned());
    }
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            "chat",
            "must be a JID (62812...@s.whatsapp.net) or a phone number",
        ));
    }
    Ok(format!("{digits}@s.whatsapp.net"))
}
