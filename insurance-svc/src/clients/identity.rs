//! The identity-svc client: API key, trace context on every call, retries on UNAVAILABLE only
//! (every call here is a read, a naturally idempotent resolution, or carries an idempotency key,
//! so a retry is safe).

use std::time::Duration;

use chrono::NaiveDate;

use medins_common::{
    ApiError, ApiResult,
    auth::ON_BEHALF_OF_HEADER,
    peer::{Peer, PeerOptions, traced},
};
use medins_proto::identity::v1::{
    ConsumeSmsChallengeRequest, FacePurpose, FaceSession, GetFaceVerificationRequest, GetPersonFactsRequest,
    GetPersonRequest, GetPublicKeysRequest, ListTokenRevocationsRequest, MatchPersonRequest, PersonView, PublicKey,
    ResolvePersonRequest, SmsPurpose, StartFaceVerificationRequest, StartFaceVerificationResponse, TokenRevocation,
    face_verification_service_client::FaceVerificationServiceClient,
    person_facts_service_client::PersonFactsServiceClient, person_service_client::PersonServiceClient,
    person_token_service_client::PersonTokenServiceClient,
};
use tonic::{Code, Request, Status, metadata::AsciiMetadataValue, transport::Channel};
use uuid::Uuid;

const PERSONS: &str = "medins.identity.v1.PersonService";
const FACES: &str = "medins.identity.v1.FaceVerificationService";
const TOKENS: &str = "medins.identity.v1.PersonTokenService";
const FACTS: &str = "medins.identity.v1.PersonFactsService";

/// How the client reaches identity-svc.
#[derive(Clone, Debug)]
pub struct IdentityClientOptions {
    /// URL, API key (a SERVICE partner key at identity-svc) and per-call deadline.
    pub peer: PeerOptions,
    /// Attempts per call when identity-svc is UNAVAILABLE (at least 1).
    pub attempts: u32,
}

/// A cheap-to-clone client.
#[derive(Clone)]
pub struct IdentityClient {
    peer: Peer,
    persons: PersonServiceClient<Channel>,
    faces: FaceVerificationServiceClient<Channel>,
    tokens: PersonTokenServiceClient<Channel>,
    facts: PersonFactsServiceClient<Channel>,
    attempts: u32,
}

impl IdentityClient {
    /// A client that connects on first use (so insurance-svc starts while identity-svc is down).
    pub fn connect_lazy(options: &IdentityClientOptions) -> anyhow::Result<Self> {
        let peer = Peer::connect_lazy(&options.peer)?;
        Ok(Self {
            persons: PersonServiceClient::new(peer.channel()),
            faces: FaceVerificationServiceClient::new(peer.channel()),
            tokens: PersonTokenServiceClient::new(peer.channel()),
            facts: PersonFactsServiceClient::new(peer.channel()),
            peer,
            attempts: options.attempts.max(1),
        })
    }

    /// Resolves name + ID number to a person (created at identity-svc if new).
    pub async fn resolve_person(
        &self,
        acting_partner: &str,
        name: &str,
        id_number: &str,
        field_prefix: &str,
    ) -> ApiResult<PersonView> {
        let message = ResolvePersonRequest { name: name.to_owned(), id_number: id_number.to_owned() };
        let response = self
            .call(
                &self.persons,
                PERSONS,
                "ResolvePerson",
                field_prefix,
                Some(acting_partner),
                None,
                message,
                |mut client, request| async move { client.resolve_person(request).await },
            )
            .await?;
        response.person.ok_or_else(|| ApiError::internal("identity-svc answered without a person"))
    }

