//! The session's own device: identity and noise keys, registration id,
//! account, push name and counters. One device per session, stored whole as
//! serde_json of wacore's `Device` (its own serde format: a self-describing
//! one keeps rows written by an older wacore readable, since new fields are
//! `#[serde(default)]`).

use async_trait::async_trait;
use wacore::stats::StorageResourceReport;
use wacore::store::Device;
use wacore::store::traits::DeviceStore;

use super::{Result, SessionStore, column, json_error};
use crate::store::now_ms;

/// A session has exactly one device, so its id is always this.
pub const DEVICE_ID: i32 = 1;

const SAVE_DEVICE: &str = "
    INSERT INTO wa_devices (session_id, device_json, updated_at) VALUES ($1, $2, $3)
    ON CONFLICT (session_id) DO UPDATE
       SET device_json = excluded.device_json, updated_at = excluded.updated_at";

/// Never replaces a stored device: its keys are the session's identity.
const CREATE_DEVICE: &str = "
    INSERT INTO wa_devices (session_id, device_json, updated_at) VALUES ($1, $2, $3)
    ON CONFLICT (session_id) DO NOTHING";

#[async_trait]
impl DeviceStore for SessionStore {
    async fn save(&self, device: &Device) -> Result<()> {
        self.write_device(SAVE_DEVICE, device).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        let query =
            sqlx::query("SELECT device_json FROM wa_devices WHERE session_id = $1").bind(self.id());
        let Some(row) = self.fetch_optional(query).await? else {
            return Ok(None);
        };
        let json: String = column(&row, 0)?;
        serde_json::from_str(&json).map(Some).map_err(json_error)
    }

    async fn exists(&self) -> Result<bool> {
        let query = sqlx::query("SELECT 1 FROM wa_devices WHERE session_id = $1").bind(self.id());
        Ok(self.fetch_optional(query).await?.is_some())
    }

    /// Stores fresh keys unless the session has a device already, so that
    /// `exists()` is true afterwards (as in the reference store).
    async fn create(&self) -> Result<i32> {
        self.write_device(CREATE_DEVICE, &Device::new()).await?;
        Ok(DEVICE_ID)
    }

    /// The rows live in the database, and the pool is shared by every
    /// session: nothing in this process is this session's alone.
    async fn resource_report(&self) -> StorageResourceReport {
        StorageResourceReport {
            memory_bytes: Some(0),
            ..StorageResourceReport::default()
        }
    }
}

impl SessionStore {
    async fn write_device(&self, sql: &'static str, device: &Device) -> Result<()> {
        let json = serde_json::to_string(device).map_err(json_error)?;
        let query = sqlx::query(sql).bind(self.id()).bind(json).bind(now_ms());
        self.execute(query).await?;
        Ok(())
    }
}

impl crate::store::Store {
    /// Sessions whose device is linked to a number: those to connect at
    /// start-up. A device that was made but never paired has no `pn`.
    pub async fn paired_sessions(&self) -> crate::store::Result<Vec<super::SessionId>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT session_id, device_json FROM wa_devices ORDER BY session_id")
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .into_iter()
            .filter(|(_, json)| {
                serde_json::from_str::<Device>(json).is_ok_and(|device| device.pn.is_some())
            })
            .map(|(id, _)| super::SessionId::from_raw(&id))
            .collect())
    }
}
