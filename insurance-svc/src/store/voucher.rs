//! Vouchers and their activations at rest.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::db::DbUuid;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbConnection, TxError, is_unique_violation, write_retrying, write_transaction},
};
use uuid::Uuid;

use super::schema::{voucher_activations, vouchers};
use crate::domain::voucher::{Channel, FaceCheck, Suspender, Voucher, VoucherStatus, may_resume};

#[derive(Queryable, Selectable)]
#[diesel(table_name = vouchers)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct VoucherRow {
    id: DbUuid,
    person_id: DbUuid,
    status: VoucherStatus,
    suspended_by: Option<Suspender>,
    activated_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// One activation to record.
#[derive(Debug, Clone)]
pub struct NewActivation {
    /// The person activating.
    pub person_id: Uuid,
    /// Through which channel.
    pub channel: Channel,
    /// The face session that proved it was them (None only for FAMILY).
    pub face_session_id: Option<Uuid>,
    /// The partner that called.
    pub partner_id: String,
}

/// A change of a voucher's status.
#[derive(Debug, Clone)]
pub enum StatusChange {
    /// Suspend (no change if suspended already).
    Suspend {
        /// Who.
        by: Suspender,
        /// Why (free text, validated).
        reason: String,
    },
    /// Resume (no change if active); `by` must be allowed to lift the suspension.
    Resume {
        /// Who.
        by: Suspender,
    },
}

/// The vouchers tables.
#[derive(Clone, Debug)]
pub struct VoucherStore {
    db: Db,
}

fn voucher_not_found() -> ApiError {
    ApiError::of(Reason::VoucherNotFound, "this person has not activated a voucher")
}

fn load_voucher(conn: &mut DbConnection, row: VoucherRow) -> ApiResult<Voucher> {
    let channels: Vec<Channel> = voucher_activations::table
        .filter(voucher_activations::voucher_id.eq(row.id))
        .order((voucher_activations::activated_at.asc(), voucher_activations::id.asc()))
        .select(voucher_activations::channel)
        .load(conn)?;
    let mut distinct = Vec::new();
    for channel in channels {
        if !distinct.contains(&channel) {
            distinct.push(channel);
        }
    }
    Ok(Voucher {
        id: row.id.into(),
        person_id: row.person_id.into(),
        status: row.status,
        suspended_by: row.suspended_by,
        activated_at: row.activated_at,
        updated_at: row.updated_at,
        channels: distinct,
    })
}

fn voucher_row_of(conn: &mut DbConnection, person_id: Uuid) -> QueryResult<Option<VoucherRow>> {
    vouchers::table
        .filter(vouchers::person_id.eq(DbUuid(person_id)))
        .select(VoucherRow::as_select())
        .first(conn)
        .optional()
}

impl VoucherStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// A person's voucher.
    pub async fn find_by_person(&self, person_id: Uuid) -> ApiResult<Option<Voucher>> {
        self.db
            .read(move |conn| match voucher_row_of(conn, person_id)? {
                Some(row) => load_voucher(conn, row).map(Some),
                None => Ok(None),
            })
            .await
    }

    /// A person's voucher id and status only (the code-issue path: one indexed read).
    pub async fn status_of(&self, person_id: Uuid) -> ApiResult<Option<(Uuid, VoucherStatus)>> {
        self.db
            .read(move |conn| {
                let row: Option<(DbUuid, VoucherStatus)> = vouchers::table
                    .filter(vouchers::person_id.eq(DbUuid(person_id)))
                    .select((vouchers::id, vouchers::status))
                    .first(conn)
                    .optional()?;
                Ok(row.map(|(id, status)| (id.into(), status)))
            })
            .await
    }

    /// Records an activation in one transaction: creates the voucher (ACTIVE) if the person has
    /// none, and the activation row. Returns the voucher and whether it was created. A face
    /// session that activated before is FACE_VERIFICATION_REQUIRED (`reused`, by the unique
    /// index, so concurrent calls cannot both use it); a suspended voucher is
    /// VOUCHER_NOT_ACTIVE.
    pub async fn activate(&self, activation: NewActivation, now: NaiveDateTime) -> ApiResult<(Voucher, bool)> {
        self.db
            .write(move |conn| {
                // Two concurrent first activations on PostgreSQL: the loser's voucher insert hits
                // the one-per-person index; the second run finds the winner's voucher.
                write_retrying(
                    conn,
                    |conn| activate_once(conn, &activation, now),
                    || ApiError::internal("voucher activation kept racing"),
                )
            })
            .await
    }

    /// Suspends or resumes a person's voucher; returns it as it is afterwards. NOT_FOUND /
    /// VOUCHER_NOT_FOUND if the person has none.
    pub async fn change_status(&self, person_id: Uuid, change: StatusChange, now: NaiveDateTime) -> ApiResult<Voucher> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let row = voucher_row_of(conn, person_id)?.ok_or_else(voucher_not_found)?;
                    let current = load_voucher(conn, row)?;
                    let id = DbUuid(current.id);
                    match (&change, current.status) {
                        (StatusChange::Suspend { by, reason }, VoucherStatus::Active) => {
                            diesel::update(vouchers::table.find(id))
                                .set((
                                    vouchers::status.eq(VoucherStatus::Suspended),
                                    vouchers::suspended_by.eq(Some(by)),
                                    vouchers::suspension_reason.eq(Some(reason.as_str())),
                                    vouchers::updated_at.eq(now),
                                ))
                                .execute(conn)?;
                        }
                        (StatusChange::Resume { by }, VoucherStatus::Suspended) => {
                            may_resume(current.suspended_by.unwrap_or(Suspender::Ops), *by)?;
                            diesel::update(vouchers::table.find(id))
                                .set((
                                    vouchers::status.eq(VoucherStatus::Active),
                                    vouchers::suspended_by.eq(None::<Suspender>),
                                    vouchers::suspension_reason.eq(None::<&str>),
                                    vouchers::updated_at.eq(now),
                                ))
                                .execute(conn)?;
                        }
                        // Already in the wanted state: the same answer as the first call.
                        _ => return Ok(current),
                    }
                    let row = voucher_row_of(conn, person_id)?.ok_or_else(voucher_not_found)?;
                    load_voucher(conn, row)
                })
            })
            .await
    }
}

