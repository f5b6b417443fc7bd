//! gRPC services of insurance-svc: decode, authorise, call the domain and store, encode.

pub mod account;

use std::sync::Arc;

use medins_common::{clock::SharedClock, db::Db, idempotency::Idempotency};

use crate::{clients::identity::IdentityClient, store::account::AccountStore};

/// What every handler of insurance-svc shares.
pub struct State {
    /// The database.
    pub db: Db,
    /// Accounts.
    pub accounts: AccountStore,
    /// identity-svc.
    pub identity: IdentityClient,
    /// The clock.
    pub clock: SharedClock,
    /// Idempotent retries.
    pub idempotency: Idempotency,
}

/// Shared state handle.
pub type SharedState = Arc<State>;
