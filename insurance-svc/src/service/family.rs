//! `medins.insurance.v1.FamilyService`, and who may act for a person (the person, an ACTIVE
//! family binder, or an operator) for the calls that allow binders.

use futures::future::join_all;
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::PartnerKind,
    convert::{from_timestamp, timestamp},
    error::{require_enum, require_uuid},
};
use medins_proto::{
    identity::v1::{FacePurpose as IdentityFacePurpose, FaceSessionStatus, PersonView},
    insurance::v1::{
        self as pb, AddFamilyMemberRequest, AddFamilyMemberResponse, BindFamilyMemberAtCounterRequest,
        BindFamilyMemberAtCounterResponse, GetFamilyBindingRequest, GetFamilyBindingResponse,
        ListFamilyBindingReviewsRequest, ListFamilyBindingReviewsResponse, ListFamilyMembersRequest,
        ListFamilyMembersResponse, ListWhoBoundMeRequest, ListWhoBoundMeResponse, RemoveFamilyMemberRequest,
        RemoveFamilyMemberResponse, ReviewFamilyBindingRequest, ReviewFamilyBindingResponse, SetFamilyAidRequest,
        SetFamilyAidResponse, StartCounterOwnerCheckRequest, StartCounterOwnerCheckResponse,
        family_service_server::FamilyService,
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
        card::CardStatus,
        family::{
            self, Admission, Binding, BindingChannel, BindingDocument, BindingParties, BindingStatus, DocumentFacts,
            Relationship, RelationshipProof, Remover, ReviewCursor, admit, asks_authority, check_document,
            check_relationship_age, document_id, insured_member_birth_date, month_key, needs_face_check,
            owner_birth_date, require_not_self, require_owner_named, require_owner_voucher,
        },
        voucher::{age_on, require_insured},
    },
    relationship::{Resident, verdict_or_review},
    store::family::NewBinding,
};

/// The FamilyService implementation.
pub struct FamilyApi {
    state: SharedState,
}

/// A relationship from the wire (after `require_enum`).
pub(crate) fn relationship_of(message: pb::Relationship) -> Relationship {
    match message {
        pb::Relationship::Spouse => Relationship::Spouse,
        pb::Relationship::Child => Relationship::Child,
        pb::Relationship::Parent => Relationship::Parent,
        pb::Relationship::Grandparent => Relationship::Grandparent,
        pb::Relationship::Grandchild => Relationship::Grandchild,
        pb::Relationship::Sibling => Relationship::Sibling,
        pb::Relationship::OtherCloseRelative => Relationship::OtherCloseRelative,
        pb::Relationship::Unspecified => unreachable!("require_enum refuses the zero value"),
    }
}

/// The wire form of a relationship.
pub(crate) fn relationship_message(relationship: Relationship) -> pb::Relationship {
    match relationship {
        Relationship::Spouse => pb::Relationship::Spouse,
        Relationship::Child => pb::Relationship::Child,
        Relationship::Parent => pb::Relationship::Parent,
        Relationship::Grandparent => pb::Relationship::Grandparent,
        Relationship::Grandchild => pb::Relationship::Grandchild,
        Relationship::Sibling => pb::Relationship::Sibling,
        Relationship::OtherCloseRelative => pb::Relationship::OtherCloseRelative,
    }
}

fn status_message(status: BindingStatus) -> pb::BindingStatus {
    match status {
        BindingStatus::PendingFace => pb::BindingStatus::PendingFace,
        BindingStatus::PendingReview => pb::BindingStatus::PendingReview,
        BindingStatus::Active => pb::BindingStatus::Active,
        BindingStatus::Rejected => pb::BindingStatus::Rejected,
        BindingStatus::Expired => pb::BindingStatus::Expired,
        BindingStatus::Removed => pb::BindingStatus::Removed,
    }
}

fn proof_message(proof: Option<RelationshipProof>) -> pb::RelationshipProof {
    match proof {
        None => pb::RelationshipProof::Unspecified,
        Some(RelationshipProof::MemberFace) => pb::RelationshipProof::MemberFace,
        Some(RelationshipProof::Authority) => pb::RelationshipProof::Authority,
        Some(RelationshipProof::OperatorReview) => pb::RelationshipProof::OperatorReview,
        Some(RelationshipProof::WindowAttestation) => pb::RelationshipProof::WindowAttestation,
    }
}

