//! Asks the access table (`domain::access`) about a call. Two steps, so that a refusal never
//! depends on whether the person or object exists:
//!
//! 1. [`CallAccess::begin`], before the handler looks anything up: who calls which method, and
//!    the subject of the person token if one was sent (a bad token is refused here). A caller
//!    that could only stand as the person or a binder and sent no token is refused
//!    PERSON_TOKEN_REQUIRED now, whatever the request names.
//! 2. [`CallAccess::decide`], once the handler knows whose data the call touches: looks up the
//!    ACTIVE family binding only if the rule admits binders and the token is someone else's,
//!    takes the facts only the handler can know (a counter's visit, an employer's code), and
//!    asks `domain::access::decide`.

use std::sync::Arc;

use medins_common::{
    ApiError, ApiResult, Reason,
    audit::InlineAudit,
    auth::{CalledMethod, Caller, Partner, PartnerKind},
    token::PERSON_TOKEN_METADATA,
};
use tonic::Request;
use uuid::Uuid;

use super::State;
use crate::{
    domain::access::{self, Facts, Named, Rule, Standing, TokenMeaning},
    store::Audited,
};

/// Facts about the caller that only the handler can read (defaults: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFacts {
    /// The caller is the counter of an open or recent visit of the person.
    pub counter_visit: bool,
    /// The caller speaks for the employer code of the person's account.
    pub employer: bool,
    /// The person is present at the caller's counter (card + face verified there).
    pub present: bool,
    /// The call carried the person's name and ID number and they matched (a counter where the
    /// person is present).
    pub holder_present: bool,
}

/// A call on its way through the access table.
#[derive(Debug, Clone)]
pub struct CallAccess {
    /// The calling partner.
    pub caller: Arc<Partner>,
    /// The full method path.
    pub method: &'static str,
    /// The method's row of the access table.
    pub rule: &'static Rule,
    /// The subject of the verified person token, if one was sent.
    pub token_subject: Option<Uuid>,
}

impl CallAccess {
    /// Step 1: the caller, the method's rule and the verified token subject.
    pub async fn begin<T>(state: &State, request: &Request<T>) -> ApiResult<CallAccess> {
        let caller = Caller::of(request)?;
        let method = CalledMethod::of(request)
            .ok_or_else(|| ApiError::of(Reason::Internal, "the called method was not recorded"))?;
        let rule =
            access::rule(method).ok_or_else(|| ApiError::of(Reason::Internal, "no access rule for this method"))?;
        let token_sent = request.metadata().get(PERSON_TOKEN_METADATA).is_some();
        let token_subject = if token_sent && !matches!(caller.kind, PartnerKind::Ops | PartnerKind::Service) {
            state.person_tokens.claims(request).await?.map(|claims| claims.person_id)
        } else {
            None
        };
        access::person_token(rule, caller.kind, token_subject, Named::NotYet)?;
        Ok(CallAccess { caller, method, rule, token_subject })
    }

    /// Step 2: whether the call may touch `person`'s data, and as what.
    pub async fn decide(&self, state: &State, person: Uuid, known: HandlerFacts) -> ApiResult<Standing> {
        let binding =
            match access::person_token(self.rule, self.caller.kind, self.token_subject, Named::Person(person))? {
                TokenMeaning::AskBinding(subject) => state.family.find_active(subject, person).await?,
                TokenMeaning::Own | TokenMeaning::Nothing => None,
            };
        let binder = binding.is_some();
        // A guardian: the ACTIVE binding's member is a minor today (domain::family::is_guardian).
        let guardian = binding.as_ref().is_some_and(|binding| {
            crate::domain::family::is_guardian(
                binding.relationship,
                crate::domain::voucher::age_on(binding.member_birth_date, state.clock.today()),
            )
        });
        access::decide(
            self.method,
            &Facts {
                caller: self.caller.kind,
                token_subject: self.token_subject,
                person,
                binder,
                counter_visit: known.counter_visit,
                employer: known.employer,
                present: known.present,
                holder_present: known.holder_present,
                guardian,
            },
        )
    }

    /// Records the call in `person`'s access history (docs/architecture.md#trust-model), allowed or
    /// refused, once the handler knows whose data it touched; `None` (no such person or object)
    /// records nothing. Recording never changes the answer.
    pub async fn record<R>(&self, state: &State, person: Option<Uuid>, result: &Result<R, tonic::Status>) {
        if let Some(person) = person {
            state.audit.record(&self.caller.id, self.method, person, medins_common::audit::outcome_of(result)).await;
        }
    }

    /// The call's audit row for a write that commits it with its own change
    /// (`AuditStore::inline`); the handler then records with [`CallAccess::record_unless`].
    pub fn inline(&self, state: &State) -> InlineAudit {
        state.audit.inline(&self.caller.id, self.method)
    }

    /// [`CallAccess::record`], unless the call's own transaction already committed its row.
    pub async fn record_unless<R>(
        &self,
        state: &State,
        audited: Audited,
        person: Option<Uuid>,
        result: &Result<R, tonic::Status>,
    ) {
        if audited != Audited::InTransaction {
            self.record(state, person, result).await;
        }
    }
}
