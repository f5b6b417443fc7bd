-- Issue 17 item 5, the card at the counter (docs/architecture.md#cards).
-- 1. A card's PIN: an Argon2id PHC string (never the PIN) and the wrong tries in a row; 5 lock
--    it until the bank resets it. A try is taken by one conditional update (`failures < 5`)
--    before the PIN is verified, so concurrent guesses never verify more than 5 wrong PINs.
-- 2. The bank activates the financial function only (and sets the PIN with it); the medical
--    function switches on at its first use at a hospital or pharmacy: the CHECK that the
--    financial function never runs without the medical one goes.
-- 3. A visit comes from a payment code or from a card: exactly one source is set.
-- SQLite cannot drop a CHECK or a NOT NULL: cards and visits are rebuilt the documented way,
-- with foreign keys off outside a transaction (metadata.toml: run_in_transaction = false).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE cards_rebuilt (
    card_number TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    application_id TEXT NOT NULL REFERENCES card_applications (id),
    status TEXT NOT NULL CHECK (status IN ('VALID', 'LOST_TEMPORARY', 'LOST', 'REPLACED')),
    medical_activated_at TIMESTAMP,
    medical_activated_by TEXT,
    financial_activated_at TIMESTAMP,
    financial_activated_by TEXT,
    replaced_by_application_id TEXT REFERENCES card_applications (id),
    issued_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK ((medical_activated_at IS NULL) = (medical_activated_by IS NULL)),
    CHECK ((financial_activated_at IS NULL) = (financial_activated_by IS NULL)),
    CHECK ((status = 'REPLACED') = (replaced_by_application_id IS NOT NULL))
);
INSERT INTO cards_rebuilt (card_number, person_id, application_id, status, medical_activated_at, medical_activated_by, financial_activated_at, financial_activated_by, replaced_by_application_id, issued_at, updated_at)
    SELECT card_number, person_id, application_id, status, medical_activated_at, medical_activated_by, financial_activated_at, financial_activated_by, replaced_by_application_id, issued_at, updated_at FROM cards;
DROP TABLE cards;
ALTER TABLE cards_rebuilt RENAME TO cards;
CREATE UNIQUE INDEX cards_one_per_application ON cards (application_id);
-- One card not yet replaced per person (a LOST card waits for its replacement).
CREATE UNIQUE INDEX cards_one_current_per_person ON cards (person_id) WHERE status <> 'REPLACED';

CREATE TABLE card_pins (
    card_number TEXT PRIMARY KEY NOT NULL REFERENCES cards (card_number),
    pin_hash TEXT NOT NULL CHECK (pin_hash LIKE '$argon2id$%'),
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures BETWEEN 0 AND 5),
    set_by TEXT NOT NULL CHECK (length(set_by) >= 1),
    set_at TIMESTAMP NOT NULL
);

CREATE TABLE visits_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    voucher_id TEXT REFERENCES vouchers (id),
    person_id TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    partner_id TEXT NOT NULL,
    code_nonce BLOB,
    code_key_id TEXT,
    opened_at TIMESTAMP NOT NULL,
    card_number TEXT REFERENCES cards (card_number),
    CONSTRAINT visits_one_source CHECK (
        (voucher_id IS NOT NULL AND code_nonce IS NOT NULL AND code_key_id IS NOT NULL AND card_number IS NULL)
        OR (voucher_id IS NULL AND code_nonce IS NULL AND code_key_id IS NULL AND card_number IS NOT NULL))
);
INSERT INTO visits_rebuilt (id, voucher_id, person_id, account_id, partner_id, code_nonce, code_key_id, opened_at)
    SELECT id, voucher_id, person_id, account_id, partner_id, code_nonce, code_key_id, opened_at FROM visits;
DROP TABLE visits;
ALTER TABLE visits_rebuilt RENAME TO visits;
-- A code opens at most one visit (NULLs, card visits, are distinct).
CREATE UNIQUE INDEX visits_one_redemption_per_code ON visits (code_nonce);
CREATE INDEX visits_card ON visits (card_number) WHERE card_number IS NOT NULL;
COMMIT;
PRAGMA foreign_keys = ON;
