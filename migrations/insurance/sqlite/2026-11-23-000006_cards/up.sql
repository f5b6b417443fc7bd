-- Social security cards (docs/architecture.md#cards). Every invariant the flow relies on
-- is also a constraint here: one open application per person, one card in force per person,
-- a card number issued once (the counter only grows; numbers are primary keys and rows are
-- never deleted), a face session and an SMS challenge used by one application, a fee paying
-- for one application.

-- Card fees paid at a bank, recorded before the application that uses them.
CREATE TABLE card_fees (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    bank_partner_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    application_id TEXT,
    recorded_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX card_fees_reference_once ON card_fees (bank_partner_id, reference);
CREATE UNIQUE INDEX card_fees_pay_once ON card_fees (application_id);

CREATE TABLE card_applications (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('ONLINE', 'SERVICE_CENTER', 'SERVICE_POINT', 'AGENT', 'EMPLOYER', 'REPLACEMENT')),
    delivery TEXT NOT NULL CHECK (delivery IN ('MAIL', 'PICKUP', 'ON_THE_SPOT')),
    status TEXT NOT NULL CHECK (status IN ('SUBMITTED', 'APPROVED', 'REJECTED', 'PRODUCED', 'MAILED', 'READY_FOR_PICKUP', 'DELIVERED')),
    partner_id TEXT NOT NULL,
    guardian_person_id TEXT,
    agent_person_id TEXT,
    employer_code TEXT,
    replaces_card_number TEXT,
    rejection_reason TEXT,
    ready_by DATE,
    tracking_number TEXT,
    card_number TEXT,
    submitted_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK ((channel = 'AGENT') = (agent_person_id IS NOT NULL)),
    CHECK (agent_person_id IS NULL OR agent_person_id <> person_id),
    CHECK (guardian_person_id IS NULL OR guardian_person_id <> person_id),
    CHECK ((channel = 'EMPLOYER') = (employer_code IS NOT NULL)),
    CHECK ((channel = 'REPLACEMENT') = (replaces_card_number IS NOT NULL)),
    CHECK ((status = 'REJECTED') = (rejection_reason IS NOT NULL)),
    CHECK ((status IN ('PRODUCED', 'MAILED', 'READY_FOR_PICKUP', 'DELIVERED')) = (card_number IS NOT NULL)),
    CHECK ((tracking_number IS NOT NULL) = (delivery = 'MAIL' AND status IN ('MAILED', 'DELIVERED'))),
    CHECK (status <> 'MAILED' OR delivery = 'MAIL'),
    CHECK (status <> 'READY_FOR_PICKUP' OR delivery = 'PICKUP'),
    CHECK ((ready_by IS NOT NULL) = (delivery = 'PICKUP' AND status NOT IN ('SUBMITTED', 'REJECTED')))
);
-- One open application per person.
CREATE UNIQUE INDEX card_applications_one_open ON card_applications (person_id)
    WHERE status IN ('SUBMITTED', 'APPROVED', 'PRODUCED', 'MAILED', 'READY_FOR_PICKUP');
CREATE UNIQUE INDEX card_applications_card_number ON card_applications (card_number);
CREATE UNIQUE INDEX card_applications_replaces_once ON card_applications (replaces_card_number);
CREATE INDEX card_applications_submitted ON card_applications (submitted_at, id);
CREATE INDEX card_applications_person ON card_applications (person_id, submitted_at);
CREATE INDEX card_applications_status ON card_applications (status, submitted_at);

-- What an ONLINE application was proved with: documents, face session, SMS challenge.
CREATE TABLE card_application_evidence (
    application_id TEXT PRIMARY KEY NOT NULL REFERENCES card_applications (id),
    id_card_front_document_id TEXT NOT NULL REFERENCES documents (id),
    id_card_back_document_id TEXT NOT NULL REFERENCES documents (id),
    photo_document_id TEXT REFERENCES documents (id),
    face_session_id TEXT NOT NULL,
    sms_challenge_id TEXT NOT NULL
);
-- A face session and an SMS challenge prove one application only.
CREATE UNIQUE INDEX card_application_evidence_face_once ON card_application_evidence (face_session_id);
CREATE UNIQUE INDEX card_application_evidence_sms_once ON card_application_evidence (sms_challenge_id);

-- Where a mailed card goes (the recipient's name and phone are shown back masked only).
-- Street, recipient and phone are personal data: AES-256-GCM encrypted per field
-- (common::crypto::FieldCipher; AAD = table, column, application id, key version). A blob is
-- version (4 bytes) + nonce (12) + ciphertext + tag (16), so its length is the plaintext's + 32:
-- every field is non-empty, and the phone is always its 11 digits.
CREATE TABLE card_mailing_addresses (
    application_id TEXT PRIMARY KEY NOT NULL REFERENCES card_applications (id),
    region_code TEXT NOT NULL CHECK (length(region_code) = 6),
    street_enc BLOB NOT NULL CHECK (length(street_enc) > 32),
    recipient_enc BLOB NOT NULL CHECK (length(recipient_enc) > 32),
    phone_enc BLOB NOT NULL CHECK (length(phone_enc) = 32 + 11)
);

-- Every status an application reached, for the history a person and operators see.
CREATE TABLE card_application_events (
    id TEXT PRIMARY KEY NOT NULL,
    application_id TEXT NOT NULL REFERENCES card_applications (id),
    status TEXT NOT NULL CHECK (status IN ('SUBMITTED', 'APPROVED', 'REJECTED', 'PRODUCED', 'MAILED', 'READY_FOR_PICKUP', 'DELIVERED')),
    partner_id TEXT NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX card_application_events_once ON card_application_events (application_id, status);

-- Cards. A row is never deleted: a lost or replaced card keeps its number for ever.
CREATE TABLE cards (
    card_number TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL,
    application_id TEXT NOT NULL REFERENCES card_applications (id),
    status TEXT NOT NULL CHECK (status IN ('VALID', 'LOST_TEMPORARY', 'LOST', 'REPLACED')),
    medical_activated_at TIMESTAMP,
    medical_activated_by TEXT,
    financial_activated_at TIMESTAMP,
    financial_activated_by TEXT,
    replaced_by_application_id TEXT REFERENCES card_applications (id),
    issued_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK ((medical_activated_at IS NULL) = (medical_activated_by IS NULL)),
    CHECK ((financial_activated_at IS NULL) = (financial_activated_by IS NULL)),
    -- The financial function never runs without the medical one (a bank activates both).
    CHECK (financial_activated_at IS NULL OR medical_activated_at IS NOT NULL),
    CHECK ((status = 'REPLACED') = (replaced_by_application_id IS NOT NULL))
);
CREATE UNIQUE INDEX cards_one_per_application ON cards (application_id);
-- One card not yet replaced per person (a LOST card waits for its replacement).
CREATE UNIQUE INDEX cards_one_current_per_person ON cards (person_id) WHERE status <> 'REPLACED';

-- The issuer's card-number sequence: one row, only ever incremented inside the producing
-- transaction (the row lock serialises concurrent productions).
CREATE TABLE card_number_sequence (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_value BIGINT NOT NULL CHECK (last_value >= 0)
);
INSERT INTO card_number_sequence (id, last_value) VALUES (1, 0);
