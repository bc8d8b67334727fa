//! Signal state: remote identities, sessions, our prekeys and signed
//! prekeys, group sender keys.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use wacore::store::traits::SignalStore;

use super::group::{Value, Write};
use super::{
    BlobTable, InList, Result, Rows, SessionStore, blob_table, column, corrupt, last_per_key,
    narrow, rows,
};

const IDENTITIES: BlobTable = blob_table!("wa_identities", "address", "identity_key");
const SESSIONS: BlobTable = blob_table!("wa_signal_sessions", "address", "record");
const SIGNED_PREKEYS: BlobTable = blob_table!("wa_signed_prekeys", "signed_prekey_id", "record");
const SENDER_KEYS: BlobTable = blob_table!("wa_sender_keys", "address", "record");

const PREKEYS: Rows = rows!(
    "INSERT INTO wa_prekeys (session_id, prekey_id, record, uploaded) VALUES ",
    " ON CONFLICT (session_id, prekey_id)
      DO UPDATE SET record = excluded.record, uploaded = excluded.uploaded",
    3
);

/// Addresses are `user@server` (device 0) or `user:device@server`; a
/// prefix test, not LIKE, so `_` or `%` in a user cannot match others.
const HAS_STATE_FOR_USER: &str = "
    SELECT 1 FROM wa_signal_sessions
     WHERE session_id = $1 AND (substr(address, 1, length($2)) = $2
                                OR substr(address, 1, length($3)) = $3)
    UNION ALL
    SELECT 1 FROM wa_identities
     WHERE session_id = $1 AND (substr(address, 1, length($2)) = $2
                                OR substr(address, 1, length($3)) = $3)
    LIMIT 1";

/// Every write of Signal state first writes the inbound messages staged in
/// memory (`pending.rs`): once the state that decrypted them is durable, a
/// redelivered copy cannot be decrypted again.
#[async_trait]
impl SignalStore for SessionStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        let row = vec![Value::from(address), Value::from(key.as_slice())];
        self.write_signal(&IDENTITIES.upsert, vec![row]).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let rows = last_per_key(identities, |(address, _)| address.as_ref())
            .into_iter()
            .map(|(address, key)| vec![Value::from(address.as_ref()), Value::from(key.as_slice())])
            .collect();
        self.write_signal(&IDENTITIES.upsert, rows).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        let Some(key) = self.get_blob(&IDENTITIES, address).await? else {
            return Ok(None);
        };
        let len = key.len();
        let key = key
            .try_into()
            .map_err(|_| corrupt(format!("identity key of {len} bytes, not 32")))?;
        Ok(Some(key))
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.settle_pending().await?;
        self.delete_blob(&IDENTITIES, address).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self.get_blob(&SESSIONS, address).await?.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        let row = vec![Value::from(address), Value::from(session)];
        self.write_signal(&SESSIONS.upsert, vec![row]).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.write_signal(&SESSIONS.upsert, blob_rows(sessions))
            .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.settle_pending().await?;
        self.delete_blob(&SESSIONS, address).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        let query =
            sqlx::query("SELECT 1 FROM wa_signal_sessions WHERE session_id = $1 AND address = $2")
                .bind(self.id())
                .bind(address);
        Ok(self.fetch_optional(query).await?.is_some())
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        let query = sqlx::query(HAS_STATE_FOR_USER)
            .bind(self.id())
            .bind(format!("{user}@"))
            .bind(format!("{user}:"));
        Ok(self.fetch_optional(query).await?.is_some())
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        let query = sqlx::query(PREKEYS.one)
            .bind(self.id())
            .bind(i64::from(id))
            .bind(record)
            .bind(i64::from(uploaded));
        self.execute(query).await?;
        Ok(())
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let rows = last_per_key(keys, |(id, _)| *id);
        self.write_rows(&PREKEYS, &rows, |q, (id, record)| {
            q.bind(i64::from(*id))
                .bind(record.as_ref())
                .bind(i64::from(uploaded))
        })
        .await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        let query =
            sqlx::query("SELECT record FROM wa_prekeys WHERE session_id = $1 AND prekey_id = $2")
                .bind(self.id())
                .bind(i64::from(id));
        self.fetch_optional(query)
            .await?
            .map(|row| column::<Vec<u8>>(&row, 0).map(Bytes::from))
            .transpose()
    }

    /// The result keeps the order of `ids`. The client asks for the keys
    /// it uploaded, numbered in a row: one range read each run of them.
    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let rows = match id_runs(ids) {
            Some(runs) => {
                let mut rows = Vec::new();
                for (first, last) in runs {
                    let query = sqlx::query(
                        "SELECT prekey_id, record FROM wa_prekeys
                          WHERE session_id = $1 AND prekey_id BETWEEN $2 AND $3",
                    )
                    .bind(self.id())
                    .bind(i64::from(first))
                    .bind(i64::from(last));
                    rows.extend(self.fetch_all(query).await?);
                }
                rows
            }
            None => {
                let list = InList {
                    template: "SELECT prekey_id, record FROM wa_prekeys
                                WHERE session_id = $1 AND prekey_id IN ({in})",
                    scope: None,
                };
                self.fetch_in(&list, ids, |q, id| q.bind(i64::from(*id)))
                    .await?
            }
        };
        let mut found = HashMap::with_capacity(ids.len());
        for row in rows {
            let id: u32 = narrow(column(&row, 0)?, "prekey id")?;
            found.insert(id, Bytes::from(column::<Vec<u8>>(&row, 1)?));
        }
        Ok(ids
            .iter()
            .filter_map(|id| found.get(id).map(|record| (*id, record.clone())))
            .collect())
    }

    /// UPDATE only: a key consumed since the upload began stays deleted.
    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        if let Some(runs) = id_runs(ids) {
            let mut conn = self.writer_conn().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(super::db_error)?;
            for (first, last) in runs {
                sqlx::query(
                    "UPDATE wa_prekeys SET uploaded = 1
                      WHERE session_id = $1 AND prekey_id BETWEEN $2 AND $3",
                )
                .bind(self.id())
                .bind(i64::from(first))
                .bind(i64::from(last))
                .execute(&mut *tx)
                .await
                .map_err(super::db_error)?;
            }
            return tx.commit().await.map_err(super::db_error);
        }
        let list = InList {
            template: "UPDATE wa_prekeys SET uploaded = 1
                        WHERE session_id = $1 AND prekey_id IN ({in})",
            scope: None,
        };
        self.execute_in(&list, ids, |q, id| q.bind(i64::from(*id)))
            .await
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.settle_pending().await?;
        let query = sqlx::query("DELETE FROM wa_prekeys WHERE session_id = $1 AND prekey_id = $2")
            .bind(self.id())
            .bind(i64::from(id));
        self.execute(query).await?;
        Ok(())
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let query =
            sqlx::query("SELECT COALESCE(MAX(prekey_id), 0) FROM wa_prekeys WHERE session_id = $1")
                .bind(self.id());
        match self.fetch_optional(query).await? {
            Some(row) => narrow(column(&row, 0)?, "prekey id"),
            None => Ok(0),
        }
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put_blob(&SIGNED_PREKEYS, i64::from(id), record).await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.get_blob(&SIGNED_PREKEYS, i64::from(id)).await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let query = sqlx::query(
            "SELECT signed_prekey_id, record FROM wa_signed_prekeys
             WHERE session_id = $1 ORDER BY signed_prekey_id",
        )
        .bind(self.id());
        self.fetch_all(query)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    narrow(column(row, 0)?, "signed prekey id")?,
                    column(row, 1)?,
                ))
            })
            .collect()
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.delete_blob(&SIGNED_PREKEYS, i64::from(id)).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        let row = vec![Value::from(address), Value::from(record)];
        self.write_signal(&SENDER_KEYS.upsert, vec![row]).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.write_signal(&SENDER_KEYS.upsert, blob_rows(sender_keys))
            .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get_blob(&SENDER_KEYS, address).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.settle_pending().await?;
        self.delete_blob(&SENDER_KEYS, address).await
    }
}

