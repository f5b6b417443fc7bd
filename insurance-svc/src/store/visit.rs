//! Visits: opened at a hospital or pharmacy counter by redeeming a payment code or by the
//! social security card with its PIN; the settlement of a visit refers to it.
//!
//! A visit row says which person it is for, the account that was insured (ACTIVE) when it was
//! opened, the partner (hospital or pharmacy) that opened it, and its source: the voucher, the
//! code's redemption key and key id, or the card's number (a CHECK keeps exactly one).
//! `visits.code_nonce` holds the code's redemption key (its issue time and nonce,
//! [`CodePayload::redemption_key`](crate::domain::code::CodePayload::redemption_key)) and is
//! unique: a code opens at most one visit, on any replica.

use std::sync::{Arc, LazyLock, OnceLock};

use chrono::{NaiveDate, NaiveDateTime};
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Binary, Bool, Date, Nullable, Text, Timestamp},
};
use medins_common::{
    ApiError, ApiResult,
    audit::InlineAudit,
    db::{
        Backend, Batcher, CachedSql, Db, DbConnection, DbError, DbUuid, is_unique_violation, retry_conflicts,
        write_transaction,
    },
};
use uuid::Uuid;

use super::{
    Audited,
    card::load_card,
    schema::{accounts, cards, visits, vouchers},
};
use crate::domain::{
    account::{AccountStatus, Scheme},
    card::{Card, CardStatus},
    visit::{
        CLOSED_ACCOUNT, CardUse, HolderAccount, INSURED_ACCOUNT, OpenedVisit, REDEEMABLE_VOUCHER, Redemption,
        RedemptionFacts, Visit, VisitSource, code_already_used, decide_card_visit, decide_redemption,
    },
    voucher::VoucherStatus,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = visits)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct VisitRow {
    id: DbUuid,
    voucher_id: Option<DbUuid>,
    person_id: DbUuid,
    account_id: DbUuid,
    partner_id: String,
    code_key_id: Option<String>,
    opened_at: NaiveDateTime,
    card_number: Option<String>,
}

impl TryFrom<VisitRow> for Visit {
    type Error = ApiError;

    fn try_from(row: VisitRow) -> ApiResult<Self> {
        let source = match (row.voucher_id, row.code_key_id, row.card_number) {
            (Some(voucher_id), Some(code_key_id), None) => {
                VisitSource::Code { voucher_id: voucher_id.into(), code_key_id }
            }
            (None, None, Some(card_number)) => VisitSource::Card { card_number },
            // The schema's CHECK (visits_one_source) makes this unreachable.
            _ => return Err(ApiError::internal(format_args!("visit {}: no single source", row.id.0))),
        };
        Ok(Visit {
            id: row.id.into(),
            source,
            person_id: row.person_id.into(),
            account_id: row.account_id.into(),
            partner_id: row.partner_id,
            opened_at: row.opened_at,
        })
    }
}

/// A visit opened with a card, and the card as it is afterwards (its medical function ACTIVE).
#[derive(Debug, Clone)]
pub struct CardVisit {
    /// The visit and what the counter is told.
    pub opened: OpenedVisit,
    /// The card after its use.
    pub card: Card,
}

/// A code to redeem on PostgreSQL, with the time and the id of the visit it would open.
type Redeeming = (Redemption, NaiveDateTime, Uuid);

/// The visits table.
#[derive(Clone, Debug)]
pub struct VisitStore {
    db: Db,
    /// PostgreSQL's redemptions, batched; started on first use (it needs the runtime).
    redeemer: Arc<OnceLock<Batcher<Redeeming, ApiResult<OpenedVisit>>>>,
}

