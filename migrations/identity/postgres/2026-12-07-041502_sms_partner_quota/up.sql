-- A challenge answers only the partner that asked for it: every lookup is by (id, partner_id),
-- so another partner finds nothing. Challenges from before this column get '' and answer
-- nobody (they expire within minutes).
ALTER TABLE sms_challenges ADD COLUMN partner_id TEXT NOT NULL DEFAULT '';

-- Codes each partner had sent per China-time day, against its daily quota (partners file). One
-- row per (partner, day), incremented by SendSmsCode in the transaction that inserts the
-- challenge with a compare-and-set on the count it read (the row is locked first on
-- PostgreSQL; SQLite's BEGIN IMMEDIATE runs writers one at a time), so the quota holds across
-- replicas and under concurrency. An undelivered code gives its unit back.
CREATE TABLE sms_partner_days (
    partner_id TEXT NOT NULL,
    day DATE NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0 CHECK (sent >= 0),
    PRIMARY KEY (partner_id, day)
);
