//! Append throughput of the audit log (docs/benchmarks.md, "Audit appends"). Ignored by default
//! (it runs for seconds and is only meaningful in a release build):
//!
//! ```sh
//! cargo test --release -p medins-common --test audit_append -- --ignored --nocapture
//! MEDINS_TEST_POSTGRES_URL=postgres://... cargo test --release ...   # PostgreSQL too
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use medins_common::{
    audit::{AuditKeys, AuditStore},
    clock::SystemClock,
    db::{DatabaseUrl, Db, Migrations, PoolOptions},
};
use uuid::Uuid;

const SQLITE: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations/insurance/sqlite");
const POSTGRES: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations/insurance/postgres");
const TABLES: Migrations = Migrations { sqlite: || SQLITE, postgres: || POSTGRES };

const WINDOW: Duration = Duration::from_secs(3);

async fn run(db: Db, label: &str) {
    db.migrate(TABLES).await.expect("migrate");
    let store =
        AuditStore::new(db, Arc::new(SystemClock), "insurance-svc", AuditKeys::from_ring(AuditKeys::generate_ring()));
    // One caller at a time: the cost one audited call waits for.
    let person = Uuid::now_v7();
    let started = Instant::now();
    let mut sequential = 0u64;
    while started.elapsed() < WINDOW {
        store.record("bench", "/bench/Append", person, tonic::Code::Ok).await;
        sequential += 1;
    }
    let per_call = started.elapsed().as_secs_f64() * 1e6 / sequential as f64;
    // 64 callers for 64 persons at once.
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, count) = (store.clone(), count.clone());
            let person = Uuid::now_v7();
            tokio::spawn(async move {
                while started.elapsed() < WINDOW {
                    store.record("bench", "/bench/Append", person, tonic::Code::Ok).await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let checkpoint = Instant::now();
    let sealed = store.checkpoint_now().await.expect("checkpoint");
    println!(
        "{label}: 1 caller: {:.0} appends/s ({per_call:.0} us per call); 64 callers, 64 persons: {concurrent:.0} appends/s; \
         one checkpoint round: {sealed} partitions in {} ms",
        1e6 / per_call,
        checkpoint.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in a release build, see the module doc"]
async fn audit_append_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    run(Db::connect(&url, &PoolOptions::default()).unwrap(), "SQLite").await;
    if let Ok(admin) = std::env::var("MEDINS_TEST_POSTGRES_URL") {
        use diesel::{Connection, RunQueryDsl};
        let name = format!("medins_bench_{}", Uuid::new_v4().simple());
        let mut conn = diesel::PgConnection::establish(&admin).expect("connect");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).unwrap();
        let url = DatabaseUrl::parse(&admin).and_then(|url| url.with_database(&name)).unwrap().expose();
        run(Db::connect(&url, &PoolOptions::default()).unwrap(), "PostgreSQL").await;
    }
}
