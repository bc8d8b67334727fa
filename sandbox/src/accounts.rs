//! Accounts and their devices: the sandbox's directory of simulated users.
//!
//! An account is a phone number with a LID and a simulated phone (device 0,
//! `phone::SimPhone`); paired companions are devices 1, 2, ... with the keys
//! they registered and uploaded, and an outbound queue each. Each account
//! has its own lock, held only for short synchronous updates (never across
//! an await); the directory lock is held only to find or add an account.
//!
//! What this module must not do: talk to connections (that is `online`)
//! or touch the disk (that is `state`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};
use wacore_binary::Node;

use super::jid::UserRef;
use super::phone::SimPhone;

/// A phone number in E.164 form (digits only), parsed once at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(u64);

/// Why a string is not a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Something other than digits, a leading `+`, spaces and dashes.
    #[error("a phone number holds only digits (with an optional leading +, spaces, dashes)")]
    NotDigits,
    /// Fewer than 7 or more than 15 digits, or a leading 0.
    #[error("a phone number has 7 to 15 digits and does not start with 0")]
    BadLength,
}

impl Phone {
    /// `+62 811-0000-0301` is `6281100000301`; see [`PhoneError`].
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let digits: String = body.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::NotDigits);
        }
        if !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(PhoneError::BadLength);
        }
        digits.parse().map(Phone).map_err(|_| PhoneError::BadLength)
    }

    /// The `username` of a login payload, or a JID's user part.
    pub fn from_number(number: u64) -> Option<Self> {
        Self::parse(&number.to_string()).ok()
    }

    /// The number's digits as an integer.
    pub fn number(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for Phone {
    type Error = PhoneError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Phone::parse(&value)
    }
}

impl From<Phone> for String {
    fn from(phone: Phone) -> Self {
        phone.to_string()
    }
}

/// An account's LID (the user part of `LID@lid`), unique in the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Lid(pub u64);

/// LIDs are 15-digit numbers; ours count up from here.
pub(crate) const FIRST_LID: u64 = 100_000_000_000_001;

impl std::fmt::Display for Lid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A companion's signed prekey, as registered or uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SignedPreKey {
    pub id: u32,
    #[serde(with = "b64")]
    pub public: [u8; 32],
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
}

/// A one-time prekey; handed out once, then gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PreKey {
    pub id: u32,
    #[serde(with = "b64")]
    pub public: [u8; 32],
}

/// A linked companion device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Device {
    pub id: u16,
    pub key_index: u32,
    /// Its Noise static key: a login must come from this key.
    #[serde(with = "b64")]
    pub noise_key: [u8; 32],
    #[serde(with = "b64")]
    pub identity: [u8; 32],
    pub registration_id: u32,
    pub signed_prekey: SignedPreKey,
    pub prekeys: VecDeque<PreKey>,
    /// The `ADVSignedDeviceIdentity` it signed back at pairing.
    #[serde(with = "b64")]
    pub adv_identity: Vec<u8>,
    pub push_name: String,
    pub paired_at: u64,
    /// Stanzas waiting for this device.
    #[serde(default)]
    pub outbox: Outbox,
}

/// What takes a queued stanza out of a device's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A message: the device's receipt for it (never a retry receipt).
    Message,
    /// A forwarded receipt or a notification: the device's `<ack>` of it.
    Acked,
}

/// A phone's message as it was before encryption, kept while it is queued
/// so that a retry receipt can have it encrypted again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Resend {
    pub from: Phone,
    #[serde(with = "b64")]
    pub plaintext: Vec<u8>,
}

/// A stanza queued for a device, kept until what settles it arrives.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub seq: u64,
    pub id: String,
    pub kind: Kind,
    pub node: Node,
    pub resend: Option<Arc<Resend>>,
}

/// A device's queue; in the state file its stanzas are kept in their
/// binary wire form.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(into = "stored::Outbox", try_from = "stored::Outbox")]
pub(crate) struct Outbox {
    items: VecDeque<Queued>,
    next_seq: u64,
}

