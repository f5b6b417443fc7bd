//! What identity-svc and insurance-svc share: configuration, telemetry, partner auth, errors,
//! storage, idempotency, server bootstrap and the cryptography of personal data.

pub mod access;
pub mod assurance;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod convert;
pub mod crypto;
pub mod db;
pub mod error;
pub mod idempotency;
pub mod keyring;
pub mod mask;
pub mod name;
pub mod peer;
pub mod phone;
pub mod revocation;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod validate;
pub mod webhook;

pub use error::{ApiError, ApiResult, Reason};
