//! Family bindings (DESIGN.md flow 5 and 6 "Family"): relationships, statuses and the rules of
//! AddFamilyMember in their contract order. Pure.

use chrono::NaiveDate;
use medins_common::{ApiError, ApiResult, Reason, error::require_uuid};
use uuid::Uuid;

use super::{document::DocumentKind, face::FaceOutcome};

/// How the member is related to the owner (the owner's view: PARENT = the member is the
/// owner's parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relationship {
    /// Husband or wife.
    Spouse,
    /// The owner's child (younger than the owner).
    Child,
    /// The owner's parent (older than the owner).
    Parent,
    /// The owner's grandparent (older than the owner).
    Grandparent,
    /// The owner's grandchild (younger than the owner).
    Grandchild,
    /// Brother or sister.
    Sibling,
    /// Another close relative.
    OtherCloseRelative,
}

impl Relationship {
    const ALL: [Relationship; 7] = [
        Relationship::Spouse,
        Relationship::Child,
        Relationship::Parent,
        Relationship::Grandparent,
        Relationship::Grandchild,
        Relationship::Sibling,
        Relationship::OtherCloseRelative,
    ];

    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Spouse => "SPOUSE",
            Relationship::Child => "CHILD",
            Relationship::Parent => "PARENT",
            Relationship::Grandparent => "GRANDPARENT",
            Relationship::Grandchild => "GRANDCHILD",
            Relationship::Sibling => "SIBLING",
            Relationship::OtherCloseRelative => "OTHER_CLOSE_RELATIVE",
        }
    }

    /// From the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Relationship::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Where a binding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingStatus {
    /// Waiting for the member's face check (members 16 and over).
    PendingFace,
    /// Bound: the owner may show the member's code and read their expenses.
    Active,
    /// The member's face check failed.
    Rejected,
    /// The member's face session expired unused.
    Expired,
    /// Removed by the owner or the member.
    Removed,
}

impl BindingStatus {
    const ALL: [BindingStatus; 5] = [
        BindingStatus::PendingFace,
        BindingStatus::Active,
        BindingStatus::Rejected,
        BindingStatus::Expired,
        BindingStatus::Removed,
    ];

    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingStatus::PendingFace => "PENDING_FACE",
            BindingStatus::Active => "ACTIVE",
            BindingStatus::Rejected => "REJECTED",
            BindingStatus::Expired => "EXPIRED",
            BindingStatus::Removed => "REMOVED",
        }
    }

    /// From the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        BindingStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Live bindings hold a quota place.
    pub fn is_live(self) -> bool {
        matches!(self, BindingStatus::PendingFace | BindingStatus::Active)
    }
}

/// Live bindings an owner may hold, pending ones included.
pub const FAMILY_QUOTA: i64 = 5;

/// Different persons who may bind one member in a calendar month.
pub const MONTHLY_BINDERS: i64 = 2;

/// The age from which a member must pass a face check to be bound.
pub const FACE_CHECK_AGE: i32 = 16;

/// The member's full legal name as sent, in the one name rule of both services
/// (`medins_common::name`: NFC, trimmed, 1-64 characters, no invisible characters;
/// INVALID_ARGUMENT / INVALID_NAME on `member_name` otherwise). identity-svc then checks it
/// against the ID number.
pub fn member_name(text: &str) -> ApiResult<String> {
    medins_common::name::require_name("member_name", text)
}

/// Rule 3: a person cannot bind themself.
pub fn require_not_self(owner: Uuid, member: Uuid) -> ApiResult<()> {
    if owner == member {
        return Err(ApiError::failed_precondition(Reason::CannotBindSelf, "a person cannot bind themself"));
    }
    Ok(())
}

/// What rules 4-6 look at, read under the owner's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Places {
    /// The owner already has a live binding of this member.
    pub already_bound: bool,
    /// The owner's live bindings.
    pub owner_live: i64,
    /// Other persons who bound the member this calendar month.
    pub other_binders_this_month: i64,
}

/// Rules 4, 5 and 6 in their order: not already bound, the owner's quota, the member's monthly
/// limit.
pub fn check_places(places: Places) -> ApiResult<()> {
    if places.already_bound {
        return Err(ApiError::already_exists(Reason::AlreadyBound, "this member is already bound by this person"));
    }
    if places.owner_live >= FAMILY_QUOTA {
        return Err(ApiError::new(
            tonic::Code::ResourceExhausted,
            Reason::FamilyQuotaExceeded,
            "5 family members are bound or pending: remove one first",
        ));
    }
    if places.other_binders_this_month >= MONTHLY_BINDERS {
        return Err(ApiError::new(
            tonic::Code::ResourceExhausted,
            Reason::MemberMonthlyLimit,
            "this member was already bound by 2 other persons this month",
        ));
    }
    Ok(())
}

