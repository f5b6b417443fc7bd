//! gRPC services of identity-svc: decode, authorise, call the domain and store, encode.

pub mod person;

use std::sync::Arc;

use medins_common::{clock::SharedClock, db::Db, idempotency::Idempotency};

use crate::store::person::PersonStore;

/// What every handler of identity-svc shares.
pub struct State {
    /// The database.
    pub db: Db,
    /// Persons.
    pub persons: PersonStore,
    /// The clock.
    pub clock: SharedClock,
    /// Idempotent retries.
    pub idempotency: Idempotency,
}

/// Shared state handle.
pub type SharedState = Arc<State>;