    /// The live person a name + ID number pair is (only `person_id` when given), or `None`
    /// (`PersonService.MatchPerson`): creates nothing at identity-svc, never NAME_MISMATCH. For
    /// checks of who someone is; only flows that must create a person use
    /// [`resolve_person`](Self::resolve_person).
    pub async fn match_person(
        &self,
        acting_partner: &str,
        name: &str,
        id_number: &str,
        person_id: Option<Uuid>,
        field_prefix: &str,
    ) -> ApiResult<Option<Uuid>> {
        let message = MatchPersonRequest {
            name: name.to_owned(),
            id_number: id_number.to_owned(),
            person_id: person_id.map(|id| id.to_string()).unwrap_or_default(),
        };
        let response = self
            .call(
                &self.persons,
                PERSONS,
                "MatchPerson",
                field_prefix,
                Some(acting_partner),
                None,
                message,
                |mut client, request| async move { client.match_person(request).await },
            )
            .await?;
        if !response.matched {
            return Ok(None);
        }
        Uuid::parse_str(&response.person_id)
            .map(Some)
            .map_err(|_| ApiError::internal("identity-svc matched a person without an id"))
    }

    /// A person by id.
    pub async fn get_person(&self, acting_partner: &str, person_id: &str, field_prefix: &str) -> ApiResult<PersonView> {
        let message = GetPersonRequest { person_id: person_id.to_owned() };
        let response = self
            .call(
                &self.persons,
                PERSONS,
                "GetPerson",
                field_prefix,
                Some(acting_partner),
                None,
                message,
                |mut client, request| async move { client.get_person(request).await },
            )
            .await?;
        response.person.ok_or_else(|| ApiError::internal("identity-svc answered without a person"))
    }

    /// A person's birth date, for age rules only (`PersonFactsService.GetPersonFacts`, scope
    /// `service`): partner views never carry it, and nothing here returns it to a partner.
    pub async fn get_person_birth_date(&self, acting_partner: &str, person_id: Uuid) -> ApiResult<NaiveDate> {
        let message = GetPersonFactsRequest { person_id: person_id.to_string() };
        let response = self
            .call(
                &self.facts,
                FACTS,
                "GetPersonFacts",
                "",
                Some(acting_partner),
                None,
                message,
                |mut client, request| async move { client.get_person_facts(request).await },
            )
            .await?;
        response
            .birth_date
            .and_then(|d| NaiveDate::from_ymd_opt(d.year, u32::try_from(d.month).ok()?, u32::try_from(d.day).ok()?))
            .ok_or_else(|| ApiError::internal("identity-svc answered a person without a birth date"))
    }

    /// A face session by id (insurance-svc's SERVICE key may read any session).
    pub async fn get_face_verification(
        &self,
        acting_partner: &str,
        session_id: &str,
        field_prefix: &str,
    ) -> ApiResult<FaceSession> {
        let message = GetFaceVerificationRequest { session_id: session_id.to_owned() };
        let response = self
            .call(
                &self.faces,
                FACES,
                "GetFaceVerification",
                field_prefix,
                Some(acting_partner),
                None,
                message,
                |mut client, request| async move { client.get_face_verification(request).await },
            )
            .await?;
        response.session.ok_or_else(|| ApiError::internal("identity-svc answered without a face session"))
    }

    /// Uses up a verified SMS challenge sent to `person_id`'s phone for `purpose`
    /// (`PersonService.ConsumeSmsChallenge`), on behalf of partner `on_behalf_of` (the partner
    /// that called us: a challenge answers only the partner that asked for it). The call
    /// carries an idempotency key derived from the challenge, so a retry after a lost answer
    /// gets the first success instead of SMS_CODE_INVALID.
    pub async fn consume_sms_challenge(
        &self,
        person_id: &str,
        challenge_id: &str,
        purpose: SmsPurpose,
        on_behalf_of: &str,
        field_prefix: &str,
    ) -> ApiResult<()> {
        let message = ConsumeSmsChallengeRequest {
            person_id: person_id.to_owned(),
            challenge_id: challenge_id.to_owned(),
            purpose: purpose as i32,
            on_behalf_of_partner_id: on_behalf_of.to_owned(),
        };
        let key = format!("consume-sms-{challenge_id}");
        self.call(
            &self.persons,
            PERSONS,
            "ConsumeSmsChallenge",
            field_prefix,
            Some(on_behalf_of),
            Some(&key),
            message,
            |mut client, request| async move { client.consume_sms_challenge(request).await },
        )
        .await?;
        Ok(())
    }

