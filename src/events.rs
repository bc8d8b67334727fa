//! Tenant events: the one type every sink consumes.
//!
//! An event is written to the webhook outbox in the same transaction as
//! the fact it reports (see `store::webhooks::enqueue_event`); later sinks
//! (event streams, NATS) will read the same type. This module only knows
//! how an event looks on the wire.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::tenants::TenantId;
use crate::types::{MessageStatus, SessionState, rfc3339};

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
    /// Asked for from the admin page or `POST /webhook/test`: delivered
    /// whatever the subscription, to try the endpoint.
    WebhookTest,
}

crate::text_enum! {
    /// The kinds of event a webhook can subscribe to.
    pub enum EventName {
        MessageReceived = "message.received",
        MessageStatus = "message.status",
        SessionStatus = "session.status",
    }
}

/// The body of a `message.received` event. Its message fields sit at the
/// top level, where the old server sent them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageReceivedEvent {
    /// `message.received`.
    pub event: EventName,
    /// The tenant's id.
    pub tenant: String,
    /// The tenant's event counter: deliveries go out in this order.
    pub sequence: i64,
    pub message_id: String,
    /// The chat's JID (`62812…@s.whatsapp.net`, or a `@lid` one).
    pub chat_id: String,
    pub sender_id: String,
    /// The text, or `""` for a message without one.
    pub text: String,
    /// What kind of message (`conversation`, `extendedTextMessage`, …).
    pub kind: String,
    /// When WhatsApp says the message was sent (RFC 3339).
    pub timestamp: String,
    /// Anything else about the message, by kind.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

/// The body of a `message.status` event: a sent message moved on.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageStatusEvent {
    /// `message.status`.
    pub event: EventName,
    pub tenant: String,
    pub sequence: i64,
    /// When the event was written (RFC 3339).
    pub timestamp: String,
    pub message_id: String,
    pub chat_id: String,
    pub status: MessageStatus,
    pub previous_status: Option<MessageStatus>,
    /// Why, for `failed`.
    pub error: Option<String>,
}

crate::text_enum! {
    /// The name of a test event.
    pub enum TestEventName {
        WebhookTest = "webhook.test",
    }
}

/// The body of a `webhook.test` event: it only tries the endpoint, and is
/// signed, retried and listed like any other.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookTestEvent {
    /// `webhook.test`.
    pub event: TestEventName,
    pub tenant: String,
    pub sequence: i64,
    /// When the event was written (RFC 3339).
    pub timestamp: String,
}

/// The body of a `session.status` event: the session entered a state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionStatusEvent {
    /// `session.status`.
    pub event: EventName,
    pub tenant: String,
    pub sequence: i64,
    /// When the event was written (RFC 3339).
    pub timestamp: String,
    pub state: SessionState,
    pub previous_state: Option<SessionState>,
    /// The linked device's JID, once paired.
    pub jid: Option<String>,
    /// Why, when the state was forced (a logout, an error).
    pub reason: Option<String>,
}

/// Every event name, for validating subscriptions.
pub const EVENT_NAMES: [&str; 3] = ["message.received", "message.status", "session.status"];

impl Event {
    pub fn name(&self) -> &'static str {
        match self.kind() {
            Some(kind) => kind.as_str(),
            None => TestEventName::WebhookTest.as_str(),
        }
    }

    /// The kind a webhook subscribes to; `None` for the test event, which
    /// goes whatever the subscription.
    pub fn kind(&self) -> Option<EventName> {
        match self {
            Event::MessageReceived { .. } => Some(EventName::MessageReceived),
            Event::MessageStatus { .. } => Some(EventName::MessageStatus),
            Event::SessionStatus { .. } => Some(EventName::SessionStatus),
            Event::WebhookTest => None,
        }
    }

    /// The JSON body sent to the tenant's webhook.
    pub fn body(&self, tenant: &TenantId, sequence: i64, now_ms: i64) -> Value {
        let Some(event) = self.kind() else {
            return serde_json::to_value(WebhookTestEvent {
                event: TestEventName::WebhookTest,
                tenant: tenant.as_str().to_owned(),
                sequence,
                timestamp: rfc3339(now_ms),
            })
            .expect("event bodies are plain data");
        };
        let tenant = tenant.as_str().to_owned();
        let body = match self.clone() {
            Event::MessageReceived {
                message_id,
                chat_id,
                sender_id,
                text,
                kind,
                timestamp_ms,
                data,
            } => serde_json::to_value(MessageReceivedEvent {
                event,
                tenant,
                sequence,
                message_id,
                chat_id,
                sender_id,
                text: text.unwrap_or_default(),
                kind,
                timestamp: rfc3339(timestamp_ms),
                data,
            }),
            Event::MessageStatus {
                message_id,
                chat_id,
                status,
                previous_status,
                error,
            } => serde_json::to_value(MessageStatusEvent {
                event,
                tenant,
                sequence,
                timestamp: rfc3339(now_ms),
                message_id,
                chat_id,
                status,
                previous_status,
                error,
            }),
            Event::SessionStatus {
                state,
                previous_state,
                jid,
                reason,
            } => serde_json::to_value(SessionStatusEvent {
                event,
                tenant,
                sequence,
                timestamp: rfc3339(now_ms),
                state,
                previous_state,
                jid,
                reason,
            }),
            Event::WebhookTest => unreachable!("answered above"),
        };
        body.expect("event bodies are plain data")
    }
}
