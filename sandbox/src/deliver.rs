//! Delivery to devices. A stanza for a device goes into that device's
//! outbox, where it stays until what settles it arrives (the device's
//! receipt for a message, its ack for a forwarded receipt); the device's
//! connection, if it has one, is nudged to send what it has not sent yet.
//! A device that is offline gets its outbox at its next login, before the
//! `<ib><offline>` marker; one whose connection died before it answered
//! gets the same stanzas again.
//!
//! `Routes` remembers which device sent each message, so that receipts for
//! it find their way back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rand::RngExt as _;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use super::accounts::{Account, Kind, Resend};
use super::jid::{DeviceAddr, lid_jid, pn_jid};
use super::online::Command;
use super::phone::Sealed;
use super::server::Shared;

/// Message ids remembered for routing receipts; the oldest are forgotten.
const MAX_ROUTES: usize = 200_000;

/// Queues `node` (id `id`) for a companion; false if there is no such
/// device.
pub(crate) fn queue(
    shared: &Shared,
    account: &Account,
    device: u16,
    kind: Kind,
    id: String,
    node: Node,
    resend: Option<Arc<Resend>>,
) -> bool {
    let queued = match account.lock().devices.get_mut(&device) {
        Some(d) => {
            d.outbox.push(id, kind, node, resend);
            true
        }
        None => false,
    };
    if queued {
        shared
            .online
            .send(DeviceAddr::new(account.phone, device), Command::Flush);
        shared.state_changed();
    }
    queued
}

/// Queues an encrypted message from the account's phone to one of its
/// companions (a "peer" message, as the phone's own protocol traffic is).
pub(crate) fn from_phone(
    shared: &Shared,
    account: &Account,
    device: u16,
    sealed: Sealed,
    plaintext: Vec<u8>,
) {
    let id = message_id();
    shared.routes.record(&id, DeviceAddr::new(account.phone, 0));
    let resend = Arc::new(Resend {
        from: account.phone,
        plaintext,
    });
    let node = NodeBuilder::new("message")
        .attr("from", pn_jid(account.phone, 0))
        .attr("id", id.as_str())
        .attr("type", "text")
        .attr("category", "peer")
        .attr("t", shared.now().to_string())
        .children([enc_node(sealed, None)])
        .build();
    if !queue(
        shared,
        account,
        device,
        Kind::Message,
        id,
        node,
        Some(resend),
    ) {
        tracing::debug!(device, "companion gone before the phone's message");
    }
}

/// A phone's text to a device of another account, as that device gets it.
pub(crate) fn phone_text(shared: &Shared, from: &Account, id: &str, sealed: Sealed) -> Node {
    NodeBuilder::new("message")
        .attr("from", pn_jid(from.phone, 0))
        .attr("id", id)
        .attr("type", "text")
        .attr("t", shared.now().to_string())
        .attr("sender_lid", lid_jid(from.lid, 0))
        .attr("notify", from.phone.to_string())
        .children([enc_node(sealed, None)])
        .build()
}

/// `<enc v="2" type=..>`, with the retry count on a resend.
pub(crate) fn enc_node(sealed: Sealed, count: Option<&str>) -> Node {
    let mut enc = NodeBuilder::new("enc")
        .attr("v", "2")
        .attr("type", sealed.enc_type);
    if let Some(count) = count {
        enc = enc.attr("count", count);
    }
    enc.bytes(sealed.ciphertext).build()
}

/// A receipt from `from` about message `id`, for the device that sent it;
/// `kind` is the receipt's `type` (none for delivery).
pub(crate) fn receipt(shared: &Shared, from: Jid, id: &str, kind: Option<&str>) -> Node {
    let mut node = NodeBuilder::new("receipt")
        .attr("from", from)
        .attr("id", id)
        .attr("t", shared.now().to_string());
    if let Some(kind) = kind {
        node = node.attr("type", kind);
    }
    node.build()
}

/// Tells the account's companions (all but `device` itself) that `device`
/// was linked (`"add"`) or removed (`"remove"`), with the account's new
/// signed key-index list, so they encrypt for the account's current devices.
pub(crate) fn devices_changed(
    shared: &Shared,
    account: &Account,
    change: &'static str,
    device: u16,
) {
    let (others, key_index, indexes, at) = {
        let state = account.lock();
        let others: Vec<u16> = state
            .devices
            .keys()
            .copied()
            .filter(|d| *d != device)
            .collect();
        let key_index = state.devices.get(&device).map(|d| d.key_index);
        (
            others,
            key_index,
            state.key_indexes(),
            state.devices_changed_at,
        )
    };
    let signed = match account.sim.key_index_list(&indexes, at) {
        Ok(signed) => signed,
        Err(e) => return tracing::warn!(error = %e, "could not sign the key-index list"),
    };
    let mut changed = NodeBuilder::new("device").attr("jid", pn_jid(account.phone, device));
    if let Some(key_index) = key_index {
        changed = changed.attr("key-index", key_index.to_string());
    }
    let list = NodeBuilder::new("key-index-list")
        .attr("ts", at.to_string())
        .bytes(signed)
        .build();
    let body = NodeBuilder::new(change)
        .children([changed.build(), list])
        .build();
    for other in others {
        let id = message_id();
        let node = NodeBuilder::new("notification")
            .attr("from", pn_jid(account.phone, 0))
            .attr("lid", lid_jid(account.lid, 0))
            .attr("id", id.as_str())
            .attr("t", shared.now().to_string())
            .attr("type", "devices")
            .children([body.clone()])
            .build();
        queue(shared, account, other, Kind::Acked, id, node, None);
    }
}

/// A message id in WhatsApp's shape: `3EB0` and 16 upper-case hex digits.
pub(crate) fn message_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    format!("3EB0{}", hex::encode_upper(bytes))
}

/// Which device sent each recent message.
#[derive(Default)]
pub(crate) struct Routes {
    inner: Mutex<RoutesInner>,
}

#[derive(Default)]
struct RoutesInner {
    by_id: HashMap<String, DeviceAddr>,
    order: VecDeque<String>,
}

impl Routes {
    pub fn record(&self, id: &str, sender: DeviceAddr) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.by_id.insert(id.to_owned(), sender).is_none() {
            inner.order.push_back(id.to_owned());
        }
        while inner.order.len() > MAX_ROUTES {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    pub fn sender(&self, id: &str) -> Option<DeviceAddr> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_id.get(id).copied()
    }
}
