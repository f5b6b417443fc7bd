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
    /// Visits opened by redeeming a code; `code_nonce` (the code's redemption key) is unique.
    visits (id) {
        id -> Text,
        voucher_id -> Nullable<Text>,
        person_id -> Text,
        account_id -> Text,
        partner_id -> Text,
        code_nonce -> Nullable<Binary>,
        code_key_id -> Nullable<Text>,
        opened_at -> Timestamp,
        card_number -> Nullable<Text>,
    }
}

diesel::table! {
    /// One settlement per visit; a reimbursement claim's settlement has no visit.
    settlements (id) {
        id -> Text,
        visit_id -> Nullable<Text>,
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
        credited_by -> Nullable<Text>,
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
        subject_person_id -> Nullable<Text>,
        relationship -> Nullable<Text>,
        uploaded_by_person_id -> Nullable<Text>,
        wrapped_key -> Nullable<Binary>,
    }
}

diesel::table! {
    /// Document bytes written before their row; removed with the row's insert, swept otherwise
    /// (migration 2026-12-07-080000).
    document_object_intents (object_key) {
        object_key -> Text,
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
    /// What a family binding rests on: proof, review, notice, channel (migration 071500).
    family_binding_terms (binding_id) {
        binding_id -> Text,
        relationship_proof -> Nullable<Text>,
        review_deadline -> Nullable<Timestamp>,
        reviewed_by -> Nullable<Text>,
        reviewed_at -> Nullable<Timestamp>,
        rejection_reason -> Nullable<Text>,
        notice_version -> Nullable<Text>,
        notice_accepted_at -> Nullable<Timestamp>,
        channel -> Text,
        owner_face_session_id -> Nullable<Text>,
        attested_by -> Nullable<Text>,
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

diesel::table! {
    /// Card fees paid at a bank; `application_id` is the application they paid for (migration 000006).
    card_fees (id) {
        id -> Text,
        person_id -> Text,
        bank_partner_id -> Text,
        reference -> Text,
        amount_cents -> BigInt,
        application_id -> Nullable<Text>,
        recorded_at -> Timestamp,
    }
}

diesel::table! {
    /// Card applications; at most one open per person (migration 000006).
    card_applications (id) {
        id -> Text,
        person_id -> Text,
        channel -> Text,
        delivery -> Text,
        status -> Text,
        partner_id -> Text,
        guardian_person_id -> Nullable<Text>,
        agent_person_id -> Nullable<Text>,
        employer_code -> Nullable<Text>,
        replaces_card_number -> Nullable<Text>,
        rejection_reason -> Nullable<Text>,
        ready_by -> Nullable<Date>,
        tracking_number -> Nullable<Text>,
        card_number -> Nullable<Text>,
        submitted_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Documents, face session and SMS challenge of an ONLINE application (migration 000006).
    card_application_evidence (application_id) {
        application_id -> Text,
        id_card_front_document_id -> Text,
        id_card_back_document_id -> Text,
        photo_document_id -> Nullable<Text>,
        face_session_id -> Text,
        sms_challenge_id -> Text,
    }
}

diesel::table! {
    /// Mailing addresses of mailed cards (migration 000006); street, recipient and phone
    /// AES-256-GCM encrypted (store::card).
    card_mailing_addresses (application_id) {
        application_id -> Text,
        region_code -> Text,
        street_enc -> Binary,
        recipient_enc -> Binary,
        phone_enc -> Binary,
    }
}

diesel::table! {
    /// Each status an application reached (migration 000006).
    card_application_events (id) {
        id -> Text,
        application_id -> Text,
        status -> Text,
        partner_id -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    /// Cards, never deleted: a number is issued once (migration 000006).
    cards (card_number) {
        card_number -> Text,
        person_id -> Text,
        application_id -> Text,
        status -> Text,
        medical_activated_at -> Nullable<Timestamp>,
        medical_activated_by -> Nullable<Text>,
        financial_activated_at -> Nullable<Timestamp>,
        financial_activated_by -> Nullable<Text>,
        replaced_by_application_id -> Nullable<Text>,
        issued_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// A card's PIN: Argon2id PHC string and wrong tries in a row (migration 220000).
    card_pins (card_number) {
        card_number -> Text,
        pin_hash -> Text,
        failures -> Integer,
        set_by -> Text,
        set_at -> Timestamp,
    }
}

diesel::joinable!(voucher_activations -> vouchers (voucher_id));
diesel::joinable!(visits -> vouchers (voucher_id));
diesel::joinable!(visits -> accounts (account_id));
diesel::joinable!(account_entries -> accounts (account_id));
diesel::joinable!(family_binding_terms -> family_bindings (binding_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    face_outcomes,
    vouchers,
    voucher_activations,
    visits,
    card_pins,
    settlements,
    account_entries,
    annual_totals,
    documents,
    family_bindings,
    family_binding_terms,
    family_binder_months,
    card_fees,
    card_applications,
    card_application_evidence,
    card_mailing_addresses,
    card_application_events,
    cards,
    cross_region_filings,
);

diesel::table! {
    /// Failed card lookups per partner and China-time day (issue 13 item 3).
    card_lookup_failures (partner_id, day) {
        partner_id -> Text,
        day -> Date,
        failures -> Integer,
    }
}

diesel::table! {
    /// Cross-region care filings (migration 2026-12-07-170000).
    cross_region_filings (id) {
        id -> Text,
        person_id -> Text,
        insured_region_code -> Text,
        destination_region_code -> Text,
        kind -> Text,
        starts_on -> Date,
        ends_on -> Nullable<Date>,
        status -> Text,
        filed_by -> Text,
        filed_at -> Timestamp,
        cancelled_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// The items of itemised bills with their split (migration 2026-12-07-200000).
    settlement_items (settlement_id, line) {
        settlement_id -> Text,
        line -> Integer,
        code -> Text,
        catalog_version -> Text,
        class -> Text,
        quantity_milli -> BigInt,
        unit_price_cents -> BigInt,
        amount_cents -> BigInt,
        department_code -> Text,
        department_name -> Text,
        in_scope_cents -> BigInt,
        b_self_pay_cents -> BigInt,
        deductible_cents -> BigInt,
        fund_cents -> BigInt,
        account_cents -> BigInt,
        self_cents -> BigInt,
    }
}

diesel::table! {
    /// What each settlement was decided on (migration 2026-12-07-200000).
    settlement_facts (settlement_id) {
        settlement_id -> Text,
        insured_region_code -> Text,
        treatment_region_code -> Text,
        cross_region -> Bool,
        filing_id -> Nullable<Text>,
        hospital_level -> Text,
        ratio_bp -> Integer,
        itemised -> Bool,
        in_scope_cents -> BigInt,
        b_self_pay_cents -> BigInt,
        c_self_funded_cents -> BigInt,
        pre_settlement_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// PreSettle's answers (migration 2026-12-07-200000).
    pre_settlements (id) {
        id -> Text,
        visit_id -> Text,
        partner_id -> Text,
        terms_sha256 -> Text,
        fund_cents -> BigInt,
        account_cents -> BigInt,
        self_cents -> BigInt,
        deductible_cents -> BigInt,
        ytd_total_cents -> BigInt,
        ytd_fund_cents -> BigInt,
        ytd_deductible_cents -> BigInt,
        paying_account_id -> Nullable<Text>,
        balance_cents -> BigInt,
        account_status -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    /// Reimbursement claims (migration 2026-12-07-210000).
    claims (id) {
        id -> Text,
        person_id -> Text,
        account_id -> Text,
        hospital_name -> Text,
        hospital_region_code -> Text,
        category -> Text,
        care_date -> Date,
        not_settled_because -> Text,
        total_cents -> BigInt,
        payout -> Text,
        status -> Text,
        submitted_by -> Text,
        submitted_at -> Timestamp,
    }
}

diesel::table! {
    /// A claim's billed items, in invoice order.
    claim_items (claim_id, line) {
        claim_id -> Text,
        line -> Integer,
        code -> Text,
        quantity -> BigInt,
        unit_price_cents -> BigInt,
    }
}

diesel::table! {
    /// A claim's invoice documents.
    claim_documents (claim_id, document_id) {
        claim_id -> Text,
        document_id -> Text,
        holds -> Bool,
    }
}

diesel::table! {
    /// A claim's one review.
    claim_reviews (claim_id) {
        claim_id -> Text,
        decision -> Text,
        reviewed_by -> Text,
        reviewed_at -> Timestamp,
        rejection_reason -> Nullable<Text>,
        settlement_id -> Nullable<Text>,
        transfer_reference -> Nullable<Text>,
    }
}

diesel::joinable!(claim_reviews -> claims (claim_id));
diesel::allow_tables_to_appear_in_same_query!(claims, claim_reviews);
