//! WAGO: a multi-tenant HTTP API server for WhatsApp.
//!
//! Start at [`app::App`]: it opens the [`store`], applies the
//! configuration ([`config`]) and serves the [`http`] router. Tenants and
//! their keys are in [`tenants`].

pub mod app;
pub mod cache;
pub mod config;
pub mod events;
pub mod http;
pub mod media;
pub mod metrics;
pub mod migrate_db;
pub mod sessions;
pub mod store;
pub mod tenants;
pub mod types;
pub mod webhooks;

/// The simulated WhatsApp network (the `wago-sandbox` crate), in sandbox
/// builds only.
#[cfg(feature = "sandbox")]
pub use wago_sandbox as sandbox;
