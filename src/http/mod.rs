//! The HTTP API: one axum router over the shared [`AppState`].
//!
//! Handlers live in one file per resource; authentication is an extractor
//! (`TenantAuth`, `AdminAuth`), errors are [`ApiError`]. Handlers parse their
//! input into domain types and call the store; they hold no state of their
//! own.

mod admin;
pub mod error;
pub mod extract;
mod messages;
mod rate_limit;
mod send;
pub mod session;
pub mod webhooks;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

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
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    let tenant_api = Router::new()
        .merge(messages::routes())
        .merge(send::routes())
        .merge(session::tenant_routes())
        .merge(webhooks::routes());
    let tenant_api = rate_limit::per_key(tenant_api, state.api_rate);
    Router::new()
        .route("/health", get(health))
        .merge(tenant_api)
        .merge(admin::routes())
        .merge(session::admin_routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method".into())
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Liveness that means something: the database answers within 2 s.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "ok": true }))),
        outcome => {
            let reason = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "the database did not answer within 2 s".to_owned(),
            };
            tracing::warn!(%reason, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "ok": false, "error": "database_unreachable", "message": reason })),
            )
        }
    }
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
