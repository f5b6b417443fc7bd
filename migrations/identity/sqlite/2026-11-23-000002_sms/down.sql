DROP TABLE sms_phone_locks;
DROP TABLE sms_challenges;
