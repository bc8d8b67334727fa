//! The mock-server contract of the client library's own end-to-end suite
//! (SANDBOX.md, "The fidelity target"), beside our control API.
//!
//! `POST /admin/mock-phone/scan-qr` takes the QR string a companion shows,
//! as the raw body. There is no phone number in it: the account is the one
//! that stands for the companion's push name (from its pairing payload).
//! The same push name is the same number, so a second client with it
//! becomes the account's next device; a new push name (or none) is a new
//! account with a fresh number. The push name also carries the account's
//! server behaviours:
//!
//! - `restricted:<name>`: strangers need a privacy token to write first;
//! - `scenario:<flag>,<flag>:<name>`, flags `restricted`, `tc_enabled=0|1`
//!   and `cs_enabled=0|1` (which kinds of token open the account), and the
//!   account's NCT experiments: `nct_send_ab`, `nct_history_ab` and
//!   `nct_syncd_ab` (`=0|1`, the A/B props its companions get) and
//!   `nct_history_delivery` and `nct_syncd_delivery` (whether its phone
//!   delivers the NCT salt by history sync, by app state).
//!
//! The phone of such an account receives but sends no delivery receipts:
//! there, an account's messages are confirmed by its companions only.
//! Nothing here looks at anything but those prefixes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::StringRejection;

use super::accounts::{Behaviour, DirectoryError};
use super::control::{ApiError, ErrorBody};
use super::pairing::{self, Linked};
use super::server::Shared;

/// Links the companion showing a QR code to its push name's account.
///
/// The mock-server contract of `whatsapp-rust`'s own end-to-end suite. The
/// same push name is the same number (the next device id for each further
/// companion); a new push name, or none, is a new account with a fresh
/// number. Push-name prefixes select the account's behaviours
/// (`restricted:<name>`, `scenario:<flag>,<flag>:<name>`). Answers once the
/// companion has accepted the pairing.
#[utoipa::path(
    post,
    path = "/admin/mock-phone/scan-qr",
    tag = "sandbox",
    request_body(
        content = String,
        content_type = "text/plain",
        description = "The QR string the companion shows, as the raw body (any content type is taken).",
    ),
    responses(
        (status = 200, description = "The companion is linked.", body = Linked),
        (status = 400, description = "The QR is malformed, or the body is not UTF-8 (`bad_request`).", body = ErrorBody),
        (status = 409, description = "No connected companion shows that QR, its keys do not match, the companion refused or went away, or the account has no device ids left (`conflict`).", body = ErrorBody),
        (status = 500, description = "No LID or number left for a new account (`internal`).", body = ErrorBody),
        (status = 504, description = "The companion did not answer within the pairing timeout (`timeout`).", body = ErrorBody),
    ),
)]
pub(crate) async fn scan_qr(
    State(shared): State<Arc<Shared>>,
    body: Result<String, StringRejection>,
) -> Result<Json<Linked>, ApiError> {
    let body = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(scan(&shared, &body).await?))
}

/// The scan itself, for the handler and for tests.
pub(crate) async fn scan(shared: &Shared, qr: &str) -> Result<Linked, ApiError> {
    let push_name = shared.desk.push_name_of(qr)?;
    let behaviour = behaviour_of(&push_name);
    let (account, new) = shared
        .directory
        .for_push_name(&push_name, behaviour, shared.now())
        .map_err(|e| match e {
            DirectoryError::Exists(_) | DirectoryError::NoLid | DirectoryError::NoNumber => {
                ApiError::Internal(e.to_string())
            }
        })?;
    if new {
        tracing::info!(phone = %account.phone, %push_name, ?behaviour, "account made for a push name");
        shared.state_changed();
    }
    Ok(pairing::link_account(shared, account, qr).await?)
}

/// The behaviours a push name selects. In that suite's world an account
/// is its companions: the phone only pairs them, so it confirms nothing
/// (a message's delivery receipt comes from a companion).
pub(crate) fn behaviour_of(push_name: &str) -> Behaviour {
    let mut behaviour = Behaviour {
        phone_online: false,
        ..Behaviour::default()
    };
    if push_name.starts_with("restricted:") {
        behaviour.restricted = true;
    } else if let Some(rest) = push_name.strip_prefix("scenario:") {
        let flags = rest.split_once(':').map_or("", |(flags, _)| flags);
        for flag in flags.split(',').filter(|f| !f.is_empty()) {
            if flag == "restricted" {
                behaviour.restricted = true;
                continue;
            }
            let switch = match flag.split_once('=') {
                Some((name, "1")) => Some((name, true)),
                Some((name, "0")) => Some((name, false)),
                _ => None,
            };
            let Some((name, on)) = switch else {
                tracing::warn!(flag, "unknown scenario flag, ignored");
                continue;
            };
            match name {
                "tc_enabled" => behaviour.tc_enabled = on,
                "cs_enabled" => behaviour.cs_enabled = on,
                "nct_send_ab" => behaviour.nct_send_ab = on,
                "nct_history_ab" => behaviour.nct_history_ab = on,
                "nct_syncd_ab" => behaviour.nct_syncd_ab = on,
                "nct_history_delivery" => behaviour.nct_history_delivery = on,
                "nct_syncd_delivery" => behaviour.nct_syncd_delivery = on,
                _ => tracing::warn!(flag, "unknown scenario flag, ignored"),
            }
        }
    }
    behaviour
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_names_select_behaviours() {
        let plain = behaviour_of("alice_1");
        assert!(!plain.restricted && plain.tc_enabled && plain.cs_enabled);
        assert!(!plain.phone_online);
        assert!(behaviour_of("restricted:alice").restricted);
        let b = behaviour_of("scenario:restricted,tc_enabled=0,cs_enabled=1:bob_2");
        assert!(b.restricted && !b.tc_enabled && b.cs_enabled);
        let b = behaviour_of("scenario:cs_enabled=0:carol");
        assert!(!b.restricted && b.tc_enabled && !b.cs_enabled);
        let b = behaviour_of(
            "scenario:nct_send_ab=1,nct_syncd_ab=1,nct_history_delivery=0,nct_syncd_delivery=1:dan",
        );
        assert!(b.nct_send_ab && b.nct_syncd_ab && !b.nct_history_ab);
        assert!(b.nct_syncd_delivery && !b.nct_history_delivery && b.delivers_nct_salt());
        assert!(!plain.delivers_nct_salt());
        // A name that merely contains a prefix selects nothing.
        assert_eq!(behaviour_of("not restricted:x"), plain);
    }
}
