//! The admin pages (`/admin`): the page itself, embedded from `admin-ui/`,
//! signing in and out with a session cookie, and the live stream of a
//! session's state that the pairing page listens to.
//!
//! A signed-in page uses the same JSON admin API as scripts do: the
//! session cookie stands in for the admin token (see `AdminAuth`), and a
//! request that changes something also carries the session's CSRF token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::Stream;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::admin::find_tenant;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ADMIN_COOKIE, AdminAuth, ApiJson, ApiPath, admin_token_matches, cookie};
use crate::sessions::{SessionState, Signal};
use crate::tenants::{KeyHash, TenantId};

/// How long a page stays signed in.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// A failed sign-in is answered this much later.
const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// How often the session stream looks again without a signal.
const STREAM_FALLBACK: Duration = Duration::from_secs(2);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(style))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(session_events))
}

/// Sign-in attempts, whoever makes them: 10 a minute, 10 at once.
pub fn login_limiter() -> Arc<DefaultDirectRateLimiter> {
    let quota = Quota::per_minute(std::num::NonZeroU32::new(10).expect("not zero"));
    Arc::new(RateLimiter::direct(quota))
}

const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The admin page.
#[utoipa::path(
    get,
    path = "/admin",
    tag = "admin",
    responses((status = 200, description = "The admin page (HTML); it signs in and uses the admin API.", content_type = "text/html", body = String)),
)]
async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        include_str!("../../admin-ui/index.html"),
    )
}

/// The admin page's script.
#[utoipa::path(
    get,
    path = "/admin/ui/app.js",
    tag = "admin",
    responses((status = 200, description = "JavaScript.", content_type = "text/javascript", body = String)),
)]
async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../admin-ui/app.js"),
    )
}

/// The admin page's style sheet.
#[utoipa::path(
    get,
    path = "/admin/ui/app.css",
    tag = "admin",
    responses((status = 200, description = "CSS.", content_type = "text/css", body = String)),
)]
async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../admin-ui/app.css"),
    )
}

/// Signing in: the admin token, or the admin password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignIn {
    /// The admin token.
    token: Option<String>,
    /// The admin password (`wago admin set-password`).
    password: Option<String>,
}

/// A signed-in page's session.
#[derive(Serialize, ToSchema)]
struct PageSession {
    /// Send as `X-CSRF-Token` with every request that changes something.
    csrf_token: Option<String>,
    /// When the session ends (RFC 3339); `null` for a bearer token.
    expires_at: Option<String>,
}

/// Sign the admin page in: sets an HttpOnly, Secure, SameSite=Strict
/// session cookie. Failed attempts are answered a second late, logged,
/// and limited to 10 a minute.
#[utoipa::path(
    post,
    path = "/admin/login",
    tag = "admin",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; the cookie is set.", body = PageSession),
        (status = 401, description = "Neither the token nor the password is right (`unauthorized`).", body = ErrorBody),
        (status = 429, description = "Too many attempts (`rate_limited`); `Retry-After` says when to retry.", body = ErrorBody),
    ),
)]
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Response> {
    if let Err(not_until) = state.login_limiter.check() {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        tracing::warn!("admin sign-in refused: too many attempts");
        return Err(ApiError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        });
    }
    let signed_in = match (&body.token, &body.password) {
        (Some(token), None) => admin_token_matches(&state, token).await?,
        (None, Some(password)) => password_matches(&state, password.clone()).await?,
        _ => {
            return Err(ApiError::invalid(
                "body",
                "send either \"token\" or \"password\"",
            ));
        }
    };
    if !signed_in {
        tracing::warn!(
            with = if body.token.is_some() {
                "token"
            } else {
                "password"
            },
            "admin sign-in failed"
        );
        tokio::time::sleep(FAILURE_DELAY).await;
        return Err(ApiError::Unauthorized("the token or password is wrong"));
    }
    let value = random_token();
    let csrf = random_token();
    let expires_at = crate::store::now_ms() + SESSION_TTL.as_millis() as i64;
    state
        .store
        .create_admin_session(KeyHash::of(&value).as_str(), &csrf, expires_at)
        .await?;
    tracing::info!("admin signed in to the admin page");
    let cookie = format!(
        "{ADMIN_COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut response = Json(PageSession {
        csrf_token: Some(csrf),
        expires_at: Some(crate::store::rfc3339(expires_at)),
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))?,
    );
    Ok(response)
}

