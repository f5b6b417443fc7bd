//! `medins.insurance.v1.VoucherService`.

use medins_common::{
    ApiError, ApiResult, Reason,
    convert::{from_timestamp, timestamp},
    error::{require_enum, require_uuid},
};
use medins_proto::{
    identity::v1::{self as identity_pb, RealNameStatus},
    insurance::v1::{
        self as pb, ActivateVoucherRequest, ActivateVoucherResponse, GetVoucherRequest, GetVoucherResponse,
        ResumeVoucherRequest, ResumeVoucherResponse, SuspendVoucherRequest, SuspendVoucherResponse,
        voucher_service_server::VoucherService,
    },
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    SharedState,
    access::{CallAccess, HandlerFacts},
};
use crate::{
    domain::{
        access::Standing,
        face::FacePurpose,
        voucher::{
            Channel, FaceCheck, FaceSessionFacts, FaceSessionStatus, Suspender, Voucher, VoucherStatus,
            check_activation_face, require_insured, self_activation_channel, suspension_reason,
        },
    },
    store::voucher::{NewActivation, StatusChange},
};

/// The VoucherService implementation.
pub struct VoucherApi {
    state: SharedState,
}

/// The wire form of a channel.
pub fn channel_message(channel: Channel) -> pb::ActivationChannel {
    match channel {
        Channel::NationalApp => pb::ActivationChannel::NationalApp,
        Channel::Wechat => pb::ActivationChannel::Wechat,
        Channel::Alipay => pb::ActivationChannel::Alipay,
        Channel::BankApp => pb::ActivationChannel::BankApp,
        Channel::CityApp => pb::ActivationChannel::CityApp,
        Channel::Family => pb::ActivationChannel::Family,
    }
}

fn channel_of(message: pb::ActivationChannel) -> Channel {
    match message {
        pb::ActivationChannel::NationalApp => Channel::NationalApp,
        pb::ActivationChannel::Wechat => Channel::Wechat,
        pb::ActivationChannel::Alipay => Channel::Alipay,
        pb::ActivationChannel::BankApp => Channel::BankApp,
        pb::ActivationChannel::CityApp => Channel::CityApp,
        pb::ActivationChannel::Family => Channel::Family,
        pb::ActivationChannel::Unspecified => unreachable!("require_enum refuses the zero value"),
    }
}

/// The wire form of a voucher.
pub fn voucher_message(voucher: &Voucher) -> pb::Voucher {
    pb::Voucher {
        voucher_id: voucher.id.to_string(),
        person_id: voucher.person_id.to_string(),
        status: match voucher.status {
            VoucherStatus::Active => pb::VoucherStatus::Active,
            VoucherStatus::Suspended => pb::VoucherStatus::Suspended,
        } as i32,
        channels: voucher.channels.iter().map(|c| channel_message(*c) as i32).collect(),
        activated_at: Some(timestamp(voucher.activated_at)),
        updated_at: Some(timestamp(voucher.updated_at)),
        suspended_by: match voucher.suspended_by {
            None => pb::VoucherSuspender::Unspecified,
            Some(Suspender::Ops) => pb::VoucherSuspender::Ops,
            Some(Suspender::Holder) => pb::VoucherSuspender::Holder,
            Some(Suspender::Family) => pb::VoucherSuspender::Family,
        } as i32,
    }
}

/// What activation needs of a face session as identity-svc returns it.
pub(crate) fn face_facts(session: &identity_pb::FaceSession) -> ApiResult<FaceSessionFacts> {
    let person_id = Uuid::parse_str(&session.person_id)
        .map_err(|_| ApiError::internal("identity-svc answered a face session without a person id"))?;
    let purpose = match identity_pb::FacePurpose::try_from(session.purpose) {
        Ok(identity_pb::FacePurpose::VoucherActivation) => Some(FacePurpose::VoucherActivation),
        Ok(identity_pb::FacePurpose::FamilyBinding) => Some(FacePurpose::FamilyBinding),
        Ok(identity_pb::FacePurpose::CardApplication) => Some(FacePurpose::CardApplication),
        _ => None,
    };
    let status = match identity_pb::FaceSessionStatus::try_from(session.status) {
        Ok(identity_pb::FaceSessionStatus::Passed) => FaceSessionStatus::Passed,
        Ok(identity_pb::FaceSessionStatus::Failed) => FaceSessionStatus::Failed,
        Ok(identity_pb::FaceSessionStatus::Expired) => FaceSessionStatus::Expired,
        Ok(identity_pb::FaceSessionStatus::Pending) => FaceSessionStatus::Pending,
        _ => return Err(ApiError::internal("identity-svc answered a face session without a status")),
    };
    let finished_at = session.finished_at.as_ref().and_then(from_timestamp).map(|t| t.naive_utc());
    Ok(FaceSessionFacts { person_id, purpose, status, finished_at })
}

