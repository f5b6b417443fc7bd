DROP TABLE face_outcomes;
