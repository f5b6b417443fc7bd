//! The audit log at rest (docs/architecture.md#who-may-call-what): one sealed row per call that
//! read or changed a person's data, in the database of the service that served the call. What is
//! computed is `super::seal`'s and `super::merkle`'s; this module reads and writes.
//!
//! Appends: [`AuditStore::record`] hands its row to one of [`LANES`] writer tasks (by partition);
//! each writes every row waiting at that moment in one transaction (group commit), locking
//! only the heads of the partitions it touches (in partition order, so two writers never
//! deadlock), on PostgreSQL with `SELECT ... FOR UPDATE`. Rows of different partitions, from
//! different lanes or replicas, do not wait for each other on PostgreSQL. On SQLite every write
//! shares the database's one writer anyway, so partitions would buy no parallelism there and
//! the log has one ([`partitions_for`]): its `(part, idx)` index then grows at its right edge
//! instead of at 64 places, and each group commit writes one index page to the WAL instead of
//! one per partition touched (docs/benchmarks.md, "Issue 13: the audit budget"). There, too,
//! the head is read once and written once per batch of the database's writer thread, not per
//! audited call (`batch_head`).
//!
//! Checkpoints: [`AuditStore::spawn_checkpointer`] seals, every few seconds, each partition that
//! grew: it re-checks the new rows' MACs, extends the partition's Merkle tree from the last
//! checkpoint's frontier, signs the new head and stores it with the consistency proof. The
//! checkpoint's primary key (partition, size) and `UNIQUE (part, prev_size)` make concurrent
//! checkpointers (replicas) safe: the loser's insert fails and it moves on.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    ApiResult,
    clock::SharedClock,
    db::{
        Backend, CachedSql, Db, DbConnection, DbError, DbUuid, WriterBatch, before_commit, is_unique_violation,
        write_transaction, writer_batch,
    },
};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::{
    IntoSql,
    sql_types::{BigInt, Binary, Integer, Text, Timestamp},
};
use ed25519_dalek::VerifyingKey;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::chain::{AuditFields, ChainFault, ChainWalk, outcome_name};
use super::keys::{AuditKeys, CurrentAuditKey};
use super::merkle::{Frontier, Hash, empty_root, extend, verify_consistency};
use super::schema::{audit_chain_head_v1, audit_checkpoint, audit_log, audit_log_v1, audit_partition};
use super::seal::{
    Checkpoint, MacKey, PARTITIONS, RowFields, checkpoint_signature_valid, mac_matches, partition_of, proof_from_bytes,
    row_leaf, sign_checkpoint,
};

/// Writer tasks per process at most; partition `p` is written by lane `p % lanes`.
pub const LANES: usize = 4;

/// Partitions new rows are spread over on `backend`: [`PARTITIONS`] on PostgreSQL, where
/// appends to different partitions lock different heads and run in parallel; one on SQLite,
/// whose one writer serialises every append whatever the partition. Rows already written keep
/// their partition (the verifier reads each row's stored `part`), so a log written with another
/// count stays valid; its other partitions just stop growing.
pub fn partitions_for(backend: Backend) -> i32 {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => PARTITIONS,
    }
}

/// Rows written per transaction at most.
const MAX_BATCH: usize = 512;
/// Rows waiting per lane at most; beyond, callers wait to enqueue.
const QUEUE_CAPACITY: usize = 4096;
/// Rows per INSERT statement (SQLite allows 32766 bound parameters; a row binds 9).
const INSERT_CHUNK: usize = 256;
/// Rows read per query when verifying or checkpointing.
const PAGE: i64 = 1000;

/// One row to append.
#[derive(Debug, Clone)]
struct NewAuditRow {
    seq: Option<i64>,
    part: i32,
    partner_id: String,
    method: String,
    person_id: String,
    outcome: String,
    recorded_at: NaiveDateTime,
}

impl NewAuditRow {
    /// A new row (its `seq` from the database) in `person_id`'s partition of `partitions`.
    fn new(
        partitions: i32,
        partner_id: &str,
        method: &str,
        person_id: Uuid,
        outcome: tonic::Code,
        recorded_at: NaiveDateTime,
    ) -> Self {
        let person_id = person_id.to_string();
        NewAuditRow {
            seq: None,
            part: partition_of(&person_id, partitions),
            partner_id: partner_id.to_owned(),
            method: method.to_owned(),
            person_id,
            outcome: outcome_name(outcome).to_owned(),
            recorded_at,
        }
    }
}

struct Pending {
    row: NewAuditRow,
    done: oneshot::Sender<Result<(), String>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

/// One recorded call, as a person's access history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The service database's reading order (not sealed).
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

/// Counters of this process's appends (tests and `medins-bench` read them).
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Rows appended.
    pub rows: AtomicU64,
    /// Transactions that appended them.
    pub transactions: AtomicU64,
    /// Sum over transactions of the partitions each touched.
    pub partitions_touched: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
}

/// The audit log of one service's database. Cheap to clone; clones share the writers.
#[derive(Clone, Debug)]
pub struct AuditStore {
    db: Db,
    clock: SharedClock,
    service: &'static str,
    keys: AuditKeys,
    partitions: i32,
    lanes: Arc<Vec<mpsc::Sender<Pending>>>,
    stats: Arc<AuditStats>,
}

impl AuditStore {
    /// A store over `db` for `service` (`identity-svc` or `insurance-svc`: part of every MAC and
    /// checkpoint); starts its writer tasks, so call it inside a tokio runtime. The writers end
    /// when the last clone is dropped.
    pub fn new(db: Db, clock: SharedClock, service: &'static str, keys: AuditKeys) -> Self {
        let stats = Arc::new(AuditStats::default());
        let partitions = partitions_for(db.backend());
        let lanes = (0..LANES.min(partitions as usize))
            .map(|_| {
                let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
                tokio::spawn(write_loop(db.clone(), service, keys.clone(), stats.clone(), receiver));
                queue
            })
            .collect();
        Self { db, clock, service, keys, partitions, lanes: Arc::new(lanes), stats }
    }

    /// How many partitions this process spreads new rows over ([`partitions_for`]).
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The partition this process appends `person_id`'s rows to.
    pub fn partition_of(&self, person_id: &str) -> i32 {
        partition_of(person_id, self.partitions)
    }

    /// The service whose log this is.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The keys.
    pub fn keys(&self) -> &AuditKeys {
        &self.keys
    }

    /// Append counters of this process.
    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Appends a row for a call by `partner_id` to `method` about `person_id` that ended with
    /// `outcome`, and waits until it is committed. A failure to write is logged (never with
    /// personal data), not returned: the call it records has already happened.
    pub async fn record(&self, partner_id: &str, method: &str, person_id: Uuid, outcome: tonic::Code) {
        let row = NewAuditRow::new(self.partitions, partner_id, method, person_id, outcome, self.clock.stored_now());
        if let Err(error) = self.enqueue(row).await {
            tracing::error!(%error, partner = partner_id, method, "audit row could not be written");
        }
    }

    /// The row of a call by `partner_id` to `method`, to be appended by the call's own write
    /// transaction once it knows whose data it touched ([`InlineAudit::append`]): a call that
    /// writes anyway (a settlement, a redemption) then commits its row with its change, instead
    /// of waiting for a second transaction. A call whose transaction does not commit records
    /// its outcome with [`AuditStore::record`] as any other.
    pub fn inline(&self, partner_id: &str, method: &str) -> InlineAudit {
        InlineAudit {
            service: self.service,
            partitions: self.partitions,
            key: self.keys.current(),
            partner_id: partner_id.to_owned(),
            method: method.to_owned(),
            recorded_at: self.clock.stored_now(),
        }
    }

