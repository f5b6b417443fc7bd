DROP TABLE person_suspensions;
DROP TABLE token_revocations;
DROP TABLE person_assurance;
