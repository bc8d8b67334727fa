//! Delivery to devices. A stanza for a device goes into that device's
//! outbox, where it stays until the device's receipt for it; the device's
//! connection, if it has one, is nudged to send what it has not sent yet.
//! A device that is offline gets its outbox at its next login, before the
//! `<ib><offline>` marker. (Message relay between devices builds on this.)

use rand::RngExt as _;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::accounts::Account;
use super::jid::{DeviceAddr, pn_jid};
use super::online::Command;
use super::phone::Sealed;
use super::server::Shared;

/// Queues `node` (message id `id`) for a companion; false if there is no
/// such device.
pub(crate) fn queue(
    shared: &Shared,
    account: &Account,
    device: u16,
    id: String,
    node: Node,
) -> bool {
    let queued = match account.lock().devices.get_mut(&device) {
        Some(d) => {
            d.outbox.push(id, node);
            true
        }
        None => false,
    };
    if queued {
        shared
            .online
            .send(DeviceAddr::new(account.phone, device), Command::Flush);
    }
    queued
}

/// Queues an encrypted message from the account's phone to one of its
/// companions (a "peer" message, as the phone's own protocol traffic is).
pub(crate) fn from_phone(
    shared: &Shared,
    account: &Account,
    device: u16,
    sealed: super::phone::Sealed,
) {
    let id = message_id();
    let node = peer_message(shared, account, &id, sealed);
    if !queue(shared, account, device, id, node) {
        tracing::debug!(device, "companion gone before the phone's message");
    }
}

fn peer_message(shared: &Shared, account: &Account, id: &str, sealed: Sealed) -> Node {
    NodeBuilder::new("message")
        .attr("from", pn_jid(account.phone, 0))
        .attr("id", id)
        .attr("type", "text")
        .attr("category", "peer")
        .attr("t", shared.now().to_string())
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", sealed.enc_type)
            .bytes(sealed.ciphertext)
            .build()])
        .build()
}

/// A message id in WhatsApp's shape: `3EB0` and 16 upper-case hex digits.
pub(crate) fn message_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    format!("3EB0{}", hex::encode_upper(bytes))
}
