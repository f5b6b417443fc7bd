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
