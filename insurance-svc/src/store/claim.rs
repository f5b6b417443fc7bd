//! Reimbursement claims at rest (`domain::claim`): a claim with its items and invoice
//! documents is written in one transaction; its review is another, which for an approval also
//! settles the claim (`store::settlement::settle_claim`, the one settlement decision) and
//! credits the fund's share through the ledger's posting path (`store::ledger::post_entry`).
//!
//! A claim is reviewed once: the review's transaction flips `claims.status` from SUBMITTED with
//! a compare-and-set (a concurrent review that lost matches no row and is answered
//! CLAIM_ALREADY_REVIEWED, nothing written), and `claim_reviews` has the claim as its primary
//! key, so no second review row can exist whatever the code does.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    db::{Db, DbConnection, DbUuid},
};
use uuid::Uuid;

use super::{
    ledger::{NewEntry, TxError, post_entry, write_with_retry},
    schema::{claim_documents, claim_items, claim_reviews, claims},
    settlement::settle_claim,
};
use crate::domain::{
    catalog::Catalog,
    claim::{
        self, Claim, ClaimCursor, ClaimItem, ClaimReview, ClaimStatus, ClaimTerms, Listing, NotSettledBecause, Payout,
        Review,
    },
    ledger::{self, EntryKind},
    settlement::{Category, PayFrom, PolicyTable, SettleTerms, Settlement},
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = claims)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct ClaimRow {
    id: DbUuid,
    person_id: DbUuid,
    account_id: DbUuid,
    hospital_name: String,
    hospital_region_code: String,
    category: String,
    care_date: NaiveDate,
    not_settled_because: String,
    total_cents: i64,
    payout: String,
    status: String,
    submitted_by: String,
    submitted_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = claim_reviews)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct ReviewRow {
    claim_id: DbUuid,
    reviewed_by: String,
    reviewed_at: NaiveDateTime,
    rejection_reason: Option<String>,
    settlement_id: Option<DbUuid>,
    transfer_reference: Option<String>,
}

/// A claim with what a listing shows of its approval: the settlement and the amount credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The claim.
    pub claim: Claim,
    /// An approved claim's settlement.
    pub settlement: Option<Settlement>,
    /// What was credited to the individual account.
    pub credited_cents: i64,
}

fn bad_row(id: Uuid, what: &str) -> ApiError {
    ApiError::internal(format_args!("claim {id}: bad {what}"))
}