    async fn enqueue(&self, row: NewAuditRow) -> Result<(), String> {
        let lane = &self.lanes[row.part as usize % self.lanes.len()];
        let (done, written) = oneshot::channel();
        match lane.send(Pending { row, done }).await {
            Ok(()) => written.await.unwrap_or_else(|_| Err("audit writer stopped".to_owned())),
            Err(_) => Err("audit writer stopped".to_owned()),
        }
    }

    /// The person's recorded calls, newest first: at most `limit`, with `seq` below `before`
    /// when given.
    pub async fn history(&self, person_id: Uuid, before: Option<i64>, limit: i64) -> ApiResult<Vec<AuditEntry>> {
        self.db
            .run(move |conn| {
                let mut query = audit_log::table
                    .filter(audit_log::person_id.eq(DbUuid(person_id)))
                    .order(audit_log::seq.desc())
                    .limit(limit)
                    .select(ENTRY_COLUMNS)
                    .into_boxed();
                if let Some(before) = before {
                    query = query.filter(audit_log::seq.lt(before));
                }
                Ok(query.load::<EntryRow>(conn)?.into_iter().map(entry).collect())
            })
            .await
    }

    /// The person's recorded calls in time order, newest first: at most `limit`, strictly
    /// before the position `(recorded_at, seq)` when given (the merged access history pages by
    /// time across both services).
    pub async fn history_by_time(
        &self,
        person_id: Uuid,
        before: Option<(NaiveDateTime, i64)>,
        limit: i64,
    ) -> ApiResult<Vec<AuditEntry>> {
        self.db
            .run(move |conn| {
                let mut query = audit_log::table
                    .filter(audit_log::person_id.eq(DbUuid(person_id)))
                    .order((audit_log::recorded_at.desc(), audit_log::seq.desc()))
                    .limit(limit)
                    .select(ENTRY_COLUMNS)
                    .into_boxed();
                if let Some((at, seq)) = before {
                    query = query.filter(
                        audit_log::recorded_at.lt(at).or(audit_log::recorded_at.eq(at).and(audit_log::seq.lt(seq))),
                    );
                }
                Ok(query.load::<EntryRow>(conn)?.into_iter().map(entry).collect())
            })
            .await
    }

    /// Moves the rows of the first format's hash chain (`audit_log_v1`, left by the migration)
    /// into the sealed log, keeping their `seq` and times, if that chain verifies; returns how
    /// many. A broken old chain is left where it is, logged, and reported by `medins audit
    /// verify`: re-sealing it would launder the tampering.
    pub async fn reseal_legacy(&self) -> Result<usize, DbError> {
        let rows = self
            .db
            .run(|conn| {
                let verdict = walk_legacy(conn)?;
                if !matches!(verdict, ChainVerdict::Intact { .. }) {
                    return Ok::<_, DbError>(Err(verdict));
                }
                let rows: Vec<LegacyRow> =
                    audit_log_v1::table.order(audit_log_v1::seq.asc()).select(LegacyRow::as_select()).load(conn)?;
                Ok(Ok(rows))
            })
            .await?;
        let rows = match rows {
            Ok(rows) => rows,
            Err(verdict) => {
                tracing::error!(?verdict, "the first-format audit chain is broken; its rows are not re-sealed");
                return Ok(0);
            }
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let count = rows.len();
        let new_rows: Vec<NewAuditRow> = rows
            .into_iter()
            .map(|row| NewAuditRow {
                seq: Some(row.seq),
                part: partition_of(&row.person_id, self.partitions),
                partner_id: row.partner_id,
                method: row.method,
                person_id: row.person_id,
                outcome: row.outcome,
                recorded_at: row.recorded_at,
            })
            .collect();
        let key = self.keys.current();
        let service = self.service;
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    // Another replica may have moved them meanwhile.
                    let waiting: i64 = audit_log_v1::table.count().get_result(conn)?;
                    if waiting as usize != new_rows.len() {
                        return Ok::<_, DbError>(());
                    }
                    for chunk in new_rows.chunks(MAX_BATCH) {
                        append(conn, service, &key, chunk)?;
                    }
                    diesel::delete(audit_log_v1::table).execute(conn)?;
                    diesel::delete(audit_chain_head_v1::table).execute(conn)?;
                    Ok(())
                })
            })
            .await?;
        tracing::info!(rows = count, "first-format audit rows re-sealed");
        Ok(count)
    }

    /// Seals every partition that grew since its last checkpoint; returns how many checkpoints
    /// were written (by this call; a partition another replica sealed first is skipped).
    pub async fn checkpoint_now(&self) -> Result<usize, DbError> {
        self.keys.reload_if_changed();
        let key = self.keys.current();
        let macs = self.keys.all();
        let service = self.service;
        let created_at = self.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let prepared = self
            .db
            .run(move |conn| {
                let heads: Vec<(i32, i64)> = audit_partition::table
                    .select((audit_partition::part, audit_partition::size))
                    .order(audit_partition::part.asc())
                    .load(conn)?;
                let mut prepared = Vec::new();
                for (part, size) in heads {
                    if let Some(new) = prepare_checkpoint(conn, service, &key, &macs, part, size, &created_at)? {
                        prepared.push(new);
                    }
                }
                Ok::<_, DbError>(prepared)
            })
            .await?;
        if prepared.is_empty() {
            return Ok(0);
        }
        let written = self
            .db
            .write(move |conn| {
                let mut written = 0;
                for checkpoint in prepared {
                    let inserted = write_transaction(conn, |conn| {
                        diesel::insert_into(audit_checkpoint::table).values(&checkpoint).execute(conn)
                    });
                    match inserted {
                        Ok(_) => written += 1,
                        // Another replica sealed this partition first: its checkpoint stands.
                        Err(error) if is_unique_violation(&error) => {}
                        Err(error) => return Err(DbError::from(error)),
                    }
                }
                Ok::<_, DbError>(written)
            })
            .await?;
        self.stats.checkpoints.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    /// Checkpoints every `interval` until the task is aborted. Failures are logged and retried
    /// at the next tick.
    pub fn spawn_checkpointer(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = store.checkpoint_now().await {
                    tracing::warn!(%error, "audit checkpoint failed; retried at the next tick");
                }
            }
        })
    }
}

/// A call's audit row waiting for the call's own write transaction; see [`AuditStore::inline`].
#[derive(Clone)]
pub struct InlineAudit {
    service: &'static str,
    partitions: i32,
    key: Arc<CurrentAuditKey>,
    partner_id: String,
    method: String,
    recorded_at: NaiveDateTime,
}

impl std::fmt::Debug for InlineAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineAudit").field("method", &self.method).finish_non_exhaustive()
    }
}

impl InlineAudit {
    /// Appends the row for `person_id` with `outcome`, sealed as [`AuditStore::record`] seals
    /// it, inside the caller's write transaction: it commits or rolls back with the call's
    /// change.
    pub fn append(&self, conn: &mut DbConnection, person_id: Uuid, outcome: tonic::Code) -> Result<(), DbError> {
        let row =
            NewAuditRow::new(self.partitions, &self.partner_id, &self.method, person_id, outcome, self.recorded_at);
        append(conn, self.service, &self.key, std::slice::from_ref(&row)).map(|_| ())
    }
}

