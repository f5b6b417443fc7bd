//! identity-svc's access table (docs/architecture.md#trust-model): for every RPC that reads or
//! changes a person's data, who may call it for whom. Scopes only say what kind of partner may call
//! at all; this says whose data it may touch. Every handler asks [`decide`] (through
//! `service::access`) with the facts it knows; nothing else in identity-svc decides access. The
//! standings, rules and refusals are the platform's shared vocabulary (`medins_common::access`);
//! insurance-svc keeps its own table in its own `domain::access`.
//!
//! Pure: no I/O. A caller with no standing gets the row's refusal, decided from the request and
//! the caller alone (a person id is compared with the token's subject, never looked up first),
//! so the answer is the same for an existing and a missing person; for a face session, the
//! same refusal is given for a session that does not exist.
//!
//! `x-on-behalf-of` (naming the partner a SERVICE caller relays for, so the person's access
//! history shows who acted) is refused by the auth layer from anyone but SERVICE partners
//! (`medins_common::auth`), before any row is asked.

pub use medins_common::access::{Refusal, Rule, Standing};
use medins_common::{
    ApiError, ApiResult, Reason,
    access::{self, kind_may_hold},
    auth::PartnerKind,
};
use uuid::Uuid;

/// What a handler knows about the caller and the person when it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The calling partner's kind.
    pub caller: PartnerKind,
    /// The subject of the verified person token the call carried; `None` when it carried none
    /// (or the row admits no token: then it is not read).
    pub token_subject: Option<Uuid>,
    /// The person whose data the call reads or changes: the one the request names, or the
    /// person of the face session it names; `None` when there is none (a session that does not
    /// exist, a code to a new phone, a list of every person's revocations).
    pub person: Option<Uuid>,
    /// Whether the token's subject is the binder the face session names (a family binding's
    /// member check, `domain::face::session_readers`).
    pub binder: bool,
    /// Whether the caller has a live partner link with `person`.
    pub linked: bool,
    /// Whether the call starts a FACE_PURPOSE_PHONE_CHANGE session, or reads one the caller
    /// started.
    pub phone_change_starter: bool,
}

impl Facts {
    /// Facts of a call by a `caller` with `token_subject` about `person`, nothing else known.
    pub fn new(caller: PartnerKind, token_subject: Option<Uuid>, person: Option<Uuid>) -> Facts {
        Facts { caller, token_subject, person, binder: false, linked: false, phone_change_starter: false }
    }

    /// The standings these facts give, strongest first.
    fn standings(&self) -> impl Iterator<Item = Standing> + '_ {
        let someone_elses_token = self.token_subject.is_some() && self.token_subject != self.person;
        [
            (kind_may_hold(Standing::Operator, self.caller), Standing::Operator),
            (kind_may_hold(Standing::Service, self.caller), Standing::Service),
            (self.person.is_some() && self.token_subject == self.person, Standing::Person),
            (self.binder && someone_elses_token, Standing::Binder),
            (kind_may_hold(Standing::FrontDoor, self.caller), Standing::FrontDoor),
            (self.linked && kind_may_hold(Standing::Linked, self.caller), Standing::Linked),
            (
                self.phone_change_starter && kind_may_hold(Standing::PhoneChangeStarter, self.caller),
                Standing::PhoneChangeStarter,
            ),
            (kind_may_hold(Standing::FaceProvider, self.caller), Standing::FaceProvider),
        ]
        .into_iter()
        .filter_map(|(holds, standing)| holds.then_some(standing))
    }
}

/// Whether partners of `kind` act through person tokens at all: operators and medins services
/// act for no one person and never send one (`medins_common::token::person_token_claims`).
pub fn carries_tokens(kind: PartnerKind) -> bool {
    !matches!(kind, PartnerKind::Ops | PartnerKind::Service)
}

