//! Settlements, year-to-date totals and annual expenses at rest.
//!
//! Settling is one write transaction that starts with one read (`settle_inputs`): the visit,
//! its holder's account, whether the visit is settled already and the holder's year-to-date
//! totals for the year and category. On PostgreSQL that read locks the totals row, then the
//! account row, so settlements of one person or one account queue instead of both reading the
//! same totals or balance; SQLite's `BEGIN IMMEDIATE` holds the whole database. Reversal takes
//! the same locks in the same order (totals, then the charged account). The read replaced four
//! statements: on PostgreSQL each is a round trip, and hospitals and pharmacies wait on this one.
//!
//! Lock order, the same for every transaction here, so that none waits in a cycle (PostgreSQL
//! 40P01): totals rows first (by person, year, category), then account rows (by id), and only
//! the accounts charged. Family aid charges the binder's account, not the holder's: its read
//! (`FAMILY_AID_INPUTS`) leaves the holder's account unlocked and the binder's is locked
//! after the totals. So A paying B's bill while B pays A's holds (totals B, account A) and
//! (totals A, account B), which cannot cross. A conflict that still happens (another writer
//! outside this order) is retried by `write_transaction` (`db::retry_conflicts`).
//!
//! On PostgreSQL the settlements waiting at the same moment (all but family aid) go further:
//! they are settled together, one transaction of four round trips for the whole batch
//! (`settle_batch`), the way SQLite's writer group-commits. Both paths read the facts, ask the
//! one decision (`domain::settlement::decide`: partner, replay, family aid, paying account,
//! split, debit, totals) and write it; the batch only feeds it the balance and totals the calls
//! before it left.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use chrono::NaiveDateTime;
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamp},
};
use medins_common::{
    ApiError, ApiResult, Reason,
    audit::InlineAudit,
    db::{Backend, Batcher, CachedSql, Chain, Db, DbConnection, DbUuid, write_transaction},
};
use uuid::Uuid;

use super::{
    Audited,
    account::lock_account,
    ledger::{NewEntry, TxError, post_entry, write_with_retry},
    schema::{annual_totals, settlements},
    settlement_details::{find_pre_settlement, load_details, store_details, store_pre_settlement},
};
use crate::domain::{
    account::{AccountStatus, Scheme},
    catalog::Catalog,
    cross_region::{self, Filing},
    ledger::EntryKind,
    settlement::{
        self, AccountFacts, AidBinding, Category, Debit, Decision, ExpenseLine, FamilyAidFacts, NewSettlement, PayFrom,
        PolicyTable, PreSettlement, SettleCall, SettleFacts, Settlement, SettlementStatus, YearToDate,
    },
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = settlements)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct SettlementRow {
    id: DbUuid,
    visit_id: Option<DbUuid>,
    person_id: DbUuid,
    category: Category,
    pay_from: PayFrom,
    charged_account_id: Option<DbUuid>,
    total_cents: i64,
    fund_cents: i64,
    account_cents: i64,
    self_cents: i64,
    deductible_cents: i64,
    year: i32,
    items_summary: String,
    status: SettlementStatus,
    settled_at: NaiveDateTime,
    reversed_at: Option<NaiveDateTime>,
}

impl From<SettlementRow> for Settlement {
    fn from(row: SettlementRow) -> Self {
        Settlement {
            id: row.id.into(),
            visit_id: row.visit_id.map(Uuid::from),
            person_id: row.person_id.into(),
            category: row.category,
            pay_from: row.pay_from,
            charged_account_id: row.charged_account_id.map(Uuid::from),
            status: row.status,
            total_cents: row.total_cents,
            fund_cents: row.fund_cents,
            account_cents: row.account_cents,
            self_cents: row.self_cents,
            deductible_cents: row.deductible_cents,
            year: row.year,
            items_summary: row.items_summary,
            settled_at: row.settled_at,
            reversed_at: row.reversed_at,
            details: None,
        }
    }
}

/// What settling a visit decides on, read by one statement ([`settle_inputs`]): the visit, its
/// holder's account, the visit's settlement if it has one, and the holder's year-to-date totals
/// for the bill's year and category (none yet: zero).
#[derive(QueryableByName)]
struct SettleInputs {
    #[diesel(sql_type = Text)]
    person_id: DbUuid,
    #[diesel(sql_type = Text)]
    account_id: DbUuid,
    #[diesel(sql_type = Text)]
    partner_id: String,
    #[diesel(sql_type = Text)]
    scheme: Scheme,
    #[diesel(sql_type = Text)]
    account_status: AccountStatus,
    #[diesel(sql_type = BigInt)]
    balance_cents: i64,
    #[diesel(sql_type = Text)]
    region_code: String,
    #[diesel(sql_type = Nullable<Text>)]
    settlement_id: Option<DbUuid>,
    #[diesel(sql_type = Nullable<BigInt>)]
    ytd_total_cents: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    ytd_fund_cents: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    ytd_deductible_cents: Option<i64>,
}

impl SettleInputs {
    fn year_to_date(&self) -> YearToDate {
        YearToDate {
            total_cents: self.ytd_total_cents.unwrap_or(0),
            fund_cents: self.ytd_fund_cents.unwrap_or(0),
            deductible_cents: self.ytd_deductible_cents.unwrap_or(0),
        }
    }

