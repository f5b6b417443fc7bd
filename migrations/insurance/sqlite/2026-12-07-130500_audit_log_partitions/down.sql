-- Back to the single hash chain. Rows appended or re-sealed since the upgrade are dropped with
-- the new tables (the first format cannot hold them).
DROP TABLE audit_checkpoint;
DROP TABLE audit_partition;
DROP INDEX audit_log_person;
DROP TABLE audit_log;
ALTER TABLE audit_log_v1 RENAME TO audit_log;
ALTER TABLE audit_chain_head_v1 RENAME TO audit_chain_head;
CREATE INDEX audit_log_person ON audit_log (person_id, seq);
