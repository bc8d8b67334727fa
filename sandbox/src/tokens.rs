//! Privacy tokens (trusted-contact tokens) and restricted accounts.
//!
//! A client issues a token to a contact (`<iq xmlns="privacy"
//! type="set"><tokens><token jid type="trusted_contact"/>`); the server
//! mints the token's bytes, answers the issuer with them and sends the
//! holder a `privacy_token` notification, which its devices keep. A
//! restricted account (see `mock`) refuses a message from another
//! account with `<ack error="463">` unless the message carries a
//! `<tctoken>` that the restricted account issued to the sender (and its
//! behaviour accepts trusted-contact tokens), or a `<cstoken>`: the HMAC
//! of its LID under the sender's NCT salt (see `seed`), where contact-secret
//! tokens are accepted. A restricted account shows its presence and its
//! picture only to holders of a token it issued.
//!
//! Tokens live in memory only: after a restart they must be issued again.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::RngExt as _;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::accounts::{Account, Kind, Phone};
use super::conn::{attr, bytes};
use super::deliver::{self, message_id};
use super::jid::{UserRef, lid_jid, pn_jid};
use super::server::Shared;

/// Token bytes by (issuer, holder).
#[derive(Default)]
pub(crate) struct Tokens {
    issued: Mutex<HashMap<(Phone, Phone), Vec<u8>>>,
}

impl Tokens {
    fn issued(&self) -> std::sync::MutexGuard<'_, HashMap<(Phone, Phone), Vec<u8>>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `<tokens><token jid t type="trusted_contact"/>..</tokens>` from a
/// device of `issuer`: one token per contact, told to the contact. Returns
/// the answer's `<tokens>` with the bytes.
pub(crate) fn issue(shared: &Shared, issuer: &Account, iq: &Node) -> Node {
    let asked = iq
        .get_optional_child("tokens")
        .map(|t| t.get_children_by_tag("token").collect::<Vec<_>>())
        .unwrap_or_default();
    let mut answered = Vec::new();
    for token in asked {
        let Some(jid) = token.attrs.get("jid").and_then(|v| v.to_jid()) else {
            continue;
        };
        let holder = UserRef::from_jid(&jid).and_then(|u| shared.directory.resolve(u));
        let Some(holder) = holder else {
            continue;
        };
        let t = attr(token, "t").unwrap_or_else(|| shared.now().to_string());
        let minted = rand::rng().random::<[u8; 24]>().to_vec();
        shared
            .tokens
            .issued()
            .insert((issuer.phone, holder.phone), minted.clone());
        notify(shared, issuer, &holder, &t, &minted);
        answered.push(
            NodeBuilder::new("token")
                .attr("jid", jid)
                .attr("t", t)
                .attr("type", "trusted_contact")
                .bytes(minted)
                .build(),
        );
    }
    NodeBuilder::new("tokens").children(answered).build()
}

/// The holder's devices get the token; it waits for offline ones.
fn notify(shared: &Shared, issuer: &Account, holder: &Account, t: &str, token: &[u8]) {
    let body = NodeBuilder::new("tokens")
        .children([NodeBuilder::new("token")
            .attr("t", t)
            .attr("type", "trusted_contact")
            .bytes(token.to_vec())
            .build()])
        .build();
    let devices: Vec<u16> = holder.lock().devices.keys().copied().collect();
    for device in devices {
        let id = message_id();
        let node = NodeBuilder::new("notification")
            .attr("from", pn_jid(issuer.phone, 0))
            .attr("sender_lid", lid_jid(issuer.lid, 0))
            .attr("type", "privacy_token")
            .attr("id", id.as_str())
            .attr("t", shared.now().to_string())
            .children([body.clone()])
            .build();
        deliver::queue(shared, holder, device, Kind::Acked, id, node, None);
    }
}

/// Whether `recipient` takes this message from `sender`: always, unless
/// it is restricted and the message carries neither a trusted-contact
/// token it issued to the sender nor the sender's contact-secret token for
/// it (each only where the account's behaviour accepts that kind).
pub(crate) fn admits(shared: &Shared, sender: &Account, recipient: &Account, node: &Node) -> bool {
    let behaviour = recipient.lock().behaviour;
    if !behaviour.restricted || sender.phone == recipient.phone {
        return true;
    }
    let tctoken = node.get_optional_child("tctoken").and_then(bytes);
    let cstoken = node.get_optional_child("cstoken").and_then(bytes);
    (behaviour.tc_enabled && trusted(shared, recipient, sender, tctoken))
        || (behaviour.cs_enabled && contact_secret(sender, recipient, cstoken))
}

/// Whether `viewer` may see what a restricted `owner` shows only to its
/// contacts (its presence, its picture): it must present a trusted-contact
/// token `owner` issued to it, found anywhere in `request`.
pub(crate) fn may_see(shared: &Shared, viewer: &Account, owner: &Account, request: &Node) -> bool {
    let behaviour = owner.lock().behaviour;
    if !behaviour.restricted || viewer.phone == owner.phone {
        return true;
    }
    behaviour.tc_enabled && trusted(shared, owner, viewer, find_tctoken(request))
}

fn find_tctoken(node: &Node) -> Option<&[u8]> {
    if node.tag == "tctoken" {
        return bytes(node);
    }
    node.children()?.iter().find_map(find_tctoken)
}

/// `carried` is the token `issuer` gave `holder`.
fn trusted(shared: &Shared, issuer: &Account, holder: &Account, carried: Option<&[u8]>) -> bool {
    let issued = shared.tokens.issued();
    let expected = issued.get(&(issuer.phone, holder.phone));
    matches!((carried, expected), (Some(c), Some(e)) if c == e.as_slice())
}

/// `carried` is HMAC-SHA256 of the recipient's LID (`LID@lid`) under the
/// sender's NCT salt, the salt its phone delivered to its companions.
fn contact_secret(sender: &Account, recipient: &Account, carried: Option<&[u8]>) -> bool {
    let Some(carried) = carried else {
        return false;
    };
    let Some(salt) = sender.lock().nct_salt().map(<[u8]>::to_vec) else {
        return false;
    };
    let expected = wacore::iq::tctoken::compute_cs_token(&salt, &format!("{}@lid", recipient.lid));
    carried == expected.as_slice()
}
