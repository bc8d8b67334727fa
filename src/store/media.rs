//! The files of media messages: one `media` row beside each such message.

use serde::Serialize;

use super::messages::{Accepted, NewOutbound};
use super::{Result, Store};
use crate::media::MediaKind;
use crate::tenants::TenantId;

crate::text_enum! {
    /// Where a message's file is.
    pub enum MediaState {
        /// Kept in the media storage (`storage_key`).
        Stored = "stored",
        /// Sent and acknowledged, then let go.
        Released = "released",
        /// Deleted by retention.
        Expired = "expired",
        /// Known from the message, not downloaded (yet).
        Remote = "remote",
        /// Its download failed (`error` says why).
        Failed = "failed",
    }
}

/// A file to record beside its message.
#[derive(Debug, Clone)]
pub struct NewMedia<'a> {
    pub kind: MediaKind,
    pub mimetype: &'a str,
    pub file_name: Option<&'a str>,
    pub size: u64,
    pub sha256: &'a str,
    pub voice: bool,
    pub state: MediaState,
    pub storage_key: Option<&'a str>,
    pub error: Option<&'a str>,
    /// What downloading it again takes (inbound).
    pub remote: Option<&'a str>,
}

/// The file of an inbound message, as the session fetched it (or failed
/// to), to store with the message.
#[derive(Debug, Clone)]
pub struct InboundMedia {
    pub kind: MediaKind,
    pub mimetype: String,
    pub file_name: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub voice: bool,
    pub state: MediaState,
    pub storage_key: Option<String>,
    pub error: Option<String>,
    pub remote: Option<String>,
}

impl InboundMedia {
    pub fn as_new(&self) -> NewMedia<'_> {
        NewMedia {
            kind: self.kind,
            mimetype: &self.mimetype,
            file_name: self.file_name.as_deref(),
            size: self.size,
            sha256: &self.sha256,
            voice: self.voice,
            state: self.state,
            storage_key: self.storage_key.as_deref(),
            error: self.error.as_deref(),
            remote: self.remote.as_deref(),
        }
    }

    /// What the webhook body and the API show of it.
    pub fn info(&self, message_id: &str) -> MediaInfo {
        MediaInfo {
            kind: self.kind,
            mimetype: self.mimetype.clone(),
            file_name: self.file_name.clone(),
            size: self.size as i64,
            sha256: self.sha256.clone(),
            voice: self.voice,
            state: self.state,
            error: self.error.clone(),
            url: media_url(message_id),
        }
    }
}

/// Where the API serves a message's file.
fn media_url(message_id: &str) -> String {
    format!("/messages/{message_id}/media")
}

/// A media message's file, as the API and webhooks show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MediaInfo {
    /// `image`, `document`, `audio`, `video` or `sticker`.
    #[schema(value_type = MediaKind)]
    pub kind: MediaKind,
    pub mimetype: String,
    /// A document's file name.
    pub file_name: Option<String>,
    /// Bytes of the file.
    pub size: i64,
    /// The file's SHA-256, hex.
    pub sha256: String,
    /// An audio sent as a voice note.
    pub voice: bool,
    /// `stored` (the file can be fetched at `url`), `released` (sent and
    /// let go), `expired`, `remote` (not fetched) or `failed` (`error`).
    #[schema(value_type = MediaState)]
    pub state: MediaState,
    /// Why the file could not be fetched.
    pub error: Option<String>,
    /// Where the file is served, with the tenant's key (a path on this
    /// server).
    #[schema(example = "/messages/3EB0C0FFEE/media")]
    pub url: String,
}

impl MediaRow {
    pub fn info(&self, message_id: &str) -> MediaInfo {
        MediaInfo {
            kind: self.kind,
            mimetype: self.mimetype.clone(),
            file_name: self.file_name.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            voice: self.voice != 0,
            state: self.state,
            error: self.error.clone(),
            url: media_url(message_id),
        }
    }
}

/// A message's file as its row holds it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MediaRow {
    pub message_row: i64,
    pub kind: MediaKind,
    pub mimetype: String,
    pub file_name: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub voice: i64,
    pub state: MediaState,
    pub storage_key: Option<String>,
    pub error: Option<String>,
    pub remote: Option<String>,
}

const MEDIA_COLUMNS: &str = "message_row, kind, mimetype, file_name, size, sha256, voice, state, \
     storage_key, error, remote";