/// The access table: one row per identity-svc RPC that reads or changes a person's data. The
/// contract comment of each RPC (proto/medins/identity/v1) says the same in words;
/// `tests/e2e/access_identity.rs` walks it.
pub const RULES: &[Rule] = &[
    // PersonService
    Rule {
        method: "/medins.identity.v1.PersonService/RegisterPerson",
        allows: &[Standing::Operator, Standing::FrontDoor],
        refusal: FRONT_DOORS_AND_OPERATORS,
    },
    Rule {
        method: "/medins.identity.v1.PersonService/GetPerson",
        allows: &[Standing::Operator, Standing::Service, Standing::Person],
        refusal: NOT_THIS_PERSONS_TOKEN,
    },
    Rule {
        method: "/medins.identity.v1.PersonService/ResolvePerson",
        allows: &[Standing::Operator, Standing::Service],
        refusal: SERVICES_AND_OPERATORS,
    },
    Rule {
        method: "/medins.identity.v1.PersonService/MatchPerson",
        allows: &[Standing::Operator, Standing::Service],
        refusal: SERVICES_AND_OPERATORS,
    },
    // The operator's recorded reason as a proof is for operators only: the handler passes the
    // standing on (`PhoneChangeEvidence::Operator`).
    Rule {
        method: "/medins.identity.v1.PersonService/ChangePhone",
        allows: &[Standing::Operator, Standing::FrontDoor],
        refusal: FRONT_DOORS_AND_OPERATORS,
    },
    Rule {
        method: "/medins.identity.v1.PersonService/CompleteRealName",
        allows: &[Standing::Operator, Standing::FrontDoor],
        refusal: FRONT_DOORS_AND_OPERATORS,
    },
    Rule {
        method: "/medins.identity.v1.PersonService/ConsumeSmsChallenge",
        allows: &[Standing::Service],
        refusal: SERVICES_ONLY,
    },
    Rule {
        method: "/medins.identity.v1.PersonService/SuspendPerson",
        allows: &[Standing::Operator],
        refusal: OPERATORS_ONLY,
    },
    Rule {
        method: "/medins.identity.v1.PersonService/ResumePerson",
        allows: &[Standing::Operator],
        refusal: OPERATORS_ONLY,
    },
    // PartnerLinkService
    Rule {
        method: "/medins.identity.v1.PartnerLinkService/LinkPartnerAccount",
        allows: &[Standing::Operator, Standing::FrontDoor],
        refusal: FRONT_DOORS_AND_OPERATORS,
    },
    Rule {
        method: "/medins.identity.v1.PartnerLinkService/UnlinkPartnerAccount",
        allows: &[Standing::Operator, Standing::Service, Standing::Person],
        refusal: NOT_THIS_PERSONS_TOKEN,
    },
    Rule {
        method: "/medins.identity.v1.PartnerLinkService/ListPartnerLinks",
        allows: &[Standing::Operator, Standing::Service, Standing::Person],
        refusal: NOT_THIS_PERSONS_TOKEN,
    },
    Rule {
        method: "/medins.identity.v1.PartnerLinkService/RevokePartnerLink",
        allows: &[Standing::Operator, Standing::Service, Standing::Person],
        refusal: NOT_THIS_PERSONS_TOKEN,
    },
    // PersonTokenService
    Rule {
        method: "/medins.identity.v1.PersonTokenService/IssuePersonToken",
        allows: &[Standing::Linked],
        refusal: NO_LINK,
    },
    Rule {
        method: "/medins.identity.v1.PersonTokenService/ListTokenRevocations",
        allows: &[Standing::Service],
        refusal: SERVICES_ONLY,
    },
    // PersonFactsService
    Rule {
        method: "/medins.identity.v1.PersonFactsService/GetPersonFacts",
        allows: &[Standing::Service],
        refusal: SERVICES_ONLY,
    },
    // SmsService
    Rule {
        method: "/medins.identity.v1.SmsService/SendSmsCode",
        allows: &[Standing::Operator, Standing::FrontDoor],
        refusal: FRONT_DOORS_AND_OPERATORS,
    },
    Rule {
        method: "/medins.identity.v1.SmsService/VerifySmsCode",
        allows: &[Standing::Operator, Standing::FrontDoor],
        refusal: FRONT_DOORS_AND_OPERATORS,
    },
    // AccessHistoryService
    Rule {
        method: "/medins.identity.v1.AccessHistoryService/ListMyAccessHistory",
        allows: &[Standing::Operator, Standing::Person],
        refusal: NOT_THIS_PERSONS_TOKEN,
    },
    // FaceVerificationService. `on_behalf_of_partner_id` and `binder_person_id` are honoured
    // from the Service standing only (`domain::partner::acting_partner`,
    // `domain::face::session_binder`).
    Rule {
        method: "/medins.identity.v1.FaceVerificationService/StartFaceVerification",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::PhoneChangeStarter],
        refusal: NOT_THIS_PERSONS_TOKEN,
    },
    Rule {
        method: "/medins.identity.v1.FaceVerificationService/SubmitFaceResult",
        allows: &[Standing::FaceProvider],
        refusal: FACE_PROVIDERS_ONLY,
    },
    Rule {
        method: "/medins.identity.v1.FaceVerificationService/GetFaceVerification",
        allows: &[
            Standing::Operator,
            Standing::Service,
            Standing::Person,
            Standing::Binder,
            Standing::PhoneChangeStarter,
        ],
        refusal: NOT_THE_SESSIONS_TOKEN,
    },
    Rule {
        method: "/medins.identity.v1.FaceVerificationService/WatchFaceVerification",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::Binder],
        refusal: NOT_THE_SESSIONS_TOKEN,
    },
];

