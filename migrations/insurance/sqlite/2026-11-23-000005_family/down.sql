DROP TABLE family_binder_months;
DROP TABLE family_bindings;
