//! Storage of identity-svc: schema, models and queries.

pub mod assurance;
pub mod face;
pub mod link;
pub mod outbox;
pub mod person;
pub mod person_outbox;
pub mod revocation;
pub mod schema;
pub mod sms;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use medins_common::db::Migrations;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/identity/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/identity/postgres");

/// identity-svc's migrations for both backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: || SQLITE_MIGRATIONS, postgres: || POSTGRES_MIGRATIONS };
