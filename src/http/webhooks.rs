//! A tenant's webhook: its settings and its deliveries.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, TenantAuth};
use super::{AppState, rfc3339};
use crate::events::EVENT_NAMES;
use crate::store::webhooks::{Delivery, STATUSES, SecretUpdate, WebhookEndpoint};
use crate::tenants::TenantId;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhook", get(show).put(set).delete(remove))
        .route("/webhook/deliveries", get(deliveries))
        .route("/webhook/deliveries/replay", post(replay_all))
        .route("/webhook/deliveries/{id}/replay", post(replay_one))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    pub url: String,
    /// Omitted: keep the stored secret. Empty: sign nothing.
    pub secret: Option<String>,
    /// Omitted: every event.
    pub events: Option<Vec<String>>,
}

/// A webhook setting that passed every check.
pub struct CheckedWebhook<'a> {
    url: url::Url,
    secret: SecretUpdate<'a>,
    events: Vec<String>,
}

/// Checks a webhook setting without storing anything.
pub fn check<'a>(state: &AppState, input: &'a WebhookInput) -> ApiResult<CheckedWebhook<'a>> {
    let url = parse_url(&input.url, state.allow_private_webhooks)?;
    let events = match &input.events {
        None => EVENT_NAMES.iter().map(|e| (*e).to_owned()).collect(),
        Some(events) => {
            if let Some(bad) = events.iter().find(|e| !EVENT_NAMES.contains(&e.as_str())) {
                return Err(ApiError::invalid(
                    "events",
                    format!("unknown event {bad:?}; known: {}", EVENT_NAMES.join(", ")),
                ));
            }
            events.clone()
        }
    };
    let secret = match input.secret.as_deref() {
        None => SecretUpdate::Keep,
        Some("") => SecretUpdate::Remove,
        Some(s) if s.len() > 512 => {
            return Err(ApiError::invalid("secret", "at most 512 characters"));
        }
        Some(s) => SecretUpdate::Set(s),
    };
    Ok(CheckedWebhook {
        url,
        secret,
        events,
    })
}

/// Stores a checked setting for `tenant`; delivery resumes at once.
pub async fn apply(state: &AppState, tenant: &TenantId, hook: CheckedWebhook<'_>) -> ApiResult<()> {
    state
        .store
        .put_webhook(tenant, hook.url.as_str(), hook.secret, &hook.events, false)
        .await?;
    state.webhooks.wake();
    Ok(())
}

fn parse_url(raw: &str, allow_private: bool) -> ApiResult<url::Url> {
    let url = url::Url::parse(raw.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| ApiError::invalid("url", "must be an http:// or https:// URL"))?;
    if !allow_private {
        crate::webhooks::guard::check_literal(&url).map_err(|e| ApiError::invalid("url", e))?;
    }
    Ok(url)
}

async fn show(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let endpoint = state.store.get_webhook(&auth.tenant_id).await?;
    Ok(Json(endpoint_json(endpoint.as_ref())))
}

async fn set(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> ApiResult<Json<Value>> {
    apply(&state, &auth.tenant_id, check(&state, &input)?).await?;
    let endpoint = state.store.get_webhook(&auth.tenant_id).await?;
    Ok(Json(endpoint_json(endpoint.as_ref())))
}

async fn remove(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    if !state.store.delete_webhook(&auth.tenant_id).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(endpoint_json(None)))
}

/// The settings as shown: the secret only as a hint of its first characters.
fn endpoint_json(endpoint: Option<&WebhookEndpoint>) -> Value {
    let Some(e) = endpoint else {
        return json!({ "url": null, "secret": null, "events": [], "enabled": false });
    };
    let secret_hint = e.secret.as_deref().filter(|s| !s.is_empty()).map(|s| {
        let shown: String = s
            .chars()
            .take(if s.starts_with("whsec_") { 9 } else { 3 })
            .collect();
        format!("{shown}…")
    });
    json!({
        "url": e.url,
        "secret": secret_hint,
        "events": e.events,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "updated_at": rfc3339(e.updated_at),
    })
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

async fn deliveries(
    auth: TenantAuth,
    State(state): State<AppState>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_status)
        .transpose()?;
    let after = super::query_number("after", q.after.as_deref(), 0, 0..=i64::MAX)?;
    let limit = super::query_number("limit", q.limit.as_deref(), 100, 1..=1000)?;
    let list = state
        .store
        .list_deliveries(&auth.tenant_id, status, after, limit)
        .await?;
    let next_after = list.last().map_or(after, |d| d.id);
    Ok(Json(json!({
        "deliveries": list.iter().map(delivery_json).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

fn parse_status(raw: &str) -> ApiResult<&'static str> {
    STATUSES.iter().copied().find(|s| *s == raw).ok_or_else(|| {
        ApiError::invalid("status", format!("must be one of {}", STATUSES.join(", ")))
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event": d.event,
        "sequence": d.sequence,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(rfc3339),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": rfc3339(d.created_at),
        "delivered_at": d.delivered_at.map(rfc3339),
        "attempt_log": d.attempt_log.iter().map(|a| json!({
            "at": rfc3339(a.attempted_at),
            "status_code": a.status_code,
            "error": a.error,
            "latency_ms": a.latency_ms,
            "response": a.response_prefix,
        })).collect::<Vec<_>>(),
    })
}

async fn replay_one(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("delivery"))?;
    if !state.store.replay_delivery(&auth.tenant_id, id).await? {
        return Err(ApiError::not_found("delivery"));
    }
    state.webhooks.wake();
    Ok(Json(json!({ "id": id, "status": "pending" })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayAll {
    status: String,
}

async fn replay_all(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ReplayAll>,
) -> ApiResult<Json<Value>> {
    let status = parse_status(&body.status)?;
    if status == "pending" {
        return Err(ApiError::invalid(
            "status",
            "pending deliveries are queued already",
        ));
    }
    let count = state
        .store
        .replay_deliveries(&auth.tenant_id, status)
        .await?;
    state.webhooks.wake();
    Ok(Json(json!({ "replayed": count })))
}
