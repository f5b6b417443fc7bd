//! The access table (DESIGN.md 4.3a): for every RPC that reads or changes a person's data, who
//! may call it for whom. Scopes only say what kind of partner may call at all; this says whose
//! data it may touch. Every handler that touches a person's data asks [`decide`] with the facts it
//! read (the `service::access` helper gathers the common ones); nothing else in the code decides
//! access.
//!
//! Pure: no I/O. A caller with no relationship gets the rule's refusal, which is the same answer
//! a missing person or object gets, so a refusal tells nothing about existence.

use medins_common::{ApiError, ApiResult, Reason, auth::PartnerKind};
use tonic::Code;
use uuid::Uuid;

/// How a caller stands to the person whose data a call reads or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standing {
    /// An OPS partner (operators act for anyone, and every such call is audited).
    Operator,
    /// A medins service (SERVICE partners: identity-svc's events, internal jobs).
    Service,
    /// The person: the call carries a person token for this person, issued to the caller.
    Person,
    /// A person holding an ACTIVE family binding of this person (the call carries the binder's
    /// token, issued to the caller).
    Binder,
    /// The hospital or pharmacy counter that holds an open or recent visit of this person (the
    /// visit's facts only, for a bounded time).
    Counter,
    /// The EMPLOYER partner that speaks for the employer code of this person's account.
    Employer,
    /// The counter (self-service terminal, hospital insurance office) where the person is
    /// present now, proven by their social security card and a PASSED face check there.
    Present,
    /// The person is at the caller's counter (a BANK, HOSPITAL or PHARMACY partner) and showed
    /// their ID card: the name and ID number the counter typed matched this person at
    /// identity-svc (MatchPerson, no side effects). Only for the call that carried them.
    HolderPresent,
}

/// What a handler knows about the caller and the person when it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The calling partner's kind.
    pub caller: PartnerKind,
    /// The subject of the call's verified person token, if it carried one.
    pub token_subject: Option<Uuid>,
    /// The person whose data the call reads or changes.
    pub person: Uuid,
    /// Whether the token's subject holds an ACTIVE family binding of `person`.
    pub binder: bool,
    /// Whether the caller is the counter of an open or recent visit of `person`.
    pub counter_visit: bool,
    /// Whether the caller is the employer of `person`'s account.
    pub employer: bool,
    /// Whether the person is present at the caller's counter (card + face verified there).
    pub present: bool,
    /// Whether the call carried a name and ID number that matched `person`, from a counter.
    pub holder_present: bool,
}

impl Facts {
    /// The standings these facts give, strongest first.
    fn standings(&self) -> impl Iterator<Item = Standing> + '_ {
        [
            (self.caller == PartnerKind::Ops, Standing::Operator),
            (self.caller == PartnerKind::Service, Standing::Service),
            (self.token_subject == Some(self.person), Standing::Person),
            (self.binder && self.token_subject.is_some_and(|subject| subject != self.person), Standing::Binder),
            (self.counter_visit, Standing::Counter),
            (self.employer && self.caller == PartnerKind::Employer, Standing::Employer),
            (self.present && matches!(self.caller, PartnerKind::Terminal | PartnerKind::Hospital), Standing::Present),
            (self.holder_present && is_counter_kind(self.caller), Standing::HolderPresent),
        ]
        .into_iter()
        .filter_map(|(holds, standing)| holds.then_some(standing))
    }
}

/// Whether partners of `kind` serve people in person at a counter (banks, hospitals,
/// pharmacies): the only ones a holder can be present at.
pub fn is_counter_kind(kind: PartnerKind) -> bool {
    matches!(kind, PartnerKind::Bank | PartnerKind::Hospital | PartnerKind::Pharmacy)
}

/// What a caller without an allowed standing gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// NOT_FOUND where the RPC names an object (the same answer as a missing one), else
    /// PERMISSION_DENIED.
    pub code: Code,
    /// The ErrorInfo reason.
    pub reason: Reason,
    /// The message.
    pub message: &'static str,
}

/// Who may call one RPC for whom.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Full gRPC method path.
    pub method: &'static str,
    /// The standings that may call it.
    pub allows: &'static [Standing],
    /// The answer to everyone else.
    pub refusal: Refusal,
}

