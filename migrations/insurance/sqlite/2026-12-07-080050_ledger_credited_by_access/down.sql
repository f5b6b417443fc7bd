ALTER TABLE account_entries DROP COLUMN credited_by;
