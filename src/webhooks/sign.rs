//! Webhook signatures: the old server's `X-Wago-Signature` and the
//! Standard Webhooks headers. The exact bytes sent are the bytes signed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Wago-Signature`: hex HMAC-SHA256 of the body, keyed with the secret
/// as written (exactly what the old server sent).
pub fn legacy_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac(secret.as_bytes(), &[body]))
}

/// `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`. A `whsec_` secret is used base64-decoded.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = standard_key(secret);
    let timestamp = timestamp.to_string();
    let mac = hmac(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", BASE64.encode(mac))
}

fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| BASE64.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_signature_is_plain_hex_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            legacy_signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn whsec_secrets_are_base64_keys() {
        let a = standard_signature("whsec_AAEC", "msg_1", 1_700_000_000, b"{}");
        let b = standard_signature("\u{0}\u{1}\u{2}", "msg_1", 1_700_000_000, b"{}");
        assert_eq!(a, b);
        assert!(a.starts_with("v1,"));
    }
}