/// Rule 7: parents and grandparents are older than the owner, children and grandchildren
/// younger (by birth date; the same day fits neither).
pub fn check_relationship_age(
    relationship: Relationship,
    owner_birth: NaiveDate,
    member_birth: NaiveDate,
) -> ApiResult<()> {
    let fits = match relationship {
        Relationship::Parent | Relationship::Grandparent => member_birth < owner_birth,
        Relationship::Child | Relationship::Grandchild => member_birth > owner_birth,
        Relationship::Spouse | Relationship::Sibling | Relationship::OtherCloseRelative => true,
    };
    if fits {
        Ok(())
    } else {
        Err(ApiError::failed_precondition(
            Reason::RelationshipAgeMismatch,
            "the relationship does not fit the ages of the owner and the member",
        ))
    }
}

/// The three documents of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingDocument {
    /// The owner's commitment letter.
    CommitmentLetter,
    /// The owner's household register page.
    OwnerHouseholdRegister,
    /// The member's household register page (uploaded by the owner).
    MemberHouseholdRegister,
}

impl BindingDocument {
    /// In the order they are checked.
    pub const ALL: [BindingDocument; 3] = [
        BindingDocument::CommitmentLetter,
        BindingDocument::OwnerHouseholdRegister,
        BindingDocument::MemberHouseholdRegister,
    ];

    /// The request field.
    pub fn field(self) -> &'static str {
        match self {
            BindingDocument::CommitmentLetter => "commitment_letter_document_id",
            BindingDocument::OwnerHouseholdRegister => "owner_household_register_document_id",
            BindingDocument::MemberHouseholdRegister => "member_household_register_document_id",
        }
    }

    /// ErrorInfo metadata `document`.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingDocument::CommitmentLetter => "commitment_letter",
            BindingDocument::OwnerHouseholdRegister => "owner_household_register",
            BindingDocument::MemberHouseholdRegister => "member_household_register",
        }
    }

    /// The kind it must be.
    pub fn kind(self) -> DocumentKind {
        match self {
            BindingDocument::CommitmentLetter => DocumentKind::CommitmentLetter,
            BindingDocument::OwnerHouseholdRegister | BindingDocument::MemberHouseholdRegister => {
                DocumentKind::HouseholdRegister
            }
        }
    }
}

/// A document id as sent: empty is `None` (rule 8 refuses it as DOCUMENT_MISSING, in its turn);
/// anything else must be a UUID (INVALID_ARGUMENT at once).
pub fn document_id(role: BindingDocument, text: &str) -> ApiResult<Option<Uuid>> {
    if text.is_empty() {
        return Ok(None);
    }
    require_uuid(role.field(), text).map(Some)
}

/// What rule 8 reads of a stored document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentFacts {
    /// Its owner.
    pub owner: Uuid,
    /// Its kind.
    pub kind: DocumentKind,
    /// The person it shows or names (a register page's person, a letter's member).
    pub subject: Option<Uuid>,
    /// A letter's relationship.
    pub relationship: Option<Relationship>,
}

/// The binding a document must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingParties {
    /// The owner (binder).
    pub owner: Uuid,
    /// The member.
    pub member: Uuid,
    /// The relationship asked for.
    pub relationship: Relationship,
}

