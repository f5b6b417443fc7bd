//! The audit log both services keep (docs/architecture.md#who-may-call-what): one row per call that
//! read or changed a person's data, recorded under the partner that made it. `merkle` and `seal`
//! decide (pure), `keys` holds the audit key file, `store` reads and writes; each service's
//! database holds its own log (created by the service's migrations, described once in `schema`).
//! `chain` is the first format's hash chain, kept to verify and re-seal rows written before
//! partitions.

pub mod chain;
pub mod keys;
pub mod merkle;
pub mod schema;
pub mod seal;
pub mod store;
pub mod witness;

pub use chain::{outcome_name, outcome_of};
pub use keys::AuditKeys;
pub use store::{
    AuditEntry, AuditStats, AuditStore, ChainVerdict, ExportedCheckpoint, Fault, FaultKind, InlineAudit, LogReport,
    load_checkpoints, partitions_for, verify_log,
};
