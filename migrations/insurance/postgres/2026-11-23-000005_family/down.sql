UPDATE vouchers SET suspended_by = 'OPS' WHERE suspended_by = 'FAMILY';
ALTER TABLE vouchers DROP CONSTRAINT vouchers_suspended_by_check;
ALTER TABLE vouchers ADD CONSTRAINT vouchers_suspended_by_check CHECK (suspended_by IN ('OPS', 'HOLDER'));
DROP TABLE family_binder_months;
DROP TABLE family_bindings;