fn channel_message(channel: BindingChannel) -> pb::BindingChannel {
    match channel {
        BindingChannel::Online => pb::BindingChannel::Online,
        BindingChannel::Terminal => pb::BindingChannel::Terminal,
        BindingChannel::HospitalOffice => pb::BindingChannel::HospitalOffice,
        BindingChannel::Window => pb::BindingChannel::Window,
    }
}

/// The persons an add touches, for the audit: the owner, and the member once a binding names
/// them.
fn added_persons(owner: Uuid, binding: Option<&pb::FamilyBinding>) -> Vec<Uuid> {
    let member = binding.and_then(|binding| Uuid::parse_str(&binding.member_person_id).ok());
    std::iter::once(owner).chain(member).collect()
}

fn binding_not_found() -> ApiError {
    ApiError::not_found(Reason::BindingNotFound, "no such family binding")
}

impl FamilyApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    /// The wire form of a binding, with both persons' masked names and the member's age as
    /// identity-svc shows them to partners (`known` saves a call for a view already at hand).
    /// The member's birth date stays here, for the age rules: the view never carries it.
    async fn binding_message(
        &self,
        acting_partner: &str,
        binding: &Binding,
        known: &[&PersonView],
    ) -> ApiResult<pb::FamilyBinding> {
        let view = |person: Uuid| async move {
            let id = person.to_string();
            match known.iter().find(|view| view.person_id == id) {
                Some(view) => Ok((*view).clone()),
                None => self.state.identity.get_person(acting_partner, &id, "").await,
            }
        };
        let (owner, member) =
            futures::future::try_join(view(binding.owner_person_id), view(binding.member_person_id)).await?;
        Ok(pb::FamilyBinding {
            binding_id: binding.id.to_string(),
            owner_person_id: binding.owner_person_id.to_string(),
            member_person_id: binding.member_person_id.to_string(),
            member_masked_name: member.masked_name,
            owner_masked_name: owner.masked_name,
            relationship: relationship_message(binding.relationship) as i32,
            status: status_message(binding.status) as i32,
            member_age: member.age,
            family_aid: binding.family_aid,
            face_session_id: binding.face_session_id.map(|id| id.to_string()).unwrap_or_default(),
            created_at: Some(timestamp(binding.created_at)),
            activated_at: binding.activated_at.map(timestamp),
            ended_at: binding.ended_at.map(timestamp),
            relationship_proof: proof_message(binding.relationship_proof) as i32,
            review_deadline: binding.review_deadline.map(timestamp),
            rejection_reason: binding.rejection_reason.clone().unwrap_or_default(),
            notice_version: binding.notice.as_ref().map(|(version, _)| version.clone()).unwrap_or_default(),
            notice_accepted_at: binding.notice.as_ref().map(|(_, at)| timestamp(*at)),
            channel: channel_message(binding.channel) as i32,
        })
    }

    async fn binding_messages(&self, acting_partner: &str, bindings: &[Binding]) -> ApiResult<Vec<pb::FamilyBinding>> {
        join_all(bindings.iter().map(|binding| self.binding_message(acting_partner, binding, &[])))
            .await
            .into_iter()
            .collect()
    }

    /// A binding the caller may touch under the access table: the rule's standings towards its
    /// owner, else towards its member. A missing binding gets the same refusal as one the caller
    /// has no relationship with (the rule's NOT_FOUND / BINDING_NOT_FOUND). Returns the binding,
    /// the standing and the person (owner or member) it holds towards.
    async fn binding_for(&self, access: &CallAccess, id: Uuid) -> ApiResult<(Binding, Standing, Uuid)> {
        let binding = self.state.family.find(id).await?.ok_or_else(binding_not_found)?;
        let as_owner = access.decide(&self.state, binding.owner_person_id, HandlerFacts::default()).await;
        match as_owner {
            Ok(standing) => Ok((binding.clone(), standing, binding.owner_person_id)),
            Err(refusal) => match access.decide(&self.state, binding.member_person_id, HandlerFacts::default()).await {
                Ok(standing) => Ok((binding.clone(), standing, binding.member_person_id)),
                Err(_) => Err(refusal),
            },
        }
    }

    /// Whether `owner` is present at the calling counter: `number` is a VALID card of the owner,
    /// and `session_id` a FAMILY_BINDING face session of the owner that this counter started
    /// (StartCounterOwnerCheck), PASSED within the last 10 minutes. (That the session serves one
    /// binding only is checked when the binding is written.)
    async fn owner_present_at(
        &self,
        access: &CallAccess,
        owner: Uuid,
        number: String,
        session_id: Uuid,
    ) -> ApiResult<bool> {
        let state = &self.state;
        let card_holds = state
            .cards
            .find_card(number)
            .await?
            .is_some_and(|card| card.status == CardStatus::Valid && card.person_id == owner);
        if !card_holds {
            return Ok(false);
        }
        let session = match state
            .identity
            .get_face_verification(&access.caller.id, &session_id.to_string(), "terminal.owner_face_")
            .await
        {
            Ok(session) => session,
            Err(error) if error.code() == tonic::Code::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let fresh = session
            .finished_at
            .as_ref()
            .and_then(from_timestamp)
            .is_some_and(|finished| state.clock.now() - finished <= COUNTER_FACE_VALIDITY);
        Ok(session.person_id == owner.to_string()
            && session.purpose == IdentityFacePurpose::FamilyBinding as i32
            && session.status == FaceSessionStatus::Passed as i32
            && session.reference.starts_with(&counter_reference_prefix(&access.caller.id))
            && fresh)
    }

    /// Records the call in the access history of each known person (never changes the answer).
    async fn audit<R>(&self, access: &CallAccess, persons: &[Uuid], result: Result<R, Status>) -> Result<R, Status> {
        for person in persons {
            access.record(&self.state, Some(*person), &result).await;
        }
        result
    }

    /// The rules of AddFamilyMember after decoding, in the contract's order, then the write.
    async fn add(
        &self,
        owner: Uuid,
        request: DecodedAdd,
        partner_id: &str,
        presence: Presence,
    ) -> ApiResult<AddFamilyMemberResponse> {
        let channel = presence.channel;
        let window_attested = channel == BindingChannel::Window;
        let state = &self.state;
        // 1. The owner's voucher.
        require_owner_voucher(state.vouchers.status_of(owner).await?.map(|(_, status)| status))?;
        // Who the member is, checked without creating anyone: an unknown pair is no insured
        // member (NOT_INSURED, as for a known person without an account).
        let Some(member) = state
            .identity
            .match_person(partner_id, &request.member_name, &request.member_id_number, None, "member_")
            .await?
        else {
            require_insured(None)?;
            return Err(ApiError::internal("a person without an account passed the insured check"));
        };
        // 2. The member is insured.
        let member_birth = insured_member_birth_date(state.accounts.find_open_by_person(member).await?.as_ref())?;
        // 3-6.
        require_not_self(owner, member)?;
        let today = state.clock.today();
        let month = month_key(today);
        state.family.check_places(owner, member, month.clone()).await?;
        // 7. The relationship fits the ages.
        let owner_view = state.identity.get_person(partner_id, &owner.to_string(), "owner_").await?;
        let member_view = state.identity.get_person(partner_id, &member.to_string(), "member_").await?;
        let owner_birth = owner_birth_date(state.accounts.find_open_by_person(owner).await?.as_ref())?;
        check_relationship_age(request.relationship, owner_birth, member_birth)?;
        // 8. The documents.
        let mut documents = Vec::with_capacity(BindingDocument::ALL.len());
        for (role, id) in BindingDocument::ALL.into_iter().zip(request.documents) {
            let found = match id {
                Some(id) => state.documents.find(id).await?.as_ref().map(DocumentFacts::from),
                None => None,
            };
            let parties = BindingParties { owner, member, relationship: request.relationship };
            documents.push(check_document(role, id, found, parties)?);
        }
        let [commitment_letter_id, owner_register_id, member_register_id] = documents[..] else {
            return Err(ApiError::internal("a binding takes exactly three documents"));
        };
        // 9. The relationship: a member under 16 cannot consent with their own face, so the
        // relationship is proven first (domain::family::admit).
        let needs_face = needs_face_check(member_birth, today);
        let verdict = match (&request.owner, asks_authority(needs_face, window_attested)) {
            (Some(owner_resident), true) => {
                let matched = state
                    .identity
                    .match_person(partner_id, &owner_resident.name, &owner_resident.id_number, None, "owner_")
                    .await?;
                require_owner_named(matched, owner)?;
                let member_resident = Resident {
                    name: request.member_name.clone(),
                    id_number: request.member_id_number.trim().to_ascii_uppercase(),
                };
                Some(
                    verdict_or_review(
                        state.relationships.as_ref(),
                        owner_resident,
                        &member_resident,
                        request.relationship,
                    )
                    .await,
                )
            }
            _ => None,
        };
        let admission = admit(needs_face, window_attested, verdict)?;
        // From 16: the member's face check, started now; the binding waits for its outcome.
        let id = Uuid::now_v7();
        let face = if admission == Admission::PendingFace {
            let started = state
                .identity
                // The binder reads and watches this session with their own token: the member
                // (an elder) may have no phone of their own.
                .start_face_verification(
                    member,
                    IdentityFacePurpose::FamilyBinding,
                    &id.to_string(),
                    partner_id,
                    Some(owner),
                )
                .await?;
            let session = started.session.ok_or_else(|| ApiError::internal("identity-svc started no session"))?;
            let session_id = Uuid::parse_str(&session.session_id)
                .map_err(|_| ApiError::internal("identity-svc started a session without an id"))?;
            Some((session_id, started.liveness_challenge, started.expires_at))
        } else {
            None
        };
        let binding = state
            .family
            .add(
                NewBinding {
                    id,
                    owner_person_id: owner,
                    member_person_id: member,
                    relationship: request.relationship,
                    member_birth_date: member_birth,
                    face_session_id: face.as_ref().map(|(session_id, _, _)| *session_id),
                    commitment_letter_id,
                    owner_register_id,
                    member_register_id,
                    month,
                    partner_id: partner_id.to_owned(),
                    admission,
                    review_period: state.family_review_period,
                    notice_version: request.notice_version,
                    channel,
                    owner_face_session_id: presence.owner_face_session_id,
                    attested_by: presence.attested_by,
                },
                state.clock.stored_now(),
            )
            .await?;
        tracing::info!(
            binding_id = %binding.id,
            owner_person_id = %owner,
            member_person_id = %member,
            status = binding.status.as_str(),
            partner = partner_id,
            "family member bound"
        );
        let message = self.binding_message(partner_id, &binding, &[&owner_view, &member_view]).await?;
        Ok(AddFamilyMemberResponse {
            binding: Some(message),
            face_check: face.map(|(session_id, liveness_challenge, expires_at)| pb::MemberFaceCheck {
                session_id: session_id.to_string(),
                liveness_challenge,
                expires_at,
            }),
        })
    }
}

