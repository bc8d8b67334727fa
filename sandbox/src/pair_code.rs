//! Linking by pair code: the phone enters the eight characters a companion
//! shows, instead of scanning its QR code (the client's `pair_code`
//! module and `wacore::pair_code` are the other side of every step).
//!
//! 1. The companion (connected to register, as for a QR) sends
//!    `<iq xmlns="md"><link_code_companion_reg stage="companion_hello"
//!    jid="PHONE@s.whatsapp.net">` with its ephemeral key wrapped under the
//!    code; the server answers with a pairing ref and remembers the
//!    companion under that number (`PairingDesk`).
//! 2. `POST /phones/{phone}/link-code` is the phone entering the code: it
//!    unwraps the companion's ephemeral key, wraps its own, and the server
//!    sends the companion a `primary_hello` notification with it and the
//!    phone's identity key.
//! 3. The companion answers `companion_finish` with a key bundle sealed
//!    under their ephemeral agreement. The phone opens it (a wrong code
//!    fails here), derives the ADV secret both sides now share, and the
//!    usual `<pair-success>` follows, as after a QR scan.
//!
//! The cryptography is wacore's: its pair-code helpers, its HKDF and
//! libsignal's AES-GCM and X25519.

use rand::RngExt as _;
use wacore::pair_code::PairCodeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::{KeyPair, PublicKey};

use super::accounts::{Account, Phone};
use super::conn::{attr, bytes};
use super::jid::server_jid;
use super::pairing::{LinkError, QrCode};
use super::{iq, phone::SimPhone};

const STAGE_HELLO: &str = "companion_hello";
const STAGE_FINISH: &str = "companion_finish";
const BUNDLE_KEY_INFO: &[u8] = b"link_code_pairing_key_bundle_encryption_key";
const ADV_SECRET_INFO: &[u8] = b"adv_secret";

/// A companion's `companion_hello`: it shows a code for this number.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub phone: Phone,
    pub reference: String,
    /// Its ephemeral public key, wrapped under the code (80 bytes).
    wrapped: Vec<u8>,
}

/// The `<link_code_companion_reg>` of an iq, with its stage.
fn registration_of(iq: &Node) -> Option<(&Node, String)> {
    if iq.tag != "iq" || attr(iq, "xmlns").as_deref() != Some("md") {
        return None;
    }
    let reg = iq.get_optional_child("link_code_companion_reg")?;
    Some((reg, attr(reg, "stage").unwrap_or_default()))
}

/// `Some` when `iq` is a `companion_hello`: the hello, or why it is refused.
pub(crate) fn parse_hello(iq: &Node) -> Option<Result<Hello, &'static str>> {
    let (reg, stage) = registration_of(iq)?;
    if stage != STAGE_HELLO {
        return None;
    }
    let phone = reg
        .attrs
        .get("jid")
        .and_then(|v| v.to_jid())
        .and_then(|jid| jid.user.parse().ok())
        .and_then(Phone::from_number);
    let wrapped = reg
        .get_optional_child("link_code_pairing_wrapped_companion_ephemeral_pub")
        .and_then(bytes)
        .filter(|b| b.len() == 80);
    Some(match (phone, wrapped) {
        (Some(phone), Some(wrapped)) => Ok(Hello {
            phone,
            reference: new_reference(),
            wrapped: wrapped.to_vec(),
        }),
        (None, _) => Err("jid"),
        (_, None) => Err("wrapped ephemeral key"),
    })
}

fn new_reference() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("2@{}", hex::encode(bytes))
}

/// The answer to a `companion_hello`: the pairing ref.
pub(crate) fn hello_answer(iq: &Node, hello: &Hello) -> Node {
    let reference = NodeBuilder::new("link_code_pairing_ref")
        .bytes(hello.reference.as_bytes().to_vec())
        .build();
    NodeBuilder::new("iq")
        .attr("from", server_jid())
        .attr("id", attr(iq, "id").unwrap_or_default())
        .attr("type", "result")
        .children([NodeBuilder::new("link_code_companion_reg")
            .children([reference])
            .build()])
        .build()
}

/// `ABCD-EFGH`, `abcdefgh`: the code as the companion derived its key from.
pub(crate) fn normalize(code: &str) -> Result<String, LinkError> {
    let code: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    if PairCodeUtils::validate_code(&code) {
        Ok(code)
    } else {
        Err(LinkError::BadCode)
    }
}

