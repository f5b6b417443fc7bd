//! `medins.insurance.v1.PersonAccessService`: insurance-svc's audit records of a person, for
//! identity-svc's merged access history (docs/architecture.md#who-may-call-what). SERVICE callers
//! only.

use medins_common::{
    ApiError, Reason,
    auth::{Caller, PartnerKind},
    convert::{from_timestamp, timestamp},
    error::require_uuid,
    validate,
};
use medins_proto::insurance::v1::{
    ListPersonAccessesRequest, ListPersonAccessesResponse, PersonAccess,
    person_access_service_server::PersonAccessService,
};
use tonic::{Request, Response, Status};

use super::SharedState;

/// The PersonAccessService implementation.
pub struct PersonAccessApi {
    state: SharedState,
}

impl PersonAccessApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl PersonAccessService for PersonAccessApi {
    async fn list_person_accesses(
        &self,
        request: Request<ListPersonAccessesRequest>,
    ) -> Result<Response<ListPersonAccessesResponse>, Status> {
        let caller = Caller::of(&request)?;
        // The scope already keeps others out; the kind is checked too, so a scope granted by
        // mistake to a partner does not open every person's history.
        if caller.kind != PartnerKind::Service {
            return Err(ApiError::of(Reason::PartnerKindNotAllowed, "only medins services read access records").into());
        }
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let page_size = validate::PERSON_ACCESSES.check("page_size", body.page_size)?;
        if body.before_seq < 0 {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, "before_seq", "must not be negative").into());
        }
        let before = body
            .before_recorded_at
            .as_ref()
            .map(|at| {
                from_timestamp(at).map(|at| (at.naive_utc(), body.before_seq)).ok_or_else(|| {
                    ApiError::invalid_field(Reason::InvalidArgument, "before_recorded_at", "is not a valid time")
                })
            })
            .transpose()?;
        let entries = self.state.audit.history_by_time(person_id, before, page_size as i64).await?;
        Ok(Response::new(ListPersonAccessesResponse {
            records: entries
                .into_iter()
                .map(|entry| PersonAccess {
                    partner_id: entry.partner_id,
                    method: entry.method,
                    outcome: entry.outcome,
                    recorded_at: Some(timestamp(entry.recorded_at)),
                    seq: entry.seq,
                })
                .collect(),
        }))
    }
}
