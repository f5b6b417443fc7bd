-- Back to code visits only and a bank that activates both functions. Fails (and changes
-- nothing) while a card visit exists or a card has its financial function without the medical
-- one: going back would lose them.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE visits_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    voucher_id TEXT NOT NULL REFERENCES vouchers (id),
    person_id TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    partner_id TEXT NOT NULL,
    code_nonce BLOB NOT NULL,
    code_key_id TEXT NOT NULL,
    opened_at TIMESTAMP NOT NULL
);
INSERT INTO visits_rebuilt (id, voucher_id, person_id, account_id, partner_id, code_nonce, code_key_id, opened_at)
    SELECT id, voucher_id, person_id, account_id, partner_id, code_nonce, code_key_id, opened_at FROM visits;
DROP TABLE visits;
ALTER TABLE visits_rebuilt RENAME TO visits;
CREATE UNIQUE INDEX visits_one_redemption_per_code ON visits (code_nonce);
DROP TABLE card_pins;
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
    -- The financial function never runs without the medical one (a bank activates both).
    CHECK (financial_activated_at IS NULL OR medical_activated_at IS NOT NULL),
    CHECK ((status = 'REPLACED') = (replaced_by_application_id IS NOT NULL))
);
INSERT INTO cards_rebuilt (card_number, person_id, application_id, status, medical_activated_at, medical_activated_by, financial_activated_at, financial_activated_by, replaced_by_application_id, issued_at, updated_at)
    SELECT card_number, person_id, application_id, status, medical_activated_at, medical_activated_by, financial_activated_at, financial_activated_by, replaced_by_application_id, issued_at, updated_at FROM cards;
DROP TABLE cards;
ALTER TABLE cards_rebuilt RENAME TO cards;
CREATE UNIQUE INDEX cards_one_per_application ON cards (application_id);
CREATE UNIQUE INDEX cards_one_current_per_person ON cards (person_id) WHERE status <> 'REPLACED';
COMMIT;
PRAGMA foreign_keys = ON;
