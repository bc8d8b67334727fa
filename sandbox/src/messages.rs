//! Messages (SANDBOX.md, "Verified: messages between companions, receipts,
//! offline queue"), both ways.
//!
//! A companion's `<message>` names each recipient device in
//! `<participants><to jid><enc/></to>`. The copy for a device 0 is the
//! simulated phone's: it decrypts it with its own Signal sessions, keeps
//! the text in its inbox and sends a delivery receipt back at once. Copies
//! for companions (of the recipient, and the sender's own other devices)
//! are queued for them as `<message from="PN:D@s.whatsapp.net"><enc/>`.
//!
//! The other way, `send_text` has a phone encrypt a text to every companion
//! of the recipient account; the recipient's own phone gets it directly.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use buffa::Message as _;
use wacore::download::Downloadable;
use wacore::messages::MessageUtils;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;

use super::accounts::{Account, Kind, Phone, Received, ReceivedMedia, Resend};
use super::conn::{attr, bytes};
use super::deliver::{self, message_id};
use super::jid::{DeviceAddr, UserRef, lid_jid, pn_jid};
use super::media;
use super::phone::{CompanionBundle, PhoneError};
use super::server::Shared;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("no account for phone {0}")]
    UnknownPhone(String),
    #[error("{0}")]
    BadPhone(String),
    #[error("the text is empty")]
    EmptyText,
    #[error("the file is empty")]
    EmptyFile,
    #[error("the phone could not encrypt the file: {0}")]
    Media(String),
    #[error("the phone could not encrypt: {0}")]
    Encrypt(#[from] PhoneError),
}

/// A companion's message: routes every copy and returns the server's ack
/// (a nack with `error="400"` without an id, `"404"` when the recipient
/// has no account).
pub(crate) async fn relay(
    shared: &Shared,
    sender: &Arc<Account>,
    device: u16,
    node: &Node,
) -> Node {
    let Some(id) = attr(node, "id").filter(|id| !id.is_empty()) else {
        return message_ack(shared, node, Some("400"));
    };
    let to = node.attrs.get("to").and_then(|v| v.to_jid());
    let recipient = to
        .as_ref()
        .and_then(UserRef::from_jid)
        .and_then(|u| shared.directory.resolve(u));
    let (Some(to), Some(recipient)) = (to, recipient) else {
        tracing::info!(%id, to = ?attr(node, "to"), "message to an unknown number");
        return message_ack(shared, node, Some("404"));
    };
    if !super::tokens::admits(shared, sender, &recipient, node) {
        tracing::info!(%id, to = %recipient.phone, "first contact refused: no privacy token");
        return message_ack(shared, node, Some("463"));
    }
    let from = DeviceAddr::new(sender.phone, device);
    shared.routes.record(&id, from);
    for (target, encs) in copies(node, &to) {
        let Some(user) = UserRef::from_jid(&target) else {
            continue;
        };
        let Some(account) = shared.directory.resolve(user) else {
            continue;
        };
        let at = DeviceAddr::new(account.phone, user.device());
        if at == from {
            continue;
        }
        let copy = Outgoing {
            node,
            by_lid: to.is_lid(),
            id: &id,
            from,
            sender,
            recipient: &recipient,
        };
        if at.device == 0 {
            to_phone(shared, &copy, &account, &encs).await;
        } else {
            to_companion(shared, &copy, &account, at.device, encs);
        }
    }
    message_ack(shared, node, None)
}

/// `(device JID, its <enc> nodes)` for each addressed device; a bare
/// `<enc>` at the top is for the `to` device itself.
fn copies(node: &Node, to: &Jid) -> Vec<(Jid, Vec<Node>)> {
    let mut out = Vec::new();
    if let Some(participants) = node.get_optional_child("participants") {
        for target in participants.get_children_by_tag("to") {
            let jid = target.attrs.get("jid").and_then(|v| v.to_jid());
            let encs: Vec<Node> = target.get_children_by_tag("enc").cloned().collect();
            if let Some(jid) = jid {
                out.push((jid, encs));
            }
        }
    }
    let direct: Vec<Node> = node.get_children_by_tag("enc").cloned().collect();
    if !direct.is_empty() {
        out.push((to.clone(), direct));
    }
    out
}