    /// The holder and the holder's account, as read.
    fn holder(&self) -> (Uuid, AccountFacts) {
        let account = AccountFacts {
            id: self.account_id.into(),
            scheme: self.scheme,
            status: self.account_status,
            balance_cents: self.balance_cents,
        };
        (self.person_id.into(), account)
    }

    /// The visit's earlier settlement, if it has one.
    fn earlier(&self, conn: &mut DbConnection, visit_id: Uuid) -> ApiResult<Option<Settlement>> {
        let Some(id) = self.settlement_id else { return Ok(None) };
        let missing = || ApiError::internal(format_args!("visit {visit_id}: its settlement is gone"));
        Ok(Some(find(conn, id.into())?.ok_or_else(missing)?))
    }

    /// The holder's ACTIVE filings when care at `call`'s site is cross-region for them (the
    /// only case a filing decides anything), else none.
    fn filings(&self, conn: &mut DbConnection, person_id: Uuid, call: &SettleCall) -> ApiResult<Vec<Filing>> {
        match &call.site.region_code {
            Some(treatment) if cross_region::is_cross_region(&self.region_code, treatment) => {
                let mut filings = super::cross_region::filings_of(conn, person_id)?;
                filings.retain(|f| f.status == cross_region::FilingStatus::Active);
                Ok(filings)
            }
            _ => Ok(Vec::new()),
        }
    }
}

/// The columns of [`SettleInputs`], after `FROM visits v JOIN accounts a` and the totals as `t`.
macro_rules! settle_inputs_columns {
    () => {
        "v.person_id, v.account_id, v.partner_id, \
                a.scheme, a.status AS account_status, a.balance_cents, a.region_code, \
                (SELECT s.id FROM settlements s WHERE s.visit_id = v.id) AS settlement_id, \
                t.total_cents AS ytd_total_cents, t.fund_cents AS ytd_fund_cents, \
                t.deductible_cents AS ytd_deductible_cents "
    };
}

/// Reads [`SettleInputs`] of a visit. On PostgreSQL it is [`batch_inputs`] for one visit
/// (totals row, then account row locked). SQLite needs no locks (the writer holds the database)
/// and has no `INSERT` in `WITH`: a missing totals row reads as zero and [`store_year_to_date`]
/// creates it.
///
/// `holder_pays`: whether the holder's account may be charged (locked on PostgreSQL); family
/// aid reads it unlocked (see the module doc on lock order).
fn settle_inputs(
    conn: &mut DbConnection,
    visit_id: Uuid,
    year: i32,
    category: Category,
    holder_pays: bool,
) -> Result<Option<SettleInputs>, TxError> {
    if conn.backend() == Backend::Postgres {
        let sql = if holder_pays { SETTLE_BATCH_INPUTS } else { FAMILY_AID_INPUTS };
        return Ok(inputs_by_visit(conn, sql, &[(visit_id, year, category)])?.pop().flatten());
    }
    let inputs = CachedSql::new(
        concat!(
            "SELECT ",
            settle_inputs_columns!(),
            "FROM visits v JOIN accounts a ON a.id = v.account_id \
             LEFT JOIN annual_totals t ON t.person_id = v.person_id AND t.year = ? AND t.category = ? \
             WHERE v.id = ?"
        ),
        (year.into_sql::<Integer>(), category.as_str().into_sql::<Text>(), DbUuid(visit_id).into_sql::<Text>()),
    )
    .get_result(conn)
    .optional()?;
    Ok(inputs)
}

#[derive(QueryableByName)]
#[diesel(table_name = annual_totals)]
struct TotalsRow {
    total_cents: i64,
    fund_cents: i64,
    deductible_cents: i64,
}

