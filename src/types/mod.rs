//! The small shared types that the configuration, the store, events and
//! sessions all speak of. This module imports none of them, so they can
//! all import it without importing each other.

mod dsn;
mod text_enum;

pub use dsn::Dsn;

crate::text_enum! {
    /// Where a session is in its life.
    pub enum SessionState {
        /// No device is linked; nothing runs.
        Unpaired = "unpaired",
        /// The client shows QR codes (or waits for a pair code).
        Pairing = "pairing",
        /// Linked; connecting or logging in.
        Connecting = "connecting",
        Connected = "connected",
        /// Linked, but the connection is down (the client reconnects by
        /// itself, or another node takes the session over).
        Disconnected = "disconnected",
        /// The device was unlinked; it waits for a new pairing.
        LoggedOut = "logged_out",
    }
}

impl SessionState {
    /// A device is linked to a number in this state.
    pub fn is_paired(self) -> bool {
        matches!(
            self,
            SessionState::Connecting | SessionState::Connected | SessionState::Disconnected
        )
    }
}

/// How fast one number may send: `per_minute` on average, up to `burst`
/// at once. `per_minute == 0` turns pacing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendPace {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for SendPace {
    /// One message a second on average, ten at once: well above what an
    /// OTP or notification service needs, well below a bulk sender.
    fn default() -> Self {
        SendPace {
            per_minute: 60,
            burst: 10,
        }
    }
}

crate::text_enum! {
    /// Where a message is. Outbound: `queued`, then `sent`, `delivered`,
    /// `read` (a receipt may skip steps), or `failed`. Inbound: `received`.
    pub enum MessageStatus {
        Queued = "queued",
        Sent = "sent",
        Delivered = "delivered",
        Read = "read",
        Failed = "failed",
        Received = "received",
    }
}

impl MessageStatus {
    /// Outbound statuses in the order they may move; `failed` only follows
    /// `queued` (refused by the server, never acknowledged).
    const OUTBOUND: [MessageStatus; 5] = [
        MessageStatus::Queued,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ];

    fn rank(self) -> Option<usize> {
        Self::OUTBOUND.iter().position(|s| *s == self)
    }

    /// The statuses a move from `self` to `to` passes through, in order
    /// (empty when it would not move forward).
    pub fn steps_to(self, to: MessageStatus) -> Vec<MessageStatus> {
        use MessageStatus::*;
        match (self, to) {
            // A send that never went out: the server refused it, or its
            // recipient cannot be one. Once the server acknowledged a send
            // it is never reported failed: a client that retried it would
            // send it twice.
            (Queued, Failed) => vec![Failed],
            (_, Failed) | (Failed, _) => Vec::new(),
            // A receipt can overtake the send's own result: the statuses it
            // skipped are reported too, so a webhook sees every step.
            (from, to) => match (from.rank(), to.rank()) {
                (Some(from), Some(to)) if from < to => Self::OUTBOUND[from + 1..=to].to_vec(),
                _ => Vec::new(),
            },
        }
    }
}

/// Current time as unix milliseconds, the unit every time column uses.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix milliseconds as an RFC 3339 UTC time, the API's time format.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            let t = t.replace_nanosecond(0).ok()?;
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
