DROP INDEX claim_documents_one_claim_per_invoice;
ALTER TABLE claim_documents DROP COLUMN holds;
