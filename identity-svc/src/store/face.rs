//! Face sessions at rest, and the outbox rows written with them.
//!
//! Every change that ends a session (a deciding submission, an expiry) happens in one
//! `write_transaction` together with the `face_outbox` row that reports it to insurance-svc, so
//! an outcome is never recorded without its event, nor an event without its outcome. The
//! session row is locked for the read-then-write: `BEGIN IMMEDIATE` on SQLite, `SELECT ... FOR
//! UPDATE` on PostgreSQL; and a final row is never updated (every update is `WHERE status =
//! 'PENDING'`).
//!
//! `provider_id` names the FACE_PROVIDER partner the session is bound to, written when the
//! session starts (it once held the last submitter; only the bound provider's submissions are
//! recorded now, so it is also the provider of every recorded outcome).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbConnection, DbUuid, write_transaction},
};
use uuid::Uuid;

use super::schema::{face_outbox, face_session_binders, face_sessions};
use crate::domain::face::{
    FacePurpose, FaceSession, FaceStatus, SESSION_LIFETIME, Submission, SubmitDecision, Threshold, decide_submission,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = face_sessions)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct FaceSessionRow {
    id: DbUuid,
    person_id: DbUuid,
    purpose: FacePurpose,
    reference: String,
    partner_id: String,
    // The bound provider: NULL only for sessions started before sessions were bound, which no
    // provider may decide.
    #[diesel(column_name = provider_id)]
    bound_provider_id: Option<String>,
    challenge: String,
    status: FaceStatus,
    submissions: i32,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    finished_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

impl From<FaceSessionRow> for FaceSession {
    fn from(row: FaceSessionRow) -> Self {
        FaceSession {
            id: row.id.into(),
            person_id: row.person_id.into(),
            purpose: row.purpose,
            status: row.status,
            reference: row.reference,
            partner_id: row.partner_id,
            bound_provider_id: row.bound_provider_id.unwrap_or_default(),
            challenge: row.challenge,
            submissions: row.submissions,
            created_at: row.created_at,
            expires_at: row.expires_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        }
    }
}

/// What a new session brings.
#[derive(Debug, Clone)]
pub struct NewFaceSession {
    /// The person.
    pub person_id: Uuid,
    /// What it is for.
    pub purpose: FacePurpose,
    /// The caller's reference (validated).
    pub reference: String,
    /// The starting partner.
    pub partner_id: String,
    /// The FACE_PROVIDER partner that may decide it (see `domain::face::choose_provider`).
    pub bound_provider_id: String,
    /// The liveness challenge.
    pub challenge: String,
    /// The binder who may read it (`domain::face::session_binder`).
    pub binder_person_id: Option<Uuid>,
}

/// Who submitted, and their reference of the check.
#[derive(Debug, Clone)]
pub struct ProviderCheck {
    /// The FACE_PROVIDER partner.
    pub provider_id: String,
    /// The provider's reference (validated).
    pub provider_reference: String,
    /// The outcome sent.
    pub submission: Submission,
}

/// What a submission did.
#[derive(Debug, Clone)]
pub enum SubmitResult {
    /// Recorded; the session afterwards.
    Recorded {
        /// The session after the submission.
        session: FaceSession,
        /// Whether this submission passed.
        passed: bool,
        /// Whether an outbox event was written (the session ended with an insurance purpose).
        outbox_written: bool,
    },
    /// The session had passed its expiry: it is now recorded EXPIRED and the submission was
    /// not taken.
    Expired {
        /// Whether an outbox event was written.
        outbox_written: bool,
    },
}

/// A session that the sweeper expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredSession {
    /// The session.
    pub id: Uuid,
    /// Whether an outbox event was written.
    pub outbox_written: bool,
}

/// The face_sessions table (and the outbox rows its changes write).
#[derive(Clone, Debug)]
pub struct FaceStore {
    db: Db,
}