/// The identity-svc RPCs that touch no person's data, and so have no row: every partner may
/// read the keys that verify person tokens.
pub const PERSON_FREE_METHODS: &[&str] = &["/medins.identity.v1.PersonTokenService/GetPublicKeys"];

// Refusals of the rows above. A refusal by kind is decided from the caller alone; one by token
// from the request's person id and the token, never from a lookup.
const FRONT_DOORS_AND_OPERATORS: Refusal = Refusal::of(
    Reason::PartnerKindNotAllowed,
    "only a person's front door (kinds BANK, MINI_PROGRAM, CITY_APP) or an operator takes this step",
);
const SERVICES_AND_OPERATORS: Refusal = Refusal::of(
    Reason::PartnerKindNotAllowed,
    "only medins services (kind SERVICE) and operators resolve or match a name and ID number",
);
const SERVICES_ONLY: Refusal =
    Refusal::of(Reason::PartnerKindNotAllowed, "only medins services (kind SERVICE) make this call");
const OPERATORS_ONLY: Refusal = Refusal::of(Reason::PartnerKindNotAllowed, "only operators suspend and resume persons");
const FACE_PROVIDERS_ONLY: Refusal = Refusal::of(
    Reason::PartnerKindNotAllowed,
    "only face-verification providers (kind FACE_PROVIDER) submit face results",
);
/// A token of someone else (the answer the person-token check always gave, whether or not the
/// named person exists).
const NOT_THIS_PERSONS_TOKEN: Refusal =
    Refusal::permission_denied(Reason::PersonTokenInvalid, "the person token was issued for another person");
/// A face session the token gives no standing towards, or none at all: the same answer.
const NOT_THE_SESSIONS_TOKEN: Refusal = Refusal::permission_denied(
    Reason::PersonTokenInvalid,
    "the person token is neither the verified person's nor the binder's this session names",
);
/// No live link: the same answer for an existing and a missing person.
const NO_LINK: Refusal = Refusal::of(
    Reason::PartnerLinkRequired,
    "the caller has no live link with this person (PartnerLinkService.LinkPartnerAccount)",
);

/// The rule of `method`, if it touches a person's data.
pub fn rule(method: &str) -> Option<&'static Rule> {
    access::find_rule(RULES, method)
}

/// Decides whether a call to `method` with `facts` may go on, and as what. A caller that holds
/// no standing, sent no person token and could have stood by one (the row admits the person or
/// a binder, and its kind sends tokens) is UNAUTHENTICATED / PERSON_TOKEN_REQUIRED, whatever
/// the request names; everyone else without a standing gets the row's refusal. A method missing
/// from the table is refused INTERNAL (a wiring bug must not open access).
pub fn decide(method: &str, facts: &Facts) -> ApiResult<Standing> {
    access::decide(RULES, method, facts.standings()).map_err(|refusal| match rule(method) {
        Some(rule) if facts.token_subject.is_none() && carries_tokens(facts.caller) && rule.admits_token() => {
            token_required()
        }
        _ => refusal,
    })
}

