//! Extractors: who is calling (tenant key or admin token), and JSON bodies
//! whose every rejection is an [`ApiError`] in our JSON shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::tenants::{ApiKey, KeyHash, TenantId};

/// The tenant whose key authenticated the request.
#[derive(Debug, Clone)]
pub struct TenantAuth {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub key_id: String,
}

const MISSING_KEY: &str = "an API key is required: send it as X-API-Key or Authorization: Bearer";
const BAD_KEY: &str = "the API key is unknown or revoked";

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = presented_key(&parts.headers)
            .and_then(ApiKey::from_presented)
            .ok_or(ApiError::Unauthorized(MISSING_KEY))?;
        let hash = presented.hash();
        let owner = state
            .keys
            .owner(&state.store, &hash)
            .await?
            .filter(|owner| owner.key_hash.matches(&hash))
            .ok_or(ApiError::Unauthorized(BAD_KEY))?;
        let stale = owner.last_used_at.is_none_or(|t| {
            crate::store::now_ms() - t >= crate::store::tenants::LAST_USED_RESOLUTION_MS
        });
        if stale {
            // Bookkeeping only: the request does not wait for it.
            let store = state.store.clone();
            let key_id = owner.key_id.clone();
            state.keys.used(&hash, crate::store::now_ms());
            tokio::spawn(async move {
                if let Err(e) = store.touch_key(&key_id).await {
                    tracing::warn!(error = %e, "could not record key use");
                }
            });
        }
        tracing::Span::current().record("tenant_id", owner.tenant_id.as_str());
        Ok(TenantAuth {
            tenant_id: owner.tenant_id,
            tenant_name: owner.tenant_name,
            key_id: owner.key_id,
        })
    }
}

/// The tenant key a request presents, as `X-API-Key` or a bearer token.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, "x-api-key").or_else(|| bearer(headers))
}

/// A request that presented the admin token, or a signed-in admin page's
/// cookie (then `session` is that page's session, as read to check it).
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub session: Option<crate::store::admin::AdminSession>,
}

/// The admin pages' session cookie.
pub const ADMIN_COOKIE: &str = "wago_admin";
/// The header that carries a page session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    /// The admin token as a bearer token, or a signed-in page's cookie;
    /// a cookie-borne request that changes something must also carry the
    /// session's CSRF token.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(presented) = bearer(&parts.headers) {
            return admin_token_matches(state, presented)
                .await?
                .then_some(AdminAuth { session: None })
                .ok_or(ApiError::Unauthorized("the admin token is wrong"));
        }
        let Some(cookie) = cookie(&parts.headers, ADMIN_COOKIE) else {
            return Err(ApiError::Unauthorized(
                "the admin token is required: send Authorization: Bearer <ADMIN_TOKEN>",
            ));
        };
        let session = state
            .store
            .admin_session(KeyHash::of(cookie).as_str())
            .await?
            .ok_or(ApiError::Unauthorized(
                "the admin session has ended; sign in again",
            ))?;
        if !parts.method.is_safe() {
            let sent = header_str(&parts.headers, CSRF_HEADER).unwrap_or_default();
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), session.csrf_token.as_bytes())
                    .into();
            if !same {
                return Err(ApiError::Forbidden(format!(
                    "a change from the admin page must carry its {CSRF_HEADER} header"
                )));
            }
        }
        Ok(AdminAuth {
            session: Some(session),
        })
    }
}

/// Whether `presented` is the admin token: `ADMIN_TOKEN`, or the stored
/// one (read each time, so `wago admin reset-token` applies at once).
pub async fn admin_token_matches(state: &AppState, presented: &str) -> Result<bool, ApiError> {
    let expected = match &state.admin_token_hash {
        Some(hash) => Some(hash.clone()),
        None => state.store.admin_token_hash().await?,
    };
    Ok(expected.is_some_and(|hash| hash.matches(&KeyHash::of(presented))))
}

/// The value of the cookie `name`, if the request sends it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, AUTHORIZATION.as_str())?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Like `axum::extract::Path`, but a path parameter that cannot be read
/// (not UTF-8, not a number where one is wanted) is our JSON 404: such a
/// path names nothing.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // No stored text holds NUL (Postgres cannot), so no id does.
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::NotFound(format!("no such resource: {}", e.body_text())))?;
        if raw.iter().any(|(_, value)| value.contains('\0')) {
            return Err(ApiError::NotFound(
                "no such resource: the path holds NUL".into(),
            ));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|e| ApiError::NotFound(format!("no such resource: {}", e.body_text())))
    }
}

/// Like `axum::extract::Query`, but a query string that cannot be read
/// (bad percent-encoding, not UTF-8) is our JSON 422.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(ApiError::invalid("query", "must not hold NUL characters"));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

/// Like `axum::Json`, but malformed JSON and a wrong content type are 400,
/// a value of the wrong shape is 422 naming the field, and an oversized
/// body is 413, all in our error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = header_str(req.headers(), CONTENT_TYPE.as_str())
            .and_then(|v| v.parse::<mime_type::Essence>().ok())
            .is_some_and(|m| m.is_json());
        if !is_json {
            return Err(ApiError::BadRequest(
                "the body must be JSON, sent with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(ref inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge {
                    limit: state.body_limit,
                }
            }
            other => ApiError::BadRequest(format!("cannot read the body: {other}")),
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses `bytes`, telling a syntax error (400) from a shape error (422).
/// Text with NUL characters is refused (422): no database column takes
/// them (Postgres refuses them outright).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if holds_escaped_nul(bytes) {
        return Err(ApiError::invalid(
            "body",
            "text must not hold NUL characters (\\u0000)",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return ApiError::BadRequest(format!("malformed JSON: {inner}"));
        }
        let message = inner.to_string();
        let field = match path.as_str() {
            "." => missing_field(&message).unwrap_or("body").to_owned(),
            _ => path,
        };
        ApiError::invalid(&field, strip_position(&message))
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Whether JSON text holds `\u0000`, the only way JSON writes NUL: a
/// `u0000` after an odd run of backslashes (after an even one, the
/// backslashes escape each other and the text is literal).
fn holds_escaped_nul(bytes: &[u8]) -> bool {
    let needle = b"u0000";
    let mut from = 0;
    while let Some(at) = bytes[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
    {
        let slashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if slashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// Just enough media-type parsing to accept `application/json` and
/// `application/*+json`, with or without parameters.
mod mime_type {
    pub struct Essence(String);

    impl std::str::FromStr for Essence {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s.split(';').next().ok_or(())?.trim().to_ascii_lowercase();
            Ok(Essence(essence))
        }
    }

    impl Essence {
        pub fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::holds_escaped_nul;

    #[test]
    fn nul_escapes_are_found_and_literal_backslashes_are_not() {
        assert!(holds_escaped_nul(br#"{"text":"a\u0000b"}"#));
        assert!(holds_escaped_nul(br#"{"text":"\\\u0000"}"#));
        assert!(!holds_escaped_nul(br#"{"text":"a\\u0000b"}"#));
        assert!(!holds_escaped_nul(br#"{"text":"u0000"}"#));
        assert!(holds_escaped_nul(br#"{"text":"\u00001"}"#));
        // And serde agrees on what each of them holds.
        let nul: serde_json::Value = serde_json::from_slice(br#""\\\u0000""#).unwrap();
        assert_eq!(nul, "\\\u{0}");
        let literal: serde_json::Value = serde_json::from_slice(br#""\\u0000""#).unwrap();
        assert_eq!(literal, "\\u0000");
    }
}
