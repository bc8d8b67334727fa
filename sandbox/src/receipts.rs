//! Receipts from companions. Each is acked; a delivery (or read) receipt
//! takes the messages it names out of the device's own queue; then the
//! receipt goes on to the device that sent the message, found by message
//! id, with `from` set to the device that received it.
//!
//! A retry receipt (the device could not decrypt) settles nothing. For a
//! message from a simulated phone, the phone drops its session with that
//! device, starts a new one from the device's prekeys and sends the message
//! again; a companion's message gets the receipt forwarded, and the sending
//! client resends by itself.

use std::sync::Arc;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::accounts::{Account, Kind};
use super::conn::attr;
use super::deliver;
use super::jid::{DeviceAddr, UserRef, lid_jid, pn_jid, server_jid};
use super::messages::{queue_receipt, seal};
use super::server::Shared;

/// Handles a receipt from `device` of `account`; returns the server's ack.
pub(crate) async fn handle(
    shared: &Shared,
    account: &Arc<Account>,
    device: u16,
    node: &Node,
) -> Node {
    let kind = attr(node, "type");
    let is_retry = matches!(kind.as_deref(), Some("retry" | "enc_rekey_retry"));
    let ids = message_ids(node);
    let me = DeviceAddr::new(account.phone, device);
    if !is_retry {
        settle(account, device, &ids);
        shared.state_changed();
    }
    let sender = ids
        .first()
        .and_then(|id| shared.routes.sender(id))
        .or_else(|| addressed(shared, node));
    match (sender, ids.first()) {
        (Some(sender), Some(id)) if sender.device == 0 => {
            if kind.as_deref() == Some("retry") {
                resend(shared, account, device, id, node).await;
            }
        }
        (Some(sender), Some(id)) if sender != me => {
            // From the namespace the receipt was addressed in.
            let by_lid = node
                .attrs
                .get("to")
                .and_then(|v| v.to_jid())
                .is_some_and(|to| to.is_lid());
            let from = match by_lid {
                true => lid_jid(account.lid, me.device),
                false => pn_jid(me.phone, me.device),
            };
            let mut forwarded = node.clone();
            forwarded.attrs.0.retain(|(key, _)| key != "to");
            forwarded.attrs.insert("from", from);
            forwarded.attrs.insert("t", shared.now().to_string());
            queue_receipt(shared, sender, id, forwarded);
        }
        _ => tracing::debug!(?ids, "receipt for no known message"),
    }
    ack(node)
}

/// The receipt's `id` and those of its `<list><item id/>`.
fn message_ids(node: &Node) -> Vec<String> {
    let listed = node
        .get_optional_child("list")
        .map(|l| l.get_children_by_tag("item").collect::<Vec<_>>())
        .unwrap_or_default();
    attr(node, "id")
        .into_iter()
        .chain(listed.into_iter().filter_map(|i| attr(i, "id")))
        .collect()
}

/// The messages a receipt confirms leave the device's queue.
fn settle(account: &Account, device: u16, ids: &[String]) {
    let mut state = account.lock();
    if let Some(record) = state.devices.get_mut(&device) {
        for id in ids {
            record.outbox.take(id, Kind::Message);
        }
    }
}

/// The device a receipt names in `to`, for messages the sandbox no longer
/// remembers (a restart): only a companion, a device of its own.
fn addressed(shared: &Shared, node: &Node) -> Option<DeviceAddr> {
    let jid = node.attrs.get("to").and_then(|v| v.to_jid())?;
    let user = UserRef::from_jid(&jid)?;
    let account = shared.directory.resolve(user)?;
    (user.device() != 0).then(|| DeviceAddr::new(account.phone, user.device()))
}

/// A phone's message that a companion could not decrypt: a fresh session
/// from the companion's prekeys, and the message again, same id.
async fn resend(shared: &Shared, account: &Arc<Account>, device: u16, id: &str, retry: &Node) {
    let queued = {
        let state = account.lock();
        let record = state.devices.get(&device);
        record.and_then(|d| d.outbox.message(id).cloned())
    };
    let Some((queued, again)) = queued.and_then(|q| q.resend.clone().map(|r| (q, r))) else {
        tracing::debug!(id, "retry for a message the sandbox no longer holds");
        return;
    };
    let Some(sender) = shared.directory.get(again.from) else {
        return;
    };
    let count = retry
        .get_optional_child("retry")
        .and_then(|r| attr(r, "count"))
        .unwrap_or_else(|| "1".into());
    sender
        .sim
        .forget_session(DeviceAddr::new(account.phone, device))
        .await;
    let sealed = match seal(shared, &sender, account, device, &again.plaintext).await {
        Ok(sealed) => sealed,
        Err(e) => {
            tracing::warn!(id, error = %e, "could not encrypt the message again");
            return;
        }
    };
    let mut node = queued.node;
    node.content = Some(wacore_binary::NodeContent::Nodes(vec![deliver::enc_node(
        sealed,
        Some(&count),
    )]));
    tracing::debug!(id, device, "message sent again after a retry receipt");
    let id = id.to_owned();
    deliver::queue(
        shared,
        account,
        device,
        Kind::Message,
        id,
        node,
        Some(again),
    );
}

/// `<ack class="receipt" id from=<to> [type]>`.
fn ack(node: &Node) -> Node {
    let mut ack = NodeBuilder::new("ack")
        .attr("class", "receipt")
        .attr("id", attr(node, "id").unwrap_or_default());
    ack = match node.attrs.get("to") {
        Some(to) => ack.attr("from", to.clone()),
        None => ack.attr("from", server_jid()),
    };
    if let Some(kind) = attr(node, "type") {
        ack = ack.attr("type", kind);
    }
    ack.build()
}