/// One copy of a companion's message on its way.
struct Outgoing<'a> {
    node: &'a Node,
    /// Whether the sender addressed the chat by LID.
    by_lid: bool,
    id: &'a str,
    from: DeviceAddr,
    sender: &'a Account,
    recipient: &'a Account,
}

fn to_companion(
    shared: &Shared,
    copy: &Outgoing<'_>,
    account: &Account,
    device: u16,
    encs: Vec<Node>,
) {
    let push_name = copy
        .sender
        .lock()
        .devices
        .get(&copy.from.device)
        .map(|d| d.push_name.clone())
        .unwrap_or_default();
    // The sender goes by its LID (its number beside it) between an
    // account's own devices and in a chat addressed by LID; by its number
    // (its LID beside it) in a chat addressed by number.
    let own = account.phone == copy.sender.phone;
    let out = NodeBuilder::new("message").attr("id", copy.id);
    let mut out = if own || copy.by_lid {
        out.attr("from", lid_jid(copy.sender.lid, copy.from.device))
            .attr("sender_pn", pn_jid(copy.from.phone, copy.from.device))
    } else {
        out.attr("from", pn_jid(copy.from.phone, copy.from.device))
            .attr("sender_lid", lid_jid(copy.sender.lid, 0))
    }
    .attr("t", shared.now().to_string());
    for key in ["type", "edit", "category"] {
        if let Some(value) = attr(copy.node, key) {
            out = out.attr(key, value);
        }
    }
    if own {
        // The sender's own other device: which chat it was sent to.
        out = out.attr("recipient", pn_jid(copy.recipient.phone, 0));
    }
    if !push_name.is_empty() {
        out = out.attr("notify", push_name);
    }
    let node = out.children(encs).build();
    let id = copy.id.to_owned();
    if deliver::queue(shared, account, device, Kind::Message, id, node, None) {
        shared.counters.relayed.fetch_add(1, Ordering::Relaxed);
    } else {
        tracing::debug!(device, "message for a device the account does not have");
    }
}

/// The phone decrypts its copy; a text for it lands in its inbox and a
/// delivery receipt goes back. What it cannot decrypt gets a retry receipt,
/// so the sender starts a new session.
async fn to_phone(shared: &Shared, copy: &Outgoing<'_>, phone: &Account, encs: &[Node]) {
    let Some(enc) = encs.first() else {
        return;
    };
    let enc_type = attr(enc, "type").unwrap_or_default();
    let ciphertext = bytes(enc).unwrap_or_default();
    let opened = match phone
        .sim
        .decrypt_from(copy.from, &enc_type, ciphertext)
        .await
    {
        Ok(opened) => opened,
        Err(e) => {
            shared
                .counters
                .decrypt_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(id = copy.id, from = %copy.from, error = %e, "phone could not decrypt");
            let retry = retry_receipt(shared, phone, copy.id);
            queue_receipt(shared, copy.from, copy.id, retry);
            return;
        }
    };
    let version = attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2);
    let message = MessageUtils::unpad_message_ref(&opened.plaintext, version)
        .ok()
        .and_then(|plain| wa::Message::decode_from_slice(plain).ok());
    if phone.phone == copy.sender.phone {
        // The phone's copy of its own companion's message; a request for
        // the app-state key is answered.
        if let Some(message) = message {
            answer_own_companion(shared, phone, copy.from.device, &message).await;
        }
        return;
    }
    let counter = match opened.prekey_message {
        true => &shared.counters.phone_received_pkmsg,
        false => &shared.counters.phone_received_msg,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let content = message.as_ref().and_then(|m| content_of(shared, m));
    if let Some((text, media)) = content {
        let received = Received {
            id: copy.id.to_owned(),
            from: copy.from.phone,
            from_device: copy.from.device,
            by_lid: copy.by_lid,
            text,
            at: shared.now(),
            read: false,
            media,
        };
        if phone.lock().receive(received) {
            shared.text_received();
        }
    }
    if phone.lock().behaviour.phone_online {
        let receipt = deliver::receipt(shared, phone_jid(phone, copy.by_lid), copy.id, None);
        queue_receipt(shared, copy.from, copy.id, receipt);
    }
}

