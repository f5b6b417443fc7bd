-- Insured accounts. Only the opaque person id and facts derived at identity-svc are kept here:
-- a leak of this database reveals no ID number, name or phone.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    scheme TEXT NOT NULL CHECK (scheme IN ('EMPLOYEE', 'RESIDENT')),
    region_code TEXT NOT NULL CHECK (length(region_code) = 6),
    employer_code TEXT,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED', 'CLOSED')),
    balance_cents BIGINT NOT NULL DEFAULT 0 CHECK (balance_cents >= 0),
    birth_date DATE NOT NULL,
    opened_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK ((scheme = 'EMPLOYEE') = (employer_code IS NOT NULL))
);
-- One open (not closed) account per person.
CREATE UNIQUE INDEX accounts_one_open_per_person ON accounts (person_id) WHERE status <> 'CLOSED';

-- Outcomes of mutating calls by (partner, idempotency key): common::idempotency.
CREATE TABLE idempotency_records (
    partner_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('IN_FLIGHT', 'DONE')),
    response BLOB,
    lease_until TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (partner_id, idempotency_key),
    CHECK ((state = 'DONE') = (response IS NOT NULL))
);
CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);
