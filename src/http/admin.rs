//! The admin API: tenants and their keys, behind the admin token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson};
use super::webhooks::{self, WebhookInput};
use super::{AppState, rfc3339};
use crate::config::Dsn;
use crate::store::tenants::{KeyInfo, NewKey, Tenant};
use crate::tenants::{ApiKey, KeySource, TenantId, TenantName};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/admin/tenants/{id}",
            get(show_tenant).delete(delete_tenant),
        )
        .route("/admin/tenants/{id}/keys", post(create_key))
        .route("/admin/tenants/{id}/keys/{key_id}", delete(revoke_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    store_dsn: Option<String>,
}

async fn create_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = TenantName::parse(&body.name).map_err(|e| ApiError::invalid("name", e))?;
    let store_dsn = match body.store_dsn.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => {
            Dsn::parse(raw).map_err(|e| ApiError::invalid("store_dsn", e))?;
            Some(raw)
        }
    };
    let webhook = match (body.webhook_url, body.webhook_secret) {
        (Some(url), secret) => Some(WebhookInput {
            url,
            secret,
            events: None,
        }),
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "webhook_secret",
                "given without webhook_url",
            ));
        }
        (None, None) => None,
    };
    // Check everything before creating anything.
    let checked = webhook
        .as_ref()
        .map(|w| webhooks::check(&state, w).map_err(prefix_webhook_field))
        .transpose()?;
    let key = ApiKey::generate();
    let tenant = state
        .store
        .create_tenant(&name, store_dsn, &NewKey::for_key(&key, KeySource::Admin))
        .await?;
    if let Some(hook) = checked {
        webhooks::apply(&state, &tenant.tenant_id(), hook).await?;
    }
    tracing::info!(tenant_id = %tenant.id, name = %tenant.name, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": tenant.id,
            "name": tenant.name,
            "api_key": key.expose(),
            "created_at": rfc3339(tenant.created_at),
        })),
    ))
}

/// At creation the webhook fields are called `webhook_url`, `webhook_secret`.
fn prefix_webhook_field(e: ApiError) -> ApiError {
    match e {
        ApiError::InvalidField { field, message } => ApiError::InvalidField {
            field: format!("webhook_{field}"),
            message,
        },
        other => other,
    }
}

async fn list_tenants(_: AdminAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let tenants = state.store.list_tenants().await?;
    Ok(Json(json!({
        "tenants": tenants.iter().map(|t| tenant_summary(&state, t)).collect::<Vec<_>>()
    })))
}

async fn show_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = find_tenant(&state, &id).await?;
    let keys = state.store.list_keys(&tenant.tenant_id()).await?;
    let mut body = tenant_summary(&state, &tenant);
    body["keys"] = keys.iter().map(key_json).collect();
    Ok(Json(body))
}

async fn delete_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    // Unlink the device first, so the phone does not keep a dead companion.
    if state.sessions.status(&tenant).state.is_paired() {
        let unlink = state.sessions.logout(&tenant);
        if tokio::time::timeout(std::time::Duration::from_secs(10), unlink)
            .await
            .is_err()
        {
            tracing::warn!(tenant_id = %id, "logout before deletion timed out");
        }
    }
    state.sessions.stop(&tenant).await;
    // A tenant with its own protocol database: its rows there go too.
    if let Err(e) = state.sessions.forget(&tenant).await {
        tracing::warn!(tenant_id = %id, error = %e, "cannot delete the tenant's protocol rows");
    }
    if !state.store.delete_tenant(&tenant).await? {
        return Err(ApiError::not_found("tenant"));
    }
    tracing::info!(tenant_id = %id, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn create_key(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = find_tenant(&state, &id).await?;
    let key = ApiKey::generate();
    let row = NewKey::for_key(&key, KeySource::Admin);
    state.store.add_key(&tenant.tenant_id(), &row).await?;
    tracing::info!(tenant_id = %tenant.id, key_id = %row.id, "key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": row.id, "prefix": row.prefix, "api_key": key.expose() })),
    ))
}

async fn revoke_key(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = find_tenant(&state, &id).await?;
    if !state.store.revoke_key(&tenant.tenant_id(), &key_id).await? {
        return Err(ApiError::not_found("live key"));
    }
    tracing::info!(tenant_id = %tenant.id, key_id = %key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn find_tenant(state: &AppState, id: &str) -> ApiResult<Tenant> {
    state
        .store
        .get_tenant(&TenantId::from_raw(id))
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))
}

fn tenant_summary(state: &AppState, t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "created_at": rfc3339(t.created_at),
        "own_store": t.store_dsn.is_some(),
        "session": super::session::status_json(&state.sessions.status(&t.tenant_id())),
    })
}

fn key_json(k: &KeyInfo) -> Value {
    json!({
        "id": k.id,
        "prefix": k.prefix,
        "source": k.source,
        "created_at": rfc3339(k.created_at),
        "last_used_at": k.last_used_at.map(rfc3339),
        "revoked_at": k.revoked_at.map(rfc3339),
    })
}
