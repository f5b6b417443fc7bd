DROP TABLE card_lookup_failures;
