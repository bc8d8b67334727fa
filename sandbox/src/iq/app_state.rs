//! App state (`w:sync:app:state`): the server keeps each account's
//! collections as the ordered list of patches its devices uploaded. The
//! patches are encrypted with the account's app-state key (which the phone
//! shared with every companion), so the server never reads them; it only
//! numbers them. A device asks for a collection from its version and gets
//! every later patch; a device uploads a patch built on the collection's
//! current version (any other version is a `409` conflict), and the
//! account's other devices get a `server_sync` notification to fetch it.

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::Asker;
use crate::accounts::Kind;
use crate::conn::{attr, bytes};
use crate::deliver::{self, message_id};
use crate::jid::server_jid;

/// The `<sync>` answer: one `<collection>` per asked collection.
pub(super) fn sync(asker: &Asker<'_>, iq: &Node) -> Node {
    let asked = iq
        .get_optional_child("sync")
        .map(|s| s.get_children_by_tag("collection").collect::<Vec<_>>())
        .unwrap_or_default();
    let answers = asked.into_iter().filter_map(|c| {
        let name = attr(c, "name")?;
        let version = attr(c, "version").and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(match c.get_optional_child("patch").and_then(bytes) {
            Some(patch) => upload(asker, &name, version, patch),
            None => fetch(asker, &name, version),
        })
    });
    NodeBuilder::new("sync").children(answers).build()
}

/// Every patch after `from`, with the collection's current version.
fn fetch(asker: &Asker<'_>, name: &str, from: u64) -> Node {
    let state = asker.account.lock();
    let stored = state.app_state.get(name).map(Vec::as_slice).unwrap_or(&[]);
    let later: Vec<Node> = stored
        .iter()
        .skip(usize::try_from(from).unwrap_or(usize::MAX))
        .map(|p| NodeBuilder::new("patch").bytes(p.0.clone()).build())
        .collect();
    let mut node = NodeBuilder::new("collection")
        .attr("name", name)
        .attr("version", stored.len().to_string());
    if !later.is_empty() {
        node = node.children([NodeBuilder::new("patches").children(later).build()]);
    }
    node.build()
}

/// A patch built on version `base`: numbered `base + 1` and kept, or a
/// conflict when the collection has moved on.
fn upload(asker: &Asker<'_>, name: &str, base: u64, patch: &[u8]) -> Node {
    let mut decoded = match waproto::codec::syncd_patch_decode(patch) {
        Ok(decoded) => decoded,
        Err(_) => return collection_error(name, "400", "bad-request"),
    };
    let version = {
        let mut state = asker.account.lock();
        let stored = state.app_state.entry(name.to_owned()).or_default();
        if stored.len() as u64 != base {
            return collection_error(name, "409", "conflict");
        }
        decoded.version = buffa::MessageField::some(waproto::whatsapp::SyncdVersion {
            version: Some(base + 1),
        });
        stored.push(crate::accounts::Patch(waproto::codec::syncd_patch_to_vec(
            &decoded,
        )));
        base + 1
    };
    asker.shared.state_changed();
    tell_other_devices(asker, name, version);
    NodeBuilder::new("collection")
        .attr("name", name)
        .attr("version", version.to_string())
        .build()
}

fn collection_error(name: &str, code: &str, text: &str) -> Node {
    NodeBuilder::new("collection")
        .attr("name", name)
        .attr("type", "error")
        .children([NodeBuilder::new("error")
            .attr("code", code)
            .attr("text", text)
            .build()])
        .build()
}

/// `<notification type="server_sync"><collection name version/>` for the
/// account's other companions (kept for the offline ones).
fn tell_other_devices(asker: &Asker<'_>, name: &str, version: u64) {
    let others: Vec<u16> = {
        let state = asker.account.lock();
        state
            .devices
            .keys()
            .copied()
            .filter(|d| *d != asker.device)
            .collect()
    };
    for device in others {
        let id = message_id();
        let node = NodeBuilder::new("notification")
            .attr("from", server_jid())
            .attr("type", "server_sync")
            .attr("id", id.as_str())
            .attr("t", asker.shared.now().to_string())
            .children([NodeBuilder::new("collection")
                .attr("name", name)
                .attr("version", version.to_string())
                .build()])
            .build();
        deliver::queue(
            asker.shared,
            asker.account,
            device,
            Kind::Acked,
            id,
            node,
            None,
        );
    }
}