/// Reads the items, documents, reviews, settlements and credits of `rows`, in their order.
fn assemble(conn: &mut DbConnection, rows: Vec<ClaimRow>) -> ApiResult<Vec<ClaimRecord>> {
    let ids: Vec<DbUuid> = rows.iter().map(|row| row.id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut items: HashMap<Uuid, Vec<ClaimItem>> = HashMap::new();
    let item_rows: Vec<(DbUuid, String, i64, i64)> = claim_items::table
        .filter(claim_items::claim_id.eq_any(ids.clone()))
        .order((claim_items::claim_id, claim_items::line))
        .select((claim_items::claim_id, claim_items::code, claim_items::quantity, claim_items::unit_price_cents))
        .load(conn)?;
    for (claim_id, code, quantity, unit_price_cents) in item_rows {
        items.entry(claim_id.into()).or_default().push(ClaimItem { code, quantity, unit_price_cents });
    }
    let mut documents: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let document_rows: Vec<(DbUuid, DbUuid)> = claim_documents::table
        .filter(claim_documents::claim_id.eq_any(ids.clone()))
        .order((claim_documents::claim_id, claim_documents::document_id))
        .select((claim_documents::claim_id, claim_documents::document_id))
        .load(conn)?;
    for (claim_id, document_id) in document_rows {
        documents.entry(claim_id.into()).or_default().push(document_id.into());
    }
    let review_rows: Vec<ReviewRow> = claim_reviews::table
        .filter(claim_reviews::claim_id.eq_any(ids.clone()))
        .select(ReviewRow::as_select())
        .load(conn)?;
    let mut reviews: HashMap<Uuid, ClaimReview> = review_rows
        .into_iter()
        .map(|row| {
            (
                Uuid::from(row.claim_id),
                ClaimReview {
                    reviewed_by: row.reviewed_by,
                    reviewed_at: row.reviewed_at,
                    rejection_reason: row.rejection_reason,
                    settlement_id: row.settlement_id.map(Uuid::from),
                    transfer_reference: row.transfer_reference,
                },
            )
        })
        .collect();
    let settlement_ids: Vec<DbUuid> = reviews.values().filter_map(|review| review.settlement_id.map(DbUuid)).collect();
    let mut settlements: HashMap<Uuid, Settlement> = HashMap::new();
    let mut credits: HashMap<Uuid, i64> = HashMap::new();
    if !settlement_ids.is_empty() {
        use super::schema::{account_entries, settlements as settled};
        let found: Vec<super::settlement::SettlementRow> = settled::table
            .filter(settled::id.eq_any(settlement_ids.clone()))
            .select(super::settlement::SettlementRow::as_select())
            .load(conn)?;
        for row in found {
            let mut settlement = Settlement::from(row);
            // Its items and what its receipt shows, as GetSettlement gives them.
            settlement.details = super::settlement_details::load_details(conn, settlement.id)?;
            settlements.insert(settlement.id, settlement);
        }
        let credited: Vec<(Option<DbUuid>, i64)> = account_entries::table
            .filter(account_entries::settlement_id.eq_any(settlement_ids.iter().map(|id| Some(*id))))
            .filter(account_entries::kind.eq(EntryKind::ClaimReimbursement))
            .select((account_entries::settlement_id, account_entries::amount_cents))
            .load(conn)?;
        for (settlement_id, amount) in credited {
            if let Some(id) = settlement_id {
                *credits.entry(id.into()).or_default() += amount;
            }
        }
    }
    rows.into_iter()
        .map(|row| {
            let id = Uuid::from(row.id);
            let review = reviews.remove(&id);
            let settlement = review.as_ref().and_then(|r| r.settlement_id).and_then(|sid| settlements.remove(&sid));
            let credited_cents = settlement.as_ref().and_then(|s| credits.get(&s.id).copied()).unwrap_or(0);
            let claim = Claim {
                id,
                person_id: row.person_id.into(),
                account_id: row.account_id.into(),
                terms: ClaimTerms {
                    hospital_name: row.hospital_name,
                    hospital_region_code: row.hospital_region_code,
                    category: Category::parse(&row.category).ok_or_else(|| bad_row(id, "category"))?,
                    care_date: row.care_date,
                    because: NotSettledBecause::parse(&row.not_settled_because)
                        .ok_or_else(|| bad_row(id, "not_settled_because"))?,
                    items: items.remove(&id).unwrap_or_default(),
                    total_cents: row.total_cents,
                    payout: Payout::parse(&row.payout).ok_or_else(|| bad_row(id, "payout"))?,
                    documents: documents.remove(&id).unwrap_or_default(),
                },
                status: ClaimStatus::parse(&row.status).ok_or_else(|| bad_row(id, "status"))?,
                submitted_by: row.submitted_by,
                submitted_at: row.submitted_at,
                review,
            };
            Ok(ClaimRecord { claim, settlement, credited_cents })
        })
        .collect()
}

fn find_in(conn: &mut DbConnection, claim_id: Uuid) -> ApiResult<Option<ClaimRecord>> {
    let row: Option<ClaimRow> =
        claims::table.find(DbUuid(claim_id)).select(ClaimRow::as_select()).first(conn).optional()?;
    Ok(assemble(conn, row.into_iter().collect())?.pop())
}

fn claim_not_found() -> ApiError {
    ApiError::not_found(Reason::ClaimNotFound, "no such claim")
}

/// Claims, their items, documents and reviews.
#[derive(Clone, Debug)]
pub struct ClaimStore {
    db: Db,
}

impl ClaimStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Writes a SUBMITTED claim of `person_id` (insured by `account_id`) with its items and
    /// invoice documents, in one transaction.
    pub async fn submit(
        &self,
        person_id: Uuid,
        account_id: Uuid,
        terms: ClaimTerms,
        submitted_by: &str,
        now: NaiveDateTime,
    ) -> ApiResult<ClaimRecord> {
        let submitted_by = submitted_by.to_owned();
        let id = Uuid::now_v7();
        self.db
            .write(move |conn| {
                write_with_retry(conn, |conn| {
                    // One invoice backs one claim: read in the transaction; a concurrent claim
                    // that commits first makes this one's insert fail on the partial unique index
                    // (claim_documents_one_claim_per_invoice), and the retry is answered here.
                    let held: Vec<DbUuid> = claim_documents::table
                        .filter(claim_documents::document_id.eq_any(terms.documents.iter().map(|d| DbUuid(*d))))
                        .filter(claim_documents::holds.eq(true))
                        .select(claim_documents::document_id)
                        .load(conn)?;
                    if let Some(index) = terms.documents.iter().position(|d| held.contains(&DbUuid(*d))) {
                        return Err(claim::invoice_already_claimed(index).into());
                    }
                    diesel::insert_into(claims::table)
                        .values((
                            claims::id.eq(DbUuid(id)),
                            claims::person_id.eq(DbUuid(person_id)),
                            claims::account_id.eq(DbUuid(account_id)),
                            claims::hospital_name.eq(&terms.hospital_name),
                            claims::hospital_region_code.eq(&terms.hospital_region_code),
                            claims::category.eq(terms.category),
                            claims::care_date.eq(terms.care_date),
                            claims::not_settled_because.eq(terms.because),
                            claims::total_cents.eq(terms.total_cents),
                            claims::payout.eq(terms.payout),
                            claims::status.eq(ClaimStatus::Submitted),
                            claims::submitted_by.eq(&submitted_by),
                            claims::submitted_at.eq(now),
                        ))
                        .execute(conn)?;
                    // Row by row: diesel's multi-row insert is not available on the connection
                    // that serves both backends; a claim has at most 200 items and 10 invoices.
                    for (index, item) in terms.items.iter().enumerate() {
                        diesel::insert_into(claim_items::table)
                            .values((
                                claim_items::claim_id.eq(DbUuid(id)),
                                claim_items::line.eq(index as i32 + 1),
                                claim_items::code.eq(&item.code),
                                claim_items::quantity.eq(item.quantity),
                                claim_items::unit_price_cents.eq(item.unit_price_cents),
                            ))
                            .execute(conn)?;
                    }
                    for document in &terms.documents {
                        diesel::insert_into(claim_documents::table)
                            .values((
                                claim_documents::claim_id.eq(DbUuid(id)),
                                claim_documents::document_id.eq(DbUuid(*document)),
                                claim_documents::holds.eq(true),
                            ))
                            .execute(conn)?;
                    }
                    Ok(find_in(conn, id)?.ok_or_else(|| ApiError::internal("a claim vanished as it was written"))?)
                })
            })
            .await
    }

    /// A claim by id.
    pub async fn find(&self, claim_id: Uuid) -> ApiResult<Option<ClaimRecord>> {
        self.db.read(move |conn| find_in(conn, claim_id)).await
    }

    /// A page of claims of `listing`, newest first (submitted_at, id), after `cursor`; one more
    /// row than `page_size` is read to know whether a next page exists.
    pub async fn list(
        &self,
        listing: Listing,
        page_size: usize,
        cursor: Option<ClaimCursor>,
    ) -> ApiResult<(Vec<ClaimRecord>, bool)> {
        self.db
            .read(move |conn| {
                let mut query = claims::table.into_boxed();
                query = match listing {
                    Listing::Person(person, status) => {
                        let query = query.filter(claims::person_id.eq(DbUuid(person)));
                        match status {
                            Some(status) => query.filter(claims::status.eq(status)),
                            None => query,
                        }
                    }
                    Listing::Queue(status) => query.filter(claims::status.eq(status)),
                };
                if let Some(cursor) = cursor {
                    query =
                        query.filter(claims::submitted_at.lt(cursor.submitted_at).or(
                            claims::submitted_at.eq(cursor.submitted_at).and(claims::id.lt(DbUuid(cursor.claim_id))),
                        ));
                }
                let limit = i64::try_from(page_size).unwrap_or(i64::MAX).saturating_add(1);
                let rows: Vec<ClaimRow> = query
                    .order((claims::submitted_at.desc(), claims::id.desc()))
                    .limit(limit)
                    .select(ClaimRow::as_select())
                    .load(conn)?;
                let more = rows.len() > page_size;
                let rows: Vec<ClaimRow> = rows.into_iter().take(page_size).collect();
                Ok((assemble(conn, rows)?, more))
            })
            .await
    }

    /// Reviews a SUBMITTED claim in one transaction: the status flips from SUBMITTED (a claim
    /// reviewed before, or by a concurrent review that won, is CLAIM_ALREADY_REVIEWED and
    /// nothing is written); an approval settles the claim with the one decision under `policy`
    /// and credits the fund's share to the person's account (ACCOUNT payout; ACCOUNT_CLOSED
    /// when the account is closed) or records the bank transfer's reference; a rejection keeps
    /// its reason. Then the review row (one per claim, its primary key).
    pub async fn review(
        &self,
        policy: std::sync::Arc<PolicyTable>,
        catalog: std::sync::Arc<Catalog>,
        claim_id: Uuid,
        review: Review,
        reviewer: &str,
        now: NaiveDateTime,
    ) -> ApiResult<ClaimRecord> {
        let reviewer = reviewer.to_owned();
        self.db
            .write(move |conn| {
                write_with_retry(conn, |conn| review_in(conn, &policy, &catalog, claim_id, &review, &reviewer, now))
            })
            .await
    }
}

