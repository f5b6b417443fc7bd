//! `medins.insurance.v1.CardService`: decode and validate, authorise, apply the card rules of
//! `domain::card` in the contract's order, record through `store::card`, encode.
//!
//! ONLINE applications use up the applicant's SMS challenge at identity-svc as the very last
//! check, after every other refusal had its chance, so a refused application leaves the
//! challenge usable. The insert follows in the next transaction; if the process dies in
//! between (or a concurrent application of the same person wins), the challenge is spent and
//! the person asks for a new code: nothing else was written, no fee was taken and the face
//! session stays unused.

use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::{CalledMethod, Caller, Partner, PartnerKind},
    convert::{from_timestamp, timestamp},
    error::{require_enum, require_uuid},
    mask::{mask_name, mask_phone, mask_street},
    token::PERSON_TOKEN_METADATA,
};
use medins_proto::{
    identity::v1::SmsPurpose,
    insurance::v1::{
        self as pb, ActivateCardRequest, ActivateCardResponse, ApplyForCardRequest, ApplyForCardResponse,
        ApplyForCardsBatchRequest, ApplyForCardsBatchResponse, CancelCardLossReportRequest,
        CancelCardLossReportResponse, ChangeCardPinRequest, ChangeCardPinResponse, ConfirmCardDeliveryRequest,
        ConfirmCardDeliveryResponse, GetCardApplicationRequest, GetCardApplicationResponse, GetCardRequest,
        GetCardResponse, ListCardApplicationsRequest, ListCardApplicationsResponse, RecordCardDispatchRequest,
        RecordCardDispatchResponse, RecordCardFeeRequest, RecordCardFeeResponse, RecordCardProductionRequest,
        RecordCardProductionResponse, ReplaceCardRequest, ReplaceCardResponse, ReportCardLossRequest,
        ReportCardLossResponse, ResetCardPinRequest, ResetCardPinResponse, ReviewCardApplicationRequest,
        ReviewCardApplicationResponse, card_batch_person, card_service_server::CardService, get_card_request,
    },
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    SharedState, State,
    access::{CallAccess, HandlerFacts},
};
use crate::{
    domain::{
        access::{self, PinChange, Standing},
        account::Scheme,
        card::{
            ActivationChannel, Applicant, ApplicationCursor, ApplicationFields, ApplicationStatus, Card, CardAction,
            CardApplication, CardChannel, CardFee, CardStatus, CardView, Delivery, Evidence, FeeCheck, FunctionStatus,
            LOOKUP_FAILURES_PER_DAY, LookupOutcome, MAX_BATCH, MailingAddress, NewApplication, applicant_rule,
            binder_acts, card_view, check_applying_as, check_channel_fields, check_fee, delivery_of, employer_code,
            fee_terms, function_status, guardian_required, lookup_limit_exceeded, lookup_outcome, lookups_counted,
            mailing_address, parse_card_number, photo_required, rejection_reason, require_channel_partner,
            require_fee_partner, tracking_number,
        },
        card_pin::{
            self, HASH_ESTIMATE_BYTES, Pin, PinTry, check_strength, hash_pin, parse_pin, pin_locked, pin_not_set,
            pin_wrong, verify_pin,
        },
        document::DocumentKind,
        face::{FaceCheck, FacePurpose, check_face_session},
        ledger::page_size,
        voucher::{age_on, require_insured},
    },
    store::card::ApplicationFilter,
};

/// The CardService implementation.
pub struct CardApi {
    state: SharedState,
}

fn optional_uuid(field: &str, raw: &str) -> ApiResult<Option<Uuid>> {
    if raw.trim().is_empty() { Ok(None) } else { require_uuid(field, raw).map(Some) }
}

