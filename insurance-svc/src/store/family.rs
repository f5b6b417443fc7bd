//! Family bindings at rest.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbConnection},
};
use uuid::Uuid;

use super::{
    account::open_account_of,
    ledger::{TxError, write_with_retry},
    schema::{family_binder_months, family_bindings, vouchers},
    voucher::{activate_for_family_in, suspend_family_only_in},
};
use crate::domain::{
    face::FaceOutcome,
    family::{self, BindingStatus, FAMILY_QUOTA, MONTHLY_BINDERS, Places, Relationship, Remover},
    settlement::{self, FamilyAidPolicy},
};

/// A family binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Binding id.
    pub id: Uuid,
    /// The person who bound the member (the binder).
    pub owner_person_id: Uuid,
    /// The bound member.
    pub member_person_id: Uuid,
    /// How the member is related to the owner.
    pub relationship: Relationship,
    /// Status.
    pub status: BindingStatus,
    /// The member's birth date (age rules and displays).
    pub member_birth_date: NaiveDate,
    /// The member's FAMILY_BINDING face session (members 16 and over).
    pub face_session_id: Option<Uuid>,
    /// The commitment letter.
    pub commitment_letter_id: Uuid,
    /// The owner's household register page.
    pub owner_register_id: Uuid,
    /// The member's household register page.
    pub member_register_id: Uuid,
    /// Whether the owner pays the member's bills from their own individual account.
    pub family_aid: bool,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Became ACTIVE.
    pub activated_at: Option<NaiveDateTime>,
    /// Ended (REJECTED, EXPIRED, REMOVED).
    pub ended_at: Option<NaiveDateTime>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = family_bindings)]
pub(crate) struct BindingRow {
    id: String,
    owner_person_id: String,
    member_person_id: String,
    relationship: String,
    status: String,
    member_birth_date: NaiveDate,
    face_session_id: Option<String>,
    commitment_letter_id: String,
    owner_register_id: String,
    member_register_id: String,
    family_aid: bool,
    created_at: NaiveDateTime,
    activated_at: Option<NaiveDateTime>,
    ended_at: Option<NaiveDateTime>,
}

impl TryFrom<BindingRow> for Binding {
    type Error = ApiError;

    fn try_from(row: BindingRow) -> ApiResult<Self> {
        let bad = |what: &str| ApiError::internal(format_args!("family binding {}: bad {what}", row.id));
        let uuid = |text: &str, what: &str| Uuid::parse_str(text).map_err(|_| bad(what));
        Ok(Binding {
            id: uuid(&row.id, "id")?,
            owner_person_id: uuid(&row.owner_person_id, "owner_person_id")?,
            member_person_id: uuid(&row.member_person_id, "member_person_id")?,
            relationship: Relationship::parse(&row.relationship).ok_or_else(|| bad("relationship"))?,
            status: BindingStatus::parse(&row.status).ok_or_else(|| bad("status"))?,
            member_birth_date: row.member_birth_date,
            face_session_id: row.face_session_id.as_deref().map(|s| uuid(s, "face_session_id")).transpose()?,
            commitment_letter_id: uuid(&row.commitment_letter_id, "commitment_letter_id")?,
            owner_register_id: uuid(&row.owner_register_id, "owner_register_id")?,
            member_register_id: uuid(&row.member_register_id, "member_register_id")?,
            family_aid: row.family_aid,
            created_at: row.created_at,
            activated_at: row.activated_at,
            ended_at: row.ended_at,
        })
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
        self.db.run(move |conn| family::check_places(places_in(conn, owner, member, &month)?)).await
    }

