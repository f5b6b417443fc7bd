//! SuspendPerson and ResumePerson (PersonService): an operator stops every partner from acting
//! for a person, and lifts that again. The RPC methods in `person.rs` delegate here.

use medins_common::{convert::timestamp, error::require_uuid, validate::OPERATOR_REASON};
use medins_proto::identity::v1::{
    ResumePersonRequest, ResumePersonResponse, SuspendPersonRequest, SuspendPersonResponse,
};
use tonic::{Request, Response, Status};

use super::{SharedState, access::CallAccess};

/// SuspendPerson.
pub async fn suspend_person(
    state: &SharedState,
    request: Request<SuspendPersonRequest>,
) -> Result<Response<SuspendPersonResponse>, Status> {
    let access = CallAccess::begin(state, &request)?;
    let caller = &access.caller;
    let body = request.get_ref();
    let person_id = require_uuid("person_id", &body.person_id)?;
    let result: Result<_, Status> = async {
        // Operators only (domain::access).
        access.decide_for(person_id)?;
        let reason = OPERATOR_REASON.check("reason", &body.reason)?;
        let change = state.assurance.suspend(person_id, &caller.id, &reason, state.clock.stored_now()).await?;
        if let Some(revocation) = change.revocation {
            // This replica refuses at once; the others at their next refresh.
            state.person_tokens.verifier().revocations().add(revocation);
            tracing::info!(%person_id, operator = %caller.id, "person suspended; every person token revoked");
        }
        Ok(Response::new(SuspendPersonResponse {
            changed: change.changed,
            suspended_at: change.suspended_at.map(timestamp),
        }))
    }
    .await;
    access.record(state, person_id, &result).await;
    result
}

/// ResumePerson.
pub async fn resume_person(
    state: &SharedState,
    request: Request<ResumePersonRequest>,
) -> Result<Response<ResumePersonResponse>, Status> {
    let access = CallAccess::begin(state, &request)?;
    let caller = &access.caller;
    let body = request.get_ref();
    let person_id = require_uuid("person_id", &body.person_id)?;
    let result: Result<_, Status> = async {
        // Operators only (domain::access).
        access.decide_for(person_id)?;
        let reason = OPERATOR_REASON.check("reason", &body.reason)?;
        let change = state.assurance.resume(person_id, &caller.id, &reason, state.clock.stored_now()).await?;
        if change.changed {
            tracing::info!(%person_id, operator = %caller.id, "person suspension lifted");
        }
        Ok(Response::new(ResumePersonResponse { changed: change.changed }))
    }
    .await;
    access.record(state, person_id, &result).await;
    result
}
