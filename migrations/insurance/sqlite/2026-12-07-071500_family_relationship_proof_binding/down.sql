PRAGMA foreign_keys = OFF;
BEGIN;
DROP TABLE family_binding_terms;
CREATE TABLE family_bindings_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    owner_person_id TEXT NOT NULL,
    member_person_id TEXT NOT NULL,
    relationship TEXT NOT NULL CHECK (relationship IN ('SPOUSE', 'CHILD', 'PARENT', 'GRANDPARENT', 'GRANDCHILD', 'SIBLING', 'OTHER_CLOSE_RELATIVE')),
    status TEXT NOT NULL CHECK (status IN ('PENDING_FACE', 'ACTIVE', 'REJECTED', 'EXPIRED', 'REMOVED')),
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
    CHECK ((status IN ('PENDING_FACE', 'ACTIVE')) = (quota_slot IS NOT NULL)),
    CHECK ((status IN ('PENDING_FACE', 'ACTIVE')) = (ended_at IS NULL)),
    CHECK ((status = 'REMOVED') = (removed_by IS NOT NULL)),
    CHECK (status <> 'PENDING_FACE' OR face_session_id IS NOT NULL)
);
INSERT INTO family_bindings_rebuilt (id, owner_person_id, member_person_id, relationship, status, quota_slot, member_birth_date, face_session_id, commitment_letter_id, owner_register_id, member_register_id, family_aid, created_at, activated_at, ended_at, removed_by)
    SELECT id, owner_person_id, member_person_id, relationship, CASE status WHEN 'PENDING_REVIEW' THEN 'ACTIVE' ELSE status END, quota_slot, member_birth_date, face_session_id, commitment_letter_id, owner_register_id, member_register_id, family_aid, created_at, activated_at, ended_at, removed_by FROM family_bindings;
DROP TABLE family_bindings;
ALTER TABLE family_bindings_rebuilt RENAME TO family_bindings;
CREATE UNIQUE INDEX family_bindings_owner_slot ON family_bindings (owner_person_id, quota_slot) WHERE quota_slot IS NOT NULL;
CREATE UNIQUE INDEX family_bindings_one_live_pair ON family_bindings (owner_person_id, member_person_id) WHERE quota_slot IS NOT NULL;
CREATE UNIQUE INDEX family_bindings_face_session ON family_bindings (face_session_id);
CREATE INDEX family_bindings_member ON family_bindings (member_person_id, status);
COMMIT;
PRAGMA foreign_keys = ON;
