//! The audit trail at rest (DESIGN.md 4.3): one hash-chained row per call that read or changed a
//! person's data, in the database of the service that served the call.
//!
//! Appending is serialised so the chain never forks: the chain head (`audit_chain_head`, one
//! row) is read and advanced in the same write transaction as the inserts, under
//! `BEGIN IMMEDIATE` on SQLite and `SELECT ... FOR UPDATE` on PostgreSQL; `seq` is also the
//! primary key, so even a broken lock could not give two rows one position.
//!
//! To keep that serialisation off the hot path, appends are group-committed: [`AuditStore::record`]
//! hands its row to one writer task per process, which writes every row waiting at that moment in
//! one transaction (one head lock, one commit) and then answers all their callers. Under load a
//! call waits for at most about one extra transaction, however many calls run at once.

use crate::{
    ApiResult,
    clock::SharedClock,
    db::{Db, DbConnection, DbError, write_transaction},
};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::chain::{AuditFields, ChainFault, ChainWalk, chain_hash, outcome_name};
use super::schema::{audit_chain_head, audit_log};

/// Rows written per transaction at most.
const MAX_BATCH: usize = 512;
/// Rows waiting for the writer at most; beyond, callers wait to enqueue.
const QUEUE_CAPACITY: usize = 8192;
/// Rows read per query when verifying the chain.
const VERIFY_PAGE: i64 = 1000;

/// One row to append.
#[derive(Debug, Clone)]
struct NewAuditRow {
    partner_id: String,
    method: String,
    person_id: String,
    outcome: &'static str,
    recorded_at: NaiveDateTime,
}

struct Pending {
    row: NewAuditRow,
    done: oneshot::Sender<Result<(), String>>,
}

/// One recorded call, as a person's access history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the chain.
    pub seq: i64,
    /// Calling partner.
    pub partner_id: String,
    /// Full gRPC method.
    pub method: String,
    /// gRPC code name of the outcome.
    pub outcome: String,
    /// When.
    pub recorded_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_log)]
struct AuditRow {
    seq: i64,
    partner_id: String,
    method: String,
    person_id: String,
    outcome: String,
    recorded_at: NaiveDateTime,
    prev_hash: Vec<u8>,
    row_hash: Vec<u8>,
}

/// The audit trail of one service's database. Cheap to clone; clones share one writer.
#[derive(Clone, Debug)]
pub struct AuditStore {
    db: Db,
    clock: SharedClock,
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl AuditStore {
    /// A store over `db`; starts its writer task, so call it inside a tokio runtime. The writer
    /// ends when the last clone is dropped.
    pub fn new(db: Db, clock: SharedClock) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_loop(db.clone(), receiver));
        Self { db, clock, queue }
    }

    /// Appends a row for a call by `partner_id` to `method` about `person_id` that ended with
    /// `outcome`, and waits until it is committed. A failure to write is logged (never with
    /// personal data), not returned: the call it records has already happened.
    pub async fn record(&self, partner_id: &str, method: &str, person_id: Uuid, outcome: tonic::Code) {
        let row = NewAuditRow {
            partner_id: partner_id.to_owned(),
            method: method.to_owned(),
            person_id: person_id.to_string(),
            outcome: outcome_name(outcome),
            recorded_at: self.clock.stored_now(),
        };
        let (done, written) = oneshot::channel();
        let result = match self.queue.send(Pending { row, done }).await {
            Ok(()) => written.await.unwrap_or_else(|_| Err("audit writer stopped".to_owned())),
            Err(_) => Err("audit writer stopped".to_owned()),
        };
        if let Err(error) = result {
            tracing::error!(%error, partner = partner_id, method, "audit row could not be written");
        }
    }

    /// The person's recorded calls, newest first: at most `limit`, with `seq` below `before`
    /// when given.
    pub async fn history(&self, person_id: Uuid, before: Option<i64>, limit: i64) -> ApiResult<Vec<AuditEntry>> {
        self.db
            .run(move |conn| {
                let mut query = audit_log::table
                    .filter(audit_log::person_id.eq(person_id.to_string()))
                    .order(audit_log::seq.desc())
                    .limit(limit)
                    .select((
                        audit_log::seq,
                        audit_log::partner_id,
                        audit_log::method,
                        audit_log::outcome,
                        audit_log::recorded_at,
                    ))
                    .into_boxed();
                if let Some(before) = before {
                    query = query.filter(audit_log::seq.lt(before));
                }
                let rows: Vec<(i64, String, String, String, NaiveDateTime)> = query.load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, partner_id, method, outcome, recorded_at)| AuditEntry {
                        seq,
                        partner_id,
                        method,
                        outcome,
                        recorded_at,
                    })
                    .collect())
            })
            .await
    }
}

