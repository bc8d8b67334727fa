//! Tenants, API keys and the admin token's hash.

use serde::Serialize;
use sqlx::Row;

use super::protocol::{SessionId, delete_protocol_rows_in};
use super::{Result, Store, StoreError, now_ms};
use crate::tenants::{ApiKey, KeyHash, KeySource, TenantId, TenantName};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Set when the tenant's protocol store lives in its own database. May
    /// hold a password: never serialised.
    #[serde(skip)]
    pub store_dsn: Option<String>,
    pub created_at: i64,
}

impl Tenant {
    pub fn tenant_id(&self) -> TenantId {
        TenantId::from_raw(self.id.clone())
    }
}

/// What may be shown of a key: never the key or its hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: String,
    pub prefix: String,
    pub source: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// The tenant a presented key belongs to.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub key_id: String,
    pub key_hash: KeyHash,
    pub last_used_at: Option<i64>,
}

/// A new key's row, made before it is shown to anyone.
pub struct NewKey {
    pub id: String,
    pub hash: KeyHash,
    pub prefix: String,
    pub source: KeySource,
}

impl NewKey {
    pub fn for_key(key: &ApiKey, source: KeySource) -> Self {
        NewKey {
            id: uuid::Uuid::new_v4().to_string(),
            hash: key.hash(),
            prefix: key.prefix(),
            source,
        }
    }
}

const ADMIN_TOKEN_HASH: &str = "admin_token_sha256";

/// How often a key's `last_used_at` is written: often enough to be useful,
/// rarely enough that a busy key does not turn every request into a write.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

