//! The individual-account ledger at rest.
//!
//! The balance on `accounts.balance_cents` changes only together with the entry that explains
//! it, inside the caller's write transaction, by the one rule `domain::ledger::post` (a
//! posting may not take the balance below zero): in `post_entry`, whose conditional update
//! (`balance + delta >= 0`, affected rows checked) is that rule in SQL, or in the PostgreSQL
//! settlement batch (`store::settlement`), which writes entries computed by `ledger::post` on
//! the locked balance and sets each account's balance to its last entry's `balance_after`. The
//! schema backs both with `CHECK (balance_cents >= 0)` and `CHECK (balance_after_cents >= 0)`.

use chrono::NaiveDateTime;
use diesel::{
    prelude::*,
    sql_types::{BigInt, Nullable, Text, Timestamp},
};
use medins_common::db::DbUuid;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{CachedSql, Db, DbConnection},
};
use uuid::Uuid;

use super::{
    account::{lock_account, set_account_status},
    schema::{account_entries, accounts},
};
use crate::domain::{
    account::{Account, AccountStatus},
    ledger::{self, Contribution, Entry, EntryCursor, EntryKind},
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = account_entries)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct EntryRow {
    id: DbUuid,
    account_id: DbUuid,
    kind: EntryKind,
    amount_cents: i64,
    balance_after_cents: i64,
    reference: String,
    settlement_id: Option<DbUuid>,
    created_at: NaiveDateTime,
    credited_by: Option<String>,
}

impl From<EntryRow> for Entry {
    fn from(row: EntryRow) -> Self {
        Entry {
            id: row.id.into(),
            account_id: row.account_id.into(),
            kind: row.kind,
            settlement_id: row.settlement_id.map(Uuid::from),
            amount_cents: row.amount_cents,
            balance_after_cents: row.balance_after_cents,
            reference: row.reference,
            created_at: row.created_at,
            credited_by: row.credited_by,
        }
    }
}

/// An entry to post.
#[derive(Debug, Clone)]
pub(crate) struct NewEntry<'a> {
    pub account_id: Uuid,
    pub kind: EntryKind,
    pub amount_cents: i64,
    pub reference: &'a str,
    pub settlement_id: Option<Uuid>,
    /// The partner crediting a contribution.
    pub credited_by: Option<&'a str>,
}

/// Why a write transaction failed (the shared `db::TxError`: an answer, or a lost race on a
/// unique index that [`write_with_retry`] runs again).
pub(crate) use medins_common::db::TxError;

/// Runs `work` in a write transaction, again (at most three times in all) when it lost a race:
/// the next run sees the winner's row and answers from it (the shared `db::write_retrying`).
pub(crate) fn write_with_retry<T>(
    conn: &mut DbConnection,
    work: impl FnMut(&mut DbConnection) -> Result<T, TxError>,
) -> ApiResult<T> {
    medins_common::db::write_retrying(conn, work, || ApiError::internal("a write lost its race three times"))
}

#[derive(QueryableByName)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct BalanceAfter {
    #[diesel(sql_type = BigInt)]
    balance_cents: i64,
}

/// Posts an entry and moves the balance by its amount, in the caller's transaction. Refuses
/// (FAILED_PRECONDITION / INSUFFICIENT_BALANCE) a debit the balance does not cover: the update
/// only matches while `balance + amount >= 0`.
pub(crate) fn post_entry(conn: &mut DbConnection, new: NewEntry<'_>, now: NaiveDateTime) -> Result<Entry, TxError> {
    let delta = new.amount_cents;
    let balance_after: Option<BalanceAfter> = CachedSql::new(
        "UPDATE accounts SET balance_cents = balance_cents + ?, updated_at = ? \
         WHERE id = ? AND balance_cents + ? >= 0 RETURNING balance_cents",
        (
            delta.into_sql::<BigInt>(),
            now.into_sql::<Timestamp>(),
            DbUuid(new.account_id).into_sql::<Text>(),
            delta.into_sql::<BigInt>(),
        ),
    )
    .get_result(conn)
    .optional()?;
    let Some(BalanceAfter { balance_cents: balance_after_cents }) = balance_after else {
        return Err(ledger::insufficient_balance().into());
    };
    let entry = Entry {
        id: Uuid::now_v7(),
        account_id: new.account_id,
        kind: new.kind,
        amount_cents: delta,
        balance_after_cents,
        reference: new.reference.to_owned(),
        settlement_id: new.settlement_id,
        created_at: now,
        credited_by: new.credited_by.map(str::to_owned),
    };
    // Kept prepared, as the balance update above: every settlement and credit posts one.
    CachedSql::new(
        "INSERT INTO account_entries (id, account_id, kind, amount_cents, balance_after_cents, reference, \
         settlement_id, created_at, credited_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            DbUuid(entry.id).into_sql::<Text>(),
            DbUuid(entry.account_id).into_sql::<Text>(),
            entry.kind.into_sql::<Text>(),
            entry.amount_cents.into_sql::<BigInt>(),
            entry.balance_after_cents.into_sql::<BigInt>(),
            entry.reference.as_str().into_sql::<Text>(),
            entry.settlement_id.map(DbUuid).into_sql::<Nullable<Text>>(),
            now.into_sql::<Timestamp>(),
            new.credited_by.into_sql::<Nullable<Text>>(),
        ),
    )
    .execute(conn)?;
    Ok(entry)
}