/// A settlement by id, with its details and items when it has them.
fn find(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<Settlement>> {
    let row = settlements::table.find(DbUuid(id)).select(SettlementRow::as_select()).first(conn).optional()?;
    let Some(mut settlement) = row.map(Settlement::from) else { return Ok(None) };
    settlement.details = load_details(conn, id)?;
    Ok(Some(settlement))
}

/// Reads a person's year-to-date totals for a year and category, creating the zero row if
/// there is none, and holds the row until the transaction ends: one upsert, whose no-op update
/// takes the row lock on PostgreSQL (on SQLite the writer holds the whole database).
fn lock_year_to_date(
    conn: &mut DbConnection,
    person_id: Uuid,
    year: i32,
    category: Category,
) -> Result<YearToDate, TxError> {
    let row: TotalsRow = CachedSql::new(
        "INSERT INTO annual_totals (person_id, year, category, total_cents, fund_cents, deductible_cents) \
         VALUES (?, ?, ?, 0, 0, 0) \
         ON CONFLICT (person_id, year, category) DO UPDATE SET total_cents = annual_totals.total_cents \
         RETURNING total_cents, fund_cents, deductible_cents",
        (DbUuid(person_id).into_sql::<Text>(), year.into_sql::<Integer>(), category.as_str().into_sql::<Text>()),
    )
    .get_result(conn)?;
    Ok(YearToDate { total_cents: row.total_cents, fund_cents: row.fund_cents, deductible_cents: row.deductible_cents })
}

/// Writes a person's year-to-date totals for a year and category, creating the row if there is
/// none (SQLite's settlement reads a missing row as zero instead of creating it first).
fn store_year_to_date(
    conn: &mut DbConnection,
    person_id: Uuid,
    year: i32,
    category: Category,
    totals: YearToDate,
) -> Result<(), TxError> {
    CachedSql::new(
        "INSERT INTO annual_totals (person_id, year, category, total_cents, fund_cents, deductible_cents) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (person_id, year, category) DO UPDATE SET total_cents = excluded.total_cents, \
             fund_cents = excluded.fund_cents, deductible_cents = excluded.deductible_cents",
        (
            DbUuid(person_id).into_sql::<Text>(),
            year.into_sql::<Integer>(),
            category.as_str().into_sql::<Text>(),
            totals.total_cents.into_sql::<BigInt>(),
            totals.fund_cents.into_sql::<BigInt>(),
            totals.deductible_cents.into_sql::<BigInt>(),
        ),
    )
    .execute(conn)?;
    Ok(())
}

/// Writes a new settlement: its row, the debit of the charged account with its ledger entry
/// when the account pays a share, and the holder's year-to-date totals, in the caller's
/// transaction (which holds the locks [`settle_inputs`] took). On PostgreSQL that is
/// [`store_settlements`]' one statement.
fn store_settlement(conn: &mut DbConnection, new: &NewSettlement) -> Result<(), TxError> {
    let settled = &new.settlement;
    if conn.backend() == Backend::Postgres {
        let key = (settled.person_id, settled.year, settled.category);
        return store_settlements(
            conn,
            std::slice::from_ref(settled),
            new.debit.as_slice(),
            &[(key, new.year_to_date)],
        );
    }
    // Kept prepared: diesel's insert builds and looks up its SQL text anew on every call, a
    // tenth of the writer's time on this path (docs/benchmarks.md, issue 13).
    CachedSql::new(
        "INSERT INTO settlements (id, visit_id, person_id, category, pay_from, charged_account_id, total_cents, \
         fund_cents, account_cents, self_cents, deductible_cents, year, items_summary, status, settled_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        Chain(
            (
                DbUuid(settled.id).into_sql::<Text>(),
                settled.visit_id.map(DbUuid).into_sql::<Nullable<Text>>(),
                DbUuid(settled.person_id).into_sql::<Text>(),
                settled.category.as_str().into_sql::<Text>(),
                settled.pay_from.as_str().into_sql::<Text>(),
                settled.charged_account_id.map(DbUuid).into_sql::<Nullable<Text>>(),
                settled.total_cents.into_sql::<BigInt>(),
                settled.fund_cents.into_sql::<BigInt>(),
            ),
            (
                settled.account_cents.into_sql::<BigInt>(),
                settled.self_cents.into_sql::<BigInt>(),
                settled.deductible_cents.into_sql::<BigInt>(),
                settled.year.into_sql::<Integer>(),
                settled.items_summary.as_str().into_sql::<Text>(),
                settled.status.as_str().into_sql::<Text>(),
                settled.settled_at.into_sql::<Timestamp>(),
            ),
        ),
    )
    .execute(conn)?;
    if let Some(debit) = &new.debit {
        post_entry(
            conn,
            NewEntry {
                account_id: debit.account_id,
                kind: debit.kind,
                amount_cents: debit.amount_cents,
                reference: &settled.id.to_string(),
                settlement_id: Some(settled.id),
                credited_by: None,
            },
            debit.created_at,
        )?;
    }
    store_details(conn, &[settled])?;
    store_year_to_date(conn, settled.person_id, settled.year, settled.category, new.year_to_date)
}

fn visit_not_found() -> ApiError {
    ApiError::not_found(Reason::VisitNotFound, "no such visit")
}

/// What family aid reads about `binder` in the settling transaction: the binder's ACTIVE
/// binding of the holder, and the binder's open account, locked after the totals (module doc,
/// lock order).
fn family_aid_facts(conn: &mut DbConnection, binder: Uuid, holder: Uuid) -> Result<FamilyAidFacts, TxError> {
    let binding = super::family::find_active_in(conn, binder, holder)?;
    let binder_account = match super::account::open_account_of(conn, binder)? {
        None => None,
        Some(open) => {
            let locked = lock_account(conn, open.id)?
                .ok_or_else(|| ApiError::internal(format_args!("account {}: vanished under its lock", open.id)))?;
            Some(AccountFacts {
                id: locked.id,
                scheme: locked.scheme,
                status: locked.status,
                balance_cents: locked.balance_cents,
            })
        }
    };
    Ok(FamilyAidFacts {
        binding: binding.map(|b| AidBinding {
            status: b.status,
            family_aid: b.family_aid,
            relationship: b.relationship,
        }),
        binder_account,
    })
}

