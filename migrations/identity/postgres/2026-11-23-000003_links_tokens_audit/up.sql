-- Partner links (docs/architecture.md#identity-svc): a partner's own user, linked to a person after
-- an SMS code proved control of the person's phone. The partner's user ref may itself identify the
-- person (an app account id, sometimes a phone number), so it is stored like personal data:
-- encrypted, with an HMAC blind index over (partner, ref) for the uniqueness checks. An unlinked
-- row stays (unlinked_at set); only live rows take part in the two uniqueness rules.
CREATE TABLE partner_links (
    id TEXT PRIMARY KEY NOT NULL,
    partner_id TEXT NOT NULL,
    person_id TEXT NOT NULL REFERENCES persons (id),
    partner_user_ref_index BYTEA NOT NULL,
    partner_user_ref_enc BYTEA NOT NULL,
    linked_at TIMESTAMP NOT NULL,
    unlinked_at TIMESTAMP,
    CHECK (unlinked_at IS NULL OR unlinked_at >= linked_at)
);
-- One live link per (partner, person) and per (partner, partner user ref).
CREATE UNIQUE INDEX partner_links_live_person ON partner_links (partner_id, person_id) WHERE unlinked_at IS NULL;
CREATE UNIQUE INDEX partner_links_live_user_ref ON partner_links (partner_id, partner_user_ref_index)
    WHERE unlinked_at IS NULL;
-- The person's own list, newest first (ids are UUIDv7: time ordered).
CREATE INDEX partner_links_person ON partner_links (person_id, id);

-- Audit trail (docs/architecture.md#who-may-call-what): one row per call that read or changed a
-- person's data. Rows form a hash chain: row_hash = SHA-256(context, prev_hash, the row's canonical
-- fields), prev_hash is the row_hash of the row before (32 zero bytes for the first). No foreign
-- key on person_id: calls about unknown persons are recorded too, and the trail outlives the person
-- row.
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
