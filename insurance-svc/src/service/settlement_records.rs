//! `SettlementService.ListSettlements` and `GetSettlement`: a person's own settlement records
//! (the contract is in settlement.proto). The trait methods in `service::settlement` call these.

use medins_common::{ApiError, ApiResult, Reason, convert::timestamp, error::require_uuid};
use medins_proto::insurance::v1::{
    self as pb, GetSettlementRequest, GetSettlementResponse, ListSettlementsRequest, ListSettlementsResponse,
};
use tonic::{Request, Response, Status};

use super::{
    State,
    access::{CallAccess, HandlerFacts},
    settlement::settlement_message,
};
use crate::{
    domain::{
        access::Standing,
        settlement,
        settlement_records::{SETTLEMENT_PAGE, SettlementCursor, SettlementRecord, next_cursor},
    },
    store::settlement_records,
};

/// The wire form of a record: the settlement, and the partner that settled its visit by id and
/// display name (the name from the partners file; empty for a partner no longer in it).
pub fn record_message(state: &State, record: &SettlementRecord) -> pb::SettlementRecord {
    let (partner_id, partner_name, visit_opened_at) = match &record.visit {
        Some(visit) => {
            let name = state.partners.get(&visit.partner_id).map(|p| p.name.clone()).unwrap_or_default();
            (visit.partner_id.clone(), name, Some(timestamp(visit.opened_at)))
        }
        None => (String::new(), String::new(), None),
    };
    pb::SettlementRecord {
        settlement: Some(settlement_message(&record.settlement)),
        partner_id,
        partner_name,
        visit_opened_at,
        claim_id: record.claim_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// ListSettlements.
pub async fn list_settlements(
    state: &State,
    request: Request<ListSettlementsRequest>,
) -> Result<Response<ListSettlementsResponse>, Status> {
    let access = CallAccess::begin(state, &request).await?;
    let body = request.get_ref();
    let person_id = require_uuid("person_id", &body.person_id)?;
    let year = settlement::expenses_year(body.year)?;
    let page_size = SETTLEMENT_PAGE.check("page_size", body.page_size)?;
    let cursor = match body.page_token.trim() {
        "" => None,
        token => Some(SettlementCursor::decode(token, person_id, year)?),
    };
    // The person's token, an ACTIVE binder's, or operators: decided before anything is read, so
    // a refusal does not depend on the id.
    let standing = access.decide(state, person_id, HandlerFacts::default()).await?;
    let result: Result<ListSettlementsResponse, Status> = async {
        let (records, more) = settlement_records::list(&state.db, person_id, year, page_size, cursor).await?;
        let last = records.last().map(|r| (r.settlement.settled_at, r.settlement.id));
        Ok(ListSettlementsResponse {
            settlements: records.iter().map(|record| record_message(state, record)).collect(),
            next_page_token: next_cursor(person_id, year, last, more).map(|c| c.encode()).unwrap_or_default(),
        })
    }
    .await;
    // A token or binding proves the person exists; an operator may name any id, so its call is
    // recorded only for a person with settlements or an account.
    let known = match (&result, standing) {
        (_, Standing::Person | Standing::Binder) => Some(person_id),
        (Ok(page), _) if !page.settlements.is_empty() => Some(person_id),
        _ => state.accounts.find_open_by_person(person_id).await.ok().flatten().map(|a| a.person_id),
    };
    access.record(state, known, &result).await;
    result.map(Response::new)
}

/// GetSettlement.
pub async fn get_settlement(
    state: &State,
    request: Request<GetSettlementRequest>,
) -> Result<Response<GetSettlementResponse>, Status> {
    let access = CallAccess::begin(state, &request).await?;
    let settlement_id = require_uuid("settlement_id", &request.get_ref().settlement_id)?;
    let found = settlement_records::find(&state.db, settlement_id).await?.ok_or_else(not_found)?;
    let person_id = found.settlement.person_id;
    // Anyone without a standing towards the settlement's person gets the rule's refusal, which is
    // word for word the answer of a missing id.
    let result: ApiResult<GetSettlementResponse> = async {
        access.decide(state, person_id, HandlerFacts::default()).await?;
        Ok(GetSettlementResponse { settlement: Some(record_message(state, &found)) })
    }
    .await;
    let result = result.map_err(Status::from);
    access.record(state, Some(person_id), &result).await;
    result.map(Response::new)
}

fn not_found() -> ApiError {
    ApiError::not_found(Reason::SettlementNotFound, "no such settlement")
}
