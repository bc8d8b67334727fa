//! Linking a companion by QR (SANDBOX.md, "Verified: pairing by QR").
//!
//! A registering client gets six refs in `<pair-device>` and shows them as
//! QR codes. `link` is the phone scanning one: it finds the connection that
//! showed the ref, and that connection's task runs the exchange: the phone
//! signs the companion's identity into `<pair-success>`, the companion
//! counter-signs in `<pair-device-sign>`, the phone checks that, the device
//! joins the account, and the server ends the stream with code 515 so the
//! client logs in. The phone also queues its app-state key share then.
//!
//! Unlinking (`unlink`) removes every companion and logs out the ones online.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use buffa::Message as _;
use rand::RngExt as _;
use tokio::sync::{mpsc, oneshot};
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp::{self as wa, ClientPayload};

use super::accounts::{Account, Device, Phone, SignedPreKey};
use super::conn::{ConnError, NodeChannel, attr, bytes};
use super::jid::{DeviceAddr, lid_jid, pn_jid, server_jid};
use super::online::Command;
use super::phone::CompanionBundle;
use super::seed;
use super::server::Shared;
use super::{deliver, iq};

/// Refs per `<pair-device>`, as WhatsApp sends.
const REFS: usize = 6;
/// The client rotates its six refs over 60 s + 5 x 20 s, then gives up.
const PAIRING_WINDOW: Duration = Duration::from_secs(180);
/// See `settle`.
const SETTLE: Duration = Duration::from_millis(250);
const NATIVE_CAMERA_PREFIX: &str = "https://wa.me/settings/linked_devices#";

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("no account for phone {0}")]
    UnknownPhone(String),
    #[error("malformed QR code: {0}")]
    BadQr(&'static str),
    #[error("a pair code is 8 characters of 1-9 and A-Z (no I, O, U), a dash allowed")]
    BadCode,
    #[error("no connected companion is showing a pair code for this number")]
    NoCode,
    #[error("no connected companion is showing this QR code")]
    NotShowing,
    #[error("the QR code's keys do not match the companion showing it")]
    KeyMismatch,
    #[error("the companion refused the pairing: {0}")]
    Refused(String),
    #[error("the companion did not answer the pairing in time")]
    TimedOut,
    #[error("the companion went away during pairing")]
    Gone,
    #[error("the account has no device ids left")]
    Full,
}

/// A companion as a linked device of an account.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = LinkedDevice)]
pub struct Linked {
    /// The account's phone number.
    pub phone: String,
    /// The companion's device id (1 or more).
    pub device: u16,
    /// The companion's JID, `<phone>:<device>@s.whatsapp.net`.
    pub jid: String,
    /// The companion's LID JID, `<lid>:<device>@lid`.
    pub lid: String,
}

/// The companion's keys that pairing needs: the fields of a QR string, or
/// what a pair code's key bundle yields.
#[derive(Debug, Clone)]
pub(crate) struct QrCode {
    pub reference: String,
    pub noise_key: [u8; 32],
    pub identity: [u8; 32],
    pub adv_secret: [u8; 32],
}

impl QrCode {
    /// `ref,noise,identity,adv[,client type]`, base64 keys, with or without
    /// the native-camera link prefix.
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        let body = text.trim();
        let body = body.strip_prefix(NATIVE_CAMERA_PREFIX).unwrap_or(body);
        let mut fields = body.split(',');
        let reference = fields.next().filter(|r| !r.is_empty());
        let reference = reference.ok_or(LinkError::BadQr("empty ref"))?.to_owned();
        let mut key = |what| {
            let field = fields.next().ok_or(LinkError::BadQr(what))?;
            let bytes = STANDARD.decode(field).map_err(|_| LinkError::BadQr(what))?;
            <[u8; 32]>::try_from(bytes).map_err(|_| LinkError::BadQr(what))
        };
        Ok(Self {
            reference,
            noise_key: key("noise key")?,
            identity: key("identity key")?,
            adv_secret: key("ADV secret")?,
        })
    }
}

/// A scan or an entered code, handed to the connection that showed it.
pub(crate) struct LinkRequest {
    account: Arc<Account>,
    how: How,
    reply: oneshot::Sender<Result<Linked, LinkError>>,
}

enum How {
    Qr(QrCode),
    /// The code the phone's user typed, normalized.
    Code(String),
}