    /// Starts a face session for `person_id` as insurance-svc (a SERVICE partner at
    /// identity-svc), with `reference` (our own id of what it is for), on behalf of partner
    /// `on_behalf_of` (the partner that called us): identity-svc binds the session to that
    /// partner's configured face provider, else to the only one.
    /// `binder`: the person who started the family binding this session checks the member for;
    /// identity-svc lets them read and watch this one session with their own token.
    pub async fn start_face_verification(
        &self,
        person_id: Uuid,
        purpose: FacePurpose,
        reference: &str,
        on_behalf_of: &str,
        binder: Option<Uuid>,
    ) -> ApiResult<StartFaceVerificationResponse> {
        let message = StartFaceVerificationRequest {
            person_id: person_id.to_string(),
            purpose: purpose as i32,
            reference: reference.to_owned(),
            provider_id: String::new(),
            on_behalf_of_partner_id: on_behalf_of.to_owned(),
            binder_person_id: binder.map(|id| id.to_string()).unwrap_or_default(),
        };
        // The reference doubles as the idempotency key: a retry after UNAVAILABLE gets the first
        // session back instead of starting a second one.
        self.call(
            &self.faces,
            FACES,
            "StartFaceVerification",
            "",
            Some(on_behalf_of),
            Some(reference),
            message,
            |mut client, request| async move { client.start_face_verification(request).await },
        )
        .await
    }

    /// The public keys that verify person tokens now.
    pub async fn get_public_keys(&self) -> ApiResult<Vec<PublicKey>> {
        let response = self
            .call(
                &self.tokens,
                TOKENS,
                "GetPublicKeys",
                "",
                None,
                None,
                GetPublicKeysRequest {},
                |mut client, request| async move { client.get_public_keys(request).await },
            )
            .await?;
        Ok(response.keys)
    }

    /// The token revocations of the last token lifetime (a single attempt: the caller polls
    /// every second anyway).
    pub async fn list_token_revocations(&self) -> ApiResult<Vec<TokenRevocation>> {
        let mut client = self.tokens.clone();
        let response = client
            .list_token_revocations(self.peer.request(ListTokenRevocationsRequest {}))
            .await
            .map_err(|status| ApiError::from_remote(&status, ""))?;
        Ok(response.into_inner().revocations)
    }

    /// One call with retries, inside a client span whose context travels in the metadata.
    #[allow(clippy::too_many_arguments)]
    async fn call<C, Req, Resp, F, Fut>(
        &self,
        client: &C,
        service: &'static str,
        method: &'static str,
        field_prefix: &str,
        acting_partner: Option<&str>,
        idempotency_key: Option<&str>,
        message: Req,
        send: F,
    ) -> ApiResult<Resp>
    where
        Req: Clone,
        C: Clone,
        F: Fn(C, Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        // With a key identity-svc answers a retry (after UNAVAILABLE) with the first outcome.
        let key = idempotency_key
            .map(AsciiMetadataValue::try_from)
            .transpose()
            .map_err(|_| ApiError::internal("an idempotency key is not visible ASCII"))?;
        // The partner we act for: identity-svc records the call under it in the person's access
        // history (docs/architecture.md#who-may-call-what), honouring the header only from SERVICE
        // keys like ours.
        let acting = acting_partner
            .map(AsciiMetadataValue::try_from)
            .transpose()
            .map_err(|_| ApiError::internal("a partner id is not visible ASCII"))?;
        let mut delay = Duration::from_millis(50);
        let mut attempt = 1;
        traced(service, method, async {
            loop {
                let mut request = self.peer.request(message.clone());
                if let Some(key) = &key {
                    request.metadata_mut().insert("idempotency-key", key.clone());
                }
                if let Some(acting) = &acting {
                    request.metadata_mut().insert(ON_BEHALF_OF_HEADER, acting.clone());
                }
                match send(client.clone(), request).await {
                    Err(status) if status.code() == Code::Unavailable && attempt < self.attempts => {
                        tracing::warn!(method, attempt, "identity-svc unavailable, retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                        attempt += 1;
                    }
                    outcome => return outcome.map(tonic::Response::into_inner),
                }
            }
        })
        .await
        .map_err(|status| ApiError::from_remote(&status, field_prefix))
    }
}
