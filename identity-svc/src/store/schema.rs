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
    }
}