async fn write_loop(db: Db, mut receiver: mpsc::Receiver<Pending>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let rows: Vec<NewAuditRow> = batch.iter().map(|pending| pending.row.clone()).collect();
        let result = db.write(move |conn| append(conn, &rows)).await.map_err(|error| error.to_string());
        for pending in batch {
            let _ = pending.done.send(result.clone());
        }
    }
}

/// Appends `rows` after the chain head, in one write transaction holding the head.
fn append(conn: &mut DbConnection, rows: &[NewAuditRow]) -> Result<(), DbError> {
    write_transaction(conn, |conn| {
        let head = audit_chain_head::table.find(1).select((audit_chain_head::last_seq, audit_chain_head::last_hash));
        let (mut seq, mut hash): (i64, Vec<u8>) = match conn {
            // SQLite: BEGIN IMMEDIATE already holds the database's write lock.
            DbConnection::Sqlite(_) => head.first(conn)?,
            DbConnection::Postgres(pg) => head.for_update().first(pg)?,
        };
        for row in rows {
            seq += 1;
            let fields = AuditFields {
                seq,
                partner_id: &row.partner_id,
                method: &row.method,
                person_id: &row.person_id,
                outcome: row.outcome,
                recorded_at: row.recorded_at,
            };
            let row_hash = chain_hash(&hash, &fields);
            diesel::insert_into(audit_log::table)
                .values((
                    audit_log::seq.eq(seq),
                    audit_log::partner_id.eq(&row.partner_id),
                    audit_log::method.eq(&row.method),
                    audit_log::person_id.eq(&row.person_id),
                    audit_log::outcome.eq(row.outcome),
                    audit_log::recorded_at.eq(row.recorded_at),
                    audit_log::prev_hash.eq(&hash),
                    audit_log::row_hash.eq(row_hash.as_slice()),
                ))
                .execute(conn)?;
            hash = row_hash.to_vec();
        }
        diesel::update(audit_chain_head::table.find(1))
            .set((audit_chain_head::last_seq.eq(seq), audit_chain_head::last_hash.eq(&hash)))
            .execute(conn)?;
        Ok(())
    })
}

/// What a walk over the whole chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainVerdict {
    /// Every row links to the one before and matches its hash; the head matches the last row.
    Intact {
        /// Rows checked.
        rows: i64,
    },
    /// The first row found broken.
    Broken {
        /// Its position (for a head mismatch: the position the head names).
        seq: i64,
        /// What is wrong.
        fault: ChainFault,
    },
}

