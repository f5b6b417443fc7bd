//! The access table (docs/architecture.md#trust-model): for every RPC that reads or changes a
//! person's data, who may call it for whom. Scopes only say what kind of partner may call at all;
//! this says whose data it may touch. Every handler that touches a person's data asks [`decide`]
//! with the facts it read (the `service::access` helper gathers the common ones); nothing else in
//! the code decides access.
//!
//! Pure: no I/O. A caller with no relationship gets the rule's refusal, which is the same answer
//! a missing person or object gets, so a refusal tells nothing about existence.

use std::collections::BTreeSet;

use chrono::NaiveDateTime;
// The shared vocabulary (standings, rules, refusals) lives in `medins_common::access`; this
// module keeps insurance-svc's facts and its table.
pub use medins_common::access::{Refusal, Rule, Standing, is_counter_kind, kind_may_hold};
use medins_common::{ApiError, ApiResult, Reason, auth::PartnerKind};
use uuid::Uuid;

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
    /// Whether the token's subject is a guardian of `person` (see [`Standing::Guardian`]).
    pub guardian: bool,
}

impl Facts {
    /// The standings these facts give, strongest first.
    fn standings(&self) -> impl Iterator<Item = Standing> + '_ {
        [
            (kind_may_hold(Standing::Operator, self.caller), Standing::Operator),
            (kind_may_hold(Standing::Service, self.caller), Standing::Service),
            (self.token_subject == Some(self.person), Standing::Person),
            (self.binder && self.token_subject.is_some_and(|subject| subject != self.person), Standing::Binder),
            (self.counter_visit, Standing::Counter),
            (self.employer && kind_may_hold(Standing::Employer, self.caller), Standing::Employer),
            (self.present && kind_may_hold(Standing::Present, self.caller), Standing::Present),
            (self.holder_present && kind_may_hold(Standing::HolderPresent, self.caller), Standing::HolderPresent),
            (self.guardian && self.token_subject.is_some_and(|subject| subject != self.person), Standing::Guardian),
        ]
        .into_iter()
        .filter_map(|(holds, standing)| holds.then_some(standing))
    }
}

/// Whether an EMPLOYER partner speaking for `codes` is the employer of an account with
/// `account_employer_code` (EMPLOYEE accounts carry one, RESIDENT accounts none).
pub fn speaks_for(codes: &BTreeSet<String>, account_employer_code: Option<&str>) -> bool {
    account_employer_code.is_some_and(|code| codes.contains(code))
}

/// How long the counter that opened a visit stands as that visit's counter: long enough for an
/// inpatient stay to be settled at discharge; later, operators act.
pub const COUNTER_VISIT_DAYS: i64 = 30;

/// Whether partner `caller_id` is the counter of a visit opened by `visit_partner` at
/// `opened_at`, as of `now`.
pub fn counter_of_visit(caller_id: &str, visit_partner: &str, opened_at: NaiveDateTime, now: NaiveDateTime) -> bool {
    caller_id == visit_partner && now.signed_duration_since(opened_at) <= chrono::Duration::days(COUNTER_VISIT_DAYS)
}

/// Checks, from the request alone (before anything is looked up, so the answer says nothing
/// about any person), that an EMPLOYER partner names an employer code it speaks for: an
/// employer opens EMPLOYEE accounts and applies for cards only under its own codes.
pub fn require_own_employer_code(codes: &BTreeSet<String>, employer_code: &str) -> ApiResult<()> {
    if codes.contains(employer_code.trim()) {
        Ok(())
    } else {
        Err(ApiError::of(
            Reason::EmployerCodeNotHeld,
            "this employer partner does not speak for that employer code (partners file `employer_codes`)",
        ))
    }
}