fn channel_from_wire(raw: i32) -> ApiResult<CardChannel> {
    Ok(match require_enum::<pb::CardChannel>("channel", raw)? {
        pb::CardChannel::Online => CardChannel::Online,
        pb::CardChannel::ServiceCenter => CardChannel::ServiceCenter,
        pb::CardChannel::ServicePoint => CardChannel::ServicePoint,
        pb::CardChannel::Agent => CardChannel::Agent,
        pb::CardChannel::Employer => CardChannel::Employer,
        pb::CardChannel::Replacement => CardChannel::Replacement,
        pb::CardChannel::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

fn channel_to_wire(channel: CardChannel) -> pb::CardChannel {
    match channel {
        CardChannel::Online => pb::CardChannel::Online,
        CardChannel::ServiceCenter => pb::CardChannel::ServiceCenter,
        CardChannel::ServicePoint => pb::CardChannel::ServicePoint,
        CardChannel::Agent => pb::CardChannel::Agent,
        CardChannel::Employer => pb::CardChannel::Employer,
        CardChannel::Replacement => pb::CardChannel::Replacement,
    }
}

fn status_to_wire(status: ApplicationStatus) -> pb::CardApplicationStatus {
    match status {
        ApplicationStatus::Submitted => pb::CardApplicationStatus::Submitted,
        ApplicationStatus::Approved => pb::CardApplicationStatus::Approved,
        ApplicationStatus::Rejected => pb::CardApplicationStatus::Rejected,
        ApplicationStatus::Produced => pb::CardApplicationStatus::Produced,
        ApplicationStatus::Mailed => pb::CardApplicationStatus::Mailed,
        ApplicationStatus::ReadyForPickup => pb::CardApplicationStatus::ReadyForPickup,
        ApplicationStatus::Delivered => pb::CardApplicationStatus::Delivered,
    }
}

fn status_from_wire(status: pb::CardApplicationStatus) -> Option<ApplicationStatus> {
    Some(match status {
        pb::CardApplicationStatus::Unspecified => return None,
        pb::CardApplicationStatus::Submitted => ApplicationStatus::Submitted,
        pb::CardApplicationStatus::Approved => ApplicationStatus::Approved,
        pb::CardApplicationStatus::Rejected => ApplicationStatus::Rejected,
        pb::CardApplicationStatus::Produced => ApplicationStatus::Produced,
        pb::CardApplicationStatus::Mailed => ApplicationStatus::Mailed,
        pb::CardApplicationStatus::ReadyForPickup => ApplicationStatus::ReadyForPickup,
        pb::CardApplicationStatus::Delivered => ApplicationStatus::Delivered,
    })
}

pub(crate) fn date_message(date: NaiveDate) -> pb::CardDate {
    pb::CardDate { year: date.year(), month: date.month() as i32, day: date.day() as i32 }
}

fn address_message(address: &MailingAddress) -> pb::MaskedMailingAddress {
    pb::MaskedMailingAddress {
        region_code: address.region_code.clone(),
        masked_street: mask_street(&address.street),
        masked_recipient: mask_name(&address.recipient),
        masked_phone: mask_phone(&address.phone),
    }
}

/// The wire form of an application.
pub fn application_message(application: &CardApplication) -> pb::CardApplication {
    let text = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    pb::CardApplication {
        application_id: application.id.to_string(),
        person_id: application.person_id.to_string(),
        channel: channel_to_wire(application.channel) as i32,
        delivery: match application.delivery {
            Delivery::Mail => pb::CardDelivery::Mail,
            Delivery::Pickup => pb::CardDelivery::Pickup,
            Delivery::OnTheSpot => pb::CardDelivery::OnTheSpot,
        } as i32,
        status: status_to_wire(application.status) as i32,
        guardian_person_id: text(application.guardian_person_id),
        agent_person_id: text(application.agent_person_id),
        employer_code: application.employer_code.clone().unwrap_or_default(),
        replaces_card_number: application.replaces_card_number.clone().unwrap_or_default(),
        rejection_reason: application.rejection_reason.clone().unwrap_or_default(),
        ready_by: application.ready_by.map(date_message),
        tracking_number: application.tracking_number.clone().unwrap_or_default(),
        card_number: application.card_number.clone().unwrap_or_default(),
        mailing_address: application.mailing_address.as_ref().map(address_message),
        fee_id: text(application.fee_id),
        partner_id: application.partner_id.clone(),
        submitted_at: Some(timestamp(application.submitted_at)),
        updated_at: Some(timestamp(application.updated_at)),
        history: application
            .history
            .iter()
            .map(|event| pb::CardApplicationEvent {
                status: status_to_wire(event.status) as i32,
                at: Some(timestamp(event.at)),
                partner_id: event.partner_id.clone(),
            })
            .collect(),
    }
}

fn function_message(status: FunctionStatus) -> pb::CardFunctionStatus {
    match status {
        FunctionStatus::Inactive => pb::CardFunctionStatus::Inactive,
        FunctionStatus::Active => pb::CardFunctionStatus::Active,
        FunctionStatus::Frozen => pb::CardFunctionStatus::Frozen,
        FunctionStatus::Closed => pb::CardFunctionStatus::Closed,
    }
}

/// The wire form of a card, in full.
pub fn card_message(card: &Card) -> pb::Card {
    card_message_as(card, CardView::Full)
}

/// The wire form of a card as `view` shows it (a counter gets no person or application id).
pub fn card_message_as(card: &Card, view: CardView) -> pb::Card {
    let full = view == CardView::Full;
    pb::Card {
        card_number: card.card_number.clone(),
        person_id: if full { card.person_id.to_string() } else { String::new() },
        application_id: if full { card.application_id.to_string() } else { String::new() },
        status: match card.status {
            CardStatus::Valid => pb::CardStatus::Valid,
            CardStatus::LostTemporary => pb::CardStatus::LostTemporary,
            CardStatus::Lost => pb::CardStatus::Lost,
            CardStatus::Replaced => pb::CardStatus::Replaced,
        } as i32,
        medical_status: function_message(function_status(card.status, card.medical_activated_at.is_some())) as i32,
        financial_status: function_message(function_status(card.status, card.financial_activated_at.is_some())) as i32,
        medical_activated_at: card.medical_activated_at.map(timestamp),
        financial_activated_at: card.financial_activated_at.map(timestamp),
        replaced_by_application_id: card
            .replaced_by_application_id
            .filter(|_| full)
            .map(|id| id.to_string())
            .unwrap_or_default(),
        issued_at: Some(timestamp(card.issued_at)),
        updated_at: Some(timestamp(card.updated_at)),
        delivered: card.delivered,
    }
}

fn fee_message(fee: &CardFee) -> pb::CardFee {
    pb::CardFee {
        fee_id: fee.id.to_string(),
        person_id: fee.person_id.to_string(),
        amount_cents: fee.amount_cents,
        reference: fee.reference.clone(),
        bank_partner_id: fee.bank_partner_id.clone(),
        application_id: fee.application_id.map(|id| id.to_string()).unwrap_or_default(),
        recorded_at: Some(timestamp(fee.recorded_at)),
    }
}

fn address_of(prefix: &str, address: Option<&pb::MailingAddress>) -> ApiResult<Option<MailingAddress>> {
    address.map(|a| mailing_address(prefix, &a.region_code, &a.street, &a.recipient, &a.phone)).transpose()
}

/// An ONLINE application's proof, decoded.
struct OnlineProof {
    sms_challenge_id: Uuid,
    face_session_id: Uuid,
    id_card_front: Option<Uuid>,
    id_card_back: Option<Uuid>,
    photo: Option<Uuid>,
    fee_id: Uuid,
    address: MailingAddress,
}

/// A decoded ApplyForCard request.
struct Application {
    person_id: Uuid,
    channel: CardChannel,
    guardian: Option<Uuid>,
    online: Option<OnlineProof>,
    agent: Option<pb::PersonIdentity>,
}

fn decode_application(body: &ApplyForCardRequest) -> ApiResult<Application> {
    let person_id = require_uuid("person_id", &body.person_id)?;
    let channel = channel_from_wire(body.channel)?;
    let given = |text: &str| !text.trim().is_empty();
    check_channel_fields(
        channel,
        ApplicationFields {
            sms: given(&body.sms_challenge_id),
            front: given(&body.id_card_front_document_id),
            back: given(&body.id_card_back_document_id),
            photo: given(&body.photo_document_id),
            face: given(&body.face_session_id),
            address: body.mailing_address.is_some(),
            fee: given(&body.fee_id),
            agent: body.agent.is_some(),
        },
    )?;
    let guardian = optional_uuid("guardian_person_id", &body.guardian_person_id)?;
    if guardian == Some(person_id) {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "guardian_person_id",
            "must not be the applicant",
        ));
    }
    let online = match channel {
        CardChannel::Online => Some(OnlineProof {
            sms_challenge_id: require_uuid("sms_challenge_id", &body.sms_challenge_id)?,
            face_session_id: require_uuid("face_session_id", &body.face_session_id)?,
            id_card_front: optional_uuid("id_card_front_document_id", &body.id_card_front_document_id)?,
            id_card_back: optional_uuid("id_card_back_document_id", &body.id_card_back_document_id)?,
            photo: optional_uuid("photo_document_id", &body.photo_document_id)?,
            fee_id: require_uuid("fee_id", &body.fee_id)?,
            address: address_of("mailing_address.", body.mailing_address.as_ref())?
                .ok_or_else(|| ApiError::invalid_field(Reason::InvalidArgument, "mailing_address", "required"))?,
        }),
        _ => None,
    };
    Ok(Application { person_id, channel, guardian, online, agent: body.agent.clone() })
}

/// Hashes a new PIN on the bounded pool (docs/architecture.md#documents-are-identity-documents:
/// heavy work never runs on the async runtime; Argon2id takes ~19 MiB and tens of ms).
pub(crate) async fn hash_on_pool(state: &State, pin: Pin) -> ApiResult<String> {
    state
        .heavy
        .run(HASH_ESTIMATE_BYTES, {
            let pepper = state.pin_pepper.clone();
            move || hash_pin(&pin, &pepper, &mut rand::rngs::OsRng)
        })
        .await?
        .map_err(|refusal| ApiError::internal(format_args!("PIN hashing refused: {refusal:?}")))?
}

/// Checks a new PIN against what is known of the card's holder (`card_pin::check_against_holder`):
/// the ID number the request carries (a bank's counter; matched against the card's holder
/// before this is asked) and its birth date, else the birth date from identity-svc
/// (PersonFactsService.GetPersonFacts, the facts insurance-svc's age rules already read).
pub(crate) async fn check_new_pin_against_holder(
    state: &State,
    acting_partner: &str,
    person_id: Uuid,
    holder: Option<&pb::PersonIdentity>,
    field: &str,
    pin: &Pin,
) -> ApiResult<()> {
    let id_number = holder.map(|holder| holder.id_number.as_str());
    let birth_date = match id_number.and_then(card_pin::birth_date_in_id_number) {
        Some(date) => date,
        None => state.identity.get_person_birth_date(acting_partner, person_id).await?,
    };
    card_pin::check_against_holder(field, pin, &card_pin::HolderFacts { birth_date, id_number })
}

/// Verifies `pin` against `hash` on the bounded pool.
pub(crate) async fn verify_on_pool(state: &State, pin: Pin, hash: String) -> ApiResult<bool> {
    state
        .heavy
        .run(HASH_ESTIMATE_BYTES, {
            let pepper = state.pin_pepper.clone();
            move || verify_pin(&pin, &hash, &pepper)
        })
        .await?
        .map_err(|refusal| ApiError::internal(format_args!("PIN verification refused: {refusal:?}")))?
}

/// Runs `lookup`, a lookup by card number for `caller`, as one counted lookup (issue 13 item
/// 3): a unit of the partner's failed lookups of the day is reserved first (refused once they
/// are used up) and given back only if the lookup found a card the caller may act on
/// ([`lookup_outcome`]). Operators and SERVICE are not counted. Every lookup by card number,
/// in CardService and CodeService.OpenVisitWithCard alike, goes through here.
pub(crate) async fn counted_lookup<T, Fut>(state: &State, caller: &Partner, lookup: Fut) -> ApiResult<T>
where
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    let counted = lookups_counted(caller.kind);
    let day = state.clock.today();
    if counted && !state.cards.reserve_lookup(&caller.id, day, LOOKUP_FAILURES_PER_DAY).await? {
        return Err(lookup_limit_exceeded(state.clock.stored_now(), day));
    }
    let result = lookup.await;
    if counted
        && lookup_outcome(result.as_ref().err()) != LookupOutcome::Failed
        && let Err(error) = state.cards.release_lookup(&caller.id, day).await
    {
        // The unit stays used: the partner loses one lookup, nobody gains one.
        tracing::warn!(%error, partner = %caller.id, "a card lookup was not given back");
    }
    result
}