#[derive(Clone)]
struct Showing {
    noise_key: [u8; 32],
    /// The push name the companion registered with (possibly empty).
    push_name: String,
    tx: mpsc::UnboundedSender<LinkRequest>,
}

/// The refs that connected companions are showing right now.
#[derive(Default)]
pub(crate) struct PairingDesk {
    showing: Mutex<HashMap<String, Showing>>,
    /// Companions showing a pair code, by the number they gave, with the
    /// pairing ref of their `companion_hello`.
    codes: Mutex<HashMap<Phone, (String, Showing)>>,
}

impl PairingDesk {
    fn showing(&self) -> std::sync::MutexGuard<'_, HashMap<String, Showing>> {
        self.showing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(
        &self,
        noise_key: [u8; 32],
        push_name: &str,
        tx: mpsc::UnboundedSender<LinkRequest>,
    ) -> Vec<String> {
        let mut rng = rand::rng();
        let refs: Vec<String> = (0..REFS)
            .map(|_| format!("2@{}", STANDARD.encode(rng.random::<[u8; 24]>())))
            .collect();
        let mut showing = self.showing();
        for r in &refs {
            let showing_now = Showing {
                noise_key,
                push_name: push_name.to_owned(),
                tx: tx.clone(),
            };
            showing.insert(r.clone(), showing_now);
        }
        refs
    }

    /// The push name of the companion showing this QR code.
    pub fn push_name_of(&self, qr: &str) -> Result<String, LinkError> {
        let qr = QrCode::parse(qr)?;
        let showing = self.showing();
        let found = showing.get(&qr.reference).ok_or(LinkError::NotShowing)?;
        Ok(found.push_name.clone())
    }

    fn codes(&self) -> std::sync::MutexGuard<'_, HashMap<Phone, (String, Showing)>> {
        self.codes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The companion with this ref shows a code for `phone`; a newer
    /// `companion_hello` for the number replaces an older one.
    fn show_code(&self, phone: Phone, reference: &str, showing: Showing) {
        self.codes().insert(phone, (reference.to_owned(), showing));
    }

    fn close_code(&self, phone: Phone, reference: &str) {
        let mut codes = self.codes();
        if codes.get(&phone).is_some_and(|(r, _)| r == reference) {
            codes.remove(&phone);
        }
    }

    fn close(&self, refs: &[String]) {
        let mut showing = self.showing();
        for r in refs {
            showing.remove(r);
        }
    }
}

/// Takes a connection's refs (and its pair code) off the desk however its
/// task ends.
struct OpenRefs<'a> {
    desk: &'a PairingDesk,
    refs: Vec<String>,
    code: Option<(Phone, String)>,
}

impl Drop for OpenRefs<'_> {
    fn drop(&mut self) {
        self.desk.close(&self.refs);
        if let Some((phone, reference)) = &self.code {
            self.desk.close_code(*phone, reference);
        }
    }
}

/// The phone of `phone` scans `qr`: pairs the companion showing it.
pub(crate) async fn link(shared: &Shared, phone: &str, qr: &str) -> Result<Linked, LinkError> {
    let account = Phone::parse(phone)
        .ok()
        .and_then(|p| shared.directory.get(p))
        .ok_or_else(|| LinkError::UnknownPhone(phone.to_owned()))?;
    link_account(shared, account, qr).await
}

/// The phone of `account` scans `qr`.
pub(crate) async fn link_account(
    shared: &Shared,
    account: Arc<Account>,
    qr: &str,
) -> Result<Linked, LinkError> {
    let qr = QrCode::parse(qr)?;
    let showing = shared.desk.showing().get(&qr.reference).cloned();
    let showing = showing.ok_or(LinkError::NotShowing)?;
    if showing.noise_key != qr.noise_key {
        return Err(LinkError::KeyMismatch);
    }
    hand_over(shared, &showing, account, How::Qr(qr)).await
}

/// The phone of `phone` enters `code`, which a companion shows.
pub(crate) async fn link_code(
    shared: &Shared,
    phone: &str,
    code: &str,
) -> Result<Linked, LinkError> {
    let account = Phone::parse(phone)
        .ok()
        .and_then(|p| shared.directory.get(p))
        .ok_or_else(|| LinkError::UnknownPhone(phone.to_owned()))?;
    let code = super::pair_code::normalize(code)?;
    let showing = shared.desk.codes().get(&account.phone).cloned();
    let (_, showing) = showing.ok_or(LinkError::NoCode)?;
    hand_over(shared, &showing, account, How::Code(code)).await
}