impl VisitStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db, redeemer: Arc::default() }
    }

    /// A visit by id.
    pub async fn find(&self, id: Uuid) -> ApiResult<Option<Visit>> {
        self.db
            .read(move |conn| {
                let row = visits::table.find(DbUuid(id)).select(VisitRow::as_select()).first(conn).optional()?;
                row.map(Visit::try_from).transpose()
            })
            .await
    }

    /// Opens a visit for a verified code: the voucher must be ACTIVE (VOUCHER_NOT_ACTIVE) and
    /// the holder's account ACTIVE (NOT_INSURED); the code's redemption key must be new (CODE_ALREADY_USED: the
    /// unique index decides, across replicas). The read of the voucher and account and the
    /// insert are one transaction on SQLite (on the writer thread, group-committed). On
    /// PostgreSQL they are one statement, run for all the redemptions waiting at that moment
    /// at once ([`Batcher`]): each round trip of a statement of its own woke a server process
    /// and a blocking thread, which cost more than the statement (docs/benchmarks.md).
    ///
    /// On SQLite the call's audit row (`audit`, for the holder, outcome OK) commits with the
    /// visit; on PostgreSQL the caller records it ([`Audited`]).
    pub async fn open_for_code(
        &self,
        redemption: Redemption,
        now: NaiveDateTime,
        audit: &InlineAudit,
    ) -> ApiResult<(OpenedVisit, Audited)> {
        match self.db.backend() {
            Backend::Sqlite => {
                let audit = audit.clone();
                let opened = self
                    .db
                    .write(move |conn| {
                        write_transaction(conn, |conn| {
                            let opened = open_in_transaction(conn, &redemption, now)?;
                            audit.append(conn, opened.visit.person_id, tonic::Code::Ok)?;
                            Ok::<_, ApiError>(opened)
                        })
                    })
                    .await?;
                Ok((opened, Audited::InTransaction))
            }
            Backend::Postgres => {
                let redeemer = self
                    .redeemer
                    .get_or_init(|| Batcher::start(self.db.clone(), REDEEM_BATCH, redeem_in_one_statement));
                Ok((redeemer.call((redemption, now, Uuid::now_v7())).await??, Audited::No))
            }
        }
    }
}

impl VisitStore {
    /// Opens a visit with card `number`, whose PIN the counter just proved right: in one write
    /// transaction it reads the card and its holder's open account, asks
    /// [`decide_card_visit`] (card VALID and delivered, account insured; the medical function
    /// at first use), keeps the card VALID until commit (a guard update, which also row-locks it
    /// on PostgreSQL against a concurrent loss report), switches the medical function on if this
    /// is its first use, and inserts the visit. On SQLite the call's audit row (`audit`, for the
    /// holder, outcome OK) commits with it; on PostgreSQL the caller records it ([`Audited`]).
    /// Not the hot path of codes: no batching.
    pub async fn open_for_card(
        &self,
        number: String,
        card_use: CardUse,
        now: NaiveDateTime,
        audit: &InlineAudit,
    ) -> ApiResult<(CardVisit, Audited)> {
        let audit = audit.clone();
        let inline = self.db.backend() == Backend::Sqlite;
        let opened = self
            .db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let opened = open_card_visit_in_transaction(conn, &number, &card_use, now)?;
                    if inline {
                        audit.append(conn, opened.opened.visit.person_id, tonic::Code::Ok)?;
                    }
                    Ok::<_, ApiError>(opened)
                })
            })
            .await?;
        Ok((opened, if inline { Audited::InTransaction } else { Audited::No }))
    }
}

fn open_card_visit_in_transaction(
    conn: &mut DbConnection,
    number: &str,
    card_use: &CardUse,
    now: NaiveDateTime,
) -> ApiResult<CardVisit> {
    let not_found = || ApiError::not_found(medins_common::Reason::CardNotFound, "no card with this number");
    let card = load_card(conn, number)?.ok_or_else(not_found)?;
    let account = accounts::table
        .filter(accounts::person_id.eq(DbUuid(card.person_id)))
        .filter(accounts::status.ne(CLOSED_ACCOUNT))
        .select((accounts::id, accounts::scheme, accounts::region_code, accounts::status, accounts::birth_date))
        .first::<(DbUuid, Scheme, String, AccountStatus, NaiveDate)>(conn)
        .optional()?
        .map(|(id, scheme, region_code, status, birth_date)| HolderAccount {
            id: id.into(),
            scheme,
            region_code,
            status,
            birth_date,
        });
    let (opened, activation) = decide_card_visit(&card, account, card_use, Uuid::now_v7(), now)?;
    let valid = || cards::table.find(number).filter(cards::status.eq(CardStatus::Valid));
    // The card stays VALID until this commits: a loss report racing this visit waits for it
    // on PostgreSQL (row lock) and SQLite's writer runs one transaction at a time.
    if diesel::update(valid()).set(cards::status.eq(cards::status)).execute(conn)? != 1 {
        return Err(crate::domain::card::StateConflict { status: card.status.as_str(), action: "USE" }.into_error());
    }
    if activation.medical {
        let by = format!("{}:{}", card_use.channel.as_str(), card_use.partner_id);
        diesel::update(valid().filter(cards::medical_activated_at.is_null()))
            .set((
                cards::medical_activated_at.eq(Some(now)),
                cards::medical_activated_by.eq(Some(&by)),
                cards::updated_at.eq(now),
            ))
            .execute(conn)?;
    }
    let visit = &opened.visit;
    diesel::insert_into(visits::table)
        .values((
            visits::id.eq(DbUuid(visit.id)),
            visits::person_id.eq(DbUuid(visit.person_id)),
            visits::account_id.eq(DbUuid(visit.account_id)),
            visits::partner_id.eq(&visit.partner_id),
            visits::opened_at.eq(visit.opened_at),
            visits::card_number.eq(Some(number)),
        ))
        .execute(conn)?;
    let card = load_card(conn, number)?.ok_or_else(not_found)?;
    Ok(CardVisit { opened, card })
}