/// Rule 8 for one document: present, known, the owner's, of the right kind
/// (FAILED_PRECONDITION / DOCUMENT_MISSING or DOCUMENT_INVALID), and tied to this binding
/// (FAILED_PRECONDITION / DOCUMENT_NOT_TIED, metadata `problem`): the commitment letter names
/// this member (`member`) and this relationship (`relationship`); the owner's household
/// register page shows the owner and the member's page the member (`subject`). A letter for
/// member A therefore never binds member B, and one page cannot stand for two persons.
/// Returns the checked id.
pub fn check_document(
    role: BindingDocument,
    id: Option<Uuid>,
    found: Option<DocumentFacts>,
    binding: BindingParties,
) -> ApiResult<Uuid> {
    let refuse = |reason: Reason, message: &str| -> ApiResult<Uuid> {
        Err(ApiError::failed_precondition(reason, format!("{}: {message}", role.field()))
            .with_metadata("document", role.as_str()))
    };
    let untied = |problem: &str, message: &str| -> ApiResult<Uuid> {
        Err(ApiError::failed_precondition(Reason::DocumentNotTied, format!("{}: {message}", role.field()))
            .with_metadata("document", role.as_str())
            .with_metadata("problem", problem))
    };
    let (id, found) = match (id, found) {
        (None, _) => return refuse(Reason::DocumentMissing, "required"),
        (Some(_), None) => return refuse(Reason::DocumentInvalid, "no such document"),
        (Some(id), Some(found)) => (id, found),
    };
    if found.owner != binding.owner {
        return refuse(Reason::DocumentInvalid, "not a document of the owner");
    }
    if found.kind != role.kind() {
        return refuse(Reason::DocumentInvalid, "the wrong kind of document");
    }
    match role {
        BindingDocument::CommitmentLetter => {
            if found.subject != Some(binding.member) {
                return untied("member", "the letter names another member");
            }
            if found.relationship != Some(binding.relationship) {
                return untied("relationship", "the letter states another relationship");
            }
        }
        BindingDocument::OwnerHouseholdRegister if found.subject != Some(binding.owner) => {
            return untied("subject", "the page is not the owner's");
        }
        BindingDocument::MemberHouseholdRegister if found.subject != Some(binding.member) => {
            return untied("subject", "the page is not the member's");
        }
        _ => {}
    }
    Ok(id)
}

/// Whether an ACTIVE binder of a member aged `member_age` with `relationship` is the member's
/// guardian, who acts for them where the platform's flows need it (uploads the minor's
/// documents, applies for the minor's card): the member is under
/// [`super::card::GUARDIAN_AGE`] (16, the age from which members pass their own face check and
/// apply for their own card), and the owner is not a parent, grandparent or spouse of theirs
/// (relationships in which the member is the older one cannot make a guardian).
pub fn is_guardian(relationship: Relationship, member_age: i32) -> bool {
    member_age < super::card::GUARDIAN_AGE
        && matches!(
            relationship,
            Relationship::Child | Relationship::Grandchild | Relationship::Sibling | Relationship::OtherCloseRelative
        )
}

/// Whether a member born on `birth` must pass a face check to be bound on `today`: from 1
/// January of the year of the 16th birthday on. The binding's status (ACTIVE at once or
/// PENDING_FACE) is visible to the owner's partners beside the binding date; decided on the exact
/// birthday it would tell them on which side of that date the member was born, narrowing the ID
/// number below what the views may give away. Decided by calendar year it tells only the birth
/// year, which the shown age already does, and errs towards more face checks, never fewer.
pub fn needs_face_check(birth: NaiveDate, today: NaiveDate) -> bool {
    use chrono::Datelike;
    today.year() - birth.year() >= FACE_CHECK_AGE
}

/// The calendar month of `today` (China Standard Time), as stored: `YYYY-MM`.
pub fn month_key(today: NaiveDate) -> String {
    today.format("%Y-%m").to_string()
}

/// Who ends a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remover {
    /// The owner (binder).
    Owner,
    /// The member.
    Member,
    /// An operator.
    Ops,
}

impl Remover {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Remover::Owner => "OWNER",
            Remover::Member => "MEMBER",
            Remover::Ops => "OPS",
        }
    }
}

/// Who a person token's subject is to a binding, for removal: the owner, the member (only from
/// 16: PERMISSION_DENIED / PERMISSION_DENIED_SCOPE before) or a stranger (`None`: the binding is
/// not theirs to see).
pub fn remover(
    binding_owner: Uuid,
    binding_member: Uuid,
    subject: Uuid,
    member_age: i32,
) -> ApiResult<Option<Remover>> {
    if subject == binding_owner {
        return Ok(Some(Remover::Owner));
    }
    if subject == binding_member {
        if member_age < FACE_CHECK_AGE {
            return Err(ApiError::new(
                tonic::Code::PermissionDenied,
                Reason::PermissionDeniedScope,
                "a member under 16 cannot remove a family binding themself",
            ));
        }
        return Ok(Some(Remover::Member));
    }
    Ok(None)
}

