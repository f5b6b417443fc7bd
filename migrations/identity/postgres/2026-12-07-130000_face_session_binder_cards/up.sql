-- The binder who may read and watch a family binding's member check (issue 13 item 1): written
-- only when insurance-svc (a SERVICE partner) starts the member's session in AddFamilyMember,
-- in the transaction that inserts the session, so the binder's phone runs the face check of an
-- elder who has none. No row: only the person reads the session. A table of its own (not a
-- column of face_sessions): it is read only when the person's own token does not fit.
CREATE TABLE face_session_binders (
    session_id TEXT PRIMARY KEY NOT NULL REFERENCES face_sessions (id) ON DELETE CASCADE,
    binder_person_id TEXT NOT NULL
);
