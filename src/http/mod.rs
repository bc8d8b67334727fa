//! The HTTP API: one axum router over the shared [`AppState`].
//!
//! Handlers live in one file per resource; authentication is an extractor
//! (`TenantAuth`, `AdminAuth`), errors are [`ApiError`]. Handlers parse their
//! input into domain types and call the store; they hold no state of their
//! own.

mod admin;
mod admin_tenant;
pub mod admin_ui;
pub mod error;
pub mod extract;
pub mod key_cache;
mod media;
mod messages;
pub mod openapi;
mod rate_limit;
mod send;
pub mod session;
pub mod webhooks;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ApiResult};

use crate::store::Store;
use crate::tenants::KeyHash;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    /// Hash of `ADMIN_TOKEN` when it comes from the environment; otherwise
    /// the stored hash is read per request.
    pub admin_token_hash: Option<KeyHash>,
    pub body_limit: usize,
    /// Wakes the webhook dispatcher after a change it should act on.
    pub webhooks: crate::webhooks::WebhookWaker,
    /// Tenants may point webhooks at private addresses.
    pub allow_private_webhooks: bool,
    pub sessions: crate::sessions::Supervisor,
    /// The tenant API's limit per key.
    pub api_rate: crate::config::ApiRate,
    /// Admin sign-in attempts (`admin_ui::login_limiter`).
    pub login_limiter: std::sync::Arc<governor::DefaultDirectRateLimiter>,
    /// Tenant API keys, remembered (`key_cache.rs`).
    pub keys: std::sync::Arc<key_cache::KeyCache>,
    /// Where media files are kept (shared with the sessions).
    pub media: crate::sessions::MediaWork,
    /// Fetches files that sends name by URL (`media::fetch_client`).
    pub media_fetch: reqwest::Client,
}

impl AppState {
    /// After a change that makes keys stop working: this node forgets
    /// them before the caller answers, every other node when the bus
    /// brings the news.
    pub async fn keys_changed(&self) {
        self.keys.forget_all();
        self.sessions
            .bus()
            .publish(crate::sessions::Signal::Keys)
            .await;
    }
}

/// Every route, as the tenant API (behind the per-key rate limit) and the
/// rest, and their description: `routes!` registers a handler and its
/// annotation together, so nothing is served undocumented.
fn routes() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (tenant_api, tenant_doc) = OpenApiRouter::new()
        .merge(messages::routes())
        .merge(send::routes())
        .merge(media::routes())
        .merge(session::tenant_routes())
        .merge(webhooks::routes())
        .split_for_parts();
    let (rest, mut doc) = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(reference_page))
        .routes(routes!(metrics_text))
        .routes(routes!(version))
        .merge(admin::routes())
        .merge(admin_ui::routes())
        .merge(admin_tenant::routes())
        .merge(session::admin_routes())
        .split_for_parts();
    doc.merge(tenant_doc);
    (tenant_api, rest, doc)
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    let (tenant_api, rest, _) = routes();
    let tenant_api = rate_limit::per_key(tenant_api, state.api_rate);
    rest.merge(tenant_api)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method".into())
        })
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %id,
                    // Filled in once the request names its tenant.
                    tenant_id = tracing::field::Empty,
                )
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
struct HealthBody {
    /// Whether the database answered.
    ok: bool,
    /// `database_unreachable` when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// Why, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Liveness that means something: the database answers within 2 s.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses(
        (status = 200, description = "The server and its database answer.", body = HealthBody),
        (status = 503, description = "The database does not answer.", body = HealthBody),
    ),
)]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(HealthBody {
                ok: true,
                error: None,
                message: None,
            }),
        ),
        outcome => {
            let reason = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "the database did not answer within 2 s".to_owned(),
            };
            tracing::warn!(%reason, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthBody {
                    ok: false,
                    error: Some("database_unreachable"),
                    message: Some(reason),
                }),
            )
        }
    }
}

/// `GET /version`.
#[derive(Serialize, ToSchema)]
struct VersionBody {
    /// WAGO's version.
    #[schema(example = "0.1.0")]
    version: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(value_type = DatabaseKind)]
    database: &'static str,
    /// This node's name (`NODE_ID`).
    node: String,
}

crate::text_enum! {
    /// The kind of database a server runs on.
    enum DatabaseKind {
        Sqlite = "sqlite",
        Postgres = "postgres",
    }
}

/// The running version, its database kind and this node's name.
#[utoipa::path(
    get,
    path = "/version",
    tag = "service",
    responses((status = 200, description = "What runs here.", body = VersionBody)),
)]
async fn version(State(state): State<AppState>) -> Json<VersionBody> {
    Json(VersionBody {
        version: env!("CARGO_PKG_VERSION"),
        database: match state.store.kind() {
            crate::store::DbKind::Sqlite => DatabaseKind::Sqlite.as_str(),
            crate::store::DbKind::Postgres => DatabaseKind::Postgres.as_str(),
        },
        node: state.sessions.node().as_str().to_owned(),
    })
}

/// Prometheus metrics in the text format. Also served without the token
/// on `METRICS_LISTEN`, when that is set.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    security(("admin_token" = [])),
    responses((status = 200, description = "The metrics (docs/metrics.md lists them).", content_type = "text/plain; version=0.0.4", body = String)),
)]
async fn metrics_text(_: extract::AdminAuth, State(state): State<AppState>) -> impl IntoResponse {
    metrics_answer(&state).await
}

/// The scrape answer, on the API's port and on `METRICS_LISTEN`.
pub async fn metrics_answer(state: &AppState) -> impl IntoResponse + use<> {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state.store, &state.sessions).await,
    )
}

/// This API's OpenAPI 3.1 document, webhook event bodies included.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses((status = 200, description = "The document.", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document_json(),
    )
}

/// The API reference for people, drawn from `/openapi.json` in the browser.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "service",
    responses((status = 200, description = "An HTML page.", content_type = "text/html", body = String)),
)]
async fn reference_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        include_str!("reference.html"),
    )
}

/// A whole-number query parameter within `range`; absent or empty means
/// `default`. A bad value is a 422 naming the parameter.
pub fn query_number(
    name: &str,
    raw: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> ApiResult<i64> {
    match raw.map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    name,
                    format!(
                        "must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// The API's time format (kept below the HTTP layer, which events and
/// sessions use too).
pub use crate::store::rfc3339;
