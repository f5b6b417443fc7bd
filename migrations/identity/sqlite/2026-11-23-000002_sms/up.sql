-- SMS verification challenges (docs/architecture.md#identity-svc). The code itself is never stored:
-- only HMAC-SHA256 under the blind-index key, bound to the challenge id. The phone is found by its
-- blind index (same "phone" domain as persons.phone_index) and kept encrypted for the masked
-- answer of VerifySmsCode.
CREATE TABLE sms_challenges (
    id TEXT PRIMARY KEY NOT NULL,
    phone_index BLOB NOT NULL,
    phone_enc BLOB NOT NULL,
    code_hmac BLOB NOT NULL CHECK (length(code_hmac) = 32),
    purpose TEXT NOT NULL CHECK (purpose IN ('REAL_NAME', 'LINK_ACCOUNT', 'CARD_APPLICATION')),
    state TEXT NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'VERIFIED', 'LOCKED', 'CONSUMED')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 3),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    verified_at TIMESTAMP,
    consumed_at TIMESTAMP,
    CHECK (expires_at > created_at),
    -- Three wrong codes lock a challenge, and only they do.
    CHECK ((state = 'LOCKED') = (attempts = 3)),
    CHECK ((verified_at IS NOT NULL) = (state IN ('VERIFIED', 'CONSUMED'))),
    CHECK ((consumed_at IS NOT NULL) = (state = 'CONSUMED'))
);
-- Rate limits: codes per phone today, and the latest one.
CREATE INDEX sms_challenges_phone_created ON sms_challenges (phone_index, created_at);

-- One row per phone that asked for a code, locked (upsert) by SendSmsCode on PostgreSQL so that
-- concurrent sends to one phone count and insert one after the other. SQLite needs no such row:
-- its write transactions (BEGIN IMMEDIATE) already run one at a time.
CREATE TABLE sms_phone_locks (
    phone_index BLOB PRIMARY KEY NOT NULL,
    locked_at TIMESTAMP NOT NULL
);
