//! The one error type of the HTTP layer, rendered as API.md's JSON body:
//! `{"error": "<code>", "message": "<sentence>"}` with a fitting status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// What was there is not any more (a sent file released).
    #[error("{0}")]
    Gone(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A media file over its kind's limit.
    #[error("the {kind} is larger than {limit} bytes, WhatsApp's limit for its kind")]
    FileTooLarge { kind: &'static str, limit: u64 },
    /// A field that parsed as JSON but holds a value we cannot take.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    SessionNotConnected(String),
    #[error("the database is unreachable")]
    Unavailable,
    /// Another node did not answer within the bounded wait.
    #[error("{0}")]
    Timeout(String),
    /// Never expected: logged with the request id, shown without detail.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::Gone(_) => (StatusCode::GONE, ErrorCode::Gone),
            ApiError::PayloadTooLarge { .. } | ApiError::FileTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::InvalidField { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField)
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            ApiError::SessionNotConnected(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::SessionNotConnected,
            ),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Sql(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::error!(error = %e, "database unreachable");
                ApiError::Unavailable
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(e) = &self {
            // The request id is on the enclosing span (see http::router).
            tracing::error!(error = ?e, "internal error");
        }
        let body = Json(ErrorBody {
            error: code,
            message: self.to_string(),
        });
        let mut response = (status, body).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

crate::text_enum! {
    /// What went wrong, for programs; `message` says it for people.
    pub enum ErrorCode {
        /// Malformed JSON, a wrong content type, a refused pair code.
        BadRequest = "bad_request",
        /// No key or token, or an unknown or revoked one.
        Unauthorized = "unauthorized",
        Forbidden = "forbidden",
        /// No such route, tenant, key, message, webhook or delivery.
        NotFound = "not_found",
        MethodNotAllowed = "method_not_allowed",
        /// The request contradicts the current state (a name taken, a
        /// session already paired).
        Conflict = "conflict",
        /// A media file no longer kept (released after it was sent, or
        /// deleted by retention) or that could not be fetched.
        Gone = "gone",
        /// The body is larger than `BODY_LIMIT`, or a media file larger
        /// than its kind's limit.
        PayloadTooLarge = "payload_too_large",
        /// A field parsed but its value is not acceptable; the message
        /// starts with the field's name.
        InvalidField = "invalid_field",
        /// Over the key's request rate; `Retry-After` says when to retry.
        RateLimited = "rate_limited",
        /// The tenant's session is not connected.
        SessionNotConnected = "session_not_connected",
        /// The database does not answer.
        Unavailable = "unavailable",
        /// The node that runs the session did not answer in time.
        Timeout = "timeout",
        /// A fault of the server, logged with the request id.
        Internal = "internal",
    }
}

/// Every error answer: `{"error": "<code>", "message": "<sentence>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// A sentence for people; `invalid_field` starts with the field's name.
    pub message: String,
}
