//! gRPC services of identity-svc: decode, authorise, call the domain and store, encode.

pub mod access;
pub mod audit;
pub mod face;
pub mod link;
pub mod person;
pub mod person_facts;
pub mod person_token;
pub mod real_name;
pub mod sms;
pub mod suspension;

use std::sync::Arc;

use medins_common::{clock::SharedClock, db::Db, idempotency::Idempotency};

use medins_common::audit::AuditStore;

use crate::store::{link::LinkStore, person::PersonStore};

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
    /// Face sessions: store, threshold, change notifications.
    pub face: face::FaceContext,
    /// Person-token keys: signing ring and verifier (reloaded when the key file changes).
    pub person_tokens: Arc<person_token::PersonTokens>,
    /// Partner links.
    pub links: LinkStore,
    /// The audit trail: `audit.record(..)` from every handler that reads or changes a person.
    pub audit: AuditStore,
    /// SMS challenges: `sms.consume_verified(..)` from every flow that needs a verified code.
    pub sms: crate::store::sms::SmsStore,
    /// Where SMS codes go.
    pub sms_sender: Arc<dyn crate::sms::SmsSender>,
    /// Who confirms real names.
    pub identity_authority: Arc<dyn crate::authority::IdentityAuthority>,
    /// The live partners file: face providers and their bindings, SMS quotas.
    pub partners: medins_common::auth::Partners,
    /// Assurance levels and suspensions.
    pub assurance: crate::store::assurance::AssuranceStore,
    /// Token revocations (the feed this process and insurance-svc refuse tokens by).
    pub revocations: crate::store::revocation::RevocationStore,
    /// insurance-svc, for its half of a person's access history; `None` when no insurance-svc
    /// is configured (`--insurance-url`, `--insurance-api-key`): then there is no other half.
    pub insurance: Option<crate::clients::insurance::InsuranceClient>,
}

/// Shared state handle.
pub type SharedState = Arc<State>;