/// Reads one call's facts in the caller's transaction and asks [`settlement::decide`].
fn decide_one(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    call: &SettleCall,
) -> Result<Decision, TxError> {
    let visit_id = call.visit_id;
    let inputs = settle_inputs(conn, visit_id, call.year(), call.terms.category, call.binder.is_none())?
        .ok_or_else(visit_not_found)?;
    let (person_id, holder_account) = inputs.holder();
    let earlier = inputs.earlier(conn, visit_id)?;
    let family_aid = call.binder.map(|binder| family_aid_facts(conn, binder, person_id)).transpose()?;
    let filings = inputs.filings(conn, person_id, call)?;
    let pre_settlement = match call.pre_settlement_id {
        Some(id) => find_pre_settlement(conn, id)?,
        None => None,
    };
    let facts = SettleFacts {
        call,
        opened_by: &inputs.partner_id,
        person_id,
        earlier,
        holder_account,
        insured_region_code: &inputs.region_code,
        filings: &filings,
        family_aid,
        year_to_date: inputs.year_to_date(),
        pre_settlement,
    };
    Ok(settlement::decide(policy, catalog, facts)?)
}

/// Settles one call in the caller's transaction: reads its facts, asks
/// [`settlement::decide`], writes the decision. See [`SettlementStore::settle`].
fn settle_one(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    call: &SettleCall,
) -> Result<Settlement, TxError> {
    match decide_one(conn, policy, catalog, call)? {
        Decision::Replay(first) => Ok(first),
        Decision::Settle(new) => {
            store_settlement(conn, &new)?;
            Ok(new.settlement)
        }
    }
}

/// Pre-settles one call in the caller's transaction: the same facts and decision as
/// [`settle_one`], but only the pre-settlement is written. A settled visit has nothing left to
/// pre-settle: FAILED_PRECONDITION / VISIT_ALREADY_SETTLED.
fn pre_settle_one(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    call: &SettleCall,
) -> Result<(NewSettlement, PreSettlement), TxError> {
    match decide_one(conn, policy, catalog, call)? {
        Decision::Replay(_) => Err(ApiError::failed_precondition(
            medins_common::Reason::VisitAlreadySettled,
            "this visit is already settled",
        )
        .into()),
        Decision::Settle(new) => {
            let pre = new.pre_settlement(call);
            store_pre_settlement(conn, &pre)?;
            Ok((new, pre))
        }
    }
}

/// Most settlements in one batch.
const SETTLE_BATCH: usize = 64;

/// The read of [`SettleInputs`] for visits bound as arrays, `ord` counting them from 1: the
/// totals rows are created or locked first, in key order; `$accounts` follows, the account
/// rows' lock clause or nothing.
macro_rules! settle_inputs_sql {
    ($($accounts:literal)?) => {
        concat!(
            "WITH r AS (\
                 SELECT * FROM unnest(?, ?, ?) WITH ORDINALITY AS r(visit_id, year, category, ord)), \
             keyed AS (\
                 SELECT DISTINCT v.person_id, r.year, r.category FROM r JOIN visits v ON v.id = r.visit_id), \
             t AS (\
                 INSERT INTO annual_totals (person_id, year, category, total_cents, fund_cents, deductible_cents) \
                 SELECT person_id, year, category, 0, 0, 0 FROM keyed ORDER BY person_id, year, category \
                 ON CONFLICT (person_id, year, category) DO UPDATE SET total_cents = annual_totals.total_cents \
                 RETURNING person_id, year, category, total_cents, fund_cents, deductible_cents) \
             SELECT r.ord, ",
            settle_inputs_columns!(),
            "FROM r JOIN visits v ON v.id = r.visit_id JOIN accounts a ON a.id = v.account_id \
             LEFT JOIN t ON t.person_id = v.person_id AND t.year = r.year AND t.category = r.category"
            $(, $accounts)?
        )
    };
}

/// [`SettleInputs`] of a batch. The totals rows are created or locked first, in key order, then
/// the account rows in id order: whatever batch, settlement or reversal runs beside it takes
/// totals before accounts too.
const SETTLE_BATCH_INPUTS: &str = settle_inputs_sql!(" ORDER BY a.id FOR NO KEY UPDATE OF a");

/// [`SETTLE_BATCH_INPUTS`] without the account locks, for family aid, whose holder's account is
/// not charged (module doc, lock order). The totals row is still created or locked first.
const FAMILY_AID_INPUTS: &str = settle_inputs_sql!();

#[derive(QueryableByName)]
struct BatchInputs {
    #[diesel(sql_type = BigInt)]
    ord: i64,
    #[diesel(embed)]
    inputs: SettleInputs,
}

/// Rows each part of [`SETTLE_BATCH_WRITE`] wrote.
#[derive(QueryableByName, PartialEq, Eq, Debug)]
struct BatchWritten {
    #[diesel(sql_type = BigInt)]
    settlements: i64,
    #[diesel(sql_type = BigInt)]
    entries: i64,
    #[diesel(sql_type = BigInt)]
    accounts: i64,
    #[diesel(sql_type = BigInt)]
    totals: i64,
}