/// The access table: one row per RPC that reads or changes a person's data. The contract
/// comment of each RPC says the same in words; `tests/e2e/access.rs` walks it.
pub const RULES: &[Rule] = &[
    // AccountService, VoucherService, CodeService, SettlementService
    // (docs/architecture.md#trust-model; tests/e2e/access.rs). AccountService
    Rule {
        method: "/medins.insurance.v1.AccountService/OpenAccount",
        allows: &[Standing::Operator, Standing::Person, Standing::HolderPresent, Standing::Employer],
        refusal: PERSON_TOKEN_NOT_THIS_PERSONS,
    },
    Rule {
        method: "/medins.insurance.v1.AccountService/GetAccount",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::Binder, Standing::Employer],
        refusal: NO_ACCOUNT,
    },
    Rule {
        method: "/medins.insurance.v1.AccountService/CreditContribution",
        allows: &[Standing::Operator, Standing::Employer],
        refusal: NO_ACCOUNT,
    },
    Rule {
        method: "/medins.insurance.v1.AccountService/ListAccountEntries",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::Employer],
        refusal: NO_ACCOUNT,
    },
    Rule {
        method: "/medins.insurance.v1.AccountService/SuspendAccount",
        allows: &[Standing::Operator],
        refusal: NO_ACCOUNT,
    },
    Rule {
        method: "/medins.insurance.v1.AccountService/ResumeAccount",
        allows: &[Standing::Operator],
        refusal: NO_ACCOUNT,
    },
    // VoucherService
    Rule {
        method: "/medins.insurance.v1.VoucherService/ActivateVoucher",
        allows: &[Standing::Person],
        refusal: PERSON_TOKEN_NOT_THIS_PERSONS,
    },
    Rule {
        method: "/medins.insurance.v1.VoucherService/GetVoucher",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::Binder],
        refusal: NO_VOUCHER,
    },
    Rule {
        method: "/medins.insurance.v1.VoucherService/SuspendVoucher",
        allows: &[Standing::Operator, Standing::Person],
        refusal: NO_VOUCHER,
    },
    Rule {
        method: "/medins.insurance.v1.VoucherService/ResumeVoucher",
        allows: &[Standing::Operator, Standing::Person],
        refusal: NO_VOUCHER,
    },
    // CodeService
    Rule {
        method: "/medins.insurance.v1.CodeService/IssueCode",
        allows: &[Standing::Person, Standing::Binder],
        refusal: PERSON_TOKEN_NOT_THIS_PERSONS,
    },
    Rule { method: "/medins.insurance.v1.CodeService/VerifyCode", allows: &[Standing::Counter], refusal: CODE_INVALID },
    // The card at the counter (issue 17 item 5; code.proto): the counter where the holder typed
    // the card's right PIN stands as the holder present (the handler knows it only after the
    // PIN); anything else is the answer an unknown card or a wrong PIN gets.
    Rule {
        method: "/medins.insurance.v1.CodeService/OpenVisitWithCard",
        allows: &[Standing::HolderPresent],
        refusal: CARD_OR_PIN_WRONG,
    },
    // SettlementService
    Rule { method: "/medins.insurance.v1.SettlementService/Settle", allows: &[Standing::Counter], refusal: NO_VISIT },
    // PreSettle: exactly Settle's row (the counter serving the visit), since it shows the same.
    Rule {
        method: "/medins.insurance.v1.SettlementService/PreSettle",
        allows: &[Standing::Counter],
        refusal: NO_VISIT,
    },
    Rule {
        method: "/medins.insurance.v1.SettlementService/ReverseSettlement",
        allows: &[Standing::Operator],
        refusal: NO_SETTLEMENT,
    },
    Rule {
        method: "/medins.insurance.v1.SettlementService/GetAnnualExpenses",
        allows: &[Standing::Operator, Standing::Service, Standing::Person, Standing::Binder],
        refusal: PERSON_TOKEN_NOT_THIS_PERSONS,
    },
    // A person's own settlement records (issue 17 item 6): the person, an ACTIVE binder (as for
    // GetAnnualExpenses), operators.
    Rule {
        method: "/medins.insurance.v1.SettlementService/ListSettlements",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder],
        refusal: PERSON_TOKEN_NOT_THIS_PERSONS,
    },
    Rule {
        method: "/medins.insurance.v1.SettlementService/GetSettlement",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder],
        refusal: NO_SETTLEMENT,
    },
    // ReimbursementService (issue 17 item 7; reimbursement.proto): the person or a guardian
    // submits, operators at the window too; operators alone review; a person's list as
    // ListSettlements (binders read).
    Rule {
        method: "/medins.insurance.v1.ReimbursementService/SubmitClaim",
        allows: &[Standing::Operator, Standing::Person, Standing::Guardian],
        refusal: TOKEN_NOT_PERSONS_OR_GUARDIANS,
    },
    Rule {
        method: "/medins.insurance.v1.ReimbursementService/ReviewClaim",
        allows: &[Standing::Operator],
        refusal: NO_CLAIM,
    },
    Rule {
        method: "/medins.insurance.v1.ReimbursementService/ListClaims",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder, Standing::Guardian],
        refusal: PERSON_TOKEN_NOT_THIS_PERSONS,
    },
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
    // PINs (issue 17 item 5): the holder changes theirs (own token, or present at a bank: the
    // handler admits a `holder` from BANK partners only), and so does the guardian of a minor
    // holder with the guardian's own token (an ACTIVE guardian binding, as for claims and
    // documents); a bank with the holder present or operators reset it. A person token never
    // resets a PIN.
    Rule {
        method: "/medins.insurance.v1.CardService/ChangeCardPin",
        allows: &[Standing::Person, Standing::Guardian, Standing::HolderPresent],
        refusal: CARD_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.CardService/ResetCardPin",
        allows: &[Standing::Operator, Standing::HolderPresent],
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
    // DocumentService (issue 14; contract: document.proto). A document belongs to its owner;
    // a guardian acts for a minor owner; nobody else learns that a document or owner exists.
    Rule {
        method: "/medins.insurance.v1.DocumentService/UploadDocument",
        allows: &[Standing::Operator, Standing::Person, Standing::Guardian],
        refusal: DOCUMENT_OWNER_REFUSAL,
    },
    Rule {
        method: "/medins.insurance.v1.DocumentService/GetDocument",
        allows: &[Standing::Operator, Standing::Person, Standing::Guardian],
        refusal: DOCUMENT_NOT_FOUND,
    },
    Rule {
        method: "/medins.insurance.v1.DocumentService/DownloadDocument",
        allows: &[Standing::Operator, Standing::Person, Standing::Guardian],
        refusal: DOCUMENT_NOT_FOUND,
    },
    // The letter is the owner's own commitment: a guardian does not sign it for a minor.
    Rule {
        method: "/medins.insurance.v1.DocumentService/GenerateCommitmentLetter",
        allows: &[Standing::Operator, Standing::Person],
        refusal: DOCUMENT_OWNER_REFUSAL,
    },
    // CrossRegionService: the person files and cancels (a guardian for a minor), binders read.
    Rule {
        method: "/medins.insurance.v1.CrossRegionService/FileCrossRegionCare",
        allows: &[Standing::Operator, Standing::Person, Standing::Guardian],
        refusal: TOKEN_NOT_PERSONS_OR_GUARDIANS,
    },
    Rule {
        method: "/medins.insurance.v1.CrossRegionService/ListCrossRegionFilings",
        allows: &[Standing::Operator, Standing::Person, Standing::Binder],
        refusal: PERSON_TOKEN_NOT_THIS_PERSONS,
    },
    Rule {
        method: "/medins.insurance.v1.CrossRegionService/CancelCrossRegionFiling",
        allows: &[Standing::Operator, Standing::Person, Standing::Guardian],
        refusal: TOKEN_NOT_PERSONS_OR_GUARDIANS,
    },
];

