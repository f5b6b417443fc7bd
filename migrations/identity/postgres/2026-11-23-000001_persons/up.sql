-- Persons. Personal data (ID number, name, phone) is AES-256-GCM encrypted per field, with
-- HMAC-SHA256 blind indexes for lookups; only facts derived from the ID number are in clear.
CREATE TABLE persons (
    id TEXT PRIMARY KEY NOT NULL,
    id_number_index BYTEA NOT NULL,
    id_number_enc BYTEA NOT NULL,
    name_enc BYTEA NOT NULL,
    phone_index BYTEA,
    phone_enc BYTEA,
    birth_date DATE NOT NULL,
    sex TEXT NOT NULL CHECK (sex IN ('MALE', 'FEMALE')),
    region_code TEXT NOT NULL CHECK (length(region_code) = 6),
    real_name_status TEXT NOT NULL DEFAULT 'UNVERIFIED' CHECK (real_name_status IN ('UNVERIFIED', 'VERIFIED')),
    real_name_method TEXT,
    real_name_verified_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK ((real_name_status = 'VERIFIED') = (real_name_verified_at IS NOT NULL)),
    CHECK ((phone_index IS NULL) = (phone_enc IS NULL))
);
CREATE UNIQUE INDEX persons_id_number_index ON persons (id_number_index);
CREATE INDEX persons_phone_index ON persons (phone_index);

-- Outcomes of mutating calls by (partner, idempotency key): common::idempotency.
CREATE TABLE idempotency_records (
    partner_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('IN_FLIGHT', 'DONE')),
    response BYTEA,
    lease_until TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (partner_id, idempotency_key),
    CHECK ((state = 'DONE') = (response IS NOT NULL))
);
CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);
