-- Documents a person uploads (or medins renders): metadata here, bytes in the object store
-- under `object_key`. A row exists only once every byte is stored and hashed.
CREATE TABLE documents (
    id TEXT PRIMARY KEY NOT NULL,
    owner_person_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('COMMITMENT_LETTER', 'HOUSEHOLD_REGISTER', 'ID_CARD_FRONT', 'ID_CARD_BACK', 'PHOTO', 'SIGNATURE')),
    content_type TEXT NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'application/pdf')),
    size_bytes BIGINT NOT NULL CHECK (size_bytes > 0 AND size_bytes <= 8388608),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    object_key TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX documents_owner ON documents (owner_person_id, created_at);
CREATE UNIQUE INDEX documents_object_key ON documents (object_key);