/// UNAUTHENTICATED / PERSON_TOKEN_REQUIRED.
fn token_required() -> ApiError {
    ApiError::of(
        Reason::PersonTokenRequired,
        "this call acts for a person: send `x-person-token` (PersonTokenService.IssuePersonToken)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const GET_PERSON: &str = "/medins.identity.v1.PersonService/GetPerson";
    const REGISTER: &str = "/medins.identity.v1.PersonService/RegisterPerson";
    const ISSUE_TOKEN: &str = "/medins.identity.v1.PersonTokenService/IssuePersonToken";
    const START_FACE: &str = "/medins.identity.v1.FaceVerificationService/StartFaceVerification";
    const GET_FACE: &str = "/medins.identity.v1.FaceVerificationService/GetFaceVerification";
    const WATCH_FACE: &str = "/medins.identity.v1.FaceVerificationService/WatchFaceVerification";
    const SUBMIT_FACE: &str = "/medins.identity.v1.FaceVerificationService/SubmitFaceResult";

    fn answer(method: &str, facts: Facts) -> Result<Standing, (Code, Reason)> {
        decide(method, &facts).map_err(|error| (error.code(), error.reason()))
    }

    const KIND_NOT_ALLOWED: (Code, Reason) = (Code::PermissionDenied, Reason::PartnerKindNotAllowed);
    const TOKEN_INVALID: (Code, Reason) = (Code::PermissionDenied, Reason::PersonTokenInvalid);
    const TOKEN_REQUIRED: (Code, Reason) = (Code::Unauthenticated, Reason::PersonTokenRequired);

    #[test]
    fn every_identity_rpc_has_one_row_or_touches_no_person() {
        let mut seen = std::collections::HashSet::new();
        for rule in RULES {
            assert!(seen.insert(rule.method), "{} appears twice", rule.method);
            assert!(!rule.allows.is_empty(), "{} allows nobody", rule.method);
            assert!(crate::METHOD_SCOPES.iter().any(|(method, _)| *method == rule.method), "{} is no RPC", rule.method);
        }
        for (method, _) in crate::METHOD_SCOPES {
            assert!(
                rule(method).is_some() != PERSON_FREE_METHODS.contains(method),
                "{method}: a row, or listed as touching no person (not both)"
            );
        }
        let unknown = decide("/medins.identity.v1.PersonService/Nope", &Facts::new(PartnerKind::Ops, None, None));
        assert_eq!(unknown.unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn a_person_is_read_with_their_own_token_and_a_refusal_never_depends_on_the_id() {
        let (person, other) = (Uuid::now_v7(), Uuid::now_v7());
        let own = Facts::new(PartnerKind::MiniProgram, Some(person), Some(person));
        assert_eq!(answer(GET_PERSON, own), Ok(Standing::Person));
        // Another person's token: the same refusal for whichever id is named.
        for named in [person, Uuid::now_v7()] {
            let facts = Facts::new(PartnerKind::Bank, Some(other), Some(named));
            assert_eq!(answer(GET_PERSON, facts), Err(TOKEN_INVALID));
            // No token at all, from a kind that would need one: PERSON_TOKEN_REQUIRED.
            for kind in [PartnerKind::Bank, PartnerKind::Hospital, PartnerKind::Employer, PartnerKind::Terminal] {
                assert_eq!(answer(GET_PERSON, Facts::new(kind, None, Some(named))), Err(TOKEN_REQUIRED), "{kind}");
            }
        }
        assert_eq!(answer(GET_PERSON, Facts::new(PartnerKind::Ops, None, Some(person))), Ok(Standing::Operator));
        assert_eq!(answer(GET_PERSON, Facts::new(PartnerKind::Service, None, Some(person))), Ok(Standing::Service));
        // Facts a row does not admit give nothing: a link or a binding is no token.
        let linked = Facts { linked: true, binder: true, ..Facts::new(PartnerKind::Bank, Some(other), Some(person)) };
        assert_eq!(answer(GET_PERSON, linked), Err(TOKEN_INVALID));
    }

    #[test]
    fn front_door_steps_are_for_front_doors_and_operators_by_kind_alone() {
        for kind in PartnerKind::ALL {
            let expected = match kind {
                PartnerKind::Ops => Ok(Standing::Operator),
                PartnerKind::Bank | PartnerKind::MiniProgram | PartnerKind::CityApp => Ok(Standing::FrontDoor),
                _ => Err(KIND_NOT_ALLOWED),
            };
            assert_eq!(answer(REGISTER, Facts::new(kind, None, None)), expected, "{kind}");
            // A token changes nothing: the step is not the person's to take with one.
            let person = Uuid::now_v7();
            assert_eq!(answer(REGISTER, Facts::new(kind, Some(person), Some(person))), expected, "{kind}");
        }
    }

    #[test]
    fn a_token_is_issued_only_to_a_linked_partner_the_same_answer_for_a_missing_person() {
        let person = Uuid::now_v7();
        let linked = Facts { linked: true, ..Facts::new(PartnerKind::Bank, None, Some(person)) };
        assert_eq!(answer(ISSUE_TOKEN, linked), Ok(Standing::Linked));
        let no_link = (Code::FailedPrecondition, Reason::PartnerLinkRequired);
        for kind in PartnerKind::ALL {
            assert_eq!(answer(ISSUE_TOKEN, Facts::new(kind, None, Some(person))), Err(no_link), "{kind}");
            assert_eq!(answer(ISSUE_TOKEN, Facts::new(kind, None, None)), Err(no_link), "{kind}");
        }
        // A link held by a kind that cannot link counts for nothing.
        let odd = Facts { linked: true, ..Facts::new(PartnerKind::Hospital, None, Some(person)) };
        assert_eq!(answer(ISSUE_TOKEN, odd), Err(no_link));
    }

    #[test]
    fn face_sessions_the_person_the_named_binder_and_the_phone_change_starter() {
        let (person, binder) = (Uuid::now_v7(), Uuid::now_v7());
        let binders = Facts { binder: true, ..Facts::new(PartnerKind::Bank, Some(binder), Some(person)) };
        assert_eq!(answer(GET_FACE, binders), Ok(Standing::Binder));
        assert_eq!(answer(WATCH_FACE, binders), Ok(Standing::Binder));
        // The binder fact counts only with someone else's token: never without one.
        let tokenless = Facts { binder: true, ..Facts::new(PartnerKind::Bank, None, Some(person)) };
        assert_eq!(answer(GET_FACE, tokenless), Err(TOKEN_REQUIRED));
        let stranger = Facts::new(PartnerKind::Bank, Some(binder), Some(person));
        assert_eq!(answer(GET_FACE, stranger), Err(TOKEN_INVALID));
        // A missing session: the same answers.
        assert_eq!(answer(GET_FACE, Facts::new(PartnerKind::Bank, Some(binder), None)), Err(TOKEN_INVALID));
        assert_eq!(answer(GET_FACE, Facts::new(PartnerKind::MiniProgram, None, None)), Err(TOKEN_REQUIRED));
        assert_eq!(answer(GET_FACE, Facts::new(PartnerKind::Ops, None, None)), Ok(Standing::Operator));

        // The front door that started a phone-change session reads it without a token; it
        // does not watch it, and no other kind starts one.
        let starter = Facts { phone_change_starter: true, ..Facts::new(PartnerKind::CityApp, None, Some(person)) };
        assert_eq!(answer(START_FACE, starter), Ok(Standing::PhoneChangeStarter));
        assert_eq!(answer(GET_FACE, starter), Ok(Standing::PhoneChangeStarter));
        assert_eq!(answer(WATCH_FACE, starter), Err(TOKEN_REQUIRED));
        let hospital = Facts { phone_change_starter: true, ..Facts::new(PartnerKind::Hospital, None, Some(person)) };
        assert_eq!(answer(START_FACE, hospital), Err(TOKEN_REQUIRED));
        assert_eq!(answer(START_FACE, Facts::new(PartnerKind::Bank, None, Some(person))), Err(TOKEN_REQUIRED));

        // Only providers submit outcomes, whatever token they carry.
        assert_eq!(answer(SUBMIT_FACE, Facts::new(PartnerKind::FaceProvider, None, None)), Ok(Standing::FaceProvider));
        for kind in [PartnerKind::Ops, PartnerKind::Service, PartnerKind::Bank] {
            assert_eq!(answer(SUBMIT_FACE, Facts::new(kind, Some(person), Some(person))), Err(KIND_NOT_ALLOWED));
        }
    }

    #[test]
    fn operators_and_services_are_kinds_not_tokens() {
        let person = Uuid::now_v7();
        let suspend = "/medins.identity.v1.PersonService/SuspendPerson";
        let facts = "/medins.identity.v1.PersonFactsService/GetPersonFacts";
        let history = "/medins.identity.v1.AccessHistoryService/ListMyAccessHistory";
        assert_eq!(answer(suspend, Facts::new(PartnerKind::Ops, None, Some(person))), Ok(Standing::Operator));
        assert_eq!(answer(suspend, Facts::new(PartnerKind::Bank, Some(person), Some(person))), Err(KIND_NOT_ALLOWED));
        assert_eq!(answer(facts, Facts::new(PartnerKind::Service, None, Some(person))), Ok(Standing::Service));
        assert_eq!(answer(facts, Facts::new(PartnerKind::Ops, None, Some(person))), Err(KIND_NOT_ALLOWED));
        // A service is not exempt where the contract names only the person and operators, and
        // is not asked for a token it never sends.
        assert_eq!(answer(history, Facts::new(PartnerKind::Service, None, Some(person))), Err(TOKEN_INVALID));
    }
}
