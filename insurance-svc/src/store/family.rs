//! Family bindings at rest.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbConnection, DbUuid, write_retrying},
};
use uuid::Uuid;

use super::{
    account::open_account_of,
    schema::{family_binder_months, family_binding_terms, family_bindings, vouchers},
    voucher::{activate_for_family_in, suspend_family_only_in},
};
use crate::domain::{
    face::FaceOutcome,
    family::{
        self, Admission, Binding, BindingChannel, BindingStatus, Relationship, RelationshipProof, Remover,
        ReviewDecision, SlotFacts, Transition,
    },
    settlement::FamilyAidPolicy,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = family_bindings)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct BindingRow {
    id: DbUuid,
    owner_person_id: DbUuid,
    member_person_id: DbUuid,
    relationship: Relationship,
    status: BindingStatus,
    member_birth_date: NaiveDate,
    face_session_id: Option<DbUuid>,
    commitment_letter_id: DbUuid,
    owner_register_id: DbUuid,
    member_register_id: DbUuid,
    family_aid: bool,
    created_at: NaiveDateTime,
    activated_at: Option<NaiveDateTime>,
    ended_at: Option<NaiveDateTime>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = family_binding_terms)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct TermsRow {
    relationship_proof: Option<RelationshipProof>,
    review_deadline: Option<NaiveDateTime>,
    rejection_reason: Option<String>,
    notice_version: Option<String>,
    notice_accepted_at: Option<NaiveDateTime>,
    channel: BindingChannel,
}

impl From<(BindingRow, TermsRow)> for Binding {
    fn from((row, terms): (BindingRow, TermsRow)) -> Self {
        Binding {
            id: row.id.into(),
            owner_person_id: row.owner_person_id.into(),
            member_person_id: row.member_person_id.into(),
            relationship: row.relationship,
            status: row.status,
            member_birth_date: row.member_birth_date,
            face_session_id: row.face_session_id.map(Uuid::from),
            commitment_letter_id: row.commitment_letter_id.into(),
            owner_register_id: row.owner_register_id.into(),
            member_register_id: row.member_register_id.into(),
            family_aid: row.family_aid,
            created_at: row.created_at,
            activated_at: row.activated_at,
            ended_at: row.ended_at,
            relationship_proof: terms.relationship_proof,
            review_deadline: terms.review_deadline,
            rejection_reason: terms.rejection_reason,
            notice: terms.notice_version.zip(terms.notice_accepted_at),
            channel: terms.channel,
        }
    }
}

/// The family tables.
#[derive(Clone, Debug)]
pub struct FamilyStore {
    db: Db,
}

