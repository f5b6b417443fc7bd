-- Issue 17 items 6 and 7: a person's settlement records, and reimbursement claims.
-- SQLite cannot drop NOT NULL or alter a CHECK constraint: settlements (visit_id optional: a
-- claim's settlement has no visit), account_entries (CLAIM_REIMBURSEMENT, the fund's share of an
-- approved claim credited) and documents (INVOICE) are rebuilt the documented way, with foreign
-- keys off outside a transaction (metadata.toml: run_in_transaction = false).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE settlements_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    visit_id TEXT REFERENCES visits (id),
    person_id TEXT NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY', 'CHRONIC_SPECIAL')),
    pay_from TEXT NOT NULL CHECK (pay_from IN ('HOLDER_ACCOUNT', 'BINDER_ACCOUNT', 'SELF')),
    charged_account_id TEXT REFERENCES accounts (id),
    total_cents BIGINT NOT NULL CHECK (total_cents > 0),
    fund_cents BIGINT NOT NULL CHECK (fund_cents >= 0),
    account_cents BIGINT NOT NULL CHECK (account_cents >= 0),
    self_cents BIGINT NOT NULL CHECK (self_cents >= 0),
    deductible_cents BIGINT NOT NULL CHECK (deductible_cents >= 0),
    year INTEGER NOT NULL,
    items_summary TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('SETTLED', 'REVERSED')),
    settled_at TIMESTAMP NOT NULL,
    reversed_at TIMESTAMP,
    CHECK (fund_cents + account_cents + self_cents = total_cents),
    CHECK ((account_cents = 0) OR (charged_account_id IS NOT NULL)),
    CHECK ((status = 'REVERSED') = (reversed_at IS NOT NULL))
);
INSERT INTO settlements_rebuilt (id, visit_id, person_id, category, pay_from, charged_account_id, total_cents, fund_cents, account_cents, self_cents, deductible_cents, year, items_summary, status, settled_at, reversed_at) SELECT id, visit_id, person_id, category, pay_from, charged_account_id, total_cents, fund_cents, account_cents, self_cents, deductible_cents, year, items_summary, status, settled_at, reversed_at FROM settlements;
DROP TABLE settlements;
ALTER TABLE settlements_rebuilt RENAME TO settlements;
-- One settlement per visit (a unique index allows any number of NULLs: claims' settlements).
CREATE UNIQUE INDEX settlements_one_per_visit ON settlements (visit_id);
CREATE INDEX settlements_person_year ON settlements (person_id, year);
-- ListSettlements: a person's year, newest first (keyset paging on settled_at, id).
CREATE INDEX settlements_person_year_time ON settlements (person_id, year, settled_at, id);

CREATE TABLE account_entries_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    kind TEXT NOT NULL CHECK (kind IN ('CONTRIBUTION', 'SETTLEMENT', 'FAMILY_AID', 'ADJUSTMENT', 'REVERSAL', 'CLAIM_REIMBURSEMENT')),
    amount_cents BIGINT NOT NULL CHECK (amount_cents <> 0),
    balance_after_cents BIGINT NOT NULL CHECK (balance_after_cents >= 0),
    reference TEXT NOT NULL,
    settlement_id TEXT REFERENCES settlements (id),
    created_at TIMESTAMP NOT NULL,
    credited_by TEXT CHECK (credited_by IS NULL OR (kind = 'CONTRIBUTION' AND length(credited_by) BETWEEN 1 AND 64)),
    CHECK (kind <> 'CONTRIBUTION' OR (amount_cents > 0 AND settlement_id IS NULL)),
    CHECK (kind NOT IN ('SETTLEMENT', 'FAMILY_AID') OR (amount_cents < 0 AND settlement_id IS NOT NULL)),
    CHECK (kind <> 'CLAIM_REIMBURSEMENT' OR (amount_cents > 0 AND settlement_id IS NOT NULL))
);
INSERT INTO account_entries_rebuilt (id, account_id, kind, amount_cents, balance_after_cents, reference, settlement_id, created_at, credited_by) SELECT id, account_id, kind, amount_cents, balance_after_cents, reference, settlement_id, created_at, credited_by FROM account_entries;
DROP TABLE account_entries;
ALTER TABLE account_entries_rebuilt RENAME TO account_entries;
CREATE INDEX account_entries_account_created ON account_entries (account_id, created_at, id);
CREATE UNIQUE INDEX account_entries_contribution_once ON account_entries (account_id, reference) WHERE kind = 'CONTRIBUTION';

CREATE TABLE documents_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    owner_person_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('COMMITMENT_LETTER', 'HOUSEHOLD_REGISTER', 'ID_CARD_FRONT', 'ID_CARD_BACK', 'PHOTO', 'SIGNATURE', 'INVOICE')),
    content_type TEXT NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'application/pdf')),
    size_bytes BIGINT NOT NULL CHECK (size_bytes > 0 AND size_bytes <= 8388608),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    object_key TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    subject_person_id TEXT,
    relationship TEXT CHECK (relationship IS NULL OR relationship IN ('SPOUSE', 'CHILD', 'PARENT', 'GRANDPARENT', 'GRANDCHILD', 'SIBLING', 'OTHER_CLOSE_RELATIVE')),
    uploaded_by_person_id TEXT,
    wrapped_key BLOB
);
INSERT INTO documents_rebuilt (id, owner_person_id, kind, content_type, size_bytes, sha256, object_key, uploaded_by, created_at, subject_person_id, relationship, uploaded_by_person_id, wrapped_key) SELECT id, owner_person_id, kind, content_type, size_bytes, sha256, object_key, uploaded_by, created_at, subject_person_id, relationship, uploaded_by_person_id, wrapped_key FROM documents;
DROP TABLE documents;
ALTER TABLE documents_rebuilt RENAME TO documents;
CREATE INDEX documents_owner ON documents (owner_person_id, created_at);
CREATE UNIQUE INDEX documents_object_key ON documents (object_key);

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
COMMIT;
PRAGMA foreign_keys = ON;