/// A companion that lost the account's app-state key asks its phone (and
/// its other companions) for it: the phone shares it again.
async fn answer_own_companion(
    shared: &Shared,
    phone: &Account,
    device: u16,
    message: &wa::Message,
) {
    let request = message
        .protocol_message
        .as_option()
        .filter(|p| {
            p.r#type == Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_REQUEST)
        })
        .and_then(|p| p.app_state_sync_key_request.as_option());
    let Some(request) = request else {
        return;
    };
    if !phone.sim.asks_for_app_state_key(request) {
        return;
    }
    let key_indexes = phone.lock().key_indexes();
    let to = DeviceAddr::new(phone.phone, device);
    let share = phone
        .sim
        .app_state_key_share(to, None, &key_indexes, shared.now_millis() as i64)
        .await;
    match share {
        Ok((sealed, plaintext)) => {
            tracing::info!(%to, "the phone shares its app-state key again");
            deliver::from_phone(shared, phone, device, sealed, plaintext);
        }
        Err(e) => tracing::warn!(%to, error = %e, "could not share the app-state key again"),
    }
}

/// A phone's own address, in the namespace of the chat (LID or number).
fn phone_jid(phone: &Account, by_lid: bool) -> Jid {
    match by_lid {
        true => lid_jid(phone.lid, 0),
        false => pn_jid(phone.phone, 0),
    }
}

/// The text of a message: a plain conversation or an extended text.
/// What the phone keeps of a message: its text, or a media file's caption
/// and the file as [`media::receive`] found it.
fn content_of(shared: &Shared, message: &wa::Message) -> Option<(String, Option<ReceivedMedia>)> {
    if let Some(text) = text_of(message) {
        return Some((text, None));
    }
    let (kind, file, caption, mimetype, file_name): (_, &dyn Downloadable, _, _, _) =
        if let Some(m) = message.image_message.as_option() {
            ("image", m, m.caption.clone(), m.mimetype.clone(), None)
        } else if let Some(m) = message.video_message.as_option() {
            ("video", m, m.caption.clone(), m.mimetype.clone(), None)
        } else if let Some(m) = message.audio_message.as_option() {
            ("audio", m, None, m.mimetype.clone(), None)
        } else if let Some(m) = message.document_message.as_option() {
            let name = m.file_name.clone();
            ("document", m, m.caption.clone(), m.mimetype.clone(), name)
        } else if let Some(m) = message.sticker_message.as_option() {
            ("sticker", m, None, m.mimetype.clone(), None)
        } else {
            return None;
        };
    let mut received = media::receive(shared, kind, file, mimetype, file_name);
    received.voice = message
        .audio_message
        .as_option()
        .is_some_and(|m| m.ptt == Some(true));
    Some((caption.unwrap_or_default(), Some(received)))
}

fn text_of(message: &wa::Message) -> Option<String> {
    if let Some(text) = &message.conversation {
        return Some(text.clone());
    }
    message
        .extended_text_message
        .as_option()
        .and_then(|m| m.text.clone())
}

/// `<receipt type="retry">` from a phone that could not decrypt.
fn retry_receipt(shared: &Shared, phone: &Account, id: &str) -> Node {
    let registration = phone.sim.keys().registration_id.to_be_bytes().to_vec();
    NodeBuilder::new("receipt")
        .attr("from", pn_jid(phone.phone, 0))
        .attr("id", id)
        .attr("type", "retry")
        .attr("t", shared.now().to_string())
        .children([
            NodeBuilder::new("retry")
                .attr("v", "1")
                .attr("count", "1")
                .attr("id", id)
                .attr("t", shared.now().to_string())
                .build(),
            NodeBuilder::new("registration").bytes(registration).build(),
        ])
        .build()
}

/// Queues a receipt for a device (the phone has no queue: it needs none).
pub(crate) fn queue_receipt(shared: &Shared, to: DeviceAddr, id: &str, receipt: Node) {
    if to.device == 0 {
        return;
    }
    if let Some(account) = shared.directory.get(to.phone) {
        let id = id.to_owned();
        deliver::queue(shared, &account, to.device, Kind::Acked, id, receipt, None);
    }
}

