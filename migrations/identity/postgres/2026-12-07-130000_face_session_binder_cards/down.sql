DROP TABLE face_session_binders;
