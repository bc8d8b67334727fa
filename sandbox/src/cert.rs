//! The Noise certificate chain the server presents in its hello.
//!
//! Real WhatsApp signs the intermediate certificate with a root key only it
//! holds; the client built with `danger-skip-cert-chain-verify` checks
//! everything but that signature: serials, issuers, validity windows and
//! that the leaf key is the server's static key. So the chain here is
//! honest in every field the client can check and carries dummy signatures.

use buffa::Message as _;
use waproto::whatsapp::{self as wa, cert_chain::noise_certificate::Details};

const SIGNATURE_LEN: usize = 64;
/// Validity around "now": a client caches the chain and tries IK with it
/// while the window lasts.
const VALID_BEFORE_SECS: u64 = 24 * 3600;
const VALID_AFTER_SECS: u64 = 365 * 24 * 3600;

/// Encoded `CertChain` whose leaf certifies `server_static`, valid at `now`
/// (unix seconds).
pub(crate) fn chain_for(server_static: &[u8; 32], now: u64) -> Vec<u8> {
    let not_before = now.saturating_sub(VALID_BEFORE_SECS);
    let not_after = now + VALID_AFTER_SECS;
    let intermediate = certificate(Details {
        serial: Some(1),
        issuer_serial: Some(0),
        // Stands in for WhatsApp's intermediate key; unchecked by the client.
        key: Some(vec![0x5a; 32]),
        not_before: Some(not_before),
        not_after: Some(not_after),
    });
    let leaf = certificate(Details {
        serial: Some(2),
        issuer_serial: Some(1),
        key: Some(server_static.to_vec()),
        not_before: Some(not_before),
        not_after: Some(not_after),
    });
    wa::CertChain {
        leaf: buffa::MessageField::some(leaf),
        intermediate: buffa::MessageField::some(intermediate),
    }
    .encode_to_vec()
}

fn certificate(details: Details) -> wa::cert_chain::NoiseCertificate {
    wa::cert_chain::NoiseCertificate {
        details: Some(details.encode_to_vec()),
        signature: Some(vec![0; SIGNATURE_LEN]),
    }
}
