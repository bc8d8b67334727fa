//! The responder side of WhatsApp's Noise handshake (SANDBOX.md, "Verified:
//! connection and handshake"): XX for a client that does not know our key,
//! IK for one that cached our certificate chain, and XX-fallback when an IK
//! hello cannot be decrypted (a client whose cached key is stale).
//!
//! The order of every MixHash/MixKey matters and is the client's, not the
//! Noise specification's; `wacore_noise::NoiseHandshake` does the crypto.
//! This module ends at the transport keys and the decoded `ClientPayload`:
//! who the client is, and whether it may log in, is decided elsewhere.

use buffa::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use wacore_libsignal::protocol::{KeyPair, PrivateKey};
use wacore_noise::{NoiseCipher, NoiseHandshake};
use waproto::whatsapp::{self as wa, handshake_message::ServerHello};

use super::cert;
use super::frame::{FrameError, FrameStream};

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("handshake message does not decode: {0}")]
    Decode(#[from] buffa::DecodeError),
    #[error("handshake message lacks {0}")]
    Missing(&'static str),
    #[error("noise: {0}")]
    Noise(#[from] wacore_noise::HandshakeError),
    #[error("noise transport: {0}")]
    Cipher(#[from] wacore_noise::NoiseError),
}

/// The server's long-lived Noise static key: clients pin it (as the leaf
/// of the certificate chain) and try IK with it, so it survives restarts
/// when the sandbox has a state file.
pub(crate) struct ServerKey {
    pair: KeyPair,
    public: [u8; 32],
}

impl ServerKey {
    pub fn generate() -> Self {
        Self::from_pair(KeyPair::generate(&mut rand::rng()))
    }

    pub fn from_private(bytes: &[u8; 32]) -> Result<Self, String> {
        let private = PrivateKey::deserialize(bytes).map_err(|e| e.to_string())?;
        let pair = KeyPair::try_from(private).map_err(|e| e.to_string())?;
        Ok(Self::from_pair(pair))
    }

    fn from_pair(pair: KeyPair) -> Self {
        let mut public = [0; 32];
        public.copy_from_slice(pair.public_key.public_key_bytes());
        Self { pair, public }
    }

    pub fn private_bytes(&self) -> [u8; 32] {
        *self.pair.private_key.serialize()
    }

    fn private(&self) -> &[u8] {
        self.pair.private_key.serialize()
    }
}

/// Which handshake the client went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    Xx,
    Ik,
    XxFallback,
}

/// A finished handshake: the transport ciphers and who the client says it is.
pub(crate) struct Established {
    pub pattern: Pattern,
    /// The client's Noise static public key (a companion's "noise key").
    pub client_static: [u8; 32],
    pub payload: wa::ClientPayload,
    /// Encrypts server -> client frames.
    pub write: NoiseCipher,
    /// Decrypts client -> server frames.
    pub read: NoiseCipher,
}

/// Runs the responder over `frames` until both sides hold transport keys.
pub(crate) async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    key: &ServerKey,
    frames: &mut FrameStream<S>,
    now: u64,
) -> Result<Established, HandshakeError> {
    let hello = wa::HandshakeMessage::decode_from_slice(&frames.recv().await?)?
        .client_hello
        .into_option()
        .ok_or(HandshakeError::Missing("client_hello"))?;
    let ephemeral = key32(hello.ephemeral.as_deref(), "client ephemeral")?;
    let chain = cert::chain_for(&key.public, now);

    if let (Some(stat), Some(payload)) = (hello.r#static.as_deref(), hello.payload.as_deref()) {
        match respond_ik(key, &ephemeral, stat, payload, &chain) {
            Ok((hs, client_static, payload, answer)) => {
                frames.send(&answer).await?;
                return established(Pattern::Ik, hs, client_static, &payload);
            }
            // A stale cached key: answering with a fresh XX turn is what makes
            // the client drop its cache; closing would make it retry IK forever.
            Err(e) => tracing::debug!(error = %e, "IK hello undecryptable, answering XX-fallback"),
        }
        return respond_xx(key, &ephemeral, &chain, frames, Pattern::XxFallback).await;
    }
    respond_xx(key, &ephemeral, &chain, frames, Pattern::Xx).await
}

type IkOutcome = (NoiseHandshake, [u8; 32], Vec<u8>, Vec<u8>);

/// IK in one turn: decrypts the client's static key and payload from its
/// hello and builds our answer (ephemeral and certificate chain, no static).
fn respond_ik(
    key: &ServerKey,
    ephemeral: &[u8; 32],
    encrypted_static: &[u8],
    encrypted_payload: &[u8],
    chain: &[u8],
) -> Result<IkOutcome, HandshakeError> {
    let mut hs = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
    hs.authenticate(&key.public);
    hs.authenticate(ephemeral);
    hs.mix_shared_secret(key.private(), ephemeral)?;
    let client_static = key32(Some(&hs.decrypt(encrypted_static)?), "client static")?;
    hs.mix_shared_secret(key.private(), &client_static)?;
    let payload = hs.decrypt(encrypted_payload)?;

    let ours = KeyPair::generate(&mut rand::rng());
    let ours_public = ours.public_key.public_key_bytes().to_vec();
    hs.authenticate(&ours_public);
    hs.mix_shared_secret(ours.private_key.serialize(), ephemeral)?;
    hs.mix_shared_secret(ours.private_key.serialize(), &client_static)?;
    let encrypted_chain = hs.encrypt(chain)?;
    let answer = server_hello(ours_public, None, encrypted_chain);
    Ok((hs, client_static, payload, answer))
}

/// XX (or XX-fallback, which differs only in the protocol name): our hello,
/// then the client's finish with its static key and payload.
async fn respond_xx<S: AsyncRead + AsyncWrite + Unpin>(
    key: &ServerKey,
    ephemeral: &[u8; 32],
    chain: &[u8],
    frames: &mut FrameStream<S>,
    pattern: Pattern,
) -> Result<Established, HandshakeError> {
    let name = match pattern {
        Pattern::XxFallback => NOISE_PATTERN_XXFALLBACK,
        _ => NOISE_PATTERN_XX,
    };
    let mut hs = NoiseHandshake::new(name, &WA_CONN_HEADER)?;
    hs.authenticate(ephemeral);
    let ours = KeyPair::generate(&mut rand::rng());
    let ours_public = ours.public_key.public_key_bytes().to_vec();
    hs.authenticate(&ours_public);
    hs.mix_shared_secret(ours.private_key.serialize(), ephemeral)?;
    let encrypted_static = hs.encrypt(&key.public)?;
    hs.mix_shared_secret(key.private(), ephemeral)?;
    let encrypted_chain = hs.encrypt(chain)?;
    frames
        .send(&server_hello(
            ours_public,
            Some(encrypted_static),
            encrypted_chain,
        ))
        .await?;

    let finish = wa::HandshakeMessage::decode_from_slice(&frames.recv().await?)?
        .client_finish
        .into_option()
        .ok_or(HandshakeError::Missing("client_finish"))?;
    let stat = finish
        .r#static
        .ok_or(HandshakeError::Missing("client static"))?;
    let client_static = key32(Some(&hs.decrypt(&stat)?), "client static")?;
    hs.mix_shared_secret(ours.private_key.serialize(), &client_static)?;
    let payload = hs.decrypt(&finish.payload.ok_or(HandshakeError::Missing("payload"))?)?;
    established(pattern, hs, client_static, &payload)
}

fn established(
    pattern: Pattern,
    hs: NoiseHandshake,
    client_static: [u8; 32],
    payload: &[u8],
) -> Result<Established, HandshakeError> {
    let payload = wa::ClientPayload::decode_from_slice(payload)?;
    // `finish` names the keys from the initiator's side.
    let (client_write, client_read) = hs.finish()?;
    Ok(Established {
        pattern,
        client_static,
        payload,
        write: client_read,
        read: client_write,
    })
}

fn server_hello(
    ephemeral: Vec<u8>,
    encrypted_static: Option<Vec<u8>>,
    payload: Vec<u8>,
) -> Vec<u8> {
    wa::HandshakeMessage {
        server_hello: buffa::MessageField::some(ServerHello {
            ephemeral: Some(ephemeral),
            r#static: encrypted_static,
            payload: Some(payload),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn key32(bytes: Option<&[u8]>, what: &'static str) -> Result<[u8; 32], HandshakeError> {
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or(HandshakeError::Missing(what))
}
