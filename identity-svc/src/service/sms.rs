//! `medins.identity.v1.SmsService`.

use medins_common::{
    ApiError, Reason,
    convert::timestamp,
    error::{require_enum, require_uuid},
    mask::mask_phone,
};
use medins_proto::identity::v1::{
    self as pb, SendSmsCodeRequest, SendSmsCodeResponse, VerifySmsCodeRequest, VerifySmsCodeResponse,
    sms_service_server::SmsService,
};
use tonic::{Request, Response, Status};

use super::{SharedState, access::CallAccess};
use crate::domain::{
    phone,
    sms::{self, Recipient, SmsPurpose},
};

/// The SmsService implementation.
pub struct SmsApi {
    state: SharedState,
}

impl SmsApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl SmsService for SmsApi {
    async fn send_sms_code(
        &self,
        request: Request<SendSmsCodeRequest>,
    ) -> Result<Response<SendSmsCodeResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let purpose = SmsPurpose::from_proto(require_enum::<pb::SmsPurpose>("purpose", body.purpose)?)
            .ok_or_else(|| ApiError::invalid_field(Reason::InvalidEnumValue, "purpose", "must be set"))?;
        let person_id =
            if body.person_id.is_empty() { None } else { Some(require_uuid("person_id", &body.person_id)?) };
        let recipient = sms::decide_recipient(purpose, &body.phone, person_id)?;
        let state = &self.state;
        // Front doors and operators, by kind (domain::access); a code for a person goes only to
        // their phone on record (domain::sms::decide_recipient).
        let result = match access.decide_by_kind() {
            Err(refusal) => Err(refusal.into()),
            Ok(_) => state
            .idempotency
            .run(&caller.id, "SendSmsCode", request.metadata(), body, || async {
                let phone = match &recipient {
                    Recipient::PhoneOnRecord(person_id) => {
                        let person = state.persons.find(*person_id).await?;
                        let on_record = sms::phone_on_record(person.is_some(), person.and_then(|p| p.phone))?;
                        phone::parse(&on_record)
                            .map_err(|_| ApiError::internal("a phone on record does not parse as a phone"))?
                    }
                    Recipient::GivenPhone(phone) => phone.clone(),
                };
                let code = sms::generate_code(&mut rand::rngs::OsRng);
                // Written first, so the limits count it while it is being sent; deleted again
                // if the gateway does not take it, so no undelivered challenge stays usable and
                // the failed attempt does not use up a slot.
                let challenge =
                    state.sms.create(phone.clone(), purpose, code.clone(), &caller.id, caller.sms_daily_quota).await?;
                if let Err(error) = state.sms_sender.send(phone.as_str(), &code, purpose).await {
                    tracing::warn!(challenge_id = %challenge.id, error = %error, "SMS not delivered, challenge discarded");
                    state.sms.discard_undelivered(challenge.id).await?;
                    return Err(ApiError::of(Reason::DependencyUnavailable,
                        "the SMS gateway did not accept the message, retry later",
                    )
                    .into());
                }
                tracing::info!(
                    challenge_id = %challenge.id,
                    purpose = purpose.as_str(),
                    partner = %caller.id,
                    "SMS code sent"
                );
                Ok(SendSmsCodeResponse {
                    challenge_id: challenge.id.to_string(),
                    expires_at: Some(timestamp(challenge.expires_at)),
                    resend_after: Some(timestamp(challenge.resend_after)),
                    phone_masked: mask_phone(phone.as_str()),
                })
            })
            .await,
        };
        // A code to a person's phone on record reads their phone: it is theirs to see, and so
        // is a refused attempt.
        if let Recipient::PhoneOnRecord(person_id) = recipient {
            access.record(state, person_id, &result).await;
        }
        Ok(Response::new(result?))
    }

    async fn verify_sms_code(
        &self,
        request: Request<VerifySmsCodeRequest>,
    ) -> Result<Response<VerifySmsCodeResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        // Front doors and operators, by kind (domain::access); a challenge then answers only the
        // partner that asked for it (store::sms).
        access.decide_by_kind()?;
        let caller = &access.caller;
        let body = request.get_ref();
        let challenge_id = require_uuid("challenge_id", &body.challenge_id)?;
        if !sms::is_well_formed_code(&body.code) {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, "code", "must be 6 digits").into());
        }
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "VerifySmsCode", request.metadata(), body, || async {
                let outcome = state.sms.verify(challenge_id, body.code.clone(), &caller.id).await;
                let reason = outcome.as_ref().err().map_or("VERIFIED", |e| e.reason().as_str());
                tracing::info!(%challenge_id, partner = %caller.id, outcome = reason, "SMS code checked");
                let phone = outcome?;
                Ok(VerifySmsCodeResponse { verified: true, phone_masked: mask_phone(&phone) })
            })
            .await?;
        Ok(Response::new(response))
    }
}
