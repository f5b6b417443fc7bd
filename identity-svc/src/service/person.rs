//! `medins.identity.v1.PersonService`.

use medins_common::{
    ApiError, ApiResult, Reason,
    clock::{Clock, china_standard_time},
    convert::timestamp,
    error::{require_enum, require_uuid},
    mask::{mask_id_number, mask_name, mask_phone},
};
use medins_proto::identity::v1::{
    self as pb, GetPersonRequest, GetPersonResponse, PersonView, RegisterPersonRequest, RegisterPersonResponse,
    ResolvePersonRequest, ResolvePersonResponse, person_service_server::PersonService,
};
use tonic::{Request, Response, Status};

use super::{SharedState, access::CallAccess};
use crate::{
    domain::{
        access::Standing,
        disclosure::shown_age,
        id_number::{self, Sex},
        person::{Person, RealName, id_number_error, normalize_name, phone_error},
        phone,
        sms::SmsPurpose,
    },
    store::person::{NewPerson, PhoneChange, PhoneChangeEvidence},
};

/// The PersonService implementation.
pub struct PersonApi {
    state: SharedState,
}

impl PersonApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    fn parse_new_person(&self, name: &str, raw_id_number: &str, raw_phone: Option<&str>) -> ApiResult<NewPerson> {
        let name = normalize_name("name", name)?;
        let id_number =
            id_number::parse(raw_id_number, self.state.clock.today()).map_err(|e| id_number_error("id_number", e))?;
        let phone = raw_phone.map(|raw| phone::parse(raw).map_err(|e| phone_error("phone", e))).transpose()?;
        Ok(NewPerson { name, id_number, phone })
    }
}

/// The masked view of a person, as every caller outside identity-svc sees it.
pub fn person_view(person: &Person, clock: &dyn Clock) -> PersonView {
    // The birth date itself never leaves identity-svc (medins_common::mask counts why): only
    // the age of the disclosure rule, which gives the birth year and nothing finer.
    let registered_on = chrono::DateTime::<chrono::Utc>::from_naive_utc_and_offset(person.created_at, chrono::Utc)
        .with_timezone(&china_standard_time())
        .date_naive();
    PersonView {
        person_id: person.id.to_string(),
        masked_id_number: mask_id_number(&person.id_number),
        masked_name: mask_name(&person.name),
        masked_phone: person.phone.as_deref().map(mask_phone).unwrap_or_default(),
        age: shown_age(person.birth_date, registered_on, clock.today()) as i32,
        sex: match person.sex {
            Sex::Male => pb::Sex::Male,
            Sex::Female => pb::Sex::Female,
        } as i32,
        region_code: person.region_code.clone(),
        real_name_status: match person.real_name {
            RealName::Unverified => pb::RealNameStatus::Unverified,
            RealName::Verified { .. } => pb::RealNameStatus::Verified,
        } as i32,
        real_name_verified_at: match &person.real_name {
            RealName::Verified { at, .. } => Some(timestamp(*at)),
            RealName::Unverified => None,
        },
        created_at: Some(timestamp(person.created_at)),
    }
}