    /// Writes a new binding: under the owner's lock (`SELECT ... FOR UPDATE` of the owner's
    /// voucher on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) rules 4-6 are checked again, the
    /// binding takes the owner's lowest free quota slot and the member's binder-month slot, and
    /// an ACTIVE binding activates the member's voucher (channel FAMILY), all in one transaction.
    pub async fn add(&self, new: NewBinding, now: NaiveDateTime) -> ApiResult<Binding> {
        self.db
            .write(move |conn| {
                write_with_retry(conn, |conn| {
                    lock_owner(conn, new.owner_person_id)?;
                    let places = places_in(conn, new.owner_person_id, new.member_person_id, &new.month)?;
                    family::check_places(places)?;
                    let slot = free_slot(conn, new.owner_person_id)?;
                    let months = binder_month_slots(conn, new.member_person_id, &new.month)?;
                    let owner_text = new.owner_person_id.to_string();
                    if !months.iter().any(|(owner, _)| *owner == owner_text) {
                        let month_slot = (1..=MONTHLY_BINDERS as i32)
                            .find(|candidate| !months.iter().any(|(_, taken)| taken == candidate))
                            .ok_or_else(|| ApiError::internal("binder months: no free slot after the check"))?;
                        diesel::insert_into(family_binder_months::table)
                            .values((
                                family_binder_months::member_person_id.eq(new.member_person_id.to_string()),
                                family_binder_months::month.eq(&new.month),
                                family_binder_months::owner_person_id.eq(&owner_text),
                                family_binder_months::slot.eq(month_slot),
                                family_binder_months::created_at.eq(now),
                            ))
                            .execute(conn)?;
                    }
                    let active = new.face_session_id.is_none();
                    let status = if active { BindingStatus::Active } else { BindingStatus::PendingFace };
                    diesel::insert_into(family_bindings::table)
                        .values((
                            family_bindings::id.eq(new.id.to_string()),
                            family_bindings::owner_person_id.eq(&owner_text),
                            family_bindings::member_person_id.eq(new.member_person_id.to_string()),
                            family_bindings::relationship.eq(new.relationship.as_str()),
                            family_bindings::status.eq(status.as_str()),
                            family_bindings::quota_slot.eq(Some(slot)),
                            family_bindings::member_birth_date.eq(new.member_birth_date),
                            family_bindings::face_session_id.eq(new.face_session_id.map(|id| id.to_string())),
                            family_bindings::commitment_letter_id.eq(new.commitment_letter_id.to_string()),
                            family_bindings::owner_register_id.eq(new.owner_register_id.to_string()),
                            family_bindings::member_register_id.eq(new.member_register_id.to_string()),
                            family_bindings::family_aid.eq(false),
                            family_bindings::created_at.eq(now),
                            family_bindings::activated_at.eq(active.then_some(now)),
                        ))
                        .execute(conn)?;
                    if active {
                        activate_for_family_in(conn, new.member_person_id, &new.partner_id, now)?;
                    }
                    Ok(find_in(conn, new.id)?.ok_or_else(|| ApiError::internal("binding vanished"))?)
                })
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
                write_with_retry(conn, |conn| {
                    let Some(binding) = pending_by_session(conn, session_id, member)? else {
                        return Ok(None);
                    };
                    let status = family::status_after_face(outcome);
                    end_or_activate(conn, binding.id, status, None, now)?;
                    if status == BindingStatus::Active {
                        activate_for_family_in(conn, member, &partner_id, now)?;
                    }
                    Ok(find_in(conn, binding.id)?)
                })
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
                write_with_retry(conn, |conn| {
                    let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                    lock_owner(conn, binding.owner_person_id)?;
                    // Read again under the lock: a concurrent removal or face outcome may have won.
                    let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                    if !binding.status.is_live() {
                        family::require_active(binding.status)?;
                    }
                    end_or_activate(conn, id, BindingStatus::Removed, Some(by), now)?;
                    let mut suspended = false;
                    if binding.status == BindingStatus::Active {
                        let others: i64 = family_bindings::table
                            .filter(family_bindings::member_person_id.eq(binding.member_person_id.to_string()))
                            .filter(family_bindings::status.eq(BindingStatus::Active.as_str()))
                            .count()
                            .get_result(conn)?;
                        if others == 0 {
                            suspended = suspend_family_only_in(conn, binding.member_person_id, now)?;
                        }
                    }
                    Ok((find_in(conn, id)?.ok_or_else(binding_not_found)?, suspended))
                })
            })
            .await
    }