/// How the owner is present at a binding (online: through their token).
struct Presence {
    channel: BindingChannel,
    /// Terminal, hospital office: the owner's PASSED face session there.
    owner_face_session_id: Option<Uuid>,
    /// Window: the attesting operator's staff id.
    attested_by: Option<String>,
}

impl Presence {
    fn online() -> Self {
        Presence { channel: BindingChannel::Online, owner_face_session_id: None, attested_by: None }
    }
}

/// How long a PASSED face session at a counter proves the owner's presence.
const COUNTER_FACE_VALIDITY: chrono::Duration = chrono::Duration::minutes(10);

/// The reference of the owner's face session started by counter `partner` (checked when the
/// session is used, so a session proves presence only at the counter that started it).
fn counter_reference_prefix(partner: &str) -> String {
    format!("counter-owner:{partner}:")
}

fn owner_not_present() -> ApiError {
    ApiError::new(
        tonic::Code::PermissionDenied,
        Reason::OwnerNotPresent,
        "the owner's social security card and a passed face check at this counter are required",
    )
}

/// A card number as read from the card: 1-32 ASCII digits (INVALID_ARGUMENT otherwise).
fn card_number(field: &str, text: &str) -> ApiResult<String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "1-32 digits"));
    }
    Ok(text.to_owned())
}