impl FamilyStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The ACTIVE binding of `member` by `owner`, if any: what lets the owner act for the
    /// member (show codes, read expenses, apply for a card for a minor).
    pub async fn find_active(&self, owner: Uuid, member: Uuid) -> ApiResult<Option<Binding>> {
        self.db.read(move |conn| find_active_in(conn, owner, member)).await
    }

    /// A binding by id.
    pub async fn find(&self, id: Uuid) -> ApiResult<Option<Binding>> {
        self.db.read(move |conn| find_in(conn, id)).await
    }

    /// Rules 4-6 of AddFamilyMember as the database stands now (the write checks them again
    /// under the owner's lock).
    pub async fn check_places(&self, owner: Uuid, member: Uuid, month: String) -> ApiResult<()> {
        self.db.run(move |conn| family::check_places(slot_facts(conn, owner, member, &month)?.places(owner))).await
    }

    /// Writes a new binding: under the owner's lock (`SELECT ... FOR UPDATE` of the owner's
    /// voucher on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) rules 4-6 are checked again, the
    /// binding takes the owner's lowest free quota slot and the member's binder-month slot, and
    /// an ACTIVE binding activates the member's voucher (channel FAMILY), all in one transaction.
    pub async fn add(&self, new: NewBinding, now: NaiveDateTime) -> ApiResult<Binding> {
        self.db
            .write(move |conn| {
                write_retrying(
                    conn,
                    |conn| {
                        lock_owner(conn, new.owner_person_id)?;
                        if let Some(session) = new.owner_face_session_id {
                            let used: i64 = family_binding_terms::table
                                .filter(family_binding_terms::owner_face_session_id.eq(DbUuid(session)))
                                .count()
                                .get_result(conn)?;
                            family::require_unused_owner_face(used > 0)?;
                        }
                        let facts = slot_facts(conn, new.owner_person_id, new.member_person_id, &new.month)?;
                        let slots = family::allocate_slots(new.owner_person_id, &facts)?;
                        let start = family::start(new.admission, now, new.review_period);
                        if let Some(month_slot) = slots.month_slot {
                            diesel::insert_into(family_binder_months::table)
                                .values((
                                    family_binder_months::member_person_id.eq(DbUuid(new.member_person_id)),
                                    family_binder_months::month.eq(&new.month),
                                    family_binder_months::owner_person_id.eq(DbUuid(new.owner_person_id)),
                                    family_binder_months::slot.eq(month_slot),
                                    family_binder_months::created_at.eq(now),
                                ))
                                .execute(conn)?;
                        }
                        diesel::insert_into(family_bindings::table)
                            .values((
                                family_bindings::id.eq(DbUuid(new.id)),
                                family_bindings::owner_person_id.eq(DbUuid(new.owner_person_id)),
                                family_bindings::member_person_id.eq(DbUuid(new.member_person_id)),
                                family_bindings::relationship.eq(new.relationship),
                                family_bindings::status.eq(start.status),
                                family_bindings::quota_slot.eq(Some(slots.quota_slot)),
                                family_bindings::member_birth_date.eq(new.member_birth_date),
                                family_bindings::face_session_id.eq(new.face_session_id.map(DbUuid)),
                                family_bindings::commitment_letter_id.eq(DbUuid(new.commitment_letter_id)),
                                family_bindings::owner_register_id.eq(DbUuid(new.owner_register_id)),
                                family_bindings::member_register_id.eq(DbUuid(new.member_register_id)),
                                family_bindings::family_aid.eq(false),
                                family_bindings::created_at.eq(now),
                                family_bindings::activated_at.eq(start.activated_at),
                            ))
                            .execute(conn)?;
                        diesel::insert_into(family_binding_terms::table)
                            .values((
                                family_binding_terms::binding_id.eq(DbUuid(new.id)),
                                family_binding_terms::relationship_proof.eq(start.proof.map(RelationshipProof::as_str)),
                                family_binding_terms::review_deadline.eq(start.review_deadline),
                                family_binding_terms::notice_version.eq(Some(new.notice_version)),
                                family_binding_terms::notice_accepted_at.eq(Some(now)),
                                family_binding_terms::channel.eq(new.channel),
                                family_binding_terms::owner_face_session_id.eq(new.owner_face_session_id.map(DbUuid)),
                                family_binding_terms::attested_by.eq(new.attested_by.as_deref()),
                            ))
                            .execute(conn)?;
                        if start.activates_member_voucher {
                            activate_for_family_in(conn, new.member_person_id, &new.partner_id, now)?;
                        }
                        Ok(find_in(conn, new.id)?.ok_or_else(|| ApiError::internal("binding vanished"))?)
                    },
                    family_write_raced,
                )
            })
            .await
    }

    /// Applies a FAMILY_BINDING face outcome to the PENDING_FACE binding of that session:
    /// PASSED activates it (and the member's voucher), FAILED rejects it, EXPIRED expires it, the
    /// last two freeing the place. `None` when no pending binding of that member has the
    /// session (unknown, or already final): nothing changes, so a redelivery is harmless.
    pub async fn apply_face_outcome(
        &self,
        session_id: Uuid,
        member: Uuid,
        outcome: FaceOutcome,
        partner_id: String,
        now: NaiveDateTime,
    ) -> ApiResult<Option<Binding>> {
        self.db
            .write(move |conn| {
                write_retrying(
                    conn,
                    |conn| {
                        let Some(binding) = pending_by_session(conn, session_id, member)? else {
                            return Ok(None);
                        };
                        let transition = family::face_transition(outcome);
                        write_transition(conn, binding.id, &transition, None, now)?;
                        if transition.activates_member_voucher {
                            activate_for_family_in(conn, member, &partner_id, now)?;
                        }
                        Ok(find_in(conn, binding.id)?)
                    },
                    family_write_raced,
                )
            })
            .await
    }

    /// Removes a live binding (by `by`), freeing its place at once; when it was ACTIVE and no
    /// other ACTIVE binding of the member remains, a voucher the member never activated
    /// themself is suspended. Returns the binding and whether the voucher was suspended.
    /// FAILED_PRECONDITION / BINDING_NOT_ACTIVE when it already ended.
    pub async fn remove(&self, id: Uuid, by: Remover, now: NaiveDateTime) -> ApiResult<(Binding, bool)> {
        self.db
            .write(move |conn| {
                write_retrying(
                    conn,
                    |conn| {
                        let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                        lock_owner(conn, binding.owner_person_id)?;
                        // Read again under the lock: a concurrent removal or face outcome may have won.
                        let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                        let other_active: i64 = family_bindings::table
                            .filter(family_bindings::member_person_id.eq(DbUuid(binding.member_person_id)))
                            .filter(family_bindings::status.eq(BindingStatus::Active))
                            .filter(family_bindings::id.ne(DbUuid(id)))
                            .count()
                            .get_result(conn)?;
                        let removal = family::decide_removal(binding.status, by, other_active)?;
                        write_transition(conn, id, &removal.transition, None, now)?;
                        let suspended = removal.suspends_member_voucher
                            && suspend_family_only_in(conn, binding.member_person_id, now)?;
                        Ok((find_in(conn, id)?.ok_or_else(binding_not_found)?, suspended))
                    },
                    family_write_raced,
                )
            })
            .await
    }

    /// Switches family aid of an ACTIVE binding; FAILED_PRECONDITION / BINDING_NOT_ACTIVE
    /// otherwise. Switching it on also needs `policy` to let the binder's scheme pay for the
    /// member's relationship (FAILED_PRECONDITION / FAMILY_AID_NOT_ELIGIBLE), decided by
    /// [`crate::domain::family::decide_family_aid_switch`] on the binder's open account, read here;
    /// switching it off is always allowed.
    pub async fn set_family_aid(&self, id: Uuid, enabled: bool, policy: FamilyAidPolicy) -> ApiResult<Binding> {
        self.db
            .write(move |conn| {
                write_retrying(
                    conn,
                    |conn| {
                        let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                        // The owner's account matters only to switching aid on.
                        let scheme = match enabled {
                            true => open_account_of(conn, binding.owner_person_id)?.map(|account| account.scheme),
                            false => None,
                        };
                        family::decide_family_aid_switch(
                            binding.status,
                            enabled,
                            &policy,
                            scheme,
                            binding.relationship,
                        )?;
                        let updated = diesel::update(
                            family_bindings::table
                                .filter(family_bindings::id.eq(DbUuid(id)))
                                .filter(family_bindings::status.eq(BindingStatus::Active)),
                        )
                        .set(family_bindings::family_aid.eq(enabled))
                        .execute(conn)?;
                        // A concurrent removal may have won since the read.
                        let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                        if updated == 0 {
                            family::require_active(binding.status)?;
                        }
                        Ok(binding)
                    },
                    family_write_raced,
                )
            })
            .await
    }

    /// An operator's review of a PENDING_REVIEW binding, decided by `domain::family::decide_review`
    /// on the row read under the owner's lock: APPROVE activates it (and the member's voucher,
    /// channel FAMILY), REJECT ends it with the reason and frees the place. `reviewer` is the
    /// operator's partner id.
    pub async fn review(
        &self,
        id: Uuid,
        decision: ReviewDecision,
        reviewer: String,
        now: NaiveDateTime,
    ) -> ApiResult<Binding> {
        self.db
            .write(move |conn| {
                write_retrying(
                    conn,
                    |conn| {
                        let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                        lock_owner(conn, binding.owner_person_id)?;
                        let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                        let transition =
                            family::review_transition(binding.status, binding.review_deadline, now, &decision)?;
                        let updated = write_transition(conn, id, &transition, Some(&reviewer), now)?;
                        if updated != 1 {
                            return Err(ApiError::internal("review: the binding changed under the owner's lock").into());
                        }
                        if transition.activates_member_voucher {
                            activate_for_family_in(conn, binding.member_person_id, &reviewer, now)?;
                        }
                        Ok(find_in(conn, id)?.ok_or_else(binding_not_found)?)
                    },
                    family_write_raced,
                )
            })
            .await
    }

    /// PENDING_REVIEW bindings, oldest deadline first, after `after` (the last one of the
    /// previous page: deadline and id).
    pub async fn list_pending_reviews(
        &self,
        after: Option<(NaiveDateTime, Uuid)>,
        limit: i64,
    ) -> ApiResult<Vec<Binding>> {
        self.db
            .run(move |conn| {
                let mut query = family_bindings::table
                    .inner_join(family_binding_terms::table)
                    .filter(family_bindings::status.eq(BindingStatus::PendingReview))
                    .select((BindingRow::as_select(), TermsRow::as_select()))
                    .order((family_binding_terms::review_deadline.asc(), family_bindings::id.asc()))
                    .limit(limit)
                    .into_boxed();
                if let Some((deadline, id)) = after {
                    query = query.filter(family_binding_terms::review_deadline.gt(deadline).or(
                        family_binding_terms::review_deadline.eq(deadline).and(family_bindings::id.gt(DbUuid(id))),
                    ));
                }
                Ok(query.load::<(BindingRow, TermsRow)>(conn)?.into_iter().map(Binding::from).collect())
            })
            .await
    }

    /// Expires every PENDING_REVIEW binding whose deadline has passed (freeing its place);
    /// returns how many. Nothing else changes: the member's voucher was never activated by it.
    pub async fn expire_overdue_reviews(&self, now: NaiveDateTime) -> ApiResult<usize> {
        self.db
            .write(move |conn| {
                write_retrying(
                    conn,
                    |conn| {
                        let overdue = family_binding_terms::table
                            .filter(family_binding_terms::review_deadline.le(now))
                            .select(family_binding_terms::binding_id);
                        Ok(diesel::update(
                            family_bindings::table
                                .filter(family_bindings::status.eq(BindingStatus::PendingReview))
                                .filter(family_bindings::id.eq_any(overdue)),
                        )
                        .set((
                            family_bindings::status.eq(BindingStatus::Expired),
                            family_bindings::quota_slot.eq(None::<i32>),
                            family_bindings::ended_at.eq(Some(now)),
                        ))
                        .execute(conn)?)
                    },
                    family_write_raced,
                )
            })
            .await
    }

    /// Runs [`FamilyStore::expire_overdue_reviews`] every `every`.
    pub fn spawn_review_sweeper(
        &self,
        clock: medins_common::clock::SharedClock,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.expire_overdue_reviews(clock.stored_now()).await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(count, "family bindings expired unreviewed"),
                    Err(error) => tracing::warn!(%error, "family review sweep failed"),
                }
            }
        })
    }

    /// An owner's bindings, newest first: live ones, and with `include_ended` the 50 most
    /// recent in all.
    pub async fn list_by_owner(&self, owner: Uuid, include_ended: bool) -> ApiResult<Vec<Binding>> {
        self.db
            .run(move |conn| {
                let mut query = family_bindings::table
                    .inner_join(family_binding_terms::table)
                    .filter(family_bindings::owner_person_id.eq(DbUuid(owner)))
                    .select((BindingRow::as_select(), TermsRow::as_select()))
                    .order((family_bindings::created_at.desc(), family_bindings::id.desc()))
                    .limit(50)
                    .into_boxed();
                if !include_ended {
                    query = query.filter(family_bindings::quota_slot.is_not_null());
                }
                Ok(query.load::<(BindingRow, TermsRow)>(conn)?.into_iter().map(Binding::from).collect())
            })
            .await
    }

    /// A member's live bindings, newest first.
    pub async fn list_by_member(&self, member: Uuid) -> ApiResult<Vec<Binding>> {
        self.db
            .run(move |conn| {
                Ok(family_bindings::table
                    .inner_join(family_binding_terms::table)
                    .filter(family_bindings::member_person_id.eq(DbUuid(member)))
                    .filter(family_bindings::quota_slot.is_not_null())
                    .select((BindingRow::as_select(), TermsRow::as_select()))
                    .order((family_bindings::created_at.desc(), family_bindings::id.desc()))
                    .load::<(BindingRow, TermsRow)>(conn)?
                    .into_iter()
                    .map(Binding::from)
                    .collect())
            })
            .await
    }
}

