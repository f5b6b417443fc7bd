-- Cross-region care filings (issue 17, README "Cross-region care"): where and why a person
-- will receive care outside their pooling region, for which period. Rows are never deleted: a
-- cancelled filing stays, CANCELLED, for the person's records and later settlements' evidence.
CREATE TABLE cross_region_filings (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    insured_region_code TEXT NOT NULL CHECK (length(insured_region_code) = 6),
    destination_region_code TEXT NOT NULL CHECK (length(destination_region_code) = 6),
    kind TEXT NOT NULL CHECK (kind IN ('LONG_TERM_RESIDENCE', 'WORKING_ELSEWHERE', 'REFERRAL', 'TEMPORARY')),
    starts_on DATE NOT NULL,
    ends_on DATE,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'CANCELLED')),
    filed_by TEXT NOT NULL,
    filed_at TIMESTAMP NOT NULL,
    cancelled_at TIMESTAMP,
    -- Open-ended kinds have no end; short ones end on or after their start.
    CHECK ((kind IN ('LONG_TERM_RESIDENCE', 'WORKING_ELSEWHERE')) = (ends_on IS NULL)),
    CHECK (ends_on IS NULL OR ends_on >= starts_on),
    CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL))
);
-- A person's filings, newest first.
CREATE INDEX cross_region_filings_person ON cross_region_filings (person_id, filed_at);
