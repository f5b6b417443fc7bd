-- Card numbers are drawn at random (Luhn-valid, unique by the keys on cards and
-- card_applications) instead of counted: a counter that knows one number can no longer walk
-- to its neighbours. The counter row is no longer read.
DROP TABLE card_number_sequence;
