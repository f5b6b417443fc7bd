-- Fails while CHRONIC_SPECIAL settlements exist: they have no place in the older schema.
PRAGMA foreign_keys = OFF;
BEGIN;
DROP TABLE pre_settlements;
DROP TABLE settlement_facts;
DROP TABLE settlement_items;
CREATE TABLE settlements_rebuilt (
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
INSERT INTO settlements_rebuilt SELECT id, visit_id, person_id, category, pay_from, charged_account_id, total_cents, fund_cents, account_cents, self_cents, deductible_cents, year, items_summary, status, settled_at, reversed_at FROM settlements;
DROP TABLE settlements;
ALTER TABLE settlements_rebuilt RENAME TO settlements;
CREATE UNIQUE INDEX settlements_one_per_visit ON settlements (visit_id);
CREATE INDEX settlements_person_year ON settlements (person_id, year);
CREATE TABLE annual_totals_rebuilt (
    person_id TEXT NOT NULL,
    year INTEGER NOT NULL,
    category TEXT NOT NULL CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY')),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    fund_cents BIGINT NOT NULL CHECK (fund_cents >= 0),
    deductible_cents BIGINT NOT NULL CHECK (deductible_cents >= 0),
    PRIMARY KEY (person_id, year, category)
);
INSERT INTO annual_totals_rebuilt SELECT person_id, year, category, total_cents, fund_cents, deductible_cents FROM annual_totals;
DROP TABLE annual_totals;
ALTER TABLE annual_totals_rebuilt RENAME TO annual_totals;
COMMIT;
PRAGMA foreign_keys = ON;
