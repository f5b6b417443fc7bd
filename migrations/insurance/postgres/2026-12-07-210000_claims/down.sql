DROP TABLE claim_reviews;
DROP TABLE claim_documents;
DROP TABLE claim_items;
DROP TABLE claims;
DELETE FROM account_entries WHERE kind = 'CLAIM_REIMBURSEMENT';
DELETE FROM settlements WHERE visit_id IS NULL;
DELETE FROM documents WHERE kind = 'INVOICE';
ALTER TABLE documents DROP CONSTRAINT documents_kind_check;
ALTER TABLE documents ADD CONSTRAINT documents_kind_check
    CHECK (kind IN ('COMMITMENT_LETTER', 'HOUSEHOLD_REGISTER', 'ID_CARD_FRONT', 'ID_CARD_BACK', 'PHOTO', 'SIGNATURE'));
ALTER TABLE account_entries DROP CONSTRAINT account_entries_claim_reimbursement;
ALTER TABLE account_entries DROP CONSTRAINT account_entries_kind_check;
ALTER TABLE account_entries ADD CONSTRAINT account_entries_kind_check
    CHECK (kind IN ('CONTRIBUTION', 'SETTLEMENT', 'FAMILY_AID', 'ADJUSTMENT', 'REVERSAL'));
DROP INDEX settlements_person_year_time;
ALTER TABLE settlements ALTER COLUMN visit_id SET NOT NULL;