fn message_ack(shared: &Shared, node: &Node, error: Option<&str>) -> Node {
    let mut ack = NodeBuilder::new("ack")
        .attr("class", "message")
        .attr("id", attr(node, "id").unwrap_or_default())
        .attr("t", shared.now().to_string());
    if let Some(to) = node.attrs.get("to") {
        ack = ack.attr("from", to.clone());
    }
    if let Some(error) = error {
        ack = ack.attr("error", error);
    }
    ack.build()
}

/// `POST /phones/{phone}/messages`: the phone of `from` sends `text` to
/// `to`, encrypted to each of the recipient's companions; the recipient's
/// phone gets it directly. Returns the message id.
pub(crate) async fn send_text(
    shared: &Shared,
    from: &str,
    to: &str,
    text: &str,
) -> Result<String, SendError> {
    if text.is_empty() {
        return Err(SendError::EmptyText);
    }
    let message = wa::Message {
        conversation: Some(text.to_owned()),
        ..Default::default()
    };
    send_message(shared, from, to, message).await
}

/// A file a phone sends (`POST /phones/{phone}/media`).
#[derive(Debug, Clone)]
pub(crate) struct PhoneMedia {
    pub kind: media::Kind,
    pub bytes: Vec<u8>,
    pub mimetype: Option<String>,
    pub file_name: Option<String>,
    pub caption: Option<String>,
    /// Audio as a voice note.
    pub voice: bool,
    /// Host a blob that does not decrypt (one byte flipped), as a corrupted
    /// download would be.
    pub tamper: bool,
}

/// `POST /phones/{phone}/media`: the phone of `from` encrypts a file,
/// keeps the blob on the media host and sends the message that names it
/// to `to`. Returns the message id.
pub(crate) async fn send_media(
    shared: &Shared,
    from: &str,
    to: &str,
    file: PhoneMedia,
) -> Result<String, SendError> {
    if file.bytes.is_empty() {
        return Err(SendError::EmptyFile);
    }
    let message = media::phone_upload(&shared.media, file)?;
    send_message(shared, from, to, message).await
}

/// The phone of `from` sends `message` to `to`: the recipient's phone keeps
/// what it makes of it, and every companion of both accounts gets it.
async fn send_message(
    shared: &Shared,
    from: &str,
    to: &str,
    message: wa::Message,
) -> Result<String, SendError> {
    let sender = find(shared, from)?;
    let recipient = find(shared, to)?;
    let (text, media) = content_of(shared, &message).unwrap_or_default();
    let id = message_id();
    shared.routes.record(&id, DeviceAddr::new(sender.phone, 0));
    let received = Received {
        id: id.clone(),
        from: sender.phone,
        from_device: 0,
        by_lid: false,
        text,
        at: shared.now(),
        read: false,
        media,
    };
    if recipient.lock().receive(received) {
        shared.text_received();
    }
    let plaintext = MessageUtils::pad_message_v2(message.encode_to_vec());
    let resend = Arc::new(Resend {
        from: sender.phone,
        plaintext,
    });
    to_companions(shared, &sender, &recipient, &id, &resend, None).await?;
    if sender.phone != recipient.phone {
        copy_to_own_companions(shared, &sender, &recipient, &id, message).await?;
    }
    shared.state_changed();
    Ok(id)
}

/// Encrypts `resend`'s plaintext from `sender`'s phone to every companion
/// of `account` and queues it there as message `id` (with `recipient=`,
/// the chat, on a copy for the sender's own companions).
async fn to_companions(
    shared: &Shared,
    sender: &Account,
    account: &Account,
    id: &str,
    resend: &Arc<Resend>,
    chat: Option<&Jid>,
) -> Result<(), SendError> {
    let devices: Vec<u16> = account.lock().devices.keys().copied().collect();
    for device in devices {
        let sealed = seal(shared, sender, account, device, &resend.plaintext).await?;
        let mut node = deliver::phone_text(shared, sender, id, sealed);
        if let Some(chat) = chat {
            node.attrs.insert("recipient", chat.clone());
        }
        let (kind, again) = (Kind::Message, Some(resend.clone()));
        deliver::queue(shared, account, device, kind, id.to_owned(), node, again);
    }
    Ok(())
}

