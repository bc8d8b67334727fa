//! wacore's `ProtocolStore`: what WhatsApp Web keeps beside Signal. Group
//! sender-key distribution, LID <-> phone mappings, retry base keys, device
//! lists, group metadata, trusted-contact tokens, sent messages kept for
//! retries, and the pending-inbound buffer of the durability hook.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use wacore::store::traits::{
    DeviceInfo, DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow,
    ProtocolStore, TcTokenEntry,
};

use super::group::{Value, Write};
use super::{
    BlobTable, InList, Result, Rows, SessionStore, blob_table, column, json_error, last_per_key,
    narrow, now_secs, pending, rows,
};

const GROUP_METADATA: BlobTable = blob_table!("wa_group_metadata", "group_jid", "metadata");

const SENDER_KEY_DEVICES: Rows = rows!(
    "INSERT INTO wa_sender_key_devices (session_id, group_jid, device_jid, has_key) VALUES ",
    " ON CONFLICT (session_id, group_jid, device_jid) DO UPDATE SET has_key = excluded.has_key",
    3
);

/// Every field is overwritten, as in the reference store: whatsapp-rust
/// writes created_at itself (0 for stale sources, to rank them last).
const LID_MAPPINGS: Rows = rows!(
    "INSERT INTO wa_lid_mappings
         (session_id, lid, phone_number, created_at_secs, updated_at_secs, learning_source)
     VALUES ",
    " ON CONFLICT (session_id, lid) DO UPDATE
         SET phone_number = excluded.phone_number, created_at_secs = excluded.created_at_secs,
             updated_at_secs = excluded.updated_at_secs,
             learning_source = excluded.learning_source",
    5
);

const LID_COLUMNS: &str = "lid, phone_number, created_at_secs, updated_at_secs, learning_source";

const DEVICE_LISTS: Rows = rows!(
    "INSERT INTO wa_device_lists
         (session_id, user_id, devices_json, list_timestamp, phash, raw_id) VALUES ",
    " ON CONFLICT (session_id, user_id) DO UPDATE
         SET devices_json = excluded.devices_json, list_timestamp = excluded.list_timestamp,
             phash = excluded.phash, raw_id = excluded.raw_id",
    5
);

const PUT_BASE_KEY: &str = "
    INSERT INTO wa_base_keys (session_id, address, message_id, base_key) VALUES ($1, $2, $3, $4)
    ON CONFLICT (session_id, address, message_id) DO UPDATE SET base_key = excluded.base_key";

const PUT_TC_TOKEN: &str = "
    INSERT INTO wa_tc_tokens
        (session_id, jid, token, token_timestamp_secs, sender_timestamp_secs)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (session_id, jid) DO UPDATE
       SET token = excluded.token, token_timestamp_secs = excluded.token_timestamp_secs,
           sender_timestamp_secs = excluded.sender_timestamp_secs";

/// Newer-wins in one statement, so concurrent writers cannot interleave: the
/// token is replaced only if the stored one is a placeholder or not newer.
/// The sender bucket is never touched.
const STORE_RECEIVED_TC_TOKEN: &str = "
    INSERT INTO wa_tc_tokens
        (session_id, jid, token, token_timestamp_secs, sender_timestamp_secs)
    VALUES ($1, $2, $3, $4, NULL)
    ON CONFLICT (session_id, jid) DO UPDATE
       SET token = excluded.token, token_timestamp_secs = excluded.token_timestamp_secs
     WHERE length(wa_tc_tokens.token) = 0
        OR excluded.token_timestamp_secs >= wa_tc_tokens.token_timestamp_secs";

/// Inserts a token-less placeholder, or moves the sender bucket forward
/// (never back) and leaves the token alone. `$3` is the empty token.
const TOUCH_TC_TOKEN_SENDER: &str = "
    INSERT INTO wa_tc_tokens
        (session_id, jid, token, token_timestamp_secs, sender_timestamp_secs)
    VALUES ($1, $2, $3, $4, $4)
    ON CONFLICT (session_id, jid) DO UPDATE
       SET sender_timestamp_secs = CASE
           WHEN wa_tc_tokens.sender_timestamp_secs IS NULL
             OR wa_tc_tokens.sender_timestamp_secs < excluded.sender_timestamp_secs
           THEN excluded.sender_timestamp_secs
           ELSE wa_tc_tokens.sender_timestamp_secs END";

/// A row goes only when both its received token and its sender bucket are
/// stale or absent.
const DELETE_EXPIRED_TC_TOKENS: &str = "
    DELETE FROM wa_tc_tokens
     WHERE session_id = $1
       AND (length(token) = 0 OR token_timestamp_secs < $2)
       AND (sender_timestamp_secs IS NULL OR sender_timestamp_secs < $3)";

