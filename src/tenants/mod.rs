//! Tenants and their API keys: the types, and the rules for making them.
//!
//! A tenant owns one WhatsApp number and any number of API keys. Keys are
//! random, shown once, and stored only as their SHA-256, so a leaked
//! database leaks no usable key. This module parses and generates; the
//! queries are in `store::tenants`, the HTTP side in `http::admin`.

use std::fmt;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The tenant made from the `API_KEY` environment variable.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn new() -> Self {
        TenantId(uuid::Uuid::new_v4().to_string())
    }
    /// Trusts that `raw` came from the database or a route parameter; an
    /// unknown id simply finds nothing.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        TenantId(raw.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, so it is safe in
/// logs, URLs and file names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() || name.len() > 64 {
            return Err("name must be 1 to 64 characters".into());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err("name may hold only letters, digits, '.', '_' and '-'".into());
        }
        Ok(TenantName(name.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An API key in clear text. It exists only on its way to the client once,
/// or while a request is being authenticated; `Debug` hides it.
#[derive(Clone)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.prefix())
    }
}

impl ApiKey {
    pub const PREFIX: &'static str = "wago_";
    const RANDOM_CHARS: usize = 40;
    /// How much of a key is kept in clear, so people can tell keys apart.
    const SHOWN_CHARS: usize = Self::PREFIX.len() + 6;

    /// A fresh key: `wago_` and 40 random base62 characters (238 bits).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let random: String = (0..Self::RANDOM_CHARS)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        ApiKey(format!("{}{random}", Self::PREFIX))
    }

    /// A key as presented by a client (or set in `API_KEY`). Any non-empty
    /// value is accepted: the old server's keys had no format.
    pub fn from_presented(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        (!raw.is_empty() && raw.len() <= 512).then(|| ApiKey(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    pub fn prefix(&self) -> String {
        self.0.chars().take(Self::SHOWN_CHARS).collect()
    }
}

/// Hex SHA-256 of a secret, the only form in which keys and the admin
/// token are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(secret: &str) -> Self {
        KeyHash(hex::encode(Sha256::digest(secret.as_bytes())))
    }
    pub fn from_stored(hex: String) -> Self {
        KeyHash(hex)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Compares in constant time, so response timing reveals nothing.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

/// Where a key came from: the admin API, or the `API_KEY` variable (which
/// replaces its own key when the variable changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Admin,
    Env,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Admin => "admin",
            KeySource::Env => "env",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_random_and_hash_stably() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert!(a.expose().starts_with("wago_"));
        assert_eq!(a.expose().len(), 45);
        assert_ne!(a.expose(), b.expose());
        assert!(a.hash().matches(&KeyHash::of(a.expose())));
        assert!(!a.hash().matches(&b.hash()));
        assert_eq!(a.prefix().len(), 11);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn tenant_names_are_checked() {
        assert!(TenantName::parse("acme-prod_1.eu").is_ok());
        assert!(TenantName::parse("").is_err());
        assert!(TenantName::parse("has space").is_err());
        assert!(TenantName::parse(&"x".repeat(65)).is_err());
    }
}
