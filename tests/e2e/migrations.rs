//! Every migration goes up, down and up again, and the schema after the second `up` is the
//! schema after the first: a `down.sql` that does not undo its `up.sql` fails here.

use diesel::{QueryableByName, RunQueryDsl, sql_types::Text};
use medins_common::db::{Backend, Db, DbError, Migrations};

use crate::support::Stack;

#[derive(QueryableByName, PartialEq, Eq, Debug, PartialOrd, Ord)]
struct SchemaLine {
    #[diesel(sql_type = Text)]
    line: String,
}

async fn schema(db: &Db) -> Vec<SchemaLine> {
    let query = match db.backend() {
        Backend::Sqlite => {
            "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') AS line FROM sqlite_master \
             WHERE name NOT LIKE '__diesel%' AND name NOT LIKE 'sqlite_%' ORDER BY line"
        }
        Backend::Postgres => {
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || \
             COALESCE(column_default, '') AS line FROM information_schema.columns WHERE table_schema = 'public' \
             AND table_name NOT LIKE '__diesel%' UNION ALL SELECT indexname || ' ' || indexdef AS line FROM pg_indexes \
             WHERE schemaname = 'public' AND indexname NOT LIKE '__diesel%' UNION ALL SELECT conname || ' ' || \
             pg_get_constraintdef(oid) AS line FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
             AND conname NOT LIKE '__diesel%' ORDER BY line"
        }
    };
    let mut lines = db
        .run(move |conn| diesel::sql_query(query).load::<SchemaLine>(conn).map_err(DbError::from))
        .await
        .expect("schema dump");
    lines.sort();
    lines
}

async fn up_down_up(db: &Db, migrations: Migrations) {
    let first = schema(db).await;
    assert!(!first.is_empty(), "migrations ran at start");
    let reverted = db.revert_all_migrations(migrations).await.expect("revert all");
    assert!(reverted > 0);
    assert!(schema(db).await.is_empty(), "down migrations leave nothing behind");
    db.migrate(migrations).await.expect("migrate again");
    assert_eq!(schema(db).await, first, "the schema after up-down-up equals the first");
}

#[tokio::test]
async fn identity_and_insurance_migrations_go_up_down_and_up_again() {
    let stack = Stack::start().await;
    // Quiesce: the servers stay up but idle while the schema changes under them.
    up_down_up(&stack.identity_db, identity_svc::store::MIGRATIONS).await;
    up_down_up(&stack.insurance_db, insurance_svc::store::MIGRATIONS).await;
    stack.shutdown().await;
}

/// One column as `store/schema.rs` declares it or as the database has it: name, type kind
/// (see [`kind_of_diesel`]) and nullability.
type Columns = std::collections::BTreeMap<String, std::collections::BTreeMap<String, (String, bool)>>;

/// The tables of a `diesel::table!` file, read from its text: the `table!` macro keeps no list
/// of its columns' SQL types at run time, and reading the file is what a reviewer does too.
fn declared(schema_rs: &str) -> Columns {
    let mut tables = Columns::new();
    let mut current: Option<String> = None;
    for line in schema_rs.lines().map(str::trim) {
        if let Some((head, _)) = line.split_once(" (").filter(|_| line.ends_with('{') && !line.contains("->")) {
            current = Some(head.trim().to_owned());
            tables.entry(head.trim().to_owned()).or_default();
        } else if let (Some(table), Some((column, ty))) = (&current, line.split_once(" -> ")) {
            let ty = ty.trim_end_matches(',');
            let (ty, nullable) = match ty.strip_prefix("Nullable<").and_then(|t| t.strip_suffix('>')) {
                Some(inner) => (inner, true),
                None => (ty, false),
            };
            let kind = kind_of_diesel(ty).unwrap_or_else(|| panic!("{table}.{column}: unknown diesel type {ty}"));
            tables.get_mut(table).unwrap().insert(column.trim().to_owned(), (kind.to_owned(), nullable));
        } else if line == "}" {
            current = None;
        }
    }
    tables
}

/// The `diesel::table!` blocks of a source file (a file that declares a table beside other
/// code, like `common/src/idempotency.rs`).
fn table_blocks(source: &str) -> String {
    let mut blocks = String::new();
    let mut rest = source;
    while let Some(start) = rest.find("diesel::table! {") {
        let mut depth = 0;
        let mut end = start;
        for (offset, c) in rest[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        blocks.push_str(&rest[start..end]);
        blocks.push('\n');
        rest = &rest[end..];
    }
    blocks
}

/// The comparable kind of a diesel SQL type.
fn kind_of_diesel(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "Text" => "text",
        "Integer" | "BigInt" | "SmallInt" => "integer",
        "Binary" => "blob",
        "Bool" => "bool",
        "Timestamp" => "timestamp",
        "Date" => "date",
        "Double" => "real",
        _ => return None,
    })
}

