//! The simulated phone: an account's primary device (device 0), with a real
//! Signal identity. It signs each companion's ADV device identity when it
//! scans a QR, signs the account's key-index list, checks the companion's
//! counter-signature, and sends the companion the app-state key share (an
//! end-to-end encrypted message, so the client need not wait for it). It
//! encrypts to and decrypts from any device, its own companions' or other
//! accounts', with one Signal session per remote device.
//!
//! Long-term keys are `PhoneKeys`; the Signal stores (`signal`) live behind
//! an async lock, never held by callers. Both are kept in the state file.

use buffa::Message as _;
use hmac::{KeyInit as _, Mac as _};
use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use wacore_libsignal::protocol::{
    self as signal, CiphertextMessage, DeviceId, IdentityKey, IdentityKeyPair, KeyPair,
    PreKeyBundle, PreKeySignalMessage, PrivateKey, ProtocolAddress, PublicKey, SignalMessage,
    SignalProtocolError, UsePQRatchet,
};
use waproto::whatsapp::{self as wa, message as msg};

use super::accounts::{KeyIndexes, PreKey, SignedPreKey, b64};
use super::jid::DeviceAddr;
use super::signal::{self as stores, SharedPool, SignalState, Stores};

const ADV_ACCOUNT_SIGNATURE: [u8; 2] = [6, 0];
const ADV_DEVICE_SIGNATURE: [u8; 2] = [6, 1];
const ADV_KEY_INDEX_LIST: [u8; 2] = [6, 2];

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PhoneError {
    #[error("stored phone key is invalid: {0}")]
    BadKey(String),
    #[error("signal: {0}")]
    Signal(#[from] SignalProtocolError),
    #[error("the companion's answer does not decode: {0}")]
    Decode(#[from] buffa::DecodeError),
    #[error("the companion's signature does not verify")]
    BadSignature,
    #[error("the companion signed other details than the phone did")]
    DetailsMismatch,
    #[error("unknown <enc> type {0:?}")]
    EncType(String),
}

/// The phone's long-term secrets, as kept in the state file.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct PhoneKeys {
    #[serde(with = "b64")]
    pub identity: [u8; 32],
    pub registration_id: u32,
    pub signed_prekey_id: u32,
    #[serde(with = "b64")]
    pub signed_prekey: [u8; 32],
    #[serde(with = "b64")]
    pub signed_prekey_signature: Vec<u8>,
    /// The account's ADV id, in every device identity and key-index list.
    pub adv_raw_id: u32,
    #[serde(with = "b64")]
    pub app_state_key_id: Vec<u8>,
    #[serde(with = "b64")]
    pub app_state_key: [u8; 32],
}

/// A companion's keys for X3DH: registered at pairing or uploaded since,
/// with one of its one-time prekeys when it has any left.
#[derive(Debug, Clone)]
pub(crate) struct CompanionBundle {
    pub device: u16,
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_prekey: SignedPreKey,
    pub one_time: Option<PreKey>,
}

/// What a decryption yields: the padded plaintext and the `<enc>` type.
pub(crate) struct Opened {
    pub plaintext: Vec<u8>,
    pub prekey_message: bool,
}

/// An encrypted message from the phone: `<enc type=..>` and its bytes.
pub(crate) struct Sealed {
    pub enc_type: &'static str,
    pub ciphertext: Vec<u8>,
}

pub(crate) struct SimPhone {
    keys: PhoneKeys,
    identity: KeyPair,
    identity_public: [u8; 32],
    signed_prekey_public: [u8; 32],
    pool: SharedPool,
    signal: tokio::sync::Mutex<Stores>,
}

impl SimPhone {
    /// A new phone with fresh keys.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let identity = KeyPair::generate(&mut rng);
        let signed = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .expect("XEdDSA signs with any Curve25519 key");
        let keys = PhoneKeys {
            identity: *identity.private_key.serialize(),
            registration_id: rng.random_range(1..16380),
            signed_prekey_id: 1,
            signed_prekey: *signed.private_key.serialize(),
            signed_prekey_signature: signature.to_vec(),
            adv_raw_id: rng.random(),
            app_state_key_id: rng.random::<[u8; 6]>().to_vec(),
            app_state_key: rng.random(),
        };
        Self::new(keys, identity, &signed, &SignalState::default())
    }

    /// The phone of a state file, with its Signal state when it was kept.
    pub fn from_keys(keys: PhoneKeys, signal: &SignalState) -> Result<Self, PhoneError> {
        let identity = key_pair(&keys.identity)?;
        let signed = key_pair(&keys.signed_prekey)?;
        Ok(Self::new(keys, identity, &signed, signal))
    }

    fn new(keys: PhoneKeys, identity: KeyPair, signed: &KeyPair, state: &SignalState) -> Self {
        let pool = SharedPool::new(state.prekeys.clone());
        let record =
            stores::signed_record(keys.signed_prekey_id, signed, &keys.signed_prekey_signature);
        let mut signal = Stores::new(
            IdentityKeyPair::from(identity.clone()),
            keys.registration_id,
            record,
            pool.clone(),
        );
        signal.restore(state);
        Self {
            identity_public: public_bytes(&identity.public_key),
            signed_prekey_public: public_bytes(&signed.public_key),
            identity,
            keys,
            pool,
            signal: tokio::sync::Mutex::new(signal),
        }
    }

    /// The Signal state to keep in the state file.
    pub async fn signal_state(&self) -> SignalState {
        self.signal.lock().await.snapshot()
    }

    /// A one-time prekey for the phone's bundle, handed out once.
    pub fn offer_prekey(&self) -> Result<PreKey, PhoneError> {
        let (id, public) = self.pool.lock().offer()?;
        Ok(PreKey { id, public })
    }

    pub fn keys(&self) -> &PhoneKeys {
        &self.keys
    }

    pub fn identity_public(&self) -> [u8; 32] {
        self.identity_public
    }

    /// The phone's signed prekey, for its own bundle.
    pub fn signed_prekey(&self) -> SignedPreKey {
        SignedPreKey {
            id: self.keys.signed_prekey_id,
            public: self.signed_prekey_public,
            signature: self.keys.signed_prekey_signature.clone(),
        }
    }

    /// The ADV device identity for a companion, as sent in `<pair-success>`:
    /// `(details, ADVSignedDeviceIdentityHMAC bytes)`.
    pub fn sign_companion(
        &self,
        companion_identity: &[u8; 32],
        adv_secret: &[u8; 32],
        key_index: u32,
        now: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), PhoneError> {
        let details = wa::ADVDeviceIdentity {
            raw_id: Some(self.keys.adv_raw_id),
            timestamp: Some(now),
            key_index: Some(key_index),
            account_type: Some(wa::ADVEncryptionType::E2EE),
            device_type: Some(wa::ADVEncryptionType::E2EE),
        }
        .encode_to_vec();
        let message = [&ADV_ACCOUNT_SIGNATURE[..], &details, companion_identity].concat();
        let signed = wa::ADVSignedDeviceIdentity {
            details: Some(details.clone()),
            account_signature_key: Some(self.identity_public.to_vec()),
            account_signature: Some(self.sign(&message)?),
            device_signature: None,
        }
        .encode_to_vec();
        let mut mac = HmacSha256::new_from_slice(adv_secret)
            .map_err(|e| PhoneError::BadKey(e.to_string()))?;
        mac.update(&signed);
        let container = wa::ADVSignedDeviceIdentityHMAC {
            details: Some(signed),
            hmac: Some(mac.finalize().into_bytes().to_vec()),
            account_type: Some(wa::ADVEncryptionType::E2EE),
        }
        .encode_to_vec();
        Ok((details, container))
    }

    /// Checks the companion's `<pair-device-sign>` identity: our details, our
    /// account signature, and its device signature over both.
    pub fn verify_companion(
        &self,
        signed: &[u8],
        companion_identity: &[u8; 32],
        details: &[u8],
    ) -> Result<(), PhoneError> {
        let identity = wa::ADVSignedDeviceIdentity::decode_from_slice(signed)?;
        if identity.details.as_deref() != Some(details) {
            return Err(PhoneError::DetailsMismatch);
        }
        let device_signature = identity.device_signature.unwrap_or_default();
        let message = [
            &ADV_DEVICE_SIGNATURE[..],
            details,
            companion_identity,
            &self.identity_public,
        ]
        .concat();
        let key = PublicKey::from_djb_public_key_bytes(companion_identity)
            .map_err(|e| PhoneError::BadKey(e.to_string()))?;
        if key.verify_signature(&message, &device_signature) {
            Ok(())
        } else {
            Err(PhoneError::BadSignature)
        }
    }

    /// The account's signed key-index list for usync answers.
    pub fn key_index_list(&self, indexes: &KeyIndexes, ts: u64) -> Result<Vec<u8>, PhoneError> {
        let details = wa::ADVKeyIndexList {
            raw_id: Some(self.keys.adv_raw_id),
            timestamp: Some(ts),
            current_index: Some(indexes.current),
            valid_indexes: indexes.valid.clone(),
            account_type: Some(wa::ADVEncryptionType::E2EE),
        }
        .encode_to_vec();
        let message = [&ADV_KEY_INDEX_LIST[..], &details].concat();
        Ok(wa::ADVSignedKeyIndexList {
            account_signature: Some(self.sign(&message)?),
            account_signature_key: Some(self.identity_public.to_vec()),
            details: Some(details),
        }
        .encode_to_vec())
    }

    /// The account's app-state sync key, shared with a new companion as the
    /// phone does right after pairing (from the companion's registered keys)
    /// and with a companion that asks for it (on their session); encrypted
    /// to that companion, with the padded plaintext, kept in case the
    /// companion cannot decrypt it.
    pub async fn app_state_key_share(
        &self,
        to: DeviceAddr,
        companion: Option<CompanionBundle>,
        key_indexes: &KeyIndexes,
        now_ms: i64,
    ) -> Result<(Sealed, Vec<u8>), PhoneError> {
        let share = self.key_share_message(key_indexes, now_ms);
        self.seal(to, companion, &share).await
    }

    /// A message from the phone to one of its companions, padded and
    /// encrypted (from `companion`'s registered keys when there is no
    /// session yet); with the padded plaintext, for a resend.
    pub async fn seal(
        &self,
        to: DeviceAddr,
        companion: Option<CompanionBundle>,
        message: &wa::Message,
    ) -> Result<(Sealed, Vec<u8>), PhoneError> {
        let padded = wacore::messages::MessageUtils::pad_message_v2(message.encode_to_vec());
        let sealed = self.encrypt_to(to, || companion, &padded).await?;
        Ok((sealed, padded))
    }

    /// Whether `request` asks for the account's app-state key.
    pub fn asks_for_app_state_key(&self, request: &msg::AppStateSyncKeyRequest) -> bool {
        request
            .key_ids
            .iter()
            .any(|k| k.key_id.as_deref() == Some(self.keys.app_state_key_id.as_slice()))
    }

    fn key_share_message(&self, key_indexes: &KeyIndexes, now_ms: i64) -> wa::Message {
        let key = msg::AppStateSyncKey {
            key_id: buffa::MessageField::some(msg::AppStateSyncKeyId {
                key_id: Some(self.keys.app_state_key_id.clone()),
            }),
            key_data: buffa::MessageField::some(msg::AppStateSyncKeyData {
                key_data: Some(self.keys.app_state_key.to_vec()),
                fingerprint: buffa::MessageField::some(msg::AppStateSyncKeyFingerprint {
                    raw_id: Some(self.keys.adv_raw_id),
                    current_index: Some(key_indexes.current),
                    device_indexes: key_indexes.valid.clone(),
                }),
                timestamp: Some(now_ms),
            }),
        };
        wa::Message {
            protocol_message: buffa::MessageField::some(msg::ProtocolMessage {
                r#type: Some(msg::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
                app_state_sync_key_share: buffa::MessageField::some(msg::AppStateSyncKeyShare {
                    keys: vec![key],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Signal-encrypts `plaintext` to a device, starting a session from the
    /// bundle `bundle` gives when there is none yet (it is called only then,
    /// so no one-time prekey is taken for nothing).
    pub async fn encrypt_to(
        &self,
        to: DeviceAddr,
        bundle: impl FnOnce() -> Option<CompanionBundle>,
        plaintext: &[u8],
    ) -> Result<Sealed, PhoneError> {
        let address = signal_address(to);
        let mut signal = self.signal.lock().await;
        let Stores {
            identity, sessions, ..
        } = &mut *signal;
        if !sessions.0.contains_key(address.as_str()) {
            let bundle = bundle().ok_or(SignalProtocolError::SessionNotFound(address.clone()))?;
            let bundle = prekey_bundle(&bundle)?;
            let mut rng = rand::make_rng::<rand::rngs::StdRng>();
            signal::process_prekey_bundle(
                &address,
                sessions,
                identity,
                &bundle,
                &mut rng,
                UsePQRatchet::No,
            )
            .await?;
        }
        let sealed = signal::message_encrypt(plaintext, &address, sessions, identity).await?;
        let enc_type = match sealed {
            CiphertextMessage::PreKeySignalMessage(_) => "pkmsg",
            _ => "msg",
        };
        Ok(Sealed {
            enc_type,
            ciphertext: sealed.serialize().to_vec(),
        })
    }

    /// Decrypts what a device sent to this phone (`<enc type>` and bytes).
    pub async fn decrypt_from(
        &self,
        from: DeviceAddr,
        enc_type: &str,
        ciphertext: &[u8],
    ) -> Result<Opened, PhoneError> {
        let message = match enc_type {
            "pkmsg" => {
                CiphertextMessage::PreKeySignalMessage(PreKeySignalMessage::try_from(ciphertext)?)
            }
            "msg" => CiphertextMessage::SignalMessage(SignalMessage::try_from(ciphertext)?),
            other => return Err(PhoneError::EncType(other.to_owned())),
        };
        let address = signal_address(from);
        let mut signal = self.signal.lock().await;
        let Stores {
            identity,
            sessions,
            prekeys,
            signed,
        } = &mut *signal;
        let mut rng = rand::make_rng::<rand::rngs::StdRng>();
        let opened = signal::message_decrypt(
            &message,
            &address,
            sessions,
            identity,
            prekeys,
            signed,
            &mut rng,
            UsePQRatchet::No,
        )
        .await?;
        if let Some(id) = opened.consumed_prekey_id {
            self.pool.lock().consume(u32::from(id));
        }
        Ok(Opened {
            plaintext: opened.plaintext,
            prekey_message: enc_type == "pkmsg",
        })
    }

    /// Drops the session with a device, so the next message starts afresh
    /// (the answer to its retry receipt).
    pub async fn forget_session(&self, with: DeviceAddr) {
        let address = signal_address(with);
        self.signal.lock().await.sessions.0.remove(address.as_str());
    }

    /// X25519 agreement of the phone's identity key with `theirs` (pair-code
    /// linking derives the ADV secret from it).
    pub fn agree(&self, theirs: &[u8; 32]) -> Result<[u8; 32], PhoneError> {
        let theirs = PublicKey::from_djb_public_key_bytes(theirs)
            .map_err(|e| PhoneError::BadKey(e.to_string()))?;
        self.identity
            .private_key
            .calculate_agreement(&theirs)
            .map_err(|e| PhoneError::BadKey(e.to_string()))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PhoneError> {
        let signature = self
            .identity
            .private_key
            .calculate_signature(message, &mut rand::rng())
            .map_err(|e| PhoneError::BadKey(e.to_string()))?;
        Ok(signature.to_vec())
    }
}

/// The phone's Signal name for a device: one per device, whichever JID
/// form (phone number or LID) the device's messages were addressed with.
fn signal_address(device: DeviceAddr) -> ProtocolAddress {
    ProtocolAddress::new(
        &device.phone.to_string(),
        DeviceId::from(u32::from(device.device)),
    )
}

fn prekey_bundle(companion: &CompanionBundle) -> Result<PreKeyBundle, PhoneError> {
    let djb = |bytes: &[u8]| {
        PublicKey::from_djb_public_key_bytes(bytes).map_err(|e| PhoneError::BadKey(e.to_string()))
    };
    let one_time = match &companion.one_time {
        Some(key) => Some((key.id.into(), djb(&key.public)?)),
        None => None,
    };
    Ok(PreKeyBundle::new(
        companion.registration_id,
        DeviceId::from(u32::from(companion.device)),
        one_time,
        companion.signed_prekey.id.into(),
        djb(&companion.signed_prekey.public)?,
        companion.signed_prekey.signature.clone(),
        IdentityKey::new(djb(&companion.identity)?),
    )?)
}

fn key_pair(private: &[u8; 32]) -> Result<KeyPair, PhoneError> {
    let private =
        PrivateKey::deserialize(private).map_err(|e| PhoneError::BadKey(e.to_string()))?;
    KeyPair::try_from(private).map_err(|e| PhoneError::BadKey(e.to_string()))
}

fn public_bytes(key: &PublicKey) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(key.public_key_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_accepts_the_phones_device_identity() {
        let phone = SimPhone::generate();
        let companion = KeyPair::generate(&mut rand::rng());
        let state = wacore::pair::DeviceState {
            identity_key: companion.clone(),
            noise_key: KeyPair::generate(&mut rand::rng()),
            adv_secret_key: [7; 32],
        };
        let identity = public_bytes(&companion.public_key);
        let (details, container) = phone.sign_companion(&identity, &[7; 32], 3, 1).unwrap();
        // The client's own verification, then its counter-signature back.
        let (signed_back, key_index) =
            wacore::pair::PairUtils::do_pair_crypto(&state, &container).unwrap();
        assert_eq!(key_index, 3);
        phone
            .verify_companion(&signed_back, &identity, &details)
            .unwrap();
        let other = [9; 32];
        assert!(
            phone
                .verify_companion(&signed_back, &other, &details)
                .is_err()
        );
    }

    #[test]
    fn the_phones_own_bundle_and_key_index_list_verify() {
        let phone = SimPhone::generate();
        let identity = PublicKey::from_djb_public_key_bytes(&phone.identity_public()).unwrap();
        let signed = phone.signed_prekey();
        let signed_public = PublicKey::from_djb_public_key_bytes(&signed.public).unwrap();
        assert!(identity.verify_signature(&signed_public.serialize(), &signed.signature));

        let indexes = KeyIndexes {
            valid: vec![0, 2],
            current: 3,
        };
        let list = phone.key_index_list(&indexes, 42).unwrap();
        let decoded = wacore::adv::decode_key_index_list(&list).unwrap();
        assert_eq!(decoded.valid_indexes, [0, 2]);
        assert_eq!((decoded.current_index, decoded.timestamp), (3, 42));
        // A removed companion (index 1 or 3) is dropped by the client.
        assert!(!wacore::adv::is_key_index_valid(Some(3), &decoded));
        assert!(wacore::adv::is_key_index_valid(Some(2), &decoded));
        assert_eq!(decoded.raw_id, phone.keys().adv_raw_id);
    }

    #[test]
    fn keys_survive_a_round_trip_through_json() {
        let phone = SimPhone::generate();
        let json = serde_json::to_string(phone.keys()).unwrap();
        let again =
            SimPhone::from_keys(serde_json::from_str(&json).unwrap(), &Default::default()).unwrap();
        assert_eq!(again.identity_public(), phone.identity_public());
    }
}