/// Gives the request to the companion's connection; waits for the outcome.
async fn hand_over(
    shared: &Shared,
    showing: &Showing,
    account: Arc<Account>,
    how: How,
) -> Result<Linked, LinkError> {
    let (reply, answer) = oneshot::channel();
    let request = LinkRequest {
        account,
        how,
        reply,
    };
    showing.tx.send(request).map_err(|_| LinkError::Gone)?;
    match tokio::time::timeout(shared.config.pairing_timeout, answer).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(LinkError::Gone),
        Err(_) => Err(LinkError::TimedOut),
    }
}

/// Removes every companion of an account (the phone unlinks them all).
pub(crate) fn unlink(shared: &Shared, account: &Account) -> Vec<u16> {
    remove_devices(shared, account, |_| true)
}

/// Removes the companions `which` picks; the online ones are logged out the
/// way WhatsApp does it, and their later logins are refused. Returns the
/// removed device ids.
pub(crate) fn remove_devices(
    shared: &Shared,
    account: &Account,
    which: impl Fn(u16) -> bool,
) -> Vec<u16> {
    let removed: Vec<u16> = {
        let mut state = account.lock();
        let ids: Vec<u16> = state
            .devices
            .keys()
            .copied()
            .filter(|d| which(*d))
            .collect();
        for id in &ids {
            state.devices.remove(id);
            state.removed.insert(*id);
        }
        state.devices_changed_at = shared.now();
        ids
    };
    for &device in &removed {
        let addr = DeviceAddr::new(account.phone, device);
        shared.online.send(addr, Command::Close(device_removed()));
        deliver::devices_changed(shared, account, "remove", device);
    }
    shared.state_changed();
    removed
}

/// `<stream:error code="401"><conflict type="device_removed"/>`: the client
/// reports `LoggedOut` and stops reconnecting.
fn device_removed() -> Node {
    NodeBuilder::new("stream:error")
        .attr("code", "401")
        .children([NodeBuilder::new("conflict")
            .attr("type", "device_removed")
            .build()])
        .build()
}

/// What the registration payload says about the companion's keys.
struct Registration {
    registration_id: u32,
    identity: [u8; 32],
    signed_prekey: SignedPreKey,
    push_name: String,
}

impl Registration {
    fn from_payload(payload: &ClientPayload) -> Result<Self, ConnError> {
        let bad = |what: &str| ConnError::Protocol(format!("registration payload: bad {what}"));
        let data = payload
            .device_pairing_data
            .as_option()
            .ok_or_else(|| bad("pairing data"))?;
        let regid = data.e_regid.as_deref().ok_or_else(|| bad("e_regid"))?;
        let regid = <[u8; 4]>::try_from(regid).map_err(|_| bad("e_regid"))?;
        let key32 = |field: &Option<Vec<u8>>, what| {
            let bytes = field.as_deref().ok_or_else(|| bad(what))?;
            <[u8; 32]>::try_from(bytes).map_err(|_| bad(what))
        };
        let skey_id = data.e_skey_id.as_deref().ok_or_else(|| bad("e_skey_id"))?;
        if skey_id.len() != 3 {
            return Err(bad("e_skey_id"));
        }
        Ok(Self {
            registration_id: u32::from_be_bytes(regid),
            identity: key32(&data.e_ident, "e_ident")?,
            signed_prekey: SignedPreKey {
                id: u32::from_be_bytes([0, skey_id[0], skey_id[1], skey_id[2]]),
                public: key32(&data.e_skey_val, "e_skey_val")?,
                signature: data.e_skey_sig.clone().ok_or_else(|| bad("e_skey_sig"))?,
            },
            push_name: payload.push_name.clone().unwrap_or_default(),
        })
    }
}

