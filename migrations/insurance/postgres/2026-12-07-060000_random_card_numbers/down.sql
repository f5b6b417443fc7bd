-- The counter comes back at 0; numbers drawn meanwhile stay unique through the keys on cards.
CREATE TABLE card_number_sequence (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_value BIGINT NOT NULL CHECK (last_value >= 0)
);
INSERT INTO card_number_sequence (id, last_value) VALUES (1, 0);