fn find_contribution(conn: &mut DbConnection, account_id: Uuid, reference: &str) -> ApiResult<Option<Entry>> {
    let row = account_entries::table
        .filter(account_entries::account_id.eq(DbUuid(account_id)))
        .filter(account_entries::kind.eq(EntryKind::Contribution))
        .filter(account_entries::reference.eq(reference))
        .select(EntryRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(Entry::from))
}

fn account_not_found() -> ApiError {
    ApiError::of(Reason::AccountNotFound, "no such account")
}

/// The ledger.
#[derive(Clone, Debug)]
pub struct LedgerStore {
    db: Db,
}

impl LedgerStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Credits a contribution, once per (account, reference): a retry with the same amount
    /// returns the first entry (and the account as it is now); another amount is refused
    /// (IDEMPOTENCY_KEY_MISMATCH). CLOSED accounts are refused (ACCOUNT_CLOSED).
    pub async fn credit(
        &self,
        account_id: Uuid,
        contribution: Contribution,
        partner_id: &str,
        now: NaiveDateTime,
    ) -> ApiResult<(Entry, Account)> {
        let partner_id = partner_id.to_owned();
        self.db
            .write(move |conn| {
                write_with_retry(conn, |conn| {
                    let mut account = lock_account(conn, account_id)?.ok_or_else(account_not_found)?;
                    if let Some(first) = find_contribution(conn, account_id, &contribution.reference)? {
                        ledger::replay_contribution(first.amount_cents, &contribution)?;
                        return Ok((first, account));
                    }
                    ledger::may_receive_credit(account.status)?;
                    let entry = post_entry(
                        conn,
                        NewEntry {
                            account_id,
                            kind: EntryKind::Contribution,
                            amount_cents: contribution.amount_cents,
                            reference: &contribution.reference,
                            settlement_id: None,
                            credited_by: Some(&partner_id),
                        },
                        now,
                    )?;
                    account.balance_cents = entry.balance_after_cents;
                    Ok((entry, account))
                })
            })
            .await
    }

    /// A page of an account's entries, newest first, after `cursor`; with the cursor of the
    /// next page when there is one. With `only_credited_by`, only the contributions that
    /// partner credited (an employer's view). NOT_FOUND / ACCOUNT_NOT_FOUND for an unknown
    /// account.
    pub async fn list(
        &self,
        account_id: Uuid,
        cursor: Option<EntryCursor>,
        page_size: usize,
        only_credited_by: Option<String>,
    ) -> ApiResult<(Vec<Entry>, Option<EntryCursor>)> {
        self.db
            .run(move |conn| {
                let exists: Option<String> =
                    accounts::table.find(DbUuid(account_id)).select(accounts::id).first(conn).optional()?;
                if exists.is_none() {
                    return Err(account_not_found());
                }
                let mut query = account_entries::table
                    .filter(account_entries::account_id.eq(DbUuid(account_id)))
                    .select(EntryRow::as_select())
                    .into_boxed();
                if let Some(partner) = &only_credited_by {
                    query = query
                        .filter(account_entries::kind.eq(EntryKind::Contribution))
                        .filter(account_entries::credited_by.eq(partner.clone()));
                }
                if let Some(cursor) = cursor {
                    query = query.filter(
                        account_entries::created_at.lt(cursor.created_at).or(account_entries::created_at
                            .eq(cursor.created_at)
                            .and(account_entries::id.lt(DbUuid(cursor.entry_id)))),
                    );
                }
                let rows: Vec<EntryRow> = query
                    .order((account_entries::created_at.desc(), account_entries::id.desc()))
                    .limit(page_size as i64 + 1)
                    .load(conn)?;
                let mut entries: Vec<Entry> = rows.into_iter().map(Entry::from).collect();
                let next = if entries.len() > page_size {
                    entries.truncate(page_size);
                    entries.last().map(|last| EntryCursor {
                        account_id,
                        created_at: last.created_at,
                        entry_id: last.id,
                    })
                } else {
                    None
                };
                Ok((entries, next))
            })
            .await
    }

    /// Moves an account to the status `transition` decides from its current one (suspend,
    /// resume); returns the account afterwards.
    pub async fn change_status(
        &self,
        account_id: Uuid,
        transition: fn(AccountStatus) -> ApiResult<AccountStatus>,
        now: NaiveDateTime,
    ) -> ApiResult<Account> {
        self.db
            .write(move |conn| {
                write_with_retry(conn, |conn| {
                    let mut account = lock_account(conn, account_id)?.ok_or_else(account_not_found)?;
                    let next = transition(account.status)?;
                    if next != account.status {
                        set_account_status(conn, account_id, next, now)?;
                        account.status = next;
                    }
                    Ok(account)
                })
            })
            .await
    }
}