#[tonic::async_trait]
impl PersonService for PersonApi {
    async fn register_person(
        &self,
        request: Request<RegisterPersonRequest>,
    ) -> Result<Response<RegisterPersonResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        // Front doors and operators only, decided from the caller alone.
        access.decide_by_kind()?;
        let caller = &access.caller;
        let body = request.get_ref();
        let new = self.parse_new_person(&body.name, &body.id_number, Some(&body.phone))?;
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "RegisterPerson", request.metadata(), body, || async {
                let (person, created) = state.persons.find_or_create(new, state.clock.stored_now()).await?;
                if created {
                    tracing::info!(person_id = %person.id, partner = %caller.id, "person registered");
                }
                // The phone is recorded only on a person this call created: an existing
                // person's phone changes only through ChangePhone, on proof.
                Ok(RegisterPersonResponse {
                    person: Some(person_view(&person, state.clock.as_ref())),
                    created,
                    phone_recorded: created,
                })
            })
            .await?;
        if let Some(person_id) = response.person.as_ref().and_then(|p| uuid::Uuid::parse_str(&p.person_id).ok()) {
            access.record_ok(&self.state, person_id).await;
        }
        Ok(Response::new(response))
    }

    async fn get_person(&self, request: Request<GetPersonRequest>) -> Result<Response<GetPersonResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let id = require_uuid("person_id", &request.get_ref().person_id)?;
        let result: Result<_, Status> = async {
            // The person's own token, operators and services (domain::access).
            access.decide_for(id)?;
            let person = self.state.persons.find(id).await?.ok_or_else(person_not_found)?;
            Ok(Response::new(GetPersonResponse { person: Some(person_view(&person, self.state.clock.as_ref())) }))
        }
        .await;
        access.record(&self.state, id, &result).await;
        result
    }

    async fn resolve_person(
        &self,
        request: Request<ResolvePersonRequest>,
    ) -> Result<Response<ResolvePersonResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        // Medins services and operators only, decided from the caller alone.
        access.decide_by_kind()?;
        let body = request.get_ref();
        let new = self.parse_new_person(&body.name, &body.id_number, None)?;
        let (person, created) = self.state.persons.find_or_create(new, self.state.clock.stored_now()).await?;
        if created {
            tracing::info!(person_id = %person.id, partner = %access.caller.id, "person created by resolution");
        }
        access.record_ok(&self.state, person.id).await;
        Ok(Response::new(ResolvePersonResponse {
            person: Some(person_view(&person, self.state.clock.as_ref())),
            created,
        }))
    }

    async fn complete_real_name(
        &self,
        request: Request<pb::CompleteRealNameRequest>,
    ) -> Result<Response<pb::CompleteRealNameResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let challenge_id = require_uuid("challenge_id", &body.challenge_id)?;
        let state = &self.state;
        let result = match access.decide_for(person_id) {
            Ok(_) => {
                state
                    .idempotency
                    .run(&caller.id, "CompleteRealName", request.metadata(), body, || async {
                        let person =
                            super::real_name::complete_real_name(state, person_id, challenge_id, &caller.id).await?;
                        Ok(pb::CompleteRealNameResponse { person: Some(person_view(&person, state.clock.as_ref())) })
                    })
                    .await
            }
            Err(refusal) => Err(refusal.into()),
        };
        access.record(state, person_id, &result).await;
        Ok(Response::new(result?))
    }

    async fn match_person(
        &self,
        request: Request<pb::MatchPersonRequest>,
    ) -> Result<Response<pb::MatchPersonResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        // Medins services and operators only, decided from the caller alone.
        access.decide_by_kind()?;
        let body = request.get_ref();
        let new = self.parse_new_person(&body.name, &body.id_number, None)?;
        let person_id =
            if body.person_id.is_empty() { None } else { Some(require_uuid("person_id", &body.person_id)?) };
        let matched = self.state.persons.match_person(new.name, new.id_number, person_id).await?;
        // Audited under the matched person, or under the person asked about when there is none.
        if let Some(subject) = matched.as_ref().map(|p| p.id).or(person_id) {
            access.record_ok(&self.state, subject).await;
        }
        Ok(Response::new(pb::MatchPersonResponse {
            matched: matched.is_some(),
            person_id: matched.map(|p| p.id.to_string()).unwrap_or_default(),
        }))
    }

    async fn change_phone(
        &self,
        request: Request<pb::ChangePhoneRequest>,
    ) -> Result<Response<pb::ChangePhoneResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let new_phone = phone::parse(&body.new_phone).map_err(|e| phone_error("new_phone", e))?;
        let challenge_id = require_uuid("challenge_id", &body.challenge_id)?;
        let mut proof = match &body.proof {
            Some(pb::change_phone_request::Proof::FaceSessionId(id)) => {
                PhoneChangeEvidence::Face(require_uuid("face_session_id", id)?)
            }
            // Whose word counts is the access table's answer, below.
            Some(pb::change_phone_request::Proof::OperatorReason(reason)) => {
                PhoneChangeEvidence::Operator { caller_is_ops: false, reason: reason.clone() }
            }
            None => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "proof",
                    "set face_session_id (or, for operators, operator_reason)",
                )
                .into());
            }
        };
        let state = &self.state;
        let result: Result<_, Status> = async {
            // Front doors and operators, by kind; an operator's reason as the proof counts for
            // the operator standing only (domain::person::decide_phone_change).
            let standing = access.decide_for(person_id)?;
            if let PhoneChangeEvidence::Operator { caller_is_ops, .. } = &mut proof {
                *caller_is_ops = standing == Standing::Operator;
            }
            state
                .idempotency
                .run(&caller.id, "ChangePhone", request.metadata(), body, || async {
                    let change =
                        PhoneChange { person_id, new_phone, challenge_id, proof, partner_id: caller.id.clone() };
                    let (person, method) =
                        state.persons.change_phone(state.sms.clone(), change, state.clock.stored_now()).await?;
                    tracing::info!(%person_id, method = method.as_str(), partner = %caller.id, "phone changed");
                    Ok(pb::ChangePhoneResponse { person: Some(person_view(&person, state.clock.as_ref())) })
                })
                .await
        }
        .await;
        access.record(state, person_id, &result).await;
        Ok(Response::new(result?))
    }

    async fn consume_sms_challenge(
        &self,
        request: Request<pb::ConsumeSmsChallengeRequest>,
    ) -> Result<Response<pb::ConsumeSmsChallengeResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let challenge_id = require_uuid("challenge_id", &body.challenge_id)?;
        let purpose = SmsPurpose::from_proto(require_enum::<pb::SmsPurpose>("purpose", body.purpose)?)
            .ok_or_else(|| ApiError::invalid_field(Reason::InvalidEnumValue, "purpose", "must be set"))?;
        let on_behalf_of = crate::domain::partner::parse_optional_partner_id(
            "on_behalf_of_partner_id",
            &body.on_behalf_of_partner_id,
        )?;
        let state = &self.state;
        let result: Result<_, Status> = async {
            // Medins services only; the challenge must be one the partner the service acts for
            // asked for.
            let standing = access.decide_by_kind()?;
            let acting =
                crate::domain::partner::acting_partner("on_behalf_of_partner_id", &caller.id, standing, on_behalf_of)?;
            state
                .idempotency
                .run(&caller.id, "ConsumeSmsChallenge", request.metadata(), body, || async {
                    let person = state.persons.find(person_id).await?.ok_or_else(person_not_found)?;
                    let phone = person
                        .phone
                        .as_deref()
                        .ok_or_else(|| ApiError::of(Reason::PhoneRequired, "the person has no phone on record"))?;
                    state.sms.consume_verified(challenge_id, phone, purpose, &acting).await?;
                    tracing::info!(
                        %person_id,
                        %challenge_id,
                        purpose = purpose.as_str(),
                        partner = %caller.id,
                        on_behalf_of = %acting,
                        "sms challenge consumed"
                    );
                    Ok(pb::ConsumeSmsChallengeResponse { consumed: true })
                })
                .await
        }
        .await;
        access.record(state, person_id, &result).await;
        Ok(Response::new(result?))
    }
    async fn suspend_person(
        &self,
        request: Request<pb::SuspendPersonRequest>,
    ) -> Result<Response<pb::SuspendPersonResponse>, Status> {
        super::suspension::suspend_person(&self.state, request).await
    }

    async fn resume_person(
        &self,
        request: Request<pb::ResumePersonRequest>,
    ) -> Result<Response<pb::ResumePersonResponse>, Status> {
        super::suspension::resume_person(&self.state, request).await
    }
}

/// NOT_FOUND / PERSON_NOT_FOUND.
pub fn person_not_found() -> medins_common::ApiError {
    medins_common::ApiError::not_found(medins_common::Reason::PersonNotFound, "no person with this id")
}
