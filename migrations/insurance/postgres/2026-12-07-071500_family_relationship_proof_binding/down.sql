DROP TABLE family_binding_terms;
UPDATE family_bindings SET status = 'ACTIVE' WHERE status = 'PENDING_REVIEW';
ALTER TABLE family_bindings DROP CONSTRAINT family_bindings_live_holds_slot;
ALTER TABLE family_bindings DROP CONSTRAINT family_bindings_live_not_ended;
ALTER TABLE family_bindings ADD CONSTRAINT family_bindings_check1
    CHECK ((status IN ('PENDING_FACE', 'ACTIVE')) = (quota_slot IS NOT NULL));
ALTER TABLE family_bindings ADD CONSTRAINT family_bindings_check2
    CHECK ((status IN ('PENDING_FACE', 'ACTIVE')) = (ended_at IS NULL));
ALTER TABLE family_bindings DROP CONSTRAINT family_bindings_status_check;
ALTER TABLE family_bindings ADD CONSTRAINT family_bindings_status_check
    CHECK (status IN ('PENDING_FACE', 'ACTIVE', 'REJECTED', 'EXPIRED', 'REMOVED'));