    /// Switches family aid of an ACTIVE binding; FAILED_PRECONDITION / BINDING_NOT_ACTIVE
    /// otherwise. Switching it on also needs `policy` to let the binder's scheme pay for the
    /// member's relationship (FAILED_PRECONDITION / FAMILY_AID_NOT_ELIGIBLE), decided by
    /// [`settlement::require_family_aid_eligible`] on the binder's open account, read here;
    /// switching it off is always allowed.
    pub async fn set_family_aid(&self, id: Uuid, enabled: bool, policy: FamilyAidPolicy) -> ApiResult<Binding> {
        self.db
            .write(move |conn| {
                write_with_retry(conn, |conn| {
                    if enabled {
                        let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                        family::require_active(binding.status)?;
                        let scheme = open_account_of(conn, binding.owner_person_id)?.map(|account| account.scheme);
                        settlement::require_family_aid_eligible(&policy, scheme, binding.relationship)?;
                    }
                    let updated = diesel::update(
                        family_bindings::table
                            .filter(family_bindings::id.eq(id.to_string()))
                            .filter(family_bindings::status.eq(BindingStatus::Active.as_str())),
                    )
                    .set(family_bindings::family_aid.eq(enabled))
                    .execute(conn)?;
                    let binding = find_in(conn, id)?.ok_or_else(binding_not_found)?;
                    if updated == 0 {
                        family::require_active(binding.status)?;
                    }
                    Ok(binding)
                })
            })
            .await
    }

    /// An owner's bindings, newest first: live ones, and with `include_ended` the 50 most
    /// recent in all.
    pub async fn list_by_owner(&self, owner: Uuid, include_ended: bool) -> ApiResult<Vec<Binding>> {
        self.db
            .run(move |conn| {
                let mut query = family_bindings::table
                    .filter(family_bindings::owner_person_id.eq(owner.to_string()))
                    .select(BindingRow::as_select())
                    .order((family_bindings::created_at.desc(), family_bindings::id.desc()))
                    .limit(50)
                    .into_boxed();
                if !include_ended {
                    query = query.filter(family_bindings::quota_slot.is_not_null());
                }
                query.load(conn)?.into_iter().map(Binding::try_from).collect()
            })
            .await
    }

