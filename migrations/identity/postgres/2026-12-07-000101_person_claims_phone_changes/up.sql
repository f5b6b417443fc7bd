-- Claims and proven phones.
--
-- A person created from a name + ID number pair the identity authority has not confirmed is a
-- claim: several live claims may share an ID number under different names, and at most one
-- person per ID number is confirmed (real name VERIFIED). Confirming one supersedes the other
-- live claims of its number. name_index is the HMAC blind index of the normalised name (NULL
-- only for rows written before this migration; the service fills them in at start).
DROP INDEX persons_id_number_index;
ALTER TABLE persons ADD COLUMN name_index BYTEA;
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

-- New purposes: SMS_PURPOSE_PHONE_CHANGE and FACE_PURPOSE_PHONE_CHANGE.
ALTER TABLE sms_challenges DROP CONSTRAINT sms_challenges_purpose_check;
ALTER TABLE sms_challenges ADD CONSTRAINT sms_challenges_purpose_check
    CHECK (purpose IN ('REAL_NAME', 'LINK_ACCOUNT', 'CARD_APPLICATION', 'PHONE_CHANGE'));
ALTER TABLE face_sessions DROP CONSTRAINT face_sessions_purpose_check;
ALTER TABLE face_sessions ADD CONSTRAINT face_sessions_purpose_check
    CHECK (purpose IN ('REAL_NAME', 'VOUCHER_ACTIVATION', 'FAMILY_BINDING', 'CARD_APPLICATION', 'PHONE_CHANGE'));

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
    reason_enc BYTEA,
    previous_phone_index BYTEA,
    new_phone_index BYTEA NOT NULL,
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
