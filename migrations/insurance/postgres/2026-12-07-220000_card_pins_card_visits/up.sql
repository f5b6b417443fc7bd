-- Issue 17 item 5, the card at the counter (docs/architecture.md#cards).
-- 1. A card's PIN: an Argon2id PHC string (never the PIN) and the wrong tries in a row; 5 lock
--    it until the bank resets it. A try is taken by one conditional update (`failures < 5`)
--    before the PIN is verified, so concurrent guesses never verify more than 5 wrong PINs.
-- 2. The bank activates the financial function only (and sets the PIN with it); the medical
--    function switches on at its first use at a hospital or pharmacy: the CHECK that the
--    financial function never runs without the medical one goes.
-- 3. A visit comes from a payment code or from a card: exactly one source is set.
CREATE TABLE card_pins (
    card_number TEXT PRIMARY KEY NOT NULL REFERENCES cards (card_number),
    pin_hash TEXT NOT NULL CHECK (pin_hash LIKE '$argon2id$%'),
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures BETWEEN 0 AND 5),
    set_by TEXT NOT NULL CHECK (length(set_by) >= 1),
    set_at TIMESTAMP NOT NULL
);

DO $$
DECLARE
    name TEXT;
BEGIN
    SELECT conname INTO STRICT name FROM pg_constraint
    WHERE conrelid = 'cards'::regclass AND contype = 'c'
      AND pg_get_constraintdef(oid) LIKE '%(financial_activated_at IS NULL) OR (medical_activated_at IS NOT NULL)%';
    EXECUTE format('ALTER TABLE cards DROP CONSTRAINT %I', name);
END
$$;

ALTER TABLE visits
    ALTER COLUMN voucher_id DROP NOT NULL,
    ALTER COLUMN code_nonce DROP NOT NULL,
    ALTER COLUMN code_key_id DROP NOT NULL,
    ADD COLUMN card_number TEXT REFERENCES cards (card_number),
    ADD CONSTRAINT visits_one_source CHECK (
        (voucher_id IS NOT NULL AND code_nonce IS NOT NULL AND code_key_id IS NOT NULL AND card_number IS NULL)
        OR (voucher_id IS NULL AND code_nonce IS NULL AND code_key_id IS NULL AND card_number IS NOT NULL));
CREATE INDEX visits_card ON visits (card_number) WHERE card_number IS NOT NULL;
