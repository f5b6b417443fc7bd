-- Documents tied to what they prove, and encrypted at rest (issue 14 items 2 and 3; README
-- "Documents").
-- subject_person_id: the person a document shows or names (a household register page: whose
-- page it is; a commitment letter: the member it binds; other kinds: the owner).
-- relationship: a commitment letter's relationship of the member to the owner.
-- uploaded_by_person_id: the person whose token uploaded it (a guardian for a minor's documents).
-- wrapped_key: the document's own AES-256-GCM key, wrapped by insurance-svc's data keys
-- (versioned); NULL only for rows stored in clear before this migration.
ALTER TABLE documents ADD COLUMN subject_person_id TEXT;
ALTER TABLE documents ADD COLUMN relationship TEXT CHECK (relationship IS NULL OR relationship IN ('SPOUSE', 'CHILD', 'PARENT', 'GRANDPARENT', 'GRANDCHILD', 'SIBLING', 'OTHER_CLOSE_RELATIVE'));
ALTER TABLE documents ADD COLUMN uploaded_by_person_id TEXT;
ALTER TABLE documents ADD COLUMN wrapped_key BLOB;
-- Older pages and photos show their owner; older letters named no member and bind nobody.
UPDATE documents SET subject_person_id = owner_person_id WHERE kind <> 'COMMITMENT_LETTER';

-- Bytes written to the object store before their row: one intent per object, removed in the
-- transaction that inserts the row. An intent left behind (the row never committed) names
-- bytes the sweeper deletes.
CREATE TABLE document_object_intents (
    object_key TEXT PRIMARY KEY NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX document_object_intents_created ON document_object_intents (created_at);