/// A binding to write.
#[derive(Debug, Clone)]
pub struct NewBinding {
    /// Binding id (also the face session's reference at identity-svc).
    pub id: Uuid,
    /// The owner.
    pub owner_person_id: Uuid,
    /// The member.
    pub member_person_id: Uuid,
    /// How they are related.
    pub relationship: Relationship,
    /// The member's birth date.
    pub member_birth_date: NaiveDate,
    /// The member's face session; `None` binds at once (under 16).
    pub face_session_id: Option<Uuid>,
    /// The three documents.
    pub commitment_letter_id: Uuid,
    /// The owner's household register page.
    pub owner_register_id: Uuid,
    /// The member's household register page.
    pub member_register_id: Uuid,
    /// The calendar month of binding (`YYYY-MM`, China Standard Time).
    pub month: String,
    /// The partner the binding is made through (recorded on the FAMILY activation).
    pub partner_id: String,
    /// What it starts as (`domain::family::admit`).
    pub admission: Admission,
    /// How long an operator has to review it, when it starts PENDING_REVIEW.
    pub review_period: chrono::Duration,
    /// The notice version the owner accepted (now).
    pub notice_version: &'static str,
    /// Where it is made.
    pub channel: BindingChannel,
    /// At a terminal or hospital office: the owner's PASSED face session there.
    pub owner_face_session_id: Option<Uuid>,
    /// At the window: the operator who saw the originals (staff id).
    pub attested_by: Option<String>,
}

