-- Failed card lookups per partner and China-time day (issue 13 item 3). A lookup by card
-- number first reserves a unit with one conditional update (`failures < limit`), which the
-- database applies atomically per row on both backends, so concurrent lookups never pass the
-- limit; a lookup that found a card the caller may act on gives its unit back.
CREATE TABLE card_lookup_failures (
    partner_id TEXT NOT NULL,
    day DATE NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    PRIMARY KEY (partner_id, day)
);