fn review_in(
    conn: &mut DbConnection,
    policy: &PolicyTable,
    catalog: &Catalog,
    claim_id: Uuid,
    review: &Review,
    reviewer: &str,
    now: NaiveDateTime,
) -> Result<ClaimRecord, TxError> {
    let found = find_in(conn, claim_id)?.ok_or_else(claim_not_found)?;
    claim::ensure_reviewable(found.claim.status)?;
    let after = claim::status_after(review);
    // Compare-and-set: only the first review finds the claim SUBMITTED.
    let flipped = diesel::update(
        claims::table.filter(claims::id.eq(DbUuid(claim_id))).filter(claims::status.eq(ClaimStatus::Submitted)),
    )
    .set(claims::status.eq(after))
    .execute(conn)?;
    if flipped == 0 {
        claim::ensure_reviewable(after)?;
    }
    if !claim::holds_invoices(after) {
        // A rejected claim lets its invoices go: the person may claim the bill again.
        diesel::update(claim_documents::table.filter(claim_documents::claim_id.eq(DbUuid(claim_id))))
            .set(claim_documents::holds.eq(false))
            .execute(conn)?;
    }
    let terms = &found.claim.terms;
    let (settlement_id, rejection_reason, transfer_reference) = match review {
        Review::Reject { reason } => (None, Some(reason.clone()), None),
        Review::Approve { transfer_reference } => {
            let settle_terms = SettleTerms {
                total_cents: terms.total_cents,
                category: terms.category,
                // The person paid the whole bill: no individual account pays at settlement.
                pay_from: PayFrom::SelfPay,
                items_summary: claim::items_summary(&terms.items),
                items: claim::bill_items(&terms.items),
            };
            // Where the care was given, and whether unfiled care there counts as filed: the
            // claim's facts decide (domain::claim::care_site).
            let site = claim::care_site(terms);
            let (settled, account) = settle_claim(
                conn,
                policy,
                catalog,
                claim_id,
                reviewer,
                found.claim.person_id,
                found.claim.account_id,
                site,
                settle_terms,
                now,
            )?;
            if let Some(amount) = claim::account_credit(terms.payout, settled.fund_cents) {
                ledger::may_receive_credit(account.status)?;
                post_entry(
                    conn,
                    NewEntry {
                        account_id: account.id,
                        kind: EntryKind::ClaimReimbursement,
                        amount_cents: amount,
                        reference: &claim_id.to_string(),
                        settlement_id: Some(settled.id),
                        credited_by: None,
                    },
                    now,
                )?;
            }
            (Some(settled.id), None, transfer_reference.clone())
        }
    };
    diesel::insert_into(claim_reviews::table)
        .values((
            claim_reviews::claim_id.eq(DbUuid(claim_id)),
            claim_reviews::decision.eq(after),
            claim_reviews::reviewed_by.eq(reviewer),
            claim_reviews::reviewed_at.eq(now),
            claim_reviews::rejection_reason.eq(rejection_reason),
            claim_reviews::settlement_id.eq(settlement_id.map(DbUuid)),
            claim_reviews::transfer_reference.eq(transfer_reference),
        ))
        .execute(conn)?;
    Ok(find_in(conn, claim_id)?.ok_or_else(claim_not_found)?)
}

/// The claims that paid these settlements (claims' settlements have no visit), by settlement.
pub(crate) fn claims_of_settlements(
    conn: &mut DbConnection,
    settlement_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, Uuid>> {
    if settlement_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(DbUuid, Option<DbUuid>)> = claim_reviews::table
        .filter(claim_reviews::settlement_id.eq_any(settlement_ids.iter().map(|id| Some(DbUuid(*id)))))
        .select((claim_reviews::claim_id, claim_reviews::settlement_id))
        .load(conn)?;
    Ok(rows.into_iter().filter_map(|(claim, settlement)| settlement.map(|s| (s.into(), claim.into()))).collect())
}
