-- Issue 17 items 6 and 7: a person's settlement records, and reimbursement claims.
-- A claim's settlement has no visit (the person was not settled at a counter): visit_id becomes
-- optional; the claim names its settlement (claim_reviews.settlement_id). One settlement per
-- visit still holds (a unique index allows any number of NULLs).
ALTER TABLE settlements ALTER COLUMN visit_id DROP NOT NULL;
-- ListSettlements: a person's year, newest first (keyset paging on settled_at, id).
CREATE INDEX settlements_person_year_time ON settlements (person_id, year, settled_at, id);
-- The fund's share of an approved claim credited to the individual account: a credit naming
-- the claim's settlement.
ALTER TABLE account_entries DROP CONSTRAINT account_entries_kind_check;
ALTER TABLE account_entries ADD CONSTRAINT account_entries_kind_check
    CHECK (kind IN ('CONTRIBUTION', 'SETTLEMENT', 'FAMILY_AID', 'ADJUSTMENT', 'REVERSAL', 'CLAIM_REIMBURSEMENT'));
ALTER TABLE account_entries ADD CONSTRAINT account_entries_claim_reimbursement
    CHECK (kind <> 'CLAIM_REIMBURSEMENT' OR (amount_cents > 0 AND settlement_id IS NOT NULL));
-- Invoices, the evidence of a claim.
ALTER TABLE documents DROP CONSTRAINT documents_kind_check;
ALTER TABLE documents ADD CONSTRAINT documents_kind_check
    CHECK (kind IN ('COMMITMENT_LETTER', 'HOUSEHOLD_REGISTER', 'ID_CARD_FRONT', 'ID_CARD_BACK', 'PHOTO', 'SIGNATURE', 'INVOICE'));

-- Reimbursement claims for bills paid out of pocket (issue 17 item 7, README "Reimbursement
-- claims"): what the person claims, its items and invoice documents, and the one review.
-- account_id is the person's open account when the claim was submitted (its scheme decides the
-- policy, its ledger takes the fund's share).
CREATE TABLE claims (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    hospital_name TEXT NOT NULL CHECK (length(hospital_name) BETWEEN 1 AND 100),
    hospital_region_code TEXT NOT NULL CHECK (length(hospital_region_code) = 6),
    category TEXT NOT NULL CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY', 'CHRONIC_SPECIAL')),
    care_date DATE NOT NULL,
    not_settled_because TEXT NOT NULL CHECK (not_settled_because IN ('EMERGENCY_ELSEWHERE_UNFILED', 'HOSPITAL_COULD_NOT_SETTLE', 'OTHER')),
    total_cents BIGINT NOT NULL CHECK (total_cents BETWEEN 1 AND 100000000),
    payout TEXT NOT NULL CHECK (payout IN ('ACCOUNT', 'BANK_TRANSFER')),
    status TEXT NOT NULL CHECK (status IN ('SUBMITTED', 'APPROVED', 'REJECTED')),
    submitted_by TEXT NOT NULL CHECK (length(submitted_by) BETWEEN 1 AND 64),
    submitted_at TIMESTAMP NOT NULL
);
-- A person's claims and the operators' queue, newest first.
CREATE INDEX claims_person ON claims (person_id, submitted_at, id);
CREATE INDEX claims_status ON claims (status, submitted_at, id);

-- The billed items, in invoice order.
CREATE TABLE claim_items (
    claim_id TEXT NOT NULL REFERENCES claims (id),
    line INTEGER NOT NULL CHECK (line BETWEEN 1 AND 200),
    code TEXT NOT NULL CHECK (length(code) BETWEEN 1 AND 40),
    quantity BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents BETWEEN 1 AND 100000000),
    PRIMARY KEY (claim_id, line)
);

-- The invoice documents (kind INVOICE, the person's own).
CREATE TABLE claim_documents (
    claim_id TEXT NOT NULL REFERENCES claims (id),
    document_id TEXT NOT NULL REFERENCES documents (id),
    PRIMARY KEY (claim_id, document_id)
);

-- The review, at most one per claim: its primary key is what makes a second review, or the
-- loser of two concurrent ones, fail (with the compare-and-set of claims.status from SUBMITTED).
-- An approval names its settlement (one claim per settlement) and, for a bank transfer, the
-- transfer's reference; a rejection keeps its reason.
CREATE TABLE claim_reviews (
    claim_id TEXT PRIMARY KEY NOT NULL REFERENCES claims (id),
    decision TEXT NOT NULL CHECK (decision IN ('APPROVED', 'REJECTED')),
    reviewed_by TEXT NOT NULL CHECK (length(reviewed_by) BETWEEN 1 AND 64),
    reviewed_at TIMESTAMP NOT NULL,
    rejection_reason TEXT CHECK (length(rejection_reason) BETWEEN 1 AND 200),
    settlement_id TEXT REFERENCES settlements (id),
    transfer_reference TEXT CHECK (length(transfer_reference) BETWEEN 1 AND 64),
    CHECK ((decision = 'REJECTED') = (rejection_reason IS NOT NULL)),
    CHECK ((decision = 'APPROVED') = (settlement_id IS NOT NULL)),
    CHECK (transfer_reference IS NULL OR decision = 'APPROVED')
);
CREATE UNIQUE INDEX claim_reviews_one_per_settlement ON claim_reviews (settlement_id);