type EntryRow = (i64, String, String, String, NaiveDateTime);
const ENTRY_COLUMNS: (
    audit_log::seq,
    audit_log::partner_id,
    audit_log::method,
    audit_log::outcome,
    audit_log::recorded_at,
) = (audit_log::seq, audit_log::partner_id, audit_log::method, audit_log::outcome, audit_log::recorded_at);

fn entry((seq, partner_id, method, outcome, recorded_at): EntryRow) -> AuditEntry {
    AuditEntry { seq, partner_id, method, outcome, recorded_at }
}

async fn write_loop(
    db: Db,
    service: &'static str,
    keys: AuditKeys,
    stats: Arc<AuditStats>,
    mut receiver: mpsc::Receiver<Pending>,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let rows: Vec<NewAuditRow> = batch.iter().map(|pending| pending.row.clone()).collect();
        let key = keys.current();
        let result = db
            .write(move |conn| write_transaction(conn, |conn| append(conn, service, &key, &rows)))
            .await
            .map_err(|error: DbError| error.to_string());
        if let Ok(partitions) = &result {
            stats.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats.partitions_touched.fetch_add(*partitions as u64, Ordering::Relaxed);
        }
        let result = result.map(|_| ());
        for pending in batch {
            let _ = pending.done.send(result.clone());
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = audit_log)]
struct InsertRow<'a> {
    part: i32,
    idx: i64,
    partner_id: &'a str,
    method: &'a str,
    person_id: &'a str,
    outcome: &'a str,
    recorded_at: NaiveDateTime,
    key_id: &'a str,
    mac: Vec<u8>,
}

/// Appends `rows` after their partitions' heads, inside the caller's write transaction; returns
/// how many partitions it touched.
fn append(
    conn: &mut DbConnection,
    service: &'static str,
    key: &Arc<CurrentAuditKey>,
    rows: &[NewAuditRow],
) -> Result<usize, DbError> {
    let mut by_part: BTreeMap<i32, Vec<&NewAuditRow>> = BTreeMap::new();
    for row in rows {
        by_part.entry(row.part).or_default().push(row);
    }
    // On SQLite's writer thread the heads are kept for the batch (`batch_head`).
    let batch = match conn {
        DbConnection::Sqlite(_) => writer_batch(),
        DbConnection::Postgres(_) => None,
    };
    let mut inserts = Vec::with_capacity(rows.len());
    let mut kept_seqs = Vec::new();
    for (&part, rows) in &by_part {
        let mut size = match batch {
            Some(batch) => batch_head(conn, service, key, part, batch)?,
            None => lock_partition(conn, service, key, part)?,
        };
        for row in rows {
            let fields = RowFields {
                part,
                idx: size,
                partner_id: &row.partner_id,
                method: &row.method,
                person_id: &row.person_id,
                outcome: &row.outcome,
                recorded_at: row.recorded_at,
            };
            let mac = key.mac.row_mac(service, &row_leaf(&fields)).to_vec();
            kept_seqs.push(row.seq);
            inserts.push(InsertRow {
                part,
                idx: size,
                partner_id: &row.partner_id,
                method: &row.method,
                person_id: &row.person_id,
                outcome: &row.outcome,
                recorded_at: row.recorded_at,
                key_id: &key.kid,
                mac,
            });
            size += 1;
        }
        if batch.is_some() {
            // Written once, before the batch commits (`store_batch_heads`).
            BATCH_HEADS.with_borrow_mut(|heads| {
                if let Some(head) = heads.get_mut(&part) {
                    head.next = size;
                    head.key = key.clone();
                }
            });
            continue;
        }
        // Kept prepared (diesel prepares every UPDATE again).
        CachedSql::new(
            "UPDATE audit_partition SET size = ?, key_id = ?, head_mac = ? WHERE part = ?",
            (
                size.into_sql::<BigInt>(),
                key.kid.as_str().into_sql::<Text>(),
                key.mac.head_mac(service, part, size).to_vec().into_sql::<Binary>(),
                part.into_sql::<Integer>(),
            ),
        )
        .execute(conn)?;
    }
    if kept_seqs.iter().all(Option::is_none) {
        // New rows, `seq` from the database. PostgreSQL: one statement per chunk (one round
        // trip). SQLite: one kept-prepared statement per row, since diesel runs a SQLite batch
        // insert as a statement per row anyway, each prepared again, inside a savepoint of its own.
        match conn {
            DbConnection::Sqlite(_) => {
                for row in &inserts {
                    CachedSql::new(
                        "INSERT INTO audit_log (part, idx, partner_id, method, person_id, outcome, recorded_at, \
                         key_id, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            row.part.into_sql::<Integer>(),
                            row.idx.into_sql::<BigInt>(),
                            row.partner_id.into_sql::<Text>(),
                            row.method.into_sql::<Text>(),
                            row.person_id.into_sql::<Text>(),
                            row.outcome.into_sql::<Text>(),
                            row.recorded_at.into_sql::<Timestamp>(),
                            row.key_id.into_sql::<Text>(),
                            row.mac.as_slice().into_sql::<Binary>(),
                        ),
                    )
                    .execute(conn)?;
                }
            }
            DbConnection::Postgres(pg) => {
                for chunk in inserts.chunks(INSERT_CHUNK) {
                    diesel::insert_into(audit_log::table).values(chunk).execute(pg)?;
                }
            }
        }
    } else {
        // Re-sealed first-format rows keep their `seq`.
        for (insert, seq) in inserts.iter().zip(kept_seqs) {
            match seq {
                Some(seq) => {
                    diesel::insert_into(audit_log::table).values((audit_log::seq.eq(seq), insert)).execute(conn)?
                }
                None => diesel::insert_into(audit_log::table).values(insert).execute(conn)?,
            };
        }
    }
    Ok(by_part.len())
}

/// A partition head as the SQLite writer's current batch has moved it, not yet written.
struct BatchHead {
    /// The writer batch ([`WriterBatch::id`]) it belongs to.
    batch: u64,
    /// [`WriterBatch::rollbacks`] when `next` was last known right.
    rollbacks: u64,
    service: &'static str,
    key: Arc<CurrentAuditKey>,
    /// The stored size when the batch first appended to the partition.
    start: i64,
    /// The position of the next row.
    next: i64,
}

thread_local! {
    /// The heads the SQLite writer thread's current batch appended to, by partition (one
    /// writer thread per database, so per database). See [`batch_head`].
    static BATCH_HEADS: RefCell<BTreeMap<i32, BatchHead>> = const { RefCell::new(BTreeMap::new()) };
}

