//! Face outcomes reported by identity-svc, recorded once per session.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::db::DbUuid;
use medins_common::{
    ApiError, ApiResult,
    db::{Db, is_unique_violation, retry_conflicts},
};
use uuid::Uuid;

use super::schema::face_outcomes;
use crate::domain::face::{FaceOutcome, FacePurpose};

/// A recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceOutcomeRecord {
    /// The face session at identity-svc.
    pub session_id: Uuid,
    /// identity-svc's event id (of the delivery that was recorded).
    pub event_id: Uuid,
    /// The person verified.
    pub person_id: Uuid,
    /// What it was for.
    pub purpose: FacePurpose,
    /// The starting caller's reference.
    pub reference: String,
    /// How it ended.
    pub outcome: FaceOutcome,
    /// When it ended.
    pub finished_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = face_outcomes)]
struct FaceOutcomeRow {
    session_id: String,
    event_id: String,
    person_id: String,
    purpose: String,
    reference: String,
    outcome: String,
    finished_at: NaiveDateTime,
}

impl TryFrom<FaceOutcomeRow> for FaceOutcomeRecord {
    type Error = ApiError;

    fn try_from(row: FaceOutcomeRow) -> ApiResult<Self> {
        let bad = |what: &str| ApiError::internal(format_args!("face outcome {}: bad {what}", row.session_id));
        Ok(FaceOutcomeRecord {
            session_id: Uuid::parse_str(&row.session_id).map_err(|_| bad("session_id"))?,
            event_id: Uuid::parse_str(&row.event_id).map_err(|_| bad("event_id"))?,
            person_id: Uuid::parse_str(&row.person_id).map_err(|_| bad("person_id"))?,
            purpose: FacePurpose::parse(&row.purpose).ok_or_else(|| bad("purpose"))?,
            outcome: FaceOutcome::parse(&row.outcome).ok_or_else(|| bad("outcome"))?,
            reference: row.reference,
            finished_at: row.finished_at,
        })
    }
}

/// Whether a record call stored the outcome or found it already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now.
    New,
    /// Already stored (a redelivery): nothing changed. Holds what is on record.
    Duplicate(FaceOutcomeRecord),
}

/// The face_outcomes table.
#[derive(Clone, Debug)]
pub struct FaceOutcomeStore {
    db: Db,
}

impl FaceOutcomeStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records an outcome once per session: the primary key decides, so concurrent
    /// redeliveries cannot both insert, and a duplicate changes nothing.
    pub async fn record(&self, record: FaceOutcomeRecord, received_at: NaiveDateTime) -> ApiResult<Recorded> {
        self.db
            .write(move |conn| {
                let session_id = record.session_id.to_string();
                // One autocommit statement: the shared retry runs it again after a conflict.
                let inserted = retry_conflicts(|| {
                    diesel::insert_into(face_outcomes::table)
                        .values((
                            face_outcomes::session_id.eq(&session_id),
                            face_outcomes::event_id.eq(DbUuid(record.event_id)),
                            face_outcomes::person_id.eq(DbUuid(record.person_id)),
                            face_outcomes::purpose.eq(record.purpose),
                            face_outcomes::reference.eq(&record.reference),
                            face_outcomes::outcome.eq(record.outcome),
                            face_outcomes::finished_at.eq(record.finished_at),
                            face_outcomes::received_at.eq(received_at),
                        ))
                        .execute(conn)
                });
                match inserted {
                    Ok(_) => Ok(Recorded::New),
                    Err(error) if is_unique_violation(&error) => {
                        let row =
                            face_outcomes::table.find(&session_id).select(FaceOutcomeRow::as_select()).first(conn)?;
                        Ok(Recorded::Duplicate(row.try_into()?))
                    }
                    Err(error) => Err(error.into()),
                }
            })
            .await
    }

    /// The outcome of a session, if reported.
    pub async fn find(&self, session_id: Uuid) -> ApiResult<Option<FaceOutcomeRecord>> {
        self.db
            .read(move |conn| {
                let row = face_outcomes::table
                    .find(DbUuid(session_id))
                    .select(FaceOutcomeRow::as_select())
                    .first(conn)
                    .optional()?;
                row.map(FaceOutcomeRecord::try_from).transpose()
            })
            .await
    }
}
