//! What a settlement was decided on, beyond its own row, and pre-settlements, at rest
//! (migration `2026-12-07-200000_itemised_settlement`): `settlement_facts` (regions, level,
//! ratio, filing, totals by scope), `settlement_items` (each item of an itemised bill with its
//! split) and `pre_settlements`. Written in the settling transaction; the CHECKs hold every
//! item's cents together (fund + account + self = amount, no share negative).

use chrono::NaiveDateTime;
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp},
};
use medins_common::{
    ApiError, ApiResult,
    auth::HospitalLevel,
    db::{Backend, CachedSql, Chain, DbConnection, DbUuid},
};
use uuid::Uuid;

use super::ledger::TxError;
use crate::domain::{
    account::AccountStatus,
    catalog::CoverageClass,
    settlement::{
        BillItem, LineSplit, PreSettlement, RestedOn, SettledItem, Settlement, SettlementDetails, Split, YearToDate,
    },
};

const INSERT_FACTS: &str = "INSERT INTO settlement_facts (settlement_id, insured_region_code, treatment_region_code, \
     cross_region, filing_id, hospital_level, ratio_bp, itemised, in_scope_cents, b_self_pay_cents, \
     c_self_funded_cents, pre_settlement_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

const INSERT_ITEM: &str = "INSERT INTO settlement_items (settlement_id, line, code, catalog_version, class, \
     quantity_milli, unit_price_cents, amount_cents, department_code, department_name, in_scope_cents, \
     b_self_pay_cents, deductible_cents, fund_cents, account_cents, self_cents) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The PostgreSQL form: every settlement's facts and items of a batch in one statement.
