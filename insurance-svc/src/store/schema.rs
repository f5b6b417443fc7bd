//! Diesel schema of insurance-svc, portable across SQLite and PostgreSQL.

diesel::table! {
    /// Insured accounts (see `migrations/insurance`).
    accounts (id) {
        id -> Text,
        person_id -> Text,
        scheme -> Text,
        region_code -> Text,
        employer_code -> Nullable<Text>,
        status -> Text,
        balance_cents -> BigInt,
        birth_date -> Date,
        opened_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Outcomes of face sessions with an insurance purpose, one per session.
    face_outcomes (session_id) {
        session_id -> Text,
        event_id -> Text,
        person_id -> Text,
        purpose -> Text,
        reference -> Text,
        outcome -> Text,
        finished_at -> Timestamp,
        received_at -> Timestamp,
    }
}

diesel::table! {
    /// Vouchers, one per person (migration 000003).
    vouchers (id) {
        id -> Text,
        person_id -> Text,
        status -> Text,
        activated_at -> Timestamp,
        updated_at -> Timestamp,
        suspended_by -> Nullable<Text>,
        suspension_reason -> Nullable<Text>,
    }
}

diesel::table! {
    /// Each activation of a voucher; a face session activates at most once.
    voucher_activations (id) {
        id -> Text,
        voucher_id -> Text,
        channel -> Text,
        face_session_id -> Nullable<Text>,
        partner_id -> Text,
        activated_at -> Timestamp,
    }
}

diesel::table! {
    /// Visits opened by redeeming a code; `code_nonce` is unique.
    visits (id) {
        id -> Text,
        voucher_id -> Text,
        person_id -> Text,
        account_id -> Text,
        partner_id -> Text,
        code_nonce -> Binary,
        code_key_id -> Text,
        opened_at -> Timestamp,
    }
}

diesel::table! {
    /// One settlement per visit.
    settlements (id) {
        id -> Text,
        visit_id -> Text,
        person_id -> Text,
        category -> Text,
        pay_from -> Text,
        charged_account_id -> Nullable<Text>,
        total_cents -> BigInt,
        fund_cents -> BigInt,
        account_cents -> BigInt,
        self_cents -> BigInt,
        deductible_cents -> BigInt,
        year -> Integer,
        items_summary -> Text,
        status -> Text,
        settled_at -> Timestamp,
        reversed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// The individual-account ledger.
    account_entries (id) {
        id -> Text,
        account_id -> Text,
        kind -> Text,
        amount_cents -> BigInt,
        balance_after_cents -> BigInt,
        reference -> Text,
        settlement_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Year-to-date totals per person, year and category.
    annual_totals (person_id, year, category) {
        person_id -> Text,
        year -> Integer,
        category -> Text,
        total_cents -> BigInt,
        fund_cents -> BigInt,
        deductible_cents -> BigInt,
    }
}

diesel::table! {
    /// Document metadata; the bytes live in the object store under `object_key` (migration 000004).
    documents (id) {
        id -> Text,
        owner_person_id -> Text,
        kind -> Text,
        content_type -> Text,
        size_bytes -> BigInt,
        sha256 -> Text,
        object_key -> Text,
        uploaded_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Family bindings; a live one holds one of the owner's quota slots (migration 000005).
    family_bindings (id) {
        id -> Text,
        owner_person_id -> Text,
        member_person_id -> Text,
        relationship -> Text,
        status -> Text,
        quota_slot -> Nullable<Integer>,
        member_birth_date -> Date,
        face_session_id -> Nullable<Text>,
        commitment_letter_id -> Text,
        owner_register_id -> Text,
        member_register_id -> Text,
        family_aid -> Bool,
        created_at -> Timestamp,
        activated_at -> Nullable<Timestamp>,
        ended_at -> Nullable<Timestamp>,
        removed_by -> Nullable<Text>,
    }
}

diesel::table! {
    /// Distinct binders of a member per calendar month, at most 2 (migration 000005).
    family_binder_months (member_person_id, month, owner_person_id) {
        member_person_id -> Text,
        month -> Text,
        owner_person_id -> Text,
        slot -> Integer,
        created_at -> Timestamp,
    }
}

diesel::joinable!(voucher_activations -> vouchers (voucher_id));
diesel::joinable!(visits -> vouchers (voucher_id));
diesel::joinable!(visits -> accounts (account_id));
diesel::joinable!(settlements -> visits (visit_id));
diesel::joinable!(account_entries -> accounts (account_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    face_outcomes,
    vouchers,
    voucher_activations,
    visits,
    settlements,
    account_entries,
    annual_totals,
    documents,
    family_bindings,
    family_binder_months,
);
