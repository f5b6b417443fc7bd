-- Issue 17 items 1-4 (settlement): care type CHRONIC_SPECIAL (chronic and special diseases),
-- itemised bills with their per-item split, the facts each settlement rested on (regions,
-- hospital level, filing), and pre-settlements. SQLite cannot alter a CHECK constraint: the
-- settlements and annual_totals tables are rebuilt the documented way, with foreign keys off
-- outside a transaction (metadata.toml: run_in_transaction = false).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE settlements_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    visit_id TEXT NOT NULL REFERENCES visits (id),
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
INSERT INTO settlements_rebuilt SELECT id, visit_id, person_id, category, pay_from, charged_account_id, total_cents, fund_cents, account_cents, self_cents, deductible_cents, year, items_summary, status, settled_at, reversed_at FROM settlements;
DROP TABLE settlements;
ALTER TABLE settlements_rebuilt RENAME TO settlements;
CREATE UNIQUE INDEX settlements_one_per_visit ON settlements (visit_id);
CREATE INDEX settlements_person_year ON settlements (person_id, year);
CREATE TABLE annual_totals_rebuilt (
    person_id TEXT NOT NULL,
    year INTEGER NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY', 'CHRONIC_SPECIAL')),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    fund_cents BIGINT NOT NULL CHECK (fund_cents >= 0),
    deductible_cents BIGINT NOT NULL CHECK (deductible_cents >= 0),
    PRIMARY KEY (person_id, year, category)
);
INSERT INTO annual_totals_rebuilt SELECT person_id, year, category, total_cents, fund_cents, deductible_cents FROM annual_totals;
DROP TABLE annual_totals;
ALTER TABLE annual_totals_rebuilt RENAME TO annual_totals;

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
COMMIT;
PRAGMA foreign_keys = ON;