// Refusals of the rows above. Where the RPC names an object the refusal is that object's
// NOT_FOUND, word for word, so it cannot be told from a missing one.
const NO_ACCOUNT: Refusal = Refusal::of(Reason::AccountNotFound, "no such account");
const NO_VOUCHER: Refusal = Refusal::of(Reason::VoucherNotFound, "this person has not activated a voucher");
const NO_VISIT: Refusal = Refusal::of(Reason::VisitNotFound, "no such visit");
const NO_SETTLEMENT: Refusal = Refusal::of(Reason::SettlementNotFound, "no such settlement");
const NO_CLAIM: Refusal = Refusal::of(Reason::ClaimNotFound, "no such claim");
const CODE_INVALID: Refusal = Refusal::of(Reason::CodeInvalid, "invalid code: not a valid medins code");
// A person-named call with someone else's token: the answer does not depend on the named id.
const PERSON_TOKEN_NOT_THIS_PERSONS: Refusal = Refusal::permission_denied(
    Reason::PersonTokenInvalid,
    "the person token is neither this person's nor, where allowed, an active family binder's",
);

/// FamilyService: a binding the caller has no standing towards does not exist for them.
const NO_SUCH_BINDING: Refusal = Refusal::of(Reason::BindingNotFound, "no such family binding");

