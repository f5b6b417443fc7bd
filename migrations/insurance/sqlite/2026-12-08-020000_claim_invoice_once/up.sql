-- One invoice backs one claim (README "Reimbursement claims"): a claim holds its invoices while
-- it is SUBMITTED or APPROVED; a REJECTED claim lets them go, so the person may claim the bill
-- again. The partial unique index makes a second holding claim impossible whatever the code
-- does: of two SubmitClaim racing with the same invoice, the later insert fails here and its
-- retried transaction is answered INVOICE_ALREADY_CLAIMED. Every claim_documents row is an
-- INVOICE document (SubmitClaim writes no other kind). Rows from before: a rejected claim's
-- invoices are let go; should two live claims already share an invoice, this migration stops
-- on the index, and an operator rejects one of them first.
ALTER TABLE claim_documents ADD COLUMN holds BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE claim_documents SET holds = FALSE
    WHERE claim_id IN (SELECT id FROM claims WHERE status = 'REJECTED');
CREATE UNIQUE INDEX claim_documents_one_claim_per_invoice ON claim_documents (document_id) WHERE holds;