/// The access table: one row per RPC that reads or changes a person's data. The contract
/// comment of each RPC says the same in words; `tests/e2e/access.rs` walks it.
pub const RULES: &[Rule] = &[
    // FamilyService (issue 13 item 1, issue 14): the owner and the member act on their own
    // bindings with their own tokens; binders have no standing here (a binding gives power over
    // the member's codes and expenses, not over other bindings); operators act for anyone.
    Rule {
        method: "/medins.insurance.v1.FamilyService/AddFamilyMember",
        allows: &[Standing::Operator, Standing::Person],
        refusal: TOKEN_NOT_THE_PERSONS,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/GetFamilyBinding",
        allows: &[Standing::Operator, Standing::Person],
        refusal: NO_SUCH_BINDING,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/ListFamilyMembers",
        allows: &[Standing::Operator, Standing::Person],
        refusal: TOKEN_NOT_THE_PERSONS,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/ListWhoBoundMe",
        allows: &[Standing::Operator, Standing::Person],
        refusal: TOKEN_NOT_THE_PERSONS,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/RemoveFamilyMember",
        allows: &[Standing::Operator, Standing::Person],
        refusal: NO_SUCH_BINDING,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/SetFamilyAid",
        allows: &[Standing::Operator, Standing::Person],
        refusal: NO_SUCH_BINDING,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/StartCounterOwnerCheck",
        allows: &[Standing::Operator, Standing::Present],
        refusal: OWNER_NOT_PRESENT,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/BindFamilyMemberAtCounter",
        allows: &[Standing::Operator, Standing::Present],
        refusal: OWNER_NOT_PRESENT,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/ListFamilyBindingReviews",
        allows: &[Standing::Operator],
        refusal: NO_SUCH_BINDING,
    },
    Rule {
        method: "/medins.insurance.v1.FamilyService/ReviewFamilyBinding",
        allows: &[Standing::Operator],
        refusal: NO_SUCH_BINDING,
    },
    // CardService (issue 13 items 1 and 3; card.proto states each row in words). A binder
    // stands only as the guardian who applies for (or applied for) a minor's card: the handler
    // narrows Binder with `domain::card::binder_acts`. ApplyForCardsBatch has its own employer
    // check in the handler.
    Rule {
        method: "/medins.insurance.v1.CardService/RecordCardFee",
        allows: &[Standing::Person, Standing::HolderPresent],
        refusal: PERSON_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ApplyForCard",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder],
        refusal: TOKEN_FOR_ANOTHER_PERSON,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ReviewCardApplication",
        allows: &[Standing::Operator],
        refusal: CARD_APPLICATION_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/RecordCardProduction",
        allows: &[Standing::Operator],
        refusal: CARD_APPLICATION_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/RecordCardDispatch",
        allows: &[Standing::Operator],
        refusal: CARD_APPLICATION_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ConfirmCardDelivery",
        allows: &[Standing::Operator],
        refusal: CARD_APPLICATION_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/GetCardApplication",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::Binder, Standing::Employer],
        refusal: CARD_APPLICATION_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ListCardApplications",
        allows: &[Standing::Operator, Standing::Service],
        refusal: OPERATORS_ONLY,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ActivateCard",
        allows: &[Standing::HolderPresent],
        refusal: CARD_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/GetCard",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::Binder],
        refusal: CARD_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ReportCardLoss",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder],
        refusal: CARD_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/CancelCardLossReport",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder],
        refusal: CARD_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ReplaceCard",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder],
        refusal: CARD_NOT_FOUND,
    },
];

/// FamilyService: a binding the caller has no standing towards does not exist for them.
const NO_SUCH_BINDING: Refusal =
    Refusal { code: Code::NotFound, reason: Reason::BindingNotFound, message: "no such family binding" };

/// FamilyService at the counter: the owner's card and face were not verified at this counter
/// (the same answer for an unknown card, another person's card and a face check that failed).
const OWNER_NOT_PRESENT: Refusal = Refusal {
    code: Code::PermissionDenied,
    reason: Reason::OwnerNotPresent,
    message: "the owner's social security card and a passed face check at this counter are required",
};

/// FamilyService calls naming a person: a token of someone else (the answer the person-token
/// check always gave, whether or not the named person exists).
const TOKEN_NOT_THE_PERSONS: Refusal = Refusal {
    code: Code::PermissionDenied,
    reason: Reason::PersonTokenInvalid,
    message: "the person token is not this person's",
};

// Refusals of the CardService rows: what a missing card, application or person gets.
const CARD_NOT_FOUND: Refusal =
    Refusal { code: Code::NotFound, reason: Reason::CardNotFound, message: "no card with this number" };
const CARD_APPLICATION_NOT_FOUND: Refusal = Refusal {
    code: Code::NotFound,
    reason: Reason::CardApplicationNotFound,
    message: "no card application with this id",
};
const PERSON_NOT_FOUND: Refusal = Refusal {
    code: Code::NotFound,
    reason: Reason::PersonNotFound,
    message: "no person with this id for the token or identity shown",
};
const TOKEN_FOR_ANOTHER_PERSON: Refusal = Refusal {
    code: Code::PermissionDenied,
    reason: Reason::PersonTokenInvalid,
    message: "the person token is not the applicant's or their guardian's",
};
const OPERATORS_ONLY: Refusal = Refusal {
    code: Code::PermissionDenied,
    reason: Reason::PartnerKindNotAllowed,
    message: "only operators list card applications",
};

/// The rule of `method`, if it touches a person's data.
pub fn rule(method: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.method == method)
}

/// Decides whether a call to `method` with `facts` may go on, and as what. A method missing
/// from the table is refused (a wiring bug must not open access).
pub fn decide(method: &str, facts: &Facts) -> ApiResult<Standing> {
    let Some(rule) = rule(method) else {
        return Err(ApiError::new(Code::Internal, Reason::Internal, "no access rule for this method"));
    };
    facts
        .standings()
        .find(|standing| rule.allows.contains(standing))
        .ok_or_else(|| ApiError::new(rule.refusal.code, rule.refusal.reason, rule.refusal.message))
}