/// Serves a registering companion: shows refs until a phone scans one (or
/// the pairing window closes), then pairs it.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    channel: &mut NodeChannel,
    noise_key: [u8; 32],
    payload: ClientPayload,
) -> Result<(), ConnError> {
    let registration = Registration::from_payload(&payload)?;
    let (tx, mut requests) = mpsc::unbounded_channel();
    let showing = Showing {
        noise_key,
        push_name: registration.push_name.clone(),
        tx: tx.clone(),
    };
    let mut open = OpenRefs {
        desk: &shared.desk,
        refs: shared.desk.open(noise_key, &registration.push_name, tx),
        code: None,
    };
    channel.send(&pair_device(&open.refs)).await?;
    let mut hello = None;
    let deadline = tokio::time::sleep(PAIRING_WINDOW);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            node = channel.recv() => {
                let node = node?;
                match super::pair_code::parse_hello(&node) {
                    Some(Ok(new)) => {
                        channel.send(&super::pair_code::hello_answer(&node, &new)).await?;
                        shared.desk.show_code(new.phone, &new.reference, showing.clone());
                        open.code = Some((new.phone, new.reference.clone()));
                        hello = Some(new);
                    }
                    Some(Err(what)) => {
                        let refused = iq::bad_request(shared, &node, what);
                        channel.send(&refused).await?;
                    }
                    None => answer_while_pairing(shared, channel, &node).await?,
                }
            }
            Some(request) = requests.recv() => {
                let companion = Companion { registration: &registration, noise_key, hello: hello.as_ref() };
                let paired = pair(shared, channel, &companion, request).await?;
                if paired {
                    settle(shared, channel).await?;
                    // The client reconnects at once and logs in.
                    let restart = NodeBuilder::new("stream:error").attr("code", "515").build();
                    channel.send_last(&restart).await;
                    return Ok(());
                }
            }
            _ = &mut deadline => return Err(ConnError::TimedOut("pairing window")),
        }
    }
}

/// Gives the client a moment after its `<pair-device-sign>` before the 515.
/// It finishes its own pairing bookkeeping after sending that answer, and
/// a 515 that overtakes it makes the client ignore its next `<success>` and
/// reconnect once more (a race WhatsApp's network latency hides).
async fn settle(shared: &Shared, channel: &mut NodeChannel) -> Result<(), ConnError> {
    let until = tokio::time::Instant::now() + SETTLE;
    while let Ok(node) = tokio::time::timeout_at(until, channel.recv()).await {
        answer_while_pairing(shared, channel, &node?).await?;
    }
    Ok(())
}

fn pair_device(refs: &[String]) -> Node {
    let refs = refs
        .iter()
        .map(|r| NodeBuilder::new("ref").bytes(r.as_bytes().to_vec()).build());
    NodeBuilder::new("iq")
        .attr("from", server_jid())
        .attr("type", "set")
        .attr("id", iq::request_id())
        .attr("xmlns", "md")
        .children([NodeBuilder::new("pair-device").children(refs).build()])
        .build()
}

/// A registering client's other stanzas: the ack of `<pair-device>`,
/// keepalives, its unified-session `<ib>`. Unknown iqs get an error answer;
/// other unknown stanzas end the connection.
async fn answer_while_pairing(
    shared: &Shared,
    channel: &mut NodeChannel,
    node: &Node,
) -> Result<(), ConnError> {
    match node.tag.as_ref() {
        "iq" => match iq::answer_unregistered(shared, node) {
            Some(answer) => channel.send(&answer).await,
            None => Ok(()),
        },
        // Its ack of a pair-code notification, its unified-session note.
        "ib" | "ack" => Ok(()),
        _ => Err(ConnError::Protocol(format!(
            "<{}> before pairing",
            node.tag
        ))),
    }
}

/// The registering companion a connection serves.
struct Companion<'a> {
    registration: &'a Registration,
    noise_key: [u8; 32],
    /// Its `companion_hello`, once it asked to show a pair code.
    hello: Option<&'a super::pair_code::Hello>,
}

/// Runs one scan (or entered code) to its end. `Ok(true)` when the device
/// joined the account; `Ok(false)` when it failed but the companion may be
/// linked again.
async fn pair(
    shared: &Arc<Shared>,
    channel: &mut NodeChannel,
    companion: &Companion<'_>,
    request: LinkRequest,
) -> Result<bool, ConnError> {
    let LinkRequest {
        account,
        how,
        reply,
    } = request;
    let registration = companion.registration;
    let outcome = match how {
        How::Qr(qr) => exchange(shared, channel, registration, &account, &qr).await,
        How::Code(code) => match by_code(shared, channel, companion, &account, code).await {
            Ok(keys) => exchange(shared, channel, registration, &account, &keys).await,
            Err(e) => Err(e),
        },
    };
    let (result, keep_going) = match outcome {
        Ok(linked) => (Ok(linked), Ok(true)),
        Err(Exchange::Link(e)) => (Err(e), Ok(false)),
        Err(Exchange::Conn(e)) => (Err(LinkError::Gone), Err(e)),
    };
    if let Err(e) = &result {
        tracing::info!(phone = %account.phone, error = %e, "pairing failed");
    }
    let _ = reply.send(result);
    keep_going
}

