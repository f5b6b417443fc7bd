//! Diesel schema of identity-svc, portable across SQLite and PostgreSQL.

diesel::table! {
    /// Persons; personal data encrypted per field (see `migrations/identity`).
    persons (id) {
        id -> Text,
        id_number_index -> Binary,
        id_number_enc -> Binary,
        name_enc -> Binary,
        phone_index -> Nullable<Binary>,
        phone_enc -> Nullable<Binary>,
        birth_date -> Date,
        sex -> Text,
        region_code -> Text,
        real_name_status -> Text,
        real_name_method -> Nullable<Text>,
        real_name_verified_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        name_index -> Nullable<Binary>,
        claim_status -> Text,
    }
}

diesel::table! {
    /// Which confirmation superseded a claim, and when.
    person_supersessions (person_id) {
        person_id -> Text,
        superseded_by -> Text,
        superseded_at -> Timestamp,
    }
}

diesel::table! {
    /// Transactional outbox of PersonSuperseded events for insurance-svc.
    person_outbox (id) {
        id -> Text,
        person_id -> Text,
        superseded_by -> Text,
        occurred_at -> Timestamp,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        delivered_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Each change of a person's phone and how it was proven; phones as blind indexes only.
    phone_changes (id) {
        id -> Text,
        person_id -> Text,
        method -> Text,
        partner_id -> Text,
        sms_challenge_id -> Text,
        face_session_id -> Nullable<Text>,
        reason_enc -> Nullable<Binary>,
        previous_phone_index -> Nullable<Binary>,
        new_phone_index -> Binary,
        changed_at -> Timestamp,
    }
}

diesel::table! {
    /// SMS verification challenges; the code only as an HMAC (see `store::sms`).
    sms_challenges (id) {
        id -> Text,
        phone_index -> Binary,
        phone_enc -> Binary,
        code_hmac -> Binary,
        purpose -> Text,
        state -> Text,
        attempts -> Integer,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        verified_at -> Nullable<Timestamp>,
        consumed_at -> Nullable<Timestamp>,
        partner_id -> Text,
    }
}

diesel::table! {
    /// Codes each partner had sent per China-time day (its daily SMS quota).
    sms_partner_days (partner_id, day) {
        partner_id -> Text,
        day -> Date,
        sent -> Integer,
    }
}

diesel::table! {
    /// Per-phone lock rows of SendSmsCode on PostgreSQL.
    sms_phone_locks (phone_index) {
        phone_index -> Binary,
        locked_at -> Timestamp,
    }
}

diesel::table! {
    /// Face verification sessions: outcomes only, never an image.
    face_sessions (id) {
        id -> Text,
        person_id -> Text,
        purpose -> Text,
        reference -> Text,
        partner_id -> Text,
        challenge -> Text,
        status -> Text,
        submissions -> Integer,
        last_liveness_passed -> Nullable<Bool>,
        last_similarity -> Nullable<Double>,
        /// The FACE_PROVIDER partner the session is bound to (set at the start; the only one
        /// whose submissions count). NULL only for sessions started before sessions were bound.
        provider_id -> Nullable<Text>,
        provider_reference -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// The binder who may read and watch a family binding's member check (issue 13; migration
    /// 2026-12-07-130000): one row for the sessions insurance-svc named a binder for.
    face_session_binders (session_id) {
        session_id -> Text,
        binder_person_id -> Text,
    }
}

diesel::table! {
    /// Transactional outbox of FaceVerificationCompleted events for insurance-svc.
    face_outbox (id) {
        id -> Text,
        session_id -> Text,
        person_id -> Text,
        purpose -> Text,
        reference -> Text,
        outcome -> Text,
        finished_at -> Timestamp,
        sequence -> Integer,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        delivered_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Partners' users linked to persons; the user ref encrypted, with a blind index.
    partner_links (id) {
        id -> Text,
        partner_id -> Text,
        person_id -> Text,
        partner_user_ref_index -> Binary,
        partner_user_ref_enc -> Binary,
        linked_at -> Timestamp,
        unlinked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Revoked person tokens: (person, partner or every partner) issued at or before revoked_at.
    token_revocations (id) {
        id -> Text,
        person_id -> Text,
        partner_id -> Nullable<Text>,
        revoked_at -> Timestamp,
        reason -> Text,
    }
}

diesel::table! {
    /// Operators' suspensions of persons (history; one open per person).
    person_suspensions (id) {
        id -> Text,
        person_id -> Text,
        suspended_at -> Timestamp,
        suspended_by -> Text,
        reason_enc -> Binary,
        resumed_at -> Nullable<Timestamp>,
        resumed_by -> Nullable<Text>,
        resume_reason_enc -> Nullable<Binary>,
    }
}

diesel::table! {
    /// Assurance level reached by each person (absent: none yet).
    person_assurance (person_id) {
        person_id -> Text,
        level -> Integer,
        method -> Text,
        raised_at -> Timestamp,
    }
}
