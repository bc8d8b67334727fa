//! A tenant's webhook: its settings and its deliveries.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, TenantAuth};
use super::{AppState, rfc3339};
use crate::events::{EVENT_NAMES, EventName};
use crate::store::webhooks::{Attempt, Delivery, STATUSES, SecretUpdate, WebhookEndpoint};
use crate::tenants::TenantId;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, set, remove))
        .routes(routes!(deliveries))
        .routes(routes!(replay_all))
        .routes(routes!(replay_one))
        .routes(routes!(send_test))
}

/// A webhook setting.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// An `http://` or `https://` URL; private addresses are refused
    /// unless `WEBHOOK_ALLOW_PRIVATE` is set.
    #[schema(example = "https://example.com/hook")]
    pub url: String,
    /// At most 512 characters; `whsec_` + base64 is the Standard Webhooks
    /// form. Omitted: keep the stored secret. Empty: sign nothing.
    pub secret: Option<String>,
    /// The events to deliver. Omitted: every event.
    #[schema(value_type = Option<Vec<EventName>>)]
    pub events: Option<Vec<String>>,
}

/// The tenant's webhook as shown: the secret only as a hint.
#[derive(Serialize, ToSchema)]
pub(super) struct WebhookBody {
    /// `null` when no webhook is set.
    url: Option<String>,
    /// The secret's first characters and `…`, or `null` for none.
    secret: Option<String>,
    #[schema(value_type = Vec<EventName>)]
    events: Vec<String>,
    /// `false` after a `410 Gone` until the webhook is set again.
    enabled: bool,
    /// Why it was disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    /// RFC 3339; absent when no webhook is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

crate::text_enum! {
    /// Where a delivery is.
    enum DeliveryStatus {
        /// Waiting for its first attempt.
        Pending = "pending",
        /// An attempt failed; waiting for its retry at `next_attempt_at`.
        Failed = "failed",
        /// Answered 2xx.
        Delivered = "delivered",
        /// Out of retries, or the endpoint answered 410: replay it by hand.
        Dead = "dead",
    }
}

/// A page of deliveries, oldest first.
#[derive(Serialize, ToSchema)]
pub(super) struct DeliveriesPage {
    deliveries: Vec<DeliveryBody>,
    /// Pass as `after` for the next page.
    next_after: i64,
}

/// One event's delivery to the webhook, with its attempts.
#[derive(Serialize, ToSchema)]
struct DeliveryBody {
    id: i64,
    /// The `webhook-id` header: the same on every attempt.
    event_id: String,
    #[schema(value_type = EventName)]
    event: String,
    /// The tenant's event counter.
    sequence: i64,
    #[schema(value_type = DeliveryStatus)]
    status: String,
    attempts: i64,
    /// RFC 3339.
    next_attempt_at: Option<String>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: String,
    delivered_at: Option<String>,
    attempt_log: Vec<AttemptBody>,
}

#[derive(Serialize, ToSchema)]
struct AttemptBody {
    /// RFC 3339.
    at: String,
    /// The receiver's HTTP status, if it answered.
    status_code: Option<i64>,
    /// Why the attempt failed without an answer.
    error: Option<String>,
    latency_ms: i64,
    /// The first bytes of the receiver's answer.
    response: Option<String>,
}

/// `POST /webhook/deliveries/{id}/replay`.
#[derive(Serialize, ToSchema)]
pub(super) struct ReplayedOne {
    id: i64,
    #[schema(value_type = DeliveryStatus)]
    status: &'static str,
}

/// `POST /webhook/deliveries/replay`.
#[derive(Serialize, ToSchema)]
struct ReplayedAll {
    /// How many deliveries were queued again.
    replayed: u64,
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

/// An `http(s)` URL a tenant gave (`url`), with a private IP literal
/// refused unless `allow_private`. Media sends by URL use it too.
pub(super) fn parse_url(raw: &str, allow_private: bool) -> ApiResult<url::Url> {
    let url = url::Url::parse(raw.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| ApiError::invalid("url", "must be an http:// or https:// URL"))?;
    if !allow_private {
        crate::webhooks::guard::check_literal(&url).map_err(|e| ApiError::invalid("url", e))?;
    }
    Ok(url)
}

/// The tenant's webhook.
#[utoipa::path(
    get,
    path = "/webhook",
    tag = "webhook",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    responses((status = 200, description = "The webhook; `url` is `null` when none is set.", body = WebhookBody)),
)]
async fn show(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<WebhookBody>> {
    let endpoint = state.store.get_webhook(&auth.tenant_id).await?;
    Ok(Json(endpoint_body(endpoint.as_ref())))
}

/// Set the webhook; delivery (re)starts at once.
#[utoipa::path(
    put,
    path = "/webhook",
    tag = "webhook",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    request_body = WebhookInput,
    responses((status = 200, description = "The webhook as stored.", body = WebhookBody)),
)]
async fn set(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> ApiResult<Json<WebhookBody>> {
    apply(&state, &auth.tenant_id, check(&state, &input)?).await?;
    let endpoint = state.store.get_webhook(&auth.tenant_id).await?;
    Ok(Json(endpoint_body(endpoint.as_ref())))
}

/// Remove the webhook; events are no longer written for it.
#[utoipa::path(
    delete,
    path = "/webhook",
    tag = "webhook",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    responses(
        (status = 200, description = "Removed; the empty setting.", body = WebhookBody),
        (status = 404, description = "No webhook is set (`not_found`).", body = ErrorBody),
    ),
)]
async fn remove(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<WebhookBody>> {
    if !state.store.delete_webhook(&auth.tenant_id).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(endpoint_body(None)))
}