impl FaceStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Starts a session, PENDING until `now` + 5 minutes. NOT_FOUND / PERSON_NOT_FOUND if the
    /// person does not exist (the foreign key decides).
    pub async fn create(&self, new: NewFaceSession, now: NaiveDateTime) -> ApiResult<FaceSession> {
        self.db
            .write(move |conn| {
                let session = FaceSession {
                    id: Uuid::now_v7(),
                    person_id: new.person_id,
                    purpose: new.purpose,
                    reference: new.reference,
                    partner_id: new.partner_id,
                    bound_provider_id: new.bound_provider_id,
                    challenge: new.challenge,
                    status: FaceStatus::Pending,
                    submissions: 0,
                    created_at: now,
                    expires_at: now + SESSION_LIFETIME,
                    finished_at: None,
                    updated_at: now,
                };
                let binder = new.binder_person_id;
                // The session and its binder row commit together.
                write_transaction(conn, |conn| {
                    let inserted = diesel::insert_into(face_sessions::table)
                        .values((
                            face_sessions::id.eq(DbUuid(session.id)),
                            face_sessions::person_id.eq(DbUuid(session.person_id)),
                            face_sessions::purpose.eq(session.purpose),
                            face_sessions::reference.eq(&session.reference),
                            face_sessions::partner_id.eq(&session.partner_id),
                            face_sessions::provider_id.eq(Some(&session.bound_provider_id)),
                            face_sessions::challenge.eq(&session.challenge),
                            face_sessions::status.eq(session.status),
                            face_sessions::submissions.eq(session.submissions),
                            face_sessions::created_at.eq(session.created_at),
                            face_sessions::expires_at.eq(session.expires_at),
                            face_sessions::updated_at.eq(session.updated_at),
                        ))
                        .execute(conn);
                    match inserted {
                        Ok(_) => {}
                        Err(diesel::result::Error::DatabaseError(
                            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                            _,
                        )) => return Err(ApiError::of(Reason::PersonNotFound, "no person with this id")),
                        Err(error) => return Err(error.into()),
                    }
                    if let Some(binder) = binder {
                        diesel::insert_into(face_session_binders::table)
                            .values((
                                face_session_binders::session_id.eq(DbUuid(session.id)),
                                face_session_binders::binder_person_id.eq(DbUuid(binder)),
                            ))
                            .execute(conn)?;
                    }
                    Ok(session.clone())
                })
            })
            .await
    }

    /// The binder named at the start of a family binding's member check, if any
    /// (`domain::face::session_binder`).
    pub async fn binder_of(&self, session_id: Uuid) -> ApiResult<Option<Uuid>> {
        self.db
            .read(move |conn| -> ApiResult<Option<Uuid>> {
                let binder: Option<DbUuid> = face_session_binders::table
                    .find(DbUuid(session_id))
                    .select(face_session_binders::binder_person_id)
                    .first(conn)
                    .optional()?;
                Ok(binder.map(Uuid::from))
            })
            .await
    }

    /// A session by id.
    pub async fn find(&self, id: Uuid) -> ApiResult<Option<FaceSession>> {
        self.db
            .read(move |conn| {
                let row =
                    face_sessions::table.find(DbUuid(id)).select(FaceSessionRow::as_select()).first(conn).optional()?;
                Ok(row.map(FaceSession::from))
            })
            .await
    }

    /// Applies a provider's submission (rules in `domain::face`); ends the session and writes
    /// its outbox event in the same transaction when the submission decides it. NOT_FOUND /
    /// FACE_SESSION_NOT_FOUND for an unknown session; a provider the session is not bound to is
    /// refused (PERMISSION_DENIED / FACE_PROVIDER_MISMATCH) and the session is left untouched.
    pub async fn submit(
        &self,
        id: Uuid,
        check: ProviderCheck,
        threshold: Threshold,
        now: NaiveDateTime,
    ) -> ApiResult<SubmitResult> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let session = lock_session(conn, id)?.ok_or_else(face_session_not_found)?;
                    let decision = decide_submission(
                        &session.state(),
                        &session.bound_provider_id,
                        &check.provider_id,
                        &check.submission,
                        threshold,
                        now,
                    )?;
                    match decision {
                        SubmitDecision::ExpireAndRefuse => {
                            let outbox_written = finish(conn, &session, FaceStatus::Expired, session.expires_at, now)?;
                            Ok(SubmitResult::Expired { outbox_written })
                        }
                        SubmitDecision::Record { status, submissions, passed } => {
                            let finished_at = status.is_final().then_some(now);
                            let updated = diesel::update(pending(&session))
                                .set((
                                    face_sessions::status.eq(status),
                                    face_sessions::submissions.eq(submissions),
                                    face_sessions::last_liveness_passed.eq(Some(check.submission.liveness_passed)),
                                    face_sessions::last_similarity.eq(Some(check.submission.similarity)),
                                    face_sessions::provider_reference.eq(Some(&check.provider_reference)),
                                    face_sessions::finished_at.eq(finished_at),
                                    face_sessions::updated_at.eq(now),
                                ))
                                .execute(conn)?;
                            if updated != 1 {
                                return Err(ApiError::internal(format_args!(
                                    "face session {id} changed under its lock"
                                )));
                            }
                            let outbox_written = match finished_at {
                                Some(at) => write_outbox_event(conn, &session, status, at, now)?,
                                None => false,
                            };
                            if finished_at.is_some() {
                                // A PASSED REAL_NAME session raises its person's assurance level
                                // in the same transaction (rule in domain::assurance).
                                super::assurance::apply_face_outcome_in(
                                    conn,
                                    session.person_id,
                                    session.purpose,
                                    status,
                                    now,
                                )?;
                            }
                            let session = FaceSession { status, submissions, finished_at, updated_at: now, ..session };
                            Ok(SubmitResult::Recorded { session, passed, outbox_written })
                        }
                    }
                })
            })
            .await
    }

    /// Expires up to `limit` PENDING sessions whose expiry is at or before `now`, each in its
    /// own transaction with its outbox event; returns those it expired.
    pub async fn expire_due(&self, now: NaiveDateTime, limit: i64) -> ApiResult<Vec<ExpiredSession>> {
        self.db
            .write(move |conn| {
                let due: Vec<DbUuid> = face_sessions::table
                    .filter(face_sessions::status.eq(FaceStatus::Pending))
                    .filter(face_sessions::expires_at.le(now))
                    .order(face_sessions::expires_at.asc())
                    .limit(limit)
                    .select(face_sessions::id)
                    .load(conn)?;
                let mut expired = Vec::with_capacity(due.len());
                for id in due {
                    let id = Uuid::from(id);
                    let outcome = write_transaction(conn, |conn| -> ApiResult<Option<bool>> {
                        // Another replica (or a submission) may have ended it since the scan.
                        match lock_session(conn, id)? {
                            Some(session) if session.status == FaceStatus::Pending && session.expires_at <= now => {
                                finish(conn, &session, FaceStatus::Expired, session.expires_at, now).map(Some)
                            }
                            _ => Ok(None),
                        }
                    })?;
                    if let Some(outbox_written) = outcome {
                        expired.push(ExpiredSession { id, outbox_written });
                    }
                }
                Ok(expired)
            })
            .await
    }
}

