//! Assurance levels and suspensions at rest: the facts IssuePersonToken decides on, the level
//! changes written with real name and face outcomes, operators' suspensions.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    assurance::AssuranceLevel,
    crypto::{FieldAad, FieldCipher},
    db::{Db, DbConnection, DbUuid, is_unique_violation, write_transaction},
    revocation::{Revocation, RevocationReason},
};
use uuid::Uuid;

use super::{
    revocation::{latest_revocation_in, revoke_tokens_in},
    schema::{person_assurance, person_suspensions, persons},
};
use crate::domain::{
    assurance::{FaceAssurance, METHOD_FACE, TokenIssueFacts, decide_face_assurance, effective_level},
    face::{FacePurpose, FaceStatus},
};

const SUSPENSIONS: &str = "person_suspensions";
/// Stored real-name status of a verified person.
const VERIFIED: &str = "VERIFIED";

/// What IssuePersonToken reads in one go.
#[derive(Debug, Clone, Copy)]
pub struct IssueFacts {
    /// The facts the decision takes.
    pub decision: TokenIssueFacts,
    /// The latest revocation that applies to the caller's tokens for the person (Unix ms).
    pub latest_revocation_ms: Option<i64>,
}

fn person_not_found() -> ApiError {
    ApiError::of(Reason::PersonNotFound, "no person with this id")
}

/// The stored level of a person (0: none recorded).
fn stored_level_in(conn: &mut DbConnection, person_id: DbUuid) -> ApiResult<i32> {
    Ok(person_assurance::table
        .find(person_id)
        .select(person_assurance::level)
        .first::<i32>(conn)
        .optional()?
        .unwrap_or(0))
}

