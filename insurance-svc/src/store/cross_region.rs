//! Cross-region care filings at rest. The rules are `domain::cross_region`'s; this file reads
//! the facts they need and writes their decision, under the person's account lock so that two
//! concurrent filings cannot both pass the overlap rule.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbConnection, write_transaction},
};
use uuid::Uuid;

use super::{account::lock_account, schema::cross_region_filings};
use crate::domain::cross_region::{Filing, FilingKind, FilingStatus, FilingTerms, admit_cancel, admit_filing};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = cross_region_filings)]
struct FilingRow {
    id: String,
    person_id: String,
    insured_region_code: String,
    destination_region_code: String,
    kind: String,
    starts_on: NaiveDate,
    ends_on: Option<NaiveDate>,
    status: String,
    filed_by: String,
    filed_at: NaiveDateTime,
    cancelled_at: Option<NaiveDateTime>,
}

impl TryFrom<FilingRow> for Filing {
    type Error = ApiError;

    fn try_from(row: FilingRow) -> ApiResult<Self> {
        let bad = |what: &str| ApiError::internal(format_args!("cross-region filing {}: bad {what}", row.id));
        Ok(Filing {
            id: Uuid::parse_str(&row.id).map_err(|_| bad("id"))?,
            person_id: Uuid::parse_str(&row.person_id).map_err(|_| bad("person_id"))?,
            kind: FilingKind::parse(&row.kind).ok_or_else(|| bad("kind"))?,
            status: FilingStatus::parse(&row.status).ok_or_else(|| bad("status"))?,
            insured_region_code: row.insured_region_code,
            destination_region_code: row.destination_region_code,
            starts_on: row.starts_on,
            ends_on: row.ends_on,
            filed_by: row.filed_by,
            filed_at: row.filed_at,
            cancelled_at: row.cancelled_at,
        })
    }
}

fn filing_not_found() -> ApiError {
    ApiError::not_found(Reason::CrossRegionFilingNotFound, "no such cross-region filing for this person")
}

fn filings_of(conn: &mut DbConnection, person_id: Uuid) -> ApiResult<Vec<Filing>> {
    cross_region_filings::table
        .filter(cross_region_filings::person_id.eq(person_id.to_string()))
        .order((cross_region_filings::filed_at.desc(), cross_region_filings::id.desc()))
        .select(FilingRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Filing::try_from)
        .collect()
}

/// The filings table.
#[derive(Clone, Debug)]
pub struct CrossRegionStore {
    db: Db,
}

impl CrossRegionStore {
    /// The store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Files `terms` for the holder of `account_id` (their open account: its region is the
    /// insured region), if the domain admits it next to their filings, under the account's lock.
    pub async fn file(
        &self,
        account_id: Uuid,
        terms: FilingTerms,
        filed_by: String,
        now: NaiveDateTime,
    ) -> ApiResult<Filing> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let account = lock_account(conn, account_id)?
                        .ok_or_else(|| ApiError::internal("the account of a filing vanished"))?;
                    let existing = filings_of(conn, account.person_id)?;
                    admit_filing(&account.region_code, &terms, &existing)?;
                    let filing = Filing {
                        id: Uuid::now_v7(),
                        person_id: account.person_id,
                        insured_region_code: account.region_code.clone(),
                        destination_region_code: terms.destination_region_code.clone(),
                        kind: terms.kind,
                        starts_on: terms.starts_on,
                        ends_on: terms.ends_on,
                        status: FilingStatus::Active,
                        filed_by: filed_by.clone(),
                        filed_at: now,
                        cancelled_at: None,
                    };
                    diesel::insert_into(cross_region_filings::table)
                        .values(FilingRow {
                            id: filing.id.to_string(),
                            person_id: filing.person_id.to_string(),
                            insured_region_code: filing.insured_region_code.clone(),
                            destination_region_code: filing.destination_region_code.clone(),
                            kind: filing.kind.as_str().to_owned(),
                            starts_on: filing.starts_on,
                            ends_on: filing.ends_on,
                            status: filing.status.as_str().to_owned(),
                            filed_by: filing.filed_by.clone(),
                            filed_at: filing.filed_at,
                            cancelled_at: None,
                        })
                        .execute(conn)?;
                    Ok(filing)
                })
            })
            .await
    }

    /// A person's filings, newest first (at most [`crate::domain::cross_region::MAX_ACTIVE_FILINGS`]
    /// active, and cancelled ones, which a person rarely has many of).
    pub async fn list(&self, person_id: Uuid) -> ApiResult<Vec<Filing>> {
        self.db.read(move |conn| filings_of(conn, person_id)).await
    }

    /// One filing of `person_id`; another person's or a missing one is NOT_FOUND alike.
    pub async fn find(&self, person_id: Uuid, filing_id: Uuid) -> ApiResult<Filing> {
        self.db
            .read(move |conn| {
                let row = cross_region_filings::table
                    .find(filing_id.to_string())
                    .filter(cross_region_filings::person_id.eq(person_id.to_string()))
                    .select(FilingRow::as_select())
                    .first(conn)
                    .optional()?;
                row.map(Filing::try_from).transpose()?.ok_or_else(filing_not_found)
            })
            .await
    }

    /// Cancels a filing of `person_id` if the domain admits it; the filing as it is after.
    pub async fn cancel(&self, person_id: Uuid, filing_id: Uuid, now: NaiveDateTime) -> ApiResult<Filing> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let row = cross_region_filings::table
                        .find(filing_id.to_string())
                        .filter(cross_region_filings::person_id.eq(person_id.to_string()))
                        .select(FilingRow::as_select())
                        .first(conn)
                        .optional()?;
                    let mut filing = row.map(Filing::try_from).transpose()?.ok_or_else(filing_not_found)?;
                    admit_cancel(&filing)?;
                    // Compare-and-set on the status: a concurrent cancel changes no second row.
                    let changed = diesel::update(
                        cross_region_filings::table
                            .find(filing_id.to_string())
                            .filter(cross_region_filings::status.eq(FilingStatus::Active.as_str())),
                    )
                    .set((
                        cross_region_filings::status.eq(FilingStatus::Cancelled.as_str()),
                        cross_region_filings::cancelled_at.eq(Some(now)),
                    ))
                    .execute(conn)?;
                    if changed == 0 {
                        return Err(ApiError::failed_precondition(
                            Reason::CrossRegionFilingCancelled,
                            "this filing is already cancelled",
                        ));
                    }
                    filing.status = FilingStatus::Cancelled;
                    filing.cancelled_at = Some(now);
                    Ok(filing)
                })
            })
            .await
    }
}
