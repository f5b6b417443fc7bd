//! `medins.insurance.v1.FamilyService`, and who may act for a person (the person, an ACTIVE
//! family binder, or an operator) for the calls that allow binders.

use futures::future::join_all;
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::Caller,
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::{
    identity::v1::{FacePurpose as IdentityFacePurpose, PersonView},
    insurance::v1::{
        self as pb, AddFamilyMemberRequest, AddFamilyMemberResponse, GetFamilyBindingRequest, GetFamilyBindingResponse,
        ListFamilyMembersRequest, ListFamilyMembersResponse, ListWhoBoundMeRequest, ListWhoBoundMeResponse,
        RemoveFamilyMemberRequest, RemoveFamilyMemberResponse, SetFamilyAidRequest, SetFamilyAidResponse,
        family_service_server::FamilyService,
    },
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::SharedState;
use crate::{
    domain::{
        family::{
            self, BindingDocument, BindingParties, BindingStatus, DocumentFacts, Relationship, Remover, check_document,
            check_relationship_age, document_id, month_key, needs_face_check, require_not_self,
        },
        voucher::{VoucherStatus, age_on, require_insured},
    },
    store::family::{Binding, NewBinding},
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
        BindingStatus::Active => pb::BindingStatus::Active,
        BindingStatus::Rejected => pb::BindingStatus::Rejected,
        BindingStatus::Expired => pb::BindingStatus::Expired,
        BindingStatus::Removed => pb::BindingStatus::Removed,
    }
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
        })
    }

    async fn binding_messages(&self, acting_partner: &str, bindings: &[Binding]) -> ApiResult<Vec<pb::FamilyBinding>> {
        join_all(bindings.iter().map(|binding| self.binding_message(acting_partner, binding, &[])))
            .await
            .into_iter()
            .collect()
    }

    /// A binding the caller may see: its owner's or member's token, or an operator. Anyone
    /// else is told it does not exist. Returns it with the token subject (`None`: operator).
    async fn visible_binding<T>(&self, request: &Request<T>, id: Uuid) -> ApiResult<(Binding, Option<Uuid>)> {
        let subject = self.state.person_tokens.claims(request).await?.map(|claims| claims.person_id);
        let binding = self.state.family.find(id).await?.ok_or_else(binding_not_found)?;
        match subject {
            Some(subject) if subject != binding.owner_person_id && subject != binding.member_person_id => {
                Err(binding_not_found())
            }
            _ => Ok((binding, subject)),
        }
    }

    /// The rules of AddFamilyMember after decoding, in the contract's order, then the write.
    async fn add(&self, owner: Uuid, request: DecodedAdd, partner_id: &str) -> ApiResult<AddFamilyMemberResponse> {
        let state = &self.state;
        // 1. The owner's voucher.
        match state.vouchers.status_of(owner).await? {
            Some((_, VoucherStatus::Active)) => {}
            _ => {
                return Err(ApiError::failed_precondition(
                    Reason::VoucherNotActive,
                    "the owner's voucher is not active: activate it first",
                ));
            }
        }
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
        let member_account = state.accounts.find_open_by_person(member).await?;
        require_insured(member_account.as_ref().map(|account| account.status))?;
        let member_birth = member_account
            .map(|account| account.birth_date)
            .ok_or_else(|| ApiError::internal("an insured member without an open account"))?;
        // 3-6.
        require_not_self(owner, member)?;
        let today = state.clock.today();
        let month = month_key(today);
        state.family.check_places(owner, member, month.clone()).await?;
        // 7. The relationship fits the ages.
        let owner_view = state.identity.get_person(partner_id, &owner.to_string(), "owner_").await?;
        let member_view = state.identity.get_person(partner_id, &member.to_string(), "member_").await?;
        let owner_account = state.accounts.find_open_by_person(owner).await?;
        let owner_birth = owner_account.map(|account| account.birth_date).ok_or_else(|| {
            ApiError::failed_precondition(Reason::NotInsured, "the owner has no open insured account")
        })?;
        check_relationship_age(request.relationship, owner_birth, member_birth)?;
        // 8. The documents.
        let mut documents = Vec::with_capacity(BindingDocument::ALL.len());
        for (role, id) in BindingDocument::ALL.into_iter().zip(request.documents) {
            let found = match id {
                Some(id) => state.documents.find(id).await?.map(|document| DocumentFacts {
                    owner: document.owner_person_id,
                    kind: document.kind,
                    subject: document.subject_person_id,
                    relationship: document.relationship,
                }),
                None => None,
            };
            let parties = BindingParties { owner, member, relationship: request.relationship };
            documents.push(check_document(role, id, found, parties)?);
        }
        let [commitment_letter_id, owner_register_id, member_register_id] = documents[..] else {
            return Err(ApiError::internal("a binding takes exactly three documents"));
        };
        // From 16: the member's face check, started now; the binding waits for its outcome.
        let id = Uuid::now_v7();
        let face = if needs_face_check(member_birth, today) {
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

/// An AddFamilyMember request, validated.
struct DecodedAdd {
    member_name: String,
    member_id_number: String,
    relationship: Relationship,
    documents: [Option<Uuid>; 3],
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
    Ok(DecodedAdd { member_name, member_id_number: body.member_id_number.clone(), relationship, documents })
}

#[tonic::async_trait]
impl FamilyService for FamilyApi {
    async fn add_family_member(
        &self,
        request: Request<AddFamilyMemberRequest>,
    ) -> Result<Response<AddFamilyMemberResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let owner = require_uuid("owner_person_id", &body.owner_person_id)?;
        let decoded = decode_add(body)?;
        let state = &self.state;
        state.person_tokens.authorize(&request, owner).await?;
        let response = state
            .idempotency
            .run(&caller.id, "AddFamilyMember", request.metadata(), body, || async {
                Ok(self.add(owner, decoded, &caller.id).await?)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_family_binding(
        &self,
        request: Request<GetFamilyBindingRequest>,
    ) -> Result<Response<GetFamilyBindingResponse>, Status> {
        let caller = Caller::of(&request)?;
        let id = require_uuid("binding_id", &request.get_ref().binding_id)?;
        let (binding, _) = self.visible_binding(&request, id).await?;
        Ok(Response::new(GetFamilyBindingResponse {
            binding: Some(self.binding_message(&caller.id, &binding, &[]).await?),
        }))
    }

    async fn list_family_members(
        &self,
        request: Request<ListFamilyMembersRequest>,
    ) -> Result<Response<ListFamilyMembersResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let owner = require_uuid("owner_person_id", &body.owner_person_id)?;
        self.state.person_tokens.authorize(&request, owner).await?;
        let bindings = self.state.family.list_by_owner(owner, body.include_ended).await?;
        Ok(Response::new(ListFamilyMembersResponse { bindings: self.binding_messages(&caller.id, &bindings).await? }))
    }

    async fn list_who_bound_me(
        &self,
        request: Request<ListWhoBoundMeRequest>,
    ) -> Result<Response<ListWhoBoundMeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let member = require_uuid("member_person_id", &request.get_ref().member_person_id)?;
        self.state.person_tokens.authorize(&request, member).await?;
        let bindings = self.state.family.list_by_member(member).await?;
        Ok(Response::new(ListWhoBoundMeResponse { bindings: self.binding_messages(&caller.id, &bindings).await? }))
    }

    async fn remove_family_member(
        &self,
        request: Request<RemoveFamilyMemberRequest>,
    ) -> Result<Response<RemoveFamilyMemberResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = require_uuid("binding_id", &body.binding_id)?;
        let state = &self.state;
        let (binding, subject) = self.visible_binding(&request, id).await?;
        let by = match subject {
            None => Remover::Ops,
            Some(subject) => {
                let age = age_on(binding.member_birth_date, state.clock.today());
                family::remover(binding.owner_person_id, binding.member_person_id, subject, age)?
                    .ok_or_else(binding_not_found)?
            }
        };
        let response = state
            .idempotency
            .run(&caller.id, "RemoveFamilyMember", request.metadata(), body, || async {
                let (removed, member_voucher_suspended) = state.family.remove(id, by, state.clock.stored_now()).await?;
                tracing::info!(
                    binding_id = %id,
                    by = by.as_str(),
                    member_voucher_suspended,
                    partner = %caller.id,
                    "family binding removed"
                );
                Ok(RemoveFamilyMemberResponse {
                    binding: Some(self.binding_message(&caller.id, &removed, &[]).await?),
                    member_voucher_suspended,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn set_family_aid(
        &self,
        request: Request<SetFamilyAidRequest>,
    ) -> Result<Response<SetFamilyAidResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = require_uuid("binding_id", &body.binding_id)?;
        let state = &self.state;
        let (binding, subject) = self.visible_binding(&request, id).await?;
        if subject.is_some_and(|subject| subject != binding.owner_person_id) {
            return Err(ApiError::new(
                tonic::Code::PermissionDenied,
                Reason::PersonTokenInvalid,
                "only the binder switches family aid",
            )
            .into());
        }
        let enabled = body.enabled;
        let response = state
            .idempotency
            .run(&caller.id, "SetFamilyAid", request.metadata(), body, || async {
                // Family aid policy (README, Configuration): the binder's scheme must pay for
                // this relationship; the same decision Settle asks (domain::settlement).
                let aid_policy = state.settlements.policy().family_aid().clone();
                let binding = state.family.set_family_aid(id, enabled, aid_policy).await?;
                tracing::info!(binding_id = %id, enabled, partner = %caller.id, "family aid set");
                Ok(SetFamilyAidResponse { binding: Some(self.binding_message(&caller.id, &binding, &[]).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }
}