/// Sign the admin page out: its session ends on every node.
#[utoipa::path(
    post,
    path = "/admin/logout",
    tag = "admin",
    security(("admin_token" = [])),
    responses((status = 204, description = "Signed out; the cookie is cleared.")),
)]
async fn logout(
    _: AdminAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(value) = cookie(&headers, ADMIN_COOKIE) {
        state
            .store
            .delete_admin_session(KeyHash::of(value).as_str())
            .await?;
    }
    let clear = format!("{ADMIN_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&clear).map_err(|e| ApiError::Internal(e.into()))?,
    );
    Ok(response)
}

/// Whether the page is signed in, and its CSRF token.
#[utoipa::path(
    get,
    path = "/admin/me",
    tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "Signed in.", body = PageSession)),
)]
async fn me(auth: AdminAuth) -> Json<PageSession> {
    // The session the cookie named, as `AdminAuth` read it: no second read.
    let session = auth.session;
    Json(PageSession {
        csrf_token: session.as_ref().map(|s| s.csrf_token.clone()),
        expires_at: session.map(|s| crate::store::rfc3339(s.expires_at)),
    })
}

/// One state of a session, as the stream sends it.
#[derive(Serialize, ToSchema, PartialEq, Clone)]
struct SessionUpdate {
    state: SessionState,
    jid: Option<String>,
    push_name: Option<String>,
    /// The current QR code while pairing.
    qr: Option<String>,
    error: Option<String>,
}

/// A tenant's session, live: a `session` event (a `SessionUpdate` as
/// JSON) now and at every change (a new QR code, connected, logged out),
/// as server-sent events.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/session/events",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 200, description = "`text/event-stream` of `session` events, each a SessionUpdate.", content_type = "text/event-stream", body = SessionUpdate),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn session_events(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    let signals = state.sessions.bus().subscribe();
    let stream = futures_util::stream::unfold(
        (state, tenant, signals, None::<SessionUpdate>),
        |(state, tenant, mut signals, last)| async move {
            loop {
                if last.is_some() {
                    wait_for_change(&mut signals, &tenant).await;
                }
                let view = match state.sessions.status(&tenant).await {
                    Ok(view) => view,
                    Err(e) => {
                        tracing::warn!(error = %e, "session stream: cannot read the status");
                        return None;
                    }
                };
                let update = SessionUpdate {
                    state: view.state,
                    jid: view.jid,
                    push_name: view.push_name,
                    qr: view.qr.map(|q| q.code),
                    error: view.error,
                };
                if last.as_ref() != Some(&update) {
                    let event = Event::default()
                        .event("session")
                        .json_data(&update)
                        .unwrap_or_default();
                    return Some((Ok(event), (state, tenant, signals, Some(update))));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Until a signal about `tenant`'s status (or a resync), or the fallback.
async fn wait_for_change(
    signals: &mut tokio::sync::broadcast::Receiver<Signal>,
    tenant: &TenantId,
) {
    let wait = async {
        loop {
            match signals.recv().await {
                Ok(Signal::Status { tenant: t }) if t == tenant.as_str() => return,
                Ok(Signal::Resync) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(STREAM_FALLBACK, wait).await;
}

async fn password_matches(state: &AppState, password: String) -> ApiResult<bool> {
    let Some(stored) = state.store.admin_password_hash().await? else {
        return Ok(false);
    };
    // Argon2 is slow on purpose: off the async threads.
    tokio::task::spawn_blocking(move || verify_password(&stored, &password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))
}

/// An argon2id hash of `password` in the PHC string format.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    let salt: [u8; 16] = rand::rng().random();
    let salt = argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(stored: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::password_hash::PasswordHash::new(stored).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(
            hash,
            hash_password("correct horse battery").unwrap(),
            "salted"
        );
    }
}