/// The next position in `part` for an append in the SQLite writer's batch `batch`. SQLite has
/// one writer, and on it every write of a batch runs on this thread, so the head needs reading
/// only once per batch and writing once, just before the batch commits ([`store_batch_heads`],
/// a `db::before_commit` hook), instead of a `SELECT` and an `UPDATE` (and a head MAC) per
/// audited call, each journaled again by the call's savepoint (docs/benchmarks.md, "Issue 13:
/// the audit budget (session 4)"). The head is still written in the same transaction as the
/// rows, so a crash keeps both or neither.
///
/// A savepoint rolled back since the last append (a write of the batch failed) may have taken
/// rows of this batch with it; the next position is then read back from the rows: after the
/// last row left, or the stored size if none of the batch's rows is left (never below it, so a
/// cut-off end still shows as a gap).
fn batch_head(
    conn: &mut DbConnection,
    service: &'static str,
    key: &Arc<CurrentAuditKey>,
    part: i32,
    batch: WriterBatch,
) -> Result<i64, DbError> {
    let known = BATCH_HEADS
        .with_borrow(|heads| heads.get(&part).filter(|h| h.batch == batch.id).map(|h| (h.rollbacks, h.start, h.next)));
    match known {
        Some((rollbacks, _, next)) if rollbacks == batch.rollbacks => Ok(next),
        Some((_, start, _)) => {
            let next = start.max(next_position(conn, part)?);
            BATCH_HEADS.with_borrow_mut(|heads| {
                if let Some(head) = heads.get_mut(&part) {
                    head.rollbacks = batch.rollbacks;
                    head.next = next;
                }
            });
            Ok(next)
        }
        None => {
            let start = lock_partition(conn, service, key, part)?;
            BATCH_HEADS.with_borrow_mut(|heads| {
                heads.retain(|_, head| head.batch == batch.id);
                heads.insert(
                    part,
                    BatchHead {
                        batch: batch.id,
                        rollbacks: batch.rollbacks,
                        service,
                        key: key.clone(),
                        start,
                        next: start,
                    },
                );
            });
            before_commit("audit partition heads", Box::new(store_batch_heads));
            Ok(start)
        }
    }
}

/// One past the last row of `part` (0 when it has none).
fn next_position(conn: &mut DbConnection, part: i32) -> Result<i64, DbError> {
    let last: Option<i64> =
        audit_log::table.filter(audit_log::part.eq(part)).select(diesel::dsl::max(audit_log::idx)).first(conn)?;
    Ok(last.map_or(0, |last| last + 1))
}

/// Writes the heads the finishing writer batch moved (the `db::before_commit` hook of
/// [`batch_head`]). An upsert: the head row may have been created by a write that was rolled
/// back.
fn store_batch_heads(conn: &mut DbConnection) -> Result<(), DbError> {
    let Some(batch) = writer_batch() else { return Ok(()) };
    let heads: Vec<(i32, BatchHead)> = BATCH_HEADS.with_borrow_mut(std::mem::take).into_iter().collect();
    for (part, head) in heads {
        if head.batch != batch.id {
            continue;
        }
        let size =
            if head.rollbacks == batch.rollbacks { head.next } else { head.start.max(next_position(conn, part)?) };
        if size == head.start {
            continue;
        }
        CachedSql::new(
            "INSERT INTO audit_partition (part, size, key_id, head_mac) VALUES (?, ?, ?, ?) \
             ON CONFLICT (part) DO UPDATE SET size = excluded.size, key_id = excluded.key_id, \
             head_mac = excluded.head_mac",
            (
                part.into_sql::<Integer>(),
                size.into_sql::<BigInt>(),
                head.key.kid.as_str().into_sql::<Text>(),
                head.key.mac.head_mac(head.service, part, size).to_vec().into_sql::<Binary>(),
            ),
        )
        .execute(conn)?;
    }
    Ok(())
}

/// Holds the head of `part` for this transaction (creating it empty on first use); returns its
/// size.
fn lock_partition(conn: &mut DbConnection, service: &str, key: &CurrentAuditKey, part: i32) -> Result<i64, DbError> {
    let head = audit_partition::table.find(part).select(audit_partition::size);
    let existing: Option<i64> = match conn {
        // SQLite: BEGIN IMMEDIATE already holds the database's write lock.
        DbConnection::Sqlite(_) => head.first(conn).optional()?,
        DbConnection::Postgres(pg) => head.for_update().first(pg).optional()?,
    };
    if let Some(size) = existing {
        return Ok(size);
    }
    // The partition's first row: create its head (another writer may be doing the same).
    let empty = (
        audit_partition::part.eq(part),
        audit_partition::size.eq(0i64),
        audit_partition::key_id.eq(key.kid.clone()),
        audit_partition::head_mac.eq(key.mac.head_mac(service, part, 0).to_vec()),
    );
    Ok(match conn {
        DbConnection::Postgres(pg) => {
            // The upsert takes the row lock even when the row exists; it is held until commit.
            diesel::insert_into(audit_partition::table)
                .values(empty)
                .on_conflict(audit_partition::part)
                .do_update()
                .set(audit_partition::size.eq(audit_partition::size))
                .returning(audit_partition::size)
                .get_result(pg)?
        }
        DbConnection::Sqlite(sqlite) => {
            diesel::insert_or_ignore_into(audit_partition::table).values(empty).execute(sqlite)?;
            audit_partition::table.find(part).select(audit_partition::size).first(sqlite)?
        }
    })
}

#[derive(Queryable, Selectable, Debug, Clone)]
#[diesel(table_name = audit_log)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct StoredRow {
    seq: i64,
    part: i32,
    idx: i64,
    partner_id: String,
    method: String,
    person_id: String,
    outcome: String,
    recorded_at: NaiveDateTime,
    key_id: String,
    mac: Vec<u8>,
}

impl StoredRow {
    fn fields_at(&self, idx: i64) -> RowFields<'_> {
        RowFields {
            part: self.part,
            idx,
            partner_id: &self.partner_id,
            method: &self.method,
            person_id: &self.person_id,
            outcome: &self.outcome,
            recorded_at: self.recorded_at,
        }
    }

    /// Whether the row's MAC is right for position `idx`.
    fn sealed_at(&self, service: &str, macs: &HashMap<String, (MacKey, VerifyingKey)>, idx: i64) -> bool {
        let Some((mac, _)) = macs.get(&self.key_id) else { return false };
        mac_matches(&mac.row_mac(service, &row_leaf(&self.fields_at(idx))), &self.mac)
    }
}

#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = audit_checkpoint)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct CheckpointRow {
    part: i32,
    tree_size: i64,
    root: Vec<u8>,
    prev_size: i64,
    prev_root: Vec<u8>,
    proof: Vec<u8>,
    frontier: Vec<u8>,
    created_at: String,
    key_id: String,
    signature: Vec<u8>,
}

impl CheckpointRow {
    fn statement(&self, service: &str) -> Option<Checkpoint> {
        Some(Checkpoint {
            service: service.to_owned(),
            part: self.part,
            tree_size: self.tree_size,
            root: self.root.as_slice().try_into().ok()?,
            prev_size: self.prev_size,
            prev_root: self.prev_root.as_slice().try_into().ok()?,
            created_at: self.created_at.clone(),
            key_id: self.key_id.clone(),
        })
    }
}

fn rows_from(conn: &mut DbConnection, part: i32, from: i64, to: i64) -> Result<Vec<StoredRow>, DbError> {
    Ok(audit_log::table
        .filter(audit_log::part.eq(part))
        .filter(audit_log::idx.ge(from))
        .filter(audit_log::idx.lt(to))
        .order(audit_log::idx.asc())
        .limit(PAGE)
        .select(StoredRow::as_select())
        .load(conn)?)
}