fn activate_once(
    conn: &mut DbConnection,
    activation: &NewActivation,
    now: NaiveDateTime,
) -> Result<(Voucher, bool), TxError> {
    let (voucher_id, created) = match voucher_row_of(conn, activation.person_id)? {
        // The holder's own activation lifts a suspension left by an ended family binding.
        Some(row) if row.suspended_by == Some(Suspender::Family) => {
            set_active(conn, row.id, now)?;
            (row.id, false)
        }
        Some(row) if row.status != VoucherStatus::Active => {
            return Err(TxError::Api(ApiError::of(
                Reason::VoucherNotActive,
                "the voucher is suspended: resume it (ResumeVoucher) instead of activating it again",
            )));
        }
        Some(row) => (row.id, false),
        None => {
            let id = DbUuid(Uuid::now_v7());
            let inserted = diesel::insert_into(vouchers::table)
                .values((
                    vouchers::id.eq(id),
                    vouchers::person_id.eq(DbUuid(activation.person_id)),
                    vouchers::status.eq(VoucherStatus::Active),
                    vouchers::activated_at.eq(now),
                    vouchers::updated_at.eq(now),
                ))
                .execute(conn);
            match inserted {
                Ok(_) => (id, true),
                Err(error) if is_unique_violation(&error) => return Err(TxError::Raced),
                Err(error) => return Err(error.into()),
            }
        }
    };
    let inserted = diesel::insert_into(voucher_activations::table)
        .values((
            voucher_activations::id.eq(DbUuid(Uuid::now_v7())),
            voucher_activations::voucher_id.eq(voucher_id),
            voucher_activations::channel.eq(activation.channel),
            voucher_activations::face_session_id.eq(activation.face_session_id.map(DbUuid)),
            voucher_activations::partner_id.eq(&activation.partner_id),
            voucher_activations::activated_at.eq(now),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Err(TxError::Api(FaceCheck::Reused.into_error())),
        Err(error) => return Err(error.into()),
    }
    let row = vouchers::table.find(voucher_id).select(VoucherRow::as_select()).first(conn)?;
    Ok((load_voucher(conn, row).map_err(TxError::Api)?, created))
}

fn set_active(conn: &mut DbConnection, voucher_id: DbUuid, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(vouchers::table.find(voucher_id))
        .set((
            vouchers::status.eq(VoucherStatus::Active),
            vouchers::suspended_by.eq(None::<Suspender>),
            vouchers::suspension_reason.eq(None::<&str>),
            vouchers::updated_at.eq(now),
        ))
        .execute(conn)
}

/// Activates a member's voucher through a family binding, inside the binding's transaction:
/// creates it ACTIVE if the member has none, lifts a FAMILY suspension, and records a FAMILY
/// activation. A suspension by operators or by the holder stays: the binding does not overrule
/// it. A concurrent creation of the same voucher surfaces as a unique violation for the caller
/// to retry.
pub(crate) fn activate_for_family_in(
    conn: &mut DbConnection,
    member: Uuid,
    partner_id: &str,
    now: NaiveDateTime,
) -> QueryResult<()> {
    let voucher_id = match voucher_row_of(conn, member)? {
        Some(row) => {
            if row.suspended_by == Some(Suspender::Family) {
                set_active(conn, row.id, now)?;
            }
            row.id
        }
        None => {
            let id = DbUuid(Uuid::now_v7());
            diesel::insert_into(vouchers::table)
                .values((
                    vouchers::id.eq(id),
                    vouchers::person_id.eq(DbUuid(member)),
                    vouchers::status.eq(VoucherStatus::Active),
                    vouchers::activated_at.eq(now),
                    vouchers::updated_at.eq(now),
                ))
                .execute(conn)?;
            id
        }
    };
    diesel::insert_into(voucher_activations::table)
        .values((
            voucher_activations::id.eq(DbUuid(Uuid::now_v7())),
            voucher_activations::voucher_id.eq(voucher_id),
            voucher_activations::channel.eq(Channel::Family),
            voucher_activations::face_session_id.eq(None::<DbUuid>),
            voucher_activations::partner_id.eq(partner_id),
            voucher_activations::activated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// After a member's last ACTIVE binding ended (inside that transaction): suspends the member's
/// voucher (by FAMILY) when it is ACTIVE and was never activated by the member themself.
/// Returns whether it was suspended.
pub(crate) fn suspend_family_only_in(conn: &mut DbConnection, member: Uuid, now: NaiveDateTime) -> QueryResult<bool> {
    let Some(row) = voucher_row_of(conn, member)? else {
        return Ok(false);
    };
    if row.status != VoucherStatus::Active {
        return Ok(false);
    }
    let own_activations: i64 = voucher_activations::table
        .filter(voucher_activations::voucher_id.eq(row.id))
        .filter(voucher_activations::channel.ne(Channel::Family))
        .count()
        .get_result(conn)?;
    if own_activations > 0 {
        return Ok(false);
    }
    diesel::update(vouchers::table.find(row.id))
        .set((
            vouchers::status.eq(VoucherStatus::Suspended),
            vouchers::suspended_by.eq(Some(Suspender::Family)),
            vouchers::suspension_reason.eq(Some("family binding ended")),
            vouchers::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(true)
}
