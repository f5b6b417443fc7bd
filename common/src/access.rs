//! The access vocabulary both services share (docs/architecture.md#trust-model): how a caller
//! stands to the person whose data a call reads or changes ([`Standing`]), which partner kinds can
//! hold a standing without a person token ([`kind_may_hold`]), and the shape of an access table:
//! one [`Rule`] per RPC, naming the standings that may call it and the [`Refusal`] everyone else
//! gets.
//!
//! Each service keeps its own table (`RULES` in its `domain::access`) and its own facts (what
//! its handlers can know about a caller), and reads its table only through [`decide`]. Scopes
//! say what kind of partner may call an RPC at all; a table says for whom.
//!
//! Pure: no I/O.

use tonic::Code;

use crate::{ApiError, ApiResult, Reason, auth::PartnerKind};

/// How a caller stands to the person whose data a call reads or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standing {
    /// An OPS partner (operators act for anyone, and every such call is audited).
    Operator,
    /// A medins service (SERVICE partners: insurance-svc calling identity-svc, identity-svc's
    /// events, internal jobs).
    Service,
    /// The person: the call carries a person token for this person, issued to the caller.
    Person,
    /// A binder of this person, with the binder's own token issued to the caller. At
    /// insurance-svc: a person holding an ACTIVE family binding of this person. At identity-svc:
    /// the binder a family binding's face check names (the binder's phone runs the face check of
    /// an elder who has none), for that one session only.
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
    /// A guardian of this person: a person holding an ACTIVE family binding of them while they
    /// are a minor in the platform's sense (insurance-svc's `domain::family::is_guardian`), which
    /// is also who applies for a minor's card (CardService.ApplyForCard). The guardian's token,
    /// issued to the caller. Narrower than [`Standing::Binder`]: RPCs that let a guardian act for
    /// a minor (uploading the minor's documents) do not let a binder act for an adult member.
    Guardian,
    /// A person's front door (a BANK, MINI_PROGRAM or CITY_APP partner) taking them through the
    /// steps that come before any person token can exist: registering, SMS codes, real name,
    /// linking, a phone change (identity-svc). Held by the kind alone, for any person: what each
    /// step lets it learn is bounded by its RPC (a masked phone, a code sent to the person's own
    /// phone), and a step that needs the person proves them (an SMS code, a face).
    FrontDoor,
    /// The caller has a live partner link with this person (identity-svc's LinkPartnerAccount,
    /// after the person proved their phone): the partner the person chose. Held without a
    /// token: it is how a token is obtained (IssuePersonToken).
    Linked,
    /// A front door proving, for a phone change, the face of a person who cannot hold a token
    /// (no phone on record, so no SMS, no link): it starts a FACE_PURPOSE_PHONE_CHANGE session
    /// for them without a token and reads the sessions it started so (identity-svc). The
    /// session proves only that phone change.
    PhoneChangeStarter,
    /// A certified face-verification provider (a FACE_PROVIDER partner) deciding the face
    /// sessions bound to it (identity-svc; which provider a session is bound to is the
    /// session's own rule).
    FaceProvider,
}

/// Whether a partner of `kind` can hold `standing` without a person token (Person, Binder and
/// Guardian are held only through one). One answer for deciding (each service's facts) and for
/// asking for a token before any lookup.
pub fn kind_may_hold(standing: Standing, kind: PartnerKind) -> bool {
    match standing {
        Standing::Operator => kind == PartnerKind::Ops,
        Standing::Service => kind == PartnerKind::Service,
        Standing::Counter => matches!(kind, PartnerKind::Hospital | PartnerKind::Pharmacy),
        Standing::Employer => kind == PartnerKind::Employer,
        Standing::Present => matches!(kind, PartnerKind::Terminal | PartnerKind::Hospital),
        Standing::HolderPresent => is_counter_kind(kind),
        Standing::FrontDoor | Standing::PhoneChangeStarter => is_front_door_kind(kind),
        // Whoever may link (LinkPartnerAccount: front doors and operators) may hold a link.
        Standing::Linked => is_front_door_kind(kind) || kind == PartnerKind::Ops,
        Standing::FaceProvider => kind == PartnerKind::FaceProvider,
        Standing::Person | Standing::Binder | Standing::Guardian => false,
    }
}

/// Whether partners of `kind` serve people in person at a counter (banks, hospitals,
/// pharmacies): the only ones a holder can be present at.
pub fn is_counter_kind(kind: PartnerKind) -> bool {
    matches!(kind, PartnerKind::Bank | PartnerKind::Hospital | PartnerKind::Pharmacy)
}

