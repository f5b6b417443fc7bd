//! Accounts at rest.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbUuid, is_unique_violation, retry_conflicts},
};
use uuid::Uuid;

use super::schema::accounts;
use crate::domain::account::{Account, AccountStatus, AccountTerms, Scheme};

#[derive(Queryable, Selectable)]
#[diesel(table_name = accounts)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct AccountRow {
    id: DbUuid,
    person_id: DbUuid,
    scheme: Scheme,
    region_code: String,
    employer_code: Option<String>,
    status: AccountStatus,
    balance_cents: i64,
    birth_date: NaiveDate,
    opened_at: NaiveDateTime,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Self {
        Account {
            id: row.id.into(),
            person_id: row.person_id.into(),
            scheme: row.scheme,
            status: row.status,
            region_code: row.region_code,
            employer_code: row.employer_code,
            balance_cents: row.balance_cents,
            birth_date: row.birth_date,
            opened_at: row.opened_at,
        }
    }
}

/// The accounts table.
#[derive(Clone, Debug)]
pub struct AccountStore {
    db: Db,
}

impl AccountStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Opens an account; ALREADY_EXISTS / ACCOUNT_ALREADY_OPEN if the person has an open one
    /// (the unique partial index decides, so concurrent opens cannot both win).
    pub async fn open(
        &self,
        person_id: Uuid,
        birth_date: NaiveDate,
        terms: AccountTerms,
        now: NaiveDateTime,
    ) -> ApiResult<Account> {
        self.db
            .write(move |conn| {
                let account = Account {
                    id: Uuid::now_v7(),
                    person_id,
                    scheme: terms.scheme,
                    region_code: terms.region_code,
                    employer_code: terms.employer_code,
                    status: AccountStatus::Active,
                    balance_cents: 0,
                    birth_date,
                    opened_at: now,
                };
                // One autocommit statement: the shared retry runs it again after a conflict.
                let inserted = retry_conflicts(|| {
                    diesel::insert_into(accounts::table)
                        .values((
                            accounts::id.eq(DbUuid(account.id)),
                            accounts::person_id.eq(DbUuid(account.person_id)),
                            accounts::scheme.eq(account.scheme),
                            accounts::region_code.eq(&account.region_code),
                            accounts::employer_code.eq(&account.employer_code),
                            accounts::status.eq(account.status),
                            accounts::balance_cents.eq(account.balance_cents),
                            accounts::birth_date.eq(account.birth_date),
                            accounts::opened_at.eq(now),
                            accounts::updated_at.eq(now),
                        ))
                        .execute(conn)
                });
                match inserted {
                    Ok(_) => Ok(account),
                    Err(error) if is_unique_violation(&error) => {
                        Err(ApiError::of(Reason::AccountAlreadyOpen, "this person already has an open account"))
                    }
                    Err(error) => Err(error.into()),
                }
            })
            .await
    }

    /// An account by id.
    pub async fn find(&self, id: Uuid) -> ApiResult<Option<Account>> {
        self.db
            .read(move |conn| {
                let row = accounts::table.find(DbUuid(id)).select(AccountRow::as_select()).first(conn).optional()?;
                Ok(row.map(Account::from))
            })
            .await
    }

    /// A person's open (not closed) account.
    pub async fn find_open_by_person(&self, person_id: Uuid) -> ApiResult<Option<Account>> {
        self.db.read(move |conn| open_account_of(conn, person_id)).await
    }
}

/// A person's open (not closed) account, inside a caller's transaction.
pub(crate) fn open_account_of(
    conn: &mut medins_common::db::DbConnection,
    person_id: Uuid,
) -> ApiResult<Option<Account>> {
    let row = accounts::table
        .filter(accounts::person_id.eq(DbUuid(person_id)))
        .filter(accounts::status.ne(AccountStatus::Closed))
        .select(AccountRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(Account::from))
}

/// Reads an account inside a write transaction and, on PostgreSQL, holds its row until the
/// transaction ends (`FOR NO KEY UPDATE`: concurrent ledger writes on one account queue here,
/// while inserts that merely reference the account, such as visits, still proceed). On SQLite
/// `BEGIN IMMEDIATE` already holds the database's single write lock.
pub(crate) fn lock_account(conn: &mut medins_common::db::DbConnection, id: Uuid) -> ApiResult<Option<Account>> {
    let row = medins_common::first_locked!(
        conn,
        accounts::table.find(DbUuid(id)).select(AccountRow::as_select()),
        for_no_key_update
    )?;
    Ok(row.map(Account::from))
}

/// A person's open (not closed) account inside a write transaction, its row held until the
/// transaction ends as [`lock_account`] holds it: one read that both finds and locks it.
pub(crate) fn lock_open_account_of(
    conn: &mut medins_common::db::DbConnection,
    person_id: Uuid,
) -> ApiResult<Option<Account>> {
    let row = medins_common::first_locked!(
        conn,
        accounts::table
            .filter(accounts::person_id.eq(DbUuid(person_id)))
            .filter(accounts::status.ne(AccountStatus::Closed))
            .select(AccountRow::as_select()),
        for_no_key_update
    )?;
    Ok(row.map(Account::from))
}

/// Sets an account's status (inside the caller's transaction).
pub(crate) fn set_account_status(
    conn: &mut medins_common::db::DbConnection,
    id: Uuid,
    status: AccountStatus,
    now: NaiveDateTime,
) -> ApiResult<()> {
    diesel::update(accounts::table.find(DbUuid(id)))
        .set((accounts::status.eq(status), accounts::updated_at.eq(now)))
        .execute(conn)?;
    Ok(())
}
