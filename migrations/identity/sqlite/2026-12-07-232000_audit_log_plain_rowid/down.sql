-- Back to AUTOINCREMENT, numbering on after the largest seq either audit table holds.
CREATE TABLE audit_log_autoincrement (
    seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
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
INSERT INTO audit_log_autoincrement (seq, part, idx, partner_id, method, person_id, outcome, recorded_at, key_id, mac)
    SELECT seq, part, idx, partner_id, method, person_id, outcome, recorded_at, key_id, mac FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_autoincrement RENAME TO audit_log;
CREATE INDEX audit_log_person ON audit_log (person_id, recorded_at, seq);
DELETE FROM sqlite_sequence WHERE name = 'audit_log';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'audit_log', MAX(COALESCE((SELECT MAX(seq) FROM audit_log), 0), COALESCE((SELECT MAX(seq) FROM audit_log_v1), 0));
