DROP TABLE annual_totals;
DROP TABLE account_entries;
DROP TABLE settlements;
DROP TABLE visits;
DROP TABLE voucher_activations;
DROP TABLE vouchers;