/// The writes of a batch: its settlements, their ledger entries, each account's balance after
/// them and each person's totals after them (rows the batch's read locked).
const SETTLE_BATCH_WRITE: &str = "\
WITH s AS (
    INSERT INTO settlements (id, visit_id, person_id, category, pay_from, charged_account_id, total_cents,
        fund_cents, account_cents, self_cents, deductible_cents, year, items_summary, status, settled_at)
    SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    RETURNING 1
), e AS (
    INSERT INTO account_entries (id, account_id, kind, amount_cents, balance_after_cents, reference,
        settlement_id, created_at)
    SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?, ?)
    RETURNING 1
), a AS (
    UPDATE accounts a SET balance_cents = x.balance_cents, updated_at = x.updated_at
    FROM unnest(?, ?, ?) AS x(id, balance_cents, updated_at)
    WHERE a.id = x.id
    RETURNING 1
), t AS (
    UPDATE annual_totals t SET total_cents = x.total_cents, fund_cents = x.fund_cents,
        deductible_cents = x.deductible_cents
    FROM unnest(?, ?, ?, ?, ?, ?) AS x(person_id, year, category, total_cents, fund_cents, deductible_cents)
    WHERE t.person_id = x.person_id AND t.year = x.year AND t.category = x.category
    RETURNING 1
)
SELECT (SELECT count(*) FROM s) AS settlements, (SELECT count(*) FROM e) AS entries,
       (SELECT count(*) FROM a) AS accounts, (SELECT count(*) FROM t) AS totals";

/// Settles a batch of calls (PostgreSQL, no family aid) in one transaction of four round
/// trips, whatever its size: one read of every visit with its locks, the splits in Rust in
/// arrival order (each on the balance and totals the calls before it left), one write. A call
/// refused for its own reason is answered alone and writes nothing. If the batch fails as a
/// whole (a database error, or a lost race with another replica), each call is settled again
/// on its own, so a call never fails because of its neighbours.
fn settle_batch(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    calls: Vec<SettleCall>,
) -> Vec<ApiResult<Settlement>> {
    match write_transaction(conn, |conn| settle_together(conn, policy, catalog, &calls)) {
        Ok(outcomes) => outcomes,
        Err(failed) => {
            let raced = matches!(failed, TxError::Raced);
            tracing::warn!(calls = calls.len(), raced, "a settlement batch failed; settling its calls one by one");
            calls.iter().map(|call| write_with_retry(conn, |conn| settle_one(conn, policy, catalog, call))).collect()
        }
    }
}

/// The batches' statements take arrays: PostgreSQL's.
fn postgres(conn: &mut DbConnection) -> Result<&mut diesel::pg::PgConnection, TxError> {
    match conn {
        DbConnection::Postgres(pg) => Ok(pg),
        DbConnection::Sqlite(_) => Err(ApiError::internal("settlement batches are PostgreSQL's").into()),
    }
}

/// A person's year-to-date totals row: person, year, category.
type TotalsKey = (Uuid, i32, Category);

/// What a batch has settled so far, and the running account balances and totals it left.
#[derive(Default)]
struct BatchState {
    balances: HashMap<Uuid, (AccountStatus, i64)>,
    totals: HashMap<TotalsKey, YearToDate>,
    settled: HashMap<Uuid, Settlement>,
    new: Vec<Settlement>,
    entries: Vec<Debit>,
}

/// Reads the [`SettleInputs`] of visits (visit, year, category) with [`SETTLE_BATCH_INPUTS`],
/// one per visit in order (none: no such visit).
fn batch_inputs(
    conn: &mut DbConnection,
    visits: &[(Uuid, i32, Category)],
) -> Result<Vec<Option<SettleInputs>>, TxError> {
    inputs_by_visit(conn, SETTLE_BATCH_INPUTS, visits)
}

/// Reads [`SettleInputs`] of visits with `sql` ([`SETTLE_BATCH_INPUTS`] or
/// [`FAMILY_AID_INPUTS`]), one per visit in order (none: no such visit).
fn inputs_by_visit(
    conn: &mut DbConnection,
    sql: &'static str,
    visits: &[(Uuid, i32, Category)],
) -> Result<Vec<Option<SettleInputs>>, TxError> {
    let rows: Vec<BatchInputs> = CachedSql::new(
        sql,
        (
            visits.iter().map(|(visit_id, _, _)| visit_id.to_string()).collect::<Vec<_>>().into_sql::<Array<Text>>(),
            visits.iter().map(|(_, year, _)| *year).collect::<Vec<_>>().into_sql::<Array<Integer>>(),
            visits.iter().map(|(_, _, category)| category.as_str()).collect::<Vec<_>>().into_sql::<Array<Text>>(),
        ),
    )
    .load(postgres(conn)?)?;
    let mut inputs: Vec<Option<SettleInputs>> = visits.iter().map(|_| None).collect();
    for row in rows {
        let slot = usize::try_from(row.ord - 1).ok().and_then(|index| inputs.get_mut(index));
        *slot.ok_or_else(|| ApiError::internal(format_args!("settlement batch row {}", row.ord)))? = Some(row.inputs);
    }
    Ok(inputs)
}

fn settle_together(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    calls: &[SettleCall],
) -> Result<Vec<ApiResult<Settlement>>, TxError> {
    let visits: Vec<_> = calls.iter().map(|call| (call.visit_id, call.year(), call.terms.category)).collect();
    let inputs = batch_inputs(conn, &visits)?;
    let mut state = BatchState::default();
    let mut outcomes = Vec::with_capacity(calls.len());
    for (call, inputs) in calls.iter().zip(inputs) {
        outcomes.push(match inputs {
            None => Err(visit_not_found()),
            Some(inputs) => settle_in_batch(conn, policy, catalog, call, inputs, &mut state)?,
        });
    }
    let totals: Vec<_> = state.totals.into_iter().collect();
    store_settlements(conn, &state.new, &state.entries, &totals)?;
    Ok(outcomes)
}