impl Store {
    /// Creates a tenant and its first key in one transaction.
    pub async fn create_tenant(
        &self,
        name: &TenantName,
        store_dsn: Option<&str>,
        key: &NewKey,
    ) -> Result<Tenant> {
        let tenant = Tenant {
            id: TenantId::new().to_string(),
            name: name.as_str().to_owned(),
            store_dsn: store_dsn.map(str::to_owned),
            created_at: now_ms(),
        };
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, store_dsn, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(&tenant.store_dsn)
        .bind(tenant.created_at)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            let e = StoreError::from(e);
            return Err(if e.is_unique_violation() {
                StoreError::Conflict(format!("a tenant named {:?} exists already", tenant.name))
            } else {
                e
            });
        }
        insert_key(&mut tx, &tenant.id, key).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(sqlx::query_as(
            "SELECT id, name, store_dsn, created_at FROM tenants ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A page of tenants by name: those after `after` whose name contains
    /// `search` (any case), at most `limit`. Through the name's unique
    /// index, so a page costs what it reads.
    pub async fn list_tenants_page(
        &self,
        search: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Tenant>> {
        let pattern = search.map(|s| {
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        Ok(sqlx::query_as(
            "SELECT id, name, store_dsn, created_at FROM tenants
              WHERE name > $1 AND ($2 IS NULL OR LOWER(name) LIKE $2 ESCAPE '\\')
              ORDER BY name LIMIT $3",
        )
        .bind(after.unwrap_or(""))
        .bind(pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        Ok(
            sqlx::query_as("SELECT id, name, store_dsn, created_at FROM tenants WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn get_tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        Ok(
            sqlx::query_as("SELECT id, name, store_dsn, created_at FROM tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deletes the tenant; its keys, messages and webhook rows go with it
    /// (foreign keys cascade), and so do its protocol rows in this database
    /// (no foreign key there: see [`Store::delete_protocol_rows`]). False if
    /// there was no such tenant.
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<bool> {
        // A session's last writes (its status, an event that bumps the
        // tenant's sequence) take their rows in the other order than the
        // cascade does; Postgres then ends one transaction as a deadlock.
        // Ours is tried again: the other one has finished by then.
        let mut tries = 0;
        loop {
            match self.delete_tenant_once(id).await {
                Err(StoreError::Sql(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("40P01") && tries < 3 =>
                {
                    tries += 1;
                    tracing::info!(tenant_id = %id, "deleting a tenant met a deadlock; trying again");
                }
                outcome => return outcome,
            }
        }
    }

    async fn delete_tenant_once(&self, id: &TenantId) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        delete_protocol_rows_in(&mut tx, &SessionId::from(id)).await?;
        sqlx::query("DELETE FROM session_leases WHERE session_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every key of a tenant, revoked ones included, oldest first.
    pub async fn list_keys(&self, tenant: &TenantId) -> Result<Vec<KeyInfo>> {
        Ok(sqlx::query_as(
            "SELECT id, prefix, source, created_at, last_used_at, revoked_at
             FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn add_key(&self, tenant: &TenantId, key: &NewKey) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_key(&mut tx, tenant.as_str(), key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a key at once. False if the tenant has no such live key.
    pub async fn revoke_key(&self, tenant: &TenantId, key_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1
             WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(tenant.as_str())
        .bind(key_id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The live key with this hash, and its tenant.
    pub async fn find_key_owner(&self, hash: &KeyHash) -> Result<Option<KeyOwner>> {
        let row = sqlx::query(
            "SELECT k.id, k.key_hash, k.last_used_at, t.id AS tenant_id, t.name
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(KeyOwner {
                key_id: row.try_get("id")?,
                key_hash: KeyHash::from_stored(row.try_get("key_hash")?),
                last_used_at: row.try_get("last_used_at")?,
                tenant_id: TenantId::from_raw(row.try_get::<String, _>("tenant_id")?),
                tenant_name: row.try_get("name")?,
            })
        })
        .transpose()
    }

    /// Records that a key was used, at most once per resolution window.
    pub async fn touch_key(&self, key_id: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(key_id)
        .bind(now - LAST_USED_RESOLUTION_MS)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Makes `API_KEY` the key of the tenant named `name`, creating the
    /// tenant on first use. Idempotent; when the variable changes, the new
    /// key replaces the old one (keys made by the admin API are kept).
    /// Returns the tenant and whether anything changed.
    pub async fn ensure_env_key(&self, name: &TenantName, key: &ApiKey) -> Result<(Tenant, bool)> {
        let new_key = NewKey::for_key(key, KeySource::Env);
        let tenant = match self.get_tenant_by_name(name.as_str()).await? {
            Some(t) => t,
            None => match self.create_tenant(name, None, &new_key).await {
                Ok(t) => return Ok((t, true)),
                // Another node created it meanwhile: carry on with theirs.
                Err(e) if e.is_unique_violation() => self
                    .get_tenant_by_name(name.as_str())
                    .await?
                    .ok_or_else(|| StoreError::Conflict("tenant vanished".into()))?,
                Err(e) => return Err(e),
            },
        };
        let mut tx = self.begin_write().await?;
        let holder: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT tenant_id, revoked_at FROM api_keys WHERE key_hash = $1")
                .bind(new_key.hash.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        match holder {
            Some((owner, None)) if owner == tenant.id => return Ok((tenant, false)),
            Some((owner, _)) if owner != tenant.id => {
                return Err(StoreError::Conflict(format!(
                    "API_KEY is already a key of another tenant than {:?}",
                    tenant.name
                )));
            }
            Some(_) => {
                // The same value was used before and replaced: bring it back.
                sqlx::query("UPDATE api_keys SET revoked_at = NULL WHERE key_hash = $1")
                    .bind(new_key.hash.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            None => insert_key(&mut tx, &tenant.id, &new_key).await?,
        }
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1
             WHERE tenant_id = $2 AND source = $3 AND key_hash <> $4 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(&tenant.id)
        .bind(KeySource::Env.as_str())
        .bind(new_key.hash.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((tenant, true))
    }

    pub async fn admin_token_hash(&self) -> Result<Option<KeyHash>> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(ADMIN_TOKEN_HASH)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value.map(KeyHash::from_stored))
    }

    pub async fn set_admin_token_hash(&self, hash: &KeyHash) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(ADMIN_TOKEN_HASH)
        .bind(hash.as_str())
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Stores `hash` as the admin token only if none is stored yet; false
    /// if one was (another node may have generated it first).
    pub async fn init_admin_token_hash(&self, hash: &KeyHash) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(ADMIN_TOKEN_HASH)
        .bind(hash.as_str())
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant_id: &str,
    key: &NewKey,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, source, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.id)
    .bind(tenant_id)
    .bind(key.hash.as_str())
    .bind(&key.prefix)
    .bind(key.source.as_str())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