/// The next checkpoint of `part` (head size `size`), or `None` if it has not grown or a new
/// row does not carry a valid MAC (logged: sealing it would bless the tampering).
fn prepare_checkpoint(
    conn: &mut DbConnection,
    service: &str,
    key: &CurrentAuditKey,
    macs: &HashMap<String, (MacKey, VerifyingKey)>,
    part: i32,
    size: i64,
    created_at: &str,
) -> Result<Option<CheckpointRow>, DbError> {
    let last: Option<CheckpointRow> = audit_checkpoint::table
        .filter(audit_checkpoint::part.eq(part))
        .order(audit_checkpoint::tree_size.desc())
        .select(CheckpointRow::as_select())
        .first(conn)
        .optional()?;
    let (prev_size, prev_root, frontier) = match &last {
        Some(last) => {
            match (Frontier::from_bytes(last.tree_size as u64, &last.frontier), last.root.as_slice().try_into()) {
                (Some(frontier), Ok(root)) => (last.tree_size, root, frontier),
                _ => {
                    tracing::error!(
                        part,
                        size = last.tree_size,
                        "stored audit checkpoint is malformed; not extending it"
                    );
                    return Ok(None);
                }
            }
        }
        None => (0, empty_root(), Frontier::new()),
    };
    if size <= prev_size {
        return Ok(None);
    }
    let mut leaves: Vec<Hash> = Vec::with_capacity((size - prev_size) as usize);
    let mut next = prev_size;
    while next < size {
        let rows = rows_from(conn, part, next, size)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if row.idx != next || !row.sealed_at(service, macs, next) {
                tracing::error!(part, idx = next, "audit row fails its seal; partition not checkpointed");
                return Ok(None);
            }
            leaves.push(row_leaf(&row.fields_at(next)));
            next += 1;
        }
    }
    if next != size {
        tracing::error!(part, idx = next, "audit rows missing below the partition head; partition not checkpointed");
        return Ok(None);
    }
    let (frontier, root, proof) = extend(&frontier, &leaves);
    let statement = Checkpoint {
        service: service.to_owned(),
        part,
        tree_size: size,
        root,
        prev_size,
        prev_root,
        created_at: created_at.to_owned(),
        key_id: key.kid.clone(),
    };
    let signature = sign_checkpoint(&key.signing, &statement);
    Ok(Some(CheckpointRow {
        part,
        tree_size: size,
        root: root.to_vec(),
        prev_size,
        prev_root: prev_root.to_vec(),
        proof: proof.concat(),
        frontier: frontier.to_bytes(),
        created_at: statement.created_at,
        key_id: statement.key_id,
        signature: signature.to_vec(),
    }))
}

/// What is wrong with a partition, at its first wrong row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The row at `idx` is not the row sealed there: its fields or MAC were changed.
    Changed,
    /// The row at `idx` was removed (a gap, the rows after it renumbered, or the end cut off).
    Deleted,
    /// The row at `idx` was not written by medins: inserted (the rows after it renumbered, or
    /// beyond the sealed head).
    Inserted,
    /// The partition head (row count and its MAC) was changed.
    HeadChanged,
    /// A checkpoint's signature, chain or consistency proof does not hold.
    CheckpointInvalid(&'static str),
    /// The rows sealed by a checkpoint no longer give its tree head (rows rewritten with the
    /// MAC key; the signing key held).
    SealedRowsDiffer {
        /// The checkpoint's size.
        tree_size: i64,
    },
    /// Rows of the first format wait to be re-sealed and their hash chain is broken.
    LegacyChainBroken(ChainFault),
}

/// One finding of [`verify_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Partition (`-1` for the first-format chain).
    pub part: i32,
    /// Position in the partition (or, for the first-format chain, its `seq`).
    pub idx: i64,
    /// The row's `seq`, when the row exists.
    pub seq: Option<i64>,
    /// What.
    pub kind: FaultKind,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.kind {
            FaultKind::Changed => "changed (its MAC does not match its fields)".to_owned(),
            FaultKind::Deleted => "deleted".to_owned(),
            FaultKind::Inserted => "inserted (not sealed by medins)".to_owned(),
            FaultKind::HeadChanged => "partition head changed (its MAC does not match)".to_owned(),
            FaultKind::CheckpointInvalid(why) => format!("checkpoint invalid: {why}"),
            FaultKind::SealedRowsDiffer { tree_size } => {
                format!("rows sealed by the checkpoint of size {tree_size} were rewritten")
            }
            FaultKind::LegacyChainBroken(fault) => format!("first-format chain broken: {}", fault.description()),
        };
        match (self.part, self.seq) {
            (-1, _) => write!(f, "first-format row {}: {what}", self.idx),
            (part, Some(seq)) => write!(f, "partition {part} row {} (seq {seq}): {what}", self.idx),
            (part, None) => write!(f, "partition {part} row {}: {what}", self.idx),
        }
    }
}

/// What [`verify_log`] found in one service's database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogReport {
    /// Rows checked.
    pub rows: i64,
    /// Partitions checked.
    pub partitions: usize,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Rows not yet covered by a checkpoint (covered by their MACs).
    pub unsealed_rows: i64,
    /// The first fault of each faulty partition, by partition.
    pub faults: Vec<Fault>,
}

/// Checks every partition of a service's audit log against its MACs and signed checkpoints and
/// names the first changed, deleted or inserted row of each. `keys` must hold every key that
/// sealed the log (the key file keeps retired keys). Reads in pages.
pub async fn verify_log(db: &Db, service: &'static str, keys: &AuditKeys) -> Result<LogReport, DbError> {
    let keys = keys.all();
    db.run(move |conn| {
        let mut report = LogReport::default();
        if let ChainVerdict::Broken { seq, fault } = walk_legacy(conn)? {
            report.faults.push(Fault { part: -1, idx: seq, seq: Some(seq), kind: FaultKind::LegacyChainBroken(fault) });
        }
        let heads: Vec<(i32, i64, String, Vec<u8>)> = audit_partition::table
            .select((audit_partition::part, audit_partition::size, audit_partition::key_id, audit_partition::head_mac))
            .load(conn)?;
        let mut parts: BTreeMap<i32, Option<(i64, String, Vec<u8>)>> =
            heads.into_iter().map(|(part, size, kid, mac)| (part, Some((size, kid, mac)))).collect();
        let row_parts: Vec<i32> = audit_log::table.select(audit_log::part).distinct().load(conn)?;
        for part in row_parts {
            parts.entry(part).or_insert(None);
        }
        for (part, head) in parts {
            report.partitions += 1;
            if let Some(fault) = verify_partition(conn, service, &keys, part, head, &mut report)? {
                report.faults.push(fault);
            }
        }
        Ok(report)
    })
    .await
}

