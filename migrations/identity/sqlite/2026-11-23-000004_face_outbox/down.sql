DROP TABLE face_outbox;
DROP TABLE face_sessions;