/// A window attestation as sent: a staff id of 1-64 visible ASCII characters and all six
/// originals seen (INVALID_ARGUMENT otherwise). Returns the staff id.
fn window_attestation(window: &pb::WindowAttestation) -> ApiResult<String> {
    let staff = window.staff_id.trim();
    if staff.is_empty() || staff.len() > 64 || !staff.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "window.staff_id",
            "1-64 visible ASCII characters",
        ));
    }
    let all = [
        pb::OriginalDocument::OwnerIdCard,
        pb::OriginalDocument::MemberIdCard,
        pb::OriginalDocument::OwnerSocialSecurityCard,
        pb::OriginalDocument::MemberSocialSecurityCard,
        pb::OriginalDocument::OwnerHouseholdRegister,
        pb::OriginalDocument::MemberHouseholdRegister,
    ];
    if !all.iter().all(|original| window.originals_seen.contains(&(*original as i32))) {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "window.originals_seen",
            "both persons' ID cards, social security cards and household register pages must be seen",
        ));
    }
    Ok(staff.to_owned())
}

/// An AddFamilyMember request, validated.
struct DecodedAdd {
    member_name: String,
    member_id_number: String,
    relationship: Relationship,
    documents: [Option<Uuid>; 3],
    notice_version: &'static str,
    /// The owner's own name and ID number, for the relationship authority only.
    owner: Option<Resident>,
}