/// The binding as far as the face outcome decides it: PASSED activates, FAILED rejects,
/// EXPIRED expires.
pub fn status_after_face(outcome: FaceOutcome) -> BindingStatus {
    match outcome {
        FaceOutcome::Passed => BindingStatus::Active,
        FaceOutcome::Failed => BindingStatus::Rejected,
        FaceOutcome::Expired => BindingStatus::Expired,
    }
}

/// A live binding's status check for actions that need it ACTIVE: FAILED_PRECONDITION /
/// BINDING_NOT_ACTIVE otherwise.
pub fn require_active(status: BindingStatus) -> ApiResult<()> {
    if status == BindingStatus::Active {
        Ok(())
    } else {
        Err(ApiError::failed_precondition(Reason::BindingNotActive, "the family binding is not active")
            .with_metadata("binding_status", status.as_str()))
    }
}

/// On whose behalf a call acts for a person (IssueCode, GetAnnualExpenses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An operator or a medins service (exempt from person tokens).
    Operator,
    /// The person themself (token subject = the person).
    Person,
    /// A person holding an ACTIVE family binding of the person.
    Binder,
}

/// Decides who acts, from the subject of the caller's person token (`None`: an exempt operator
/// or service) and whether that subject holds an ACTIVE binding of `person`. Anyone else is
/// PERMISSION_DENIED / PERSON_TOKEN_INVALID.
pub fn actor_for(token_subject: Option<Uuid>, person: Uuid, subject_is_active_binder: bool) -> ApiResult<Actor> {
    match token_subject {
        None => Ok(Actor::Operator),
        Some(subject) if subject == person => Ok(Actor::Person),
        Some(_) if subject_is_active_binder => Ok(Actor::Binder),
        Some(_) => Err(ApiError::new(
            tonic::Code::PermissionDenied,
            Reason::PersonTokenInvalid,
            "the person token is neither this person's nor an active family binder's",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn places_are_checked_in_the_contract_order() {
        let all_wrong = Places { already_bound: true, owner_live: 5, other_binders_this_month: 2 };
        assert_eq!(check_places(all_wrong).unwrap_err().reason(), Reason::AlreadyBound);
        let full = Places { already_bound: false, ..all_wrong };
        let error = check_places(full).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::ResourceExhausted, Reason::FamilyQuotaExceeded));
        let busy = Places { owner_live: 4, ..full };
        assert_eq!(check_places(busy).unwrap_err().reason(), Reason::MemberMonthlyLimit);
        assert!(check_places(Places { other_binders_this_month: 1, ..busy }).is_ok());
    }

    #[test]
    fn parents_are_older_and_children_younger() {
        let owner = date(1990, 5, 1);
        assert!(check_relationship_age(Relationship::Parent, owner, date(1960, 1, 1)).is_ok());
        assert!(check_relationship_age(Relationship::Grandparent, owner, date(1940, 1, 1)).is_ok());
        assert!(check_relationship_age(Relationship::Child, owner, date(2020, 1, 1)).is_ok());
        for (relationship, member) in [
            (Relationship::Parent, date(2000, 1, 1)),
            (Relationship::Parent, owner),
            (Relationship::Grandparent, date(1991, 1, 1)),
            (Relationship::Child, date(1980, 1, 1)),
            (Relationship::Grandchild, owner),
        ] {
            let error = check_relationship_age(relationship, owner, member).unwrap_err();
            assert_eq!(error.reason(), Reason::RelationshipAgeMismatch, "{relationship:?}");
        }
        for relationship in [Relationship::Spouse, Relationship::Sibling, Relationship::OtherCloseRelative] {
            assert!(check_relationship_age(relationship, owner, date(1950, 1, 1)).is_ok());
            assert!(check_relationship_age(relationship, owner, date(2010, 1, 1)).is_ok());
        }
    }

    #[test]
    fn the_face_check_starts_in_the_calendar_year_of_the_16th_birthday() {
        let birth = date(2010, 11, 24);
        assert!(!needs_face_check(birth, date(2025, 12, 31)), "15 this year");
        assert!(needs_face_check(birth, date(2026, 1, 1)), "16 this year, 15 years 38 days old");
        assert!(needs_face_check(birth, date(2026, 11, 24)), "the 16th birthday");
        assert!(needs_face_check(date(2010, 1, 1), date(2026, 12, 31)), "16 years 364 days");
    }

    #[test]
    fn documents_must_be_present_known_the_owners_of_their_kind_and_tied_to_the_binding() {
        let (owner, member, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let binding = BindingParties { owner, member, relationship: Relationship::Child };
        let letter_id = Uuid::now_v7();
        let id = Some(letter_id);
        let letter = BindingDocument::CommitmentLetter;
        let facts = |owner, kind, subject, relationship| Some(DocumentFacts { owner, kind, subject, relationship });
        let good = facts(owner, DocumentKind::CommitmentLetter, Some(member), Some(Relationship::Child));
        let reason = |found, role| check_document(role, id, found, binding).unwrap_err().reason();
        assert_eq!(check_document(letter, None, None, binding).unwrap_err().reason(), Reason::DocumentMissing);
        assert_eq!(reason(None, letter), Reason::DocumentInvalid);
        let foreign = facts(other, DocumentKind::CommitmentLetter, Some(member), Some(Relationship::Child));
        assert_eq!(reason(foreign, letter), Reason::DocumentInvalid);
        let wrong_kind = facts(owner, DocumentKind::HouseholdRegister, Some(member), None);
        assert_eq!(reason(wrong_kind, letter), Reason::DocumentInvalid);
        assert_eq!(check_document(letter, id, good, binding).unwrap(), letter_id);
        // A letter for member A is refused for member B, and for another relationship.
        let for_other = facts(owner, DocumentKind::CommitmentLetter, Some(other), Some(Relationship::Child));
        let error = check_document(letter, id, for_other, binding).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::DocumentNotTied));
        let as_sibling = facts(owner, DocumentKind::CommitmentLetter, Some(member), Some(Relationship::Sibling));
        assert_eq!(reason(as_sibling, letter), Reason::DocumentNotTied);
        let unnamed = facts(owner, DocumentKind::CommitmentLetter, None, None);
        assert_eq!(reason(unnamed, letter), Reason::DocumentNotTied, "old letters bind nobody");
        // Register pages: the owner's shows the owner, the member's the member.
        let owners_page = facts(owner, DocumentKind::HouseholdRegister, Some(owner), None);
        let members_page = facts(owner, DocumentKind::HouseholdRegister, Some(member), None);
        assert!(check_document(BindingDocument::OwnerHouseholdRegister, id, owners_page, binding).is_ok());
        assert!(check_document(BindingDocument::MemberHouseholdRegister, id, members_page, binding).is_ok());
        assert_eq!(reason(owners_page, BindingDocument::MemberHouseholdRegister), Reason::DocumentNotTied);
        assert_eq!(reason(members_page, BindingDocument::OwnerHouseholdRegister), Reason::DocumentNotTied);
        assert_eq!(document_id(letter, "").unwrap(), None);
        assert!(document_id(letter, "letter").is_err());
    }

    #[test]
    fn a_guardian_binds_a_minor_as_an_elder() {
        assert!(is_guardian(Relationship::Child, 8));
        assert!(is_guardian(Relationship::Grandchild, 15));
        assert!(!is_guardian(Relationship::Child, 16), "16 and over act themselves");
        assert!(!is_guardian(Relationship::Parent, 10));
        assert!(!is_guardian(Relationship::Spouse, 15));
    }

    #[test]
    fn members_remove_themselves_from_16() {
        let (owner, member) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(remover(owner, member, owner, 10).unwrap(), Some(Remover::Owner));
        assert_eq!(remover(owner, member, member, 16).unwrap(), Some(Remover::Member));
        assert_eq!(remover(owner, member, member, 15).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(remover(owner, member, Uuid::now_v7(), 40).unwrap(), None);
    }

    #[test]
    fn the_person_an_active_binder_or_an_operator_acts() {
        let person = Uuid::now_v7();
        assert_eq!(actor_for(Some(person), person, false).unwrap(), Actor::Person);
        assert_eq!(actor_for(None, person, false).unwrap(), Actor::Operator);
        assert_eq!(actor_for(Some(Uuid::now_v7()), person, true).unwrap(), Actor::Binder);
        let error = actor_for(Some(Uuid::now_v7()), person, false).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::PermissionDenied, Reason::PersonTokenInvalid));
    }

    #[test]
    fn statuses_and_relationships_round_trip() {
        for status in BindingStatus::ALL {
            assert_eq!(BindingStatus::parse(status.as_str()), Some(status));
        }
        for relationship in Relationship::ALL {
            assert_eq!(Relationship::parse(relationship.as_str()), Some(relationship));
        }
        assert_eq!(month_key(date(2026, 1, 31)), "2026-01");
        assert_eq!(status_after_face(FaceOutcome::Failed), BindingStatus::Rejected);
    }
}
