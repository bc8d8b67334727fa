//! The simulated phone's Signal stores, as `wacore-libsignal` wants them:
//! sessions and remote identities per remote device, the phone's signed
//! prekey, and a pool of one-time prekeys that its bundles hand out.
//!
//! The stores are plain maps; `SignalState` is their serialisable form for
//! the `--state` file. The one-time prekey pool sits behind its own
//! short-lived lock because bundles are answered from synchronous iq code,
//! while sessions live behind the phone's async lock (see `phone`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use wacore_libsignal::protocol::{
    Direction, GenericSignedPreKey as _, IdentityChange, IdentityKey, IdentityKeyPair,
    IdentityKeyStore, KeyPair, PreKeyId, PreKeyRecord, PreKeyStore, PrivateKey, ProtocolAddress,
    SessionRecord, SessionStore, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord,
    SignedPreKeyStore, Timestamp,
};

/// One-time prekeys made at a time when the pool runs dry.
const PREKEY_BATCH: u32 = 50;
/// Handed-out prekeys kept for a pkmsg that may still come; older ones go.
const MAX_PREKEYS: usize = 2_000;

type Result<T> = std::result::Result<T, SignalProtocolError>;

/// The phone's one-time prekeys: every one not yet used by a pkmsg, and
/// the ids not yet handed out in a bundle.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct PreKeyPool {
    next_id: u32,
    #[serde(with = "key_map")]
    private: BTreeMap<u32, [u8; 32]>,
    fresh: VecDeque<u32>,
}

impl PreKeyPool {
    /// A prekey for a bundle (id, public key), never handed out before.
    pub fn offer(&mut self) -> Result<(u32, [u8; 32])> {
        if self.fresh.is_empty() {
            self.generate()?;
        }
        let id = self
            .fresh
            .pop_front()
            .ok_or(SignalProtocolError::InvalidPreKeyId)?;
        let pair = self.pair(id)?;
        let mut public = [0; 32];
        public.copy_from_slice(pair.public_key.public_key_bytes());
        Ok((id, public))
    }

    fn generate(&mut self) -> Result<()> {
        let mut rng = rand::rng();
        for _ in 0..PREKEY_BATCH {
            // Prekey ids are 24-bit on the wire; wrap within 1..2^24.
            self.next_id = self.next_id % 0xFF_FFFF + 1;
            let pair = KeyPair::generate(&mut rng);
            self.private
                .insert(self.next_id, *pair.private_key.serialize());
            self.fresh.push_back(self.next_id);
        }
        while self.private.len() > MAX_PREKEYS {
            let Some(oldest) = self.private.keys().find(|id| !self.fresh.contains(id)) else {
                break;
            };
            let oldest = *oldest;
            self.private.remove(&oldest);
        }
        Ok(())
    }

    fn pair(&self, id: u32) -> Result<KeyPair> {
        let private = self
            .private
            .get(&id)
            .ok_or(SignalProtocolError::InvalidPreKeyId)?;
        KeyPair::try_from(PrivateKey::deserialize(private)?)
            .map_err(|e| SignalProtocolError::InvalidArgument(e.to_string()))
    }

    pub fn consume(&mut self, id: u32) {
        self.private.remove(&id);
    }
}

/// The pool, shared by the phone and its prekey store.
#[derive(Clone, Default)]
pub(crate) struct SharedPool(Arc<Mutex<PreKeyPool>>);

impl SharedPool {
    pub fn new(pool: PreKeyPool) -> Self {
        Self(Arc::new(Mutex::new(pool)))
    }

    /// The pool; a poisoned lock holds consistent data (short updates).
    pub fn lock(&self) -> MutexGuard<'_, PreKeyPool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the state file keeps of a phone's Signal state.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct SignalState {
    #[serde(with = "bytes_map")]
    pub sessions: BTreeMap<String, Vec<u8>>,
    #[serde(with = "bytes_map")]
    pub identities: BTreeMap<String, Vec<u8>>,
    pub prekeys: PreKeyPool,
}

/// The stores libsignal borrows, each separately.
pub(crate) struct Stores {
    pub identity: Identities,
    pub sessions: Sessions,
    pub prekeys: PreKeys,
    pub signed: SignedPreKeys,
}

impl Stores {
    pub fn new(
        identity: IdentityKeyPair,
        registration_id: u32,
        signed: SignedPreKeyRecord,
        pool: SharedPool,
    ) -> Self {
        Self {
            identity: Identities {
                pair: identity,
                registration_id,
                known: HashMap::new(),
            },
            sessions: Sessions::default(),
            prekeys: PreKeys(pool),
            signed: SignedPreKeys(signed),
        }
    }

    /// Puts back sessions and identities from the state file; entries that
    /// do not decode are dropped (the peer starts a new session).
    pub fn restore(&mut self, state: &SignalState) {
        for (address, bytes) in &state.sessions {
            match SessionRecord::deserialize(bytes) {
                Ok(record) => {
                    self.sessions.0.insert(address.clone(), record);
                }
                Err(e) => tracing::warn!(%address, error = %e, "dropping a stored session"),
            }
        }
        for (address, bytes) in &state.identities {
            if let Ok(key) = IdentityKey::decode(bytes) {
                self.identity.known.insert(address.clone(), key);
            }
        }
    }

