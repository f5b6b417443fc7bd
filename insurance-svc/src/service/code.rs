//! `medins.insurance.v1.CodeService`: payment codes issued to the holder's app and verified once
//! at a hospital or pharmacy counter.
//!
//! VerifyCode is the hot path of the platform: the signature is checked before anything else
//! (no database work for a forged code), then one transaction reads the voucher and account
//! (one join) and inserts the visit, and the holder's masked details come from an in-process
//! cache (60 s) in front of identity-svc, warmed when the code is issued.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use medins_common::{
    ApiError, Reason,
    auth::{Caller, PartnerKind},
    convert::timestamp,
    error::require_uuid,
};
use medins_proto::{
    identity::v1::Sex,
    insurance::v1::{
        self as pb, CodeHolder, CodeKey, GetCodeKeysRequest, GetCodeKeysResponse, IssueCodeRequest, IssueCodeResponse,
        OpenVisitWithCardRequest, OpenVisitWithCardResponse, VerifyCodeRequest, VerifyCodeResponse,
        code_service_server::CodeService,
    },
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    SharedState,
    access::{CallAccess, HandlerFacts},
};
use crate::{
    clients::identity::IdentityClient,
    domain::{
        access,
        account::{AccountStatus, Scheme},
        card::{ActivationChannel, CardView, parse_card_number},
        card_pin::{card_or_pin_wrong, parse_pin, pin_locked},
        code::CODE_TEXT_LEN,
        qr::qr_png,
        visit::{CardUse, Redemption},
        voucher::active_voucher,
    },
    service::card::{PinCheck, card_message_as, check_pin, counted_lookup},
    store::Audited,
};

/// What the counter is shown of a holder, from identity-svc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolderFacts {
    /// Masked name.
    pub masked_name: String,
    /// `MALE`, `FEMALE` or empty.
    pub sex: String,
    /// The age identity-svc shows partners (it changes on 1 January only); 0 if unknown.
    pub age: i32,
}

/// Holder facts by person id for a short time, so a verification usually needs no call to
/// identity-svc. Bounded; the data is masked already.
#[derive(Debug)]
pub struct HolderCache {
    entries: Mutex<HashMap<Uuid, (Instant, HolderFacts)>>,
    ttl: Duration,
    capacity: usize,
}

impl HolderCache {
    /// A cache keeping entries for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), ttl, capacity: capacity.max(1) }
    }

    fn cached(&self, person_id: Uuid) -> Option<HolderFacts> {
        let entries = self.entries.lock().expect("holder cache lock");
        entries.get(&person_id).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, facts)| facts.clone())
    }

    fn remember(&self, person_id: Uuid, facts: HolderFacts) {
        let mut entries = self.entries.lock().expect("holder cache lock");
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(person_id, (Instant::now(), facts));
    }

    /// The holder's facts, from the cache or identity-svc.
    pub async fn get(
        &self,
        acting_partner: &str,
        identity: &IdentityClient,
        person_id: Uuid,
    ) -> Result<HolderFacts, ApiError> {
        if let Some(facts) = self.cached(person_id) {
            return Ok(facts);
        }
        let person = identity.get_person(acting_partner, &person_id.to_string(), "").await?;
        let facts = HolderFacts {
            masked_name: person.masked_name,
            sex: match Sex::try_from(person.sex) {
                Ok(Sex::Male) => "MALE".into(),
                Ok(Sex::Female) => "FEMALE".into(),
                _ => String::new(),
            },
            age: person.age,
        };
        self.remember(person_id, facts.clone());
        Ok(facts)
    }

    /// Fetches the holder's facts in the background unless cached (IssueCode: the counter will
    /// ask within the minute).
    pub fn warm(self: &std::sync::Arc<Self>, acting_partner: &str, identity: &IdentityClient, person_id: Uuid) {
        if self.cached(person_id).is_some() {
            return;
        }
        let (cache, identity, acting_partner) = (self.clone(), identity.clone(), acting_partner.to_owned());
        tokio::spawn(async move {
            if let Err(error) = cache.get(&acting_partner, &identity, person_id).await {
                tracing::debug!(%error, "holder facts not prefetched");
            }
        });
    }
}

/// The CodeService implementation.
pub struct CodeApi {
    state: SharedState,
}

impl CodeApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

fn scheme_message(scheme: Scheme) -> pb::Scheme {
    match scheme {
        Scheme::Employee => pb::Scheme::Employee,
        Scheme::Resident => pb::Scheme::Resident,
    }
}

fn account_status_message(status: AccountStatus) -> pb::AccountStatus {
    match status {
        AccountStatus::Active => pb::AccountStatus::Active,
        AccountStatus::Suspended => pb::AccountStatus::Suspended,
        AccountStatus::Closed => pb::AccountStatus::Closed,
    }
}

