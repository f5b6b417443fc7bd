//! `medins.insurance.v1.ReimbursementService`: claims for bills paid out of pocket (the
//! contract is in reimbursement.proto; the rules in `domain::claim`).

use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::{Caller, PartnerKind},
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::insurance::v1::{
    self as pb, ListClaimsRequest, ListClaimsResponse, ReviewClaimRequest, ReviewClaimResponse, SubmitClaimRequest,
    SubmitClaimResponse, reimbursement_service_server::ReimbursementService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    SharedState, State,
    access::{CallAccess, HandlerFacts},
    card::date_message,
    settlement::settlement_message,
};
use crate::{
    domain::{
        access::Standing,
        claim::{self, CLAIM_PAGE, ClaimCursor, ClaimStatus, Listing, NotSettledBecause, Payout, RawClaim, RawItem},
        document::DocumentKind,
        settlement::Category,
    },
    store::claim::{ClaimRecord, ClaimStore},
};

/// The ReimbursementService implementation.
pub struct ReimbursementApi {
    state: SharedState,
    claims: ClaimStore,
}

impl ReimbursementApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        let claims = ClaimStore::new(state.db.clone());
        Self { state, claims }
    }
}

fn category_from_wire(raw: i32) -> ApiResult<Category> {
    Ok(match require_enum::<pb::Category>("category", raw)? {
        pb::Category::Outpatient => Category::Outpatient,
        pb::Category::Inpatient => Category::Inpatient,
        pb::Category::Pharmacy => Category::Pharmacy,
        pb::Category::ChronicSpecial => Category::ChronicSpecial,
        pb::Category::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

fn because_from_wire(raw: i32) -> ApiResult<NotSettledBecause> {
    Ok(match require_enum::<pb::NotSettledBecause>("not_settled_because", raw)? {
        pb::NotSettledBecause::EmergencyElsewhereUnfiled => NotSettledBecause::EmergencyElsewhereUnfiled,
        pb::NotSettledBecause::HospitalCouldNotSettle => NotSettledBecause::HospitalCouldNotSettle,
        pb::NotSettledBecause::Other => NotSettledBecause::Other,
        pb::NotSettledBecause::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

fn payout_from_wire(raw: i32) -> ApiResult<Payout> {
    Ok(match require_enum::<pb::ClaimPayout>("payout", raw)? {
        pb::ClaimPayout::Account => Payout::Account,
        pb::ClaimPayout::BankTransfer => Payout::BankTransfer,
        pb::ClaimPayout::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

fn status_from_wire(field: &str, raw: i32) -> ApiResult<ClaimStatus> {
    Ok(match require_enum::<pb::ClaimStatus>(field, raw)? {
        pb::ClaimStatus::Submitted => ClaimStatus::Submitted,
        pb::ClaimStatus::Approved => ClaimStatus::Approved,
        pb::ClaimStatus::Rejected => ClaimStatus::Rejected,
        pb::ClaimStatus::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

fn status_to_wire(status: ClaimStatus) -> pb::ClaimStatus {
    match status {
        ClaimStatus::Submitted => pb::ClaimStatus::Submitted,
        ClaimStatus::Approved => pb::ClaimStatus::Approved,
        ClaimStatus::Rejected => pb::ClaimStatus::Rejected,
    }
}

fn care_date_from_wire(date: Option<&pb::CardDate>) -> ApiResult<NaiveDate> {
    date.and_then(|date| {
        u32::try_from(date.month)
            .ok()
            .zip(u32::try_from(date.day).ok())
            .and_then(|(month, day)| NaiveDate::from_ymd_opt(date.year, month, day))
    })
    .ok_or_else(|| ApiError::invalid_field(Reason::InvalidArgument, "care_date", "must be a calendar date"))
}

/// The wire form of a claim.
fn claim_message(record: &ClaimRecord) -> pb::Claim {
    let claim = &record.claim;
    let terms = &claim.terms;
    let review = claim.review.as_ref();
    pb::Claim {
        claim_id: claim.id.to_string(),
        person_id: claim.person_id.to_string(),
        hospital_name: terms.hospital_name.clone(),
        hospital_region_code: terms.hospital_region_code.clone(),
        category: super::settlement::category_to_wire(terms.category) as i32,
        care_date: Some(date_message(terms.care_date)),
        not_settled_because: match terms.because {
            NotSettledBecause::EmergencyElsewhereUnfiled => pb::NotSettledBecause::EmergencyElsewhereUnfiled,
            NotSettledBecause::HospitalCouldNotSettle => pb::NotSettledBecause::HospitalCouldNotSettle,
            NotSettledBecause::Other => pb::NotSettledBecause::Other,
        } as i32,
        items: terms
            .items
            .iter()
            .map(|item| pb::ClaimItem {
                code: item.code.clone(),
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents,
            })
            .collect(),
        total_cents: terms.total_cents,
        invoice_document_ids: terms.documents.iter().map(Uuid::to_string).collect(),
        payout: match terms.payout {
            Payout::Account => pb::ClaimPayout::Account,
            Payout::BankTransfer => pb::ClaimPayout::BankTransfer,
        } as i32,
        status: status_to_wire(claim.status) as i32,
        submitted_at: Some(timestamp(claim.submitted_at)),
        reviewed_at: review.map(|r| timestamp(r.reviewed_at)),
        rejection_reason: review.and_then(|r| r.rejection_reason.clone()).unwrap_or_default(),
        settlement: record.settlement.as_ref().map(settlement_message),
        credited_cents: record.credited_cents,
        transfer_reference: review.and_then(|r| r.transfer_reference.clone()).unwrap_or_default(),
    }
}

/// Checks that every invoice id names an INVOICE document of `person`. Another person's
/// document, a missing one and one of another kind get the same answer, naming the field, so
/// the check tells nothing about documents the caller may not see.
async fn check_invoices(state: &State, person: Uuid, documents: &[Uuid]) -> ApiResult<()> {
    for (index, id) in documents.iter().enumerate() {
        let usable = state
            .documents
            .find(*id)
            .await?
            .is_some_and(|document| document.owner_person_id == person && document.kind == DocumentKind::Invoice);
        if !usable {
            return Err(ApiError::failed_precondition(
                Reason::DocumentInvalid,
                "not an INVOICE document of this person (DocumentService.UploadDocument)",
            )
            .with_field_violation(&format!("invoice_document_ids[{index}]"), "not an invoice of this person")
            .with_metadata("document", format!("invoice_document_ids[{index}]")));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl ReimbursementService for ReimbursementApi {
    async fn submit_claim(
        &self,
        request: Request<SubmitClaimRequest>,
    ) -> Result<Response<SubmitClaimResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let raw = RawClaim {
            hospital_name: &body.hospital_name,
            hospital_region_code: &body.hospital_region_code,
            category: category_from_wire(body.category)?,
            care_date: care_date_from_wire(body.care_date.as_ref())?,
            because: because_from_wire(body.not_settled_because)?,
            items: body
                .items
                .iter()
                .map(|item| RawItem {
                    code: &item.code,
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents,
                })
                .collect(),
            total_cents: body.total_cents,
            payout: payout_from_wire(body.payout)?,
            documents: &body.invoice_document_ids,
        };
        let terms = claim::claim_terms(&state.catalog, raw, state.clock.today())?;
        // Decided from the token before anything is read: the refusal does not depend on the id.
        access.decide(state, person_id, HandlerFacts::default()).await?;
        let known: OnceLock<Uuid> = OnceLock::new();
        let result: Result<SubmitClaimResponse, Status> = state
            .idempotency
            .run(&caller.id, "SubmitClaim", request.metadata(), body, || async {
                let account = state.accounts.find_open_by_person(person_id).await?.ok_or_else(|| {
                    ApiError::failed_precondition(Reason::NotInsured, "this person has no open account")
                        .with_metadata("account_status", "NONE")
                })?;
                let _ = known.set(person_id);
                check_invoices(state, person_id, &terms.documents).await?;
                let record =
                    self.claims.submit(person_id, account.id, terms, &caller.id, state.clock.stored_now()).await?;
                tracing::info!(claim_id = %record.claim.id, partner = %caller.id, "claim submitted");
                Ok(SubmitClaimResponse { claim: Some(claim_message(&record)) })
            })
            .await;
        access.record(state, known.get().copied(), &result).await;
        result.map(Response::new)
    }

    async fn review_claim(
        &self,
        request: Request<ReviewClaimRequest>,
    ) -> Result<Response<ReviewClaimResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let claim_id = require_uuid("claim_id", &body.claim_id)?;
        let decision = status_from_wire("decision", body.decision)?;
        let approve = match decision {
            ClaimStatus::Approved => true,
            ClaimStatus::Rejected => false,
            ClaimStatus::Submitted => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "decision",
                    "must be CLAIM_STATUS_APPROVED or CLAIM_STATUS_REJECTED",
                )
                .into());
            }
        };
        let found = self.claims.find(claim_id).await?.ok_or_else(not_found)?;
        let person_id = found.claim.person_id;
        let result: Result<ReviewClaimResponse, Status> = async {
            access.decide(state, person_id, HandlerFacts::default()).await?;
            // Checked, never logged: the reason is free text the person reads.
            let review = claim::review(approve, &body.rejection_reason, &body.transfer_reference, found.claim.terms.payout)?;
            state
                .idempotency
                .run(&caller.id, "ReviewClaim", request.metadata(), body, || async {
                    let policy = Arc::new(state.settlements.policy().clone());
                    let record = self
                        .claims
                        .review(policy, state.catalog.clone(), claim_id, review, &caller.id, state.clock.stored_now())
                        .await?;
                    tracing::info!(%claim_id, status = record.claim.status.as_str(), partner = %caller.id, "claim reviewed");
                    Ok(ReviewClaimResponse { claim: Some(claim_message(&record)) })
                })
                .await
        }
        .await;
        access.record(state, Some(person_id), &result).await;
        result.map(Response::new)
    }

    async fn list_claims(&self, request: Request<ListClaimsRequest>) -> Result<Response<ListClaimsResponse>, Status> {
        let state = &self.state;
        let body = request.get_ref();
        // The queue is the operators' alone, decided from the caller before anything else.
        if body.person_id.is_empty() && Caller::of(&request)?.kind != PartnerKind::Ops {
            return Err(ApiError::of(Reason::PartnerKindNotAllowed, "only operators list the claims queue").into());
        }
        let access = CallAccess::begin(state, &request).await?;
        let page_size = CLAIM_PAGE.check("page_size", body.page_size)?;
        let listing = if body.person_id.is_empty() {
            Listing::Queue(status_from_wire("status", body.status)?)
        } else {
            let wanted = match body.status {
                0 => None,
                raw => Some(status_from_wire("status", raw)?),
            };
            Listing::Person(require_uuid("person_id", &body.person_id)?, wanted)
        };
        let cursor = match body.page_token.trim() {
            "" => None,
            token => Some(ClaimCursor::decode(token, listing)?),
        };
        let person = match listing {
            Listing::Person(person, _) => Some((person, access.decide(state, person, HandlerFacts::default()).await?)),
            Listing::Queue(_) => None,
        };
        let result: Result<ListClaimsResponse, Status> = async {
            let (records, more) = self.claims.list(listing, page_size, cursor).await?;
            let next = records.last().filter(|_| more).map(|last| ClaimCursor {
                listing,
                submitted_at: last.claim.submitted_at,
                claim_id: last.claim.id,
            });
            Ok(ListClaimsResponse {
                claims: records.iter().map(claim_message).collect(),
                next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
            })
        }
        .await;
        // A person's list is recorded for the person when the call proves them (token, binding)
        // or shows their claims; an operator's look at an unknown id records nothing.
        let known = match (person, &result) {
            (Some((person, Standing::Person | Standing::Binder | Standing::Guardian)), _) => Some(person),
            (Some((person, _)), Ok(page)) if !page.claims.is_empty() => Some(person),
            (Some((person, _)), _) => {
                state.accounts.find_open_by_person(person).await.ok().flatten().map(|a| a.person_id)
            }
            (None, _) => None,
        };
        access.record(state, known, &result).await;
        result.map(Response::new)
    }
}

fn not_found() -> ApiError {
    ApiError::not_found(Reason::ClaimNotFound, "no such claim")
}
