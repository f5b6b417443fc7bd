//! gRPC services of insurance-svc: decode, authorise, call the domain and store, encode.

pub mod access;
pub mod account;
pub mod card;
pub mod catalog;
pub mod claim;
pub mod code;
pub mod cross_region;
pub mod document;
pub mod events;
pub mod family;
pub mod person_access;
pub mod settlement;
pub mod settlement_records;
pub mod voucher;

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
    /// Face outcomes reported by identity-svc.
    pub face_outcomes: crate::store::face_outcome::FaceOutcomeStore,
    /// The individual-account ledger.
    pub ledger: crate::store::ledger::LedgerStore,
    /// Settlements, year-to-date totals and the policy table they are computed with.
    pub settlements: crate::store::settlement::SettlementStore,
    /// The catalogue of drugs, treatment items and consumables.
    pub catalog: Arc<crate::domain::catalog::Catalog>,
    /// Cross-region care filings.
    pub cross_region: crate::store::cross_region::CrossRegionStore,
    /// Vouchers and their activations.
    pub vouchers: crate::store::voucher::VoucherStore,
    /// Visits opened by verified codes.
    pub visits: crate::store::visit::VisitStore,
    /// identity-svc's person-token keys, kept current.
    pub person_tokens: Arc<crate::person_tokens::PersonTokenKeys>,
    /// Payment-code signing keys.
    pub code_keys: Arc<crate::code_keys::CodeKeys>,
    /// Document metadata.
    pub documents: crate::store::document::DocumentStore,
    /// Document bytes (object store).
    pub objects: crate::store::objects::DocumentObjects,
    /// Wraps each document's own key (insurance-svc's versioned data keys).
    pub document_cipher: medins_common::crypto::FieldCipher,
    /// The server-side secret card PIN hashes are keyed with (from the same data keys).
    pub pin_pepper: crate::domain::card_pin::PinPepper,
    /// The bounded pool for image decoding, PDF parsing and rendering, QR PNGs.
    pub heavy: crate::heavy::HeavyPool,
    /// Family bindings.
    pub family: crate::store::family::FamilyStore,
    /// Card fees, applications and cards.
    pub cards: crate::store::card::CardStore,
    /// Masked holder facts for the counter, cached briefly.
    pub holders: Arc<code::HolderCache>,
    /// The relationship-verification authority (household registration), proving family
    /// bindings of members under 16.
    pub relationships: Arc<dyn crate::relationship::RelationshipAuthority>,
    /// How long an operator has to review a binding the authority could not confirm.
    pub family_review_period: chrono::Duration,
    /// The live partners (a settlement record names the hospital or pharmacy that settled it).
    pub partners: medins_common::auth::Partners,
    /// The audit trail: every call that reads or changes a person's data
    /// (docs/architecture.md#trust-model).
    pub audit: medins_common::audit::AuditStore,
}

/// Shared state handle.
pub type SharedState = Arc<State>;