/// Checks `pin` against card `number`'s, taking one of its tries first
/// (`CardStore::take_pin_try`) and giving it back when right. Returns the card (none: no such
/// card) and, when it has a PIN that is not locked, whether the PIN was right; a card with no
/// PIN, or no card, has a decoy hash verified so that every answer takes the same work.
pub(crate) async fn check_pin(state: &State, number: &str, pin: Pin) -> ApiResult<(Option<Card>, PinCheck)> {
    let Some((card, tried)) = state.cards.take_pin_try(number.to_owned()).await? else {
        verify_on_pool(state, pin, card_pin::DECOY_HASH.clone()).await?;
        return Ok((None, PinCheck::NotSet));
    };
    let check = match tried {
        PinTry::Locked => PinCheck::Locked,
        PinTry::NotSet => {
            verify_on_pool(state, pin, card_pin::DECOY_HASH.clone()).await?;
            PinCheck::NotSet
        }
        PinTry::Taken(hash) => {
            if verify_on_pool(state, pin, hash.clone()).await? {
                state.cards.give_back_pin_try(number.to_owned(), hash.clone()).await?;
                PinCheck::Right(hash)
            } else {
                PinCheck::Wrong
            }
        }
    };
    Ok((Some(card), check))
}

/// How a PIN check went ([`check_pin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PinCheck {
    /// Right (the hash it matched).
    Right(String),
    /// Wrong: one of the card's tries is used up.
    Wrong,
    /// Locked: not checked.
    Locked,
    /// No PIN (or no card).
    NotSet,
}

/// A card that still has a PIN to change or reset: not formally lost or replaced
/// (CARD_STATE_CONFLICT otherwise).
fn require_live_card(card: &Card, action: &'static str) -> ApiResult<()> {
    match card.status {
        CardStatus::Valid | CardStatus::LostTemporary => Ok(()),
        status => Err(crate::domain::card::StateConflict { status: status.as_str(), action }.into_error()),
    }
}

/// The gRPC code an outcome had, for the access history.
fn outcome<T>(result: &ApiResult<T>) -> tonic::Code {
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(error) => error.code(),
    }
}

/// The outcome code of a call's answer, for the access history.
fn card_not_found() -> ApiError {
    ApiError::not_found(Reason::CardNotFound, "no card with this number")
}

fn document_error(reason: Reason, field: &str, check: &str, message: &str) -> ApiError {
    ApiError::failed_precondition(reason, message)
        .with_metadata("document", field)
        .with_metadata("document_check", check)
}