const PUT_SENT_MESSAGE: Rows = rows!(
    "INSERT INTO wa_sent_messages (session_id, chat_jid, message_id, payload, stored_at_secs)
     VALUES ",
    " ON CONFLICT (session_id, chat_jid, message_id) DO UPDATE
       SET payload = excluded.payload, stored_at_secs = excluded.stored_at_secs",
    4
);

const PENDING_INBOUND: Rows = rows!(
    "INSERT INTO wa_pending_inbound
         (session_id, chat, sender, message_id, message, stored_at_secs) VALUES ",
    " ON CONFLICT (session_id, chat, sender, message_id) DO UPDATE
         SET message = excluded.message, stored_at_secs = excluded.stored_at_secs",
    5
);

const DELETE_PENDING_INBOUND: Rows = rows!(
    "DELETE FROM wa_pending_inbound
      WHERE (session_id, chat, sender, message_id) IN (VALUES ",
    ")",
    3
);

#[async_trait]
impl ProtocolStore for SessionStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        let query = sqlx::query(
            "SELECT device_jid, has_key FROM wa_sender_key_devices
             WHERE session_id = $1 AND group_jid = $2 ORDER BY device_jid",
        )
        .bind(self.id())
        .bind(group_jid);
        self.fetch_all(query)
            .await?
            .iter()
            .map(|row| Ok((column(row, 0)?, column::<i64>(row, 1)? != 0)))
            .collect()
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let rows = last_per_key(entries, |(device, _)| *device);
        self.write_rows(&SENDER_KEY_DEVICES, &rows, |q, (device, has_key)| {
            q.bind(group_jid.to_owned())
                .bind(*device)
                .bind(i64::from(*has_key))
        })
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        let query = sqlx::query(
            "DELETE FROM wa_sender_key_devices WHERE session_id = $1 AND group_jid = $2",
        )
        .bind(self.id())
        .bind(group_jid);
        self.execute(query).await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        let list = InList {
            template: "DELETE FROM wa_sender_key_devices
                        WHERE session_id = $1 AND device_jid IN ({in})",
            scope: None,
        };
        self.execute_in(&list, device_jids, |q, device| q.bind(*device))
            .await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        let query =
            sqlx::query("DELETE FROM wa_sender_key_devices WHERE session_id = $1").bind(self.id());
        self.execute(query).await?;
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        let sql =
            format!("SELECT {LID_COLUMNS} FROM wa_lid_mappings WHERE session_id = $1 AND lid = $2");
        let query = sqlx::query(&sql).bind(self.id()).bind(lid);
        self.fetch_optional(query)
            .await?
            .map(|row| lid_entry(&row))
            .transpose()
    }

    /// The most recently updated LID of the phone number (ties: the newest
    /// created, then the largest LID, so the answer is stable).
    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let sql = format!(
            "SELECT {LID_COLUMNS} FROM wa_lid_mappings WHERE session_id = $1 AND phone_number = $2
             ORDER BY updated_at_secs DESC, created_at_secs DESC, lid DESC LIMIT 1"
        );
        let query = sqlx::query(&sql).bind(self.id()).bind(phone);
        self.fetch_optional(query)
            .await?
            .map(|row| lid_entry(&row))
            .transpose()
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        let rows = last_per_key(entries, |e| e.lid.as_str());
        self.write_rows(&LID_MAPPINGS, &rows, |q, e| {
            q.bind(e.lid.as_str())
                .bind(e.phone_number.as_str())
                .bind(e.created_at)
                .bind(e.updated_at)
                .bind(e.learning_source.as_str())
        })
        .await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        let sql =
            format!("SELECT {LID_COLUMNS} FROM wa_lid_mappings WHERE session_id = $1 ORDER BY lid");
        let query = sqlx::query(&sql).bind(self.id());
        self.fetch_all(query).await?.iter().map(lid_entry).collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        let query = sqlx::query(PUT_BASE_KEY)
            .bind(self.id())
            .bind(address)
            .bind(message_id)
            .bind(base_key);
        self.execute(query).await?;
        Ok(())
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        let query = sqlx::query(
            "SELECT base_key FROM wa_base_keys
             WHERE session_id = $1 AND address = $2 AND message_id = $3",
        )
        .bind(self.id())
        .bind(address)
        .bind(message_id);
        match self.fetch_optional(query).await? {
            Some(row) => Ok(column::<Vec<u8>>(&row, 0)? == current_base_key),
            None => Ok(false),
        }
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        let query = sqlx::query(
            "DELETE FROM wa_base_keys WHERE session_id = $1 AND address = $2 AND message_id = $3",
        )
        .bind(self.id())
        .bind(address)
        .bind(message_id);
        self.execute(query).await?;
        Ok(())
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let rows = records
            .iter()
            .map(|r| {
                let json = serde_json::to_string(&r.devices).map_err(json_error)?;
                Ok((r, json))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = last_per_key(&rows, |(r, _)| r.user.as_str());
        self.write_rows(&DEVICE_LISTS, &rows, |q, (r, json)| {
            q.bind(r.user.as_str())
                .bind(json.as_str())
                .bind(r.timestamp)
                .bind(r.phash.as_deref())
                .bind(r.raw_id.map(i64::from))
        })
        .await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        let query = sqlx::query(
            "SELECT devices_json, list_timestamp, phash, raw_id FROM wa_device_lists
             WHERE session_id = $1 AND user_id = $2",
        )
        .bind(self.id())
        .bind(user);
        let Some(row) = self.fetch_optional(query).await? else {
            return Ok(None);
        };
        let devices: Vec<DeviceInfo> =
            serde_json::from_str(&column::<String>(&row, 0)?).map_err(json_error)?;
        let raw_id: Option<i64> = column(&row, 3)?;
        Ok(Some(DeviceListRecord {
            user: user.to_owned(),
            devices,
            timestamp: column(&row, 1)?,
            phash: column(&row, 2)?,
            raw_id: raw_id
                .map(|id| narrow(id, "device list raw id"))
                .transpose()?,
        }))
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        let query =
            sqlx::query("DELETE FROM wa_device_lists WHERE session_id = $1 AND user_id = $2")
                .bind(self.id())
                .bind(user);
        self.execute(query).await?;
        Ok(())
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get_blob(&GROUP_METADATA, group_jid).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put_blob(&GROUP_METADATA, group_jid, blob).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.delete_blob(&GROUP_METADATA, group_jid).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        if let Some(known) = self.tc_tokens.get(jid) {
            return Ok(known);
        }
        let read_at = self.tc_tokens.read_at();
        let query = sqlx::query(
            "SELECT token, token_timestamp_secs, sender_timestamp_secs FROM wa_tc_tokens
             WHERE session_id = $1 AND jid = $2",
        )
        .bind(self.id())
        .bind(jid);
        let entry = match self.fetch_optional(query).await? {
            None => None,
            Some(row) => Some(TcTokenEntry {
                token: column(&row, 0)?,
                token_timestamp: column(&row, 1)?,
                sender_timestamp: column(&row, 2)?,
            }),
        };
        self.tc_tokens.fill(jid, entry.clone(), read_at);
        Ok(entry)
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let query = sqlx::query(PUT_TC_TOKEN)
            .bind(self.id())
            .bind(jid)
            .bind(entry.token.as_slice())
            .bind(entry.token_timestamp)
            .bind(entry.sender_timestamp);
        let written = self.execute(query).await;
        self.tc_tokens.forget(jid);
        written.map(drop)
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let query = sqlx::query("DELETE FROM wa_tc_tokens WHERE session_id = $1 AND jid = $2")
            .bind(self.id())
            .bind(jid);
        let written = self.execute(query).await;
        self.tc_tokens.forget(jid);
        written.map(drop)
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        let query = sqlx::query("SELECT jid FROM wa_tc_tokens WHERE session_id = $1 ORDER BY jid")
            .bind(self.id());
        self.fetch_all(query)
            .await?
            .iter()
            .map(|row| column(row, 0))
            .collect()
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let query = sqlx::query(DELETE_EXPIRED_TC_TOKENS)
            .bind(self.id())
            .bind(token_cutoff)
            .bind(sender_cutoff);
        let written = self.execute(query).await;
        self.tc_tokens.forget_all();
        Ok(count(written?))
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let query = sqlx::query(TOUCH_TC_TOKEN_SENDER)
            .bind(self.id())
            .bind(jid)
            .bind(&[] as &[u8])
            .bind(sender_timestamp);
        let written = self.execute(query).await;
        self.tc_tokens.forget(jid);
        written.map(drop)
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let query = sqlx::query(STORE_RECEIVED_TC_TOKEN)
            .bind(self.id())
            .bind(jid)
            .bind(token)
            .bind(token_timestamp);
        let written = self.execute(query).await;
        self.tc_tokens.forget(jid);
        written.map(drop)
    }

    /// Unlike the in-memory store there is no cap on the count: rows live
    /// in the database, and the client's keepalive sweep expires them.
    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        let row = vec![
            Value::from(chat_jid),
            Value::from(message_id),
            Value::from(payload),
            Value::from(now_secs()),
        ];
        self.commit(vec![Write {
            statement: &PUT_SENT_MESSAGE,
            rows: vec![row],
        }])
        .await
    }

    /// DELETE ... RETURNING: of two concurrent takes, only one gets it.
    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let query = sqlx::query(
            "DELETE FROM wa_sent_messages
             WHERE session_id = $1 AND chat_jid = $2 AND message_id = $3 RETURNING payload",
        )
        .bind(self.id())
        .bind(chat_jid)
        .bind(message_id);
        self.take_optional(query)
            .await?
            .map(|row| column(&row, 0))
            .transpose()
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        let query = sqlx::query(
            "DELETE FROM wa_sent_messages WHERE session_id = $1 AND stored_at_secs < $2",
        )
        .bind(self.id())
        .bind(cutoff_timestamp);
        Ok(count(self.execute(query).await?))
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let row = PendingInboundRow {
            chat,
            sender,
            id,
            message,
        };
        self.store_pending_inbound_batch(&[row]).await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(message) = self.pending.get(chat, sender, id) {
            return Ok(Some(message));
        }
        let query = sqlx::query(
            "SELECT message FROM wa_pending_inbound
             WHERE session_id = $1 AND chat = $2 AND sender = $3 AND message_id = $4",
        )
        .bind(self.id())
        .bind(chat)
        .bind(sender)
        .bind(id);
        self.fetch_optional(query)
            .await?
            .map(|row| column(&row, 0))
            .transpose()
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.delete_pending_inbound_batch(&[PendingInboundKey { chat, sender, id }])
            .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        let query = sqlx::query(
            "DELETE FROM wa_pending_inbound WHERE session_id = $1 AND stored_at_secs < $2",
        )
        .bind(self.id())
        .bind(cutoff_timestamp);
        let staged = self.pending.expire(cutoff_timestamp);
        Ok(count(self.execute(query).await?) + staged)
    }

    /// Staged in memory (`pending.rs`); written at once only when the
    /// stage is full.
    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        let now = now_secs();
        if self.pending.stage(rows, now) {
            return Ok(());
        }
        let rows = last_per_key(rows, |r| (r.chat, r.sender, r.id))
            .into_iter()
            .map(|r| pending_row(r.chat, r.sender, r.id, r.message, now))
            .collect();
        self.commit(vec![Write {
            statement: &PENDING_INBOUND,
            rows,
        }])
        .await
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        let keys = self.pending.unstage(keys);
        if keys.is_empty() {
            return Ok(());
        }
        let rows = keys
            .iter()
            .map(|key| {
                vec![
                    Value::from(key.chat),
                    Value::from(key.sender),
                    Value::from(key.id),
                ]
            })
            .collect();
        self.commit(vec![Write {
            statement: &DELETE_PENDING_INBOUND,
            rows,
        }])
        .await
    }
}

