-- Back to rowid tables and the (person_id, year) index.
CREATE INDEX settlements_person_year ON settlements (person_id, year);

CREATE TABLE settlement_items_rowid (
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
INSERT INTO settlement_items_rowid (settlement_id, line, code, catalog_version, class, quantity_milli, unit_price_cents, amount_cents, department_code, department_name, in_scope_cents, b_self_pay_cents, deductible_cents, fund_cents, account_cents, self_cents) SELECT settlement_id, line, code, catalog_version, class, quantity_milli, unit_price_cents, amount_cents, department_code, department_name, in_scope_cents, b_self_pay_cents, deductible_cents, fund_cents, account_cents, self_cents FROM settlement_items;
DROP TABLE settlement_items;
ALTER TABLE settlement_items_rowid RENAME TO settlement_items;

CREATE TABLE settlement_facts_rowid (
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
INSERT INTO settlement_facts_rowid (settlement_id, insured_region_code, treatment_region_code, cross_region, filing_id, hospital_level, ratio_bp, itemised, in_scope_cents, b_self_pay_cents, c_self_funded_cents, pre_settlement_id) SELECT settlement_id, insured_region_code, treatment_region_code, cross_region, filing_id, hospital_level, ratio_bp, itemised, in_scope_cents, b_self_pay_cents, c_self_funded_cents, pre_settlement_id FROM settlement_facts;
DROP TABLE settlement_facts;
ALTER TABLE settlement_facts_rowid RENAME TO settlement_facts;

CREATE TABLE annual_totals_rowid (
    person_id TEXT NOT NULL,
    year INTEGER NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY', 'CHRONIC_SPECIAL')),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    fund_cents BIGINT NOT NULL CHECK (fund_cents >= 0),
    deductible_cents BIGINT NOT NULL CHECK (deductible_cents >= 0),
    PRIMARY KEY (person_id, year, category)
);
INSERT INTO annual_totals_rowid (person_id, year, category, total_cents, fund_cents, deductible_cents) SELECT person_id, year, category, total_cents, fund_cents, deductible_cents FROM annual_totals;
DROP TABLE annual_totals;
ALTER TABLE annual_totals_rowid RENAME TO annual_totals;
