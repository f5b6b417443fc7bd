-- Face verification sessions (docs/architecture.md#identity-svc). Only the outcome of a check is
-- kept: no image. A session ends once: finished_at is set exactly when the status is final, and a
-- final row is never updated again (the store only updates rows WHERE status = 'PENDING').
CREATE TABLE face_sessions (
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
    last_similarity DOUBLE PRECISION CHECK (last_similarity BETWEEN 0 AND 1),
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
CREATE INDEX face_sessions_person ON face_sessions (person_id, created_at);
-- The expiry sweeper's scan: pending sessions by expiry.
CREATE INDEX face_sessions_pending_expiry ON face_sessions (expires_at) WHERE status = 'PENDING';

-- Transactional outbox: FaceVerificationCompleted events for insurance-svc, written in the same
-- transaction as the status change that ends a session with an insurance purpose, delivered
-- at least once, in `sequence` order per session. Delivery bookkeeping (next_attempt_at,
-- lease_until, delivered_at) is in wall-clock time; a NULL next_attempt_at means "due now".
CREATE TABLE face_outbox (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES face_sessions (id),
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
-- The delivery worker's scan: undelivered events.
CREATE INDEX face_outbox_undelivered ON face_outbox (next_attempt_at) WHERE delivered_at IS NULL;