impl Outbox {
    /// Queues a stanza; a message replaces a queued message with its id
    /// (a resend after a retry receipt), and goes out again.
    pub fn push(&mut self, id: String, kind: Kind, node: Node, resend: Option<Arc<Resend>>) {
        if kind == Kind::Message {
            self.take(&id, Kind::Message);
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        self.items.push_back(Queued {
            seq,
            id,
            kind,
            node,
            resend,
        });
    }

    /// Items queued after `seq` (0 for all of them).
    pub fn after(&self, seq: u64) -> Vec<Queued> {
        self.items.iter().filter(|q| q.seq > seq).cloned().collect()
    }

    /// Removes the item of this kind and id, and returns it.
    pub fn take(&mut self, id: &str, kind: Kind) -> Option<Queued> {
        let at = self
            .items
            .iter()
            .position(|q| q.id == id && q.kind == kind)?;
        self.items.remove(at)
    }

    /// The queued message with this id.
    pub fn message(&self, id: &str) -> Option<&Queued> {
        self.items
            .iter()
            .find(|q| q.id == id && q.kind == Kind::Message)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}

/// The state file's form of an outbox.
mod stored {
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};

    use super::{Kind, Queued, Resend, b64};

    #[derive(Serialize, Deserialize)]
    pub struct Outbox {
        next_seq: u64,
        items: Vec<Item>,
    }

    #[derive(Serialize, Deserialize)]
    struct Item {
        seq: u64,
        id: String,
        kind: Kind,
        #[serde(with = "b64")]
        node: Vec<u8>,
        resend: Option<Resend>,
    }

    impl From<super::Outbox> for Outbox {
        fn from(outbox: super::Outbox) -> Self {
            let items = outbox.items.into_iter().filter_map(|q| {
                let node = wacore_binary::marshal::marshal(&q.node)
                    .inspect_err(|e| tracing::warn!(error = %e, "a queued stanza is not kept"))
                    .ok()?;
                let resend = q.resend.map(|r| (*r).clone());
                Some(Item {
                    seq: q.seq,
                    id: q.id,
                    kind: q.kind,
                    node,
                    resend,
                })
            });
            Self {
                next_seq: outbox.next_seq,
                items: items.collect(),
            }
        }
    }

    impl TryFrom<Outbox> for super::Outbox {
        type Error = wacore_binary::BinaryError;

        fn try_from(stored: Outbox) -> Result<Self, Self::Error> {
            let mut items = std::collections::VecDeque::new();
            for item in stored.items {
                let unpacked = wacore_binary::util::unpack(&item.node)?;
                let node = wacore_binary::marshal::unmarshal_ref(&unpacked)?.to_owned();
                items.push_back(Queued {
                    seq: item.seq,
                    id: item.id,
                    kind: item.kind,
                    node,
                    resend: item.resend.map(Arc::new),
                });
            }
            Ok(Self {
                items,
                next_seq: stored.next_seq,
            })
        }
    }
}

/// A text a simulated phone received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Received {
    pub id: String,
    pub from: Phone,
    /// The sending device: read receipts go back to it.
    pub from_device: u16,
    /// Whether the sender wrote to the phone's LID (receipts then come
    /// from the LID as well).
    #[serde(default)]
    pub by_lid: bool,
    pub text: String,
    /// Unix seconds.
    pub at: u64,
    #[serde(default)]
    pub read: bool,
    /// What a media message carried, as the phone found it (the text is
    /// then its caption, or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<ReceivedMedia>,
}

/// A media file a simulated phone received: fetched from the media host,
/// decrypted, and checked against the hashes its message names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = InboxMedia)]
pub struct ReceivedMedia {
    /// `image`, `video`, `audio`, `document` or `sticker`.
    pub kind: String,
    /// The MIME type the message names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<String>,
    /// A document's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// The decrypted file's size in bytes (0 when it could not be read).
    pub size: u64,
    /// The decrypted file's SHA-256, hex: what the sender sent, once
    /// `verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The blob was found, its MAC held, and the plaintext hashes to the
    /// message's `file_sha256`.
    pub verified: bool,
    /// Why not, when not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An audio sent as a voice note (`ptt`) rather than as a file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub voice: bool,
}

