DROP TABLE sms_partner_days;
ALTER TABLE sms_challenges DROP COLUMN partner_id;