    pub fn snapshot(&self) -> SignalState {
        let sessions = self
            .sessions
            .0
            .iter()
            .filter_map(|(a, r)| Some((a.clone(), r.serialize().ok()?)))
            .collect();
        let identities = self
            .identity
            .known
            .iter()
            .map(|(a, k)| (a.clone(), k.serialize().to_vec()))
            .collect();
        SignalState {
            sessions,
            identities,
            prekeys: self.prekeys.0.lock().clone(),
        }
    }
}

/// The signed prekey record for the phone's own bundle.
pub(crate) fn signed_record(id: u32, pair: &KeyPair, signature: &[u8]) -> SignedPreKeyRecord {
    SignedPreKeyRecord::new(
        SignedPreKeyId::from(id),
        Timestamp::from_epoch_millis(0),
        pair,
        signature,
    )
}

#[derive(Default)]
pub(crate) struct Sessions(pub HashMap<String, SessionRecord>);

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> Result<Option<SessionRecord>> {
        Ok(self.0.get(address.as_str()).cloned())
    }

    async fn has_session(&self, address: &ProtocolAddress) -> Result<bool> {
        Ok(self.0.contains_key(address.as_str()))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> Result<()> {
        self.0.insert(address.as_str().to_owned(), record);
        Ok(())
    }
}

pub(crate) struct Identities {
    pair: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<String, IdentityKey>,
}

#[async_trait::async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> Result<IdentityKeyPair> {
        Ok(self.pair.clone())
    }

    async fn get_local_registration_id(&self) -> Result<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> Result<IdentityChange> {
        let previous = self.known.insert(address.as_str().to_owned(), *identity);
        Ok(IdentityChange::from_changed(
            previous.is_some_and(|p| p != *identity),
        ))
    }

    // A simulated phone trusts every device: the sandbox checked their ADV
    // identities, and a test peer that re-pairs must not be locked out.
    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> Result<bool> {
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> Result<Option<IdentityKey>> {
        Ok(self.known.get(address.as_str()).copied())
    }
}

pub(crate) struct PreKeys(SharedPool);

#[async_trait::async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, id: PreKeyId) -> Result<PreKeyRecord> {
        let pair = self.0.lock().pair(u32::from(id))?;
        Ok(PreKeyRecord::new(id, &pair))
    }

    // Kept in the pool: the phone never makes prekeys through libsignal.
    async fn save_pre_key(&mut self, _id: PreKeyId, _record: &PreKeyRecord) -> Result<()> {
        Ok(())
    }

    async fn remove_pre_key(&mut self, id: PreKeyId) -> Result<()> {
        self.0.lock().consume(u32::from(id));
        Ok(())
    }
}

pub(crate) struct SignedPreKeys(SignedPreKeyRecord);

#[async_trait::async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> Result<SignedPreKeyRecord> {
        if self.0.id()? == id {
            Ok(self.0.clone())
        } else {
            Err(SignalProtocolError::InvalidSignedPreKeyId)
        }
    }

    async fn save_signed_pre_key(
        &mut self,
        _id: SignedPreKeyId,
        _record: &SignedPreKeyRecord,
    ) -> Result<()> {
        Ok(())
    }
}

/// `BTreeMap<u32, [u8; 32]>` as a JSON object of base64 strings.
mod key_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Key(#[serde(with = "crate::accounts::b64")] [u8; 32]);

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<u32, [u8; 32]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let keyed: BTreeMap<String, Key> = map
            .iter()
            .map(|(id, k)| (id.to_string(), Key(*k)))
            .collect();
        keyed.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, [u8; 32]>, D::Error> {
        let keyed = BTreeMap::<String, Key>::deserialize(d)?;
        keyed
            .into_iter()
            .map(|(id, k)| {
                let id = id.parse().map_err(serde::de::Error::custom)?;
                Ok((id, k.0))
            })
            .collect()
    }
}

/// `BTreeMap<String, Vec<u8>>` with base64 values.
mod bytes_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Bytes(#[serde(with = "crate::accounts::b64")] Vec<u8>);

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let wrapped: BTreeMap<&String, Bytes> =
            map.iter().map(|(a, b)| (a, Bytes(b.clone()))).collect();
        wrapped.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let wrapped = BTreeMap::<String, Bytes>::deserialize(d)?;
        Ok(wrapped.into_iter().map(|(a, b)| (a, b.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_prekeys_are_new_each_time_and_survive_json() {
        let mut pool = PreKeyPool::default();
        let (a, _) = pool.offer().unwrap();
        let (b, public_b) = pool.offer().unwrap();
        assert_ne!(a, b);
        let json = serde_json::to_string(&pool).unwrap();
        let back: PreKeyPool = serde_json::from_str(&json).unwrap();
        let pair = back.pair(b).unwrap();
        assert_eq!(pair.public_key.public_key_bytes(), public_b);
        let mut back = back;
        back.consume(b);
        assert!(back.pair(b).is_err());
    }
}