/// FamilyService at the counter: the owner's card and face were not verified at this counter
/// (the same answer for an unknown card, another person's card and a face check that failed).
const OWNER_NOT_PRESENT: Refusal = Refusal::of(
    Reason::OwnerNotPresent,
    "the owner's social security card and a passed face check at this counter are required",
);

/// FamilyService calls naming a person: a token of someone else (the answer the person-token
/// check always gave, whether or not the named person exists).
const TOKEN_NOT_THE_PERSONS: Refusal =
    Refusal::permission_denied(Reason::PersonTokenInvalid, "the person token is not this person's");

// Refusals of the CardService rows: what a missing card, application or person gets.
const CARD_NOT_FOUND: Refusal = Refusal::of(Reason::CardNotFound, "no card with this number");
const CARD_APPLICATION_NOT_FOUND: Refusal =
    Refusal::of(Reason::CardApplicationNotFound, "no card application with this id");
const PERSON_NOT_FOUND: Refusal =
    Refusal::of(Reason::PersonNotFound, "no person with this id for the token or identity shown");
const TOKEN_FOR_ANOTHER_PERSON: Refusal = Refusal::permission_denied(
    Reason::PersonTokenInvalid,
    "the person token is not the applicant's or their guardian's",
);
/// OpenVisitWithCard: the one answer for an unknown card, a card without a PIN and a wrong PIN
/// (`domain::card_pin::card_or_pin_wrong`, word for word).
const CARD_OR_PIN_WRONG: Refusal = Refusal::of(Reason::CardPinIncorrect, "the card number or the PIN is wrong");
const OPERATORS_ONLY: Refusal = Refusal::of(Reason::PartnerKindNotAllowed, "only operators list card applications");

/// A document named by id that the caller may not see: the answer an unknown id gets.
const DOCUMENT_NOT_FOUND: Refusal = Refusal::of(Reason::DocumentNotFound, "no such document");

/// A document for an owner the caller does not act for, decided from the token alone (the same
/// answer whether the owner exists or not).
const DOCUMENT_OWNER_REFUSAL: Refusal =
    Refusal::permission_denied(Reason::PersonTokenInvalid, "the person token is neither the owner's nor a guardian's");

/// A person-named call with a token that is neither the person's nor their guardian's (the same
/// answer whether the person exists or not).
const TOKEN_NOT_PERSONS_OR_GUARDIANS: Refusal = Refusal::permission_denied(
    Reason::PersonTokenInvalid,
    "the person token is neither this person's nor their guardian's",
);

/// Whether a response to a caller standing as `standing` carries the person's id
/// (`person_id` of a settlement or of the holder at VerifyCode). Not to a counter: it serves
/// the visit by the visit id (and the holder by the code or card they showed), and an id would
/// let it reach the person's data through other calls after the visit. The person, a binder,
/// operators and services read the id with the settlement (GetSettlement, ListSettlements).
pub fn shows_person_id(standing: Standing) -> bool {
    !matches!(standing, Standing::Counter | Standing::HolderPresent)
}

/// Whether a response to a caller standing as `standing` carries the id of an account the
/// person's bill charged (`charged_account_id` of a settlement: the holder's or a binder's
/// account). The same answer as [`shows_person_id`]: an account id reaches the person's (or the
/// binder's) data as well as a person id would, and a counter needs neither to serve the visit.
pub fn shows_account_id(standing: Standing) -> bool {
    shows_person_id(standing)
}

