-- Outcomes of face sessions with an insurance purpose, as identity-svc reported them
-- (FaceVerificationCompleted). Delivery is at least once: the primary key on the session id
-- makes recording idempotent, and a duplicate changes nothing.
CREATE TABLE face_outcomes (
    session_id TEXT PRIMARY KEY NOT NULL,
    event_id TEXT NOT NULL,
    person_id TEXT NOT NULL,
    purpose TEXT NOT NULL CHECK (purpose IN ('VOUCHER_ACTIVATION', 'FAMILY_BINDING', 'CARD_APPLICATION')),
    reference TEXT NOT NULL CHECK (length(reference) <= 128),
    outcome TEXT NOT NULL CHECK (outcome IN ('PASSED', 'FAILED', 'EXPIRED')),
    finished_at TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL
);
-- "A PASSED session of this person for this purpose, recent enough" (voucher activation).
CREATE INDEX face_outcomes_person ON face_outcomes (person_id, purpose, finished_at);
