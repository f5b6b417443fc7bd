-- Assurance levels (issue 12), one row per person who reached one: 1 after real name (SMS +
-- identity authority), 2 after a PASSED face session of purpose REAL_NAME on top of level 1;
-- how and when the level was reached. Existing verified persons are level 1.
CREATE TABLE person_assurance (
    person_id TEXT PRIMARY KEY NOT NULL REFERENCES persons (id),
    level INTEGER NOT NULL CHECK (level IN (1, 2)),
    method TEXT NOT NULL CHECK (length(method) BETWEEN 1 AND 64),
    raised_at TIMESTAMP NOT NULL
);
INSERT INTO person_assurance (person_id, level, method, raised_at)
SELECT id, 1, COALESCE(real_name_method, 'SMS_AND_AUTHORITY'), real_name_verified_at
FROM persons
WHERE real_name_status = 'VERIFIED';

-- Token revocations: tokens of partner_id (every partner when NULL) for person_id issued at or
-- before revoked_at are refused. Written in the same transaction as the unlink, revocation by
-- the person or suspension that caused it; every replica of both services reads the rows of the
-- last token lifetime once a second.
CREATE TABLE token_revocations (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL REFERENCES persons (id),
    partner_id TEXT CHECK (partner_id IS NULL OR length(partner_id) BETWEEN 1 AND 64),
    revoked_at TIMESTAMP NOT NULL,
    reason TEXT NOT NULL
        CHECK (reason IN ('UNLINKED', 'REVOKED_BY_PERSON', 'PERSON_SUSPENDED', 'CLAIM_SUPERSEDED'))
);
-- The feed's scan (the last 15 minutes) and the issuer's "latest revocation for this person".
CREATE INDEX token_revocations_revoked_at ON token_revocations (revoked_at);
CREATE INDEX token_revocations_person ON token_revocations (person_id, revoked_at);

-- Suspensions of persons by operators, kept as history. The operators' reasons may name people,
-- so they are encrypted like personal data. At most one open suspension per person.
CREATE TABLE person_suspensions (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL REFERENCES persons (id),
    suspended_at TIMESTAMP NOT NULL,
    suspended_by TEXT NOT NULL,
    reason_enc BLOB NOT NULL,
    resumed_at TIMESTAMP,
    resumed_by TEXT,
    resume_reason_enc BLOB,
    CHECK ((resumed_at IS NULL) = (resumed_by IS NULL)),
    CHECK ((resumed_at IS NULL) = (resume_reason_enc IS NULL)),
    CHECK (resumed_at IS NULL OR resumed_at >= suspended_at)
);
CREATE UNIQUE INDEX person_suspensions_open ON person_suspensions (person_id) WHERE resumed_at IS NULL;