const INSERT_DETAILS_BATCH: &str = "\
WITH f AS (
    INSERT INTO settlement_facts (settlement_id, insured_region_code, treatment_region_code, cross_region,
        filing_id, hospital_level, ratio_bp, itemised, in_scope_cents, b_self_pay_cents, c_self_funded_cents,
        pre_settlement_id)
    SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    RETURNING 1
), i AS (
    INSERT INTO settlement_items (settlement_id, line, code, catalog_version, class, quantity_milli,
        unit_price_cents, amount_cents, department_code, department_name, in_scope_cents, b_self_pay_cents,
        deductible_cents, fund_cents, account_cents, self_cents)
    SELECT * FROM unnest(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    RETURNING 1
)
SELECT (SELECT count(*) FROM f) AS facts, (SELECT count(*) FROM i) AS items";

#[derive(QueryableByName, PartialEq, Eq, Debug)]
struct DetailsWritten {
    #[diesel(sql_type = BigInt)]
    facts: i64,
    #[diesel(sql_type = BigInt)]
    items: i64,
}

/// Writes the details of new settlements (facts row and items), in the settling transaction.
pub(super) fn store_details(conn: &mut DbConnection, settled: &[&Settlement]) -> Result<(), TxError> {
    let with_details: Vec<(&Settlement, &SettlementDetails)> =
        settled.iter().filter_map(|s| s.details.as_ref().map(|d| (*s, d))).collect();
    if with_details.is_empty() {
        return Ok(());
    }
    if conn.backend() == Backend::Postgres {
        return store_details_batch(conn, &with_details);
    }
    for (s, d) in with_details {
        CachedSql::new(
            INSERT_FACTS,
            (
                DbUuid(s.id).into_sql::<Text>(),
                d.insured_region_code.as_str().into_sql::<Text>(),
                d.treatment_region_code.as_str().into_sql::<Text>(),
                d.cross_region.into_sql::<Bool>(),
                d.filing_id.map(DbUuid).into_sql::<Nullable<Text>>(),
                d.hospital_level.as_str().into_sql::<Text>(),
                (d.ratio_bp as i32).into_sql::<Integer>(),
                d.itemised.into_sql::<Bool>(),
                d.in_scope_cents.into_sql::<BigInt>(),
                d.b_self_pay_cents.into_sql::<BigInt>(),
                d.c_self_funded_cents.into_sql::<BigInt>(),
                d.pre_settlement_id.map(DbUuid).into_sql::<Nullable<Text>>(),
            ),
        )
        .execute(conn)?;
        for (line, item) in d.items.iter().enumerate() {
            let split = &item.split;
            CachedSql::new(
                INSERT_ITEM,
                Chain(
                    (
                        DbUuid(s.id).into_sql::<Text>(),
                        (line as i32).into_sql::<Integer>(),
                        item.item.code.as_str().into_sql::<Text>(),
                        item.catalog_version.as_str().into_sql::<Text>(),
                        item.class.as_str().into_sql::<Text>(),
                        item.item.quantity_milli.into_sql::<BigInt>(),
                        item.item.unit_price_cents.into_sql::<BigInt>(),
                        item.amount_cents.into_sql::<BigInt>(),
                        item.item.department_code.as_str().into_sql::<Text>(),
                        item.item.department_name.as_str().into_sql::<Text>(),
                    ),
                    (
                        split.in_scope_cents.into_sql::<BigInt>(),
                        split.b_self_pay_cents.into_sql::<BigInt>(),
                        split.deductible_cents.into_sql::<BigInt>(),
                        split.fund_cents.into_sql::<BigInt>(),
                        split.account_cents.into_sql::<BigInt>(),
                        split.self_cents.into_sql::<BigInt>(),
                    ),
                ),
            )
            .execute(conn)?;
        }
    }
    Ok(())
}

fn store_details_batch(conn: &mut DbConnection, settled: &[(&Settlement, &SettlementDetails)]) -> Result<(), TxError> {
    let facts_texts = |f: fn(&(&Settlement, &SettlementDetails)) -> String| {
        settled.iter().map(f).collect::<Vec<_>>().into_sql::<Array<Text>>()
    };
    let facts_cents = |f: fn(&SettlementDetails) -> i64| {
        settled.iter().map(|(_, d)| f(d)).collect::<Vec<_>>().into_sql::<Array<BigInt>>()
    };
    let facts = (
        facts_texts(|(s, _)| s.id.to_string()),
        facts_texts(|(_, d)| d.insured_region_code.clone()),
        facts_texts(|(_, d)| d.treatment_region_code.clone()),
        settled.iter().map(|(_, d)| d.cross_region).collect::<Vec<_>>().into_sql::<Array<Bool>>(),
        settled
            .iter()
            .map(|(_, d)| d.filing_id.map(|id| id.to_string()))
            .collect::<Vec<_>>()
            .into_sql::<Array<Nullable<Text>>>(),
        facts_texts(|(_, d)| d.hospital_level.as_str().to_owned()),
        settled.iter().map(|(_, d)| d.ratio_bp as i32).collect::<Vec<_>>().into_sql::<Array<Integer>>(),
        settled.iter().map(|(_, d)| d.itemised).collect::<Vec<_>>().into_sql::<Array<Bool>>(),
        facts_cents(|d| d.in_scope_cents),
        facts_cents(|d| d.b_self_pay_cents),
        facts_cents(|d| d.c_self_funded_cents),
        settled
            .iter()
            .map(|(_, d)| d.pre_settlement_id.map(|id| id.to_string()))
            .collect::<Vec<_>>()
            .into_sql::<Array<Nullable<Text>>>(),
    );
    let lines: Vec<(Uuid, i32, &SettledItem)> = settled
        .iter()
        .flat_map(|(s, d)| d.items.iter().enumerate().map(|(line, item)| (s.id, line as i32, item)))
        .collect();
    let texts = |f: fn(&SettledItem) -> String| {
        lines.iter().map(|(_, _, i)| f(i)).collect::<Vec<_>>().into_sql::<Array<Text>>()
    };
    let cents =
        |f: fn(&SettledItem) -> i64| lines.iter().map(|(_, _, i)| f(i)).collect::<Vec<_>>().into_sql::<Array<BigInt>>();
    let items = Chain(
        (
            lines.iter().map(|(id, _, _)| id.to_string()).collect::<Vec<_>>().into_sql::<Array<Text>>(),
            lines.iter().map(|(_, line, _)| *line).collect::<Vec<_>>().into_sql::<Array<Integer>>(),
            texts(|i| i.item.code.clone()),
            texts(|i| i.catalog_version.clone()),
            texts(|i| i.class.as_str().to_owned()),
            cents(|i| i.item.quantity_milli),
            cents(|i| i.item.unit_price_cents),
            cents(|i| i.amount_cents),
            texts(|i| i.item.department_code.clone()),
            texts(|i| i.item.department_name.clone()),
        ),
        (
            cents(|i| i.split.in_scope_cents),
            cents(|i| i.split.b_self_pay_cents),
            cents(|i| i.split.deductible_cents),
            cents(|i| i.split.fund_cents),
            cents(|i| i.split.account_cents),
            cents(|i| i.split.self_cents),
        ),
    );
    let expected = DetailsWritten { facts: settled.len() as i64, items: lines.len() as i64 };
    let written: DetailsWritten = CachedSql::new(INSERT_DETAILS_BATCH, Chain(facts, items)).get_result(match conn {
        DbConnection::Postgres(pg) => pg,
        DbConnection::Sqlite(_) => return Err(ApiError::internal("batched settlement details are PostgreSQL's").into()),
    })?;
    if written != expected {
        return Err(ApiError::internal(format_args!("settlement details wrote {written:?}, not {expected:?}")).into());
    }
    Ok(())
}

#[derive(QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = Text)]
    insured_region_code: String,
    #[diesel(sql_type = Text)]
    treatment_region_code: String,
    #[diesel(sql_type = Bool)]
    cross_region: bool,
    #[diesel(sql_type = Nullable<Text>)]
    filing_id: Option<DbUuid>,
    #[diesel(sql_type = Text)]
    hospital_level: HospitalLevel,
    #[diesel(sql_type = Integer)]
    ratio_bp: i32,
    #[diesel(sql_type = Bool)]
    itemised: bool,
    #[diesel(sql_type = BigInt)]
    in_scope_cents: i64,
    #[diesel(sql_type = BigInt)]
    b_self_pay_cents: i64,
    #[diesel(sql_type = BigInt)]
    c_self_funded_cents: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pre_settlement_id: Option<DbUuid>,
}

