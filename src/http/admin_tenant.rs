//! What the admin page shows of one tenant beyond its keys and session:
//! its webhook (settings, a test event, deliveries and replay) and its
//! recent messages; and the dashboard over every tenant. The same answers
//! as the tenant's own routes, under `/admin/tenants/{id}` and the admin
//! token (or a signed-in page).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::admin::find_tenant;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, ApiPath, ApiQuery};
use super::messages::MessageDetail;
use super::webhooks::{
    DeliveriesPage, DeliveriesQuery, ReplayedOne, TestQueued, WebhookBody, WebhookInput,
};
use crate::metrics::totals;
use crate::types::SessionState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_webhook, set_webhook, remove_webhook))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
        .routes(routes!(test_event))
        .routes(routes!(recent_messages))
        .routes(routes!(dashboard))
}

const ID: &str = "The tenant's id.";

/// A tenant's webhook.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/webhook",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "As `GET /webhook`.", body = WebhookBody)),
)]
async fn show_webhook(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookBody>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    let endpoint = state.store.get_webhook(&tenant).await?;
    Ok(Json(super::webhooks::endpoint_body(endpoint.as_ref())))
}

/// Set a tenant's webhook.
#[utoipa::path(
    put,
    path = "/admin/tenants/{id}/webhook",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = ID)),
    request_body = WebhookInput,
    responses((status = 200, description = "As `PUT /webhook`.", body = WebhookBody)),
)]
async fn set_webhook(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> ApiResult<Json<WebhookBody>> {
    let checked = super::webhooks::check(&state, &input)?;
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    super::webhooks::apply(&state, &tenant, checked).await?;
    let endpoint = state.store.get_webhook(&tenant).await?;
    Ok(Json(super::webhooks::endpoint_body(endpoint.as_ref())))
}

/// Remove a tenant's webhook.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{id}/webhook",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "As `DELETE /webhook`.", body = WebhookBody)),
)]
async fn remove_webhook(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookBody>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    if !state.store.delete_webhook(&tenant).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(super::webhooks::endpoint_body(None)))
}

/// A tenant's deliveries, as `GET /webhook/deliveries`.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/webhook/deliveries",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = ID),
        ("status" = Option<String>, Query, description = "Only deliveries in this status: pending, failed, delivered or dead."),
        ("after" = Option<i64>, Query, description = "Only deliveries whose `id` is greater (default 0).", minimum = 0),
        ("limit" = Option<i64>, Query, description = "At most this many (default 100).", minimum = 1, maximum = 1000),
    ),
    responses((status = 200, description = "A page of deliveries.", body = DeliveriesPage)),
)]
async fn deliveries(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveriesPage>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    super::webhooks::deliveries_of(&state, &tenant, q)
        .await
        .map(Json)
}

/// Deliver one of a tenant's events again.
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/webhook/deliveries/{delivery}/replay",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = ID),
        ("delivery" = i64, Path, description = "The delivery's id."),
    ),
    responses((status = 200, description = "Queued again.", body = ReplayedOne)),
)]
async fn replay(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath((id, delivery)): ApiPath<(String, String)>,
) -> ApiResult<Json<ReplayedOne>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    super::webhooks::replay_of(&state, &tenant, &delivery)
        .await
        .map(Json)
}

/// Send a `webhook.test` event to a tenant's webhook.
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/webhook/test",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = ID)),
    responses((status = 202, description = "Queued for delivery.", body = TestQueued)),
)]
async fn test_event(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<TestQueued>)> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    super::webhooks::test_of(&state, &tenant).await
}

#[derive(Deserialize)]
struct RecentQuery {
    limit: Option<String>,
}

/// A tenant's latest messages.
#[derive(Serialize, ToSchema)]
struct RecentMessages {
    messages: Vec<MessageDetail>,
}

/// A tenant's latest messages, in and out, newest first, with statuses.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/messages",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = ID),
        ("limit" = Option<i64>, Query, description = "At most this many (default 50).", minimum = 1, maximum = 500),
    ),
    responses((status = 200, description = "The messages.", body = RecentMessages)),
)]
async fn recent_messages(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RecentQuery>,
) -> ApiResult<Json<RecentMessages>> {
    let limit = super::query_number("limit", q.limit.as_deref(), 50, 1..=500)?;
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    let messages = state.store.recent_messages(&tenant, limit).await?;
    Ok(Json(RecentMessages {
        messages: messages
            .into_iter()
            .map(|m| super::messages::detail(m, None))
            .collect(),
    }))
}

/// The dashboard's figures.
#[derive(Serialize, ToSchema)]
struct Dashboard {
    /// Sessions of every tenant by recorded state.
    sessions: Vec<StateSessions>,
    /// Messages of every tenant in the last hour, by WhatsApp's time.
    last_hour: LastHour,
    /// Webhook deliveries waiting (never tried, or due for a retry).
    webhook_waiting: i64,
    /// How long the earliest due delivery has been due, in seconds.
    webhook_oldest_due_secs: f64,
    /// This node since it started (the counters of `/metrics`).
    node: NodeTotals,
}

#[derive(Serialize, ToSchema)]
struct StateSessions {
    state: SessionState,
    sessions: i64,
}

#[derive(Serialize, ToSchema)]
struct LastHour {
    received: i64,
    sent: i64,
}

#[derive(Serialize, ToSchema)]
struct NodeTotals {
    messages_received: u64,
    messages_sent: u64,
    messages_failed: u64,
    webhook_delivered: u64,
    webhook_retried: u64,
    webhook_dead: u64,
}

/// Sessions by state, messages of the last hour, the webhook backlog and
/// this node's delivery outcomes.
#[utoipa::path(
    get,
    path = "/admin/dashboard",
    tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "The figures.", body = Dashboard)),
)]
async fn dashboard(_: AdminAuth, State(state): State<AppState>) -> ApiResult<Json<Dashboard>> {
    let sessions = state
        .store
        .session_state_counts()
        .await?
        .into_iter()
        .map(|(state, sessions)| StateSessions { state, sessions })
        .collect();
    let now = crate::store::now_ms();
    let (received, sent) = state.store.messages_since(now - 3_600_000).await?;
    let backlog = state.store.webhook_backlog().await?;
    Ok(Json(Dashboard {
        sessions,
        last_hour: LastHour { received, sent },
        webhook_waiting: backlog.waiting,
        webhook_oldest_due_secs: backlog
            .earliest_due_ms
            .map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0),
        node: NodeTotals {
            messages_received: totals::read(&totals::RECEIVED),
            messages_sent: totals::read(&totals::SENT),
            messages_failed: totals::read(&totals::FAILED),
            webhook_delivered: totals::read(&totals::DELIVERED),
            webhook_retried: totals::read(&totals::RETRIED),
            webhook_dead: totals::read(&totals::DEAD),
        },
    }))
}
