//! Visits: opened by redeeming a payment code at a hospital or pharmacy counter; the settlement
//! of a visit refers to it.
//!
//! A visit row says which voucher and person it is for, the account that was insured (ACTIVE)
//! when it was opened, the partner (hospital or pharmacy) that opened it, and the code's nonce
//! and key id. `visits.code_nonce` is unique: a code opens at most one visit, on any replica.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, is_unique_violation, write_transaction},
};
use uuid::Uuid;

use super::schema::{accounts, visits, vouchers};
use crate::domain::{
    account::{AccountStatus, Scheme},
    voucher::{VoucherStatus, require_insured},
};

/// A visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    /// Visit id.
    pub id: Uuid,
    /// The voucher whose code opened it.
    pub voucher_id: Uuid,
    /// The holder.
    pub person_id: Uuid,
    /// The holder's account (ACTIVE when the visit was opened).
    pub account_id: Uuid,
    /// The hospital or pharmacy partner that verified the code; only it settles the visit.
    pub partner_id: String,
    /// The key that signed the code (`ck-...`).
    pub code_key_id: String,
    /// When the code was verified.
    pub opened_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = visits)]
struct VisitRow {
    id: String,
    voucher_id: String,
    person_id: String,
    account_id: String,
    partner_id: String,
    code_key_id: String,
    opened_at: NaiveDateTime,
}

impl TryFrom<VisitRow> for Visit {
    type Error = ApiError;

    fn try_from(row: VisitRow) -> ApiResult<Self> {
        let uuid = |text: &str, what: &str| {
            Uuid::parse_str(text).map_err(|_| ApiError::internal(format_args!("visit {}: bad {what}", row.id)))
        };
        Ok(Visit {
            id: uuid(&row.id, "id")?,
            voucher_id: uuid(&row.voucher_id, "voucher_id")?,
            person_id: uuid(&row.person_id, "person_id")?,
            account_id: uuid(&row.account_id, "account_id")?,
            partner_id: row.partner_id,
            code_key_id: row.code_key_id,
            opened_at: row.opened_at,
        })
    }
}

/// A verified code to redeem.
#[derive(Debug, Clone)]
pub struct Redemption {
    /// The voucher named by the code.
    pub voucher_id: Uuid,
    /// The code's nonce.
    pub nonce: [u8; 16],
    /// The signing key id.
    pub key_id: String,
    /// The verifying partner.
    pub partner_id: String,
}

/// What the counter is told about the insured holder of a new visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedVisit {
    /// The visit.
    pub visit: Visit,
    /// The account's scheme.
    pub scheme: Scheme,
    /// The insured region.
    pub region_code: String,
    /// The account status (ACTIVE).
    pub account_status: AccountStatus,
    /// The holder's birth date (for the age shown).
    pub birth_date: NaiveDate,
}

/// The visits table.
#[derive(Clone, Debug)]
pub struct VisitStore {
    db: Db,
}

type VoucherAndAccount = (String, String, Option<(String, String, String, String, NaiveDate)>);

impl VisitStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// A visit by id.
    pub async fn find(&self, id: Uuid) -> ApiResult<Option<Visit>> {
        self.db
            .read(move |conn| {
                let row = visits::table.find(id.to_string()).select(VisitRow::as_select()).first(conn).optional()?;
                row.map(Visit::try_from).transpose()
            })
            .await
    }

    /// Opens a visit for a verified code, in one transaction with the read of the voucher and
    /// account state (one join): the voucher must be ACTIVE (VOUCHER_NOT_ACTIVE) and the
    /// holder's account ACTIVE (NOT_INSURED); the nonce must be new (CODE_ALREADY_USED: the
    /// unique index decides, across replicas).
    pub async fn open_for_code(&self, redemption: Redemption, now: NaiveDateTime) -> ApiResult<OpenedVisit> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let voucher_id = redemption.voucher_id.to_string();
                    let found: Option<VoucherAndAccount> = vouchers::table
                        .left_join(
                            accounts::table.on(accounts::person_id
                                .eq(vouchers::person_id)
                                .and(accounts::status.ne(AccountStatus::Closed.as_str()))),
                        )
                        .filter(vouchers::id.eq(&voucher_id))
                        .select((
                            vouchers::person_id,
                            vouchers::status,
                            (
                                accounts::id,
                                accounts::scheme,
                                accounts::region_code,
                                accounts::status,
                                accounts::birth_date,
                            )
                                .nullable(),
                        ))
                        .first(conn)
                        .optional()?;
                    let not_active =
                        || ApiError::failed_precondition(Reason::VoucherNotActive, "the voucher is not active");
                    let (person_id, voucher_status, account) = found.ok_or_else(not_active)?;
                    if voucher_status != VoucherStatus::Active.as_str() {
                        return Err(not_active());
                    }
                    let account_status = account
                        .as_ref()
                        .map(|a| AccountStatus::parse(&a.3).ok_or_else(|| ApiError::internal("account: bad status")))
                        .transpose()?;
                    require_insured(account_status)?;
                    let (account_id, scheme, region_code, _, birth_date) = account.expect("insured means an account");
                    let visit = Visit {
                        id: Uuid::now_v7(),
                        voucher_id: redemption.voucher_id,
                        person_id: Uuid::parse_str(&person_id)
                            .map_err(|_| ApiError::internal("voucher: bad person"))?,
                        account_id: Uuid::parse_str(&account_id).map_err(|_| ApiError::internal("account: bad id"))?,
                        partner_id: redemption.partner_id.clone(),
                        code_key_id: redemption.key_id.clone(),
                        opened_at: now,
                    };
                    let inserted = diesel::insert_into(visits::table)
                        .values((
                            visits::id.eq(visit.id.to_string()),
                            visits::voucher_id.eq(&voucher_id),
                            visits::person_id.eq(&person_id),
                            visits::account_id.eq(&account_id),
                            visits::partner_id.eq(&visit.partner_id),
                            visits::code_nonce.eq(redemption.nonce.as_slice()),
                            visits::code_key_id.eq(&visit.code_key_id),
                            visits::opened_at.eq(now),
                        ))
                        .execute(conn);
                    match inserted {
                        Ok(_) => Ok(OpenedVisit {
                            visit,
                            scheme: Scheme::parse(&scheme).ok_or_else(|| ApiError::internal("account: bad scheme"))?,
                            region_code,
                            account_status: AccountStatus::Active,
                            birth_date,
                        }),
                        Err(error) if is_unique_violation(&error) => Err(ApiError::failed_precondition(
                            Reason::CodeAlreadyUsed,
                            "this code was already used: show a fresh one",
                        )),
                        Err(error) => Err(error.into()),
                    }
                })
            })
            .await
    }
}
