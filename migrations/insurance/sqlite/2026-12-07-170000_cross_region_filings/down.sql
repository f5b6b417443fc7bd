DROP TABLE cross_region_filings;
