//! Cross-region care filings at rest. The rules are `domain::cross_region`'s; this file reads
//! the facts they need and writes their decision, under the person's account lock so that two
//! concurrent filings cannot both pass the overlap rule.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbConnection, DbUuid, write_transaction},
};
use uuid::Uuid;

use super::{account::lock_account, schema::cross_region_filings};
use crate::domain::cross_region::{Filing, FilingKind, FilingStatus, FilingTerms, admit_cancel, admit_filing};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = cross_region_filings)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct FilingRow {
    id: DbUuid,
    person_id: DbUuid,
    insured_region_code: String,
    destination_region_code: String,
    kind: FilingKind,
    starts_on: NaiveDate,
    ends_on: Option<NaiveDate>,
    status: FilingStatus,
    filed_by: String,
    filed_at: NaiveDateTime,
    cancelled_at: Option<NaiveDateTime>,
}

impl From<FilingRow> for Filing {
    fn from(row: FilingRow) -> Self {
        Filing {
            id: row.id.into(),
            person_id: row.person_id.into(),
            insured_region_code: row.insured_region_code,
            destination_region_code: row.destination_region_code,
            kind: row.kind,
            starts_on: row.starts_on,
            ends_on: row.ends_on,
            status: row.status,
            filed_by: row.filed_by,
            filed_at: row.filed_at,
            cancelled_at: row.cancelled_at,
        }
    }
}

impl From<&Filing> for FilingRow {
    fn from(filing: &Filing) -> Self {
        FilingRow {
            id: filing.id.into(),
            person_id: filing.person_id.into(),
            insured_region_code: filing.insured_region_code.clone(),
            destination_region_code: filing.destination_region_code.clone(),
            kind: filing.kind,
            starts_on: filing.starts_on,
            ends_on: filing.ends_on,
            status: filing.status,
            filed_by: filing.filed_by.clone(),
            filed_at: filing.filed_at,
            cancelled_at: filing.cancelled_at,
        }
    }
}

fn filing_not_found() -> ApiError {
    ApiError::of(Reason::CrossRegionFilingNotFound, "no such cross-region filing for this person")
}

/// Every filing of `person_id`, newest first (settling reads them for cross-region care).
pub(super) fn filings_of(conn: &mut DbConnection, person_id: Uuid) -> ApiResult<Vec<Filing>> {
    Ok(cross_region_filings::table
        .filter(cross_region_filings::person_id.eq(DbUuid(person_id)))
        .order((cross_region_filings::filed_at.desc(), cross_region_filings::id.desc()))
        .select(FilingRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Filing::from)
        .collect())
}

/// One filing of `person_id`; another person's or a missing one is NOT_FOUND alike.
fn filing_of(conn: &mut DbConnection, person_id: Uuid, filing_id: Uuid) -> ApiResult<Filing> {
    let row = cross_region_filings::table
        .find(DbUuid(filing_id))
        .filter(cross_region_filings::person_id.eq(DbUuid(person_id)))
        .select(FilingRow::as_select())
        .first(conn)
        .optional()?;
    row.map(Filing::from).ok_or_else(filing_not_found)
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
                    diesel::insert_into(cross_region_filings::table).values(FilingRow::from(&filing)).execute(conn)?;
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
        self.db.read(move |conn| filing_of(conn, person_id, filing_id)).await
    }

    /// Cancels a filing of `person_id` if the domain admits it; the filing as it is after.
    pub async fn cancel(&self, person_id: Uuid, filing_id: Uuid, now: NaiveDateTime) -> ApiResult<Filing> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let mut filing = filing_of(conn, person_id, filing_id)?;
                    admit_cancel(&filing)?;
                    // Compare-and-set on the status: a concurrent cancel changes no second row.
                    let changed = diesel::update(
                        cross_region_filings::table
                            .find(DbUuid(filing_id))
                            .filter(cross_region_filings::status.eq(FilingStatus::Active)),
                    )
                    .set((
                        cross_region_filings::status.eq(FilingStatus::Cancelled),
                        cross_region_filings::cancelled_at.eq(Some(now)),
                    ))
                    .execute(conn)?;
                    filing.status = FilingStatus::Cancelled;
                    if changed == 0 {
                        // A concurrent cancel won: the domain's answer for a cancelled filing.
                        admit_cancel(&filing)?;
                    }
                    filing.cancelled_at = Some(now);
                    Ok(filing)
                })
            })
            .await
    }
}
