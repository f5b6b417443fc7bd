-- Issue 14 items 1, 2 and 7 (family bindings): a relationship proven before it gives power
-- (PENDING_REVIEW, how it was proven, the operator's review), the notice version the owner
-- accepted, and bindings made at a counter (terminal, hospital insurance office, window).
ALTER TABLE family_bindings DROP CONSTRAINT family_bindings_status_check;
ALTER TABLE family_bindings ADD CONSTRAINT family_bindings_status_check
    CHECK (status IN ('PENDING_FACE', 'PENDING_REVIEW', 'ACTIVE', 'REJECTED', 'EXPIRED', 'REMOVED'));
-- The live-status rules, named by PostgreSQL when migration 000005 created them, are replaced
-- by named ones that count PENDING_REVIEW as live.
ALTER TABLE family_bindings DROP CONSTRAINT family_bindings_check1;
ALTER TABLE family_bindings DROP CONSTRAINT family_bindings_check2;
ALTER TABLE family_bindings ADD CONSTRAINT family_bindings_live_holds_slot
    CHECK ((status IN ('PENDING_FACE', 'PENDING_REVIEW', 'ACTIVE')) = (quota_slot IS NOT NULL));
ALTER TABLE family_bindings ADD CONSTRAINT family_bindings_live_not_ended
    CHECK ((status IN ('PENDING_FACE', 'PENDING_REVIEW', 'ACTIVE')) = (ended_at IS NULL));
-- What a binding rests on, one row per binding, written in the binding's transaction: how its
-- relationship was proven, the operator's review, the notice the owner accepted, and where it
-- was made (a separate table: the binding's own row is at diesel's 16-column limit).
CREATE TABLE family_binding_terms (
    binding_id TEXT PRIMARY KEY NOT NULL REFERENCES family_bindings (id),
    relationship_proof TEXT CHECK (relationship_proof IN ('MEMBER_FACE', 'AUTHORITY', 'OPERATOR_REVIEW', 'WINDOW_ATTESTATION')),
    review_deadline TIMESTAMP,
    reviewed_by TEXT CHECK (length(reviewed_by) BETWEEN 1 AND 128),
    reviewed_at TIMESTAMP,
    rejection_reason TEXT CHECK (length(rejection_reason) BETWEEN 1 AND 800),
    notice_version TEXT CHECK (length(notice_version) BETWEEN 1 AND 32),
    notice_accepted_at TIMESTAMP,
    channel TEXT NOT NULL CHECK (channel IN ('ONLINE', 'TERMINAL', 'HOSPITAL_OFFICE', 'WINDOW')),
    owner_face_session_id TEXT,
    attested_by TEXT CHECK (length(attested_by) BETWEEN 1 AND 64),
    CHECK (relationship_proof <> 'OPERATOR_REVIEW' OR reviewed_by IS NOT NULL),
    CHECK ((reviewed_by IS NULL) = (reviewed_at IS NULL)),
    CHECK (rejection_reason IS NULL OR (reviewed_by IS NOT NULL AND relationship_proof IS NULL)),
    CHECK ((notice_version IS NULL) = (notice_accepted_at IS NULL)),
    CHECK (channel = 'ONLINE' OR notice_version IS NOT NULL),
    CHECK ((channel IN ('TERMINAL', 'HOSPITAL_OFFICE')) = (owner_face_session_id IS NOT NULL)),
    CHECK ((channel = 'WINDOW') = (attested_by IS NOT NULL)),
    CHECK (relationship_proof <> 'WINDOW_ATTESTATION' OR channel = 'WINDOW')
);
CREATE UNIQUE INDEX family_binding_terms_owner_face ON family_binding_terms (owner_face_session_id);
CREATE INDEX family_binding_terms_review_deadline ON family_binding_terms (review_deadline) WHERE review_deadline IS NOT NULL;
-- Bindings made before this migration without the member's face check (members under 16)
-- were never proven: they lose their power now and wait for an operator's review, like new
-- ones the authority cannot confirm (7 days, the default review period).
INSERT INTO family_binding_terms (binding_id, relationship_proof, review_deadline, channel)
    SELECT id,
        CASE WHEN status = 'ACTIVE' AND face_session_id IS NOT NULL THEN 'MEMBER_FACE' END,
        CASE WHEN status = 'ACTIVE' AND face_session_id IS NULL THEN (now() AT TIME ZONE 'UTC') + interval '7 days' END,
        'ONLINE'
    FROM family_bindings;
UPDATE family_bindings SET status = 'PENDING_REVIEW' WHERE status = 'ACTIVE' AND face_session_id IS NULL;