/// Texts kept per phone; older ones are dropped.
const MAX_INBOX: usize = 10_000;

/// An account's ADV key-index list, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyIndexes {
    pub valid: Vec<u32>,
    pub current: u32,
}

/// The mutable part of an account, behind the account's lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccountState {
    pub created_at: u64,
    /// Next companion device id; ids are never reused.
    pub next_device: u16,
    pub next_key_index: u32,
    pub devices: BTreeMap<u16, Device>,
    /// Unlinked devices: their logins are refused.
    pub removed: BTreeSet<u16>,
    /// When a device was last linked or removed: the key-index list's time.
    #[serde(default)]
    pub devices_changed_at: u64,
    /// Texts the phone received, oldest first.
    #[serde(default)]
    pub inbox: VecDeque<Received>,
    /// The push name this account was made for by the e2e suite's
    /// contract (`mock`), if it was.
    #[serde(default)]
    pub push_name: Option<String>,
    /// What the account's push name asks of the server.
    #[serde(default)]
    pub behaviour: Behaviour,
    /// The id of its profile picture, if it has one.
    #[serde(default)]
    pub picture: Option<String>,
    /// App-state patches by collection name; patch N is version N + 1.
    #[serde(default)]
    pub app_state: BTreeMap<String, Vec<Patch>>,
    /// Whether the phone has written its own settings into app state (it
    /// does so when its first companion links, see `seed`).
    #[serde(default)]
    pub seeded: bool,
    /// The account's NCT salt (empty: none), the key of the contact-secret
    /// tokens its devices attach to first messages.
    #[serde(default, with = "b64")]
    pub nct_salt: Vec<u8>,
}

/// An app-state patch as its device uploaded it (encrypted), numbered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Patch(#[serde(with = "b64")] pub Vec<u8>);

/// Server behaviours an account can be given (by its push name, see
/// `mock`): whether strangers need a privacy token to write to it first,
/// and which kinds of token it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Behaviour {
    pub restricted: bool,
    /// Trusted-contact tokens (`tctoken`) open a restricted account.
    pub tc_enabled: bool,
    /// Contact-secret tokens (`cstoken`) open a restricted account.
    pub cs_enabled: bool,
    /// Whether the simulated phone answers what it receives with delivery
    /// receipts, as a phone that is switched on does.
    #[serde(default = "yes")]
    pub phone_online: bool,
    /// The account's NCT (contact-secret token) experiments, told to its
    /// companions as A/B props: sending `<cstoken>`, and taking the salt
    /// from history sync and from app state.
    #[serde(default)]
    pub nct_send_ab: bool,
    #[serde(default)]
    pub nct_history_ab: bool,
    #[serde(default)]
    pub nct_syncd_ab: bool,
    /// Whether the phone delivers the account's NCT salt to a new
    /// companion in its initial history sync, and in app state.
    #[serde(default)]
    pub nct_history_delivery: bool,
    #[serde(default)]
    pub nct_syncd_delivery: bool,
}

impl Behaviour {
    /// Whether the account has an NCT salt for its phone to deliver.
    pub fn delivers_nct_salt(&self) -> bool {
        self.nct_history_delivery || self.nct_syncd_delivery
    }
}

fn yes() -> bool {
    true
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            restricted: false,
            tc_enabled: true,
            cs_enabled: true,
            phone_online: true,
            nct_send_ab: false,
            nct_history_ab: false,
            nct_syncd_ab: false,
            nct_history_delivery: false,
            nct_syncd_delivery: false,
        }
    }
}