/// One call of a batch: its facts are what was read, moved by the calls before it in the
/// batch (their settlements, the balances and totals they left); [`settlement::decide`] decides
/// as for a call alone. `Err` only for what fails the whole batch; a refusal of this call is
/// its outcome and changes nothing.
fn settle_in_batch(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    call: &SettleCall,
    inputs: SettleInputs,
    state: &mut BatchState,
) -> Result<ApiResult<Settlement>, TxError> {
    let visit_id = call.visit_id;
    let (person_id, mut holder_account) = inputs.holder();
    let earlier = match state.settled.get(&visit_id) {
        Some(first) => Some(first.clone()),
        None => inputs.earlier(conn, visit_id)?,
    };
    if let Some(&(status, balance_cents)) = state.balances.get(&holder_account.id) {
        (holder_account.status, holder_account.balance_cents) = (status, balance_cents);
    }
    let key = (person_id, call.year(), call.terms.category);
    let year_to_date = state.totals.get(&key).copied().unwrap_or_else(|| inputs.year_to_date());
    let filings = inputs.filings(conn, person_id, call)?;
    let facts = SettleFacts {
        call,
        opened_by: &inputs.partner_id,
        person_id,
        earlier,
        holder_account,
        insured_region_code: &inputs.region_code,
        filings: &filings,
        family_aid: None,
        year_to_date,
        pre_settlement: None,
    };
    let new = match settlement::decide(policy, catalog, facts) {
        Err(refused) => return Ok(Err(refused)),
        Ok(Decision::Replay(first)) => return Ok(Ok(first)),
        Ok(Decision::Settle(new)) => new,
    };
    if let Some(debit) = new.debit {
        state.balances.insert(debit.account_id, (holder_account.status, debit.balance_after_cents));
        state.entries.push(debit);
    }
    state.totals.insert(key, new.year_to_date);
    state.settled.insert(visit_id, new.settlement.clone());
    state.new.push(new.settlement.clone());
    Ok(Ok(new.settlement))
}

/// Writes new settlements with their debits' ledger entries (in order: an account's last entry
/// holds its new balance) and the totals they leave, in one statement ([`SETTLE_BATCH_WRITE`],
/// PostgreSQL); nothing if there is nothing to write. The rows were locked by the read.
fn store_settlements(
    conn: &mut DbConnection,
    new: &[Settlement],
    entries: &[Debit],
    totals: &[(TotalsKey, YearToDate)],
) -> Result<(), TxError> {
    if new.is_empty() {
        return Ok(());
    }
    let texts = |field: fn(&Settlement) -> String| new.iter().map(field).collect::<Vec<_>>().into_sql::<Array<Text>>();
    let cents = |field: fn(&Settlement) -> i64| new.iter().map(field).collect::<Vec<_>>().into_sql::<Array<BigInt>>();
    let settlements = Chain(
        (
            texts(|s| s.id.to_string()),
            new.iter()
                .map(|s| s.visit_id.map(|id| id.to_string()))
                .collect::<Vec<_>>()
                .into_sql::<Array<Nullable<Text>>>(),
            texts(|s| s.person_id.to_string()),
            texts(|s| s.category.as_str().to_owned()),
            texts(|s| s.pay_from.as_str().to_owned()),
            new.iter()
                .map(|s| s.charged_account_id.map(|id| id.to_string()))
                .collect::<Vec<_>>()
                .into_sql::<Array<Nullable<Text>>>(),
            cents(|s| s.total_cents),
            cents(|s| s.fund_cents),
            cents(|s| s.account_cents),
            cents(|s| s.self_cents),
            cents(|s| s.deductible_cents),
        ),
        (
            new.iter().map(|s| s.year).collect::<Vec<_>>().into_sql::<Array<Integer>>(),
            texts(|s| s.items_summary.clone()),
            texts(|s| s.status.as_str().to_owned()),
            new.iter().map(|s| s.settled_at).collect::<Vec<_>>().into_sql::<Array<Timestamp>>(),
        ),
    );
    let entry_texts =
        |field: fn(&Debit) -> String| entries.iter().map(field).collect::<Vec<_>>().into_sql::<Array<Text>>();
    let entry_rows = (
        entries.iter().map(|_| Uuid::now_v7().to_string()).collect::<Vec<_>>().into_sql::<Array<Text>>(),
        entry_texts(|e| e.account_id.to_string()),
        entry_texts(|e| e.kind.as_str().to_owned()),
        entries.iter().map(|e| e.amount_cents).collect::<Vec<_>>().into_sql::<Array<BigInt>>(),
        entries.iter().map(|e| e.balance_after_cents).collect::<Vec<_>>().into_sql::<Array<BigInt>>(),
        entry_texts(|e| e.settlement_id.to_string()),
        entry_texts(|e| e.settlement_id.to_string()),
        entries.iter().map(|e| e.created_at).collect::<Vec<_>>().into_sql::<Array<Timestamp>>(),
    );
    let mut charged: HashMap<Uuid, &Debit> = HashMap::new();
    for entry in entries {
        charged.insert(entry.account_id, entry);
    }
    let accounts = (
        charged.keys().map(Uuid::to_string).collect::<Vec<_>>().into_sql::<Array<Text>>(),
        charged.values().map(|e| e.balance_after_cents).collect::<Vec<_>>().into_sql::<Array<BigInt>>(),
        charged.values().map(|e| e.created_at).collect::<Vec<_>>().into_sql::<Array<Timestamp>>(),
    );
    let totals_rows = (
        totals.iter().map(|((person, _, _), _)| person.to_string()).collect::<Vec<_>>().into_sql::<Array<Text>>(),
        totals.iter().map(|((_, year, _), _)| *year).collect::<Vec<_>>().into_sql::<Array<Integer>>(),
        totals.iter().map(|((_, _, category), _)| category.as_str()).collect::<Vec<_>>().into_sql::<Array<Text>>(),
        totals.iter().map(|(_, t)| t.total_cents).collect::<Vec<_>>().into_sql::<Array<BigInt>>(),
        totals.iter().map(|(_, t)| t.fund_cents).collect::<Vec<_>>().into_sql::<Array<BigInt>>(),
        totals.iter().map(|(_, t)| t.deductible_cents).collect::<Vec<_>>().into_sql::<Array<BigInt>>(),
    );
    let expected = BatchWritten {
        settlements: new.len() as i64,
        entries: entries.len() as i64,
        accounts: charged.len() as i64,
        totals: totals.len() as i64,
    };
    let written: BatchWritten =
        CachedSql::new(SETTLE_BATCH_WRITE, Chain(settlements, Chain(entry_rows, Chain(accounts, totals_rows))))
            .get_result(postgres(conn)?)?;
    if written != expected {
        return Err(ApiError::internal(format_args!("settlement batch wrote {written:?}, not {expected:?}")).into());
    }
    store_details(conn, &new.iter().collect::<Vec<_>>())
}