fn decode_add(body: &AddFamilyMemberRequest) -> ApiResult<DecodedAdd> {
    let member_name = family::member_name(&body.member_name)?;
    if body.member_id_number.is_empty() {
        return Err(ApiError::invalid_field(Reason::InvalidIdNumber, "member_id_number", "required"));
    }
    let relationship = relationship_of(require_enum::<pb::Relationship>("relationship", body.relationship)?);
    let texts = [
        &body.commitment_letter_document_id,
        &body.owner_household_register_document_id,
        &body.member_household_register_document_id,
    ];
    let mut documents = [None; 3];
    for ((slot, role), text) in documents.iter_mut().zip(BindingDocument::ALL).zip(texts) {
        *slot = document_id(role, text)?;
    }
    let owner = match (body.owner_name.is_empty(), body.owner_id_number.is_empty()) {
        (true, true) => None,
        (false, false) => Some(Resident {
            name: medins_common::name::require_name("owner_name", &body.owner_name)?,
            id_number: body.owner_id_number.trim().to_ascii_uppercase(),
        }),
        (true, false) => {
            return Err(ApiError::invalid_field(Reason::InvalidName, "owner_name", "required with owner_id_number"));
        }
        (false, true) => {
            return Err(ApiError::invalid_field(
                Reason::InvalidIdNumber,
                "owner_id_number",
                "required with owner_name",
            ));
        }
    };
    let notice_version = family::accepted_notice_version(&body.accepted_notice_version)?;
    Ok(DecodedAdd {
        member_name,
        member_id_number: body.member_id_number.clone(),
        relationship,
        documents,
        notice_version,
        owner,
    })
}

#[tonic::async_trait]
impl FamilyService for FamilyApi {
    async fn add_family_member(
        &self,
        request: Request<AddFamilyMemberRequest>,
    ) -> Result<Response<AddFamilyMemberResponse>, Status> {
        let body = request.get_ref();
        let owner = require_uuid("owner_person_id", &body.owner_person_id)?;
        let decoded = decode_add(body)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        access.decide(state, owner, HandlerFacts::default()).await?;
        let result = state
            .idempotency
            .run(&access.caller.id, "AddFamilyMember", request.metadata(), body, || async {
                Ok(self.add(owner, decoded, &access.caller.id, Presence::online()).await?)
            })
            .await;
        let persons = added_persons(owner, result.as_ref().ok().and_then(|response| response.binding.as_ref()));
        Ok(Response::new(self.audit(&access, &persons, result).await?))
    }

