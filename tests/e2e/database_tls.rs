//! PostgreSQL over TLS (README "PostgreSQL over TLS"): on the throwaway cluster of `.ci/pg.sh`
//! (TLS only, `hostssl` lines only) both services work through `sslmode=verify-full` URLs, and
//! every session the server holds for their databases is encrypted. On SQLite there is no
//! network edge to check.

use medins_proto::identity::v1::RegisterPersonRequest;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::support::{SeedPerson, Stack};

/// (sessions over TLS, sessions without) that the server holds for `db`'s database.
async fn sessions(db: &medins_common::db::Db) -> (i64, i64) {
    use diesel::{QueryableByName, RunQueryDsl};
    #[derive(QueryableByName)]
    struct Sessions {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        tls: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        plain: i64,
    }
    db.run(|conn| {
        let medins_common::db::DbConnection::Postgres(conn) = conn else { panic!("not PostgreSQL") };
        diesel::sql_query(
            "SELECT count(*) FILTER (WHERE s.ssl) AS tls, count(*) FILTER (WHERE NOT s.ssl) AS plain \
             FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.datname = current_database() AND a.backend_type = 'client backend'",
        )
        .get_result::<Sessions>(conn)
        .map(|s| (s.tls, s.plain))
        .map_err(medins_common::db::DbError::from)
    })
    .await
    .expect("read pg_stat_ssl")
}

#[tokio::test]
async fn both_services_work_over_verify_full_and_every_database_session_is_encrypted() {
    let stack = Stack::start().await;
    if !stack.databases.is_postgres() {
        eprintln!("skipped: SQLite (set MEDINS_TEST_POSTGRES_URL, e.g. with .ci/pg.sh)");
        stack.shutdown().await;
        return;
    }
    let person = SeedPerson::adult();
    stack
        .persons(Some(&stack.keys.bank))
        .register_person(RegisterPersonRequest {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
            phone: person.phone.clone(),
        })
        .await
        .expect("register over a verify-full database connection");
    assert_eq!(stack.count_identity_rows("persons").await, 1);
    let health = HealthClient::new(stack.insurance_channel())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("insurance health")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32, "insurance-svc reaches its database");

    for (service, db) in [("identity-svc", &stack.identity_db), ("insurance-svc", &stack.insurance_db)] {
        let (tls, plain) = sessions(db).await;
        assert!(tls >= 1, "{service}: sessions over TLS: {tls}");
        assert_eq!(plain, 0, "{service}: sessions without TLS");
    }
    stack.shutdown().await;
}
