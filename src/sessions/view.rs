//! A session's status: as its task publishes it on this node, and as
//! every node reports it from the status row.

use serde::Serialize;

use crate::store::cluster::StoredStatus;
use crate::store::now_ms;
use crate::types::SessionState;

/// What a session task publishes on this node.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub state: SessionState,
    /// The linked device, e.g. `62811...:3@s.whatsapp.net`.
    pub jid: Option<String>,
    pub push_name: Option<String>,
    /// The QR code on show while pairing.
    pub qr: Option<Qr>,
    /// Why the session is not connected, when there is a reason to tell.
    pub error: Option<String>,
    /// The task has read the session's device, so `state` says whether it
    /// is paired (until then it is only a guess).
    pub loaded: bool,
}

impl SessionStatus {
    pub(super) fn new(state: SessionState) -> Self {
        SessionStatus {
            state,
            jid: None,
            push_name: None,
            qr: None,
            error: None,
            loaded: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qr {
    pub code: String,
    /// When the code stops being valid (unix ms).
    pub expires_at_ms: i64,
}

impl Qr {
    pub(super) fn fresh(&self) -> bool {
        self.expires_at_ms > now_ms()
    }
}

/// The session as every node reports it (`GET /session`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub state: SessionState,
    /// The linked device's JID (`62811…:3@s.whatsapp.net`), once paired.
    pub jid: Option<String>,
    /// The account's push name, once known.
    pub push_name: Option<String>,
    /// Why the session last failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the session entered `state` (RFC 3339), if it ever ran.
    pub since: Option<String>,
    /// The node that runs the session, if one does.
    pub node: Option<String>,
    #[serde(skip)]
    pub qr: Option<Qr>,
}

impl SessionView {
    pub fn unpaired() -> Self {
        SessionView {
            state: SessionState::Unpaired,
            jid: None,
            push_name: None,
            error: None,
            since: None,
            node: None,
            qr: None,
        }
    }

    /// What the stored row means now. A row whose owner no longer holds
    /// the lease describes a session nobody runs at the moment.
    pub fn of(stored: StoredStatus) -> Self {
        let f = stored.fields;
        let mut view = SessionView {
            state: stored.state,
            jid: f.jid,
            push_name: f.push_name,
            error: f.error,
            since: Some(crate::store::rfc3339(stored.since)),
            node: stored.live_owner.as_ref().map(|n| n.as_str().to_owned()),
            qr: f.qr.zip(f.qr_expires_at).map(|(code, expires_at_ms)| Qr {
                code,
                expires_at_ms,
            }),
        };
        if stored.live_owner.is_none() {
            view.qr = None;
            match view.state {
                SessionState::Pairing => {
                    view.state = SessionState::Unpaired;
                    view.error = Some("pairing stopped; ask for a new QR code".into());
                }
                s if s.is_paired() => {
                    view.state = SessionState::Disconnected;
                    view.error = Some("no node runs the session now; one takes it over".into());
                }
                _ => {}
            }
        }
        view
    }
}
