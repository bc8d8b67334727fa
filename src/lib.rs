//! WAGO: a multi-tenant HTTP API server for WhatsApp.

#[cfg(feature = "sandbox")]
pub mod sandbox;