/// The voucher and the holder's open account, as read for a redemption.
#[derive(QueryableByName)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct Redeemable {
    #[diesel(sql_type = Text)]
    person_id: DbUuid,
    #[diesel(sql_type = Text)]
    voucher_status: VoucherStatus,
    #[diesel(sql_type = Nullable<Text>)]
    account_id: Option<DbUuid>,
    #[diesel(sql_type = Nullable<Text>)]
    scheme: Option<Scheme>,
    #[diesel(sql_type = Nullable<Text>)]
    region_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    account_status: Option<AccountStatus>,
    #[diesel(sql_type = Nullable<Date>)]
    birth_date: Option<NaiveDate>,
    /// Whether the statement inserted the visit (PostgreSQL only).
    #[diesel(sql_type = Bool)]
    opened: bool,
}

impl Redeemable {
    /// The facts of [`decide_redemption`] in the row (the account's columns come from one
    /// left-joined row: all present or all NULL).
    fn facts(self) -> ApiResult<RedemptionFacts> {
        let account = match self.account_id {
            None => None,
            Some(id) => {
                let missing = |what: &str| ApiError::internal(format_args!("account: no {what}"));
                Some(HolderAccount {
                    id: id.into(),
                    scheme: self.scheme.ok_or_else(|| missing("scheme"))?,
                    region_code: self.region_code.ok_or_else(|| missing("region"))?,
                    status: self.account_status.ok_or_else(|| missing("status"))?,
                    birth_date: self.birth_date.ok_or_else(|| missing("birth date"))?,
                })
            }
        };
        Ok(RedemptionFacts { person_id: self.person_id.into(), voucher_status: self.voucher_status, account })
    }
}

/// [`decide_redemption`] on the row read (none: no such voucher): one place for both backends.
fn redemption_outcome(
    found: Option<Redeemable>,
    redemption: &Redemption,
    visit_id: Uuid,
    now: NaiveDateTime,
) -> ApiResult<OpenedVisit> {
    decide_redemption(found.map(Redeemable::facts).transpose()?, redemption, visit_id, now)
}

fn open_in_transaction(conn: &mut DbConnection, redemption: &Redemption, now: NaiveDateTime) -> ApiResult<OpenedVisit> {
    let found = vouchers::table
        .left_join(
            accounts::table.on(accounts::person_id.eq(vouchers::person_id).and(accounts::status.ne(CLOSED_ACCOUNT))),
        )
        .filter(vouchers::id.eq(DbUuid(redemption.voucher_id)))
        .select((
            vouchers::person_id,
            vouchers::status,
            accounts::id.nullable(),
            accounts::scheme.nullable(),
            accounts::region_code.nullable(),
            accounts::status.nullable(),
            accounts::birth_date.nullable(),
        ))
        .first(conn)
        .optional()?
        .map(|(person_id, voucher_status, account_id, scheme, region_code, account_status, birth_date)| Redeemable {
            person_id,
            voucher_status,
            account_id,
            scheme,
            region_code,
            account_status,
            birth_date,
            opened: false,
        });
    let opened = redemption_outcome(found, redemption, Uuid::now_v7(), now)?;
    let visit = &opened.visit;
    // Kept prepared: diesel's insert builds and looks up its SQL text anew on every call.
    let inserted = CachedSql::new(
        "INSERT INTO visits (id, voucher_id, person_id, account_id, partner_id, code_nonce, code_key_id, opened_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            DbUuid(visit.id).into_sql::<Text>(),
            DbUuid(redemption.voucher_id).into_sql::<Text>(),
            DbUuid(visit.person_id).into_sql::<Text>(),
            DbUuid(visit.account_id).into_sql::<Text>(),
            visit.partner_id.as_str().into_sql::<Text>(),
            redemption.redemption_key.as_slice().into_sql::<Binary>(),
            redemption.key_id.as_str().into_sql::<Text>(),
            now.into_sql::<Timestamp>(),
        ),
    )
    .execute(conn);
    match inserted {
        Ok(_) => Ok(opened),
        Err(error) if is_unique_violation(&error) => Err(code_already_used()),
        Err(error) => Err(error.into()),
    }
}

/// Most redemptions in one statement.
const REDEEM_BATCH: usize = 64;

