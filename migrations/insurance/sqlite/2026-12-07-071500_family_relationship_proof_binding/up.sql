-- Issue 14 items 1, 2 and 7 (family bindings): a relationship proven before it gives power
-- (PENDING_REVIEW, how it was proven, the operator's review), the notice version the owner
-- accepted, and bindings made at a counter (terminal, hospital insurance office, window).
-- SQLite cannot alter a CHECK constraint: the table is rebuilt the documented way, with foreign
-- keys off outside a transaction (metadata.toml: run_in_transaction = false).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE family_bindings_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    owner_person_id TEXT NOT NULL,
    member_person_id TEXT NOT NULL,
    relationship TEXT NOT NULL CHECK (relationship IN ('SPOUSE', 'CHILD', 'PARENT', 'GRANDPARENT', 'GRANDCHILD', 'SIBLING', 'OTHER_CLOSE_RELATIVE')),
    status TEXT NOT NULL CHECK (status IN ('PENDING_FACE', 'PENDING_REVIEW', 'ACTIVE', 'REJECTED', 'EXPIRED', 'REMOVED')),
    quota_slot INTEGER CHECK (quota_slot BETWEEN 1 AND 5),
    member_birth_date DATE NOT NULL,
    face_session_id TEXT,
    commitment_letter_id TEXT NOT NULL REFERENCES documents (id),
    owner_register_id TEXT NOT NULL REFERENCES documents (id),
    member_register_id TEXT NOT NULL REFERENCES documents (id),
    family_aid BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    activated_at TIMESTAMP,
    ended_at TIMESTAMP,
    removed_by TEXT CHECK (removed_by IN ('OWNER', 'MEMBER', 'OPS')),
    CHECK (owner_person_id <> member_person_id),
    CHECK ((status IN ('PENDING_FACE', 'PENDING_REVIEW', 'ACTIVE')) = (quota_slot IS NOT NULL)),
    CHECK ((status IN ('PENDING_FACE', 'PENDING_REVIEW', 'ACTIVE')) = (ended_at IS NULL)),
    CHECK ((status = 'REMOVED') = (removed_by IS NOT NULL)),
    CHECK (status <> 'PENDING_FACE' OR face_session_id IS NOT NULL)
);
INSERT INTO family_bindings_rebuilt (id, owner_person_id, member_person_id, relationship, status, quota_slot, member_birth_date, face_session_id, commitment_letter_id, owner_register_id, member_register_id, family_aid, created_at, activated_at, ended_at, removed_by) SELECT id, owner_person_id, member_person_id, relationship, status, quota_slot, member_birth_date, face_session_id, commitment_letter_id, owner_register_id, member_register_id, family_aid, created_at, activated_at, ended_at, removed_by FROM family_bindings;
DROP TABLE family_bindings;
ALTER TABLE family_bindings_rebuilt RENAME TO family_bindings;
CREATE UNIQUE INDEX family_bindings_owner_slot ON family_bindings (owner_person_id, quota_slot) WHERE quota_slot IS NOT NULL;
CREATE UNIQUE INDEX family_bindings_one_live_pair ON family_bindings (owner_person_id, member_person_id) WHERE quota_slot IS NOT NULL;
CREATE UNIQUE INDEX family_bindings_face_session ON family_bindings (face_session_id);
CREATE INDEX family_bindings_member ON family_bindings (member_person_id, status);
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
        CASE WHEN status = 'ACTIVE' AND face_session_id IS NULL THEN datetime('now', '+7 days') END,
        'ONLINE'
    FROM family_bindings;
UPDATE family_bindings SET status = 'PENDING_REVIEW' WHERE status = 'ACTIVE' AND face_session_id IS NULL;
COMMIT;
PRAGMA foreign_keys = ON;