impl SessionStore {
    /// Writes the inbound messages staged in memory (`pending.rs`). Run
    /// before any write of Signal state, which could make them impossible
    /// to decrypt again; that write fails if this one does.
    pub(super) async fn settle_pending(&self) -> Result<()> {
        let (writes, staged) = self.pending_writes();
        if writes.is_empty() {
            return Ok(());
        }
        let written = self.commit(writes).await;
        if written.is_err() {
            self.pending.restore(staged);
        }
        written
    }

    /// The write of every inbound message staged in memory, taken off the
    /// stage (none when nothing is staged), and the rows taken, to put back
    /// if the write fails.
    pub(super) fn pending_writes(&self) -> (Vec<Write>, Vec<pending::Row>) {
        let staged = self.pending.take_all();
        if staged.is_empty() {
            return (Vec::new(), staged);
        }
        let rows = staged
            .iter()
            .map(|r| pending_row(&r.chat, &r.sender, &r.id, &r.message, r.stored_at))
            .collect();
        let write = Write {
            statement: &PENDING_INBOUND,
            rows,
        };
        (vec![write], staged)
    }
}

/// A row of [`PENDING_INBOUND`].
fn pending_row(chat: &str, sender: &str, id: &str, message: &[u8], stored_at: i64) -> Vec<Value> {
    vec![
        Value::from(chat),
        Value::from(sender),
        Value::from(id),
        Value::from(message),
        Value::from(stored_at),
    ]
}

fn lid_entry(row: &AnyRow) -> Result<LidPnMappingEntry> {
    Ok(LidPnMappingEntry {
        lid: column(row, 0)?,
        phone_number: column(row, 1)?,
        created_at: column(row, 2)?,
        updated_at: column(row, 3)?,
        learning_source: column(row, 4)?,
    })
}

/// A count of deleted rows, as the traits report it.
fn count(rows: u64) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}
