//! The admin API: tenants and their keys, behind the admin token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{AdminAuth, ApiJson, ApiPath, ApiQuery};
use super::webhooks::{self, WebhookInput};
use super::{AppState, rfc3339};
use crate::sessions::SessionView;
use crate::store::tenants::{KeyInfo, NewKey, Tenant};
use crate::tenants::{ApiKey, KeySource, TenantId, TenantName};
use crate::types::Dsn;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(show_tenant, delete_tenant))
        .routes(routes!(create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(list_nodes))
}

/// A new tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    /// Unique; letters, digits, `-`, `_` and `.`.
    #[schema(example = "acme")]
    name: String,
    /// The tenant's webhook, set at once (see `PUT /webhook`).
    webhook_url: Option<String>,
    /// Its signing secret; needs `webhook_url`.
    webhook_secret: Option<String>,
    /// A database of its own for the tenant's WhatsApp keys
    /// (`sqlite://…` or `postgres://…`); default: the server's.
    store_dsn: Option<String>,
}

/// A tenant just made, with its first key: shown only here.
#[derive(Serialize, ToSchema)]
struct CreatedTenant {
    id: String,
    name: String,
    /// The tenant's API key (`wago_…`). Only its hash is stored.
    api_key: String,
    /// RFC 3339.
    created_at: String,
}

/// Tenants with their sessions: all of them, or a page.
#[derive(Serialize, ToSchema)]
struct TenantList {
    tenants: Vec<TenantSummary>,
    /// For a page: pass as `after` for the next one; absent after the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
    /// Sessions by state, over every tenant, as `GET /session` shows them:
    /// one whose node is gone counts as `disconnected`.
    counts: Vec<StateCount>,
}

#[derive(Serialize, ToSchema)]
struct StateCount {
    state: crate::types::SessionState,
    sessions: i64,
}

/// `GET /admin/tenants` query: paging and search.
#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct TenantSummary {
    id: String,
    name: String,
    /// RFC 3339.
    created_at: String,
    /// Whether its WhatsApp keys live in a database of their own.
    own_store: bool,
    session: SessionView,
}

/// A tenant, its session and its keys.
#[derive(Serialize, ToSchema)]
struct TenantDetail {
    #[serde(flatten)]
    tenant: TenantSummary,
    keys: Vec<KeyBody>,
}

/// An API key as listed: never the key itself.
#[derive(Serialize, ToSchema)]
struct KeyBody {
    id: String,
    /// The key's first characters, to tell keys apart.
    prefix: String,
    /// `admin` (made by the admin API) or `env` (from `API_KEY`).
    source: String,
    created_at: String,
    /// When the key was last used, to the minute.
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

/// A key just made: shown only here.
#[derive(Serialize, ToSchema)]
struct CreatedKey {
    id: String,
    prefix: String,
    api_key: String,
}

/// Create a tenant and its first API key.
#[utoipa::path(
    post,
    path = "/admin/tenants",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created; the key is shown only here.", body = CreatedTenant),
        (status = 409, description = "The name is taken (`conflict`).", body = ErrorBody),
    ),
)]
async fn create_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
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
        Json(CreatedTenant {
            api_key: key.expose().to_owned(),
            created_at: rfc3339(tenant.created_at),
            id: tenant.id,
            name: tenant.name,
        }),
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