fn verify_partition(
    conn: &mut DbConnection,
    service: &str,
    keys: &HashMap<String, (MacKey, VerifyingKey)>,
    part: i32,
    head: Option<(i64, String, Vec<u8>)>,
    report: &mut LogReport,
) -> Result<Option<Fault>, DbError> {
    let fault = |idx: i64, seq: Option<i64>, kind: FaultKind| Ok(Some(Fault { part, idx, seq, kind }));
    // The head: a size sealed under a known key.
    let head_size = match &head {
        Some((size, kid, mac)) => match keys.get(kid) {
            Some((key, _)) if mac_matches(&key.head_mac(service, part, *size), mac) => *size,
            _ => return fault(*size, None, FaultKind::HeadChanged),
        },
        None => return fault(0, None, FaultKind::HeadChanged),
    };
    // The checkpoints: signed, each extending the one before.
    let checkpoints: Vec<CheckpointRow> = audit_checkpoint::table
        .filter(audit_checkpoint::part.eq(part))
        .order(audit_checkpoint::tree_size.asc())
        .select(CheckpointRow::as_select())
        .load(conn)?;
    let (mut prev_size, mut prev_root) = (0i64, empty_root());
    for checkpoint in &checkpoints {
        report.checkpoints += 1;
        let invalid = |why| fault(checkpoint.tree_size, None, FaultKind::CheckpointInvalid(why));
        let Some(statement) = checkpoint.statement(service) else { return invalid("malformed hashes") };
        let Some((_, public)) = keys.get(&checkpoint.key_id) else { return invalid("signed by an unknown key") };
        if !checkpoint_signature_valid(public, &statement, &checkpoint.signature) {
            return invalid("signature does not verify");
        }
        if checkpoint.prev_size != prev_size || statement.prev_root != prev_root {
            return invalid("does not extend the previous checkpoint (one was removed or replaced)");
        }
        let Some(proof) = proof_from_bytes(&checkpoint.proof) else { return invalid("malformed proof") };
        if !verify_consistency(prev_size as u64, checkpoint.tree_size as u64, &prev_root, &statement.root, &proof) {
            return invalid("consistency proof from the previous checkpoint fails");
        }
        (prev_size, prev_root) = (checkpoint.tree_size, statement.root);
    }
    if prev_size > head_size {
        return fault(head_size, None, FaultKind::Deleted);
    }
    // The rows, in position order.
    let mut frontier = Frontier::new();
    let mut sealed = checkpoints.iter().peekable();
    let mut expected = 0i64;
    let mut after = -1i64;
    let mut pending: std::collections::VecDeque<StoredRow> = Default::default();
    loop {
        if pending.len() < 2 {
            let page: Vec<StoredRow> = audit_log::table
                .filter(audit_log::part.eq(part))
                .filter(audit_log::idx.gt(after))
                .order((audit_log::idx.asc(), audit_log::seq.asc()))
                .limit(PAGE)
                .select(StoredRow::as_select())
                .load(conn)?;
            if let Some(last) = page.last() {
                after = last.idx;
            }
            pending.extend(page);
        }
        let Some(row) = pending.pop_front() else { break };
        report.rows += 1;
        if row.idx < expected {
            // A second row at a position (the unique constraint was dropped).
            return fault(row.idx, Some(row.seq), FaultKind::Inserted);
        }
        if row.idx > expected {
            return fault(expected, None, FaultKind::Deleted);
        }
        if !row.sealed_at(service, keys, row.idx) {
            if pending.front().is_some_and(|next| next.sealed_at(service, keys, row.idx)) {
                // The next row belongs here: this one was slipped in and the rest renumbered.
                return fault(row.idx, Some(row.seq), FaultKind::Inserted);
            }
            if row.sealed_at(service, keys, row.idx + 1) {
                // This row belongs one further: the one before it was removed and the rest
                // renumbered.
                return fault(row.idx, None, FaultKind::Deleted);
            }
            if row.idx >= head_size {
                return fault(row.idx, Some(row.seq), FaultKind::Inserted);
            }
            return fault(row.idx, Some(row.seq), FaultKind::Changed);
        }
        if row.idx >= head_size {
            // A sealed row beyond the head: the head was set back.
            return fault(row.idx, Some(row.seq), FaultKind::HeadChanged);
        }
        frontier.push(row_leaf(&row.fields_at(row.idx)));
        expected += 1;
        while let Some(checkpoint) = sealed.next_if(|c| c.tree_size == expected) {
            if frontier.root().as_slice() != checkpoint.root.as_slice() {
                return fault(
                    checkpoint.prev_size,
                    None,
                    FaultKind::SealedRowsDiffer { tree_size: checkpoint.tree_size },
                );
            }
        }
    }
    if expected < head_size {
        return fault(expected, None, FaultKind::Deleted);
    }
    report.unsealed_rows += expected - prev_size;
    Ok(None)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_log_v1)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct LegacyRow {
    seq: i64,
    partner_id: String,
    method: String,
    person_id: String,
    outcome: String,
    recorded_at: NaiveDateTime,
    prev_hash: Vec<u8>,
    row_hash: Vec<u8>,
}

/// What a walk over the first format's chain found.
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

/// Walks the first-format chain still waiting in `audit_log_v1` (empty once re-sealed).
fn walk_legacy(conn: &mut DbConnection) -> Result<ChainVerdict, DbError> {
    let head: Option<(i64, Vec<u8>)> = audit_chain_head_v1::table
        .find(1)
        .select((audit_chain_head_v1::last_seq, audit_chain_head_v1::last_hash))
        .first(conn)
        .optional()?;
    let Some((head_seq, head_hash)) = head else {
        // Re-sealed: the head goes with the rows.
        let left: i64 = audit_log_v1::table.count().get_result(conn)?;
        return Ok(if left == 0 {
            ChainVerdict::Intact { rows: 0 }
        } else {
            ChainVerdict::Broken { seq: 1, fault: ChainFault::HeadMismatch }
        });
    };
    let mut walk = ChainWalk::default();
    let mut after = 0i64;
    loop {
        let rows: Vec<LegacyRow> = audit_log_v1::table
            .filter(audit_log_v1::seq.gt(after))
            .filter(audit_log_v1::seq.le(head_seq))
            .order(audit_log_v1::seq.asc())
            .limit(PAGE)
            .select(LegacyRow::as_select())
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
                let seq = if fault == ChainFault::SequenceGap { walk.rows() + 1 } else { row.seq };
                return Ok(ChainVerdict::Broken { seq, fault });
            }
        }
    }
    Ok(match walk.finish(head_seq, &head_hash) {
        Ok(rows) => ChainVerdict::Intact { rows },
        Err(fault) => ChainVerdict::Broken { seq: walk.rows() + 1, fault },
    })
}

/// The signed checkpoints of a service's database, oldest first per partition, for export to a
/// witness.
pub async fn load_checkpoints(db: &Db, service: &'static str) -> Result<Vec<ExportedCheckpoint>, DbError> {
    db.run(move |conn| {
        let rows: Vec<CheckpointRow> = audit_checkpoint::table
            .order((audit_checkpoint::part.asc(), audit_checkpoint::tree_size.asc()))
            .select(CheckpointRow::as_select())
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|row| ExportedCheckpoint {
                service: service.to_owned(),
                partition: row.part,
                tree_size: row.tree_size,
                root: hex::encode(&row.root),
                prev_size: row.prev_size,
                prev_root: hex::encode(&row.prev_root),
                created_at: row.created_at,
                key_id: row.key_id,
                consistency_proof: row.proof.chunks(32).map(hex::encode).collect(),
                signature: hex::encode(&row.signature),
            })
            .collect())
    })
    .await
}

/// A checkpoint as exported for a witness (README "Audit trail": the export format).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedCheckpoint {
    /// `identity-svc` or `insurance-svc`.
    pub service: String,
    /// Partition.
    pub partition: i32,
    /// Rows sealed.
    pub tree_size: i64,
    /// RFC 6962 tree head, hex.
    pub root: String,
    /// Previous checkpoint's size (0 for the first).
    pub prev_size: i64,
    /// Previous checkpoint's head, hex.
    pub prev_root: String,
    /// As signed.
    pub created_at: String,
    /// Signing key id.
    pub key_id: String,
    /// RFC 6962 consistency proof from `prev_size` to `tree_size`, hex nodes.
    pub consistency_proof: Vec<String>,
    /// Ed25519 signature of the checkpoint statement, hex.
    pub signature: String,
}

