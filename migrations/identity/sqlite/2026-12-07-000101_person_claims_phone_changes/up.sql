-- Claims and proven phones.
--
-- A person created from a name + ID number pair the identity authority has not confirmed is a
-- claim: several live claims may share an ID number under different names, and at most one
-- person per ID number is confirmed (real name VERIFIED). Confirming one supersedes the other
-- live claims of its number. name_index is the HMAC blind index of the normalised name (NULL
-- only for rows written before this migration; the service fills them in at start).
DROP INDEX persons_id_number_index;
ALTER TABLE persons ADD COLUMN name_index BLOB;
-- A confirmed person is never superseded.
ALTER TABLE persons ADD COLUMN claim_status TEXT NOT NULL DEFAULT 'LIVE'
    CHECK (claim_status IN ('LIVE', 'SUPERSEDED') AND NOT (claim_status = 'SUPERSEDED' AND real_name_status = 'VERIFIED'));
CREATE INDEX persons_id_number_index ON persons (id_number_index);
CREATE UNIQUE INDEX persons_live_claim ON persons (id_number_index, name_index) WHERE claim_status = 'LIVE';
CREATE UNIQUE INDEX persons_confirmed ON persons (id_number_index) WHERE real_name_status = 'VERIFIED';
-- Which confirmation superseded a claim, and when (one row per superseded claim).
CREATE TABLE person_supersessions (
    person_id TEXT PRIMARY KEY NOT NULL REFERENCES persons (id),
    superseded_by TEXT NOT NULL REFERENCES persons (id),
    superseded_at TIMESTAMP NOT NULL,
    CHECK (person_id <> superseded_by)
);

-- New purposes: SMS_PURPOSE_PHONE_CHANGE and FACE_PURPOSE_PHONE_CHANGE. SQLite cannot alter a
-- CHECK constraint, so both tables are rebuilt (face_outbox too: it references face_sessions).
CREATE TABLE sms_challenges_v2 (
    id TEXT PRIMARY KEY NOT NULL,
    phone_index BLOB NOT NULL,
    phone_enc BLOB NOT NULL,
    code_hmac BLOB NOT NULL CHECK (length(code_hmac) = 32),
    purpose TEXT NOT NULL CHECK (purpose IN ('REAL_NAME', 'LINK_ACCOUNT', 'CARD_APPLICATION', 'PHONE_CHANGE')),
    state TEXT NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'VERIFIED', 'LOCKED', 'CONSUMED')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 3),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    verified_at TIMESTAMP,
    consumed_at TIMESTAMP,
    CHECK (expires_at > created_at),
    CHECK ((state = 'LOCKED') = (attempts = 3)),
    CHECK ((verified_at IS NOT NULL) = (state IN ('VERIFIED', 'CONSUMED'))),
    CHECK ((consumed_at IS NOT NULL) = (state = 'CONSUMED'))
);
INSERT INTO sms_challenges_v2 SELECT * FROM sms_challenges;
DROP TABLE sms_challenges;
ALTER TABLE sms_challenges_v2 RENAME TO sms_challenges;
CREATE INDEX sms_challenges_phone_created ON sms_challenges (phone_index, created_at);

CREATE TABLE face_sessions_v2 (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL REFERENCES persons (id),
    purpose TEXT NOT NULL
        CHECK (purpose IN ('REAL_NAME', 'VOUCHER_ACTIVATION', 'FAMILY_BINDING', 'CARD_APPLICATION', 'PHONE_CHANGE')),
    reference TEXT NOT NULL CHECK (length(reference) <= 128),
    partner_id TEXT NOT NULL,
    challenge TEXT NOT NULL CHECK (length(challenge) BETWEEN 4 AND 6),
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'PASSED', 'FAILED', 'EXPIRED')),
    submissions INTEGER NOT NULL DEFAULT 0 CHECK (submissions BETWEEN 0 AND 3),
    last_liveness_passed BOOLEAN,
    last_similarity REAL CHECK (last_similarity BETWEEN 0 AND 1),
    provider_id TEXT,
    provider_reference TEXT,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL,
    CHECK ((status = 'PENDING') = (finished_at IS NULL)),
    CHECK ((submissions = 0) = (last_similarity IS NULL)),
    CHECK (expires_at > created_at)
);
INSERT INTO face_sessions_v2 SELECT * FROM face_sessions;
CREATE TABLE face_outbox_v2 (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES face_sessions_v2 (id),
    person_id TEXT NOT NULL,
    purpose TEXT NOT NULL CHECK (purpose IN ('VOUCHER_ACTIVATION', 'FAMILY_BINDING', 'CARD_APPLICATION')),
    reference TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('PASSED', 'FAILED', 'EXPIRED')),
    finished_at TIMESTAMP NOT NULL,
    sequence INTEGER NOT NULL CHECK (sequence >= 1),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMP,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    delivered_at TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (session_id, sequence),
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);
INSERT INTO face_outbox_v2 SELECT * FROM face_outbox;
DROP TABLE face_outbox;
DROP TABLE face_sessions;
ALTER TABLE face_sessions_v2 RENAME TO face_sessions;
ALTER TABLE face_outbox_v2 RENAME TO face_outbox;
CREATE INDEX face_sessions_person ON face_sessions (person_id, created_at);
CREATE INDEX face_sessions_pending_expiry ON face_sessions (expires_at) WHERE status = 'PENDING';
CREATE INDEX face_outbox_undelivered ON face_outbox (next_attempt_at) WHERE delivered_at IS NULL;

-- Each change of a person's phone: how it was proven (a PASSED face session of the person,
-- used once; or an operator's recorded reason, encrypted like personal data), by which partner,
-- from which phone to which, as blind indexes only.
CREATE TABLE phone_changes (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL REFERENCES persons (id),
    method TEXT NOT NULL CHECK (method IN ('FACE', 'OPERATOR')),
    partner_id TEXT NOT NULL,
    sms_challenge_id TEXT NOT NULL UNIQUE,
    face_session_id TEXT UNIQUE REFERENCES face_sessions (id),
    reason_enc BLOB,
    previous_phone_index BLOB,
    new_phone_index BLOB NOT NULL,
    changed_at TIMESTAMP NOT NULL,
    CHECK ((method = 'FACE') = (face_session_id IS NOT NULL)),
    CHECK ((method = 'OPERATOR') = (reason_enc IS NOT NULL))
);
CREATE INDEX phone_changes_person ON phone_changes (person_id, changed_at);

-- Transactional outbox of PersonSuperseded events for insurance-svc, written in the transaction
-- that supersedes a claim and delivered at least once (same delivery columns as face_outbox),
-- so that insurance-svc suspends whatever it holds for the claim.
CREATE TABLE person_outbox (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL UNIQUE REFERENCES persons (id),
    superseded_by TEXT NOT NULL REFERENCES persons (id),
    occurred_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMP,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    delivered_at TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);
CREATE INDEX person_outbox_undelivered ON person_outbox (next_attempt_at) WHERE delivered_at IS NULL;