/// A change of a card's PIN: by the holder, who knows the old one (ChangeCardPin), or a reset
/// without it (ResetCardPin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinChange {
    /// ChangeCardPin.
    Change,
    /// ResetCardPin.
    Reset,
}

/// Which partner kinds may change or reset a card's PIN, and with what, decided from the request
/// alone (before any lookup, so the answer tells nothing about the card); the access table's
/// rows then decide for whom. A change: with the holder present (name and ID number) at a BANK
/// counter only, with the holder's token from any partner holding the scope. A reset: by OPS, or
/// by a BANK with the holder present (INVALID_ARGUMENT on `holder` when a bank sends none).
/// Anyone else: PERMISSION_DENIED / PARTNER_KIND_NOT_ALLOWED.
pub fn may_set_pin(change: PinChange, kind: PartnerKind, holder_shown: bool) -> ApiResult<()> {
    match (change, kind, holder_shown) {
        (PinChange::Change, PartnerKind::Bank, _) | (PinChange::Change, _, false) => Ok(()),
        (PinChange::Change, _, true) => Err(ApiError::of(
            Reason::PartnerKindNotAllowed,
            "only a BANK counter changes a PIN with the holder present; apps send the holder's token",
        )),
        (PinChange::Reset, PartnerKind::Ops, _) | (PinChange::Reset, PartnerKind::Bank, true) => Ok(()),
        (PinChange::Reset, PartnerKind::Bank, false) => Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "holder",
            "required: the holder shows their ID card at the bank's counter",
        )),
        (PinChange::Reset, _, _) => Err(ApiError::of(
            Reason::PartnerKindNotAllowed,
            "only a BANK counter with the holder present, or operators, reset a PIN",
        )),
    }
}

/// The person a call names, as far as the person-token rule ([`person_token`]) needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// Not read yet: the start of every call (`service::access::CallAccess::begin`).
    NotYet,
    /// Named by person id in the request, before anyone is looked up (OpenAccount): a counter
    /// acts for a person named that way only with the person's token.
    ById,
    /// The person whose data the call touches, once the handler knows.
    Person(Uuid),
}

/// What a call's person token means for the person it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMeaning {
    /// No token, no person yet, or someone else's token where the rule admits no binder or
    /// guardian: the token gives no standing.
    Nothing,
    /// The named person's own token.
    Own,
    /// Someone else's token where the rule admits binders or guardians: whether this subject
    /// holds an ACTIVE family binding of the person decides.
    AskBinding(Uuid),
}

/// The person-token rule, one place for every handler: whether a call to `rule` by a `caller`
/// partner may go on with the token it carries (`token_subject`, verified; `None`: none sent),
/// and what the token means for the person it names.
///
/// Refused PERSON_TOKEN_REQUIRED, whatever the request names (so the answer tells nothing about
/// anyone): no token where only the person or a binder could stand and the caller's kind holds
/// none of the rule's standings without one; and a counter naming a person by id without the
/// person's token (by name and ID number it needs none).
pub fn person_token(
    rule: &Rule,
    caller: PartnerKind,
    token_subject: Option<Uuid>,
    named: Named,
) -> ApiResult<TokenMeaning> {
    if token_subject.is_none() {
        // Only a rule that admits the person or a binder can be met with a token; anyone else
        // without a standing gets the rule's own refusal from `decide`.
        let token_could_help = rule.allows.iter().any(|s| matches!(s, Standing::Person | Standing::Binder));
        let stands_without = rule.allows.iter().any(|standing| kind_may_hold(*standing, caller));
        if token_could_help && !stands_without {
            return Err(ApiError::of(
                Reason::PersonTokenRequired,
                "this call acts for a person: send `x-person-token` (PersonTokenService.IssuePersonToken)",
            ));
        }
        if named == Named::ById && is_counter_kind(caller) {
            return Err(ApiError::of(
                Reason::PersonTokenRequired,
                "naming the person by id acts for them: send `x-person-token`, or name them by name and ID number",
            ));
        }
    }
    let wants_binding = rule.allows.iter().any(|s| matches!(s, Standing::Binder | Standing::Guardian));
    Ok(match (named, token_subject) {
        (Named::Person(person), Some(subject)) if subject == person => TokenMeaning::Own,
        (Named::Person(_), Some(subject)) if wants_binding => TokenMeaning::AskBinding(subject),
        _ => TokenMeaning::Nothing,
    })
}

