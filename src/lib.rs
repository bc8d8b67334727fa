//! WAGO: a multi-tenant HTTP API server for WhatsApp.
