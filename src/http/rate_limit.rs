//! The tenant API's rate limit: a token bucket per API key
//! (`tower_governor`), answered with API.md's 429 and `Retry-After`.
//!
//! The key is the SHA-256 of the presented key, so the limiter's memory
//! holds no secrets; requests without a key share one bucket (they fail
//! authentication anyway). Buckets of idle keys are swept once a minute.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::response::IntoResponse;
use tower_governor::GovernorError;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use super::AppState;
use super::error::ApiError;
use super::extract::presented_key;
use crate::config::ApiRate;
use crate::tenants::KeyHash;

#[derive(Clone)]
struct ByApiKey;

impl KeyExtractor for ByApiKey {
    type Key = String;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        Ok(presented_key(req.headers())
            .map(|key| KeyHash::of(key).as_str().to_owned())
            .unwrap_or_default())
    }
}

/// `router` with the limit applied; unchanged when the limit is off.
pub fn per_key(router: Router<AppState>, rate: ApiRate) -> Router<AppState> {
    if rate.per_second == 0 {
        return router;
    }
    let period = Duration::from_secs(1) / rate.per_second;
    let Some(config) = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(rate.burst.max(1))
        .key_extractor(ByApiKey)
        .finish()
    else {
        tracing::error!("the API rate limit could not be set up; requests are not limited");
        return router;
    };
    let config = Arc::new(config);
    let limiter = config.limiter().clone();
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        loop {
            sweep.tick().await;
            limiter.retain_recent();
            // The router (and with it the config) is gone: stop sweeping.
            if Arc::strong_count(&limiter) == 1 {
                break;
            }
        }
    });
    router.layer(GovernorLayer::new(config).error_handler(too_many))
}

fn too_many(error: GovernorError) -> axum::response::Response {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => ApiError::RateLimited {
            retry_after_secs: wait_time.max(1),
        }
        .into_response(),
        other => ApiError::Internal(anyhow::anyhow!("rate limiter: {other}")).into_response(),
    }
}
