-- The audit log becomes partitioned and sealed (docs/architecture.md#who-may-call-what, README
-- "Audit trail"): rows are spread over partitions by a hash of the person id, each with its own
-- gap-free positions (idx) and head, so appends for different persons do not take one lock; each
-- row carries an HMAC-SHA256 under a key outside the database, and signed RFC 6962 checkpoints seal
-- each partition. The hash-chained rows of the first format move to audit_log_v1; the services
-- re-seal them into audit_log at start (they need the key, which SQL does not have).
ALTER TABLE audit_log RENAME TO audit_log_v1;
DROP INDEX audit_log_person;
ALTER TABLE audit_chain_head RENAME TO audit_chain_head_v1;

CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    part INTEGER NOT NULL CHECK (part >= 0),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    partner_id TEXT NOT NULL,
    method TEXT NOT NULL,
    person_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    key_id TEXT NOT NULL,
    mac BLOB NOT NULL CHECK (length(mac) = 32),
    UNIQUE (part, idx)
);
-- A person's access history, newest first.
CREATE INDEX audit_log_person ON audit_log (person_id, recorded_at, seq);
-- New rows are numbered after the rows still waiting in audit_log_v1, which keep their seq.
INSERT INTO sqlite_sequence (name, seq) SELECT 'audit_log', COALESCE(MAX(seq), 0) FROM audit_log_v1;

-- One row per partition that has rows: its size and a MAC over (service, part, size), so rows
-- removed from the end show. Appenders hold it for the append (BEGIN IMMEDIATE on SQLite).
CREATE TABLE audit_partition (
    part INTEGER PRIMARY KEY NOT NULL CHECK (part >= 0),
    size BIGINT NOT NULL CHECK (size >= 0),
    key_id TEXT NOT NULL,
    head_mac BLOB NOT NULL CHECK (length(head_mac) = 32)
);

-- Signed checkpoints. One per partition and size (primary key), and one successor per
-- checkpoint (UNIQUE (part, prev_size)), so concurrent checkpointers never fork the sequence.
CREATE TABLE audit_checkpoint (
    part INTEGER NOT NULL CHECK (part >= 0),
    tree_size BIGINT NOT NULL CHECK (tree_size >= 1),
    root BLOB NOT NULL CHECK (length(root) = 32),
    prev_size BIGINT NOT NULL CHECK (prev_size >= 0 AND prev_size < tree_size),
    prev_root BLOB NOT NULL CHECK (length(prev_root) = 32),
    proof BLOB NOT NULL CHECK (length(proof) % 32 = 0),
    frontier BLOB NOT NULL CHECK (length(frontier) % 32 = 0),
    created_at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (part, tree_size),
    UNIQUE (part, prev_size)
);
