//! The persisted inbox: `GET /messages`.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::TenantAuth;
use super::{AppState, rfc3339};
use crate::store::messages::InboxQuery;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/messages", get(list_messages))
        .route("/messages/{message_id}", get(show_message))
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

async fn list_messages(
    auth: TenantAuth,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
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
    let items: Vec<Value> = messages
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "message_id": m.message_id,
                "chat_id": m.chat_id,
                "sender_id": m.sender_id,
                "text": m.text.unwrap_or_default(),
                "kind": m.kind,
                "timestamp": rfc3339(m.timestamp),
            })
        })
        .collect();
    Ok(Json(json!({ "messages": items, "next_after": next_after })))
}

/// One message of either direction by its WhatsApp id, with its status.
async fn show_message(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(message_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let m = state
        .store
        .get_message(&auth.tenant_id, &message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(json!({
        "id": m.id,
        "message_id": m.message_id,
        "direction": if m.direction == "out" { "outbound" } else { "inbound" },
        "chat_id": m.chat_id,
        "sender_id": m.sender_id,
        "text": m.text.unwrap_or_default(),
        "kind": m.kind,
        "status": m.status,
        "error": m.error,
        "timestamp": rfc3339(m.timestamp),
        "updated_at": rfc3339(m.updated_at),
    })))
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