    async fn get_family_binding(
        &self,
        request: Request<GetFamilyBindingRequest>,
    ) -> Result<Response<GetFamilyBindingResponse>, Status> {
        let id = require_uuid("binding_id", &request.get_ref().binding_id)?;
        let access = CallAccess::begin(&self.state, &request).await?;
        let binding = self.state.family.find(id).await?.ok_or_else(binding_not_found)?;
        let persons = [binding.owner_person_id, binding.member_person_id];
        let result = async {
            self.binding_for(&access, id).await?;
            Ok(GetFamilyBindingResponse {
                binding: Some(self.binding_message(&access.caller.id, &binding, &[]).await?),
            })
        }
        .await
        .map_err(|error: ApiError| Status::from(error));
        Ok(Response::new(self.audit(&access, &persons, result).await?))
    }

    async fn list_family_members(
        &self,
        request: Request<ListFamilyMembersRequest>,
    ) -> Result<Response<ListFamilyMembersResponse>, Status> {
        let body = request.get_ref();
        let owner = require_uuid("owner_person_id", &body.owner_person_id)?;
        let access = CallAccess::begin(&self.state, &request).await?;
        access.decide(&self.state, owner, HandlerFacts::default()).await?;
        let result = async {
            let bindings = self.state.family.list_by_owner(owner, body.include_ended).await?;
            Ok(ListFamilyMembersResponse { bindings: self.binding_messages(&access.caller.id, &bindings).await? })
        }
        .await
        .map_err(|error: ApiError| Status::from(error));
        Ok(Response::new(self.audit(&access, &[owner], result).await?))
    }

    async fn list_who_bound_me(
        &self,
        request: Request<ListWhoBoundMeRequest>,
    ) -> Result<Response<ListWhoBoundMeResponse>, Status> {
        let member = require_uuid("member_person_id", &request.get_ref().member_person_id)?;
        let access = CallAccess::begin(&self.state, &request).await?;
        access.decide(&self.state, member, HandlerFacts::default()).await?;
        let result = async {
            let bindings = self.state.family.list_by_member(member).await?;
            Ok(ListWhoBoundMeResponse { bindings: self.binding_messages(&access.caller.id, &bindings).await? })
        }
        .await
        .map_err(|error: ApiError| Status::from(error));
        Ok(Response::new(self.audit(&access, &[member], result).await?))
    }

    async fn remove_family_member(
        &self,
        request: Request<RemoveFamilyMemberRequest>,
    ) -> Result<Response<RemoveFamilyMemberResponse>, Status> {
        let body = request.get_ref();
        let id = require_uuid("binding_id", &body.binding_id)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let binding = state.family.find(id).await?.ok_or_else(binding_not_found)?;
        let persons = [binding.owner_person_id, binding.member_person_id];
        let result = async {
            let (binding, standing, person) = self.binding_for(&access, id).await?;
            let by = match standing {
                Standing::Person => {
                    let age = age_on(binding.member_birth_date, state.clock.today());
                    family::remover(binding.owner_person_id, binding.member_person_id, person, age)?
                        .ok_or_else(binding_not_found)?
                }
                _ => Remover::Ops,
            };
            let caller = &access.caller.id;
            state
                .idempotency
                .run(caller, "RemoveFamilyMember", request.metadata(), body, || async {
                    let (removed, member_voucher_suspended) =
                        state.family.remove(id, by, state.clock.stored_now()).await?;
                    tracing::info!(
                        binding_id = %id,
                        by = by.as_str(),
                        member_voucher_suspended,
                        partner = %caller,
                        "family binding removed"
                    );
                    Ok(RemoveFamilyMemberResponse {
                        binding: Some(self.binding_message(&access.caller.id, &removed, &[]).await?),
                        member_voucher_suspended,
                    })
                })
                .await
        }
        .await;
        Ok(Response::new(self.audit(&access, &persons, result).await?))
    }

