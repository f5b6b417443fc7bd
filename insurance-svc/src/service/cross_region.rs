//! `medins.insurance.v1.CrossRegionService`: cross-region care filings.

use chrono::NaiveDate;
use medins_common::{
    ApiError, ApiResult, Reason,
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::insurance::v1::{
    self as pb, CancelCrossRegionFilingRequest, CancelCrossRegionFilingResponse, FileCrossRegionCareRequest,
    FileCrossRegionCareResponse, ListCrossRegionFilingsRequest, ListCrossRegionFilingsResponse,
    cross_region_service_server::CrossRegionService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    SharedState,
    access::{CallAccess, HandlerFacts},
    card::date_message,
};
use crate::domain::cross_region::{self, Filing, FilingKind, FilingStatus};

/// The CrossRegionService implementation.
pub struct CrossRegionApi {
    state: SharedState,
}

impl CrossRegionApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

fn kind_from_wire(raw: i32) -> ApiResult<FilingKind> {
    Ok(match require_enum::<pb::CrossRegionFilingKind>("kind", raw)? {
        pb::CrossRegionFilingKind::LongTermResidence => FilingKind::LongTermResidence,
        pb::CrossRegionFilingKind::WorkingElsewhere => FilingKind::WorkingElsewhere,
        pb::CrossRegionFilingKind::Referral => FilingKind::Referral,
        pb::CrossRegionFilingKind::Temporary => FilingKind::Temporary,
        pb::CrossRegionFilingKind::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

/// A calendar date of the request, if given; one that is not a date is INVALID_ARGUMENT.
fn date_from_wire(field: &str, date: Option<&pb::CardDate>) -> ApiResult<Option<NaiveDate>> {
    date.map(|date| {
        u32::try_from(date.month)
            .ok()
            .zip(u32::try_from(date.day).ok())
            .and_then(|(month, day)| NaiveDate::from_ymd_opt(date.year, month, day))
            .ok_or_else(|| ApiError::invalid_field(Reason::InvalidArgument, field, "must be a calendar date"))
    })
    .transpose()
}

fn filing_message(filing: &Filing) -> pb::CrossRegionFiling {
    pb::CrossRegionFiling {
        filing_id: filing.id.to_string(),
        person_id: filing.person_id.to_string(),
        insured_region_code: filing.insured_region_code.clone(),
        destination_region_code: filing.destination_region_code.clone(),
        kind: match filing.kind {
            FilingKind::LongTermResidence => pb::CrossRegionFilingKind::LongTermResidence,
            FilingKind::WorkingElsewhere => pb::CrossRegionFilingKind::WorkingElsewhere,
            FilingKind::Referral => pb::CrossRegionFilingKind::Referral,
            FilingKind::Temporary => pb::CrossRegionFilingKind::Temporary,
        } as i32,
        starts_on: Some(date_message(filing.starts_on)),
        ends_on: filing.ends_on.map(date_message),
        status: match filing.status {
            FilingStatus::Active => pb::CrossRegionFilingStatus::Active,
            FilingStatus::Cancelled => pb::CrossRegionFilingStatus::Cancelled,
        } as i32,
        filed_at: Some(timestamp(filing.filed_at)),
        cancelled_at: filing.cancelled_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl CrossRegionService for CrossRegionApi {
    async fn file_cross_region_care(
        &self,
        request: Request<FileCrossRegionCareRequest>,
    ) -> Result<Response<FileCrossRegionCareResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let kind = kind_from_wire(body.kind)?;
        let starts_on = date_from_wire("starts_on", body.starts_on.as_ref())?
            .ok_or_else(|| ApiError::invalid_field(Reason::InvalidArgument, "starts_on", "required"))?;
        let ends_on = date_from_wire("ends_on", body.ends_on.as_ref())?;
        let terms =
            cross_region::filing_terms(kind, &body.destination_region_code, starts_on, ends_on, state.clock.today())?;
        // Decided from the token before anything is read: the refusal does not depend on the id.
        access.decide(state, person_id, HandlerFacts::default()).await?;
        let known: std::sync::OnceLock<Uuid> = std::sync::OnceLock::new();
        let result: Result<FileCrossRegionCareResponse, Status> = state
            .idempotency
            .run(&caller.id, "FileCrossRegionCare", request.metadata(), body, || async {
                let filed =
                    state.cross_region.file(person_id, terms, caller.id.clone(), state.clock.stored_now()).await;
                // A person without an open account is not known here: the call records no one.
                if !matches!(&filed, Err(error) if error.reason() == Reason::AccountNotFound) {
                    let _ = known.set(person_id);
                }
                let filing = filed?;
                Ok(FileCrossRegionCareResponse { filing: Some(filing_message(&filing)) })
            })
            .await;
        access.record(state, known.get().copied(), &result).await;
        result.map(Response::new)
    }

    async fn list_cross_region_filings(
        &self,
        request: Request<ListCrossRegionFilingsRequest>,
    ) -> Result<Response<ListCrossRegionFilingsResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let person_id = require_uuid("person_id", &request.get_ref().person_id)?;
        access.decide(state, person_id, HandlerFacts::default()).await?;
        let result: Result<ListCrossRegionFilingsResponse, Status> = async {
            let filings = state.cross_region.list(person_id).await?;
            Ok(ListCrossRegionFilingsResponse { filings: filings.iter().map(filing_message).collect() })
        }
        .await;
        // Recorded for a person with filings or an account; an operator's read of an unknown id
        // records nothing.
        let known = match &result {
            Ok(list) if !list.filings.is_empty() => Some(person_id),
            _ => state.accounts.find_open_by_person(person_id).await.ok().flatten().map(|a| a.person_id),
        };
        access.record(state, known, &result).await;
        result.map(Response::new)
    }

    async fn cancel_cross_region_filing(
        &self,
        request: Request<CancelCrossRegionFilingRequest>,
    ) -> Result<Response<CancelCrossRegionFilingResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let filing_id = require_uuid("filing_id", &body.filing_id)?;
        access.decide(state, person_id, HandlerFacts::default()).await?;
        let result: Result<CancelCrossRegionFilingResponse, Status> = async {
            let filing = state.cross_region.cancel(person_id, filing_id, state.clock.stored_now()).await?;
            Ok(CancelCrossRegionFilingResponse { filing: Some(filing_message(&filing)) })
        }
        .await;
        let known = match &result {
            Err(status) if status.code() == tonic::Code::NotFound => None,
            _ => Some(person_id),
        };
        access.record(state, known, &result).await;
        result.map(Response::new)
    }
}