impl CodeApi {
    /// IssueCode once access is decided: the holder's voucher must be ACTIVE.
    async fn issue(&self, request: &Request<IssueCodeRequest>, holder: Uuid) -> Result<IssueCodeResponse, Status> {
        let state = &self.state;
        let voucher_id = active_voucher(state.vouchers.status_of(holder).await?)?;
        let issued = state.code_keys.issue(voucher_id, state.clock.now());
        let png = if request.get_ref().include_png {
            // Off the async runtime, on the bounded pool (issue 14 item 4).
            let text = issued.text.clone();
            match state.heavy.run(crate::domain::qr::PNG_ESTIMATE_BYTES, move || qr_png(&text)).await? {
                Ok(png) => png.map_err(|e| ApiError::internal(format_args!("QR rendering failed: {e:?}")))?,
                Err(refusal) => {
                    return Err(ApiError::internal(format_args!("QR rendering refused: {refusal:?}")).into());
                }
            }
        } else {
            Vec::new()
        };
        state.holders.warm(&medins_common::auth::Caller::of(request)?.id, &state.identity, holder);
        Ok(IssueCodeResponse {
            expires_at: Some(timestamp(issued.payload.expires_at_time().naive_utc())),
            key_id: issued.payload.key_id_text(),
            code: issued.text,
            png,
        })
    }
}