/// Walks the audit chain of a service's database from the first row to the head (as it was
/// when the walk began; rows appended meanwhile are not checked) and reports the first broken
/// row. Reads in pages, so memory stays flat on long chains.
pub async fn verify_chain(db: &Db) -> Result<ChainVerdict, DbError> {
    db.run(|conn| {
        let (head_seq, head_hash): (i64, Vec<u8>) = audit_chain_head::table
            .find(1)
            .select((audit_chain_head::last_seq, audit_chain_head::last_hash))
            .first(conn)?;
        let mut walk = ChainWalk::default();
        let mut after = 0i64;
        loop {
            let rows: Vec<AuditRow> = audit_log::table
                .filter(audit_log::seq.gt(after))
                .filter(audit_log::seq.le(head_seq))
                .order(audit_log::seq.asc())
                .limit(VERIFY_PAGE)
                .select(AuditRow::as_select())
                .load(conn)?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in &rows {
                let fields = AuditFields {
                    seq: row.seq,
                    partner_id: &row.partner_id,
                    method: &row.method,
                    person_id: &row.person_id,
                    outcome: &row.outcome,
                    recorded_at: row.recorded_at,
                };
                if let Err(fault) = walk.check(&fields, &row.prev_hash, &row.row_hash) {
                    // A gap is reported at the first missing position.
                    let seq = if fault == ChainFault::SequenceGap { walk.rows() + 1 } else { row.seq };
                    return Ok(ChainVerdict::Broken { seq, fault });
                }
            }
        }
        Ok(match walk.finish(head_seq, &head_hash) {
            Ok(rows) => ChainVerdict::Intact { rows },
            Err(fault) => ChainVerdict::Broken { seq: walk.rows() + 1, fault },
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{clock::ManualClock, db::PoolOptions};
    use tonic::Code;

    use super::*;

    // insurance-svc's migrations create the audit tables (among others) on SQLite.
    const SQLITE_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
        diesel_migrations::embed_migrations!("../migrations/insurance/sqlite");
    const POSTGRES_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
        diesel_migrations::embed_migrations!("../migrations/insurance/postgres");
    const AUDIT_TABLES: crate::db::Migrations =
        crate::db::Migrations { sqlite: || SQLITE_MIGRATIONS, postgres: || POSTGRES_MIGRATIONS };

    async fn store() -> (tempfile::TempDir, AuditStore) {
        let dir = tempfile::tempdir().unwrap();
        let db =
            Db::connect(&format!("sqlite://{}", dir.path().join("a.db").display()), &PoolOptions::default()).unwrap();
        db.migrate(AUDIT_TABLES).await.unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        (dir, AuditStore::new(db, clock))
    }

    #[tokio::test]
    async fn concurrent_records_form_one_unforked_chain() {
        let (_dir, audit) = store().await;
        let person = Uuid::now_v7();
        let calls = (0..200).map(|i| {
            let audit = audit.clone();
            async move {
                let partner = if i % 2 == 0 { "bank" } else { "mini-program" };
                audit.record(partner, "/m/GetPerson", person, Code::Ok).await;
            }
        });
        futures::future::join_all(calls).await;
        assert_eq!(verify_chain(&audit.db).await.unwrap(), ChainVerdict::Intact { rows: 200 });
        let page = audit.history(person, None, 10).await.unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), (191..=200).rev().collect::<Vec<_>>());
        let next = audit.history(person, Some(191), 300).await.unwrap();
        assert_eq!(next.len(), 190);
        assert!(audit.history(Uuid::now_v7(), None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_edited_row_and_a_removed_tail_are_found() {
        let (_dir, audit) = store().await;
        let person = Uuid::now_v7();
        for _ in 0..5 {
            audit.record("bank", "/m/GetPerson", person, Code::Ok).await;
        }
        assert_eq!(verify_chain(&audit.db).await.unwrap(), ChainVerdict::Intact { rows: 5 });
        audit
            .db
            .run(|conn| {
                diesel::update(audit_log::table.find(3i64)).set(audit_log::partner_id.eq("ops")).execute(conn)?;
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
        assert_eq!(
            verify_chain(&audit.db).await.unwrap(),
            ChainVerdict::Broken { seq: 3, fault: ChainFault::RowHashMismatch }
        );
        audit
            .db
            .run(|conn| {
                diesel::update(audit_log::table.find(3i64)).set(audit_log::partner_id.eq("bank")).execute(conn)?;
                diesel::delete(audit_log::table.find(5i64)).execute(conn)?;
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
        assert_eq!(
            verify_chain(&audit.db).await.unwrap(),
            ChainVerdict::Broken { seq: 5, fault: ChainFault::HeadMismatch }
        );
    }
}
