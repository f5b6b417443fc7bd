-- Issue 17 items 1-4 (settlement): care type CHRONIC_SPECIAL (chronic and special diseases),
-- itemised bills with their per-item split, the facts each settlement rested on (regions,
-- hospital level, filing), and pre-settlements.
ALTER TABLE settlements DROP CONSTRAINT settlements_category_check;
ALTER TABLE settlements ADD CONSTRAINT settlements_category_check
    CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY', 'CHRONIC_SPECIAL'));
ALTER TABLE annual_totals DROP CONSTRAINT annual_totals_category_check;
ALTER TABLE annual_totals ADD CONSTRAINT annual_totals_category_check
    CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY', 'CHRONIC_SPECIAL'));

-- The items of an itemised bill and how each was paid (README "Settlement"; domain/settlement.rs),
-- written in the settlement's transaction. A bare-total bill has none. Every cent of an item is
-- accounted for twice: by scope (in scope + B-class first self-pay, the rest of a C item
-- self-funded) and by payer (fund + account + self); the fund pays only in-scope money above
-- the deductible. (16 columns: diesel's limit; a C item's self-funded amount is its amount.)
CREATE TABLE settlement_items (
    settlement_id TEXT NOT NULL REFERENCES settlements (id),
    line INTEGER NOT NULL CHECK (line BETWEEN 0 AND 199),
    code TEXT NOT NULL CHECK (length(code) BETWEEN 1 AND 40),
    catalog_version TEXT NOT NULL CHECK (length(catalog_version) BETWEEN 1 AND 32),
    class TEXT NOT NULL CHECK (class IN ('A', 'B', 'C')),
    quantity_milli BIGINT NOT NULL CHECK (quantity_milli > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents > 0),
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    department_code TEXT NOT NULL CHECK (length(department_code) BETWEEN 1 AND 32),
    department_name TEXT NOT NULL,
    in_scope_cents BIGINT NOT NULL CHECK (in_scope_cents >= 0),
    b_self_pay_cents BIGINT NOT NULL CHECK (b_self_pay_cents >= 0),
    deductible_cents BIGINT NOT NULL CHECK (deductible_cents >= 0),
    fund_cents BIGINT NOT NULL CHECK (fund_cents >= 0),
    account_cents BIGINT NOT NULL CHECK (account_cents >= 0),
    self_cents BIGINT NOT NULL CHECK (self_cents >= 0),
    CHECK ((class = 'C') = (in_scope_cents + b_self_pay_cents = 0)),
    CHECK (class = 'C' OR in_scope_cents + b_self_pay_cents = amount_cents),
    CHECK (class = 'B' OR b_self_pay_cents = 0),
    CHECK (fund_cents + account_cents + self_cents = amount_cents),
    CHECK (deductible_cents + fund_cents <= in_scope_cents),
    PRIMARY KEY (settlement_id, line)
);

-- What a settlement was decided on, beyond its own row (full at diesel's 16 columns): where the
-- care was given and where the person is insured, the hospital level and policy ratio applied,
-- the cross-region filing that set the ratio (none: same region, or unfiled care), the bill's
-- totals by scope, and the pre-settlement it confirmed. Written with every new settlement;
-- settlements from before this migration have none.
CREATE TABLE settlement_facts (
    settlement_id TEXT PRIMARY KEY NOT NULL REFERENCES settlements (id),
    insured_region_code TEXT NOT NULL CHECK (length(insured_region_code) = 6),
    treatment_region_code TEXT NOT NULL CHECK (length(treatment_region_code) = 6),
    cross_region BOOLEAN NOT NULL,
    filing_id TEXT REFERENCES cross_region_filings (id),
    hospital_level TEXT NOT NULL CHECK (hospital_level IN ('LEVEL_1', 'LEVEL_2', 'LEVEL_3', 'PHARMACY', 'UNGRADED')),
    ratio_bp INTEGER NOT NULL CHECK (ratio_bp BETWEEN 0 AND 10000),
    itemised BOOLEAN NOT NULL,
    in_scope_cents BIGINT NOT NULL CHECK (in_scope_cents >= 0),
    b_self_pay_cents BIGINT NOT NULL CHECK (b_self_pay_cents >= 0),
    c_self_funded_cents BIGINT NOT NULL CHECK (c_self_funded_cents >= 0),
    pre_settlement_id TEXT,
    CHECK (cross_region OR filing_id IS NULL)
);

-- PreSettle's answers: the split a Settle naming it must return (its total is fund + account +
-- self), the terms it was for (SHA-256 of their canonical form) and the facts it rested on (the holder's year-to-date totals of the
-- bill's year and care type, the paying account's balance and status). Valid until expires_at;
-- a Settle finding any fact changed is refused (PRE_SETTLEMENT_STALE). Nothing else is written
-- by PreSettle.
CREATE TABLE pre_settlements (
    id TEXT PRIMARY KEY NOT NULL,
    visit_id TEXT NOT NULL REFERENCES visits (id),
    partner_id TEXT NOT NULL,
    terms_sha256 TEXT NOT NULL CHECK (length(terms_sha256) = 64),
    fund_cents BIGINT NOT NULL CHECK (fund_cents >= 0),
    account_cents BIGINT NOT NULL CHECK (account_cents >= 0),
    self_cents BIGINT NOT NULL CHECK (self_cents >= 0),
    deductible_cents BIGINT NOT NULL CHECK (deductible_cents >= 0),
    ytd_total_cents BIGINT NOT NULL CHECK (ytd_total_cents >= 0),
    ytd_fund_cents BIGINT NOT NULL CHECK (ytd_fund_cents >= 0),
    ytd_deductible_cents BIGINT NOT NULL CHECK (ytd_deductible_cents >= 0),
    paying_account_id TEXT,
    balance_cents BIGINT NOT NULL CHECK (balance_cents >= 0),
    account_status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    CHECK (fund_cents + account_cents + self_cents > 0),
    CHECK (expires_at > created_at)
);
CREATE INDEX pre_settlements_visit ON pre_settlements (visit_id);
