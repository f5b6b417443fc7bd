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