/// NOT_FOUND / FACE_SESSION_NOT_FOUND.
pub fn face_session_not_found() -> ApiError {
    ApiError::of(Reason::FaceSessionNotFound, "no face session with this id")
}

/// Reads a session for update: the row lock on PostgreSQL (SQLite's `BEGIN IMMEDIATE` already
/// holds the database write lock).
fn lock_session(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<FaceSession>> {
    let row =
        medins_common::first_locked!(conn, face_sessions::table.find(DbUuid(id)).select(FaceSessionRow::as_select()))?;
    Ok(row.map(FaceSession::from))
}

/// The session's row, only while still PENDING.
fn pending(
    session: &FaceSession,
) -> diesel::dsl::Filter<
    diesel::dsl::Find<face_sessions::table, DbUuid>,
    diesel::dsl::Eq<face_sessions::status, &'static str>,
> {
    face_sessions::table.find(DbUuid(session.id)).filter(face_sessions::status.eq(FaceStatus::Pending))
}

/// Ends a PENDING session with `status` and writes its outbox event; returns whether an event
/// was written. Call inside a write transaction holding the session's lock.
fn finish(
    conn: &mut DbConnection,
    session: &FaceSession,
    status: FaceStatus,
    finished_at: NaiveDateTime,
    now: NaiveDateTime,
) -> ApiResult<bool> {
    let updated = diesel::update(pending(session))
        .set((
            face_sessions::status.eq(status),
            face_sessions::finished_at.eq(Some(finished_at)),
            face_sessions::updated_at.eq(now),
        ))
        .execute(conn)?;
    if updated != 1 {
        return Err(ApiError::internal(format_args!("face session {} changed under its lock", session.id)));
    }
    write_outbox_event(conn, session, status, finished_at, now)
}

/// Writes the FaceVerificationCompleted event of a session that just ended, if its purpose
/// concerns insurance-svc; its sequence follows the session's earlier events.
fn write_outbox_event(
    conn: &mut DbConnection,
    session: &FaceSession,
    outcome: FaceStatus,
    finished_at: NaiveDateTime,
    now: NaiveDateTime,
) -> ApiResult<bool> {
    if !session.purpose.notifies_insurance() {
        return Ok(false);
    }
    let session_id = DbUuid(session.id);
    let last: Option<i32> = face_outbox::table
        .filter(face_outbox::session_id.eq(session_id))
        .select(diesel::dsl::max(face_outbox::sequence))
        .first(conn)?;
    diesel::insert_into(face_outbox::table)
        .values((
            face_outbox::id.eq(DbUuid(Uuid::now_v7())),
            face_outbox::session_id.eq(session_id),
            face_outbox::person_id.eq(DbUuid(session.person_id)),
            face_outbox::purpose.eq(session.purpose),
            face_outbox::reference.eq(&session.reference),
            face_outbox::outcome.eq(outcome),
            face_outbox::finished_at.eq(finished_at),
            face_outbox::sequence.eq(last.unwrap_or(0) + 1),
            face_outbox::attempts.eq(0),
            face_outbox::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(true)
}