/// The answer when a binding write lost its unique-index race on every run.
fn family_write_raced() -> ApiError {
    ApiError::internal("a family binding write lost its race three times")
}

fn binding_not_found() -> ApiError {
    ApiError::not_found(Reason::BindingNotFound, "no such family binding")
}

/// Serialises writes of one owner's bindings. PostgreSQL: the owner's voucher row, locked until
/// the transaction ends (the owner has one, or rule 1 refused the call). SQLite: `BEGIN
/// IMMEDIATE` already holds the database's single write lock.
fn lock_owner(conn: &mut DbConnection, owner: Uuid) -> QueryResult<()> {
    // `vouchers_one_per_person`: the row `first_locked!` locks is the owner's only one.
    let _voucher: Option<DbUuid> = medins_common::first_locked!(
        conn,
        vouchers::table.filter(vouchers::person_id.eq(DbUuid(owner))).select(vouchers::id)
    )?;
    Ok(())
}

/// The places a new binding by `owner` of `member` in `month` competes for (see
/// [`family::SlotFacts`]).
fn slot_facts(conn: &mut DbConnection, owner: Uuid, member: Uuid, month: &str) -> ApiResult<SlotFacts> {
    let already_bound: i64 = family_bindings::table
        .filter(family_bindings::owner_person_id.eq(DbUuid(owner)))
        .filter(family_bindings::member_person_id.eq(DbUuid(member)))
        .filter(family_bindings::quota_slot.is_not_null())
        .count()
        .get_result(conn)?;
    let owner_slots: Vec<Option<i32>> = family_bindings::table
        .filter(family_bindings::owner_person_id.eq(DbUuid(owner)))
        .filter(family_bindings::quota_slot.is_not_null())
        .select(family_bindings::quota_slot)
        .load(conn)?;
    let member_month: Vec<(DbUuid, i32)> = family_binder_months::table
        .filter(family_binder_months::member_person_id.eq(DbUuid(member)))
        .filter(family_binder_months::month.eq(month))
        .select((family_binder_months::owner_person_id, family_binder_months::slot))
        .load(conn)?;
    let member_month = member_month.into_iter().map(|(binder, slot)| (binder.into(), slot)).collect();
    Ok(SlotFacts {
        already_bound: already_bound > 0,
        owner_slots: owner_slots.into_iter().flatten().collect(),
        member_month,
    })
}