/// The read and the insert of a batch of redemptions in one autocommit statement: the insert
/// takes the row the read found only when the voucher is [`REDEEMABLE_VOUCHER`] and the account
/// [`INSURED_ACCOUNT`] (the constants of [`decide_redemption`], which then explains a refusal,
/// written into the text once, when it is first used), and a redemption key already redeemed, by an
/// earlier statement or earlier in this batch (rows go in arrival order), inserts nothing.
/// Kept prepared ([`CachedSql`]): planned anew on every call, as `sql_query` would, it cost
/// PostgreSQL more CPU than running it (EXPLAIN ANALYZE: ~0.13 ms planning against ~0.13 ms
/// execution for one redemption).
static REDEEM_IN_ONE_STATEMENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "\
WITH r AS (
    SELECT * FROM unnest(?, ?, ?, ?, ?, ?) WITH ORDINALITY
        AS r(voucher_id, visit_id, partner_id, code_nonce, code_key_id, opened_at, ord)
), found AS (
    SELECT r.ord, r.visit_id, r.partner_id, r.code_nonce, r.code_key_id, r.opened_at,
           v.id AS voucher_id, v.person_id, v.status AS voucher_status, a.id AS account_id,
           a.scheme, a.region_code, a.status AS account_status, a.birth_date
    FROM r JOIN vouchers v ON v.id = r.voucher_id
    LEFT JOIN accounts a ON a.person_id = v.person_id AND a.status <> '{closed}'
), opened AS (
    INSERT INTO visits (id, voucher_id, person_id, account_id, partner_id, code_nonce, code_key_id, opened_at)
    SELECT visit_id, voucher_id, person_id, account_id, partner_id, code_nonce, code_key_id, opened_at
    FROM found
    WHERE voucher_status = '{redeemable}' AND account_status = '{insured}'
    ORDER BY ord
    ON CONFLICT (code_nonce) DO NOTHING
    RETURNING id
)
SELECT found.ord, found.person_id, found.voucher_status, found.account_id, found.scheme, found.region_code,
       found.account_status, found.birth_date, opened.id IS NOT NULL AS opened
FROM found LEFT JOIN opened ON opened.id = found.visit_id",
        closed = CLOSED_ACCOUNT.as_str(),
        redeemable = REDEEMABLE_VOUCHER.as_str(),
        insured = INSURED_ACCOUNT.as_str(),
    )
});

/// A row of [`REDEEM_IN_ONE_STATEMENT`]: what was read for the redemption at `ord` (from 1).
#[derive(QueryableByName)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct Redeemed {
    #[diesel(sql_type = BigInt)]
    ord: i64,
    #[diesel(embed)]
    found: Redeemable,
}

/// Redeems a batch on PostgreSQL, one outcome per redemption, in order. A failed statement
/// fails them all (the batcher answers each with its error).
fn redeem_in_one_statement(
    conn: &mut DbConnection,
    batch: Vec<Redeeming>,
) -> Result<Vec<ApiResult<OpenedVisit>>, DbError> {
    let DbConnection::Postgres(pg) = conn else {
        return Err(DbError::Query("the one-statement redemption is PostgreSQL's".into()));
    };
    let column = |field: fn(&Redeeming) -> String| batch.iter().map(field).collect::<Vec<_>>();
    // One autocommit statement: the shared retry runs it again after a conflict.
    let rows: Vec<Redeemed> = retry_conflicts(|| {
        CachedSql::new(
            REDEEM_IN_ONE_STATEMENT.as_str(),
            (
                column(|(r, _, _)| r.voucher_id.to_string()).into_sql::<Array<Text>>(),
                column(|(_, _, visit_id)| visit_id.to_string()).into_sql::<Array<Text>>(),
                column(|(r, _, _)| r.partner_id.clone()).into_sql::<Array<Text>>(),
                batch.iter().map(|(r, _, _)| r.redemption_key.to_vec()).collect::<Vec<_>>().into_sql::<Array<Binary>>(),
                column(|(r, _, _)| r.key_id.clone()).into_sql::<Array<Text>>(),
                batch.iter().map(|(_, now, _)| *now).collect::<Vec<_>>().into_sql::<Array<Timestamp>>(),
            ),
        )
        .load(&mut *pg)
    })?;
    let mut found: Vec<Option<Redeemable>> = batch.iter().map(|_| None).collect();
    for row in rows {
        let slot = usize::try_from(row.ord - 1).ok().and_then(|index| found.get_mut(index));
        let slot = slot.ok_or_else(|| DbError::Query(format!("redemption row {} of {}", row.ord, batch.len())))?;
        *slot = Some(row.found);
    }
    Ok(batch
        .into_iter()
        .zip(found)
        .map(|((redemption, now, visit_id), found)| {
            let inserted = found.as_ref().is_some_and(|found| found.opened);
            let opened = redemption_outcome(found, &redemption, visit_id, now)?;
            if !inserted {
                return Err(code_already_used());
            }
            Ok(opened)
        })
        .collect())
}