enum Exchange {
    Link(LinkError),
    Conn(ConnError),
}

impl From<ConnError> for Exchange {
    fn from(e: ConnError) -> Self {
        Exchange::Conn(e)
    }
}

impl From<LinkError> for Exchange {
    fn from(e: LinkError) -> Self {
        Exchange::Link(e)
    }
}

/// Stage 2 of pair-code linking (see `pair_code`): `primary_hello` out,
/// `companion_finish` back, its key bundle opened.
async fn by_code(
    shared: &Shared,
    channel: &mut NodeChannel,
    companion: &Companion<'_>,
    account: &Arc<Account>,
    code: String,
) -> Result<QrCode, Exchange> {
    use super::pair_code;
    let hello = companion.hello.ok_or(LinkError::NoCode)?.clone();
    // PBKDF2 with 2^17 rounds, twice: not on the runtime's threads.
    let (phone, noise_key) = (account.clone(), companion.noise_key);
    let (ephemeral, notification) = {
        let (hello, code) = (hello.clone(), code.clone());
        tokio::task::spawn_blocking(move || pair_code::primary_hello(&phone, &hello, &code))
            .await
            .map_err(|e| LinkError::Refused(e.to_string()))?
    };
    channel.send(&notification).await?;
    let sealed = await_finish(shared, channel).await?;
    let phone = account.clone();
    let keys = tokio::task::spawn_blocking(move || {
        pair_code::open_bundle(&phone.sim, &hello, &code, &ephemeral, &sealed, noise_key)
    })
    .await
    .map_err(|e| LinkError::Refused(e.to_string()))??;
    Ok(keys)
}

/// Waits for the companion's `companion_finish` and acknowledges it.
async fn await_finish(shared: &Shared, channel: &mut NodeChannel) -> Result<Vec<u8>, Exchange> {
    let wait = async {
        loop {
            let node = channel.recv().await?;
            let Some(sealed) = super::pair_code::parse_finish(&node) else {
                answer_while_pairing(shared, channel, &node).await?;
                continue;
            };
            channel.send(&iq::empty_result(&node)).await?;
            return Ok::<_, Exchange>(sealed);
        }
    };
    match tokio::time::timeout(shared.config.pairing_timeout, wait).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::TimedOut.into()),
    }
}

/// `<pair-success>` out, `<pair-device-sign>` back, device recorded.
async fn exchange(
    shared: &Arc<Shared>,
    channel: &mut NodeChannel,
    registration: &Registration,
    account: &Arc<Account>,
    qr: &QrCode,
) -> Result<Linked, Exchange> {
    if qr.identity != registration.identity {
        return Err(LinkError::KeyMismatch.into());
    }
    let (device, key_index) = account.lock().reserve_device().ok_or(LinkError::Full)?;
    let now = shared.now();
    let (details, container) = account
        .sim
        .sign_companion(&qr.identity, &qr.adv_secret, key_index, now)
        .map_err(|e| LinkError::Refused(e.to_string()))?;
    let id = iq::request_id();
    channel
        .send(&pair_success(&id, account, device, container))
        .await?;
    let signed = await_device_sign(shared, channel, &id).await?;
    account
        .sim
        .verify_companion(&signed, &qr.identity, &details)
        .map_err(|e| LinkError::Refused(e.to_string()))?;

    let record = Device {
        id: device,
        key_index,
        noise_key: qr.noise_key,
        identity: qr.identity,
        registration_id: registration.registration_id,
        signed_prekey: registration.signed_prekey.clone(),
        prekeys: Default::default(),
        adv_identity: signed,
        push_name: registration.push_name.clone(),
        paired_at: now,
        outbox: Default::default(),
    };
    {
        let mut state = account.lock();
        state.devices.insert(device, record);
        state.devices_changed_at = now;
    }
    shared.state_changed();
    tracing::info!(phone = %account.phone, device, "companion linked");
    deliver::devices_changed(shared, account, "add", device);
    seed::app_state(shared, account);
    let companion = CompanionBundle {
        device,
        registration_id: registration.registration_id,
        identity: registration.identity,
        signed_prekey: registration.signed_prekey.clone(),
        one_time: None,
    };
    queue_key_share(shared, account, device, companion.clone()).await;
    seed::history_sync(shared, account, device, companion).await;
    Ok(Linked {
        phone: account.phone.to_string(),
        device,
        jid: pn_jid(account.phone, device).to_string(),
        lid: lid_jid(account.lid, device).to_string(),
    })
}