fn find_in(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<Binding>> {
    Ok(family_bindings::table
        .inner_join(family_binding_terms::table)
        .filter(family_bindings::id.eq(DbUuid(id)))
        .select((BindingRow::as_select(), TermsRow::as_select()))
        .first::<(BindingRow, TermsRow)>(conn)
        .optional()?
        .map(Binding::from))
}

fn pending_by_session(conn: &mut DbConnection, session_id: Uuid, member: Uuid) -> ApiResult<Option<Binding>> {
    Ok(family_bindings::table
        .inner_join(family_binding_terms::table)
        .filter(family_bindings::face_session_id.eq(DbUuid(session_id)))
        .filter(family_bindings::member_person_id.eq(DbUuid(member)))
        .filter(family_bindings::status.eq(BindingStatus::PendingFace))
        .select((BindingRow::as_select(), TermsRow::as_select()))
        .first::<(BindingRow, TermsRow)>(conn)
        .optional()?
        .map(Binding::from))
}

/// Writes a live binding's [`Transition`] (decided by `domain::family`): one that keeps the
/// place sets the status and `activated_at`; any other ends the binding and frees its place.
/// A review's transition records its reviewer with the proof or the rejection reason, in one
/// update (the schema wants an OPERATOR_REVIEW proof and a rejection reason to name their
/// reviewer). Returns the rows changed (0: the binding had ended already).
fn write_transition(
    conn: &mut DbConnection,
    id: Uuid,
    transition: &Transition,
    reviewer: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    let terms = family_binding_terms::table.find(DbUuid(id));
    let proof = transition.proof.map(RelationshipProof::as_str);
    if let Some(reviewer) = reviewer {
        diesel::update(terms)
            .set((
                family_binding_terms::relationship_proof.eq(proof),
                family_binding_terms::reviewed_by.eq(Some(reviewer)),
                family_binding_terms::reviewed_at.eq(Some(now)),
                family_binding_terms::rejection_reason.eq(transition.rejection_reason.as_deref()),
            ))
            .execute(conn)?;
    } else if proof.is_some() {
        diesel::update(terms).set(family_binding_terms::relationship_proof.eq(proof)).execute(conn)?;
    }
    let target = family_bindings::table
        .filter(family_bindings::id.eq(DbUuid(id)))
        .filter(family_bindings::quota_slot.is_not_null());
    if transition.keeps_place() {
        diesel::update(target)
            .set((family_bindings::status.eq(transition.to), family_bindings::activated_at.eq(Some(now))))
            .execute(conn)
    } else {
        diesel::update(target)
            .set((
                family_bindings::status.eq(transition.to),
                family_bindings::quota_slot.eq(None::<i32>),
                family_bindings::ended_at.eq(Some(now)),
                family_bindings::removed_by.eq(transition.removed_by),
            ))
            .execute(conn)
    }
}

/// The ACTIVE binding of `member` by `owner`, inside a caller's transaction.
pub fn find_active_in(conn: &mut DbConnection, owner: Uuid, member: Uuid) -> ApiResult<Option<Binding>> {
    Ok(family_bindings::table
        .inner_join(family_binding_terms::table)
        .filter(family_bindings::owner_person_id.eq(DbUuid(owner)))
        .filter(family_bindings::member_person_id.eq(DbUuid(member)))
        .filter(family_bindings::status.eq(BindingStatus::Active))
        .select((BindingRow::as_select(), TermsRow::as_select()))
        .first::<(BindingRow, TermsRow)>(conn)
        .optional()?
        .map(Binding::from))
}