    /// A member's live bindings, newest first.
    pub async fn list_by_member(&self, member: Uuid) -> ApiResult<Vec<Binding>> {
        self.db
            .run(move |conn| {
                family_bindings::table
                    .filter(family_bindings::member_person_id.eq(member.to_string()))
                    .filter(family_bindings::quota_slot.is_not_null())
                    .select(BindingRow::as_select())
                    .order((family_bindings::created_at.desc(), family_bindings::id.desc()))
                    .load(conn)?
                    .into_iter()
                    .map(Binding::try_from)
                    .collect()
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
}

fn binding_not_found() -> ApiError {
    ApiError::not_found(Reason::BindingNotFound, "no such family binding")
}

/// Serialises writes of one owner's bindings. PostgreSQL: the owner's voucher row, locked until
/// the transaction ends (the owner has one, or rule 1 refused the call). SQLite: `BEGIN
/// IMMEDIATE` already holds the database's single write lock.
fn lock_owner(conn: &mut DbConnection, owner: Uuid) -> QueryResult<()> {
    if let DbConnection::Postgres(pg) = conn {
        vouchers::table
            .filter(vouchers::person_id.eq(owner.to_string()))
            .select(vouchers::id)
            .for_update()
            .load::<String>(pg)?;
    }
    Ok(())
}

fn places_in(conn: &mut DbConnection, owner: Uuid, member: Uuid, month: &str) -> QueryResult<Places> {
    let owner_text = owner.to_string();
    let already_bound: i64 = family_bindings::table
        .filter(family_bindings::owner_person_id.eq(&owner_text))
        .filter(family_bindings::member_person_id.eq(member.to_string()))
        .filter(family_bindings::quota_slot.is_not_null())
        .count()
        .get_result(conn)?;
    let owner_live: i64 = family_bindings::table
        .filter(family_bindings::owner_person_id.eq(&owner_text))
        .filter(family_bindings::quota_slot.is_not_null())
        .count()
        .get_result(conn)?;
    let other_binders_this_month =
        binder_month_slots(conn, member, month)?.iter().filter(|(binder, _)| *binder != owner_text).count() as i64;
    Ok(Places { already_bound: already_bound > 0, owner_live, other_binders_this_month })
}

fn binder_month_slots(conn: &mut DbConnection, member: Uuid, month: &str) -> QueryResult<Vec<(String, i32)>> {
    family_binder_months::table
        .filter(family_binder_months::member_person_id.eq(member.to_string()))
        .filter(family_binder_months::month.eq(month))
        .select((family_binder_months::owner_person_id, family_binder_months::slot))
        .load(conn)
}

fn free_slot(conn: &mut DbConnection, owner: Uuid) -> Result<i32, TxError> {
    let taken: Vec<Option<i32>> = family_bindings::table
        .filter(family_bindings::owner_person_id.eq(owner.to_string()))
        .filter(family_bindings::quota_slot.is_not_null())
        .select(family_bindings::quota_slot)
        .load(conn)?;
    (1..=FAMILY_QUOTA as i32)
        .find(|slot| !taken.contains(&Some(*slot)))
        .ok_or_else(|| TxError::Api(ApiError::internal("family quota: no free slot after the check")))
}

fn find_in(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<Binding>> {
    family_bindings::table
        .find(id.to_string())
        .select(BindingRow::as_select())
        .first(conn)
        .optional()?
        .map(Binding::try_from)
        .transpose()
}

fn pending_by_session(conn: &mut DbConnection, session_id: Uuid, member: Uuid) -> ApiResult<Option<Binding>> {
    family_bindings::table
        .filter(family_bindings::face_session_id.eq(session_id.to_string()))
        .filter(family_bindings::member_person_id.eq(member.to_string()))
        .filter(family_bindings::status.eq(BindingStatus::PendingFace.as_str()))
        .select(BindingRow::as_select())
        .first(conn)
        .optional()?
        .map(Binding::try_from)
        .transpose()
}

/// Moves a live binding to `status`: ACTIVE keeps its place; every other status ends it and
/// frees the place.
fn end_or_activate(
    conn: &mut DbConnection,
    id: Uuid,
    status: BindingStatus,
    removed_by: Option<Remover>,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    let target = family_bindings::table
        .filter(family_bindings::id.eq(id.to_string()))
        .filter(family_bindings::quota_slot.is_not_null());
    if status == BindingStatus::Active {
        diesel::update(target)
            .set((family_bindings::status.eq(status.as_str()), family_bindings::activated_at.eq(Some(now))))
            .execute(conn)
    } else {
        diesel::update(target)
            .set((
                family_bindings::status.eq(status.as_str()),
                family_bindings::quota_slot.eq(None::<i32>),
                family_bindings::ended_at.eq(Some(now)),
                family_bindings::removed_by.eq(removed_by.map(Remover::as_str)),
            ))
            .execute(conn)
    }
}

/// The ACTIVE binding of `member` by `owner`, inside a caller's transaction.
pub fn find_active_in(conn: &mut DbConnection, owner: Uuid, member: Uuid) -> ApiResult<Option<Binding>> {
    family_bindings::table
        .filter(family_bindings::owner_person_id.eq(owner.to_string()))
        .filter(family_bindings::member_person_id.eq(member.to_string()))
        .filter(family_bindings::status.eq(BindingStatus::Active.as_str()))
        .select(BindingRow::as_select())
        .first(conn)
        .optional()?
        .map(Binding::try_from)
        .transpose()
}