#[tonic::async_trait]
impl CodeService for CodeApi {
    async fn issue_code(&self, request: Request<IssueCodeRequest>) -> Result<Response<IssueCodeResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let holder = require_uuid("holder_person_id", &request.get_ref().holder_person_id)?;
        // The holder's own token or an ACTIVE binder's: known before anything is looked up.
        access.decide(state, holder, HandlerFacts::default()).await?;
        let result = self.issue(&request, holder).await;
        access.record(state, Some(holder), &result).await;
        result.map(Response::new)
    }

    async fn verify_code(&self, request: Request<VerifyCodeRequest>) -> Result<Response<VerifyCodeResponse>, Status> {
        let caller = Caller::of(&request)?;
        // The scope alone is not enough: only a point of care opens visits.
        if !matches!(caller.kind, PartnerKind::Hospital | PartnerKind::Pharmacy) {
            return Err(ApiError::new(
                tonic::Code::PermissionDenied,
                Reason::PartnerKindNotAllowed,
                "only hospitals and pharmacies (kinds HOSPITAL, PHARMACY) verify codes",
            )
            .into());
        }
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let body = request.get_ref();
        let text = body.code.trim();
        if text.len() > CODE_TEXT_LEN * 2 {
            return Err(ApiError::from(crate::domain::code::CodeError::Invalid).into());
        }
        let payload = state.code_keys.verify(text, state.clock.now()).map_err(ApiError::from)?;
        let inline = access.inline(state);
        let audited = OnceLock::new();
        let holder = OnceLock::new();
        let result = state
            .idempotency
            .run(&caller.id, "VerifyCode", request.metadata(), body, || async {
                let redemption = Redemption {
                    voucher_id: payload.voucher_id,
                    redemption_key: payload.redemption_key(),
                    key_id: payload.key_id_text(),
                    partner_id: caller.id.clone(),
                };
                let (opened, audit) = state.visits.open_for_code(redemption, state.clock.stored_now(), &inline).await?;
                let _ = audited.set(audit);
                let visit = &opened.visit;
                // The holder showed this live code at this counter: the visit is the counter's.
                let counter_visit = access::counter_of_visit(
                    &caller.id,
                    &visit.partner_id,
                    visit.opened_at,
                    state.clock.stored_now(),
                );
                let _ = holder.set(visit.person_id);
                let standing =
                    access.decide(state, visit.person_id, HandlerFacts { counter_visit, ..HandlerFacts::default() }).await?;
                // The visit is open whatever identity-svc says now: show what is known.
                let facts = match state.holders.get(&caller.id, &state.identity, visit.person_id).await {
                    Ok(facts) => facts,
                    Err(error) => {
                        tracing::warn!(%error, visit_id = %visit.id, "holder facts unavailable; visit opened without them");
                        HolderFacts::default()
                    }
                };
                let voucher_id = visit.voucher_id().map(|id| id.to_string()).unwrap_or_default();
                tracing::info!(visit_id = %visit.id, %voucher_id, partner = %caller.id, "code verified, visit opened");
                Ok(VerifyCodeResponse {
                    visit_id: visit.id.to_string(),
                    voucher_id,
                    holder: Some(CodeHolder {
                        // The counter serves the visit by its id: no person id to reach the
                        // holder elsewhere (access::shows_person_id).
                        person_id: if access::shows_person_id(standing) {
                            visit.person_id.to_string()
                        } else {
                            String::new()
                        },
                        masked_name: facts.masked_name,
                        sex: facts.sex,
                        age: facts.age,
                        insured_region_code: opened.region_code.clone(),
                        scheme: scheme_message(opened.scheme) as i32,
                        account_status: account_status_message(opened.account_status) as i32,
                    }),
                })
            })
            .await;
        // A verified code names its holder; a refused one (forged, expired, used) opened nothing
        // and is not looked up for the record. A replayed answer (idempotency key) carries no
        // person id: its visit says whose it is.
        let holder = match (holder.get().copied(), &result) {
            (Some(person), _) => Some(person),
            (None, Ok(response)) => match Uuid::parse_str(&response.visit_id) {
                Ok(visit_id) => state.visits.find(visit_id).await.ok().flatten().map(|visit| visit.person_id),
                Err(_) => None,
            },
            (None, Err(_)) => None,
        };
        access.record_unless(state, audited.get().copied().unwrap_or(Audited::No), holder, &result).await;
        result.map(Response::new)
    }

    async fn open_visit_with_card(
        &self,
        request: Request<OpenVisitWithCardRequest>,
    ) -> Result<Response<OpenVisitWithCardResponse>, Status> {
        let caller = Caller::of(&request)?;
        // Only a point of care opens visits; its kind is the channel of the card's first use.
        let Some(channel) = ActivationChannel::of_care_counter(caller.kind) else {
            return Err(ApiError::of(
                Reason::PartnerKindNotAllowed,
                "only hospitals and pharmacies (kinds HOSPITAL, PHARMACY) open visits with a card",
            )
            .into());
        };
        let body = request.get_ref();
        let number = parse_card_number("card_number", &body.card_number)?;
        let pin = parse_pin("pin", &body.pin)?;
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let inline = access.inline(state);
        let audited = OnceLock::new();
        let holder = OnceLock::new();
        let result = state
            .idempotency
            .run(&caller.id, "OpenVisitWithCard", request.metadata(), body, || async {
                // The card and its PIN, as one counted card lookup: an unknown number, a card
                // without a PIN, a wrong PIN and a locked PIN keep the lookup's unit.
                let standing = counted_lookup(state, &caller, async {
                    let (card, check) = check_pin(state, &number, pin.clone()).await?;
                    if let Some(card) = &card {
                        let _ = holder.set(card.person_id);
                    }
                    match (card, check) {
                        (Some(card), PinCheck::Right(_)) => {
                            // The holder typed the card's PIN at this counter: present here.
                            let facts = HandlerFacts { holder_present: true, ..HandlerFacts::default() };
                            access.decide(state, card.person_id, facts).await
                        }
                        (Some(_), PinCheck::Locked) => Err(pin_locked()),
                        _ => Err(card_or_pin_wrong()),
                    }
                })
                .await?;
                let card_use = CardUse { channel, partner_id: caller.id.clone() };
                let (used, audit) =
                    state.visits.open_for_card(number.clone(), card_use, state.clock.stored_now(), &inline).await?;
                let _ = audited.set(audit);
                let visit = &used.opened.visit;
                // The visit is open whatever identity-svc says now: show what is known.
                let facts = match state.holders.get(&caller.id, &state.identity, visit.person_id).await {
                    Ok(facts) => facts,
                    Err(error) => {
                        tracing::warn!(%error, visit_id = %visit.id, "holder facts unavailable; visit opened without them");
                        HolderFacts::default()
                    }
                };
                tracing::info!(visit_id = %visit.id, partner = %caller.id, "card and PIN accepted, visit opened");
                Ok(OpenVisitWithCardResponse {
                    visit_id: visit.id.to_string(),
                    holder: Some(CodeHolder {
                        // The counter knows the holder by the card: no id to reach them elsewhere
                        // (access::shows_person_id).
                        person_id: if access::shows_person_id(standing) {
                            visit.person_id.to_string()
                        } else {
                            String::new()
                        },
                        masked_name: facts.masked_name,
                        sex: facts.sex,
                        age: facts.age,
                        insured_region_code: used.opened.region_code.clone(),
                        scheme: scheme_message(used.opened.scheme) as i32,
                        account_status: account_status_message(used.opened.account_status) as i32,
                    }),
                    card: Some(card_message_as(&used.card, CardView::Counter)),
                })
            })
            .await;
        // Every attempt on an existing card is the holder's to see, refused or not.
        access
            .record_unless(state, audited.get().copied().unwrap_or(Audited::No), holder.get().copied(), &result)
            .await;
        result.map(Response::new)
    }

    async fn get_code_keys(
        &self,
        request: Request<GetCodeKeysRequest>,
    ) -> Result<Response<GetCodeKeysResponse>, Status> {
        Caller::of(&request)?;
        let keys = self
            .state
            .code_keys
            .listed_keys(self.state.clock.now())
            .into_iter()
            .map(|key| CodeKey {
                public_key: key.public_key_base64url(),
                not_after: key.not_after.map(|at| timestamp(at.naive_utc())),
                key_id: key.kid,
            })
            .collect();
        Ok(Response::new(GetCodeKeysResponse { keys }))
    }
}
