DROP TABLE person_outbox;
DROP TABLE phone_changes;
DELETE FROM face_outbox WHERE session_id IN (SELECT id FROM face_sessions WHERE purpose = 'PHONE_CHANGE');
DELETE FROM face_sessions WHERE purpose = 'PHONE_CHANGE';
ALTER TABLE face_sessions DROP CONSTRAINT face_sessions_purpose_check;
ALTER TABLE face_sessions ADD CONSTRAINT face_sessions_purpose_check
    CHECK (purpose IN ('REAL_NAME', 'VOUCHER_ACTIVATION', 'FAMILY_BINDING', 'CARD_APPLICATION'));
DELETE FROM sms_challenges WHERE purpose = 'PHONE_CHANGE';
ALTER TABLE sms_challenges DROP CONSTRAINT sms_challenges_purpose_check;
ALTER TABLE sms_challenges ADD CONSTRAINT sms_challenges_purpose_check
    CHECK (purpose IN ('REAL_NAME', 'LINK_ACCOUNT', 'CARD_APPLICATION'));

-- Going back to one person per ID number loses every superseded claim.
DROP INDEX persons_confirmed;
DROP INDEX persons_live_claim;
DROP INDEX persons_id_number_index;
DROP TABLE person_supersessions;
DELETE FROM persons WHERE claim_status = 'SUPERSEDED';
ALTER TABLE persons DROP COLUMN claim_status;
ALTER TABLE persons DROP COLUMN name_index;
CREATE UNIQUE INDEX persons_id_number_index ON persons (id_number_index);