/// The settings as shown: the secret only as a hint of its first characters.
pub(super) fn endpoint_body(endpoint: Option<&WebhookEndpoint>) -> WebhookBody {
    let Some(e) = endpoint else {
        return WebhookBody {
            url: None,
            secret: None,
            events: Vec::new(),
            enabled: false,
            disabled_reason: None,
            updated_at: None,
        };
    };
    let secret_hint = e.secret.as_deref().filter(|s| !s.is_empty()).map(|s| {
        let shown: String = s
            .chars()
            .take(if s.starts_with("whsec_") { 9 } else { 3 })
            .collect();
        format!("{shown}…")
    });
    WebhookBody {
        url: Some(e.url.clone()),
        secret: secret_hint,
        events: e.events.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        updated_at: Some(rfc3339(e.updated_at)),
    }
}

#[derive(Deserialize)]
pub(super) struct DeliveriesQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The webhook's deliveries, oldest first, each with its attempts.
#[utoipa::path(
    get,
    path = "/webhook/deliveries",
    tag = "webhook",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(
        ("status" = Option<DeliveryStatus>, Query, description = "Only deliveries in this status."),
        ("after" = Option<i64>, Query, description = "Only deliveries whose `id` is greater (default 0).", minimum = 0),
        ("limit" = Option<i64>, Query, description = "At most this many (default 100).", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "A page of deliveries.", body = DeliveriesPage),
        (status = 422, description = "A bad query parameter (`invalid_field`).", body = ErrorBody),
    ),
)]
async fn deliveries(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveriesPage>> {
    deliveries_of(&state, &auth.tenant_id, q).await.map(Json)
}

/// A page of `tenant`'s deliveries (also the admin's).
pub(super) async fn deliveries_of(
    state: &AppState,
    tenant: &TenantId,
    q: DeliveriesQuery,
) -> ApiResult<DeliveriesPage> {
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
        .list_deliveries(tenant, status, after, limit)
        .await?;
    let next_after = list.last().map_or(after, |d| d.id);
    Ok(DeliveriesPage {
        deliveries: list.iter().map(delivery_body).collect(),
        next_after,
    })
}

fn parse_status(raw: &str) -> ApiResult<&'static str> {
    STATUSES.iter().copied().find(|s| *s == raw).ok_or_else(|| {
        ApiError::invalid("status", format!("must be one of {}", STATUSES.join(", ")))
    })
}

