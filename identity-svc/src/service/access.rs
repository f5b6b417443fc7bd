//! Asks identity-svc's access table (`domain::access`) about a call, and records the call in
//! the person's access history. Two steps, so that a refusal never depends on whether the
//! person or session exists:
//!
//! 1. [`CallAccess::begin`], first thing in a handler: who calls which method, under which
//!    partner the call is recorded, and the person token if the method's row admits one (checked
//!    here: signature, partner, expiry, revocation, assurance level; a bad token is answered at
//!    step 2, so that the refusal is recorded like any other).
//! 2. [`CallAccess::decide_for`] (a person the request names), [`CallAccess::decide_session`] (a
//!    face session, found or not) or [`CallAccess::decide_by_kind`] (rows held by kind alone),
//!    with the facts only the handler can know; they ask `domain::access::decide`.

use std::sync::Arc;

use medins_common::{
    ApiError, ApiResult, Reason,
    audit::outcome_of,
    auth::{CalledMethod, Caller, Partner, audit_partner},
    token::{PERSON_TOKEN_METADATA, request_person_claims},
};
use tonic::{Code, Request, Status};
use uuid::Uuid;

use super::State;
use crate::domain::{
    access::{self, Facts, Rule, Standing},
    face::{FacePurpose, FaceSession, session_readers},
};

/// A call on its way through the access table.
#[derive(Debug, Clone)]
pub struct CallAccess {
    /// The calling partner.
    pub caller: Arc<Partner>,
    /// The full method path.
    pub method: &'static str,
    /// The method's row of the access table.
    pub rule: &'static Rule,
    /// The subject of the verified person token (`Ok(None)`: none sent, or the row admits none),
    /// or why the token sent was refused.
    token: Result<Option<Uuid>, ApiError>,
    /// The partner the call is recorded under: the partner a SERVICE caller relays it for
    /// (`x-on-behalf-of`), else the caller.
    audit_as: String,
}

impl CallAccess {
    /// Step 1: the caller, the method's rule and the person token. Fails only when the auth
    /// layer did not run or the method has no row (wiring bugs).
    pub fn begin<T>(state: &State, request: &Request<T>) -> ApiResult<CallAccess> {
        let caller = Caller::of(request)?;
        let method = CalledMethod::of(request)
            .ok_or_else(|| ApiError::of(Reason::Internal, "the called method was not recorded"))?;
        let rule =
            access::rule(method).ok_or_else(|| ApiError::of(Reason::Internal, "no access rule for this method"))?;
        // A token is read only where it can give a standing; elsewhere it is ignored, as before.
        let token_sent = request.metadata().get(PERSON_TOKEN_METADATA).is_some();
        let token = if token_sent && rule.admits_token() && access::carries_tokens(caller.kind) {
            request_person_claims(state.person_tokens.verifier(), request, state.clock.now())
                .map(|claims| claims.map(|claims| claims.person_id))
        } else {
            Ok(None)
        };
        Ok(CallAccess { caller, method, rule, token, audit_as: audit_partner(request) })
    }

    /// The facts every call has: the caller's kind, the token's subject and `person`; a refused
    /// token is the answer.
    pub fn facts(&self, person: Option<Uuid>) -> ApiResult<Facts> {
        Ok(Facts::new(self.caller.kind, self.token.clone()?, person))
    }

    /// Step 2 with the facts the handler gathered.
    pub fn decide(&self, facts: &Facts) -> ApiResult<Standing> {
        access::decide(self.method, facts)
    }

    /// Step 2 for a call about `person`, named by the request (compared with the token, never
    /// looked up first).
    pub fn decide_for(&self, person: Uuid) -> ApiResult<Standing> {
        self.decide(&self.facts(Some(person))?)
    }

    /// Step 2 for rows held by the caller's kind alone (no person is named, or the row does not
    /// depend on who it is).
    pub fn decide_by_kind(&self) -> ApiResult<Standing> {
        self.decide(&self.facts(None)?)
    }

    /// Step 2 for a call naming a face session: `None` when it does not exist, which gets the
    /// answer a session the caller has no standing towards gets (operators and services then
    /// learn that it does not exist from the handler). The session's binder is looked up only
    /// when the row admits binders and the token is someone else's.
    pub async fn decide_session(&self, state: &State, session: Option<&FaceSession>) -> ApiResult<Standing> {
        let mut facts = self.facts(session.map(|session| session.person_id))?;
        if let Some(session) = session {
            facts.phone_change_starter =
                session.purpose == FacePurpose::PhoneChange && session.partner_id == self.caller.id;
            if let Some(subject) = facts.token_subject.filter(|subject| *subject != session.person_id)
                && self.rule.allows.contains(&Standing::Binder)
            {
                let binder = state.face.store.binder_of(session.id).await?;
                facts.binder = session_readers(session.person_id, session.purpose, binder).contains(&subject);
            }
        }
        self.decide(&facts)
    }

    /// Records the call in `person`'s access history (docs/architecture.md#trust-model), allowed or
    /// refused. Recording never changes the answer.
    pub async fn record<R>(&self, state: &State, person: Uuid, result: &Result<R, Status>) {
        state.audit.record(&self.audit_as, self.method, person, outcome_of(result)).await;
    }

    /// Records a call that succeeded (calls recorded only once they found their person).
    pub async fn record_ok(&self, state: &State, person: Uuid) {
        state.audit.record(&self.audit_as, self.method, person, Code::Ok).await;
    }
}
