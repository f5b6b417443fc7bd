-- Back to code visits only and a bank that activates both functions. Fails (and changes
-- nothing) while a card visit exists or a card has its financial function without the medical
-- one: going back would lose them.
DROP INDEX visits_card;
ALTER TABLE visits
    DROP CONSTRAINT visits_one_source,
    DROP COLUMN card_number,
    ALTER COLUMN voucher_id SET NOT NULL,
    ALTER COLUMN code_nonce SET NOT NULL,
    ALTER COLUMN code_key_id SET NOT NULL;
ALTER TABLE cards ADD CONSTRAINT cards_check2 CHECK (financial_activated_at IS NULL OR medical_activated_at IS NOT NULL);
DROP TABLE card_pins;