fn delivery_body(d: &Delivery) -> DeliveryBody {
    DeliveryBody {
        id: d.id,
        event_id: d.event_id.clone(),
        event: d.event.clone(),
        sequence: d.sequence,
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at.map(rfc3339),
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        created_at: rfc3339(d.created_at),
        delivered_at: d.delivered_at.map(rfc3339),
        attempt_log: d.attempt_log.iter().map(attempt_body).collect(),
    }
}

fn attempt_body(a: &Attempt) -> AttemptBody {
    AttemptBody {
        at: rfc3339(a.attempted_at),
        status_code: a.status_code,
        error: a.error.clone(),
        latency_ms: a.latency_ms,
        response: a.response_prefix.clone(),
    }
}

/// Deliver one event again, now (whatever its status).
#[utoipa::path(
    post,
    path = "/webhook/deliveries/{id}/replay",
    tag = "webhook",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(("id" = i64, Path, description = "The delivery's id.")),
    responses(
        (status = 200, description = "Queued again.", body = ReplayedOne),
        (status = 404, description = "No such delivery (`not_found`).", body = ErrorBody),
    ),
)]
async fn replay_one(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ReplayedOne>> {
    replay_of(&state, &auth.tenant_id, &id).await.map(Json)
}

/// Queues `tenant`'s delivery `id` again (also the admin's).
pub(super) async fn replay_of(
    state: &AppState,
    tenant: &TenantId,
    id: &str,
) -> ApiResult<ReplayedOne> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("delivery"))?;
    if !state.store.replay_delivery(tenant, id).await? {
        return Err(ApiError::not_found("delivery"));
    }
    state.webhooks.wake();
    Ok(ReplayedOne {
        id,
        status: "pending",
    })
}

/// Sends a `webhook.test` event to the webhook, whatever it subscribes
/// to: signed, retried and listed like any other.
#[utoipa::path(
    post,
    path = "/webhook/test",
    tag = "webhook",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    responses(
        (status = 202, description = "Queued for delivery.", body = TestQueued),
        (status = 404, description = "No enabled webhook is set (`not_found`).", body = ErrorBody),
    ),
)]
async fn send_test(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> ApiResult<(axum::http::StatusCode, Json<TestQueued>)> {
    test_of(&state, &auth.tenant_id).await
}

/// `POST /webhook/test`.
#[derive(Serialize, ToSchema)]
pub(super) struct TestQueued {
    /// The delivery's id in the deliveries list.
    delivery: i64,
}

pub(super) async fn test_of(
    state: &AppState,
    tenant: &TenantId,
) -> ApiResult<(axum::http::StatusCode, Json<TestQueued>)> {
    let delivery = state
        .store
        .record_event(tenant, &crate::events::Event::WebhookTest)
        .await?
        .ok_or_else(|| ApiError::not_found("enabled webhook"))?;
    state.webhooks.wake();
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(TestQueued { delivery }),
    ))
}

/// Which deliveries to replay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayAll {
    /// `failed`, `delivered` or `dead`.
    #[schema(value_type = DeliveryStatus)]
    status: String,
}

/// Deliver again every delivery in a status (`dead` after an outage).
#[utoipa::path(
    post,
    path = "/webhook/deliveries/replay",
    tag = "webhook",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    request_body = ReplayAll,
    responses((status = 200, description = "How many were queued again.", body = ReplayedAll)),
)]
async fn replay_all(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ReplayAll>,
) -> ApiResult<Json<ReplayedAll>> {
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
    Ok(Json(ReplayedAll { replayed: count }))
}