impl AccountState {
    fn new(created_at: u64) -> Self {
        Self {
            created_at,
            next_device: 1,
            next_key_index: 1,
            devices: BTreeMap::new(),
            removed: BTreeSet::new(),
            devices_changed_at: created_at,
            inbox: VecDeque::new(),
            push_name: None,
            behaviour: Behaviour::default(),
            picture: None,
            app_state: BTreeMap::new(),
            seeded: false,
            nct_salt: Vec::new(),
        }
    }

    /// Gives the account its behaviour, and an NCT salt when its phone is
    /// to deliver one.
    pub fn set_behaviour(&mut self, behaviour: Behaviour) {
        self.behaviour = behaviour;
        if behaviour.delivers_nct_salt() && self.nct_salt.is_empty() {
            self.nct_salt = rand::random::<[u8; 32]>().to_vec();
        }
    }

    pub fn nct_salt(&self) -> Option<&[u8]> {
        (!self.nct_salt.is_empty()).then_some(self.nct_salt.as_slice())
    }

    /// Adds a text to the phone's inbox; false if it is there already (a
    /// sender repeats a message whose receipt it missed).
    pub fn receive(&mut self, text: Received) -> bool {
        if self
            .inbox
            .iter()
            .any(|r| r.id == text.id && r.from == text.from)
        {
            return false;
        }
        if self.inbox.len() >= MAX_INBOX {
            self.inbox.pop_front();
        }
        self.inbox.push_back(text);
        true
    }

    /// Reserves the id and key index of the next companion.
    pub fn reserve_device(&mut self) -> Option<(u16, u32)> {
        let device = self.next_device;
        let key_index = self.next_key_index;
        self.next_device = device.checked_add(1)?;
        self.next_key_index = key_index.checked_add(1)?;
        Some((device, key_index))
    }

    /// Every device id, the phone (0) first.
    pub fn device_ids(&self) -> Vec<u16> {
        std::iter::once(0)
            .chain(self.devices.keys().copied())
            .collect()
    }

    /// The ADV key indexes: the phone's (0) and each companion's are valid;
    /// the current one is the last ever issued, so that removed companions'
    /// indexes fall below it and clients drop them.
    pub fn key_indexes(&self) -> KeyIndexes {
        KeyIndexes {
            valid: std::iter::once(0)
                .chain(self.devices.values().map(|d| d.key_index))
                .collect(),
            current: self.next_key_index.saturating_sub(1),
        }
    }
}

/// One account: immutable identity plus its locked state.
pub(crate) struct Account {
    pub phone: Phone,
    pub lid: Lid,
    pub sim: SimPhone,
    state: Mutex<AccountState>,
}

impl Account {
    pub fn new(phone: Phone, lid: Lid, sim: SimPhone, state: AccountState) -> Self {
        Self {
            phone,
            lid,
            sim,
            state: Mutex::new(state),
        }
    }

    /// The account's state; a poisoned lock still holds consistent data
    /// (every update is a few field writes), so it is used as is.
    pub fn lock(&self) -> MutexGuard<'_, AccountState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DirectoryError {
    #[error("phone {0} already has an account")]
    Exists(Phone),
    #[error("the sandbox has run out of LIDs")]
    NoLid,
    #[error("the sandbox has run out of phone numbers")]
    NoNumber,
}

#[derive(Default)]
struct DirectoryInner {
    by_phone: HashMap<Phone, Arc<Account>>,
    by_lid: HashMap<Lid, Phone>,
    /// Accounts made for a push name (`for_push_name`).
    by_push_name: HashMap<String, Phone>,
    next_lid: u64,
    /// The next number `for_push_name` tries.
    next_number: u64,
}

/// Numbers the sandbox hands out itself count up from here (+1 555: a
/// range no real subscriber has).
const FIRST_NUMBER: u64 = 15_550_000_001;