/// Settlements.
#[derive(Clone, Debug)]
pub struct SettlementStore {
    db: Db,
    policy: Arc<PolicyTable>,
    catalog: Arc<Catalog>,
    /// PostgreSQL's settlements paid by the holder or SELF, batched; started on first use.
    batcher: Arc<OnceLock<Batcher<SettleCall, ApiResult<Settlement>>>>,
}

impl SettlementStore {
    /// A store over `db` settling under `policy`, pricing items in `catalog`.
    pub fn new(db: Db, policy: Arc<PolicyTable>, catalog: Arc<Catalog>) -> Self {
        Self { db, policy, catalog, batcher: Arc::default() }
    }

    /// The policy table in force.
    pub fn policy(&self) -> &PolicyTable {
        &self.policy
    }

    /// Settles a visit for the partner that opened it; see the module doc and
    /// [`settlement::split`]. A visit settles once: the same terms again return the first
    /// settlement, other terms are refused (VISIT_ALREADY_SETTLED). On PostgreSQL the
    /// settlements waiting at the same moment, except family aid, are settled together
    /// (`settle_batch`).
    ///
    /// Returns whether the call's audit row was committed with the settlement (`audit`, on
    /// SQLite, where the settlement is a transaction of its own on the writer thread); when
    /// not, the caller records it.
    ///
    /// Family aid and a Settle confirming a pre-settlement take the single path on PostgreSQL
    /// too (they read more than the batch's one statement does).
    pub async fn settle(&self, call: SettleCall, audit: &InlineAudit) -> ApiResult<(Settlement, Audited)> {
        if call.binder.is_none() && call.pre_settlement_id.is_none() && self.db.backend() == Backend::Postgres {
            let batcher = self.batcher.get_or_init(|| {
                let (policy, catalog) = (self.policy.clone(), self.catalog.clone());
                Batcher::start(self.db.clone(), SETTLE_BATCH, move |conn, calls| {
                    Ok(settle_batch(conn, &policy, &catalog, calls))
                })
            });
            return Ok((batcher.call(call).await??, Audited::No));
        }
        let (policy, catalog) = (self.policy.clone(), self.catalog.clone());
        let audit = audit.clone();
        let settled = self
            .db
            .write(move |conn| {
                write_with_retry(conn, |conn| {
                    let settled = settle_one(conn, &policy, &catalog, &call)?;
                    audit.append(conn, settled.person_id, tonic::Code::Ok).map_err(ApiError::from)?;
                    Ok(settled)
                })
            })
            .await?;
        Ok((settled, Audited::InTransaction))
    }

    /// Pre-settles a visit: the decision Settle would make now, written only as a
    /// pre-settlement (see [`settlement::PreSettlement`]); the settlement it would be is
    /// returned with it (never written).
    pub async fn pre_settle(&self, call: SettleCall) -> ApiResult<(NewSettlement, PreSettlement)> {
        let (policy, catalog) = (self.policy.clone(), self.catalog.clone());
        self.db.write(move |conn| write_with_retry(conn, |conn| pre_settle_one(conn, &policy, &catalog, &call))).await
    }

    /// A settlement by id.
    pub async fn find(&self, settlement_id: Uuid) -> ApiResult<Option<Settlement>> {
        self.db.read(move |conn| find(conn, settlement_id)).await
    }

