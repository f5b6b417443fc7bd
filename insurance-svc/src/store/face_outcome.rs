//! Face outcomes reported by identity-svc, recorded once per session.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::db::DbUuid;
use medins_common::{
    ApiResult,
    db::{Db, is_unique_violation, retry_conflicts},
};
use uuid::Uuid;

use super::schema::face_outcomes;
use crate::domain::face::{FaceOutcome, FaceOutcomeRecord, FacePurpose};

#[derive(Queryable, Selectable)]
#[diesel(table_name = face_outcomes)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct FaceOutcomeRow {
    session_id: DbUuid,
    event_id: DbUuid,
    person_id: DbUuid,
    purpose: FacePurpose,
    reference: String,
    outcome: FaceOutcome,
    finished_at: NaiveDateTime,
}

impl From<FaceOutcomeRow> for FaceOutcomeRecord {
    fn from(row: FaceOutcomeRow) -> Self {
        FaceOutcomeRecord {
            session_id: row.session_id.into(),
            event_id: row.event_id.into(),
            person_id: row.person_id.into(),
            purpose: row.purpose,
            outcome: row.outcome,
            reference: row.reference,
            finished_at: row.finished_at,
        }
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
                let session_id = DbUuid(record.session_id);
                // One autocommit statement: the shared retry runs it again after a conflict.
                let inserted = retry_conflicts(|| {
                    diesel::insert_into(face_outcomes::table)
                        .values((
                            face_outcomes::session_id.eq(session_id),
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
                            face_outcomes::table.find(session_id).select(FaceOutcomeRow::as_select()).first(conn)?;
                        Ok(Recorded::Duplicate(row.into()))
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
                Ok(row.map(FaceOutcomeRecord::from))
            })
            .await
    }
}