/// Tenants with their sessions' states: every tenant (by creation), or,
/// with `limit`, `after` or `q`, a page by name, of names containing `q`.
#[utoipa::path(
    get,
    path = "/admin/tenants",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("q" = Option<String>, Query, description = "Only names containing this, in any case."),
        ("after" = Option<String>, Query, description = "Only names after this one (`next_after` of the page before)."),
        ("limit" = Option<i64>, Query, description = "A page of at most this many, by name (default 50).", minimum = 1, maximum = 1000),
    ),
    responses((status = 200, description = "The tenants.", body = TenantList)),
)]
async fn list_tenants(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<TenantList>> {
    let counts = state
        .store
        .session_state_counts()
        .await?
        .into_iter()
        .map(|(state, sessions)| StateCount { state, sessions })
        .collect();
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let paged = query.limit.is_some() || query.after.is_some() || search.is_some();
    let (tenants, mut statuses, next_after) = if paged {
        let limit = super::query_number("limit", query.limit.as_deref(), 50, 1..=1000)?;
        let tenants = state
            .store
            .list_tenants_page(search, query.after.as_deref(), limit)
            .await?;
        let ids: Vec<String> = tenants.iter().map(|t| t.id.clone()).collect();
        let statuses = state.store.session_statuses_of(&ids).await?;
        let next = (tenants.len() as i64 == limit)
            .then(|| tenants.last().map(|t| t.name.clone()))
            .flatten();
        (tenants, statuses, next)
    } else {
        let tenants = state.store.list_tenants().await?;
        (tenants, state.store.session_statuses().await?, None)
    };
    let summaries = tenants
        .iter()
        .map(|t| {
            let session = statuses
                .remove(&t.id)
                .map_or_else(SessionView::unpaired, SessionView::of);
            tenant_summary(t, session)
        })
        .collect();
    Ok(Json(TenantList {
        tenants: summaries,
        next_after,
        counts,
    }))
}

/// `GET /admin/nodes`: the live nodes and how many sessions each runs.
#[derive(Serialize, ToSchema)]
struct NodesBody {
    nodes: Vec<NodeBody>,
}

#[derive(Serialize, ToSchema)]
struct NodeBody {
    /// `NODE_ID`, or the name the node made for itself.
    id: String,
    /// Where the node listens.
    address: String,
    /// RFC 3339.
    started_at: String,
    /// Its last heartbeat (RFC 3339).
    heartbeat_at: String,
    /// How many sessions it runs, as of its last renewal.
    sessions: i64,
    /// It is shutting down: it closes its sessions and takes no new ones.
    leaving: bool,
}

/// The live nodes and how many sessions each runs.
#[utoipa::path(
    get,
    path = "/admin/nodes",
    tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "The live nodes.", body = NodesBody)),
)]
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
                leaving: n.leaving,
            })
            .collect(),
    }))
}

/// A tenant, its session and its keys.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 200, description = "The tenant.", body = TenantDetail),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn show_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantDetail>> {
    let tenant = find_tenant(&state, &id).await?;
    let keys = state.store.list_keys(&tenant.tenant_id()).await?;
    let session = state.sessions.status(&tenant.tenant_id()).await?;
    Ok(Json(TenantDetail {
        tenant: tenant_summary(&tenant, session),
        keys: keys.iter().map(key_body).collect(),
    }))
}

/// Delete a tenant: its device is logged out first, then its keys,
/// messages, media files, webhook and WhatsApp keys are removed.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn delete_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
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
    if let Err(e) = state.media.storage.delete_tenant(&tenant).await {
        tracing::warn!(tenant_id = %id, error = %e, "cannot delete the tenant's media files");
    }
    state.keys_changed().await;
    tracing::info!(tenant_id = %id, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Add an API key to a tenant (the others keep working).
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/keys",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 201, description = "Created; the key is shown only here.", body = CreatedKey),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn create_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let tenant = find_tenant(&state, &id).await?;
    let key = ApiKey::generate();
    let row = NewKey::for_key(&key, KeySource::Admin);
    state.store.add_key(&tenant.tenant_id(), &row).await?;
    tracing::info!(tenant_id = %tenant.id, key_id = %row.id, "key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: row.id,
            prefix: row.prefix,
            api_key: key.expose().to_owned(),
        }),
    ))
}

/// Revoke a key: it stops working at once.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{id}/keys/{key_id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The tenant's id."),
        ("key_id" = String, Path, description = "The key's id."),
    ),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, description = "No such tenant, or no such live key (`not_found`).", body = ErrorBody),
    ),
)]
async fn revoke_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = find_tenant(&state, &id).await?;
    if !state.store.revoke_key(&tenant.tenant_id(), &key_id).await? {
        return Err(ApiError::not_found("live key"));
    }
    state.keys_changed().await;
    tracing::info!(tenant_id = %tenant.id, key_id = %key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn find_tenant(state: &AppState, id: &str) -> ApiResult<Tenant> {
    let tenant = state
        .store
        .get_tenant(&TenantId::from_raw(id))
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    tracing::Span::current().record("tenant_id", tenant.id.as_str());
    Ok(tenant)
}

fn tenant_summary(t: &Tenant, session: SessionView) -> TenantSummary {
    TenantSummary {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: rfc3339(t.created_at),
        own_store: t.store_dsn.is_some(),
        session,
    }
}

fn key_body(k: &KeyInfo) -> KeyBody {
    KeyBody {
        id: k.id.clone(),
        prefix: k.prefix.clone(),
        source: k.source.clone(),
        created_at: rfc3339(k.created_at),
        last_used_at: k.last_used_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
    }
}