/// Whether partners of `kind` are a person's front door: the apps and banks people register,
/// prove their phone and link their accounts through.
pub fn is_front_door_kind(kind: PartnerKind) -> bool {
    matches!(kind, PartnerKind::Bank | PartnerKind::MiniProgram | PartnerKind::CityApp)
}

/// What a caller without an allowed standing gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// NOT_FOUND where the RPC names an object (the same answer as a missing one), else
    /// PERMISSION_DENIED (or the precondition the RPC documents).
    pub code: Code,
    /// The ErrorInfo reason.
    pub reason: Reason,
    /// The message.
    pub message: &'static str,
}

impl Refusal {
    /// A refusal with the reason's own code ([`Reason::code`]).
    pub const fn of(reason: Reason, message: &'static str) -> Self {
        Refusal { code: reason.code(), reason, message }
    }

    /// PERMISSION_DENIED whatever the reason's own code (a valid token of another person).
    pub const fn permission_denied(reason: Reason, message: &'static str) -> Self {
        Refusal { code: Code::PermissionDenied, reason, message }
    }

    /// NOT_FOUND whatever the reason's own code (the answer a missing object gets).
    pub const fn not_found(reason: Reason, message: &'static str) -> Self {
        Refusal { code: Code::NotFound, reason, message }
    }

    /// The refusal as an error.
    pub fn error(&self) -> ApiError {
        ApiError::new(self.code, self.reason, self.message)
    }
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

impl Rule {
    /// Whether a person token can give a standing this rule allows (Person, Binder, Guardian).
    pub fn admits_token(&self) -> bool {
        self.allows.iter().any(|standing| matches!(standing, Standing::Person | Standing::Binder | Standing::Guardian))
    }
}

/// The row of `method` in `rules`, if it has one.
pub fn find_rule(rules: &'static [Rule], method: &str) -> Option<&'static Rule> {
    rules.iter().find(|rule| rule.method == method)
}

/// Decides whether a call to `method` by a caller holding `standings` (strongest first) may go
/// on, and as what: the first of them the row allows, else the row's refusal. A method missing
/// from `rules` is refused INTERNAL (a wiring bug must not open access).
pub fn decide(
    rules: &'static [Rule],
    method: &str,
    standings: impl IntoIterator<Item = Standing>,
) -> ApiResult<Standing> {
    let Some(rule) = find_rule(rules, method) else {
        return Err(ApiError::of(Reason::Internal, "no access rule for this method"));
    };
    standings.into_iter().find(|standing| rule.allows.contains(standing)).ok_or_else(|| rule.refusal.error())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSAL: Refusal = Refusal::of(Reason::AccountNotFound, "no such account");
    const RULES: &[Rule] =
        &[Rule { method: "/x.v1.S/Read", allows: &[Standing::Operator, Standing::Person], refusal: REFUSAL }];

    #[test]
    fn the_first_allowed_standing_wins_and_anyone_else_gets_the_rows_refusal() {
        assert_eq!(decide(RULES, "/x.v1.S/Read", [Standing::Binder, Standing::Person]).unwrap(), Standing::Person);
        let refused = decide(RULES, "/x.v1.S/Read", [Standing::Binder, Standing::Counter]).unwrap_err();
        assert_eq!((refused.code(), refused.reason()), (Code::NotFound, Reason::AccountNotFound));
        let unknown = decide(RULES, "/x.v1.S/Other", [Standing::Operator]).unwrap_err();
        assert_eq!(unknown.code(), Code::Internal, "a method without a row is refused");
        assert!(RULES[0].admits_token());
    }

    #[test]
    fn token_standings_are_never_held_by_kind_and_kind_standings_only_by_their_kinds() {
        for kind in PartnerKind::ALL {
            for standing in [Standing::Person, Standing::Binder, Standing::Guardian] {
                assert!(!kind_may_hold(standing, kind), "{standing:?} by {kind}");
            }
            assert_eq!(kind_may_hold(Standing::Operator, kind), kind == PartnerKind::Ops);
            assert_eq!(kind_may_hold(Standing::Service, kind), kind == PartnerKind::Service);
            assert_eq!(kind_may_hold(Standing::FaceProvider, kind), kind == PartnerKind::FaceProvider);
            assert_eq!(
                kind_may_hold(Standing::FrontDoor, kind),
                matches!(kind, PartnerKind::Bank | PartnerKind::MiniProgram | PartnerKind::CityApp)
            );
        }
        assert!(kind_may_hold(Standing::Linked, PartnerKind::Ops));
        assert!(!kind_may_hold(Standing::Linked, PartnerKind::Hospital));
        assert!(kind_may_hold(Standing::HolderPresent, PartnerKind::Bank));
        assert!(!kind_may_hold(Standing::HolderPresent, PartnerKind::MiniProgram));
    }
}
