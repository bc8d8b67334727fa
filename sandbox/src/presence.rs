//! Presence and typing, the stanzas that are never queued for long.
//!
//! `<presence type="available|unavailable">` records whether an account is
//! online and tells the devices subscribed to it; `<presence
//! type="subscribe" to>` subscribes a device and answers at once with the
//! account's current presence; a subscriber that was offline gets only the
//! latest presence it missed, at its next login. `<chatstate to><composing/></chatstate>`
//! goes on to the recipient's devices as `<chatstate from>`, and is kept:
//! a device that logs in while it is still fresh gets it then (a typing
//! state lives `chatstate_ttl`, `CHATSTATE_TTL_SECS`), a later one never.
//!
//! An account's new about text (`<iq xmlns="status">`) goes to every
//! connected device but the sender's as a `status` notification: the
//! sandbox has no address books, so everyone is a contact.
//!
//! Nothing here is kept in the state file.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::accounts::{Account, Phone};
use super::conn::attr;
use super::jid::{DeviceAddr, UserRef, pn_jid};
use super::online::Command;
use super::server::Shared;

/// Presence state, subscriptions and typing states waiting for devices.
#[derive(Default)]
pub(crate) struct Presence {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    available: HashMap<Phone, bool>,
    subscribers: HashMap<Phone, BTreeSet<DeviceAddr>>,
    /// Typing states for devices that were offline, with their expiry.
    waiting: HashMap<DeviceAddr, Vec<(Instant, Node)>>,
    /// The latest presence of each account a subscriber missed while it
    /// was offline: only the last change matters.
    missed: HashMap<DeviceAddr, HashMap<Phone, Node>>,
}

impl Presence {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a device that logs in missed: the latest presence of each
    /// account it subscribed to, and typing states still fresh.
    pub fn take_waiting(&self, device: DeviceAddr) -> Vec<Node> {
        let now = Instant::now();
        let mut inner = self.inner();
        let missed = inner.missed.remove(&device).unwrap_or_default();
        let waiting = inner.waiting.remove(&device).unwrap_or_default();
        let fresh = waiting
            .into_iter()
            .filter(|(expires, _)| *expires > now)
            .map(|(_, node)| node);
        missed.into_values().chain(fresh).collect()
    }
}

/// A `<presence>` from a device of `account`.
pub(crate) fn handle_presence(shared: &Shared, account: &Account, device: u16, node: &Node) {
    if let Some(name) = attr(node, "name").filter(|n| !n.is_empty()) {
        rename(shared, account, &name);
    }
    match attr(node, "type").as_deref() {
        Some("subscribe") => subscribe(shared, account, device, node),
        Some("unsubscribe") => {
            if let Some(target) = target_account(shared, node) {
                let me = DeviceAddr::new(account.phone, device);
                let mut inner = shared.presence.inner();
                if let Some(set) = inner.subscribers.get_mut(&target.phone) {
                    set.remove(&me);
                }
            }
        }
        Some("unavailable") => set_available(shared, account.phone, false),
        // A bare `<presence name=..>` is "available" as well.
        _ => set_available(shared, account.phone, true),
    }
}

/// A `<presence name>` carries the account's push name: the `notify` of
/// the messages its devices send from now on.
fn rename(shared: &Shared, account: &Account, name: &str) {
    let mut state = account.lock();
    let mut changed = false;
    for device in state.devices.values_mut().filter(|d| d.push_name != name) {
        device.push_name = name.to_owned();
        changed = true;
    }
    drop(state);
    if changed {
        shared.state_changed();
    }
}

fn target_account(shared: &Shared, node: &Node) -> Option<Arc<Account>> {
    let jid = node.attrs.get("to").and_then(|v| v.to_jid())?;
    shared.directory.resolve(UserRef::from_jid(&jid)?)
}

