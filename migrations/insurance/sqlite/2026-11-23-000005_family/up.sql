-- A voucher activated only through family bindings is suspended by FAMILY when the last of
-- them ends; a new binding or the member's own activation lifts it.
-- SQLite cannot alter a CHECK constraint: the table is rebuilt the documented way, with
-- foreign keys off outside a transaction (metadata.toml: run_in_transaction = false).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE vouchers_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED')),
    activated_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    suspended_by TEXT CHECK (suspended_by IN ('OPS', 'HOLDER', 'FAMILY')),
    suspension_reason TEXT,
    CHECK ((status = 'SUSPENDED') = (suspended_by IS NOT NULL))
);
INSERT INTO vouchers_rebuilt (id, person_id, status, activated_at, updated_at, suspended_by, suspension_reason)
    SELECT id, person_id, status, activated_at, updated_at, suspended_by, suspension_reason FROM vouchers;
DROP TABLE vouchers;
ALTER TABLE vouchers_rebuilt RENAME TO vouchers;
CREATE UNIQUE INDEX vouchers_one_per_person ON vouchers (person_id);

-- Family bindings (docs/architecture.md#family): an owner binds a member with three
-- documents. A live binding (PENDING_FACE or ACTIVE) holds one of the owner's 5 quota slots: the
-- unique index on (owner, slot) makes the quota an invariant of the schema, whatever the code does.
CREATE TABLE family_bindings (
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
CREATE UNIQUE INDEX family_bindings_owner_slot ON family_bindings (owner_person_id, quota_slot) WHERE quota_slot IS NOT NULL;
CREATE UNIQUE INDEX family_bindings_one_live_pair ON family_bindings (owner_person_id, member_person_id) WHERE quota_slot IS NOT NULL;
CREATE UNIQUE INDEX family_bindings_face_session ON family_bindings (face_session_id);
CREATE INDEX family_bindings_member ON family_bindings (member_person_id, status);

-- Who bound a member in which calendar month (China Standard Time): at most 2 different
-- binders per member and month, an invariant of the schema through the unique slot.
CREATE TABLE family_binder_months (
    member_person_id TEXT NOT NULL,
    month TEXT NOT NULL CHECK (length(month) = 7),
    owner_person_id TEXT NOT NULL,
    slot INTEGER NOT NULL CHECK (slot IN (1, 2)),
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (member_person_id, month, owner_person_id)
);
CREATE UNIQUE INDEX family_binder_months_slot ON family_binder_months (member_person_id, month, slot);
COMMIT;
PRAGMA foreign_keys = ON;
