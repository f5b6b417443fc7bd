DROP TABLE card_number_sequence;
DROP TABLE cards;
DROP TABLE card_application_events;
DROP TABLE card_mailing_addresses;
DROP TABLE card_application_evidence;
DROP TABLE card_applications;
DROP TABLE card_fees;
