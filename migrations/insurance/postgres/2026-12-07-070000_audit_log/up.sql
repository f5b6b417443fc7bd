-- Audit trail (docs/architecture.md#trust-model): one row per call at insurance-svc that read or
-- changed a person's data, the same table as identity-svc's (medins_common::audit). Rows form
-- a hash chain: row_hash = SHA-256(context, prev_hash, the row's canonical fields), prev_hash is
-- the row_hash of the row before (32 zero bytes for the first). No foreign key on person_id:
-- calls about unknown persons are recorded too, and the trail outlives the person row.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY NOT NULL CHECK (seq >= 1),
    partner_id TEXT NOT NULL,
    method TEXT NOT NULL,
    person_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    prev_hash BYTEA NOT NULL CHECK (length(prev_hash) = 32),
    row_hash BYTEA NOT NULL CHECK (length(row_hash) = 32)
);
-- A person's access history, newest first.
CREATE INDEX audit_log_person ON audit_log (person_id, seq);

-- The tail of the chain, one row. Appenders lock it (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE
-- on SQLite), so the chain never forks; seq being the primary key of audit_log backs this up.
CREATE TABLE audit_chain_head (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_seq BIGINT NOT NULL CHECK (last_seq >= 0),
    last_hash BYTEA NOT NULL CHECK (length(last_hash) = 32)
);
INSERT INTO audit_chain_head (id, last_seq, last_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
