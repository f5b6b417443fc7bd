//! `medins.insurance.v1.IdentityEventService`: events identity-svc delivers at least once.
//!
//! FaceVerificationCompleted is recorded once per session (`face_outcomes`); a redelivery is
//! acknowledged and changes nothing. A FAMILY_BINDING outcome also decides the pending family
//! binding of that session (an unknown or already decided one is left alone).
//!
//! PersonSuperseded suspends the account and voucher of a claim the identity authority's
//! confirmed person superseded; applying it twice changes nothing.

use medins_common::{
    ApiError, ApiResult, Reason,
    auth::Caller,
    convert::from_timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::{
    identity::v1 as identity_pb,
    insurance::v1::{
        FaceVerificationCompletedRequest, FaceVerificationCompletedResponse, PersonSupersededRequest,
        PersonSupersededResponse, identity_event_service_server::IdentityEventService,
    },
};
use tonic::{Request, Response, Status};

use super::SharedState;
use crate::{
    domain::{
        account::AccountStatus,
        face::{FaceOutcome, FaceOutcomeRecord, FacePurpose},
        ledger,
        voucher::{Suspender, VoucherStatus},
    },
    store::{face_outcome::Recorded, voucher::StatusChange},
};

/// The IdentityEventService implementation.
pub struct IdentityEventApi {
    state: SharedState,
}

impl IdentityEventApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

fn decode(body: &FaceVerificationCompletedRequest) -> ApiResult<FaceOutcomeRecord> {
    let purpose = match require_enum::<identity_pb::FacePurpose>("purpose", body.purpose)? {
        identity_pb::FacePurpose::VoucherActivation => FacePurpose::VoucherActivation,
        identity_pb::FacePurpose::FamilyBinding => FacePurpose::FamilyBinding,
        identity_pb::FacePurpose::CardApplication => FacePurpose::CardApplication,
        identity_pb::FacePurpose::RealName
        | identity_pb::FacePurpose::PhoneChange
        | identity_pb::FacePurpose::Unspecified => {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, "purpose", "not an insurance purpose"));
        }
    };
    let outcome = match require_enum::<identity_pb::FaceSessionStatus>("outcome", body.outcome)? {
        identity_pb::FaceSessionStatus::Passed => FaceOutcome::Passed,
        identity_pb::FaceSessionStatus::Failed => FaceOutcome::Failed,
        identity_pb::FaceSessionStatus::Expired => FaceOutcome::Expired,
        identity_pb::FaceSessionStatus::Pending | identity_pb::FaceSessionStatus::Unspecified => {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, "outcome", "must be a final status"));
        }
    };
    let finished_at = body
        .finished_at
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| ApiError::invalid_field(Reason::InvalidArgument, "finished_at", "must be set"))?;
    // The same rule identity-svc applied when the session started.
    let reference = medins_common::validate::reference("reference", &body.reference)?;
    Ok(FaceOutcomeRecord {
        session_id: require_uuid("session_id", &body.session_id)?,
        event_id: require_uuid("event_id", &body.event_id)?,
        person_id: require_uuid("person_id", &body.person_id)?,
        purpose,
        reference,
        outcome,
        finished_at: finished_at.naive_utc(),
    })
}

#[tonic::async_trait]
impl IdentityEventService for IdentityEventApi {
    async fn person_superseded(
        &self,
        request: Request<PersonSupersededRequest>,
    ) -> Result<Response<PersonSupersededResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        require_uuid("event_id", &body.event_id)?;
        let person_id = require_uuid("person_id", &body.person_id)?;
        require_uuid("superseded_by", &body.superseded_by)?;
        let state = &self.state;
        let now = state.clock.stored_now();
        // A claim the authority never confirmed moves no money: its account and voucher stop.
        // Each step is a no-op when already done, so a redelivery changes nothing.
        let mut changed = false;
        if let Some(account) = state.accounts.find_open_by_person(person_id).await?
            && account.status == AccountStatus::Active
        {
            state.ledger.change_status(account.id, ledger::suspend, now).await?;
            changed = true;
        }
        if let Some((_, VoucherStatus::Active)) = state.vouchers.status_of(person_id).await? {
            let suspend = StatusChange::Suspend {
                by: Suspender::Ops,
                reason: "superseded by the identity authority's confirmed person".to_owned(),
            };
            state.vouchers.change_status(person_id, suspend, now).await?;
            changed = true;
        }
        tracing::info!(%person_id, changed, partner = %caller.id, "superseded claim suspended");
        Ok(Response::new(PersonSupersededResponse { duplicate: !changed }))
    }

    async fn face_verification_completed(
        &self,
        request: Request<FaceVerificationCompletedRequest>,
    ) -> Result<Response<FaceVerificationCompletedResponse>, Status> {
        let caller = Caller::of(&request)?;
        let record = decode(request.get_ref())?;
        let (session_id, person_id, purpose, outcome) =
            (record.session_id, record.person_id, record.purpose, record.outcome);
        let (duplicate, recorded) = match self.state.face_outcomes.record(record, self.state.clock.stored_now()).await?
        {
            Recorded::New => {
                tracing::info!(
                    %session_id,
                    outcome = outcome.as_str(),
                    partner = %caller.id,
                    "face outcome recorded"
                );
                (false, outcome)
            }
            Recorded::Duplicate(existing) => {
                if existing.outcome != outcome {
                    // A session ends once: a different outcome is a fault at the sender. Keep
                    // the first, acknowledge (a refusal would be redelivered forever), and say so.
                    tracing::warn!(
                        %session_id,
                        recorded = existing.outcome.as_str(),
                        received = outcome.as_str(),
                        "face outcome redelivered with a different outcome; the first is kept"
                    );
                } else {
                    tracing::debug!(%session_id, "face outcome redelivered; already recorded");
                }
                (true, existing.outcome)
            }
        };
        if purpose == FacePurpose::FamilyBinding {
            // On every delivery, with the outcome on record (the first): a crash between recording
            // and applying is mended by the redelivery, and a binding moves once only.
            let applied = self
                .state
                .family
                .apply_face_outcome(session_id, person_id, recorded, caller.id.clone(), self.state.clock.stored_now())
                .await?;
            match applied {
                Some(binding) => {
                    tracing::info!(binding_id = %binding.id, status = binding.status.as_str(), "family binding decided")
                }
                None => tracing::debug!(%session_id, "no pending family binding for this face session"),
            }
        }
        Ok(Response::new(FaceVerificationCompletedResponse { duplicate }))
    }
}