pub(super) async fn insert_media(
    conn: &mut sqlx::AnyConnection,
    tenant: &TenantId,
    message_row: i64,
    media: &NewMedia<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO media (message_row, tenant_id, kind, mimetype, file_name, size, sha256,
                            voice, state, storage_key, error, remote, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(message_row)
    .bind(tenant.as_str())
    .bind(media.kind)
    .bind(media.mimetype)
    .bind(media.file_name)
    .bind(media.size as i64)
    .bind(media.sha256)
    .bind(i64::from(media.voice))
    .bind(media.state)
    .bind(media.storage_key)
    .bind(media.error)
    .bind(media.remote)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Writes a media send (a `queued` message and its file's row) in one
    /// transaction, unless its idempotency key was used within the window:
    /// then the first send is returned and nothing is written.
    pub async fn accept_media_send(
        &self,
        tenant: &TenantId,
        sender_id: &str,
        send: &NewOutbound<'_>,
        media: &NewMedia<'_>,
    ) -> Result<Accepted> {
        self.accept_in_transaction(tenant, sender_id, send, send.idempotency_key, Some(media))
            .await
    }

    /// The file of the message in row `message_row`.
    pub async fn media_of_row(&self, message_row: i64) -> Result<Option<MediaRow>> {
        Ok(sqlx::query_as(&media_of_row_sql())
            .bind(message_row)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The files of the messages in rows `message_rows`, by row.
    pub async fn media_of_rows(
        &self,
        message_rows: &[i64],
    ) -> Result<std::collections::HashMap<i64, MediaRow>> {
        let mut found = std::collections::HashMap::new();
        for chunk in message_rows.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {MEDIA_COLUMNS} FROM media WHERE message_row IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as::<_, MediaRow>(&sql);
            for row in chunk {
                query = query.bind(*row);
            }
            for media in query.fetch_all(&self.pool).await? {
                found.insert(media.message_row, media);
            }
        }
        Ok(found)
    }

    /// Marks the files of `tenant`'s outbound messages `message_ids` that
    /// WhatsApp acknowledged as released, and returns the storage keys they
    /// were kept under, for the caller to delete. A file is forgotten
    /// before it is deleted: a crash in between leaves a file no row names,
    /// never a row that names a missing file.
    pub async fn release_sent_media(
        &self,
        tenant: &TenantId,
        message_ids: &[&str],
    ) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut tx = self.begin_write().await?;
        for message_id in message_ids {
            let kept: Option<(i64, String)> = sqlx::query_as(SENT_FILE)
                .bind(tenant.as_str())
                .bind(*message_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((row, key)) = kept else { continue };
            sqlx::query(
                "UPDATE media SET state = 'released', storage_key = NULL WHERE message_row = $1",
            )
            .bind(row)
            .execute(&mut *tx)
            .await?;
            keys.push(key);
        }
        tx.commit().await?;
        Ok(keys)
    }

    /// Takes at most `limit` of the oldest kept files made before
    /// `before_ms` off their rows (`expired`, the message kept) and returns
    /// their storage keys, for the caller to delete. On Postgres, rows
    /// another node is expiring at the same time are skipped, not waited
    /// for.
    pub async fn expire_media(&self, before_ms: i64, limit: i64) -> Result<Vec<String>> {
        let mut tx = self.begin_write().await?;
        let old: Vec<(i64, String)> = sqlx::query_as(&kept_longest_sql(self.kind()))
            .bind(before_ms)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if old.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=old.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE media SET state = 'expired', storage_key = NULL WHERE message_row IN ({})",
            placeholders.join(", ")
        );
        let mut update = sqlx::query(&sql);
        for (row, _) in &old {
            update = update.bind(*row);
        }
        update.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(old.into_iter().map(|(_, key)| key).collect())
    }

    /// Records that a file is gone for good (`failed`, with why), so that
    /// its send fails instead of going on trying.
    pub async fn media_lost(&self, message_row: i64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE media SET state = 'failed', storage_key = NULL, error = $2
              WHERE message_row = $1",
        )
        .bind(message_row)
        .bind(error)
        .execute(self.writer())
        .await?;
        Ok(())
    }
}

/// One message's file (the send queue's read before an upload).
pub(super) fn media_of_row_sql() -> String {
    format!("SELECT {MEDIA_COLUMNS} FROM media WHERE message_row = $1")
}

/// The kept file of a send WhatsApp answered (released after its ack).
pub(super) const SENT_FILE: &str = "
    SELECT md.message_row, md.storage_key
      FROM messages m JOIN media md ON md.message_row = m.id
     WHERE m.tenant_id = $1 AND m.direction = 'out' AND m.message_id = $2
       AND m.status <> 'queued' AND md.storage_key IS NOT NULL";

/// The oldest kept files made before `$1`, at most `$2` (retention), through
/// `media_kept_by_time`; locked on Postgres, skipping rows another node holds.
pub(super) fn kept_longest_sql(kind: super::DbKind) -> String {
    let lock = match kind {
        super::DbKind::Postgres => " FOR UPDATE SKIP LOCKED",
        super::DbKind::Sqlite => "",
    };
    format!(
        "SELECT message_row, storage_key FROM media
          WHERE storage_key IS NOT NULL AND created_at < $1
          ORDER BY created_at LIMIT $2{lock}"
    )
}
