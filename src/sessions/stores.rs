//! Where each tenant's WhatsApp protocol store lives: in the main database
//! (scoped by tenant id, one pool for every session), or in the tenant's
//! own database when it was created with a `store_dsn`. Control-plane rows
//! (messages, outbox, leases) always stay in the main database.

use std::collections::HashMap;

use crate::store::protocol::SessionId;
use crate::store::{Store, StoreError};
use crate::tenants::TenantId;
use crate::types::Dsn;

pub(super) struct ProtocolStores {
    main: Store,
    /// One pool per separate database, opened on first use.
    own: tokio::sync::Mutex<HashMap<String, Store>>,
}

impl ProtocolStores {
    pub fn new(main: Store) -> Self {
        ProtocolStores {
            main,
            own: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The database that holds `tenant`'s protocol rows.
    pub async fn of(&self, tenant: &TenantId) -> Result<Store, StoreError> {
        let dsn = self
            .main
            .get_tenant(tenant)
            .await?
            .and_then(|t| t.store_dsn);
        match dsn {
            None => Ok(self.main.clone()),
            Some(raw) => self.open(&raw).await,
        }
    }

    async fn open(&self, raw: &str) -> Result<Store, StoreError> {
        let mut own = self.own.lock().await;
        if let Some(store) = own.get(raw) {
            return Ok(store.clone());
        }
        let dsn = Dsn::parse(raw).map_err(|e| StoreError::Conflict(format!("store_dsn: {e}")))?;
        let store = Store::connect_fenced(&dsn, self.main.write_fence().clone()).await?;
        store.migrate().await?;
        tracing::info!(database = %dsn, "opened a tenant's own protocol store");
        own.insert(raw.to_owned(), store.clone());
        Ok(store)
    }

    /// Whether `tenant` has a device linked to a number.
    pub async fn is_paired(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let store = self.of(tenant).await?;
        let id = SessionId::from(tenant);
        Ok(store.paired_sessions().await?.contains(&id))
    }

    /// Deletes the tenant's protocol rows where they live.
    pub async fn forget(&self, tenant: &TenantId) -> Result<(), StoreError> {
        let store = self.of(tenant).await?;
        store.delete_protocol_rows(&SessionId::from(tenant)).await
    }
}
