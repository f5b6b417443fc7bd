//! Personal data at rest (docs/architecture.md#personal-data): the identity database holds no
//! plaintext ID number, name or phone; the insurance database holds none at all. Every column of
//! every table is read as raw bytes (and on SQLite the database and WAL files too).

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{Binary, Nullable, Text},
};
use medins_common::db::{Backend, Db, DbError};
use medins_proto::{
    identity::v1::RegisterPersonRequest,
    insurance::v1::{OpenAccountRequest, PersonIdentity, Scheme, open_account_request},
};

use crate::support::{SeedPerson, Stack, TestDatabases, with_idempotency_key};

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Nullable<Binary>)]
    value: Option<Vec<u8>>,
}

/// Every value of every column of every table, as the bytes the database holds.
pub(crate) async fn raw_values(db: &Db) -> Vec<(String, Vec<u8>)> {
    let backend = db.backend();
    db.run(move |conn| -> Result<_, DbError> {
        let columns_sql = match backend {
            Backend::Sqlite => {
                "SELECT m.name AS table_name, c.name AS column_name, c.type AS data_type \
                 FROM sqlite_master m JOIN pragma_table_info(m.name) c \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
            }
            Backend::Postgres => {
                "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                 data_type::text AS data_type FROM information_schema.columns \
                 WHERE table_schema = current_schema()"
            }
        };
        let columns: Vec<Column> = diesel::sql_query(columns_sql).load(conn)?;
        let mut values = Vec::new();
        for column in columns {
            let name = format!("\"{}\"", column.column_name.replace('"', "\"\""));
            let expression = match backend {
                Backend::Sqlite => format!("CAST({name} AS BLOB)"),
                Backend::Postgres if column.data_type == "bytea" => name,
                Backend::Postgres => format!("convert_to({name}::text, 'UTF8')"),
            };
            let query = format!("SELECT {expression} AS value FROM \"{}\"", column.table_name);
            let rows: Vec<Value> = diesel::sql_query(query).load(conn)?;
            let label = format!("{}.{}", column.table_name, column.column_name);
            values.extend(rows.into_iter().filter_map(|row| row.value).map(|bytes| (label.clone(), bytes)));
        }
        Ok(values)
    })
    .await
    .expect("read raw rows")
}

/// The SQLite database file and its WAL, as bytes: free pages, indexes and the WAL hold bytes
/// that SQL does not show.
pub(crate) fn sqlite_files(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let wal = path.with_extension("db-wal");
    let files: Vec<(String, Vec<u8>)> = [path.to_path_buf(), wal]
        .into_iter()
        .filter_map(|file| std::fs::read(&file).ok().map(|bytes| (file.display().to_string(), bytes)))
        .collect();
    assert!(!files.is_empty(), "the SQLite files exist");
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Asserts that no blob holds any of `secrets`, and that `marker` (a value known to be stored)
/// is found, so the scan is known to see the data.
pub(crate) fn assert_absent(blobs: &[(String, Vec<u8>)], secrets: &[(&str, &str)], marker: &str) {
    assert!(blobs.iter().any(|(_, bytes)| contains(bytes, marker.as_bytes())), "the scan sees stored data");
    for (what, secret) in secrets {
        for variant in [secret.to_string(), secret.to_lowercase()] {
            for (place, bytes) in blobs {
                assert!(!contains(bytes, variant.as_bytes()), "plaintext {what} found in {place}");
            }
        }
    }
}

#[tokio::test]
async fn the_databases_hold_no_plaintext_id_number_name_or_phone() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let registered = stack
        .persons(Some(&stack.keys.bank))
        .register_person(with_idempotency_key(
            RegisterPersonRequest {
                name: person.name.clone(),
                id_number: person.id_number.clone(),
                phone: person.phone.clone(),
            },
            "privacy-register",
        ))
        .await
        .expect("register")
        .into_inner();
    let person_id = registered.person.unwrap().person_id;
    let account = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(with_idempotency_key(
            OpenAccountRequest {
                person: Some(open_account_request::Person::Identity(PersonIdentity {
                    name: person.name.clone(),
                    id_number: person.id_number.clone(),
                })),
                scheme: Scheme::Resident as i32,
                region_code: "110105".into(),
                employer_code: String::new(),
            },
            "privacy-open",
        ))
        .await
        .expect("open")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(stack.count_identity_rows("persons").await, 1);

    let secrets = [("ID number", person.id_number.as_str()), ("name", person.name.as_str()), ("phone", &person.phone)];
    let identity_rows = raw_values(&stack.identity_db).await;
    assert!(identity_rows.iter().any(|(place, _)| place == "persons.name_enc"), "persons columns were read");
    assert_absent(&identity_rows, &secrets, &person_id);

    let insurance_rows = raw_values(&stack.insurance_db).await;
    assert!(insurance_rows.iter().any(|(place, _)| place == "accounts.person_id"), "accounts columns were read");
    assert_absent(&insurance_rows, &secrets, &account.account_id);

    if !stack.databases.is_postgres() {
        let TestDatabases::Sqlite { identity, insurance } = &stack.databases else { panic!("not PostgreSQL") };
        assert_absent(&sqlite_files(identity), &secrets, &person_id);
        assert_absent(&sqlite_files(insurance), &secrets, &account.account_id);
    }
    stack.shutdown().await;
}