impl DirectoryInner {
    fn insert_new(
        &mut self,
        phone: Phone,
        sim: SimPhone,
        state: AccountState,
    ) -> Result<Arc<Account>, DirectoryError> {
        if self.by_phone.contains_key(&phone) {
            return Err(DirectoryError::Exists(phone));
        }
        let lid = Lid(self.next_lid);
        self.next_lid = self.next_lid.checked_add(1).ok_or(DirectoryError::NoLid)?;
        let account = Arc::new(Account::new(phone, lid, sim, state));
        self.by_lid.insert(lid, phone);
        self.by_phone.insert(phone, account.clone());
        Ok(account)
    }

    /// A number no account has yet.
    fn fresh_number(&mut self) -> Result<Phone, DirectoryError> {
        loop {
            let number = self.next_number.max(FIRST_NUMBER);
            self.next_number = number + 1;
            let phone = Phone::from_number(number).ok_or(DirectoryError::NoNumber)?;
            if !self.by_phone.contains_key(&phone) {
                return Ok(phone);
            }
        }
    }
}

/// All accounts, by phone number and by LID.
pub(crate) struct Directory {
    inner: RwLock<DirectoryInner>,
}

impl Directory {
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(DirectoryInner {
                next_lid: FIRST_LID,
                ..Default::default()
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, DirectoryInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, DirectoryInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates an account with a fresh LID and a new simulated phone.
    pub fn create(&self, phone: Phone, now: u64) -> Result<Arc<Account>, DirectoryError> {
        let sim = SimPhone::generate();
        self.write().insert_new(phone, sim, AccountState::new(now))
    }

    /// The account that stands for a push name: the same name always gets
    /// the same account; a new name (or an empty one) a new account with a
    /// fresh number and `behaviour`. Returns it and whether it is new.
    pub fn for_push_name(
        &self,
        push_name: &str,
        behaviour: Behaviour,
        now: u64,
    ) -> Result<(Arc<Account>, bool), DirectoryError> {
        if let Some(account) = self.named(push_name) {
            return Ok((account, false));
        }
        let sim = SimPhone::generate();
        let mut inner = self.write();
        // Another scan for the same name may have won the race meanwhile.
        let existing = inner.by_push_name.get(push_name).copied();
        if let Some(account) = existing.and_then(|p| inner.by_phone.get(&p).cloned()) {
            return Ok((account, false));
        }
        let phone = inner.fresh_number()?;
        let mut state = AccountState::new(now);
        state.set_behaviour(behaviour);
        if !push_name.is_empty() {
            state.push_name = Some(push_name.to_owned());
            inner.by_push_name.insert(push_name.to_owned(), phone);
        }
        Ok((inner.insert_new(phone, sim, state)?, true))
    }

    fn named(&self, push_name: &str) -> Option<Arc<Account>> {
        if push_name.is_empty() {
            return None;
        }
        let inner = self.read();
        let phone = inner.by_push_name.get(push_name)?;
        inner.by_phone.get(phone).cloned()
    }

    /// Puts back an account read from the state file.
    pub fn restore(&self, account: Account) {
        let mut inner = self.write();
        inner.next_lid = inner.next_lid.max(account.lid.0 + 1);
        inner.by_lid.insert(account.lid, account.phone);
        if let Some(name) = account.lock().push_name.clone() {
            inner.next_number = inner.next_number.max(account.phone.number() + 1);
            inner.by_push_name.insert(name, account.phone);
        }
        inner.by_phone.insert(account.phone, Arc::new(account));
    }

    pub fn get(&self, phone: Phone) -> Option<Arc<Account>> {
        self.read().by_phone.get(&phone).cloned()
    }

    /// The account a JID names, by phone number or by LID.
    pub fn resolve(&self, user: UserRef) -> Option<Arc<Account>> {
        let inner = self.read();
        let phone = match user {
            UserRef::Phone(phone, _) => phone,
            UserRef::Lid(lid, _) => *inner.by_lid.get(&lid)?,
        };
        inner.by_phone.get(&phone).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Account>> {
        self.read().by_phone.values().cloned().collect()
    }

    pub fn next_lid(&self) -> u64 {
        self.read().next_lid
    }

    pub fn set_next_lid(&self, next: u64) {
        let mut inner = self.write();
        inner.next_lid = inner.next_lid.max(next);
    }
}

/// What the control API and tests see of an account: its simulated phone
/// (device 0) and its companions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    /// The phone number, digits only.
    pub phone: String,
    /// The account's LID: its digits, without `@lid`.
    pub lid: String,
    /// Device ids, the phone (0) first.
    pub devices: Vec<u16>,
    /// Device ids with a logged-in connection.
    pub online: Vec<u16>,
}

/// Base64 (standard alphabet) for key bytes in the state file.
pub(crate) mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(value))
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<Vec<u8>>,
    {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text).map_err(D::Error::custom)?;
        T::try_from(bytes).map_err(|_| D::Error::custom("key of the wrong length"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_parsed_once_and_strictly() {
        assert_eq!(
            Phone::parse("+62 811-2345-678").unwrap().to_string(),
            "628112345678"
        );
        assert_eq!(Phone::parse("62a811"), Err(PhoneError::NotDigits));
        assert_eq!(Phone::parse(""), Err(PhoneError::NotDigits));
        assert_eq!(Phone::parse("0811234567"), Err(PhoneError::BadLength));
        assert_eq!(Phone::parse("123456"), Err(PhoneError::BadLength));
        assert_eq!(Phone::parse("1234567890123456"), Err(PhoneError::BadLength));
    }

    #[test]
    fn accounts_get_distinct_lids_and_refuse_duplicates() {
        let dir = Directory::new();
        let a = dir.create(Phone::parse("62811000001").unwrap(), 1).unwrap();
        let b = dir.create(Phone::parse("62811000002").unwrap(), 1).unwrap();
        assert_ne!(a.lid, b.lid);
        assert!(matches!(
            dir.create(a.phone, 1),
            Err(DirectoryError::Exists(_))
        ));
        assert_eq!(dir.resolve(UserRef::Lid(b.lid, 0)).unwrap().phone, b.phone);
    }

    #[test]
    fn outbox_keeps_items_until_settled() {
        let mut outbox = Outbox::default();
        outbox.push("a".into(), Kind::Message, Node::default(), None);
        outbox.push("b".into(), Kind::Message, Node::default(), None);
        outbox.push("a".into(), Kind::Acked, Node::default(), None);
        assert_eq!(outbox.after(1).len(), 2);
        assert!(outbox.take("a", Kind::Message).is_some());
        assert!(outbox.take("a", Kind::Message).is_none());
        assert_eq!(outbox.after(0).len(), 2);
        // A message queued again replaces the old copy and goes out anew.
        outbox.push("b".into(), Kind::Message, Node::default(), None);
        let left = outbox.after(0);
        assert_eq!(left.len(), 2);
        assert_eq!((left[1].id.as_str(), left[1].seq), ("b", 4));
    }

    #[test]
    fn an_outbox_reads_back_from_json_as_written() {
        let mut outbox = Outbox::default();
        let node = wacore_binary::builder::NodeBuilder::new("message")
            .attr("id", "x")
            .children([wacore_binary::builder::NodeBuilder::new("enc")
                .bytes(vec![1, 2, 3])
                .build()])
            .build();
        let resend = Resend {
            from: Phone::parse("62811000001").unwrap(),
            plaintext: vec![4, 5],
        };
        outbox.push(
            "x".into(),
            Kind::Message,
            node.clone(),
            Some(Arc::new(resend)),
        );
        let json = serde_json::to_string(&outbox).unwrap();
        let back: Outbox = serde_json::from_str(&json).unwrap();
        let item = back.message("x").unwrap();
        assert_eq!(item.node, node);
        assert_eq!(item.resend.as_ref().unwrap().plaintext, [4, 5]);
        assert_eq!(back.next_seq, 1);
    }
}