/// Records level 1 (reached by `method` at `now`) for a person whose real name was just
/// verified, on the caller's connection (the real-name transaction). A higher level stays.
pub fn mark_level_1_in(conn: &mut DbConnection, person_id: Uuid, method: &str, now: NaiveDateTime) -> ApiResult<()> {
    let id = DbUuid(person_id);
    if stored_level_in(conn, id)? == 0 {
        diesel::insert_into(person_assurance::table)
            .values((
                person_assurance::person_id.eq(id),
                person_assurance::level.eq(i32::from(AssuranceLevel::RealName.number())),
                person_assurance::method.eq(method),
                person_assurance::raised_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Applies a finished face session's outcome to its person's level (rule in
/// `domain::assurance`), on the caller's connection (the transaction that ends the session).
/// Returns whether the level rose.
pub fn apply_face_outcome_in(
    conn: &mut DbConnection,
    person_id: Uuid,
    purpose: FacePurpose,
    status: FaceStatus,
    now: NaiveDateTime,
) -> ApiResult<bool> {
    if purpose != FacePurpose::RealName || status != FaceStatus::Passed {
        return Ok(false);
    }
    let id = DbUuid(person_id);
    let real_name_status: String = persons::table.find(id).select(persons::real_name_status).first(conn)?;
    let stored = stored_level_in(conn, id)?;
    let current = effective_level(real_name_status == VERIFIED, stored);
    if decide_face_assurance(purpose, status, current) != FaceAssurance::Raise {
        return Ok(false);
    }
    let level_2 = i32::from(AssuranceLevel::RealNameAndFace.number());
    // Conditional: a concurrent raise is not written twice. The caller's transaction holds the
    // face session's lock; the person's row is only ever raised, never lowered.
    let raised = if stored == 0 {
        diesel::insert_into(person_assurance::table)
            .values((
                person_assurance::person_id.eq(id),
                person_assurance::level.eq(level_2),
                person_assurance::method.eq(METHOD_FACE),
                person_assurance::raised_at.eq(now),
            ))
            .execute(conn)?
    } else {
        diesel::update(person_assurance::table.find(id).filter(person_assurance::level.lt(level_2)))
            .set((
                person_assurance::level.eq(level_2),
                person_assurance::method.eq(METHOD_FACE),
                person_assurance::raised_at.eq(now),
            ))
            .execute(conn)?
    };
    Ok(raised == 1)
}

/// Persons' levels and operators' suspensions.
#[derive(Clone)]
pub struct AssuranceStore {
    db: Db,
    cipher: FieldCipher,
}

impl std::fmt::Debug for AssuranceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssuranceStore").finish_non_exhaustive()
    }
}

/// What a suspension or resumption did.
#[derive(Debug, Clone)]
pub struct SuspensionChange {
    /// Whether this call changed anything.
    pub changed: bool,
    /// When the (open or just closed) suspension began; `None` when there was none.
    pub suspended_at: Option<NaiveDateTime>,
    /// The revocation written (suspensions only).
    pub revocation: Option<Revocation>,
}

impl AssuranceStore {
    /// A store over `db` with the data key (operators' reasons are encrypted).
    pub fn new(db: Db, cipher: FieldCipher) -> Self {
        Self { db, cipher }
    }

    /// The facts of an IssuePersonToken by `partner_id` for `person_id`; NOT_FOUND /
    /// PERSON_NOT_FOUND for an unknown person.
    pub async fn issue_facts(&self, person_id: Uuid, partner_id: &str) -> ApiResult<IssueFacts> {
        let partner_id = partner_id.to_owned();
        self.db
            .read(move |conn| {
                let id = DbUuid(person_id);
                // A superseded claim is no person: it answers like a missing id.
                let real_name_status: String = persons::table
                    .find(id)
                    .filter(persons::claim_status.eq(super::person::LIVE))
                    .select(persons::real_name_status)
                    .first(conn)
                    .optional()?
                    .ok_or_else(person_not_found)?;
                let stored_level = stored_level_in(conn, id)?;
                let open: i64 = person_suspensions::table
                    .filter(person_suspensions::person_id.eq(id))
                    .filter(person_suspensions::resumed_at.is_null())
                    .count()
                    .get_result(conn)?;
                Ok(IssueFacts {
                    decision: TokenIssueFacts {
                        suspended: open > 0,
                        real_name_verified: real_name_status == VERIFIED,
                        stored_level,
                    },
                    latest_revocation_ms: latest_revocation_in(conn, person_id, &partner_id)?,
                })
            })
            .await
    }

    /// Suspends the person: an open suspension row and a revocation of every partner's tokens,
    /// in one transaction. A person already suspended keeps the first suspension.
    pub async fn suspend(
        &self,
        person_id: Uuid,
        operator: &str,
        reason: &str,
        now: NaiveDateTime,
    ) -> ApiResult<SuspensionChange> {
        let (store, operator, reason) = (self.clone(), operator.to_owned(), reason.to_owned());
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let id = DbUuid(person_id);
                    require_live_person_in(conn, id)?;
                    if let Some(open) = open_suspension_in(conn, id)? {
                        return Ok(SuspensionChange { changed: false, suspended_at: Some(open), revocation: None });
                    }
                    let row_uuid = Uuid::now_v7();
                    let row_id = row_uuid.to_string();
                    let aad = FieldAad { table: SUSPENSIONS, column: "reason_enc", row_id: &row_id };
                    let inserted = diesel::insert_into(person_suspensions::table)
                        .values((
                            person_suspensions::id.eq(DbUuid(row_uuid)),
                            person_suspensions::person_id.eq(id),
                            person_suspensions::suspended_at.eq(now),
                            person_suspensions::suspended_by.eq(&operator),
                            person_suspensions::reason_enc.eq(store.cipher.encrypt_str(&aad, &reason)),
                        ))
                        .execute(conn);
                    match inserted {
                        Ok(_) => {}
                        // A concurrent suspension won (PostgreSQL): the same answer as above.
                        Err(error) if is_unique_violation(&error) => {
                            return Err(ApiError::of(
                                Reason::RequestInFlight,
                                "a concurrent suspension of this person; retry",
                            ));
                        }
                        Err(error) => return Err(error.into()),
                    }
                    let revocation = revoke_tokens_in(conn, person_id, None, now, RevocationReason::PersonSuspended)?;
                    Ok(SuspensionChange { changed: true, suspended_at: Some(now), revocation: Some(revocation) })
                })
            })
            .await
    }

    /// Lifts the person's open suspension, if any.
    pub async fn resume(
        &self,
        person_id: Uuid,
        operator: &str,
        reason: &str,
        now: NaiveDateTime,
    ) -> ApiResult<SuspensionChange> {
        let (store, operator, reason) = (self.clone(), operator.to_owned(), reason.to_owned());
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let id = DbUuid(person_id);
                    require_live_person_in(conn, id)?;
                    let open: Option<(String, NaiveDateTime)> = person_suspensions::table
                        .filter(person_suspensions::person_id.eq(id))
                        .filter(person_suspensions::resumed_at.is_null())
                        .select((person_suspensions::id, person_suspensions::suspended_at))
                        .first(conn)
                        .optional()?;
                    let Some((row_id, suspended_at)) = open else {
                        return Ok(SuspensionChange { changed: false, suspended_at: None, revocation: None });
                    };
                    let aad = FieldAad { table: SUSPENSIONS, column: "resume_reason_enc", row_id: &row_id };
                    let updated = diesel::update(
                        person_suspensions::table.find(&row_id).filter(person_suspensions::resumed_at.is_null()),
                    )
                    .set((
                        person_suspensions::resumed_at.eq(Some(now.max(suspended_at))),
                        person_suspensions::resumed_by.eq(Some(&operator)),
                        person_suspensions::resume_reason_enc.eq(Some(store.cipher.encrypt_str(&aad, &reason))),
                    ))
                    .execute(conn)?;
                    Ok(SuspensionChange { changed: updated == 1, suspended_at: Some(suspended_at), revocation: None })
                })
            })
            .await
    }
}

/// NOT_FOUND / PERSON_NOT_FOUND unless `id` is a live person (a superseded claim answers like a
/// missing id).
fn require_live_person_in(conn: &mut DbConnection, id: DbUuid) -> ApiResult<()> {
    persons::table
        .find(id)
        .filter(persons::claim_status.eq(super::person::LIVE))
        .select(persons::id)
        .first::<DbUuid>(conn)
        .optional()?
        .map(|_| ())
        .ok_or_else(person_not_found)
}

fn open_suspension_in(conn: &mut DbConnection, person_id: DbUuid) -> ApiResult<Option<NaiveDateTime>> {
    Ok(person_suspensions::table
        .filter(person_suspensions::person_id.eq(person_id))
        .filter(person_suspensions::resumed_at.is_null())
        .select(person_suspensions::suspended_at)
        .first(conn)
        .optional()?)
}
