//! The audit tables, the same in identity-svc's and insurance-svc's databases.

diesel::table! {
    /// One row per audited call (see `super::seal`): `seq` orders a service's rows for reading
    /// (assigned by the database, not protected); `(part, idx)` is the row's sealed position.
    audit_log (seq) {
        seq -> BigInt,
        part -> Integer,
        idx -> BigInt,
        partner_id -> Text,
        method -> Text,
        person_id -> Text,
        outcome -> Text,
        recorded_at -> Timestamp,
        key_id -> Text,
        mac -> Binary,
    }
}

diesel::table! {
    /// The head of each partition: rows so far, MAC'd; locked by appenders to that partition.
    audit_partition (part) {
        part -> Integer,
        size -> BigInt,
        key_id -> Text,
        head_mac -> Binary,
    }
}

diesel::table! {
    /// Signed checkpoints: one per partition per size, each extending the previous one.
    audit_checkpoint (part, tree_size) {
        part -> Integer,
        tree_size -> BigInt,
        root -> Binary,
        prev_size -> BigInt,
        prev_root -> Binary,
        proof -> Binary,
        frontier -> Binary,
        created_at -> Text,
        key_id -> Text,
        signature -> Binary,
    }
}

diesel::table! {
    /// The hash chain of the first audit format, kept until its rows are re-sealed into
    /// `audit_log` at start (see `super::store::AuditStore::reseal_legacy`).
    audit_log_v1 (seq) {
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
    /// The tail of the first format's chain.
    audit_chain_head_v1 (id) {
        id -> Integer,
        last_seq -> BigInt,
        last_hash -> Binary,
    }
}

diesel::allow_tables_to_appear_in_same_query!(audit_log, audit_partition, audit_checkpoint);
