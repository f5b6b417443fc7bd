DROP TABLE pre_settlements;
DROP TABLE settlement_facts;
DROP TABLE settlement_items;
-- Fails while CHRONIC_SPECIAL settlements exist: they have no place in the older schema.
ALTER TABLE annual_totals DROP CONSTRAINT annual_totals_category_check;
ALTER TABLE annual_totals ADD CONSTRAINT annual_totals_category_check
    CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY'));
ALTER TABLE settlements DROP CONSTRAINT settlements_category_check;
ALTER TABLE settlements ADD CONSTRAINT settlements_category_check
    CHECK (category IN ('OUTPATIENT', 'INPATIENT', 'PHARMACY'));
