//! The admin API: tenants and their keys, behind the admin token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson};
use super::webhooks::{self, WebhookInput};
use super::{AppState, rfc3339};
use crate::config::Dsn;
use crate::sessions::SessionView;
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
        .route("/admin/nodes", get(list_nodes))
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
    let mut statuses = state.store.session_statuses().await?;
    let summaries: Vec<Value> = tenants
        .iter()
        .map(|t| {
            let session = statuses
                .remove(&t.id)
                .map_or_else(SessionView::unpaired, SessionView::of);
            tenant_summary(t, &session)
        })
        .collect();
    Ok(Json(json!({ "tenants": summaries })))
}

/// `GET /admin/nodes`: the live nodes and how many sessions each runs.
#[derive(Serialize)]
struct NodesBody {
    nodes: Vec<NodeBody>,
}

#[derive(Serialize)]
struct NodeBody {
    id: String,
    address: String,
    started_at: String,
    heartbeat_at: String,
    sessions: i64,
}

async fn list_nodes(_: AdminAuth, State(state): State<AppState>) -> ApiResult<Json<NodesBody>> {
    let nodes = state.store.live_nodes().await?;
    Ok(Json(NodesBody {
        nodes: nodes
            .into_iter()
            .map(|n| NodeBody {
                id: n.id,
                address: n.address,
                started_at: rfc3339(n.started_at),
                heartbeat_at: rfc3339(n.heartbeat_at),
                sessions: n.sessions,
            })
            .collect(),
    }))
}

async fn show_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = find_tenant(&state, &id).await?;
    let keys = state.store.list_keys(&tenant.tenant_id()).await?;
    let session = state.sessions.status(&tenant.tenant_id()).await?;
    let mut body = tenant_summary(&tenant, &session);
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
    if state.sessions.status(&tenant).await?.state.is_paired() {
        // Bounded by the wait for another node's answer.
        if let Err(e) = state.sessions.logout(&tenant).await {
            tracing::warn!(tenant_id = %id, error = %e, "logout before deletion failed");
        }
    }
    state.sessions.stop(&tenant).await?;
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

fn tenant_summary(t: &Tenant, session: &SessionView) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "created_at": rfc3339(t.created_at),
        "own_store": t.store_dsn.is_some(),
        "session": session,
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
