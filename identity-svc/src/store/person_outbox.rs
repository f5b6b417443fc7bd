//! The person outbox: PersonSuperseded events waiting for insurance-svc.
//!
//! Rows are written by `store::person` in the transaction that supersedes a claim (one per
//! claim: `person_id` is unique). Workers claim due rows with a lease, exactly as for the face
//! outbox (`store::outbox`): a conditional update checked by its affected-row count, so two
//! workers never hold one event at once. Events of different persons are independent: no order
//! between them is kept. Delivery columns are in the worker's wall-clock time.

use medins_common::db::DbUuid;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult,
    db::{Db, DbConnection},
};
use uuid::Uuid;

use super::schema::person_outbox;

/// A PersonSuperseded event to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonSupersededEvent {
    /// Event id (stable across redeliveries).
    pub id: Uuid,
    /// The superseded claim.
    pub person_id: Uuid,
    /// The confirmed person that superseded it.
    pub superseded_by: Uuid,
    /// When.
    pub occurred_at: NaiveDateTime,
    /// Failed deliveries so far.
    pub attempts: i32,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = person_outbox)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct PersonOutboxRow {
    id: DbUuid,
    person_id: DbUuid,
    superseded_by: DbUuid,
    occurred_at: NaiveDateTime,
    attempts: i32,
}

impl From<PersonOutboxRow> for PersonSupersededEvent {
    fn from(row: PersonOutboxRow) -> Self {
        PersonSupersededEvent {
            id: row.id.into(),
            person_id: row.person_id.into(),
            superseded_by: row.superseded_by.into(),
            occurred_at: row.occurred_at,
            attempts: row.attempts,
        }
    }
}

/// Writes the event of a superseded claim, on the caller's connection (inside the superseding
/// transaction: the event exists if and only if the supersession commits).
pub fn record_superseded_in(
    conn: &mut DbConnection,
    person_id: Uuid,
    superseded_by: Uuid,
    now: NaiveDateTime,
) -> ApiResult<()> {
    diesel::insert_into(person_outbox::table)
        .values((
            person_outbox::id.eq(DbUuid(Uuid::now_v7())),
            person_outbox::person_id.eq(DbUuid(person_id)),
            person_outbox::superseded_by.eq(DbUuid(superseded_by)),
            person_outbox::occurred_at.eq(now),
            person_outbox::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// The person outbox table.
#[derive(Clone, Debug)]
pub struct PersonOutboxStore {
    db: Db,
}

impl PersonOutboxStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Claims up to `limit` due events for `owner` until `now + lease`: undelivered, retry time
    /// reached, not leased by a live worker. Returns the events this call won.
    pub async fn claim_due(
        &self,
        owner: &str,
        now: NaiveDateTime,
        lease: Duration,
        limit: i64,
    ) -> ApiResult<Vec<PersonSupersededEvent>> {
        let owner = owner.to_owned();
        let lease_until = now + chrono::Duration::from_std(lease).map_err(ApiError::internal)?;
        self.db
            .write(move |conn| {
                use person_outbox::dsl as o;
                let free = o::lease_until.is_null().or(o::lease_until.lt(now));
                let candidates: Vec<String> = o::person_outbox
                    .filter(o::delivered_at.is_null())
                    .filter(o::next_attempt_at.is_null().or(o::next_attempt_at.le(now)))
                    .filter(free)
                    .order((o::created_at.asc(), o::id.asc()))
                    .limit(limit)
                    .select(o::id)
                    .load(conn)?;
                let mut events = Vec::with_capacity(candidates.len());
                for id in candidates {
                    // Each claim is one autocommit compare-and-set: the shared retry runs it again
                    // after a conflict (the claims before it stand).
                    let won = medins_common::db::retry_conflicts(|| {
                        diesel::update(
                            o::person_outbox
                                .filter(o::id.eq(&id))
                                .filter(o::delivered_at.is_null())
                                .filter(o::lease_until.is_null().or(o::lease_until.lt(now))),
                        )
                        .set((o::lease_owner.eq(Some(&owner)), o::lease_until.eq(Some(lease_until))))
                        .execute(conn)
                    })?;
                    if won == 1 {
                        let row = o::person_outbox.find(&id).select(PersonOutboxRow::as_select()).first(conn)?;
                        events.push(PersonSupersededEvent::from(row));
                    }
                }
                Ok(events)
            })
            .await
    }

    super::outbox::outbox_delivery_marks!(person_outbox);
}
