-- The SQLite migration of this version drops AUTOINCREMENT from audit_log (its per-insert
-- sqlite_sequence update). PostgreSQL's identity column has no such cost, so its table stays
-- as it is; this version keeps both backends' migration lists the same (tests/e2e/docs.rs).
SELECT 1;