impl ExportedCheckpoint {
    /// The signed statement, if the hex fields are well formed.
    pub fn statement(&self) -> Option<Checkpoint> {
        let hash = |text: &str| -> Option<Hash> { hex::decode(text).ok()?.try_into().ok() };
        Some(Checkpoint {
            service: self.service.clone(),
            part: self.partition,
            tree_size: self.tree_size,
            root: hash(&self.root)?,
            prev_size: self.prev_size,
            prev_root: hash(&self.prev_root)?,
            created_at: self.created_at.clone(),
            key_id: self.key_id.clone(),
        })
    }

    /// Checks the signature against `key` and the consistency proof from its previous head.
    pub fn check(&self, key: &VerifyingKey) -> Result<Checkpoint, &'static str> {
        let statement = self.statement().ok_or("malformed hashes")?;
        let signature = hex::decode(&self.signature).map_err(|_| "malformed signature")?;
        if !checkpoint_signature_valid(key, &statement, &signature) {
            return Err("signature does not verify");
        }
        let proof: Vec<Hash> = self
            .consistency_proof
            .iter()
            .map(|node| hex::decode(node).ok().and_then(|b| b.try_into().ok()))
            .collect::<Option<_>>()
            .ok_or("malformed proof")?;
        if statement.prev_size < 0 || statement.tree_size <= statement.prev_size {
            return Err("sizes out of order");
        }
        if !verify_consistency(
            statement.prev_size as u64,
            statement.tree_size as u64,
            &statement.prev_root,
            &statement.root,
            &proof,
        ) {
            return Err("consistency proof fails");
        }
        Ok(statement)
    }
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
        let keys = AuditKeys::from_ring(AuditKeys::generate_ring());
        (dir, AuditStore::new(db, clock, "insurance-svc", keys))
    }

    async fn verify(audit: &AuditStore) -> LogReport {
        verify_log(&audit.db, "insurance-svc", &audit.keys).await.unwrap()
    }

    async fn sql(audit: &AuditStore, statement: &'static str) {
        audit
            .db
            .run(move |conn| {
                diesel::sql_query(statement).execute(conn)?;
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn concurrent_records_are_sealed_checkpointed_and_read_back() {
        let (_dir, audit) = store().await;
        let person = Uuid::now_v7();
        let others: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
        let calls = (0..200).map(|i| {
            let audit = audit.clone();
            let subject = if i % 2 == 0 { person } else { others[i % 20] };
            async move { audit.record("bank", "/m/GetPerson", subject, Code::Ok).await }
        });
        futures::future::join_all(calls).await;
        let report = verify(&audit).await;
        assert_eq!((report.rows, report.unsealed_rows, report.faults.clone()), (200, 200, vec![]));
        // SQLite: one partition, 200 positions without a gap (`partitions_for`).
        assert_eq!(report.partitions, 1);
        let written = audit.checkpoint_now().await.unwrap();
        assert_eq!(written, report.partitions);
        assert_eq!(audit.checkpoint_now().await.unwrap(), 0, "nothing new to seal");
        audit.record("ops", "/m/GetPerson", person, Code::NotFound).await;
        assert_eq!(audit.checkpoint_now().await.unwrap(), 1);
        let report = verify(&audit).await;
        assert_eq!((report.rows, report.unsealed_rows, report.faults), (201, 0, vec![]));
        assert_eq!(report.checkpoints, written + 1);

        let page = audit.history(person, None, 10).await.unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].outcome, "NOT_FOUND");
        assert!(page.windows(2).all(|w| w[0].seq > w[1].seq));
        let by_time = audit.history_by_time(person, None, 500).await.unwrap();
        assert_eq!(by_time.len(), 101);
        let rest = audit.history_by_time(person, Some((by_time[9].recorded_at, by_time[9].seq)), 500).await.unwrap();
        assert_eq!(rest[..], by_time[10..]);
        // Group commit: fewer transactions than rows.
        let stats = audit.stats();
        assert!(stats.transactions.load(Ordering::Relaxed) < stats.rows.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn rows_rolled_back_with_their_write_leave_no_gap_when_writes_share_a_batch() {
        // SQLite's writer keeps a partition's head in memory for a batch (`batch_head`). Writes
        // that append and then fail (their savepoint rolled back) sit in the same batches as
        // writes that commit and as group-committed rows; the log must stay gap-free with the
        // head equal to what is left.
        let (_dir, audit) = store().await;
        let person = Uuid::now_v7();
        // Hold the writer so that what follows queues up and shares batches.
        let held = audit.db.write(|_conn| {
            std::thread::sleep(Duration::from_millis(100));
            Ok::<_, DbError>(())
        });
        let mut writes = Vec::new();
        for i in 0..48 {
            let inline = audit.inline("hospital", "/m/Settle");
            writes.push(tokio::spawn({
                let db = audit.db.clone();
                async move {
                    db.write(move |conn| {
                        write_transaction(conn, |conn| {
                            inline.append(conn, person, Code::Ok)?;
                            if i % 3 == 1 {
                                // A failure after the append: the row goes with the write.
                                return Err(DbError::Query("refused after its audit row".into()));
                            }
                            inline.append(conn, person, Code::Ok)?;
                            Ok(())
                        })
                    })
                    .await
                    .is_ok()
                }
            }));
        }
        let records: Vec<_> = (0..16)
            .map(|_| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.record("ops", "/m/GetPerson", person, Code::Ok).await })
            })
            .collect();
        held.await.unwrap();
        let mut committed = 0;
        for write in writes {
            committed += usize::from(write.await.unwrap());
        }
        for record in records {
            record.await.unwrap();
        }
        assert_eq!(committed, 32);
        let rows = (committed * 2 + 16) as i64;
        let report = verify(&audit).await;
        assert_eq!((report.rows, report.faults), (rows, vec![]));
        let head: i64 = audit
            .db
            .run(|conn| audit_partition::table.find(0).select(audit_partition::size).first(conn).map_err(DbError::from))
            .await
            .unwrap();
        assert_eq!(head, rows);
        assert_eq!(audit.checkpoint_now().await.unwrap(), 1);
        audit.record("ops", "/m/GetPerson", person, Code::Ok).await;
        let report = verify(&audit).await;
        assert_eq!((report.rows, report.unsealed_rows, report.faults), (rows + 1, 1, vec![]));
    }

    #[tokio::test]
    async fn a_log_written_over_many_partitions_stays_valid_when_new_rows_go_to_one() {
        // A SQLite log written while it had PARTITIONS partitions: three persons' rows in their
        // old partitions, sealed by a checkpoint.
        let (_dir, audit) = store().await;
        let persons: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let at = audit.clock.stored_now();
        let old_rows: Vec<NewAuditRow> = persons
            .iter()
            .flat_map(|person| {
                (0..2).map(move |_| NewAuditRow::new(PARTITIONS, "bank", "/m/GetPerson", *person, Code::Ok, at))
            })
            .collect();
        let old_parts: std::collections::BTreeSet<i32> = old_rows.iter().map(|row| row.part).collect();
        let key = audit.keys.current();
        audit
            .db
            .write(move |conn| write_transaction(conn, |conn| append(conn, "insurance-svc", &key, &old_rows)))
            .await
            .unwrap();
        assert_eq!(audit.checkpoint_now().await.unwrap(), old_parts.len());
        // New rows go to partition 0, after whatever it held; the old partitions stay intact.
        for person in &persons {
            audit.record("ops", "/m/GetPerson", *person, Code::Ok).await;
        }
        let report = verify(&audit).await;
        assert_eq!(report.faults, vec![]);
        assert_eq!((report.rows, report.unsealed_rows), (9, 3));
        assert_eq!(report.partitions, old_parts.iter().chain([&0]).collect::<std::collections::BTreeSet<_>>().len());
        let new_parts: Vec<i32> = audit
            .db
            .run(|conn| {
                audit_log::table
                    .filter(audit_log::partner_id.eq("ops"))
                    .order(audit_log::seq.asc())
                    .select(audit_log::part)
                    .load(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        assert_eq!(new_parts, vec![0, 0, 0]);
        // Every person's history still lists the old and the new rows.
        for person in &persons {
            assert_eq!(audit.history(*person, None, 10).await.unwrap().len(), 3);
        }
        assert_eq!(audit.checkpoint_now().await.unwrap(), 1, "only partition 0 grew");
        assert_eq!(verify(&audit).await.faults, vec![]);
    }

    #[tokio::test]
    async fn changed_deleted_and_inserted_rows_are_named() {
        let (_dir, audit) = store().await;
        let person = Uuid::now_v7();
        for _ in 0..6 {
            audit.record("bank", "/m/GetPerson", person, Code::Ok).await;
        }
        audit.checkpoint_now().await.unwrap();
        for _ in 0..3 {
            audit.record("bank", "/m/GetPerson", person, Code::Ok).await;
        }
        let part = audit.partition_of(&person.to_string());
        assert_eq!(verify(&audit).await.faults, vec![]);
        let find = |report: LogReport| report.faults.into_iter().map(|f| (f.part, f.idx, f.kind)).collect::<Vec<_>>();

        // Sealed row 2 changed.
        sql(&audit, "UPDATE audit_log SET partner_id = 'ops' WHERE idx = 2").await;
        assert_eq!(find(verify(&audit).await), vec![(part, 2, FaultKind::Changed)]);
        sql(&audit, "UPDATE audit_log SET partner_id = 'bank' WHERE idx = 2").await;
        // Unsealed row 7 changed.
        sql(&audit, "UPDATE audit_log SET outcome = 'NOT_FOUND' WHERE idx = 7").await;
        assert_eq!(find(verify(&audit).await), vec![(part, 7, FaultKind::Changed)]);
        sql(&audit, "UPDATE audit_log SET outcome = 'OK' WHERE idx = 7").await;
        assert_eq!(verify(&audit).await.faults, vec![]);

        // Row 4 deleted; then the rest renumbered to hide the gap.
        sql(&audit, "DELETE FROM audit_log WHERE idx = 4").await;
        assert_eq!(find(verify(&audit).await), vec![(part, 4, FaultKind::Deleted)]);
        sql(&audit, "UPDATE audit_log SET idx = idx - 1 WHERE idx > 4").await;
        assert_eq!(find(verify(&audit).await), vec![(part, 4, FaultKind::Deleted)]);
    }

    /// Rows of the first format, as the migration leaves them in `audit_log_v1`.
    async fn legacy_rows(audit: &AuditStore, persons: &[Uuid]) {
        let persons = persons.to_vec();
        audit
            .db
            .run(move |conn| {
                let mut prev = super::super::chain::GENESIS_HASH.to_vec();
                let at = chrono::DateTime::from_timestamp_micros(1_795_000_000_000_000).unwrap().naive_utc();
                for (i, person) in persons.iter().enumerate() {
                    let seq = i as i64 + 1;
                    let person = person.to_string();
                    let fields = AuditFields {
                        seq,
                        partner_id: "bank",
                        method: "/m/GetPerson",
                        person_id: &person,
                        outcome: "OK",
                        recorded_at: at,
                    };
                    let hash = super::super::chain::chain_hash(&prev, &fields).to_vec();
                    diesel::insert_into(audit_log_v1::table)
                        .values((
                            audit_log_v1::seq.eq(seq),
                            audit_log_v1::partner_id.eq("bank"),
                            audit_log_v1::method.eq("/m/GetPerson"),
                            audit_log_v1::person_id.eq(&person),
                            audit_log_v1::outcome.eq("OK"),
                            audit_log_v1::recorded_at.eq(at),
                            audit_log_v1::prev_hash.eq(&prev),
                            audit_log_v1::row_hash.eq(&hash),
                        ))
                        .execute(conn)?;
                    prev = hash;
                }
                diesel::update(audit_chain_head_v1::table.find(1))
                    .set((
                        audit_chain_head_v1::last_seq.eq(persons.len() as i64),
                        audit_chain_head_v1::last_hash.eq(prev),
                    ))
                    .execute(conn)?;
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rows_of_the_first_format_are_resealed_with_their_seq_and_a_broken_chain_is_not() {
        let (_dir, audit) = store().await;
        let persons: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        legacy_rows(&audit, &persons).await;
        assert_eq!(verify(&audit).await.faults, vec![]);
        assert_eq!(audit.reseal_legacy().await.unwrap(), 5);
        assert_eq!(audit.reseal_legacy().await.unwrap(), 0, "once");
        let report = verify(&audit).await;
        assert_eq!((report.rows, report.faults), (5, vec![]));
        // New rows are numbered after them.
        audit.record("ops", "/m/GetPerson", persons[0], Code::Ok).await;
        let seqs: Vec<i64> = audit.history(persons[0], None, 10).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![6, 1]);

        // A first-format chain someone edited is left in place and reported, not laundered.
        let (_dir, audit) = store().await;
        legacy_rows(&audit, &persons).await;
        sql(&audit, "UPDATE audit_log_v1 SET partner_id = 'ops' WHERE seq = 2").await;
        assert_eq!(audit.reseal_legacy().await.unwrap(), 0);
        let faults = verify(&audit).await.faults;
        assert_eq!(faults.len(), 1);
        assert_eq!((faults[0].part, faults[0].idx), (-1, 2));
        assert!(matches!(faults[0].kind, FaultKind::LegacyChainBroken(ChainFault::RowHashMismatch)));
    }

    #[tokio::test]
    async fn inserted_rows_and_a_cut_off_end_are_named() {
        let (_dir, audit) = store().await;
        let person = Uuid::now_v7();
        for _ in 0..5 {
            audit.record("bank", "/m/GetPerson", person, Code::Ok).await;
        }
        let part = audit.partition_of(&person.to_string());
        let find = |report: LogReport| report.faults.into_iter().map(|f| (f.part, f.idx, f.kind)).collect::<Vec<_>>();
        // A row slipped in at position 2, the rest moved up (a copy of row 0 with a new time).
        sql(&audit, "UPDATE audit_log SET idx = idx + 100 WHERE idx >= 2").await;
        sql(&audit, "UPDATE audit_log SET idx = idx - 99 WHERE idx >= 102").await;
        sql(
            &audit,
            "INSERT INTO audit_log (part, idx, partner_id, method, person_id, outcome, recorded_at, key_id, mac) \
             SELECT part, 2, 'bank', method, person_id, outcome, recorded_at, key_id, mac FROM audit_log WHERE idx = 0",
        )
        .await;
        assert_eq!(find(verify(&audit).await), vec![(part, 2, FaultKind::Inserted)]);
        sql(&audit, "DELETE FROM audit_log WHERE idx = 2").await;
        sql(&audit, "UPDATE audit_log SET idx = idx - 1 WHERE idx >= 3").await;
        assert_eq!(verify(&audit).await.faults, vec![]);
        // The last row removed.
        sql(&audit, "DELETE FROM audit_log WHERE idx = 4").await;
        assert_eq!(find(verify(&audit).await), vec![(part, 4, FaultKind::Deleted)]);
    }
}