/// The phone's half of stage 2, up to the notification: its ephemeral key
/// pair and the `primary_hello` to send.
pub(crate) fn primary_hello(account: &Account, hello: &Hello, code: &str) -> (KeyPair, Node) {
    let ephemeral = KeyPair::generate(&mut rand::rng());
    let mut public = [0u8; 32];
    public.copy_from_slice(ephemeral.public_key.public_key_bytes());
    let wrapped = PairCodeUtils::encrypt_ephemeral_pub(&public, code);
    let child = |tag: &'static str, content: Vec<u8>| NodeBuilder::new(tag).bytes(content).build();
    let reg = NodeBuilder::new("link_code_companion_reg")
        .attr("stage", "primary_hello")
        .children([
            child(
                "link_code_pairing_wrapped_primary_ephemeral_pub",
                wrapped.to_vec(),
            ),
            child(
                "primary_identity_pub",
                account.sim.identity_public().to_vec(),
            ),
            child("link_code_pairing_ref", hello.reference.as_bytes().to_vec()),
        ])
        .build();
    let node = NodeBuilder::new("notification")
        .attr("from", server_jid())
        .attr("type", "link_code_companion_reg")
        .attr("id", iq::request_id())
        .attr("t", now_secs().to_string())
        .children([reg])
        .build();
    (ephemeral, node)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `Some(bundle)` when `iq` is the companion's `companion_finish`.
pub(crate) fn parse_finish(iq: &Node) -> Option<Vec<u8>> {
    let (reg, stage) = registration_of(iq)?;
    if stage != STAGE_FINISH {
        return None;
    }
    let bundle = reg.get_optional_child("link_code_pairing_wrapped_key_bundle");
    Some(
        bundle
            .and_then(bytes)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    )
}

/// Opens the companion's key bundle: the keys its `<pair-success>` needs
/// (its identity, and the ADV secret both sides derive).
pub(crate) fn open_bundle(
    phone: &SimPhone,
    hello: &Hello,
    code: &str,
    ephemeral: &KeyPair,
    sealed: &[u8],
    noise_key: [u8; 32],
) -> Result<QrCode, LinkError> {
    let wrong = || LinkError::Refused("the code does not match the companion's".into());
    let companion_ephemeral = PairCodeUtils::decrypt_primary_ephemeral_pub(&hello.wrapped, code)
        .map_err(|e| LinkError::Refused(e.to_string()))?;
    let ephemeral_shared = agree(ephemeral, &companion_ephemeral).ok_or_else(wrong)?;
    if sealed.len() < 32 + 12 + 16 {
        return Err(LinkError::Refused("key bundle too short".into()));
    }
    let (salt, rest) = sealed.split_at(32);
    let (iv, ciphertext) = rest.split_at(12);
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&ephemeral_shared, Some(salt), BUNDLE_KEY_INFO, &mut key)
        .map_err(|e| LinkError::Refused(e.to_string()))?;
    let iv: [u8; 12] = iv.try_into().map_err(|_| wrong())?;
    let mut bundle = Vec::with_capacity(96);
    wacore_libsignal::crypto::aes_256_gcm_decrypt(&key, &iv, b"", ciphertext, &mut bundle)
        .map_err(|_| wrong())?;
    if bundle.len() != 96 || bundle[32..64] != phone.identity_public() {
        return Err(LinkError::Refused(
            "the key bundle is not for this phone".into(),
        ));
    }
    let identity: [u8; 32] = bundle[..32].try_into().map_err(|_| wrong())?;
    let identity_shared = phone.agree(&identity).map_err(|_| wrong())?;
    let secret = [&ephemeral_shared[..], &identity_shared, &bundle[64..]].concat();
    let mut adv_secret = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&secret, None, ADV_SECRET_INFO, &mut adv_secret)
        .map_err(|e| LinkError::Refused(e.to_string()))?;
    Ok(QrCode {
        reference: hello.reference.clone(),
        noise_key,
        identity,
        adv_secret,
    })
}

fn agree(ours: &KeyPair, theirs: &[u8; 32]) -> Option<[u8; 32]> {
    let theirs = PublicKey::from_djb_public_key_bytes(theirs).ok()?;
    ours.private_key.calculate_agreement(&theirs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_as_the_companion_shows_them() {
        assert_eq!(normalize("abcd-efgh").unwrap(), "ABCDEFGH");
        assert_eq!(normalize("ABCDEFGH").unwrap(), "ABCDEFGH");
        assert!(matches!(normalize("ABCD-EFG"), Err(LinkError::BadCode)));
        assert!(matches!(normalize("ABCD-EFG0"), Err(LinkError::BadCode)));
    }

    #[test]
    fn the_phone_opens_the_bundle_the_client_seals() {
        let phone = SimPhone::generate();
        let code = "ABCD2345";
        let companion_ephemeral = KeyPair::generate(&mut rand::rng());
        let companion_identity = KeyPair::generate(&mut rand::rng());
        let mut public = [0u8; 32];
        public.copy_from_slice(companion_ephemeral.public_key.public_key_bytes());
        let hello = Hello {
            phone: Phone::parse("62811000001").unwrap(),
            reference: "2@r".into(),
            wrapped: PairCodeUtils::encrypt_ephemeral_pub(&public, code).to_vec(),
        };
        let ephemeral = KeyPair::generate(&mut rand::rng());
        let mut primary = [0u8; 32];
        primary.copy_from_slice(ephemeral.public_key.public_key_bytes());
        // The client's own stage 2, as `wacore::pair_code` does it.
        let (sealed, adv_secret) = PairCodeUtils::prepare_key_bundle(
            &companion_ephemeral,
            &primary,
            &phone.identity_public(),
            &companion_identity,
        )
        .unwrap();
        let keys = open_bundle(&phone, &hello, code, &ephemeral, &sealed, [0; 32]).unwrap();
        assert_eq!(keys.adv_secret, adv_secret);
        assert_eq!(
            &keys.identity[..],
            companion_identity.public_key.public_key_bytes()
        );
        let wrong = open_bundle(&phone, &hello, "WXYZ2345", &ephemeral, &sealed, [0; 32]);
        assert!(wrong.is_err());
    }
}
