//! `usync` queries: device lists (with the account's signed key-index list,
//! without which the client skips every user with companions), LIDs and
//! "is this number on WhatsApp". Users are answered as asked: a user asked
//! by LID comes back by LID, with its phone number in `pn_jid`.

use base64::Engine as _;
use sha2::Digest as _;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use super::{Answer, Asker, IqError};
use crate::accounts::Account;
use crate::conn::attr;
use crate::jid::{UserRef, lid_jid, pn_jid};

pub(super) fn answer(asker: &Asker<'_>, iq: &Node) -> Answer {
    let usync = iq
        .get_optional_child("usync")
        .ok_or(IqError::BadRequest("usync"))?;
    let protocols: Vec<String> = usync
        .get_optional_child("query")
        .and_then(|q| q.children())
        .map(|c| c.iter().map(|p| p.tag.to_string()).collect())
        .unwrap_or_default();
    let users = usync
        .get_optional_child("list")
        .map(|l| l.get_children_by_tag("user").collect::<Vec<_>>())
        .unwrap_or_default();
    let answered = users
        .into_iter()
        .filter_map(|user| answer_user(asker, user, &protocols));
    let mut head = NodeBuilder::new("usync");
    for key in ["sid", "mode", "context"] {
        if let Some(value) = attr(usync, key) {
            head = head.attr(key, value);
        }
    }
    let list = NodeBuilder::new("list").children(answered).build();
    Ok(vec![
        head.attr("index", "0")
            .attr("last", "true")
            .children([list])
            .build(),
    ])
}

/// The asked user: by `jid`, or by phone number in `<contact>`.
fn asked_jid(user: &Node) -> Option<Jid> {
    if let Some(jid) = user.attrs.get("jid").and_then(|v| v.to_jid()) {
        return Some(jid.to_non_ad());
    }
    let contact = user.get_optional_child("contact")?.content_as_string()?;
    let digits = contact.trim_start_matches('+');
    Some(Jid::pn(digits))
}

fn answer_user(asker: &Asker<'_>, user: &Node, protocols: &[String]) -> Option<Node> {
    let jid = asked_jid(user)?;
    let user_ref = UserRef::from_jid(&jid);
    let account = user_ref.and_then(|u| asker.shared.directory.resolve(u));
    let by_lid = matches!(user_ref, Some(UserRef::Lid(..)));
    let mut node = NodeBuilder::new("user").attr("jid", jid);
    if let (true, Some(account)) = (by_lid, &account) {
        node = node.attr("pn_jid", pn_jid(account.phone, 0));
    }
    let results = protocols
        .iter()
        .filter_map(|p| protocol_result(p, account.as_deref(), by_lid));
    Some(node.children(results).build())
}

fn protocol_result(protocol: &str, account: Option<&Account>, by_lid: bool) -> Option<Node> {
    match (protocol, account) {
        ("devices", Some(account)) => devices(account),
        ("devices", None) => Some(
            NodeBuilder::new("devices")
                .children([NodeBuilder::new("error")
                    .attr("code", "404")
                    .attr("text", "not-found")
                    .build()])
                .build(),
        ),
        ("lid", Some(account)) if !by_lid => Some(
            NodeBuilder::new("lid")
                .attr("val", lid_jid(account.lid, 0))
                .build(),
        ),
        ("contact", found) => Some(
            NodeBuilder::new("contact")
                .attr("type", if found.is_some() { "in" } else { "out" })
                .build(),
        ),
        // status, picture, business and the rest: nothing to say.
        _ => None,
    }
}

/// `<devices><device-list/><key-index-list/></devices>` for one account.
fn devices(account: &Account) -> Option<Node> {
    let (ids, key_indexes, changed_at) = {
        let state = account.lock();
        let ids: Vec<(u16, u32)> = state
            .devices
            .values()
            .map(|d| (d.id, d.key_index))
            .collect();
        (ids, state.key_indexes(), state.devices_changed_at)
    };
    let signed = match account.sim.key_index_list(&key_indexes, changed_at) {
        Ok(signed) => signed,
        Err(e) => {
            tracing::warn!(error = %e, "could not sign the key-index list");
            return None;
        }
    };
    let phone = NodeBuilder::new("device").attr("id", "0").build();
    let companions = ids.iter().map(|(id, key_index)| {
        NodeBuilder::new("device")
            .attr("id", id.to_string())
            .attr("key-index", key_index.to_string())
            .build()
    });
    let list = NodeBuilder::new("device-list")
        .attr("hash", list_hash(&ids))
        .children(std::iter::once(phone).chain(companions))
        .build();
    let key_index_list = NodeBuilder::new("key-index-list")
        .attr("ts", changed_at.to_string())
        .bytes(signed)
        .build();
    Some(
        NodeBuilder::new("devices")
            .children([list, key_index_list])
            .build(),
    )
}

/// A short digest of the device ids, in the `2:...` shape WhatsApp uses.
fn list_hash(ids: &[(u16, u32)]) -> String {
    let mut hasher = sha2::Sha256::new();
    for (id, key_index) in ids {
        hasher.update(id.to_be_bytes());
        hasher.update(key_index.to_be_bytes());
    }
    let digest = hasher.finalize();
    format!(
        "2:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..6])
    )
}