fn pair_success(id: &str, account: &Account, device: u16, identity: Vec<u8>) -> Node {
    NodeBuilder::new("iq")
        .attr("from", server_jid())
        .attr("type", "set")
        .attr("id", id)
        .attr("xmlns", "md")
        .children([NodeBuilder::new("pair-success")
            .children([
                NodeBuilder::new("device-identity").bytes(identity).build(),
                NodeBuilder::new("device")
                    .attr("jid", pn_jid(account.phone, device))
                    .attr("lid", lid_jid(account.lid, device))
                    .build(),
                NodeBuilder::new("platform").attr("name", "sandbox").build(),
                // Every account is 1:1-LID-migrated, as WhatsApp's are now:
                // companions address DMs to LID-mapped contacts by LID.
                NodeBuilder::new("client-props")
                    .bytes(
                        wa::ClientPairingProps {
                            is_chat_db_lid_migrated: Some(true),
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    )
                    .build(),
            ])
            .build()])
        .build()
}

/// Waits for the answer to `<pair-success>`: the companion's signed identity,
/// or its refusal.
async fn await_device_sign(
    shared: &Shared,
    channel: &mut NodeChannel,
    id: &str,
) -> Result<Vec<u8>, Exchange> {
    let wait = async {
        loop {
            let node = channel.recv().await?;
            let is_answer = node.tag == "iq" && attr(&node, "id").as_deref() == Some(id);
            if !is_answer {
                answer_while_pairing(shared, channel, &node).await?;
                continue;
            }
            return device_sign(&node).map_err(Exchange::Link);
        }
    };
    match tokio::time::timeout(shared.config.pairing_timeout, wait).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::TimedOut.into()),
    }
}

/// The identity in `<iq type="result"><pair-device-sign><device-identity>`.
fn device_sign(answer: &Node) -> Result<Vec<u8>, LinkError> {
    if attr(answer, "type").as_deref() == Some("error") {
        let error = answer.get_optional_child("error");
        let text = error.and_then(|e| attr(e, "text")).unwrap_or_default();
        return Err(LinkError::Refused(text));
    }
    answer
        .get_optional_child("pair-device-sign")
        .and_then(|s| s.get_optional_child("device-identity"))
        .and_then(bytes)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| LinkError::Refused("no device identity in the answer".into()))
}

/// The phone shares the account's app-state key with the new companion; it
/// waits in the device's queue for its first login.
async fn queue_key_share(
    shared: &Shared,
    account: &Arc<Account>,
    device: u16,
    companion: CompanionBundle,
) {
    let key_indexes = account.lock().key_indexes();
    let sealed = account
        .sim
        .app_state_key_share(
            DeviceAddr::new(account.phone, device),
            Some(companion),
            &key_indexes,
            shared.now_millis() as i64,
        )
        .await;
    match sealed {
        Ok((sealed, plaintext)) => deliver::from_phone(shared, account, device, sealed, plaintext),
        Err(e) => tracing::warn!(error = %e, "could not encrypt the app-state key share"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes_parse_with_and_without_prefix() {
        let key = STANDARD.encode([1u8; 32]);
        let text = format!("2@abc,{key},{key},{key},1");
        let qr = QrCode::parse(&text).unwrap();
        assert_eq!(qr.reference, "2@abc");
        let prefixed = format!("{NATIVE_CAMERA_PREFIX}{text}");
        assert_eq!(QrCode::parse(&prefixed).unwrap().identity, [1; 32]);
        assert!(matches!(
            QrCode::parse("2@abc,xx"),
            Err(LinkError::BadQr(_))
        ));
        assert!(matches!(QrCode::parse(""), Err(LinkError::BadQr(_))));
    }
}
