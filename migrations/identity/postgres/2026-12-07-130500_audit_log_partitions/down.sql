-- Back to the single hash chain. Rows appended or re-sealed since the upgrade are dropped with
-- the new tables (the first format cannot hold them).
DROP TABLE audit_checkpoint;
DROP TABLE audit_partition;
DROP TABLE audit_log;
ALTER TABLE audit_log_v1 RENAME TO audit_log;
ALTER INDEX audit_log_v1_pkey RENAME TO audit_log_pkey;
ALTER INDEX audit_log_v1_person RENAME TO audit_log_person;
ALTER TABLE audit_chain_head_v1 RENAME TO audit_chain_head;
ALTER INDEX audit_chain_head_v1_pkey RENAME TO audit_chain_head_pkey;