fn set_available(shared: &Shared, phone: Phone, available: bool) {
    let subscribers: Vec<DeviceAddr> = {
        let mut inner = shared.presence.inner();
        inner.available.insert(phone, available);
        let set = inner.subscribers.get(&phone);
        set.map(|s| s.iter().copied().collect()).unwrap_or_default()
    };
    for subscriber in subscribers {
        let stanza = presence_of(shared, phone, available);
        if !shared
            .online
            .send(subscriber, Command::Send(stanza.clone()))
        {
            let mut inner = shared.presence.inner();
            inner
                .missed
                .entry(subscriber)
                .or_default()
                .insert(phone, stanza);
        }
    }
}

/// A restricted account's presence is only for holders of a token it
/// issued: a subscription without one is ignored.
fn subscribe(shared: &Shared, account: &Account, device: u16, node: &Node) {
    let Some(target) = target_account(shared, node) else {
        return;
    };
    if !super::tokens::may_see(shared, account, &target, node) {
        tracing::debug!(target = %target.phone, "presence subscription without a privacy token ignored");
        return;
    }
    let target = target.phone;
    let me = DeviceAddr::new(account.phone, device);
    let available = {
        let mut inner = shared.presence.inner();
        inner.subscribers.entry(target).or_default().insert(me);
        inner.available.get(&target).copied().unwrap_or(false)
    };
    let stanza = presence_of(shared, target, available);
    shared.online.send(me, Command::Send(stanza));
}

/// `<presence from="PN@s.whatsapp.net" [type="unavailable" last=..]/>`.
fn presence_of(shared: &Shared, phone: Phone, available: bool) -> Node {
    let mut node = NodeBuilder::new("presence").attr("from", pn_jid(phone, 0));
    if !available {
        node = node
            .attr("type", "unavailable")
            .attr("last", shared.now().to_string());
    }
    node.build()
}

/// A `<chatstate to>` from a device of `account`: on to every other device
/// of the recipient, now or (while fresh) at its next login.
pub(crate) fn handle_chatstate(shared: &Shared, account: &Account, device: u16, node: &Node) {
    let Some(recipient) = target_account(shared, node) else {
        tracing::debug!(to = ?attr(node, "to"), "chatstate for no known account");
        return;
    };
    let stanza = NodeBuilder::new("chatstate")
        .attr("from", pn_jid(account.phone, 0))
        .children(node.children().map(<[Node]>::to_vec).unwrap_or_default())
        .build();
    let expires = Instant::now() + shared.config.chatstate_ttl;
    let me = DeviceAddr::new(account.phone, device);
    let devices: Vec<u16> = recipient.lock().devices.keys().copied().collect();
    for d in devices {
        let to = DeviceAddr::new(recipient.phone, d);
        if to == me {
            continue;
        }
        shared.online.send(to, Command::Send(stanza.clone()));
        // Kept for its lifetime even when sent: a connection that was
        // closing may have lost it, and its device's next login within
        // the TTL gets it again. Only the latest state matters.
        let mut inner = shared.presence.inner();
        let waiting = inner.waiting.entry(to).or_default();
        waiting.clear();
        waiting.push((expires, stanza.clone()));
    }
}

/// `<iq xmlns="status"><status>text</status>`: the account's about text,
/// told to every other connected device.
pub(crate) fn set_about(shared: &Shared, account: &Account, device: u16, iq: &Node) {
    let text = iq
        .get_optional_child("status")
        .and_then(|s| s.content_as_string())
        .unwrap_or_default()
        .to_string();
    let me = DeviceAddr::new(account.phone, device);
    let notification = NodeBuilder::new("notification")
        .attr("from", pn_jid(account.phone, 0))
        .attr("type", "status")
        .attr("id", super::deliver::message_id())
        .attr("t", shared.now().to_string())
        .children([NodeBuilder::new("set").string_content(text).build()])
        .build();
    for to in shared.online.all() {
        if to != me {
            shared.online.send(to, Command::Send(notification.clone()));
        }
    }
}
