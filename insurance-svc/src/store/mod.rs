//! Storage of insurance-svc: schema, models and queries.

pub mod account;
pub mod card;
pub mod claim;
pub mod cross_region;
pub mod document;
pub mod document_sweeper;
pub mod face_outcome;
pub mod family;
pub mod ledger;
pub mod objects;
pub mod schema;
pub mod settlement;
mod settlement_details;
pub mod settlement_records;
pub mod visit;
pub mod voucher;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// Whether a write committed its call's audit row with its change
/// (`medins_common::audit::InlineAudit`), or left it to the caller to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audited {
    /// The row committed in the call's own transaction.
    InTransaction,
    /// Not recorded: the caller records the call (PostgreSQL's batched statements).
    No,
}
use medins_common::db::Migrations;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/insurance/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/insurance/postgres");

/// insurance-svc's migrations for both backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: || SQLITE_MIGRATIONS, postgres: || POSTGRES_MIGRATIONS };
