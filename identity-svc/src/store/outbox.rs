//! The face outbox: FaceVerificationCompleted events waiting for insurance-svc.
//!
//! Rows are written by `store::face` in the transaction that ends a session. Workers (one per
//! replica) claim due rows with a lease, deliver them, and mark them delivered or schedule a
//! retry. Claiming is a conditional update checked by its affected-row count, portable across
//! both backends:
//!
//! ```sql
//! UPDATE face_outbox SET lease_owner = ?, lease_until = ?
//!  WHERE id = ? AND delivered_at IS NULL AND (lease_until IS NULL OR lease_until < now)
//! ```
//!
//! so two workers never hold the same event at once. Only the earliest undelivered event of a
//! session is ever due: a later one waits until the earlier one is delivered.
//!
//! The delivery columns (`next_attempt_at`, `lease_until`, `delivered_at`) are in the worker's
//! wall-clock time; a NULL `next_attempt_at` means never tried, due now.

use medins_common::db::DbUuid;
use std::{collections::HashMap, time::Duration};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult,
    db::{Db, DbError},
};
use uuid::Uuid;

use super::schema::face_outbox;
use crate::domain::face::{FacePurpose, FaceStatus};

/// An event to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Event id (stable across redeliveries).
    pub id: Uuid,
    /// The session that ended.
    pub session_id: Uuid,
    /// Its person.
    pub person_id: Uuid,
    /// Its purpose.
    pub purpose: FacePurpose,
    /// The starting caller's reference.
    pub reference: String,
    /// How it ended.
    pub outcome: FaceStatus,
    /// When it ended.
    pub finished_at: NaiveDateTime,
    /// Position among the session's events, from 1.
    pub sequence: i32,
    /// Failed deliveries so far.
    pub attempts: i32,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = face_outbox)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct OutboxRow {
    id: DbUuid,
    session_id: DbUuid,
    person_id: DbUuid,
    purpose: FacePurpose,
    reference: String,
    outcome: FaceStatus,
    finished_at: NaiveDateTime,
    sequence: i32,
    attempts: i32,
}

impl From<OutboxRow> for OutboxEvent {
    fn from(row: OutboxRow) -> Self {
        OutboxEvent {
            id: row.id.into(),
            session_id: row.session_id.into(),
            person_id: row.person_id.into(),
            purpose: row.purpose,
            outcome: row.outcome,
            reference: row.reference,
            finished_at: row.finished_at,
            sequence: row.sequence,
            attempts: row.attempts,
        }
    }
}

/// `mark_delivered` and `mark_failed` of an outbox store over table `$table` (each outbox table
/// has the same delivery columns: `delivered_at`, `lease_owner`, `lease_until`, `attempts`,
/// `next_attempt_at`, `last_error`), so the leasing rules are written once for every outbox.
macro_rules! outbox_delivery_marks {
    ($table:ident) => {
        /// Marks an event delivered (whoever holds it now: the receiver is idempotent, so a
        /// delivery that outlived its lease still counts). Returns false if it already was.
        pub async fn mark_delivered(&self, id: Uuid, now: NaiveDateTime) -> ApiResult<bool> {
            self.db
                .write(move |conn| {
                    use $table::dsl as o;
                    // One autocommit statement: the shared retry runs it again after a conflict.
                    let updated = medins_common::db::retry_conflicts(|| {
                        diesel::update(o::$table.find(DbUuid(id)).filter(o::delivered_at.is_null()))
                            .set((
                                o::delivered_at.eq(Some(now)),
                                o::lease_owner.eq(None::<String>),
                                o::lease_until.eq(None::<NaiveDateTime>),
                                o::last_error.eq(None::<String>),
                            ))
                            .execute(conn)
                    })?;
                    Ok(updated == 1)
                })
                .await
        }

        /// Records a failed delivery by `owner` and schedules the next attempt; releases the
        /// lease. Returns false if `owner` no longer held the event.
        pub async fn mark_failed(
            &self,
            id: Uuid,
            owner: &str,
            next_attempt_at: NaiveDateTime,
            error: &str,
        ) -> ApiResult<bool> {
            let (owner, error) = (owner.to_owned(), error.chars().take(200).collect::<String>());
            self.db
                .write(move |conn| {
                    use $table::dsl as o;
                    // One autocommit statement: the shared retry runs it again after a conflict.
                    let updated = medins_common::db::retry_conflicts(|| {
                        diesel::update(
                            o::$table
                                .find(DbUuid(id))
                                .filter(o::delivered_at.is_null())
                                .filter(o::lease_owner.eq(&owner)),
                        )
                        .set((
                            o::attempts.eq(o::attempts + 1),
                            o::next_attempt_at.eq(Some(next_attempt_at)),
                            o::lease_owner.eq(None::<String>),
                            o::lease_until.eq(None::<NaiveDateTime>),
                            o::last_error.eq(Some(&error)),
                        ))
                        .execute(conn)
                    })?;
                    Ok(updated == 1)
                })
                .await
        }
    };
}
pub(crate) use outbox_delivery_marks;