#[derive(QueryableByName)]
struct ItemRow {
    #[diesel(sql_type = Text)]
    code: String,
    #[diesel(sql_type = Text)]
    catalog_version: String,
    #[diesel(sql_type = Text)]
    class: CoverageClass,
    #[diesel(sql_type = BigInt)]
    quantity_milli: i64,
    #[diesel(sql_type = BigInt)]
    unit_price_cents: i64,
    #[diesel(sql_type = BigInt)]
    amount_cents: i64,
    #[diesel(sql_type = Text)]
    department_code: String,
    #[diesel(sql_type = Text)]
    department_name: String,
    #[diesel(sql_type = BigInt)]
    in_scope_cents: i64,
    #[diesel(sql_type = BigInt)]
    b_self_pay_cents: i64,
    #[diesel(sql_type = BigInt)]
    deductible_cents: i64,
    #[diesel(sql_type = BigInt)]
    fund_cents: i64,
    #[diesel(sql_type = BigInt)]
    account_cents: i64,
    #[diesel(sql_type = BigInt)]
    self_cents: i64,
}

/// The details of settlement `id`, when it has them (settled after they were kept).
pub(super) fn load_details(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<SettlementDetails>> {
    let facts: Option<FactsRow> = CachedSql::new(
        "SELECT insured_region_code, treatment_region_code, cross_region, filing_id, hospital_level, ratio_bp, \
         itemised, in_scope_cents, b_self_pay_cents, c_self_funded_cents, pre_settlement_id \
         FROM settlement_facts WHERE settlement_id = ?",
        (DbUuid(id).into_sql::<Text>(),),
    )
    .get_result(conn)
    .optional()?;
    let Some(facts) = facts else { return Ok(None) };
    let rows: Vec<ItemRow> = CachedSql::new(
        "SELECT code, catalog_version, class, quantity_milli, unit_price_cents, amount_cents, department_code, \
         department_name, in_scope_cents, b_self_pay_cents, deductible_cents, fund_cents, account_cents, \
         self_cents FROM settlement_items WHERE settlement_id = ? ORDER BY line",
        (DbUuid(id).into_sql::<Text>(),),
    )
    .load(conn)?;
    let bad = |what: &str| ApiError::internal(format_args!("settlement {id}: bad stored {what}"));
    let items = rows
        .into_iter()
        .map(|row| SettledItem {
            class: row.class,
            catalog_version: row.catalog_version,
            amount_cents: row.amount_cents,
            item: BillItem {
                code: row.code,
                quantity_milli: row.quantity_milli,
                unit_price_cents: row.unit_price_cents,
                department_code: row.department_code,
                department_name: row.department_name,
            },
            split: LineSplit {
                in_scope_cents: row.in_scope_cents,
                b_self_pay_cents: row.b_self_pay_cents,
                c_self_funded_cents: row.amount_cents - row.in_scope_cents - row.b_self_pay_cents,
                deductible_cents: row.deductible_cents,
                fund_cents: row.fund_cents,
                account_cents: row.account_cents,
                self_cents: row.self_cents,
            },
        })
        .collect();
    Ok(Some(SettlementDetails {
        insured_region_code: facts.insured_region_code,
        treatment_region_code: facts.treatment_region_code,
        cross_region: facts.cross_region,
        filing_id: facts.filing_id.map(Uuid::from),
        hospital_level: facts.hospital_level,
        ratio_bp: u32::try_from(facts.ratio_bp).map_err(|_| bad("ratio"))?,
        itemised: facts.itemised,
        in_scope_cents: facts.in_scope_cents,
        b_self_pay_cents: facts.b_self_pay_cents,
        c_self_funded_cents: facts.c_self_funded_cents,
        pre_settlement_id: facts.pre_settlement_id.map(Uuid::from),
        items,
    }))
}

/// Writes a pre-settlement.
pub(super) fn store_pre_settlement(conn: &mut DbConnection, pre: &PreSettlement) -> Result<(), TxError> {
    let ytd = pre.rested_on.year_to_date;
    CachedSql::new(
        "INSERT INTO pre_settlements (id, visit_id, partner_id, terms_sha256, fund_cents, \
         account_cents, self_cents, deductible_cents, ytd_total_cents, ytd_fund_cents, ytd_deductible_cents, \
         paying_account_id, balance_cents, account_status, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        Chain(
            (
                DbUuid(pre.id).into_sql::<Text>(),
                DbUuid(pre.visit_id).into_sql::<Text>(),
                pre.partner_id.as_str().into_sql::<Text>(),
                pre.terms_sha256.as_str().into_sql::<Text>(),
                pre.split.fund_cents.into_sql::<BigInt>(),
                pre.split.account_cents.into_sql::<BigInt>(),
                pre.split.self_cents.into_sql::<BigInt>(),
                pre.split.deductible_cents.into_sql::<BigInt>(),
            ),
            (
                ytd.total_cents.into_sql::<BigInt>(),
                ytd.fund_cents.into_sql::<BigInt>(),
                ytd.deductible_cents.into_sql::<BigInt>(),
                Some(DbUuid(pre.rested_on.paying_account_id)).into_sql::<Nullable<Text>>(),
                pre.rested_on.balance_cents.into_sql::<BigInt>(),
                pre.rested_on.account_status.as_str().into_sql::<Text>(),
                pre.created_at.into_sql::<Timestamp>(),
                pre.expires_at.into_sql::<Timestamp>(),
            ),
        ),
    )
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct PreRow {
    #[diesel(sql_type = Text)]
    id: DbUuid,
    #[diesel(sql_type = Text)]
    visit_id: DbUuid,
    #[diesel(sql_type = Text)]
    partner_id: String,
    #[diesel(sql_type = Text)]
    terms_sha256: String,
    #[diesel(sql_type = BigInt)]
    fund_cents: i64,
    #[diesel(sql_type = BigInt)]
    account_cents: i64,
    #[diesel(sql_type = BigInt)]
    self_cents: i64,
    #[diesel(sql_type = BigInt)]
    deductible_cents: i64,
    #[diesel(sql_type = BigInt)]
    ytd_total_cents: i64,
    #[diesel(sql_type = BigInt)]
    ytd_fund_cents: i64,
    #[diesel(sql_type = BigInt)]
    ytd_deductible_cents: i64,
    #[diesel(sql_type = Nullable<Text>)]
    paying_account_id: Option<DbUuid>,
    #[diesel(sql_type = BigInt)]
    balance_cents: i64,
    #[diesel(sql_type = Text)]
    account_status: AccountStatus,
    #[diesel(sql_type = Timestamp)]
    created_at: NaiveDateTime,
    #[diesel(sql_type = Timestamp)]
    expires_at: NaiveDateTime,
}

/// A pre-settlement by id.
pub(super) fn find_pre_settlement(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<PreSettlement>> {
    let row: Option<PreRow> = CachedSql::new(
        "SELECT id, visit_id, partner_id, terms_sha256, fund_cents, account_cents, self_cents, \
         deductible_cents, ytd_total_cents, ytd_fund_cents, ytd_deductible_cents, paying_account_id, \
         balance_cents, account_status, created_at, expires_at FROM pre_settlements WHERE id = ?",
        (DbUuid(id).into_sql::<Text>(),),
    )
    .get_result(conn)
    .optional()?;
    let Some(row) = row else { return Ok(None) };
    let bad = |what: &str| ApiError::internal(format_args!("pre-settlement {id}: bad stored {what}"));
    Ok(Some(PreSettlement {
        id: row.id.into(),
        visit_id: row.visit_id.into(),
        partner_id: row.partner_id,
        terms_sha256: row.terms_sha256,
        total_cents: row.fund_cents + row.account_cents + row.self_cents,
        split: Split {
            deductible_cents: row.deductible_cents,
            fund_cents: row.fund_cents,
            account_cents: row.account_cents,
            self_cents: row.self_cents,
        },
        rested_on: RestedOn {
            year_to_date: YearToDate {
                total_cents: row.ytd_total_cents,
                fund_cents: row.ytd_fund_cents,
                deductible_cents: row.ytd_deductible_cents,
            },
            paying_account_id: row.paying_account_id.ok_or_else(|| bad("account"))?.into(),
            balance_cents: row.balance_cents,
            account_status: row.account_status,
        },
        created_at: row.created_at,
        expires_at: row.expires_at,
    }))
}
