//! `medins.identity.v1.PartnerLinkService`: a partner links its own user to a person after an SMS
//! code proved control of the person's phone (docs/architecture.md#identity-svc).

use medins_common::{
    ApiError, ApiResult, Reason, convert::timestamp, error::require_uuid, revocation::RevocationReason, validate,
};
use medins_proto::identity::v1::{
    LinkPartnerAccountRequest, LinkPartnerAccountResponse, ListPartnerLinksRequest, ListPartnerLinksResponse,
    PartnerLink as PartnerLinkView, RevokePartnerLinkRequest, RevokePartnerLinkResponse, UnlinkPartnerAccountRequest,
    UnlinkPartnerAccountResponse, partner_link_service_server::PartnerLinkService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{SharedState, access::CallAccess, person::person_not_found};
use crate::{
    domain::{
        assurance::parse_partner_id,
        link::{PartnerLink, decode_page_token, encode_page_token, parse_partner_user_ref},
        sms::SmsPurpose,
    },
    store::link::LinkCheck,
};

/// Page-token kind of ListPartnerLinks.
const LINKS_PAGE: &str = "links";

/// The PartnerLinkService implementation.
pub struct PartnerLinkApi {
    state: SharedState,
}

fn link_view(link: &PartnerLink) -> PartnerLinkView {
    PartnerLinkView {
        partner_id: link.partner_id.clone(),
        partner_user_ref: link.partner_user_ref.clone(),
        linked_at: Some(timestamp(link.linked_at)),
    }
}

impl PartnerLinkApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    /// Ends `partner_id`'s link with the person and revokes its tokens (one transaction); this
    /// process refuses them at once, the others at their next refresh. Whether a link was live.
    async fn end_link(&self, partner_id: &str, person_id: Uuid, reason: RevocationReason) -> ApiResult<bool> {
        let state = &self.state;
        let revocation = state.links.end_link(partner_id, person_id, state.clock.stored_now(), reason).await?;
        Ok(match revocation {
            Some(revocation) => {
                state.person_tokens.verifier().revocations().add(revocation);
                true
            }
            None => false,
        })
    }

    async fn link(
        &self,
        partner_id: &str,
        person_id: Uuid,
        user_ref: &str,
        challenge_id: Uuid,
    ) -> ApiResult<LinkPartnerAccountResponse> {
        let state = &self.state;
        let person = state.persons.find(person_id).await?.ok_or_else(person_not_found)?;
        // An existing identical link needs no new code (a retry after a lost answer); a
        // conflicting one is refused before the person's code is spent.
        if let LinkCheck::Existing(link) = state.links.check(partner_id, person_id, user_ref).await? {
            return Ok(LinkPartnerAccountResponse { link: Some(link_view(&link)), created: false });
        }
        let phone = person.phone.as_deref().ok_or_else(|| {
            ApiError::of(Reason::PhoneRequired, "the person has no phone on record to send a code to")
        })?;
        // Only a challenge this partner asked for: another partner's is NOT_FOUND.
        state.sms.consume_verified(challenge_id, phone, SmsPurpose::LinkAccount, partner_id).await?;
        let (link, created) = state.links.link(partner_id, person_id, user_ref, state.clock.stored_now()).await?;
        if created {
            tracing::info!(%person_id, partner = partner_id, "partner account linked");
        }
        Ok(LinkPartnerAccountResponse { link: Some(link_view(&link)), created })
    }
}

#[tonic::async_trait]
impl PartnerLinkService for PartnerLinkApi {
    async fn link_partner_account(
        &self,
        request: Request<LinkPartnerAccountRequest>,
    ) -> Result<Response<LinkPartnerAccountResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let result = async {
            // Front doors and operators, by kind (domain::access): the link is what the person's
            // SMS code grants, so no token can exist yet.
            access.decide_for(person_id)?;
            let user_ref = parse_partner_user_ref("partner_user_ref", &body.partner_user_ref)?;
            let challenge_id = require_uuid("challenge_id", &body.challenge_id)?;
            let state = &self.state;
            state
                .idempotency
                .run(&caller.id, "LinkPartnerAccount", request.metadata(), body, || async {
                    Ok(self.link(&caller.id, person_id, &user_ref, challenge_id).await?)
                })
                .await
        }
        .await
        .map(Response::new);
        access.record(&self.state, person_id, &result).await;
        result
    }

    async fn unlink_partner_account(
        &self,
        request: Request<UnlinkPartnerAccountRequest>,
    ) -> Result<Response<UnlinkPartnerAccountResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let person_id = require_uuid("person_id", &request.get_ref().person_id)?;
        let result: Result<_, Status> = async {
            access.decide_for(person_id)?;
            let unlinked = self.end_link(&caller.id, person_id, RevocationReason::Unlinked).await?;
            if unlinked {
                tracing::info!(%person_id, partner = %caller.id, "partner account unlinked");
            }
            Ok(Response::new(UnlinkPartnerAccountResponse { unlinked }))
        }
        .await;
        access.record(&self.state, person_id, &result).await;
        result
    }

    async fn revoke_partner_link(
        &self,
        request: Request<RevokePartnerLinkRequest>,
    ) -> Result<Response<RevokePartnerLinkResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let result: Result<_, Status> = async {
            let partner_id = parse_partner_id("partner_id", &body.partner_id)?;
            access.decide_for(person_id)?;
            self.state
                .idempotency
                .run(&caller.id, "RevokePartnerLink", request.metadata(), body, || async {
                    let revoked = self.end_link(&partner_id, person_id, RevocationReason::RevokedByPerson).await?;
                    if revoked {
                        tracing::info!(%person_id, partner = %partner_id, via = %caller.id, "partner link revoked by the person");
                    }
                    Ok(RevokePartnerLinkResponse { revoked })
                })
                .await
                .map(Response::new)
        }
        .await;
        access.record(&self.state, person_id, &result).await;
        result
    }

    async fn list_partner_links(
        &self,
        request: Request<ListPartnerLinksRequest>,
    ) -> Result<Response<ListPartnerLinksResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let result: Result<_, Status> = async {
            let limit = validate::IDENTITY_LISTS.check("page_size", body.page_size)? as i64;
            let before = decode_page_token("page_token", LINKS_PAGE, &body.page_token)?
                .map(|cursor| Uuid::parse_str(&cursor))
                .transpose()
                .map_err(|_| {
                    ApiError::invalid_field(Reason::InvalidArgument, "page_token", "is not a token this list returned")
                })?;
            access.decide_for(person_id)?;
            // One more than asked tells whether another page follows.
            let mut links = self.state.links.list_live(person_id, &caller.id, before, limit + 1).await?;
            let next_page_token = if links.len() as i64 > limit {
                links.truncate(limit as usize);
                links.last().map(|last| encode_page_token(LINKS_PAGE, &last.id.to_string())).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListPartnerLinksResponse {
                links: links
                    .into_iter()
                    .map(|link| PartnerLinkView {
                        partner_id: link.partner_id,
                        partner_user_ref: link.partner_user_ref.unwrap_or_default(),
                        linked_at: Some(timestamp(link.linked_at)),
                    })
                    .collect(),
                next_page_token,
            }))
        }
        .await;
        access.record(&self.state, person_id, &result).await;
        result
    }
}
