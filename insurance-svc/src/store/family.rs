//! Family bindings at rest.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult,
    db::{Db, DbConnection},
};
use uuid::Uuid;

use super::schema::family_bindings;
use crate::domain::family::{BindingStatus, Relationship};

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
        self.db.run(move |conn| find_active_in(conn, owner, member)).await
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