/// The sending phone's own companions get what it sent, as a message sent
/// by their own account (a `DeviceSentMessage` naming the chat, with
/// `recipient=`), the way a phone keeps its linked devices in step.
async fn copy_to_own_companions(
    shared: &Shared,
    sender: &Account,
    recipient: &Account,
    id: &str,
    message: wa::Message,
) -> Result<(), SendError> {
    if sender.lock().devices.is_empty() {
        return Ok(());
    }
    let chat = pn_jid(recipient.phone, 0);
    let copy = wa::Message {
        device_sent_message: buffa::MessageField::some(wa::message::DeviceSentMessage {
            destination_jid: Some(chat.to_string()),
            message: buffa::MessageField::some(message),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resend = Arc::new(Resend {
        from: sender.phone,
        plaintext: MessageUtils::pad_message_v2(copy.encode_to_vec()),
    });
    to_companions(shared, sender, sender, id, &resend, Some(&chat)).await
}

fn find(shared: &Shared, phone: &str) -> Result<Arc<Account>, SendError> {
    let parsed = Phone::parse(phone).map_err(|e| SendError::BadPhone(format!("{phone}: {e}")))?;
    shared
        .directory
        .get(parsed)
        .ok_or_else(|| SendError::UnknownPhone(parsed.to_string()))
}

/// Encrypts from `sender`'s phone to one companion of `recipient`, taking
/// one of the companion's one-time prekeys if a session must be started.
pub(crate) async fn seal(
    shared: &Shared,
    sender: &Account,
    recipient: &Account,
    device: u16,
    plaintext: &[u8],
) -> Result<super::phone::Sealed, PhoneError> {
    let to = DeviceAddr::new(recipient.phone, device);
    let bundle = || companion_bundle(recipient, device);
    let sealed = sender.sim.encrypt_to(to, bundle, plaintext).await?;
    let counter = match sealed.enc_type {
        "pkmsg" => &shared.counters.phone_sent_pkmsg,
        _ => &shared.counters.phone_sent_msg,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Ok(sealed)
}

/// A companion's bundle from its uploads, taking one one-time prekey.
pub(crate) fn companion_bundle(account: &Account, device: u16) -> Option<CompanionBundle> {
    let mut state = account.lock();
    let record = state.devices.get_mut(&device)?;
    Some(CompanionBundle {
        device,
        registration_id: record.registration_id,
        identity: record.identity,
        signed_prekey: record.signed_prekey.clone(),
        one_time: record.prekeys.pop_front(),
    })
}

/// `POST /phones/{phone}/read`: the phone reads every unread text from
/// `from`; each sending companion gets one read receipt for all of its
/// messages. Returns how many texts were read.
pub(crate) fn read(shared: &Shared, phone: &str, from: &str) -> Result<usize, SendError> {
    let reader = find(shared, phone)?;
    let from = Phone::parse(from).map_err(|e| SendError::BadPhone(format!("{from}: {e}")))?;
    // One receipt per sending device and per namespace the chat was in.
    let mut by_device: std::collections::BTreeMap<(u16, bool), Vec<String>> = Default::default();
    {
        let mut state = reader.lock();
        for text in state.inbox.iter_mut().filter(|t| t.from == from && !t.read) {
            text.read = true;
            by_device
                .entry((text.from_device, text.by_lid))
                .or_default()
                .push(text.id.clone());
        }
    }
    let count = by_device.values().map(Vec::len).sum();
    for ((device, by_lid), ids) in by_device {
        let Some((first, rest)) = ids.split_first() else {
            continue;
        };
        let me = phone_jid(&reader, by_lid);
        let mut receipt = deliver::receipt(shared, me, first, Some("read"));
        if !rest.is_empty() {
            let items = rest
                .iter()
                .map(|id| NodeBuilder::new("item").attr("id", id.as_str()).build());
            let list = NodeBuilder::new("list").children(items).build();
            receipt.content = Some(wacore_binary::NodeContent::Nodes(vec![list]));
        }
        queue_receipt(shared, DeviceAddr::new(from, device), first, receipt);
    }
    if count > 0 {
        shared.state_changed();
    }
    Ok(count)
}
