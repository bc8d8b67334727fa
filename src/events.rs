//! Tenant events: the one type every sink consumes.
//!
//! An event is written to the webhook outbox in the same transaction as
//! the fact it reports (see `store::webhooks::enqueue_event`); later sinks
//! (event streams, NATS) will read the same type. This module only knows
//! how an event looks on the wire.

use crate::sessions::SessionState;
use crate::store::messages::MessageStatus;
use serde_json::{Map, Value, json};

use crate::store::rfc3339;
use crate::tenants::TenantId;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    MessageReceived {
        message_id: String,
        chat_id: String,
        sender_id: String,
        text: Option<String>,
        kind: String,
        /// When WhatsApp says the message was sent, unix ms.
        timestamp_ms: i64,
        /// Anything else about the message, by kind.
        data: Map<String, Value>,
    },
    MessageStatus {
        message_id: String,
        chat_id: String,
        status: MessageStatus,
        previous_status: Option<MessageStatus>,
        error: Option<String>,
    },
    SessionStatus {
        state: SessionState,
        previous_state: Option<SessionState>,
        jid: Option<String>,
        reason: Option<String>,
    },
}

/// Every event name, for validating subscriptions.
pub const EVENT_NAMES: [&str; 3] = ["message.received", "message.status", "session.status"];

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::MessageReceived { .. } => EVENT_NAMES[0],
            Event::MessageStatus { .. } => EVENT_NAMES[1],
            Event::SessionStatus { .. } => EVENT_NAMES[2],
        }
    }

    /// The JSON body sent to the tenant's webhook. The legacy fields of a
    /// received message stay at the top level, as the old server sent them.
    pub fn body(&self, tenant: &TenantId, sequence: i64, now_ms: i64) -> Value {
        let mut body = json!({
            "event": self.name(),
            "tenant": tenant.as_str(),
            "sequence": sequence,
            "timestamp": rfc3339(now_ms),
        });
        let fields = match self {
            Event::MessageReceived {
                message_id,
                chat_id,
                sender_id,
                text,
                kind,
                timestamp_ms,
                data,
            } => json!({
                "message_id": message_id,
                "chat_id": chat_id,
                "sender_id": sender_id,
                "text": text.as_deref().unwrap_or_default(),
                "kind": kind,
                "timestamp": rfc3339(*timestamp_ms),
                "data": data,
            }),
            Event::MessageStatus {
                message_id,
                chat_id,
                status,
                previous_status,
                error,
            } => json!({
                "message_id": message_id,
                "chat_id": chat_id,
                "status": status,
                "previous_status": previous_status,
                "error": error,
            }),
            Event::SessionStatus {
                state,
                previous_state,
                jid,
                reason,
            } => json!({
                "state": state,
                "previous_state": previous_state,
                "jid": jid,
                "reason": reason,
            }),
        };
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        body
    }
}
