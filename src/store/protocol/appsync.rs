//! App-state sync: the keys the phone shares, each collection's version
//! (hash state) and the MACs of the mutations applied to it.

use std::collections::HashMap;

use async_trait::async_trait;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::traits::{AppStateSyncKey, AppSyncStore};

use super::{InList, Result, Rows, SessionStore, column, json_error, last_per_key, rows};

/// `stored_seq` is one more than the session's largest, so the latest
/// written key is found by ordering, whatever its id or timestamp.
const PUT_SYNC_KEY: &str = "
    INSERT INTO wa_app_state_keys
        (session_id, key_id, key_data, fingerprint, key_timestamp, stored_seq)
    VALUES ($1, $2, $3, $4, $5,
            (SELECT COALESCE(MAX(stored_seq), 0) + 1 FROM wa_app_state_keys WHERE session_id = $1))
    ON CONFLICT (session_id, key_id) DO UPDATE
       SET key_data = excluded.key_data, fingerprint = excluded.fingerprint,
           key_timestamp = excluded.key_timestamp, stored_seq = excluded.stored_seq";

const PUT_VERSION: &str = "
    INSERT INTO wa_app_state_versions (session_id, collection, hash_state_json)
    VALUES ($1, $2, $3)
    ON CONFLICT (session_id, collection) DO UPDATE SET hash_state_json = excluded.hash_state_json";

const MUTATION_MACS: Rows = rows!(
    "INSERT INTO wa_app_state_mutation_macs
         (session_id, collection, index_mac, version, value_mac) VALUES ",
    " ON CONFLICT (session_id, collection, index_mac)
      DO UPDATE SET version = excluded.version, value_mac = excluded.value_mac",
    4
);

#[async_trait]
impl AppSyncStore for SessionStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        let query = sqlx::query(
            "SELECT key_data, fingerprint, key_timestamp FROM wa_app_state_keys
             WHERE session_id = $1 AND key_id = $2",
        )
        .bind(self.id())
        .bind(key_id);
        let Some(row) = self.fetch_optional(query).await? else {
            return Ok(None);
        };
        Ok(Some(AppStateSyncKey {
            key_data: column(&row, 0)?,
            fingerprint: column(&row, 1)?,
            timestamp: column(&row, 2)?,
        }))
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        let query = sqlx::query(PUT_SYNC_KEY)
            .bind(self.id())
            .bind(key_id)
            .bind(key.key_data)
            .bind(key.fingerprint)
            .bind(key.timestamp);
        self.execute(query).await?;
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        let query = sqlx::query(
            "SELECT key_id FROM wa_app_state_keys WHERE session_id = $1
             ORDER BY stored_seq DESC, key_id DESC LIMIT 1",
        )
        .bind(self.id());
        self.fetch_optional(query)
            .await?
            .map(|row| column(&row, 0))
            .transpose()
    }

    /// A collection never stored is at version 0 (the default state).
    async fn get_version(&self, name: &str) -> Result<HashState> {
        let query = sqlx::query(
            "SELECT hash_state_json FROM wa_app_state_versions
             WHERE session_id = $1 AND collection = $2",
        )
        .bind(self.id())
        .bind(name);
        match self.fetch_optional(query).await? {
            Some(row) => serde_json::from_str(&column::<String>(&row, 0)?).map_err(json_error),
            None => Ok(HashState::default()),
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        let json = serde_json::to_string(&state).map_err(json_error)?;
        let query = sqlx::query(PUT_VERSION)
            .bind(self.id())
            .bind(name)
            .bind(json);
        self.execute(query).await?;
        Ok(())
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let version = i64::try_from(version)
            .map_err(|_| super::corrupt(format!("app-state version {version} too large")))?;
        let rows = last_per_key(mutations, |m| m.index_mac.as_slice());
        self.write_rows(&MUTATION_MACS, &rows, |q, m| {
            q.bind(name.to_owned())
                .bind(m.index_mac.as_slice())
                .bind(version)
                .bind(m.value_mac.as_slice())
        })
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        let query = sqlx::query(
            "SELECT value_mac FROM wa_app_state_mutation_macs
             WHERE session_id = $1 AND collection = $2 AND index_mac = $3",
        )
        .bind(self.id())
        .bind(name)
        .bind(index_mac);
        self.fetch_optional(query)
            .await?
            .map(|row| column(&row, 0))
            .transpose()
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let list = InList {
            template: "SELECT index_mac, value_mac FROM wa_app_state_mutation_macs
                        WHERE session_id = $1 AND collection = $2 AND index_mac IN ({in})",
            scope: Some(name),
        };
        let rows = self
            .fetch_in(&list, index_macs, |q, mac| q.bind(mac.as_slice()))
            .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let index_mac: Vec<u8> = column(&row, 0)?;
            // Only 32-byte MACs were asked for, so only they can match.
            if let Ok(index_mac) = <[u8; 32]>::try_from(index_mac) {
                found.insert(index_mac, column(&row, 1)?);
            }
        }
        Ok(found)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let list = InList {
            template: "DELETE FROM wa_app_state_mutation_macs
                        WHERE session_id = $1 AND collection = $2 AND index_mac IN ({in})",
            scope: Some(name),
        };
        self.execute_in(&list, index_macs, |q, mac| q.bind(mac.as_slice()))
            .await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        let query = sqlx::query(
            "DELETE FROM wa_app_state_mutation_macs WHERE session_id = $1 AND collection = $2",
        )
        .bind(self.id())
        .bind(name);
        self.execute(query).await?;
        Ok(())
    }
}
