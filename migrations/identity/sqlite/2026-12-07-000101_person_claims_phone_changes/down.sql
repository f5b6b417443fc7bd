DROP TABLE person_outbox;
DROP TABLE phone_changes;

CREATE TABLE face_sessions_v1 (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL REFERENCES persons (id),
    purpose TEXT NOT NULL
        CHECK (purpose IN ('REAL_NAME', 'VOUCHER_ACTIVATION', 'FAMILY_BINDING', 'CARD_APPLICATION')),
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
INSERT INTO face_sessions_v1 SELECT * FROM face_sessions WHERE purpose <> 'PHONE_CHANGE';
CREATE TABLE face_outbox_v1 (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES face_sessions_v1 (id),
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
INSERT INTO face_outbox_v1 SELECT * FROM face_outbox;
DROP TABLE face_outbox;
DROP TABLE face_sessions;
ALTER TABLE face_sessions_v1 RENAME TO face_sessions;
ALTER TABLE face_outbox_v1 RENAME TO face_outbox;
CREATE INDEX face_sessions_person ON face_sessions (person_id, created_at);
CREATE INDEX face_sessions_pending_expiry ON face_sessions (expires_at) WHERE status = 'PENDING';
CREATE INDEX face_outbox_undelivered ON face_outbox (next_attempt_at) WHERE delivered_at IS NULL;

CREATE TABLE sms_challenges_v1 (
    id TEXT PRIMARY KEY NOT NULL,
    phone_index BLOB NOT NULL,
    phone_enc BLOB NOT NULL,
    code_hmac BLOB NOT NULL CHECK (length(code_hmac) = 32),
    purpose TEXT NOT NULL CHECK (purpose IN ('REAL_NAME', 'LINK_ACCOUNT', 'CARD_APPLICATION')),
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
INSERT INTO sms_challenges_v1 SELECT * FROM sms_challenges WHERE purpose <> 'PHONE_CHANGE';
DROP TABLE sms_challenges;
ALTER TABLE sms_challenges_v1 RENAME TO sms_challenges;
CREATE INDEX sms_challenges_phone_created ON sms_challenges (phone_index, created_at);

-- Going back to one person per ID number loses every superseded claim.
DROP INDEX persons_confirmed;
DROP INDEX persons_live_claim;
DROP INDEX persons_id_number_index;
DROP TABLE person_supersessions;
DELETE FROM persons WHERE claim_status = 'SUPERSEDED';
ALTER TABLE persons DROP COLUMN claim_status;
ALTER TABLE persons DROP COLUMN name_index;
CREATE UNIQUE INDEX persons_id_number_index ON persons (id_number_index);
