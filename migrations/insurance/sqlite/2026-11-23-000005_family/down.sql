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
    suspended_by TEXT CHECK (suspended_by IN ('OPS', 'HOLDER')),
    suspension_reason TEXT,
    CHECK ((status = 'SUSPENDED') = (suspended_by IS NOT NULL))
);
UPDATE vouchers SET suspended_by = 'OPS' WHERE suspended_by = 'FAMILY';
INSERT INTO vouchers_rebuilt (id, person_id, status, activated_at, updated_at, suspended_by, suspension_reason)
    SELECT id, person_id, status, activated_at, updated_at, suspended_by, suspension_reason FROM vouchers;
DROP TABLE vouchers;
ALTER TABLE vouchers_rebuilt RENAME TO vouchers;
CREATE UNIQUE INDEX vouchers_one_per_person ON vouchers (person_id);
DROP TABLE family_binder_months;
DROP TABLE family_bindings;
COMMIT;
PRAGMA foreign_keys = ON;