/// The comparable kind of a column as the database declares it. SQLite keeps the declared type
/// text (matched by its affinity rules: `INT` anywhere is an integer); PostgreSQL names it.
fn kind_of_sql(backend: Backend, ty: &str) -> String {
    let upper = ty.to_ascii_uppercase();
    let kind = match backend {
        Backend::Sqlite if upper.contains("INT") => "integer",
        Backend::Sqlite if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") => "text",
        Backend::Sqlite if upper.contains("BLOB") => "blob",
        Backend::Sqlite if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") => "real",
        Backend::Sqlite if upper.starts_with("BOOL") => "bool",
        Backend::Sqlite if upper.starts_with("TIMESTAMP") || upper.starts_with("DATETIME") => "timestamp",
        Backend::Sqlite if upper == "DATE" => "date",
        Backend::Postgres => match upper.as_str() {
            "TEXT" | "CHARACTER VARYING" => "text",
            "INTEGER" | "BIGINT" | "SMALLINT" => "integer",
            "BYTEA" => "blob",
            "BOOLEAN" => "bool",
            "TIMESTAMP WITHOUT TIME ZONE" => "timestamp",
            "DATE" => "date",
            "DOUBLE PRECISION" | "REAL" => "real",
            _ => return upper,
        },
        _ => return upper,
    };
    kind.to_owned()
}

#[derive(QueryableByName)]
struct DbColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    nullable: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    primary_key: bool,
}

/// The tables and columns the migrations created, and which columns are in a primary key.
async fn migrated(db: &Db) -> (Columns, std::collections::BTreeSet<(String, String)>) {
    let query = match db.backend() {
        Backend::Sqlite => {
            "SELECT m.name AS table_name, p.name AS column_name, p.type AS data_type, \
             (p.\"notnull\" = 0) AS nullable, (p.pk > 0) AS primary_key \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE '__diesel%' AND m.name NOT LIKE 'sqlite_%'"
        }
        Backend::Postgres => {
            "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, \
             c.data_type::text AS data_type, (c.is_nullable = 'YES') AS nullable, \
             EXISTS (SELECT 1 FROM information_schema.key_column_usage k JOIN information_schema.table_constraints t \
               ON t.constraint_name = k.constraint_name AND t.table_schema = k.table_schema \
               WHERE t.constraint_type = 'PRIMARY KEY' AND k.table_schema = c.table_schema \
               AND k.table_name = c.table_name AND k.column_name = c.column_name) AS primary_key \
             FROM information_schema.columns c JOIN information_schema.tables t \
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.table_name NOT LIKE '__diesel%'"
        }
    };
    let backend = db.backend();
    let rows = db
        .run(move |conn| diesel::sql_query(query).load::<DbColumn>(conn).map_err(DbError::from))
        .await
        .expect("columns");
    let mut tables = Columns::new();
    let mut keys = std::collections::BTreeSet::new();
    for row in rows {
        if row.primary_key {
            keys.insert((row.table_name.clone(), row.column_name.clone()));
        }
        tables
            .entry(row.table_name)
            .or_default()
            .insert(row.column_name, (kind_of_sql(backend, &row.data_type), row.nullable));
    }
    (tables, keys)
}

/// `schema_rs` (with the shared audit tables) describes exactly what the migrations created:
/// the same tables, the same columns, of the same kind and nullability. A primary-key column's
/// nullability is not compared: SQLite lets a non-INTEGER key hold NULL unless told otherwise,
/// and diesel never reads one as NULL.
async fn schema_rs_matches(db: &Db, service: &str, schema_rs: &str) {
    // The service's own tables, and those of the shared modules every service migrates.
    let mut expected = declared(&table_blocks(schema_rs));
    expected.extend(declared(&table_blocks(include_str!("../../common/src/audit/schema.rs"))));
    expected.extend(declared(&table_blocks(include_str!("../../common/src/idempotency.rs"))));
    let (actual, keys) = migrated(db).await;
    let names = |c: &Columns| c.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&expected), names(&actual), "{service}: tables in schema.rs vs the migrations");
    for (table, columns) in &expected {
        let found = &actual[table];
        assert_eq!(
            columns.keys().collect::<Vec<_>>(),
            found.keys().collect::<Vec<_>>(),
            "{service}: columns of {table} in schema.rs vs the migrations"
        );
        for (column, (kind, nullable)) in columns {
            let (found_kind, found_nullable) = &found[column];
            assert_eq!(kind, found_kind, "{service}: type of {table}.{column}");
            if !keys.contains(&(table.clone(), column.clone())) {
                assert_eq!(nullable, found_nullable, "{service}: nullability of {table}.{column}");
            }
        }
    }
}

#[tokio::test]
async fn each_services_schema_rs_is_what_its_migrations_create() {
    let stack = Stack::start().await;
    schema_rs_matches(&stack.identity_db, "identity-svc", include_str!("../../identity-svc/src/store/schema.rs")).await;
    schema_rs_matches(&stack.insurance_db, "insurance-svc", include_str!("../../insurance-svc/src/store/schema.rs"))
        .await;
    stack.shutdown().await;
}

#[test]
fn a_column_missing_from_schema_rs_is_noticed() {
    // The reader itself: a table and its columns, and a Nullable.
    let declared = declared(
        "diesel::table! {\n    things (id) {\n        id -> Text,\n        n -> Nullable<BigInt>,\n    }\n}\n",
    );
    assert_eq!(declared["things"]["id"], ("text".to_owned(), false));
    assert_eq!(declared["things"]["n"], ("integer".to_owned(), true));
    assert_eq!(declared["things"].len(), 2);
}
