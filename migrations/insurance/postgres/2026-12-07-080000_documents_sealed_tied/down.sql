DROP INDEX document_object_intents_created;
DROP TABLE document_object_intents;
ALTER TABLE documents DROP COLUMN wrapped_key;
ALTER TABLE documents DROP COLUMN uploaded_by_person_id;
ALTER TABLE documents DROP COLUMN relationship;
ALTER TABLE documents DROP COLUMN subject_person_id;