/// The rule of `method`, if it touches a person's data.
pub fn rule(method: &str) -> Option<&'static Rule> {
    medins_common::access::find_rule(RULES, method)
}

/// Decides whether a call to `method` with `facts` may go on, and as what. A method missing
/// from the table is refused (a wiring bug must not open access).
pub fn decide(method: &str, facts: &Facts) -> ApiResult<Standing> {
    medins_common::access::decide(RULES, method, facts.standings())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn who_changes_or_resets_a_pin() {
        use PartnerKind::{Bank, Employer, Hospital, MiniProgram, Ops, Pharmacy};
        let refused = |change, kind, holder| may_set_pin(change, kind, holder).unwrap_err().reason();
        for kind in [Bank, MiniProgram, Hospital, Ops] {
            assert!(may_set_pin(PinChange::Change, kind, false).is_ok(), "{kind:?} with the holder's token");
        }
        assert!(may_set_pin(PinChange::Change, Bank, true).is_ok());
        for kind in [MiniProgram, Hospital, Pharmacy, Ops] {
            assert_eq!(refused(PinChange::Change, kind, true), Reason::PartnerKindNotAllowed, "{kind:?}");
        }
        assert!(may_set_pin(PinChange::Reset, Ops, false).is_ok());
        assert!(may_set_pin(PinChange::Reset, Bank, true).is_ok());
        assert_eq!(refused(PinChange::Reset, Bank, false), Reason::InvalidArgument);
        for kind in [MiniProgram, Hospital, Pharmacy, Employer] {
            for holder in [false, true] {
                assert_eq!(refused(PinChange::Reset, kind, holder), Reason::PartnerKindNotAllowed, "{kind:?}");
            }
        }
    }

    #[test]
    fn the_person_token_rule() {
        use PartnerKind::{Bank, Hospital, MiniProgram, Ops};
        let get = rule("/medins.insurance.v1.AccountService/GetAccount").unwrap();
        let open = rule("/medins.insurance.v1.AccountService/OpenAccount").unwrap();
        let file = rule("/medins.insurance.v1.CrossRegionService/FileCrossRegionCare").unwrap();
        let (person, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let reason = |rule, kind, subject, named| person_token(rule, kind, subject, named).unwrap_err().reason();

        // No token where only the person or a binder could stand: refused before any lookup.
        assert_eq!(reason(get, MiniProgram, None, Named::NotYet), Reason::PersonTokenRequired);
        assert_eq!(reason(get, MiniProgram, None, Named::Person(person)), Reason::PersonTokenRequired);
        // A kind holding one of the rule's standings without a token goes on.
        assert_eq!(person_token(get, Ops, None, Named::NotYet).unwrap(), TokenMeaning::Nothing);
        assert_eq!(person_token(open, Hospital, None, Named::NotYet).unwrap(), TokenMeaning::Nothing);
        // A counter naming the person by id needs the token; other kinds get the rule's answer.
        assert_eq!(reason(open, Hospital, None, Named::ById), Reason::PersonTokenRequired);
        assert_eq!(reason(open, Bank, None, Named::ById), Reason::PersonTokenRequired);
        assert_eq!(person_token(open, Ops, None, Named::ById).unwrap(), TokenMeaning::Nothing);
        assert_eq!(person_token(open, Hospital, Some(person), Named::ById).unwrap(), TokenMeaning::Nothing);

        // What the token means for the named person.
        assert_eq!(person_token(get, MiniProgram, Some(person), Named::Person(person)).unwrap(), TokenMeaning::Own);
        assert_eq!(
            person_token(get, MiniProgram, Some(other), Named::Person(person)).unwrap(),
            TokenMeaning::AskBinding(other)
        );
        assert_eq!(
            person_token(file, MiniProgram, Some(other), Named::Person(person)).unwrap(),
            TokenMeaning::AskBinding(other),
            "a guardian is asked through the binding too"
        );
        // A rule with no binder or guardian: someone else's token means nothing.
        assert_eq!(person_token(open, MiniProgram, Some(other), Named::Person(person)).unwrap(), TokenMeaning::Nothing);
        assert_eq!(person_token(get, MiniProgram, Some(other), Named::NotYet).unwrap(), TokenMeaning::Nothing);
    }

    #[test]
    fn a_counter_is_never_shown_a_person_id() {
        for standing in [Standing::Counter, Standing::HolderPresent] {
            assert!(!shows_person_id(standing), "{standing:?}");
            assert!(!shows_account_id(standing), "{standing:?}");
        }
        for standing in [Standing::Operator, Standing::Service, Standing::Person, Standing::Binder, Standing::Guardian]
        {
            assert!(shows_person_id(standing), "{standing:?}");
        }
    }

    const GET_ACCOUNT: &str = "/medins.insurance.v1.AccountService/GetAccount";
    const LEDGER: &str = "/medins.insurance.v1.AccountService/ListAccountEntries";
    const CREDIT: &str = "/medins.insurance.v1.AccountService/CreditContribution";
    const OPEN: &str = "/medins.insurance.v1.AccountService/OpenAccount";
    const SETTLE: &str = "/medins.insurance.v1.SettlementService/Settle";

    fn facts(caller: PartnerKind, person: Uuid) -> Facts {
        Facts {
            caller,
            token_subject: None,
            person,
            binder: false,
            counter_visit: false,
            employer: false,
            present: false,
            guardian: false,
            holder_present: false,
        }
    }

    #[test]
    fn every_row_names_a_method_once_and_refuses_someone() {
        let mut seen = std::collections::HashSet::new();
        for rule in RULES {
            assert!(seen.insert(rule.method), "{} appears twice", rule.method);
            assert!(rule.method.starts_with("/medins.insurance.v1."));
            assert!(!rule.allows.is_empty());
        }
        assert!(decide("/medins.insurance.v1.AccountService/Nope", &facts(PartnerKind::Ops, Uuid::nil())).is_err());
    }

    #[test]
    fn the_person_the_binder_and_the_employer_stand_as_the_rows_say() {
        let person = Uuid::now_v7();
        let other = Uuid::now_v7();
        let own = Facts { token_subject: Some(person), ..facts(PartnerKind::Bank, person) };
        assert_eq!(decide(GET_ACCOUNT, &own).unwrap(), Standing::Person);
        let strangers = Facts { token_subject: Some(other), ..facts(PartnerKind::Bank, person) };
        let refusal = decide(GET_ACCOUNT, &strangers).unwrap_err();
        assert_eq!((refusal.code(), refusal.reason()), (Code::NotFound, Reason::AccountNotFound));
        let binder = Facts { binder: true, ..strangers };
        assert_eq!(decide(GET_ACCOUNT, &binder).unwrap(), Standing::Binder);
        assert!(decide(LEDGER, &binder).is_err(), "a binder does not read the member's ledger");
        // The binder fact counts only with someone else's token.
        assert!(decide(GET_ACCOUNT, &Facts { binder: true, ..facts(PartnerKind::Bank, person) }).is_err());

        let employer = Facts { employer: true, ..facts(PartnerKind::Employer, person) };
        for method in [GET_ACCOUNT, LEDGER, CREDIT] {
            assert_eq!(decide(method, &employer).unwrap(), Standing::Employer, "{method}");
            assert!(decide(method, &facts(PartnerKind::Employer, person)).is_err(), "not its employee: {method}");
        }
        // The employer fact means nothing for another kind.
        assert!(decide(CREDIT, &Facts { employer: true, ..facts(PartnerKind::Bank, person) }).is_err());
    }

    #[test]
    fn presence_counts_at_a_counter_only_and_visits_only_for_their_counter() {
        let person = Uuid::now_v7();
        let present = |kind| Facts { holder_present: true, ..facts(kind, person) };
        assert_eq!(decide(OPEN, &present(PartnerKind::Bank)).unwrap(), Standing::HolderPresent);
        assert!(decide(OPEN, &present(PartnerKind::MiniProgram)).is_err());
        assert!(decide(GET_ACCOUNT, &present(PartnerKind::Bank)).is_err(), "presence opens, it does not read");

        let counter = Facts { counter_visit: true, ..facts(PartnerKind::Pharmacy, person) };
        assert_eq!(decide(SETTLE, &counter).unwrap(), Standing::Counter);
        let refusal = decide(SETTLE, &facts(PartnerKind::Hospital, person)).unwrap_err();
        assert_eq!((refusal.code(), refusal.reason()), (Code::NotFound, Reason::VisitNotFound));
        assert!(decide(SETTLE, &facts(PartnerKind::Ops, person)).is_err(), "operators reverse, they do not settle");

        let opened = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().and_hms_opt(8, 0, 0).unwrap();
        assert!(counter_of_visit("p", "p", opened, opened + chrono::Duration::days(COUNTER_VISIT_DAYS)));
        assert!(!counter_of_visit("p", "p", opened, opened + chrono::Duration::days(COUNTER_VISIT_DAYS + 1)));
        assert!(!counter_of_visit("q", "p", opened, opened));
    }

    #[test]
    fn an_employer_speaks_for_its_own_codes_only() {
        let codes: BTreeSet<String> = ["ACME-01".to_owned()].into();
        assert!(speaks_for(&codes, Some("ACME-01")));
        assert!(!speaks_for(&codes, Some("OTHER")));
        assert!(!speaks_for(&codes, None), "a RESIDENT account has no employer");
        assert!(require_own_employer_code(&codes, " ACME-01 ").is_ok());
        let refusal = require_own_employer_code(&codes, "OTHER").unwrap_err();
        assert_eq!((refusal.code(), refusal.reason()), (Code::PermissionDenied, Reason::EmployerCodeNotHeld));
        assert!(require_own_employer_code(&codes, "").is_err());
    }

    fn facts_with_token(caller: PartnerKind, subject: Option<Uuid>, person: Uuid) -> Facts {
        Facts { token_subject: subject, ..facts(caller, person) }
    }

    #[test]
    fn documents_are_the_owners_a_guardians_or_an_operators() {
        let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
        let upload = "/medins.insurance.v1.DocumentService/UploadDocument";
        let get = "/medins.insurance.v1.DocumentService/GetDocument";
        let letter = "/medins.insurance.v1.DocumentService/GenerateCommitmentLetter";
        let own = facts_with_token(PartnerKind::Bank, Some(owner), owner);
        assert_eq!(decide(upload, &own).unwrap(), Standing::Person);
        let guardian =
            Facts { guardian: true, binder: true, ..facts_with_token(PartnerKind::Bank, Some(other), owner) };
        assert_eq!(decide(upload, &guardian).unwrap(), Standing::Guardian);
        assert_eq!(decide(get, &guardian).unwrap(), Standing::Guardian);
        let error = decide(letter, &guardian).unwrap_err();
        assert_eq!((error.code(), error.reason()), (Code::PermissionDenied, Reason::PersonTokenInvalid));
        // A binder of an adult is no guardian; a stranger neither.
        let binder = Facts { binder: true, ..facts_with_token(PartnerKind::Bank, Some(other), owner) };
        assert_eq!(decide(upload, &binder).unwrap_err().reason(), Reason::PersonTokenInvalid);
        let error = decide(get, &facts_with_token(PartnerKind::MiniProgram, Some(other), owner)).unwrap_err();
        assert_eq!((error.code(), error.reason()), (Code::NotFound, Reason::DocumentNotFound));
        // A guardian flag never makes a person their own guardian, and hospitals get nothing.
        let own_flag = Facts { guardian: true, ..facts_with_token(PartnerKind::Bank, Some(owner), owner) };
        assert_eq!(decide(upload, &own_flag).unwrap(), Standing::Person);
        assert!(decide(get, &facts_with_token(PartnerKind::Hospital, None, owner)).is_err());
        assert_eq!(decide(get, &facts_with_token(PartnerKind::Ops, None, owner)).unwrap(), Standing::Operator);
    }
}