impl VoucherApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    /// The activation rules after the request is decoded and the token checked, in the order of
    /// the contract: real name, insured account, face session, then the write.
    async fn activate(
        &self,
        acting_partner: &str,
        person_id: Uuid,
        channel: Channel,
        face_session_id: Uuid,
        partner_id: &str,
    ) -> ApiResult<ActivateVoucherResponse> {
        let state = &self.state;
        let person = state.identity.get_person(acting_partner, &person_id.to_string(), "").await?;
        if person.real_name_status != RealNameStatus::Verified as i32 {
            return Err(ApiError::of(Reason::RealNameRequired, "the person's real name is not verified"));
        }
        let account = state.accounts.find_open_by_person(person_id).await?;
        require_insured(account.map(|a| a.status))?;
        let session = match state
            .identity
            .get_face_verification(acting_partner, &face_session_id.to_string(), "face_session_id.")
            .await
        {
            Ok(session) => session,
            Err(error) if error.reason() == Reason::FaceSessionNotFound => {
                return Err(FaceCheck::NotFound.into_error());
            }
            Err(error) => return Err(error),
        };
        check_activation_face(&face_facts(&session)?, person_id, state.clock.stored_now())
            .map_err(FaceCheck::into_error)?;
        let activation = NewActivation {
            person_id,
            channel,
            face_session_id: Some(face_session_id),
            partner_id: partner_id.to_owned(),
        };
        let (voucher, created) = state.vouchers.activate(activation, state.clock.stored_now()).await?;
        tracing::info!(
            voucher_id = %voucher.id,
            %person_id,
            channel = channel.as_str(),
            created,
            partner = partner_id,
            "voucher activated"
        );
        Ok(ActivateVoucherResponse { voucher: Some(voucher_message(&voucher)), created })
    }

    /// Suspends or resumes, as operators or as the holder (person token), as the access table
    /// says; recorded in the holder's access history.
    async fn change_status<T>(
        &self,
        request: &Request<T>,
        method: &str,
        person_id: Uuid,
        change: impl FnOnce(Suspender) -> StatusChange,
    ) -> Result<pb::Voucher, Status>
    where
        T: prost::Message,
    {
        let state = &self.state;
        let access = CallAccess::begin(state, request).await?;
        let caller = access.caller.clone();
        let result: Result<pb::Voucher, Status> = async {
            let actor = match access.decide(state, person_id, HandlerFacts::default()).await? {
                Standing::Person => Suspender::Holder,
                _ => Suspender::Ops,
            };
            let change = change(actor);
            state
                .idempotency
                .run(&caller.id, method, request.metadata(), request.get_ref(), || async {
                    let voucher = state.vouchers.change_status(person_id, change, state.clock.stored_now()).await?;
                    tracing::info!(
                        voucher_id = %voucher.id,
                        status = voucher.status.as_str(),
                        by = actor.as_str(),
                        partner = %caller.id,
                        "voucher status set"
                    );
                    Ok(voucher_message(&voucher))
                })
                .await
        }
        .await;
        access.record(state, self.known_person(person_id, &result).await, &result).await;
        result
    }

    /// `person_id` if the access history should record a call about it: a call that did not end
    /// NOT_FOUND names a person with a voucher; one that did is recorded only if the person
    /// has one (a refusal looks like NOT_FOUND too), never for an unknown id.
    async fn known_person<R>(&self, person_id: Uuid, result: &Result<R, Status>) -> Option<Uuid> {
        match result {
            Err(status) if status.code() == tonic::Code::NotFound => {
                match self.state.vouchers.find_by_person(person_id).await {
                    Ok(Some(_)) => Some(person_id),
                    _ => None,
                }
            }
            _ => Some(person_id),
        }
    }
}

#[tonic::async_trait]
impl VoucherService for VoucherApi {
    async fn activate_voucher(
        &self,
        request: Request<ActivateVoucherRequest>,
    ) -> Result<Response<ActivateVoucherResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let channel =
            self_activation_channel(channel_of(require_enum::<pb::ActivationChannel>("channel", body.channel)?))?;
        let face_session_id = require_uuid("face_session_id", &body.face_session_id)?;
        // Only the person activates (their token): a refusal does not depend on the id, and
        // what the person does with their own token is theirs to see.
        access.decide(state, person_id, HandlerFacts::default()).await?;
        let result = state
            .idempotency
            .run(&caller.id, "ActivateVoucher", request.metadata(), body, || async {
                Ok(self.activate(&caller.id, person_id, channel, face_session_id, &caller.id).await?)
            })
            .await;
        access.record(state, Some(person_id), &result).await;
        result.map(Response::new)
    }

    async fn get_voucher(&self, request: Request<GetVoucherRequest>) -> Result<Response<GetVoucherResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let person_id = require_uuid("person_id", &request.get_ref().person_id)?;
        let voucher = state
            .vouchers
            .find_by_person(person_id)
            .await?
            .ok_or_else(|| ApiError::of(Reason::VoucherNotFound, "this person has not activated a voucher"))?;
        let result = access
            .decide(state, person_id, HandlerFacts::default())
            .await
            .map(|_| GetVoucherResponse { voucher: Some(voucher_message(&voucher)) })
            .map_err(Status::from);
        access.record(state, Some(person_id), &result).await;
        result.map(Response::new)
    }

    async fn suspend_voucher(
        &self,
        request: Request<SuspendVoucherRequest>,
    ) -> Result<Response<SuspendVoucherResponse>, Status> {
        let person_id = require_uuid("person_id", &request.get_ref().person_id)?;
        let reason = suspension_reason(&request.get_ref().reason)?;
        let voucher = self
            .change_status(&request, "SuspendVoucher", person_id, |by| StatusChange::Suspend { by, reason })
            .await?;
        Ok(Response::new(SuspendVoucherResponse { voucher: Some(voucher) }))
    }

    async fn resume_voucher(
        &self,
        request: Request<ResumeVoucherRequest>,
    ) -> Result<Response<ResumeVoucherResponse>, Status> {
        let person_id = require_uuid("person_id", &request.get_ref().person_id)?;
        let voucher =
            self.change_status(&request, "ResumeVoucher", person_id, |by| StatusChange::Resume { by }).await?;
        Ok(Response::new(ResumeVoucherResponse { voucher: Some(voucher) }))
    }
}