/// The outbox table.
#[derive(Clone, Debug)]
pub struct OutboxStore {
    db: Db,
}

impl OutboxStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Claims up to `limit` due events for `owner` until `now + lease`: undelivered, retry time
    /// reached, not leased by a live worker, and the earliest undelivered event of their
    /// session. Returns the events this call won (others may have won some of the candidates).
    pub async fn claim_due(
        &self,
        owner: &str,
        now: NaiveDateTime,
        lease: Duration,
        limit: i64,
    ) -> ApiResult<Vec<OutboxEvent>> {
        let owner = owner.to_owned();
        let lease_until = now + chrono::Duration::from_std(lease).map_err(ApiError::internal)?;
        self.db
            .write(move |conn| {
                use face_outbox::dsl as o;
                let free = o::lease_until.is_null().or(o::lease_until.lt(now));
                // Over-fetch: some candidates are later events of a session (not yet due) or
                // get taken by another worker between the scan and the claim.
                let candidates: Vec<(String, String, i32)> = o::face_outbox
                    .filter(o::delivered_at.is_null())
                    .filter(o::next_attempt_at.is_null().or(o::next_attempt_at.le(now)))
                    .filter(free)
                    .order((o::created_at.asc(), o::id.asc()))
                    .limit(limit.saturating_mul(2))
                    .select((o::id, o::session_id, o::sequence))
                    .load(conn)?;
                if candidates.is_empty() {
                    return Ok(Vec::new());
                }
                // The earliest undelivered sequence of each candidate's session.
                let sessions: Vec<&str> = candidates.iter().map(|(_, session, _)| session.as_str()).collect();
                let mut first_undelivered: HashMap<String, i32> = HashMap::new();
                for chunk in sessions.chunks(200) {
                    let rows: Vec<(String, i32)> = o::face_outbox
                        .filter(o::delivered_at.is_null())
                        .filter(o::session_id.eq_any(chunk))
                        .select((o::session_id, o::sequence))
                        .load(conn)?;
                    for (session, sequence) in rows {
                        first_undelivered
                            .entry(session)
                            .and_modify(|first| *first = (*first).min(sequence))
                            .or_insert(sequence);
                    }
                }
                let mut claimed = Vec::new();
                for (id, session, sequence) in candidates {
                    if claimed.len() as i64 >= limit {
                        break;
                    }
                    if first_undelivered.get(&session) != Some(&sequence) {
                        continue;
                    }
                    // Each claim is one autocommit compare-and-set: the shared retry runs it again
                    // after a conflict (the claims before it stand).
                    let won = medins_common::db::retry_conflicts(|| {
                        diesel::update(
                            o::face_outbox
                                .filter(o::id.eq(&id))
                                .filter(o::delivered_at.is_null())
                                .filter(o::lease_until.is_null().or(o::lease_until.lt(now))),
                        )
                        .set((o::lease_owner.eq(Some(&owner)), o::lease_until.eq(Some(lease_until))))
                        .execute(conn)
                    })?;
                    if won == 1 {
                        claimed.push(id);
                    }
                }
                let mut events = Vec::with_capacity(claimed.len());
                for id in claimed {
                    let row = o::face_outbox.find(&id).select(OutboxRow::as_select()).first(conn)?;
                    events.push(OutboxEvent::from(row));
                }
                Ok(events)
            })
            .await
    }

    outbox_delivery_marks!(face_outbox);

    /// Undelivered events (health, tests).
    pub async fn undelivered_count(&self) -> ApiResult<i64> {
        self.db
            .run(|conn| {
                use face_outbox::dsl as o;
                o::face_outbox.filter(o::delivered_at.is_null()).count().get_result(conn).map_err(DbError::from)
            })
            .await
            .map_err(ApiError::from)
    }
}
