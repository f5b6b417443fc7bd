-- Vouchers: one per person, activated through one or more channels.
CREATE TABLE vouchers (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED')),
    activated_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    -- Who suspended it (operators' suspensions are lifted by operators only) and why.
    suspended_by TEXT CHECK (suspended_by IN ('OPS', 'HOLDER')),
    suspension_reason TEXT,
    CHECK ((status = 'SUSPENDED') = (suspended_by IS NOT NULL))
);
CREATE UNIQUE INDEX vouchers_one_per_person ON vouchers (person_id);

-- Each activation of a voucher; a face session activates at most once.
CREATE TABLE voucher_activations (
    id TEXT PRIMARY KEY NOT NULL,
    voucher_id TEXT NOT NULL REFERENCES vouchers (id),
    channel TEXT NOT NULL CHECK (channel IN ('NATIONAL_APP', 'WECHAT', 'ALIPAY', 'BANK_APP', 'CITY_APP', 'FAMILY')),
    face_session_id TEXT,
    partner_id TEXT NOT NULL,
    activated_at TIMESTAMP NOT NULL,
    CHECK ((channel = 'FAMILY') OR (face_session_id IS NOT NULL))
);
CREATE UNIQUE INDEX voucher_activations_face_session_once ON voucher_activations (face_session_id);
CREATE INDEX voucher_activations_voucher ON voucher_activations (voucher_id);

-- A visit is opened by redeeming a code; the nonce makes a code redeemable once, across replicas.
CREATE TABLE visits (
    id TEXT PRIMARY KEY NOT NULL,
    voucher_id TEXT NOT NULL REFERENCES vouchers (id),
    person_id TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    partner_id TEXT NOT NULL,
    code_nonce BYTEA NOT NULL,
    code_key_id TEXT NOT NULL,
    opened_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX visits_one_redemption_per_code ON visits (code_nonce);

-- One settlement per visit; every cent accounted for.
CREATE TABLE settlements (
    id TEXT PRIMARY KEY NOT NULL,
    visit_id TEXT NOT NULL REFERENCES visits (id),
    person_id TEXT NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY')),
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
CREATE UNIQUE INDEX settlements_one_per_visit ON settlements (visit_id);
CREATE INDEX settlements_person_year ON settlements (person_id, year);

-- The individual-account ledger. The balance on accounts is the running sum; each entry records
-- the balance after it, which can never be negative.
CREATE TABLE account_entries (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    kind TEXT NOT NULL CHECK (kind IN ('CONTRIBUTION', 'SETTLEMENT', 'FAMILY_AID', 'ADJUSTMENT', 'REVERSAL')),
    amount_cents BIGINT NOT NULL CHECK (amount_cents <> 0),
    balance_after_cents BIGINT NOT NULL CHECK (balance_after_cents >= 0),
    reference TEXT NOT NULL,
    settlement_id TEXT REFERENCES settlements (id),
    created_at TIMESTAMP NOT NULL,
    CHECK (kind <> 'CONTRIBUTION' OR (amount_cents > 0 AND settlement_id IS NULL)),
    CHECK (kind NOT IN ('SETTLEMENT', 'FAMILY_AID') OR (amount_cents < 0 AND settlement_id IS NOT NULL))
);
CREATE INDEX account_entries_account_created ON account_entries (account_id, created_at, id);
-- A contribution reference credits an account once.
CREATE UNIQUE INDEX account_entries_contribution_once ON account_entries (account_id, reference) WHERE kind = 'CONTRIBUTION';

-- Year-to-date totals per person, year and category, the base of deductible and annual cap.
CREATE TABLE annual_totals (
    person_id TEXT NOT NULL,
    year INTEGER NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY')),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    fund_cents BIGINT NOT NULL CHECK (fund_cents >= 0),
    deductible_cents BIGINT NOT NULL CHECK (deductible_cents >= 0),
    PRIMARY KEY (person_id, year, category)
);