impl CardApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    /// The applicant's age today (China Standard Time) from the insured account, which must be
    /// ACTIVE.
    async fn insured_age(&self, person_id: Uuid) -> ApiResult<(i32, crate::domain::account::Account)> {
        let account = self.state.accounts.find_open_by_person(person_id).await?;
        require_insured(account.as_ref().map(|a| a.status))?;
        let account = account.expect("require_insured refuses none");
        Ok((age_on(account.birth_date, self.state.clock.today()), account))
    }

    /// The guardian rule with the binding check: a guardian must be an ACTIVE binder.
    async fn check_applicant(&self, person_id: Uuid, age: i32, guardian: Option<Uuid>) -> ApiResult<Applicant> {
        let applicant = applicant_rule(age, guardian)?;
        if let Applicant::Guardian(guardian) = applicant
            && self.state.family.find_active(guardian, person_id).await?.is_none()
        {
            return Err(guardian_required("not_binder"));
        }
        Ok(applicant)
    }

    async fn check_document(
        &self,
        field: &str,
        id: Option<Uuid>,
        kind: DocumentKind,
        owner: Uuid,
        required: bool,
    ) -> ApiResult<Option<Uuid>> {
        let Some(id) = id else {
            return if required {
                Err(document_error(Reason::DocumentMissing, field, "missing", "a required document is missing"))
            } else {
                Ok(None)
            };
        };
        let invalid = |check: &str, message: &str| document_error(Reason::DocumentInvalid, field, check, message);
        let document = self.state.documents.find(id).await?.ok_or_else(|| invalid("not_found", "no such document"))?;
        if document.owner_person_id != owner {
            return Err(invalid("foreign", "the document is not the applicant's"));
        }
        if document.kind != kind {
            return Err(invalid("wrong_kind", "the document is not of the kind this field needs"));
        }
        if !document.content_type.is_image() {
            return Err(invalid("not_image", "the document must be a JPEG or PNG image"));
        }
        Ok(Some(id))
    }

    async fn check_face(&self, acting_partner: &str, session_id: Uuid, actor: Uuid) -> ApiResult<()> {
        let state = &self.state;
        let session = match state
            .identity
            .get_face_verification(acting_partner, &session_id.to_string(), "face_session_id.")
            .await
        {
            Ok(session) => session,
            Err(error) if error.reason() == Reason::FaceSessionNotFound => return Err(FaceCheck::NotFound.into_error()),
            Err(error) => return Err(error),
        };
        let facts = super::voucher::face_facts(&session)?;
        check_face_session(&facts, actor, FacePurpose::CardApplication, state.clock.stored_now())
            .map_err(FaceCheck::into_error)?;
        if state.cards.face_session_used(session_id).await? {
            return Err(FaceCheck::Reused.into_error());
        }
        Ok(())
    }

    /// ApplyForCard after decoding, in the contract's order.
    async fn apply(&self, application: Application, caller: &Partner) -> ApiResult<ApplyForCardResponse> {
        let state = &self.state;
        let person_id = application.person_id;
        // The one applying: the guardian for a minor. Their token (checked against the access
        // table before this), SMS and face prove it.
        let actor = application.guardian.unwrap_or(person_id);
        let (age, _) = self.insured_age(person_id).await?;
        self.check_applicant(person_id, age, application.guardian).await?;
        state.cards.check_may_apply(person_id).await?;
        let agent_person_id = match &application.agent {
            Some(agent) => {
                // Who the agent is, checked without creating anyone: an agent is a known person.
                let agent_id = state
                    .identity
                    .match_person(&caller.id, &agent.name, &agent.id_number, None, "agent.")
                    .await?
                    .ok_or_else(|| {
                        ApiError::not_found(Reason::PersonNotFound, "the agent is not a registered person")
                    })?;
                if agent_id == person_id {
                    return Err(ApiError::failed_precondition(
                        Reason::AgentIsApplicant,
                        "the agent must be another person than the applicant",
                    ));
                }
                Some(agent_id)
            }
            None => None,
        };
        let mut evidence = None;
        let mut fee_id = None;
        let mut address = None;
        if let Some(online) = application.online {
            let front = self
                .check_document(
                    "id_card_front_document_id",
                    online.id_card_front,
                    DocumentKind::IdCardFront,
                    person_id,
                    true,
                )
                .await?;
            let back = self
                .check_document(
                    "id_card_back_document_id",
                    online.id_card_back,
                    DocumentKind::IdCardBack,
                    person_id,
                    true,
                )
                .await?;
            let photo = self
                .check_document("photo_document_id", online.photo, DocumentKind::Photo, person_id, photo_required(age))
                .await?;
            self.check_face(&caller.id, online.face_session_id, actor).await?;
            let fee = state.cards.find_fee(online.fee_id).await?;
            check_fee(fee.map(|f| (f.person_id, f.application_id.is_some())), person_id)
                .map_err(FeeCheck::into_error)?;
            // Last: every other refusal leaves the challenge usable.
            state
                .identity
                .consume_sms_challenge(
                    &actor.to_string(),
                    &online.sms_challenge_id.to_string(),
                    SmsPurpose::CardApplication,
                    &caller.id,
                    "sms_",
                )
                .await?;
            evidence = Some(Evidence {
                id_card_front: front.expect("required"),
                id_card_back: back.expect("required"),
                photo,
                face_session_id: online.face_session_id,
                sms_challenge_id: online.sms_challenge_id,
            });
            fee_id = Some(online.fee_id);
            address = Some(online.address);
        }
        let new = NewApplication {
            person_id,
            channel: application.channel,
            delivery: delivery_of(application.channel, address.is_some()),
            partner_id: caller.id.clone(),
            guardian_person_id: application.guardian,
            agent_person_id,
            employer_code: None,
            evidence,
            mailing_address: address,
            fee_id,
        };
        let on_spot = application.channel == CardChannel::ServiceCenter;
        let (application, card) = state.cards.submit(new, on_spot, state.clock.stored_now()).await?;
        tracing::info!(
            application_id = %application.id,
            %person_id,
            channel = application.channel.as_str(),
            status = application.status.as_str(),
            partner = %caller.id,
            "card application submitted"
        );
        Ok(ApplyForCardResponse {
            application: Some(application_message(&application)),
            card: card.as_ref().map(card_message),
        })
    }

    /// One employee of a batch: the person, then the account of this employer, then the rules.
    async fn apply_employee(
        &self,
        index: usize,
        entry: &pb::CardBatchPerson,
        employer: &str,
        caller: &Partner,
    ) -> (Option<Uuid>, ApiResult<CardApplication>) {
        let person_id = match &entry.person {
            Some(card_batch_person::Person::PersonId(id)) => require_uuid(&format!("persons[{index}].person_id"), id),
            Some(card_batch_person::Person::Identity(identity)) => self
                .state
                .identity
                .resolve_person(&caller.id, &identity.name, &identity.id_number, &format!("persons[{index}].identity."))
                .await
                .and_then(|person| require_uuid("person_id", &person.person_id)),
            None => Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                &format!("persons[{index}]"),
                "set person_id or identity",
            )),
        };
        let person_id = match person_id {
            Ok(id) => id,
            Err(error) => return (None, Err(error)),
        };
        let result = async {
            let (age, account) = self.insured_age(person_id).await?;
            if account.scheme != Scheme::Employee || account.employer_code.as_deref() != Some(employer) {
                return Err(ApiError::failed_precondition(
                    Reason::EmployerMismatch,
                    "the person has no EMPLOYEE account of this employer code",
                ));
            }
            self.check_applicant(person_id, age, None).await?;
            let new = NewApplication {
                person_id,
                channel: CardChannel::Employer,
                delivery: delivery_of(CardChannel::Employer, false),
                partner_id: caller.id.clone(),
                guardian_person_id: None,
                agent_person_id: None,
                employer_code: Some(employer.to_owned()),
                evidence: None,
                mailing_address: None,
                fee_id: None,
            };
            let (application, _) = self.state.cards.submit(new, false, self.state.clock.stored_now()).await?;
            Ok(application)
        }
        .await;
        (Some(person_id), result)
    }

    /// Whether insurance-svc knows `person` (an account of theirs): refused calls naming a
    /// person id are recorded for that person only then, never for a missing person.
    async fn known_person(&self, person: Uuid) -> Option<Uuid> {
        match self.state.accounts.find_open_by_person(person).await {
            Ok(Some(_)) => Some(person),
            _ => None,
        }
    }

    /// A card by number for the caller, as one counted lookup (issue 13 item 3): a unit of the
    /// partner's failed lookups of the day is reserved first (refused once they are used up),
    /// and given back only if the number named a card the caller may act on. A missing card, a
    /// holder who does not match and a caller with no standing all get the same answer, and
    /// all keep the unit. Sets `subject` to the holder once a card is found.
    async fn card_for(
        &self,
        access: &CallAccess,
        number: &str,
        holder: Option<&pb::PersonIdentity>,
        subject: &OnceLock<Uuid>,
    ) -> ApiResult<(Card, Standing)> {
        let caller = &access.caller;
        counted_lookup(&self.state, caller, self.find_card_for(&caller.id, access, number, holder, subject)).await
    }

    async fn find_card_for(
        &self,
        acting_partner: &str,
        access: &CallAccess,
        number: &str,
        holder: Option<&pb::PersonIdentity>,
        subject: &OnceLock<Uuid>,
    ) -> ApiResult<(Card, Standing)> {
        let state = &self.state;
        let Some(card) = state.cards.find_card(number.to_owned()).await? else {
            if let Some(holder) = holder {
                // The same check an existing card gets, so a malformed identity gets the same
                // answer whether the number exists or not (and about the same time).
                state.identity.match_person(acting_partner, &holder.name, &holder.id_number, None, "holder.").await?;
            }
            return Err(card_not_found());
        };
        let _ = subject.set(card.person_id);
        let holder_present = match holder {
            // A side-effect-free match against the card's holder: a failed check leaves no
            // person behind.
            Some(holder) => {
                state
                    .identity
                    .match_person(acting_partner, &holder.name, &holder.id_number, Some(card.person_id), "holder.")
                    .await?
                    == Some(card.person_id)
            }
            None => false,
        };
        let standing =
            access.decide(state, card.person_id, HandlerFacts { holder_present, ..Default::default() }).await?;
        if standing == Standing::Binder {
            let guardian = state.cards.find_application(card.application_id).await?.and_then(|a| a.guardian_person_id);
            if !binder_acts(standing, access.token_subject, guardian) {
                return Err(card_not_found());
            }
        }
        Ok((card, standing))
    }

    /// ChangeCardPin and ResetCardPin: who may, by kind, from the request alone
    /// (`access::may_set_pin`); the card for the caller (the access table's row, a counted
    /// lookup); a live card; a new PIN not made from the holder's birth date or ID number
    /// (`card_pin::check_against_holder`); for a change, the old PIN verified (a try taken
    /// first); then the new hash, written only if the PIN is still the one verified (a change)
    /// or whatever it is (a reset). Idempotent with `idempotency-key`; recorded for the holder.
    async fn set_pin<T: prost::Message>(
        &self,
        request: &Request<T>,
        change: PinChange,
        number: String,
        holder: Option<&pb::PersonIdentity>,
        old_pin: Option<Pin>,
        new_pin: Pin,
    ) -> Result<pb::Card, Status> {
        let caller = Caller::of(request)?;
        access::may_set_pin(change, caller.kind, holder.is_some())?;
        let (method, action) = match change {
            PinChange::Change => ("ChangeCardPin", "CHANGE_PIN"),
            PinChange::Reset => ("ResetCardPin", "RESET_PIN"),
        };
        let state = &self.state;
        let access = CallAccess::begin(state, request).await?;
        let subject = OnceLock::new();
        let result = state
            .idempotency
            .run(&caller.id, method, request.metadata(), request.get_ref(), || async {
                let (card, standing) = self.card_for(&access, &number, holder, &subject).await?;
                require_live_card(&card, action)?;
                check_new_pin_against_holder(state, &caller.id, card.person_id, holder, "new_pin", &new_pin).await?;
                let verified = match old_pin.clone() {
                    Some(old_pin) => match check_pin(state, &number, old_pin).await?.1 {
                        PinCheck::Right(hash) => Some(hash),
                        PinCheck::Wrong => return Err(pin_wrong().into()),
                        PinCheck::Locked => return Err(pin_locked().into()),
                        PinCheck::NotSet => return Err(pin_not_set().into()),
                    },
                    None => None,
                };
                let new_hash = hash_on_pool(state, new_pin.clone()).await?;
                let now = state.clock.stored_now();
                // A change writes only if the PIN is still the one just verified (a concurrent
                // change or reset wins; the old PIN this call knew is no longer the PIN); a reset
                // writes whatever the PIN is.
                let changing = verified.is_some();
                if !state.cards.replace_pin(number.clone(), verified, new_hash, caller.id.clone(), now).await?
                    && changing
                {
                    return Err(pin_wrong().into());
                }
                tracing::info!(application_id = %card.application_id, partner = %caller.id, method, "card PIN set");
                Ok(card_message_as(&card, card_view(standing)))
            })
            .await;
        access.record(&self.state, subject.get().copied(), &result).await;
        result
    }

    /// A loss report or its cancellation by the holder, the guardian who applied, or operators.
    async fn change_card<T: prost::Message>(
        &self,
        request: &Request<T>,
        method: &str,
        raw_number: &str,
        action: CardAction,
    ) -> Result<pb::Card, Status> {
        let number = parse_card_number("card_number", raw_number)?;
        let access = CallAccess::begin(&self.state, request).await?;
        let caller = access.caller.clone();
        let state = &self.state;
        let subject = OnceLock::new();
        let result = state
            .idempotency
            .run(&caller.id, method, request.metadata(), request.get_ref(), || async {
                let (card, standing) = self.card_for(&access, &number, None, &subject).await?;
                let card = state.cards.change_card(card.card_number, action, state.clock.stored_now()).await?;
                tracing::info!(
                    application_id = %card.application_id,
                    status = card.status.as_str(),
                    partner = %caller.id,
                    "card status changed"
                );
                Ok(card_message_as(&card, card_view(standing)))
            })
            .await;
        access.record(&self.state, subject.get().copied(), &result).await;
        result
    }

    /// An operator's step on an application: the access table first (operators only; everyone
    /// else gets the answer a missing application gets), then `step`, recorded for the
    /// applicant.
    async fn operator_step<T, Resp, F, Fut>(
        &self,
        request: &Request<T>,
        id: Uuid,
        name: &str,
        step: F,
    ) -> Result<Response<Resp>, Status>
    where
        T: prost::Message,
        Resp: prost::Message + Default,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ApiResult<Resp>>,
    {
        let access = CallAccess::begin(&self.state, request).await?;
        let state = &self.state;
        let application = state.cards.find_application(id).await?.ok_or_else(application_not_found)?;
        let result = match access.decide(state, application.person_id, HandlerFacts::default()).await {
            Ok(_) => {
                state
                    .idempotency
                    .run(&access.caller.id, name, request.metadata(), request.get_ref(), || async { Ok(step().await?) })
                    .await
            }
            Err(error) => Err(error.into()),
        };
        access.record(&self.state, Some(application.person_id), &result).await;
        result.map(Response::new)
    }
}