    async fn set_family_aid(
        &self,
        request: Request<SetFamilyAidRequest>,
    ) -> Result<Response<SetFamilyAidResponse>, Status> {
        let body = request.get_ref();
        let id = require_uuid("binding_id", &body.binding_id)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let binding = state.family.find(id).await?.ok_or_else(binding_not_found)?;
        let persons = [binding.owner_person_id, binding.member_person_id];
        let result = async {
            let (binding, standing, person) = self.binding_for(&access, id).await?;
            family::require_aid_switcher(binding.owner_person_id, (standing == Standing::Person).then_some(person))?;
            let enabled = body.enabled;
            let caller = &access.caller.id;
            state
                .idempotency
                .run(caller, "SetFamilyAid", request.metadata(), body, || async {
                    // Family aid policy (README, Configuration): the binder's scheme must pay for
                    // this relationship; the same decision Settle asks (domain::settlement).
                    let aid_policy = state.settlements.policy().family_aid().clone();
                    let binding = state.family.set_family_aid(id, enabled, aid_policy).await?;
                    tracing::info!(binding_id = %id, enabled, partner = %caller, "family aid set");
                    Ok(SetFamilyAidResponse {
                        binding: Some(self.binding_message(&access.caller.id, &binding, &[]).await?),
                    })
                })
                .await
        }
        .await;
        Ok(Response::new(self.audit(&access, &persons, result).await?))
    }

    async fn start_counter_owner_check(
        &self,
        request: Request<StartCounterOwnerCheckRequest>,
    ) -> Result<Response<StartCounterOwnerCheckResponse>, Status> {
        let number = card_number("owner_card_number", &request.get_ref().owner_card_number)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        // Only a VALID card starts a check; any other number gets the refusal an unknown one
        // gets, and no person is named.
        let card = state.cards.find_card(number).await?.filter(|card| card.status == CardStatus::Valid);
        let Some(card) = card else { return Err(owner_not_present().into()) };
        let holder = card.person_id;
        let result = async {
            // The card is in the counter's reader: that is the standing to start the holder's
            // face check (only the face check then proves the holder is the one present).
            access.decide(state, holder, HandlerFacts { present: true, ..HandlerFacts::default() }).await?;
            let reference = format!("{}{}", counter_reference_prefix(&access.caller.id), Uuid::now_v7());
            let started = state
                .identity
                .start_face_verification(
                    holder,
                    IdentityFacePurpose::FamilyBinding,
                    &reference,
                    &access.caller.id,
                    None,
                )
                .await?;
            let session = started.session.ok_or_else(|| ApiError::internal("identity-svc started no session"))?;
            Ok(StartCounterOwnerCheckResponse {
                face_check: Some(pb::MemberFaceCheck {
                    session_id: session.session_id,
                    liveness_challenge: started.liveness_challenge,
                    expires_at: started.expires_at,
                }),
            })
        }
        .await
        .map_err(|error: ApiError| Status::from(error));
        Ok(Response::new(self.audit(&access, &[holder], result).await?))
    }

    async fn bind_family_member_at_counter(
        &self,
        request: Request<BindFamilyMemberAtCounterRequest>,
    ) -> Result<Response<BindFamilyMemberAtCounterResponse>, Status> {
        let body = request.get_ref();
        let inner = body
            .binding
            .as_ref()
            .ok_or_else(|| ApiError::invalid_field(Reason::InvalidArgument, "binding", "required"))?;
        let owner = require_uuid("binding.owner_person_id", &inner.owner_person_id)?;
        let decoded = decode_add(inner)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        use pb::bind_family_member_at_counter_request::Presence as Sent;
        let (presence, present) = match (access.caller.kind, &body.presence) {
            (PartnerKind::Terminal | PartnerKind::Hospital, Some(Sent::Terminal(terminal))) => {
                let number = card_number("terminal.owner_card_number", &terminal.owner_card_number)?;
                let session_id = require_uuid("terminal.owner_face_session_id", &terminal.owner_face_session_id)?;
                let present = self.owner_present_at(&access, owner, number, session_id).await?;
                let channel = if access.caller.kind == PartnerKind::Terminal {
                    BindingChannel::Terminal
                } else {
                    BindingChannel::HospitalOffice
                };
                (Presence { channel, owner_face_session_id: Some(session_id), attested_by: None }, present)
            }
            (PartnerKind::Ops, Some(Sent::Window(window))) => {
                let staff = window_attestation(window)?;
                (
                    Presence { channel: BindingChannel::Window, owner_face_session_id: None, attested_by: Some(staff) },
                    false,
                )
            }
            _ => {
                return Err(ApiError::new(
                    tonic::Code::PermissionDenied,
                    Reason::PartnerKindNotAllowed,
                    "terminals and hospital offices send `terminal`, operators at the window send `window`",
                )
                .into());
            }
        };
        let result = async {
            access.decide(state, owner, HandlerFacts { present, ..HandlerFacts::default() }).await?;
            let caller = &access.caller.id;
            state
                .idempotency
                .run(caller, "BindFamilyMemberAtCounter", request.metadata(), body, || async {
                    let added = self.add(owner, decoded, caller, presence).await?;
                    Ok(BindFamilyMemberAtCounterResponse { binding: added.binding, face_check: added.face_check })
                })
                .await
        }
        .await;
        let persons = added_persons(owner, result.as_ref().ok().and_then(|response| response.binding.as_ref()));
        Ok(Response::new(self.audit(&access, &persons, result).await?))
    }

