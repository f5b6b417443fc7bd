-- audit_log numbers its rows with SQLite's plain rowid instead of AUTOINCREMENT: AUTOINCREMENT
-- reads and rewrites the table's row in sqlite_sequence on every insert, one more page each
-- audited call's savepoint journals and each commit writes (docs/benchmarks.md, "Issue 13: the
-- audit budget (session 4)"). `seq` is the reading order only (not sealed: `(part, idx)` is
-- the sealed position), and a plain rowid still numbers new rows after the largest one; it
-- could only reuse the number of a last row that was deleted, and `medins audit verify` names
-- that deletion. SQLite cannot drop AUTOINCREMENT in place: the table is rebuilt, rows kept.
CREATE TABLE audit_log_plain (
    seq INTEGER PRIMARY KEY NOT NULL,
    part INTEGER NOT NULL CHECK (part >= 0),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    partner_id TEXT NOT NULL,
    method TEXT NOT NULL,
    person_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    key_id TEXT NOT NULL,
    mac BLOB NOT NULL CHECK (length(mac) = 32),
    UNIQUE (part, idx)
);
INSERT INTO audit_log_plain (seq, part, idx, partner_id, method, person_id, outcome, recorded_at, key_id, mac)
    SELECT seq, part, idx, partner_id, method, person_id, outcome, recorded_at, key_id, mac FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_plain RENAME TO audit_log;
-- A person's access history, newest first.
CREATE INDEX audit_log_person ON audit_log (person_id, recorded_at, seq);
