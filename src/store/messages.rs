//! Messages, inbound and outbound, as the HTTP API reads them.

use serde::Serialize;

use super::{Result, Store};
use crate::tenants::TenantId;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InboundMessage {
    pub id: i64,
    pub message_id: String,
    pub chat_id: String,
    pub sender_id: String,
    pub text: Option<String>,
    pub kind: String,
    pub timestamp: i64,
}

/// A page of the persisted inbox, oldest first.
#[derive(Debug, Clone)]
pub struct InboxQuery<'a> {
    pub chat: Option<&'a str>,
    /// Only messages whose numeric id is greater than this.
    pub after: i64,
    pub limit: i64,
}

impl Store {
    pub async fn list_inbound(
        &self,
        tenant: &TenantId,
        query: &InboxQuery<'_>,
    ) -> Result<Vec<InboundMessage>> {
        // `$2 IS NULL` keeps one statement for both the filtered and the
        // unfiltered case; the CAST tells Postgres the parameter's type.
        Ok(sqlx::query_as(
            "SELECT id, message_id, chat_id, sender_id, text, kind, timestamp
             FROM messages
             WHERE tenant_id = $1 AND direction = 'in'
               AND (CAST($2 AS TEXT) IS NULL OR chat_id = $2)
               AND id > $3
             ORDER BY id
             LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(query.chat)
        .bind(query.after)
        .bind(query.limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
