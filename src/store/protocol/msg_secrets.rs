//! Message secrets, kept to decrypt the add-ons (poll votes, reactions,
//! edits) that later refer to a message.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use wacore::store::traits::{
    MsgSecretEntry, MsgSecretStore, merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

use super::group::{Value, Write};
use super::{Result, Rows, SessionStore, column, rows};

/// On conflict the secret is replaced but the windows only grow: the later
/// deadline wins and 0 ("never") beats any deadline
/// (`merge_msg_secret_expiry`); the later parent time wins, so 0
/// ("unknown") never hides a known one (`merge_msg_secret_message_ts`).
const MSG_SECRETS: Rows = rows!(
    "INSERT INTO wa_msg_secrets
         (session_id, chat, sender, message_id, secret, expires_at_secs, message_ts_secs)
     VALUES ",
    " ON CONFLICT (session_id, chat, sender, message_id) DO UPDATE
         SET secret = excluded.secret,
             expires_at_secs = CASE
                 WHEN wa_msg_secrets.expires_at_secs = 0 OR excluded.expires_at_secs = 0 THEN 0
                 WHEN excluded.expires_at_secs > wa_msg_secrets.expires_at_secs
                 THEN excluded.expires_at_secs
                 ELSE wa_msg_secrets.expires_at_secs END,
             message_ts_secs = CASE
                 WHEN excluded.message_ts_secs > wa_msg_secrets.message_ts_secs
                 THEN excluded.message_ts_secs
                 ELSE wa_msg_secrets.message_ts_secs END",
    6
);

const GET_MSG_SECRET: &str = "
    SELECT secret, message_ts_secs FROM wa_msg_secrets
     WHERE session_id = $1 AND chat = $2 AND sender = $3 AND message_id = $4";

#[async_trait]
impl MsgSecretStore for SessionStore {
    /// Returns how many entries were given, as the reference store does.
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let given = entries.len();
        let merged = merge_repeats(entries);
        let rows = merged
            .iter()
            .map(|e| {
                vec![
                    Value::from(e.chat.as_ref()),
                    Value::from(e.sender.as_ref()),
                    Value::from(e.msg_id.as_ref()),
                    Value::from(e.secret.as_slice()),
                    Value::from(e.expires_at),
                    Value::from(e.message_ts),
                ]
            })
            .collect();
        self.commit(vec![Write {
            statement: &MSG_SECRETS,
            rows,
        }])
        .await?;
        Ok(given)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        let query = sqlx::query(GET_MSG_SECRET)
            .bind(self.id())
            .bind(chat)
            .bind(sender)
            .bind(msg_id);
        let Some(row) = self.fetch_optional(query).await? else {
            return Ok(None);
        };
        Ok(Some((column(&row, 0)?, column(&row, 1)?)))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let query = sqlx::query(
            "DELETE FROM wa_msg_secrets
             WHERE session_id = $1 AND expires_at_secs <> 0 AND expires_at_secs <= $2",
        )
        .bind(self.id())
        .bind(cutoff_timestamp);
        let deleted = self.execute(query).await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }
}

/// (chat, sender, message id).
type SecretKey = (Arc<str>, Arc<str>, Arc<str>);

/// One entry per key, merged the way the database merges a conflict, since
/// one statement may not touch a row twice.
fn merge_repeats(entries: Vec<MsgSecretEntry>) -> Vec<MsgSecretEntry> {
    let mut slot: HashMap<SecretKey, usize> = HashMap::new();
    let mut merged: Vec<MsgSecretEntry> = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = (
            entry.chat.clone(),
            entry.sender.clone(),
            entry.msg_id.clone(),
        );
        match slot.get(&key) {
            Some(&i) => {
                let kept = &mut merged[i];
                kept.secret = entry.secret;
                kept.expires_at = merge_msg_secret_expiry(kept.expires_at, entry.expires_at);
                kept.message_ts = merge_msg_secret_message_ts(kept.message_ts, entry.message_ts);
            }
            None => {
                slot.insert(key, merged.len());
                merged.push(entry);
            }
        }
    }
    merged
}