fn application_not_found() -> ApiError {
    ApiError::not_found(Reason::CardApplicationNotFound, "no card application with this id")
}

#[tonic::async_trait]
impl CardService for CardApi {
    async fn record_card_fee(
        &self,
        request: Request<RecordCardFeeRequest>,
    ) -> Result<Response<RecordCardFeeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let (amount_cents, reference) = fee_terms(body.amount_cents, &body.reference)?;
        if body.payer.is_none() && request.metadata().get(PERSON_TOKEN_METADATA).is_none() {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "payer",
                "required unless the call carries the person's token",
            )
            .into());
        }
        require_fee_partner(caller.kind)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let holder_present = match &body.payer {
            Some(payer) => {
                state
                    .identity
                    .match_person(&caller.id, &payer.name, &payer.id_number, Some(person_id), "payer.")
                    .await?
                    == Some(person_id)
            }
            None => false,
        };
        let result = match access.decide(state, person_id, HandlerFacts { holder_present, ..Default::default() }).await
        {
            Ok(_) => {
                state
                    .idempotency
                    .run(&caller.id, "RecordCardFee", request.metadata(), body, || async {
                        let (fee, created) = state
                            .cards
                            .record_fee(person_id, caller.id.clone(), reference, amount_cents, state.clock.stored_now())
                            .await?;
                        if created {
                            tracing::info!(fee_id = %fee.id, %person_id, partner = %caller.id, "card fee recorded");
                        }
                        Ok(RecordCardFeeResponse { fee: Some(fee_message(&fee)), created })
                    })
                    .await
            }
            Err(error) => Err(error.into()),
        };
        let subject = if result.is_ok() { Some(person_id) } else { self.known_person(person_id).await };
        access.record(&self.state, subject, &result).await;
        Ok(Response::new(result?))
    }

    async fn apply_for_card(
        &self,
        request: Request<ApplyForCardRequest>,
    ) -> Result<Response<ApplyForCardResponse>, Status> {
        let caller = Caller::of(&request)?;
        let application = decode_application(request.get_ref())?;
        require_channel_partner(application.channel, caller.kind)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let person_id = application.person_id;
        let guardian = application.guardian;
        let decided = access
            .decide(state, person_id, HandlerFacts::default())
            .await
            .and_then(|standing| check_applying_as(standing, access.token_subject, guardian));
        let result = match decided {
            Ok(()) => {
                state
                    .idempotency
                    .run(&caller.id, "ApplyForCard", request.metadata(), request.get_ref(), || async {
                        Ok(self.apply(application, &caller).await?)
                    })
                    .await
            }
            Err(error) => Err(error.into()),
        };
        let subject = if result.is_ok() { Some(person_id) } else { self.known_person(person_id).await };
        access.record(&self.state, subject, &result).await;
        Ok(Response::new(result?))
    }

    async fn apply_for_cards_batch(
        &self,
        request: Request<ApplyForCardsBatchRequest>,
    ) -> Result<Response<ApplyForCardsBatchResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let employer = employer_code(&body.employer_code)?;
        // An EMPLOYER partner applies only under the codes it speaks for
        // (docs/architecture.md#trust-model), refused before any person is looked up.
        if caller.kind == PartnerKind::Employer {
            crate::domain::access::require_own_employer_code(&caller.employer_codes, &employer)?;
        }
        if body.persons.is_empty() || body.persons.len() > MAX_BATCH {
            return Err(
                ApiError::invalid_field(Reason::InvalidArgument, "persons", "must list 1 to 100 persons").into()
            );
        }
        let state = &self.state;
        let method = CalledMethod::of(&request).unwrap_or("/medins.insurance.v1.CardService/ApplyForCardsBatch");
        let response = state
            .idempotency
            .run(&caller.id, "ApplyForCardsBatch", request.metadata(), body, || async {
                let mut results = Vec::with_capacity(body.persons.len());
                let (mut accepted, mut refused) = (0, 0);
                for (index, entry) in body.persons.iter().enumerate() {
                    let (person_id, outcome) = self.apply_employee(index, entry, &employer, &caller).await;
                    // Each employee's application is a change of that person's data.
                    if let Some(person) = person_id {
                        state.audit.record(&caller.id, method, person, self::outcome(&outcome)).await;
                    }
                    let mut result = pb::CardBatchResult {
                        index: index as i32,
                        person_id: person_id.map(|id| id.to_string()).unwrap_or_default(),
                        ..Default::default()
                    };
                    match outcome {
                        Ok(application) => {
                            accepted += 1;
                            result.application = Some(application_message(&application));
                        }
                        // A fault of ours or a dependency down fails the whole call: retrying it
                        // with the same idempotency key is then safe.
                        Err(error) if matches!(error.code(), tonic::Code::Internal | tonic::Code::Unavailable) => {
                            return Err(error.into());
                        }
                        Err(error) => {
                            refused += 1;
                            result.error_code = error.code() as i32;
                            result.error_reason = error.reason().as_str().to_owned();
                            result.error_message = error.message().to_owned();
                        }
                    }
                    results.push(result);
                }
                tracing::info!(accepted, refused, partner = %caller.id, "card batch applied");
                Ok(ApplyForCardsBatchResponse { results, accepted, refused })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn review_card_application(
        &self,
        request: Request<ReviewCardApplicationRequest>,
    ) -> Result<Response<ReviewCardApplicationResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = require_uuid("application_id", &body.application_id)?;
        let rejection = match require_enum::<pb::CardReviewDecision>("decision", body.decision)? {
            pb::CardReviewDecision::Approve if body.rejection_reason.trim().is_empty() => None,
            pb::CardReviewDecision::Approve => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "rejection_reason",
                    "must be empty to approve",
                )
                .into());
            }
            pb::CardReviewDecision::Reject => Some(rejection_reason(&body.rejection_reason)?),
            pb::CardReviewDecision::Unspecified => unreachable!("require_enum refuses the zero value"),
        };
        let state = &self.state;
        self.operator_step(&request, id, "ReviewCardApplication", || async {
                let application = state
                    .cards
                    .review(id, rejection.clone(), state.clock.today(), caller.id.clone(), state.clock.stored_now())
                    .await?;
                tracing::info!(application_id = %id, status = application.status.as_str(), partner = %caller.id, "card application reviewed");
                Ok(ReviewCardApplicationResponse { application: Some(application_message(&application)) })
        })
        .await
    }

    async fn record_card_production(
        &self,
        request: Request<RecordCardProductionRequest>,
    ) -> Result<Response<RecordCardProductionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = require_uuid("application_id", &body.application_id)?;
        let state = &self.state;
        self.operator_step(&request, id, "RecordCardProduction", || async {
            let (application, card) = state.cards.produce(id, caller.id.clone(), state.clock.stored_now()).await?;
            tracing::info!(application_id = %id, partner = %caller.id, "card produced");
            Ok(RecordCardProductionResponse {
                application: Some(application_message(&application)),
                card: Some(card_message(&card)),
            })
        })
        .await
    }

    async fn record_card_dispatch(
        &self,
        request: Request<RecordCardDispatchRequest>,
    ) -> Result<Response<RecordCardDispatchResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = require_uuid("application_id", &body.application_id)?;
        let tracking = match body.tracking_number.trim() {
            "" => None,
            text => Some(tracking_number(text)?),
        };
        let state = &self.state;
        self.operator_step(&request, id, "RecordCardDispatch", || async {
                let application =
                    state.cards.dispatch(id, tracking.clone(), caller.id.clone(), state.clock.stored_now()).await?;
                tracing::info!(application_id = %id, status = application.status.as_str(), partner = %caller.id, "card dispatched");
                Ok(RecordCardDispatchResponse { application: Some(application_message(&application)) })
        })
        .await
    }

    async fn confirm_card_delivery(
        &self,
        request: Request<ConfirmCardDeliveryRequest>,
    ) -> Result<Response<ConfirmCardDeliveryResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = require_uuid("application_id", &body.application_id)?;
        let state = &self.state;
        self.operator_step(&request, id, "ConfirmCardDelivery", || async {
            let (application, card) =
                state.cards.confirm_delivery(id, caller.id.clone(), state.clock.stored_now()).await?;
            tracing::info!(application_id = %id, partner = %caller.id, "card delivered");
            Ok(ConfirmCardDeliveryResponse {
                application: Some(application_message(&application)),
                card: Some(card_message(&card)),
            })
        })
        .await
    }

    async fn get_card_application(
        &self,
        request: Request<GetCardApplicationRequest>,
    ) -> Result<Response<GetCardApplicationResponse>, Status> {
        let id = require_uuid("application_id", &request.get_ref().application_id)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let application = state.cards.find_application(id).await?.ok_or_else(application_not_found)?;
        // The employer partner that applied for it in a batch reads it.
        let caller = &access.caller;
        let employer = caller.kind == PartnerKind::Employer
            && application.channel == CardChannel::Employer
            && application.partner_id == caller.id;
        let result: Result<_, Status> = async {
            let standing =
                access.decide(state, application.person_id, HandlerFacts { employer, ..Default::default() }).await?;
            if !binder_acts(standing, access.token_subject, application.guardian_person_id) {
                return Err(application_not_found().into());
            }
            Ok(GetCardApplicationResponse { application: Some(application_message(&application)) })
        }
        .await;
        access.record(&self.state, Some(application.person_id), &result).await;
        Ok(Response::new(result?))
    }

    async fn list_card_applications(
        &self,
        request: Request<ListCardApplicationsRequest>,
    ) -> Result<Response<ListCardApplicationsResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request).await?;
        let body = request.get_ref();
        let status = match body.status {
            0 => None,
            raw => status_from_wire(require_enum::<pb::CardApplicationStatus>("status", raw)?),
        };
        let time = |field: &str, ts: Option<&prost_types::Timestamp>| {
            ts.map(|ts| {
                from_timestamp(ts)
                    .map(|t| t.naive_utc())
                    .ok_or_else(|| ApiError::invalid_field(Reason::InvalidArgument, field, "not a valid time"))
            })
            .transpose()
        };
        let filter = ApplicationFilter {
            status,
            person_id: optional_uuid("person_id", &body.person_id)?,
            from: time("submitted_from", body.submitted_from.as_ref())?,
            before: time("submitted_before", body.submitted_before.as_ref())?,
        };
        if let (Some(from), Some(before)) = (filter.from, filter.before)
            && from >= before
        {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "submitted_before",
                "must be later than submitted_from",
            )
            .into());
        }
        let size = page_size(body.page_size)?;
        let cursor = match body.page_token.trim() {
            "" => None,
            token => Some(ApplicationCursor::decode(token)?),
        };
        // Operators only: the rule's standings do not depend on the person, so any id asks.
        access.decide(&self.state, filter.person_id.unwrap_or_else(Uuid::nil), HandlerFacts::default()).await?;
        let (applications, next) = self.state.cards.list_applications(filter, cursor, size).await?;
        // A page reads every applicant on it: each is recorded once.
        let mut persons: Vec<Uuid> = applications.iter().map(|a| a.person_id).collect();
        persons.sort_unstable();
        persons.dedup();
        for person in persons {
            self.state.audit.record(&access.caller.id, access.method, person, tonic::Code::Ok).await;
        }
        Ok(Response::new(ListCardApplicationsResponse {
            applications: applications.iter().map(application_message).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn activate_card(
        &self,
        request: Request<ActivateCardRequest>,
    ) -> Result<Response<ActivateCardResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let number = parse_card_number("card_number", &body.card_number)?;
        let channel = match require_enum::<pb::CardActivationChannel>("channel", body.channel)? {
            pb::CardActivationChannel::Bank => ActivationChannel::Bank,
            pb::CardActivationChannel::Hospital => ActivationChannel::Hospital,
            pb::CardActivationChannel::Pharmacy => ActivationChannel::Pharmacy,
            pb::CardActivationChannel::Unspecified => unreachable!("require_enum refuses the zero value"),
        };
        let Some(holder) = body.holder.as_ref() else {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "holder",
                "required: the holder shows their ID card at the counter",
            )
            .into());
        };
        channel.require_partner(caller.kind)?;
        // The bank sets the PIN with the financial function; nobody else sets one.
        let pin = if channel.activates_financial() {
            Some(check_strength("pin", &body.pin)?)
        } else if body.pin.is_empty() {
            None
        } else {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "pin",
                "only the bank channel sets a PIN: leave it empty",
            )
            .into());
        };
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let subject = OnceLock::new();
        let result = state
            .idempotency
            .run(&caller.id, "ActivateCard", request.metadata(), body, || async {
                let (card, standing) = self.card_for(&access, &number, Some(holder), &subject).await?;
                let pin_hash = match pin.clone() {
                    Some(pin) => {
                        // Not the holder's birth date or ID number end, as shown at the counter.
                        check_new_pin_against_holder(state, &caller.id, card.person_id, Some(holder), "pin", &pin)
                            .await?;
                        Some(hash_on_pool(state, pin).await?)
                    }
                    None => None,
                };
                let card = state
                    .cards
                    .activate(card.card_number, channel, caller.id.clone(), pin_hash, state.clock.stored_now())
                    .await?;
                tracing::info!(
                    application_id = %card.application_id,
                    channel = channel.as_str(),
                    partner = %caller.id,
                    "card activated or used"
                );
                Ok(ActivateCardResponse { card: Some(card_message_as(&card, card_view(standing))) })
            })
            .await;
        access.record(&self.state, subject.get().copied(), &result).await;
        Ok(Response::new(result?))
    }

    async fn get_card(&self, request: Request<GetCardRequest>) -> Result<Response<GetCardResponse>, Status> {
        let state = &self.state;
        match &request.get_ref().key {
            Some(get_card_request::Key::CardNumber(number)) => {
                let number = parse_card_number("card_number", number)?;
                let access = CallAccess::begin(state, &request).await?;
                let subject = OnceLock::new();
                let result: Result<_, Status> = self
                    .card_for(&access, &number, None, &subject)
                    .await
                    .map(|(card, standing)| GetCardResponse { card: Some(card_message_as(&card, card_view(standing))) })
                    .map_err(Status::from);
                access.record(&self.state, subject.get().copied(), &result).await;
                Ok(Response::new(result?))
            }
            Some(get_card_request::Key::PersonId(id)) => {
                let person_id = require_uuid("person_id", id)?;
                let access = CallAccess::begin(state, &request).await?;
                let card = state.cards.current_card_of(person_id).await?;
                let result: Result<_, Status> = async {
                    let standing = access.decide(state, person_id, HandlerFacts::default()).await?;
                    let card = card
                        .as_ref()
                        .ok_or_else(|| ApiError::not_found(Reason::CardNotFound, "no card with this number"))?;
                    if standing == Standing::Binder {
                        let guardian =
                            state.cards.find_application(card.application_id).await?.and_then(|a| a.guardian_person_id);
                        if !binder_acts(standing, access.token_subject, guardian) {
                            return Err(card_not_found().into());
                        }
                    }
                    Ok(GetCardResponse { card: Some(card_message_as(card, card_view(standing))) })
                }
                .await;
                // A person with a card exists; one whose token the call carried too.
                let known = card.is_some() || access.token_subject == Some(person_id);
                access.record(&self.state, known.then_some(person_id), &result).await;
                Ok(Response::new(result?))
            }
            None => Err(ApiError::invalid_field(Reason::InvalidArgument, "key", "set card_number or person_id").into()),
        }
    }

    async fn report_card_loss(
        &self,
        request: Request<ReportCardLossRequest>,
    ) -> Result<Response<ReportCardLossResponse>, Status> {
        let body = request.get_ref();
        parse_card_number("card_number", &body.card_number)?;
        let action = match require_enum::<pb::CardLossKind>("kind", body.kind)? {
            pb::CardLossKind::Temporary => CardAction::ReportTemporaryLoss,
            pb::CardLossKind::Formal => CardAction::ReportFormalLoss,
            pb::CardLossKind::Unspecified => unreachable!("require_enum refuses the zero value"),
        };
        let card = self.change_card(&request, "ReportCardLoss", &body.card_number, action).await?;
        Ok(Response::new(ReportCardLossResponse { card: Some(card) }))
    }

    async fn cancel_card_loss_report(
        &self,
        request: Request<CancelCardLossReportRequest>,
    ) -> Result<Response<CancelCardLossReportResponse>, Status> {
        let number = request.get_ref().card_number.clone();
        parse_card_number("card_number", &number)?;
        let card = self.change_card(&request, "CancelCardLossReport", &number, CardAction::CancelLossReport).await?;
        Ok(Response::new(CancelCardLossReportResponse { card: Some(card) }))
    }

    async fn replace_card(
        &self,
        request: Request<ReplaceCardRequest>,
    ) -> Result<Response<ReplaceCardResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let number = parse_card_number("card_number", &body.card_number)?;
        let fee_id = require_uuid("fee_id", &body.fee_id)?;
        let address = address_of("mailing_address.", body.mailing_address.as_ref())?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let subject = OnceLock::new();
        let result = state
            .idempotency
            .run(&caller.id, "ReplaceCard", request.metadata(), body, || async {
                let (card, _) = self.card_for(&access, &number, None, &subject).await?;
                let (application, old) = state
                    .cards
                    .replace(card.card_number, fee_id, address.clone(), caller.id.clone(), state.clock.stored_now())
                    .await?;
                tracing::info!(
                    application_id = %application.id,
                    replaced_application_id = %old.application_id,
                    partner = %caller.id,
                    "card replacement applied"
                );
                Ok(ReplaceCardResponse {
                    application: Some(application_message(&application)),
                    replaced_card: Some(card_message(&old)),
                })
            })
            .await;
        access.record(&self.state, subject.get().copied(), &result).await;
        Ok(Response::new(result?))
    }

    async fn change_card_pin(
        &self,
        request: Request<ChangeCardPinRequest>,
    ) -> Result<Response<ChangeCardPinResponse>, Status> {
        let body = request.get_ref();
        let number = parse_card_number("card_number", &body.card_number)?;
        let old_pin = parse_pin("old_pin", &body.old_pin)?;
        let new_pin = check_strength("new_pin", &body.new_pin)?;
        let card =
            self.set_pin(&request, PinChange::Change, number, body.holder.as_ref(), Some(old_pin), new_pin).await?;
        Ok(Response::new(ChangeCardPinResponse { card: Some(card) }))
    }

    async fn reset_card_pin(
        &self,
        request: Request<ResetCardPinRequest>,
    ) -> Result<Response<ResetCardPinResponse>, Status> {
        let body = request.get_ref();
        let number = parse_card_number("card_number", &body.card_number)?;
        let new_pin = check_strength("new_pin", &body.new_pin)?;
        let card = self.set_pin(&request, PinChange::Reset, number, body.holder.as_ref(), None, new_pin).await?;
        Ok(Response::new(ResetCardPinResponse { card: Some(card) }))
    }
}
