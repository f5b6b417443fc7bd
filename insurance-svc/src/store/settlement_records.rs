//! A person's own settlement records at rest: the yearly listing (keyset paged, newest first)
//! and one settlement by id, each with the visit it settled (who opened it and when).
//!
//! Read-only: settlements are written by `store::settlement` (visits) and `store::claim`
//! (reimbursement claims).

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::{
    ApiResult,
    db::{Db, DbConnection, DbUuid},
};
use uuid::Uuid;

use super::{
    schema::{settlements, visits},
    settlement::SettlementRow,
};
use crate::domain::{
    settlement::Settlement,
    settlement_records::{SettlementCursor, SettlementRecord, VisitFacts},
};

/// The visits of `settled`, joined to them in order, with each settlement's details (its items
/// and what its receipt shows; `store::settlement_details`, one read per settlement: a page is at
/// most 100).
fn with_visits(conn: &mut DbConnection, mut settled: Vec<Settlement>) -> ApiResult<Vec<SettlementRecord>> {
    for settlement in &mut settled {
        settlement.details = super::settlement_details::load_details(conn, settlement.id)?;
    }
    let ids: Vec<DbUuid> = settled.iter().filter_map(|s| s.visit_id.map(DbUuid)).collect();
    let found: Vec<(DbUuid, String, NaiveDateTime)> = if ids.is_empty() {
        Vec::new()
    } else {
        visits::table
            .filter(visits::id.eq_any(ids))
            .select((visits::id, visits::partner_id, visits::opened_at))
            .load(conn)?
    };
    let mut by_id: HashMap<Uuid, VisitFacts> = found
        .into_iter()
        .map(|(id, partner_id, opened_at)| (Uuid::from(id), VisitFacts { partner_id, opened_at }))
        .collect();
    let without_visit: Vec<Uuid> = settled.iter().filter(|s| s.visit_id.is_none()).map(|s| s.id).collect();
    let claims = super::claim::claims_of_settlements(conn, &without_visit)?;
    Ok(settled
        .into_iter()
        .map(|settlement| {
            let visit = settlement.visit_id.and_then(|id| by_id.remove(&id));
            let claim_id = claims.get(&settlement.id).copied();
            SettlementRecord { settlement, visit, claim_id }
        })
        .collect())
}

/// A page of `person_id`'s settlements counting in `year`, newest first (settled_at, id),
/// after `cursor` when given; one more row than `page_size` is read, so the caller knows whether
/// a next page exists (returned as the second value).
pub async fn list(
    db: &Db,
    person_id: Uuid,
    year: i32,
    page_size: usize,
    cursor: Option<SettlementCursor>,
) -> ApiResult<(Vec<SettlementRecord>, bool)> {
    db.read(move |conn| {
        let mut query = settlements::table
            .filter(settlements::person_id.eq(DbUuid(person_id)))
            .filter(settlements::year.eq(year))
            .into_boxed();
        if let Some(cursor) = cursor {
            query = query.filter(settlements::settled_at.lt(cursor.settled_at).or(
                settlements::settled_at.eq(cursor.settled_at).and(settlements::id.lt(DbUuid(cursor.settlement_id))),
            ));
        }
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX).saturating_add(1);
        let rows: Vec<SettlementRow> = query
            .order((settlements::settled_at.desc(), settlements::id.desc()))
            .limit(limit)
            .select(SettlementRow::as_select())
            .load(conn)?;
        let more = rows.len() > page_size;
        let settled: Vec<Settlement> = rows.into_iter().take(page_size).map(Settlement::from).collect();
        Ok((with_visits(conn, settled)?, more))
    })
    .await
}

/// A settlement by id, with its visit.
pub async fn find(db: &Db, settlement_id: Uuid) -> ApiResult<Option<SettlementRecord>> {
    db.read(move |conn| {
        let row: Option<SettlementRow> =
            settlements::table.find(DbUuid(settlement_id)).select(SettlementRow::as_select()).first(conn).optional()?;
        let Some(row) = row else { return Ok(None) };
        Ok(with_visits(conn, vec![Settlement::from(row)])?.pop())
    })
    .await
}
