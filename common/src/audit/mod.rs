//! The audit trail both services keep (DESIGN.md 4.3): one row per call that read or changed a
//! person's data, recorded under the partner that made it. `chain` decides (pure), `store`
//! reads and writes; each service's database holds its own `audit_log` and `audit_chain_head`
//! (created by the service's migrations, described once in `schema`).

pub mod chain;
pub mod schema;
pub mod store;

pub use chain::{outcome_name, outcome_of};
pub use store::{AuditEntry, AuditStore, ChainVerdict, verify_chain};
