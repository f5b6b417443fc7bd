//! SuspendPerson and ResumePerson (PersonService): an operator stops every partner from acting
//! for a person, and lifts that again. The RPC methods in `person.rs` delegate here.

use medins_common::audit::outcome_of;
use medins_common::{
    ApiError, Reason,
    auth::{Caller, PartnerKind},
    convert::timestamp,
    error::require_uuid,
};
use medins_proto::identity::v1::{
    ResumePersonRequest, ResumePersonResponse, SuspendPersonRequest, SuspendPersonResponse,
};
use tonic::{Request, Response, Status};

use super::SharedState;
use crate::domain::assurance::parse_operator_reason;

/// Audit method name of SuspendPerson.
pub const SUSPEND_PERSON: &str = "/medins.identity.v1.PersonService/SuspendPerson";
/// Audit method name of ResumePerson.
pub const RESUME_PERSON: &str = "/medins.identity.v1.PersonService/ResumePerson";

fn operators_only(kind: PartnerKind) -> Result<(), ApiError> {
    if kind != PartnerKind::Ops {
        return Err(ApiError::new(
            tonic::Code::PermissionDenied,
            Reason::PartnerKindNotAllowed,
            "only operators suspend and resume persons",
        ));
    }
    Ok(())
}

/// SuspendPerson.
pub async fn suspend_person(
    state: &SharedState,
    request: Request<SuspendPersonRequest>,
) -> Result<Response<SuspendPersonResponse>, Status> {
    let caller = Caller::of(&request)?;
    let audit_as = medins_common::auth::audit_partner(&request);
    let body = request.get_ref();
    let person_id = require_uuid("person_id", &body.person_id)?;
    let result: Result<_, Status> = async {
        operators_only(caller.kind)?;
        let reason = parse_operator_reason("reason", &body.reason)?;
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
    state.audit.record(&audit_as, SUSPEND_PERSON, person_id, outcome_of(&result)).await;
    result
}

/// ResumePerson.
pub async fn resume_person(
    state: &SharedState,
    request: Request<ResumePersonRequest>,
) -> Result<Response<ResumePersonResponse>, Status> {
    let caller = Caller::of(&request)?;
    let audit_as = medins_common::auth::audit_partner(&request);
    let body = request.get_ref();
    let person_id = require_uuid("person_id", &body.person_id)?;
    let result: Result<_, Status> = async {
        operators_only(caller.kind)?;
        let reason = parse_operator_reason("reason", &body.reason)?;
        let change = state.assurance.resume(person_id, &caller.id, &reason, state.clock.stored_now()).await?;
        if change.changed {
            tracing::info!(%person_id, operator = %caller.id, "person suspension lifted");
        }
        Ok(Response::new(ResumePersonResponse { changed: change.changed }))
    }
    .await;
    state.audit.record(&audit_as, RESUME_PERSON, person_id, outcome_of(&result)).await;
    result
}