impl SessionStore {
    /// Writes `rows` of Signal state, together with the inbound messages
    /// staged in memory and in the same transaction (see `pending.rs`).
    async fn write_signal(&self, statement: &'static Rows, rows: Vec<Vec<Value>>) -> Result<()> {
        let (mut writes, staged) = self.pending_writes();
        writes.push(Write { statement, rows });
        let written = self.commit(writes).await;
        if written.is_err() {
            self.pending.restore(staged);
        }
        written
    }
}

/// `(address, record)` pairs as rows, the last for each address.
fn blob_rows(pairs: &[(Arc<str>, Bytes)]) -> Vec<Vec<Value>> {
    last_per_key(pairs, |(address, _)| address.as_ref())
        .into_iter()
        .map(|(address, record)| vec![Value::from(address.as_ref()), Value::from(record.clone())])
        .collect()
}

/// Runs of ids counted without a gap, as `(first, last)`, when there are
/// few: a range of the primary key is read the same way whatever the
/// table's size or statistics, where a long `IN` list may be planned as a
/// scan. `None` for ids too scattered to read as ranges.
fn id_runs(ids: &[u32]) -> Option<Vec<(u32, u32)>> {
    const MOST: usize = 4;
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for id in sorted {
        if let Some((_, last)) = runs.last_mut()
            && last.checked_add(1) == Some(id)
        {
            *last = id;
        } else if runs.len() == MOST {
            return None;
        } else {
            runs.push((id, id));
        }
    }
    Some(runs)
}

#[cfg(test)]
mod tests {
    use super::id_runs;

    #[test]
    fn ids_in_a_row_read_as_ranges_and_scattered_ids_do_not() {
        assert_eq!(id_runs(&[]), Some(vec![]));
        assert_eq!(id_runs(&[7, 5, 6, 6]), Some(vec![(5, 7)]));
        // Numbering wrapped around: two runs.
        assert_eq!(
            id_runs(&[16_777_214, 16_777_215, 1, 2]),
            Some(vec![(1, 2), (16_777_214, 16_777_215)])
        );
        assert_eq!(
            id_runs(&[1, 3, 5, 7]),
            Some(vec![(1, 1), (3, 3), (5, 5), (7, 7)])
        );
        assert_eq!(id_runs(&[1, 3, 5, 7, 9]), None);
        assert_eq!(
            id_runs(&[u32::MAX, 0]),
            Some(vec![(0, 0), (u32::MAX, u32::MAX)])
        );
    }
}