    async fn list_family_binding_reviews(
        &self,
        request: Request<ListFamilyBindingReviewsRequest>,
    ) -> Result<Response<ListFamilyBindingReviewsResponse>, Status> {
        let body = request.get_ref();
        let limit = family::page_size(body.page_size)?;
        let after = match body.page_token.trim() {
            "" => None,
            token => Some(ReviewCursor::decode(token)?),
        };
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let bindings = state
            .family
            .list_pending_reviews(after.map(|cursor| (cursor.deadline, cursor.binding_id)), limit + 1)
            .await?;
        let more = bindings.len() as i64 > limit;
        let page = &bindings[..bindings.len().min(limit as usize)];
        let mut reviews = Vec::with_capacity(page.len());
        for binding in page {
            // Every listed binding touches both persons: each is asked of the table and recorded.
            let result = async {
                access.decide(state, binding.owner_person_id, HandlerFacts::default()).await?;
                Ok(pb::FamilyBindingReview {
                    binding: Some(self.binding_message(&access.caller.id, binding, &[]).await?),
                    commitment_letter_document_id: binding.commitment_letter_id.to_string(),
                    owner_household_register_document_id: binding.owner_register_id.to_string(),
                    member_household_register_document_id: binding.member_register_id.to_string(),
                })
            }
            .await
            .map_err(|error: ApiError| Status::from(error));
            reviews.push(self.audit(&access, &[binding.owner_person_id, binding.member_person_id], result).await?);
        }
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => last
                .review_deadline
                .map(|deadline| ReviewCursor { deadline, binding_id: last.id }.encode())
                .unwrap_or_default(),
            _ => String::new(),
        };
        Ok(Response::new(ListFamilyBindingReviewsResponse { reviews, next_page_token }))
    }

    async fn review_family_binding(
        &self,
        request: Request<ReviewFamilyBindingRequest>,
    ) -> Result<Response<ReviewFamilyBindingResponse>, Status> {
        let body = request.get_ref();
        let id = require_uuid("binding_id", &body.binding_id)?;
        let approve = match require_enum::<pb::ReviewDecision>("decision", body.decision)? {
            pb::ReviewDecision::Approve => true,
            pb::ReviewDecision::Reject => false,
            pb::ReviewDecision::Unspecified => unreachable!("require_enum refuses the zero value"),
        };
        let decision = family::review_decision(approve, &body.rejection_reason)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let binding = state.family.find(id).await?.ok_or_else(binding_not_found)?;
        let persons = [binding.owner_person_id, binding.member_person_id];
        let result = async {
            self.binding_for(&access, id).await?;
            let caller = &access.caller.id;
            state
                .idempotency
                .run(caller, "ReviewFamilyBinding", request.metadata(), body, || async {
                    let reviewed = state.family.review(id, decision, caller.clone(), state.clock.stored_now()).await?;
                    tracing::info!(
                        binding_id = %id,
                        status = reviewed.status.as_str(),
                        reviewer = %caller,
                        "family binding reviewed"
                    );
                    Ok(ReviewFamilyBindingResponse {
                        binding: Some(self.binding_message(&access.caller.id, &reviewed, &[]).await?),
                    })
                })
                .await
        }
        .await;
        Ok(Response::new(self.audit(&access, &persons, result).await?))
    }
}