    /// Reverses a settlement: status REVERSED, the account share credited back with a
    /// REVERSAL entry, the year-to-date totals restored. Once only
    /// (SETTLEMENT_ALREADY_REVERSED).
    pub async fn reverse(&self, settlement_id: Uuid, now: NaiveDateTime) -> ApiResult<Settlement> {
        self.db
            .write(move |conn| {
                write_with_retry(conn, |conn| {
                    let mut found = find(conn, settlement_id)?
                        .ok_or_else(|| ApiError::not_found(Reason::SettlementNotFound, "no such settlement"))?;
                    settlement::ensure_reversible(found.status)?;
                    crate::domain::claim::ensure_reversible_settlement(found.visit_id)?;
                    // Totals, then account: the order settling takes them in (settle_inputs).
                    let ytd = lock_year_to_date(conn, found.person_id, found.year, found.category)?;
                    let charged = found.charged_account_id.filter(|_| found.account_cents > 0);
                    if let Some(account_id) = charged {
                        lock_account(conn, account_id)?;
                    }
                    // The status flips once: a concurrent second reversal matches no row.
                    let flipped = diesel::update(
                        settlements::table
                            .filter(settlements::id.eq(DbUuid(settlement_id)))
                            .filter(settlements::status.eq(SettlementStatus::Settled.as_str())),
                    )
                    .set((
                        settlements::status.eq(SettlementStatus::Reversed.as_str()),
                        settlements::reversed_at.eq(Some(now)),
                    ))
                    .execute(conn)?;
                    if flipped == 0 {
                        settlement::ensure_reversible(SettlementStatus::Reversed)?;
                    }
                    let restored = settlement::year_to_date_after_reversal(ytd, &found);
                    store_year_to_date(conn, found.person_id, found.year, found.category, restored)?;
                    if let Some(account_id) = charged {
                        // Credited back whatever the account's status now: the money was its.
                        post_entry(
                            conn,
                            NewEntry {
                                account_id,
                                kind: EntryKind::Reversal,
                                amount_cents: found.account_cents,
                                reference: &settlement_id.to_string(),
                                settlement_id: Some(settlement_id),
                                credited_by: None,
                            },
                            now,
                        )?;
                    }
                    found.status = SettlementStatus::Reversed;
                    found.reversed_at = Some(now);
                    Ok(found)
                })
            })
            .await
    }

    /// A person's standing (not reversed) settlements of one year, as expense lines.
    pub async fn expense_lines(&self, person_id: Uuid, year: i32) -> ApiResult<Vec<ExpenseLine>> {
        self.db
            .run(move |conn| {
                let rows: Vec<SettlementRow> = settlements::table
                    .filter(settlements::person_id.eq(DbUuid(person_id)))
                    .filter(settlements::year.eq(year))
                    .filter(settlements::status.eq(SettlementStatus::Settled.as_str()))
                    .select(SettlementRow::as_select())
                    .load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let s = Settlement::from(row);
                        ExpenseLine {
                            category: s.category,
                            settled_at: s.settled_at,
                            total_cents: s.total_cents,
                            fund_cents: s.fund_cents,
                            account_cents: s.account_cents,
                            self_cents: s.self_cents,
                        }
                    })
                    .collect())
            })
            .await
    }
}

/// Settles an approved reimbursement claim in the caller's write transaction (`store::claim`),
/// with the one decision ([`settlement::decide`]) as a self-paid bill of `person_id`, whose
/// account `account_id` gives the scheme and insured region, given at `site` (the claim's
/// hospital region): the totals row, then the account row are locked (the lock order of the
/// module doc); the person's ACTIVE cross-region filings are read when the care was elsewhere.
/// The call is keyed by the claim; the settlement written has no visit. Returns the settlement
/// and the account as locked.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle_claim(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    claim_id: Uuid,
    reviewer: &str,
    person_id: Uuid,
    account_id: Uuid,
    site: settlement::Site,
    terms: settlement::SettleTerms,
    now: NaiveDateTime,
) -> Result<(Settlement, AccountFacts), TxError> {
    let call = SettleCall {
        visit_id: claim_id,
        partner_id: reviewer.to_owned(),
        site,
        terms,
        binder: None,
        pre_settlement_id: None,
        now,
    };
    let year_to_date = lock_year_to_date(conn, person_id, call.year(), call.terms.category)?;
    let locked = lock_account(conn, account_id)?
        .ok_or_else(|| ApiError::internal(format_args!("claim {claim_id}: its account vanished")))?;
    let holder_account = AccountFacts {
        id: locked.id,
        scheme: locked.scheme,
        status: locked.status,
        balance_cents: locked.balance_cents,
    };
    let filings = match &call.site.region_code {
        Some(treatment) if cross_region::is_cross_region(&locked.region_code, treatment) => {
            let mut filings = super::cross_region::filings_of(conn, person_id)?;
            filings.retain(|f| f.status == cross_region::FilingStatus::Active);
            filings
        }
        _ => Vec::new(),
    };
    let facts = SettleFacts {
        call: &call,
        opened_by: reviewer,
        person_id,
        earlier: None,
        holder_account,
        insured_region_code: &locked.region_code,
        filings: &filings,
        family_aid: None,
        year_to_date,
        pre_settlement: None,
    };
    let Decision::Settle(mut new) = settlement::decide(policy, catalog, facts)? else {
        return Err(ApiError::internal(format_args!("claim {claim_id}: a first settlement replayed")).into());
    };
    new.settlement.visit_id = None;
    store_settlement(conn, &new)?;
    Ok((new.settlement, holder_account))
}
