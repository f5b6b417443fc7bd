//! The audit tables, the same in identity-svc's and insurance-svc's databases.

diesel::table! {
    /// One row per audited call; hash-chained (see `super::chain`).
    audit_log (seq) {
        seq -> BigInt,
        partner_id -> Text,
        method -> Text,
        person_id -> Text,
        outcome -> Text,
        recorded_at -> Timestamp,
        prev_hash -> Binary,
        row_hash -> Binary,
    }
}

diesel::table! {
    /// The tail of the audit chain (one row, locked by appenders).
    audit_chain_head (id) {
        id -> Integer,
        last_seq -> BigInt,
        last_hash -> Binary,
    }
}
