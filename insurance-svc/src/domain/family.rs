//! Family bindings (docs/architecture.md#family): relationships, statuses and the rules of
//! AddFamilyMember in their contract order. Pure.

use chrono::{NaiveDate, NaiveDateTime};
use medins_common::{
    ApiError, ApiResult, Reason,
    error::require_uuid,
    validate::{PageSize, TextField},
};
use uuid::Uuid;

use super::{
    account::Account,
    document::{Document, DocumentKind},
    face::FaceOutcome,
    voucher::{VoucherStatus, require_insured},
};

medins_common::text_enum! {
    /// How the member is related to the owner (the owner's view: PARENT = the member is the
    /// owner's parent).
    pub enum Relationship {
        /// Husband or wife.
        Spouse => "SPOUSE",
        /// The owner's child (younger than the owner).
        Child => "CHILD",
        /// The owner's parent (older than the owner).
        Parent => "PARENT",
        /// The owner's grandparent (older than the owner).
        Grandparent => "GRANDPARENT",
        /// The owner's grandchild (younger than the owner).
        Grandchild => "GRANDCHILD",
        /// Brother or sister.
        Sibling => "SIBLING",
        /// Another close relative.
        OtherCloseRelative => "OTHER_CLOSE_RELATIVE",
    }
}

medins_common::text_enum! {
    /// Where a binding stands.
    pub enum BindingStatus {
        /// Waiting for the member's face check (members 16 and over).
        PendingFace => "PENDING_FACE",
        /// Waiting for an operator's review of the documents: the relationship-verification
        /// authority could not confirm the relationship (members under 16). No power until then.
        PendingReview => "PENDING_REVIEW",
        /// Bound: the owner may show the member's code and read their expenses.
        Active => "ACTIVE",
        /// The member's face check failed.
        Rejected => "REJECTED",
        /// The member's face session expired unused.
        Expired => "EXPIRED",
        /// Removed by the owner or the member.
        Removed => "REMOVED",
    }
}

impl BindingStatus {
    /// Live bindings hold a quota place.
    pub fn is_live(self) -> bool {
        matches!(self, BindingStatus::PendingFace | BindingStatus::PendingReview | BindingStatus::Active)
    }
}

medins_common::text_enum! {
    /// How a binding's relationship was proven before it became ACTIVE
    /// (docs/architecture.md#trust-model: a relationship gives power only once proven).
    pub enum RelationshipProof {
        /// The member (16 or over) passed their own FAMILY_BINDING face check: their consent.
        MemberFace => "MEMBER_FACE",
        /// The relationship-verification authority (household registration) confirmed it.
        Authority => "AUTHORITY",
        /// An operator reviewed the documents and approved.
        OperatorReview => "OPERATOR_REVIEW",
        /// An operator at the social security window saw the originals of both persons' ID cards,
        /// social security cards and household register pages.
        WindowAttestation => "WINDOW_ATTESTATION",
    }
}

medins_common::text_enum! {
    /// Where a binding was made.
    pub enum BindingChannel {
        /// Online, through a front door with the owner's person token.
        Online => "ONLINE",
        /// A self-service terminal (TERMINAL partner): the owner's social security card and a PASSED
        /// face session of the owner at the terminal.
        Terminal => "TERMINAL",
        /// The designated hospital's medical insurance office (HOSPITAL partner): card + face, as
        /// at a terminal.
        HospitalOffice => "HOSPITAL_OFFICE",
        /// The social security window (OPS partner): the operator attests the originals seen.
        Window => "WINDOW",
    }
}

/// The relationship-verification authority's answer (household registration check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationshipVerdict {
    /// The household register shows the member in this relationship to the owner.
    Confirmed,
    /// The register shows otherwise (another relationship, or none).
    Refuted,
    /// The authority cannot answer: not in its records (e.g. registered in another province),
    /// not asked (no owner identity sent), or unavailable. An operator reviews the documents.
    CannotAnswer,
}

/// What a new binding starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The member (16 or over) must pass their own face check.
    PendingFace,
    /// Proven already: ACTIVE at once.
    Active(RelationshipProof),
    /// Waiting for an operator's review of the documents, until the review deadline.
    PendingReview,
}

/// Decides what a binding that passed rules 1-8 starts as (rule 9, the relationship): a member
/// of 16 or over consents with their own face check; for a younger member the relationship must
/// be proven first: by an operator who saw the originals at the window, else by the authority
/// (a refutation refuses the binding: FAILED_PRECONDITION / RELATIONSHIP_NOT_CONFIRMED, nothing
/// written), else by an operator's review of the documents. `verdict` is `None` when the
/// authority was not asked (a member of 16 or over, or a window attestation).
pub fn admit(needs_face: bool, window_attested: bool, verdict: Option<RelationshipVerdict>) -> ApiResult<Admission> {
    if needs_face {
        return Ok(Admission::PendingFace);
    }
    if window_attested {
        return Ok(Admission::Active(RelationshipProof::WindowAttestation));
    }
    match verdict {
        Some(RelationshipVerdict::Confirmed) => Ok(Admission::Active(RelationshipProof::Authority)),
        Some(RelationshipVerdict::Refuted) => Err(ApiError::failed_precondition(
            Reason::RelationshipNotConfirmed,
            "the household registration authority does not confirm this relationship",
        )),
        Some(RelationshipVerdict::CannotAnswer) | None => Ok(Admission::PendingReview),
    }
}

/// Whether the authority must be asked: only for a member who needs no face check and was not
/// attested at the window.
pub fn asks_authority(needs_face: bool, window_attested: bool) -> bool {
    !needs_face && !window_attested
}

/// How long an operator has to review a binding before it expires, unless configured
/// (`--family-review-period`).
pub const DEFAULT_REVIEW_PERIOD: chrono::Duration = chrono::Duration::days(7);

/// An operator's decision on a PENDING_REVIEW binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewDecision {
    /// The documents prove the relationship: ACTIVE.
    Approve,
    /// They do not: REJECTED, with the reason recorded (and shown to the owner).
    Reject(String),
}

/// The longest rejection reason, in characters.
pub const REJECTION_REASON_MAX: usize = 200;

/// A rejection reason as sent: trimmed, 1-200 characters, no control characters
/// (INVALID_ARGUMENT / INVALID_ARGUMENT on `rejection_reason` otherwise). The operator writes
/// why the documents do not prove the relationship; it must not hold personal data.
pub fn rejection_reason(text: &str) -> ApiResult<String> {
    REJECTION_REASON.check("rejection_reason", text)
}

/// An operator's review as sent: APPROVE with no rejection reason, or REJECT with one
/// ([`rejection_reason`]); INVALID_ARGUMENT on `rejection_reason` otherwise.
pub fn review_decision(approve: bool, rejection_reason_text: &str) -> ApiResult<ReviewDecision> {
    match approve {
        true if rejection_reason_text.is_empty() => Ok(ReviewDecision::Approve),
        true => {
            Err(ApiError::invalid_field(Reason::InvalidArgument, "rejection_reason", "must be empty when approving"))
        }
        false => Ok(ReviewDecision::Reject(rejection_reason(rejection_reason_text)?)),
    }
}

/// Who switches a binding's family aid: the owner, or an operator (`token_subject` `None`: the
/// access table admitted the caller without a person token). The member's token (the only
/// other one the table admits) is PERMISSION_DENIED / PERSON_TOKEN_INVALID.
pub fn require_aid_switcher(owner: Uuid, token_subject: Option<Uuid>) -> ApiResult<()> {
    match token_subject {
        Some(subject) if subject != owner => {
            Err(ApiError::permission_denied(Reason::PersonTokenInvalid, "only the binder switches family aid"))
        }
        _ => Ok(()),
    }
}

/// A rejection reason: required, at most [`REJECTION_REASON_MAX`] characters.
pub const REJECTION_REASON: TextField = TextField { max_chars: REJECTION_REASON_MAX, required: true };

/// The page of ListFamilyBindingReviews: 0 is 50, at most 100, larger requests refused.
pub const REVIEW_PAGE: PageSize = PageSize { default: 50, max: 100, cap: false };

/// The status a review moves a binding to. Only a PENDING_REVIEW binding whose deadline has not
/// passed is reviewed; anything else is FAILED_PRECONDITION / BINDING_NOT_IN_REVIEW (a binding
/// past its deadline expires, whether or not the sweeper has reached it yet).
pub fn decide_review(
    status: BindingStatus,
    deadline: Option<chrono::NaiveDateTime>,
    now: chrono::NaiveDateTime,
    decision: &ReviewDecision,
) -> ApiResult<BindingStatus> {
    let open = status == BindingStatus::PendingReview && deadline.is_some_and(|deadline| now < deadline);
    if !open {
        return Err(ApiError::failed_precondition(Reason::BindingNotInReview, "the binding is not waiting for review")
            .with_metadata("binding_status", status.as_str()));
    }
    Ok(match decision {
        ReviewDecision::Approve => BindingStatus::Active,
        ReviewDecision::Reject(_) => BindingStatus::Rejected,
    })
}

/// Where a page of the review queue (oldest deadline first) continues: after this binding by
/// (review deadline, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewCursor {
    /// The last binding's review deadline.
    pub deadline: chrono::NaiveDateTime,
    /// The last binding's id.
    pub binding_id: Uuid,
}

const REVIEW_CURSOR_VERSION: &str = "r1";

impl ReviewCursor {
    /// The opaque token.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let micros = self.deadline.and_utc().timestamp_micros();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{REVIEW_CURSOR_VERSION}.{micros}.{}", self.binding_id))
    }

    /// Parses a token: INVALID_ARGUMENT naming `page_token` when it is not one of ours.
    pub fn decode(token: &str) -> ApiResult<ReviewCursor> {
        use base64::Engine;
        let invalid = || ApiError::invalid_field(Reason::InvalidArgument, "page_token", "not a token of this listing");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.split('.');
        let (Some(REVIEW_CURSOR_VERSION), Some(micros), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let deadline = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?.naive_utc();
        Ok(ReviewCursor { deadline, binding_id: Uuid::parse_str(id).map_err(|_| invalid())? })
    }
}

/// A page size as sent: 0 is 50, 1-100 as is, anything else INVALID_ARGUMENT on `page_size`.
pub fn page_size(size: i32) -> ApiResult<i64> {
    let size = REVIEW_PAGE.check("page_size", size)?;
    // At most REVIEW_PAGE.max (100): always fits.
    Ok(i64::try_from(size).unwrap_or(i64::MAX))
}

/// The version of the family-binding notice (the text telling the owner what a binding lets
/// them do and what they commit to) that partners must show and the owner must accept. A
/// binding records the version accepted and when; any other version is refused.
pub const CURRENT_NOTICE_VERSION: &str = "FBN-2026-12";

/// Earlier notice versions: refused like unknown ones, but named in the message so a partner
/// knows to update its text.
pub const RETIRED_NOTICE_VERSIONS: &[&str] = &["FBN-2026-01"];

/// The accepted notice version as sent: empty is INVALID_ARGUMENT / NOTICE_NOT_ACCEPTED; a
/// version other than [`CURRENT_NOTICE_VERSION`] is FAILED_PRECONDITION /
/// NOTICE_VERSION_NOT_CURRENT (ErrorInfo metadata `current_version`).
pub fn accepted_notice_version(text: &str) -> ApiResult<&'static str> {
    if text.is_empty() {
        return Err(ApiError::invalid_field(
            Reason::NoticeNotAccepted,
            "accepted_notice_version",
            "the owner must accept the family-binding notice",
        ));
    }
    if text == CURRENT_NOTICE_VERSION {
        return Ok(CURRENT_NOTICE_VERSION);
    }
    let message = if RETIRED_NOTICE_VERSIONS.contains(&text) {
        "the accepted notice version is retired: show the current notice"
    } else {
        "the accepted notice version is unknown: show the current notice"
    };
    Err(ApiError::failed_precondition(Reason::NoticeVersionNotCurrent, message)
        .with_metadata("current_version", CURRENT_NOTICE_VERSION))
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

/// Rule 1: the owner's voucher is ACTIVE (`status`: the owner's voucher, `None` without one);
/// otherwise FAILED_PRECONDITION / VOUCHER_NOT_ACTIVE.
pub fn require_owner_voucher(status: Option<VoucherStatus>) -> ApiResult<()> {
    match status {
        Some(VoucherStatus::Active) => Ok(()),
        Some(VoucherStatus::Suspended) | None => Err(ApiError::failed_precondition(
            Reason::VoucherNotActive,
            "the owner's voucher is not active: activate it first",
        )),
    }
}

/// Rule 2: the member is insured (an ACTIVE account, `require_insured`), and their birth date
/// from that account (the age rules' fact).
pub fn insured_member_birth_date(account: Option<&Account>) -> ApiResult<NaiveDate> {
    require_insured(account.map(|account| account.status))?;
    account
        .map(|account| account.birth_date)
        .ok_or_else(|| ApiError::internal("an insured member without an open account"))
}

/// Rule 7's owner fact: the owner's birth date from their open account; none is
/// FAILED_PRECONDITION / NOT_INSURED.
pub fn owner_birth_date(account: Option<&Account>) -> ApiResult<NaiveDate> {
    account
        .map(|account| account.birth_date)
        .ok_or_else(|| ApiError::failed_precondition(Reason::NotInsured, "the owner has no open insured account"))
}

/// Rule 9, when the relationship is asked of the authority: the owner's name and ID number sent
/// with the request must be the owner's (`matched`: whom identity-svc matched them to);
/// otherwise FAILED_PRECONDITION / NAME_MISMATCH.
pub fn require_owner_named(matched: Option<Uuid>, owner: Uuid) -> ApiResult<()> {
    if matched != Some(owner) {
        return Err(ApiError::failed_precondition(
            Reason::NameMismatch,
            "owner_name and owner_id_number are not the owner's",
        ));
    }
    Ok(())
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
        return Err(ApiError::of(
            Reason::FamilyQuotaExceeded,
            "5 family members are bound or pending: remove one first",
        ));
    }
    if places.other_binders_this_month >= MONTHLY_BINDERS {
        return Err(ApiError::of(
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

impl From<&Document> for DocumentFacts {
    fn from(document: &Document) -> Self {
        DocumentFacts {
            owner: document.owner_person_id,
            kind: document.kind,
            subject: document.subject_person_id,
            relationship: document.relationship,
        }
    }
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

medins_common::text_enum! {
    /// Who ends a binding.
    pub enum Remover {
        /// The owner (binder).
        Owner => "OWNER",
        /// The member.
        Member => "MEMBER",
        /// An operator.
        Ops => "OPS",
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
            return Err(ApiError::of(
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
    // (Only PENDING_FACE bindings take face outcomes: see `store::family::apply_face_outcome`.)
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

/// A family binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Binding id.
    pub id: Uuid,
    /// The person who bound the member (the binder).
    pub owner_person_id: Uuid,
    /// The bound member.
    pub member_person_id: Uuid,
    /// How the member is related to the owner.
    pub relationship: Relationship,
    /// Status.
    pub status: BindingStatus,
    /// The member's birth date (age rules and displays).
    pub member_birth_date: NaiveDate,
    /// The member's FAMILY_BINDING face session (members 16 and over).
    pub face_session_id: Option<Uuid>,
    /// The commitment letter.
    pub commitment_letter_id: Uuid,
    /// The owner's household register page.
    pub owner_register_id: Uuid,
    /// The member's household register page.
    pub member_register_id: Uuid,
    /// Whether the owner pays the member's bills from their own individual account.
    pub family_aid: bool,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Became ACTIVE.
    pub activated_at: Option<NaiveDateTime>,
    /// Ended (REJECTED, EXPIRED, REMOVED).
    pub ended_at: Option<NaiveDateTime>,
    /// How the relationship was proven (set once ACTIVE).
    pub relationship_proof: Option<RelationshipProof>,
    /// PENDING_REVIEW: when it expires unreviewed.
    pub review_deadline: Option<NaiveDateTime>,
    /// An operator's rejection reason.
    pub rejection_reason: Option<String>,
    /// The notice version the owner accepted, and when (absent on bindings made before).
    pub notice: Option<(String, NaiveDateTime)>,
    /// Where it was made.
    pub channel: BindingChannel,
}

/// A face check at a counter proves the owner's presence for one binding: a session that
/// already served one is PERMISSION_DENIED / OWNER_NOT_PRESENT.
pub fn require_unused_owner_face(already_served: bool) -> ApiResult<()> {
    if already_served {
        return Err(ApiError::of(Reason::OwnerNotPresent, "this face check already served a binding: run a new one"));
    }
    Ok(())
}

/// The places a new binding competes for, read under the owner's lock: whether the owner
/// already has a live binding of the member, the owner's taken quota slots (one per live
/// binding), and the member's binder-month slots of the month (binder, slot).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotFacts {
    /// The owner already has a live binding of this member.
    pub already_bound: bool,
    /// The quota slots (1 to [`FAMILY_QUOTA`]) of the owner's live bindings.
    pub owner_slots: Vec<i32>,
    /// Who bound the member this month, and the slot (1 to [`MONTHLY_BINDERS`]) each took.
    pub member_month: Vec<(Uuid, i32)>,
}

impl SlotFacts {
    /// What rules 4-6 look at, for a binding by `owner`.
    pub fn places(&self, owner: Uuid) -> Places {
        Places {
            already_bound: self.already_bound,
            owner_live: self.owner_slots.len() as i64,
            other_binders_this_month: self.member_month.iter().filter(|(binder, _)| *binder != owner).count() as i64,
        }
    }
}

/// The places a new binding takes: the owner's lowest free quota slot, and the member's
/// lowest free binder-month slot unless the owner holds one this month already (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// The owner's quota slot.
    pub quota_slot: i32,
    /// The member's binder-month slot to take, if the owner holds none this month.
    pub month_slot: Option<i32>,
}

/// Rules 4-6 ([`check_places`]) on the places read, then the slots a new binding by `owner`
/// takes. The unique indexes on the slots make a concurrent binding on another replica lose
/// its race instead of exceeding a limit.
pub fn allocate_slots(owner: Uuid, facts: &SlotFacts) -> ApiResult<Slots> {
    check_places(facts.places(owner))?;
    let quota_slot = (1..=FAMILY_QUOTA as i32)
        .find(|slot| !facts.owner_slots.contains(slot))
        .ok_or_else(|| ApiError::internal("family quota: no free slot after the check"))?;
    let month_slot = if facts.member_month.iter().any(|(binder, _)| *binder == owner) {
        None
    } else {
        let free = (1..=MONTHLY_BINDERS as i32).find(|slot| !facts.member_month.iter().any(|(_, taken)| taken == slot));
        Some(free.ok_or_else(|| ApiError::internal("binder months: no free slot after the check"))?)
    };
    Ok(Slots { quota_slot, month_slot })
}

/// How a new binding starts, from its [`Admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Its status.
    pub status: BindingStatus,
    /// How the relationship was proven, when it starts ACTIVE.
    pub proof: Option<RelationshipProof>,
    /// When it became ACTIVE (now, when it starts so).
    pub activated_at: Option<NaiveDateTime>,
    /// PENDING_REVIEW: when it expires unreviewed.
    pub review_deadline: Option<NaiveDateTime>,
    /// Whether the member's voucher is activated now (channel FAMILY).
    pub activates_member_voucher: bool,
}

/// The start of a binding admitted as `admission` at `now`; a review has `review_period`.
pub fn start(admission: Admission, now: NaiveDateTime, review_period: chrono::Duration) -> Start {
    match admission {
        Admission::PendingFace => Start {
            status: BindingStatus::PendingFace,
            proof: None,
            activated_at: None,
            review_deadline: None,
            activates_member_voucher: false,
        },
        Admission::PendingReview => Start {
            status: BindingStatus::PendingReview,
            proof: None,
            activated_at: None,
            review_deadline: Some(now + review_period),
            activates_member_voucher: false,
        },
        Admission::Active(proof) => Start {
            status: BindingStatus::Active,
            proof: Some(proof),
            activated_at: Some(now),
            review_deadline: None,
            activates_member_voucher: true,
        },
    }
}

/// A change of a live binding's status, as it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new status: ACTIVE keeps the binding's place; any other ends it (`ended_at`, the
    /// place freed).
    pub to: BindingStatus,
    /// How the relationship was proven, when it becomes ACTIVE.
    pub proof: Option<RelationshipProof>,
    /// Who removed it (REMOVED).
    pub removed_by: Option<Remover>,
    /// An operator's rejection reason (REJECTED by review).
    pub rejection_reason: Option<String>,
    /// Whether the member's voucher is activated (channel FAMILY): it became ACTIVE.
    pub activates_member_voucher: bool,
}

impl Transition {
    fn to(to: BindingStatus, proof: Option<RelationshipProof>) -> Self {
        Transition {
            to,
            proof,
            removed_by: None,
            rejection_reason: None,
            activates_member_voucher: to == BindingStatus::Active,
        }
    }

    /// Whether the binding keeps its quota place (it is still live).
    pub fn keeps_place(&self) -> bool {
        self.to.is_live()
    }
}

/// A FAMILY_BINDING face outcome on a PENDING_FACE binding ([`status_after_face`]): PASSED
/// activates it, the member's own face being the proof; FAILED and EXPIRED end it.
pub fn face_transition(outcome: FaceOutcome) -> Transition {
    let to = status_after_face(outcome);
    Transition::to(to, (to == BindingStatus::Active).then_some(RelationshipProof::MemberFace))
}

/// An operator's review ([`decide_review`]): APPROVE activates (proof OPERATOR_REVIEW), REJECT
/// ends it with the reason.
pub fn review_transition(
    status: BindingStatus,
    deadline: Option<NaiveDateTime>,
    now: NaiveDateTime,
    decision: &ReviewDecision,
) -> ApiResult<Transition> {
    let to = decide_review(status, deadline, now, decision)?;
    Ok(match decision {
        ReviewDecision::Approve => Transition::to(to, Some(RelationshipProof::OperatorReview)),
        ReviewDecision::Reject(reason) => {
            Transition { rejection_reason: Some(reason.clone()), ..Transition::to(to, None) }
        }
    })
}

/// What removing a binding does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The binding's change: REMOVED by the remover, its place freed.
    pub transition: Transition,
    /// Whether the member's voucher is suspended, if the member never activated it themself
    /// (the voucher cascade): the binding was ACTIVE and the member keeps no other ACTIVE
    /// binding.
    pub suspends_member_voucher: bool,
}

/// Removes a binding in `status` by `by`, the member holding `other_active` other ACTIVE
/// bindings: a live binding is removed (FAILED_PRECONDITION / BINDING_NOT_ACTIVE when it has
/// ended already).
pub fn decide_removal(status: BindingStatus, by: Remover, other_active: i64) -> ApiResult<Removal> {
    if !status.is_live() {
        require_active(status)?;
    }
    Ok(Removal {
        transition: Transition { removed_by: Some(by), ..Transition::to(BindingStatus::Removed, None) },
        suspends_member_voucher: status == BindingStatus::Active && other_active == 0,
    })
}

/// Switching family aid on or off for a binding in `status`: only an ACTIVE binding
/// (FAILED_PRECONDITION / BINDING_NOT_ACTIVE); switching it on also needs the family-aid
/// policy to let the owner's account (`payer_scheme`; `None`: no open account) pay for the
/// member's relationship ([`super::settlement::require_family_aid_eligible`]).
pub fn decide_family_aid_switch(
    status: BindingStatus,
    enabled: bool,
    policy: &super::settlement::FamilyAidPolicy,
    payer_scheme: Option<super::account::Scheme>,
    relationship: Relationship,
) -> ApiResult<()> {
    require_active(status)?;
    if enabled {
        super::settlement::require_family_aid_eligible(policy, payer_scheme, relationship)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::{AccountStatus, Scheme};

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn at(h: u32) -> NaiveDateTime {
        date(2026, 5, 1).and_hms_opt(h, 0, 0).unwrap()
    }

    fn account(status: AccountStatus, birth_date: NaiveDate) -> Account {
        Account {
            id: Uuid::now_v7(),
            person_id: Uuid::now_v7(),
            scheme: Scheme::Resident,
            region_code: "110101".into(),
            employer_code: None,
            status,
            balance_cents: 0,
            birth_date,
            opened_at: at(8),
        }
    }

    fn code_and_reason(error: ApiError) -> (tonic::Code, Reason) {
        (error.code(), error.reason())
    }

    #[test]
    fn the_owner_binds_with_an_active_voucher_only() {
        assert!(require_owner_voucher(Some(VoucherStatus::Active)).is_ok());
        for refused in [Some(VoucherStatus::Suspended), None] {
            let error = require_owner_voucher(refused).unwrap_err();
            assert_eq!(code_and_reason(error), (tonic::Code::FailedPrecondition, Reason::VoucherNotActive));
        }
    }

    #[test]
    fn the_member_must_be_insured_and_the_owner_must_have_an_open_account() {
        let born = date(1950, 3, 9);
        assert_eq!(insured_member_birth_date(Some(&account(AccountStatus::Active, born))).unwrap(), born);
        let suspended = insured_member_birth_date(Some(&account(AccountStatus::Suspended, born))).unwrap_err();
        assert_eq!(code_and_reason(suspended), (tonic::Code::FailedPrecondition, Reason::NotInsured));
        let none = insured_member_birth_date(None).unwrap_err();
        assert_eq!(code_and_reason(none), (tonic::Code::FailedPrecondition, Reason::NotInsured));
        // The owner's age fact needs an open account, not an active one (rule 1 already asked
        // for an active voucher).
        assert_eq!(owner_birth_date(Some(&account(AccountStatus::Suspended, born))).unwrap(), born);
        let no_owner = owner_birth_date(None).unwrap_err();
        assert_eq!(code_and_reason(no_owner), (tonic::Code::FailedPrecondition, Reason::NotInsured));
    }

    #[test]
    fn the_owner_named_for_the_authority_must_be_the_owner() {
        let owner = Uuid::now_v7();
        assert!(require_owner_named(Some(owner), owner).is_ok());
        for matched in [Some(Uuid::now_v7()), None] {
            let error = require_owner_named(matched, owner).unwrap_err();
            assert_eq!(code_and_reason(error), (tonic::Code::FailedPrecondition, Reason::NameMismatch));
        }
    }

    #[test]
    fn a_new_binding_takes_the_lowest_free_slots() {
        let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
        let fresh = SlotFacts::default();
        assert_eq!(allocate_slots(owner, &fresh).unwrap(), Slots { quota_slot: 1, month_slot: Some(1) });
        let facts = SlotFacts { already_bound: false, owner_slots: vec![1, 3], member_month: vec![(other, 1)] };
        assert_eq!(allocate_slots(owner, &facts).unwrap(), Slots { quota_slot: 2, month_slot: Some(2) });
        // The owner already bound the member this month (another binding since ended): no new month slot.
        let again = SlotFacts { member_month: vec![(other, 1), (owner, 2)], ..facts };
        assert_eq!(allocate_slots(owner, &again).unwrap(), Slots { quota_slot: 2, month_slot: None });
        assert_eq!(again.places(owner), Places { already_bound: false, owner_live: 2, other_binders_this_month: 1 });
    }

    #[test]
    fn slots_are_refused_by_rules_4_to_6_in_order() {
        let (owner, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let bound =
            SlotFacts { already_bound: true, owner_slots: vec![1, 2, 3, 4, 5], member_month: vec![(a, 1), (b, 2)] };
        assert_eq!(allocate_slots(owner, &bound).unwrap_err().reason(), Reason::AlreadyBound);
        let full = SlotFacts { already_bound: false, ..bound.clone() };
        let error = allocate_slots(owner, &full).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::ResourceExhausted, Reason::FamilyQuotaExceeded));
        let month = SlotFacts { owner_slots: vec![1], ..full };
        assert_eq!(allocate_slots(owner, &month).unwrap_err().reason(), Reason::MemberMonthlyLimit);
        // Two binders this month, one of them this owner: the owner keeps its month slot.
        let own = SlotFacts { already_bound: false, owner_slots: vec![], member_month: vec![(a, 1), (owner, 2)] };
        assert_eq!(allocate_slots(owner, &own).unwrap().month_slot, None);
    }

    #[test]
    fn a_binding_starts_as_admitted() {
        let week = chrono::Duration::days(7);
        let face = start(Admission::PendingFace, at(1), week);
        assert_eq!(
            (face.status, face.proof, face.activated_at, face.review_deadline),
            (BindingStatus::PendingFace, None, None, None)
        );
        assert!(!face.activates_member_voucher);
        let review = start(Admission::PendingReview, at(1), week);
        assert_eq!((review.status, review.review_deadline), (BindingStatus::PendingReview, Some(at(1) + week)));
        assert!(!review.activates_member_voucher);
        let active = start(Admission::Active(RelationshipProof::Authority), at(1), week);
        assert_eq!(
            (active.status, active.proof, active.activated_at),
            (BindingStatus::Active, Some(RelationshipProof::Authority), Some(at(1)))
        );
        assert!(active.activates_member_voucher);
    }

    #[test]
    fn a_face_outcome_activates_or_ends_the_binding() {
        let passed = face_transition(FaceOutcome::Passed);
        assert_eq!((passed.to, passed.proof), (BindingStatus::Active, Some(RelationshipProof::MemberFace)));
        assert!(passed.keeps_place() && passed.activates_member_voucher);
        for (outcome, to) in
            [(FaceOutcome::Failed, BindingStatus::Rejected), (FaceOutcome::Expired, BindingStatus::Expired)]
        {
            let ended = face_transition(outcome);
            assert_eq!((ended.to, ended.proof), (to, None));
            assert!(!ended.keeps_place() && !ended.activates_member_voucher);
        }
    }

    #[test]
    fn a_review_transition_records_its_proof_or_reason() {
        let deadline = Some(at(10));
        let approved =
            review_transition(BindingStatus::PendingReview, deadline, at(9), &ReviewDecision::Approve).unwrap();
        assert_eq!((approved.to, approved.proof), (BindingStatus::Active, Some(RelationshipProof::OperatorReview)));
        assert!(approved.activates_member_voucher && approved.keeps_place());
        let reject = ReviewDecision::Reject("register page unreadable".into());
        let rejected = review_transition(BindingStatus::PendingReview, deadline, at(9), &reject).unwrap();
        assert_eq!(
            (rejected.to, rejected.rejection_reason.as_deref()),
            (BindingStatus::Rejected, Some("register page unreadable"))
        );
        assert!(!rejected.keeps_place() && !rejected.activates_member_voucher);
        let late = review_transition(BindingStatus::PendingReview, deadline, at(10), &ReviewDecision::Approve);
        assert_eq!(late.unwrap_err().reason(), Reason::BindingNotInReview);
    }

    #[test]
    fn removal_frees_the_place_and_cascades_to_the_voucher_only_from_the_last_active_binding() {
        let last = decide_removal(BindingStatus::Active, Remover::Owner, 0).unwrap();
        assert_eq!((last.transition.to, last.transition.removed_by), (BindingStatus::Removed, Some(Remover::Owner)));
        assert!(!last.transition.keeps_place());
        assert!(last.suspends_member_voucher);
        assert!(!decide_removal(BindingStatus::Active, Remover::Member, 1).unwrap().suspends_member_voucher);
        for pending in [BindingStatus::PendingFace, BindingStatus::PendingReview] {
            assert!(!decide_removal(pending, Remover::Ops, 0).unwrap().suspends_member_voucher);
        }
        for ended in [BindingStatus::Rejected, BindingStatus::Expired, BindingStatus::Removed] {
            let error = decide_removal(ended, Remover::Owner, 0).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::BindingNotActive));
        }
    }

    #[test]
    fn family_aid_switches_on_an_active_binding_and_on_only_where_the_policy_pays() {
        use super::super::{account::Scheme, settlement::PolicyTable};
        let table = PolicyTable::builtin();
        let aid = table.family_aid();
        let switch = |status, enabled, scheme, relationship| {
            decide_family_aid_switch(status, enabled, aid, scheme, relationship)
        };
        assert!(switch(BindingStatus::Active, true, Some(Scheme::Employee), Relationship::Child).is_ok());
        assert!(switch(BindingStatus::Active, false, None, Relationship::Sibling).is_ok(), "off is always allowed");
        let not_eligible =
            switch(BindingStatus::Active, true, Some(Scheme::Employee), Relationship::Sibling).unwrap_err();
        assert_eq!(not_eligible.reason(), Reason::FamilyAidNotEligible);
        assert_eq!(
            switch(BindingStatus::Active, true, None, Relationship::Child).unwrap_err().reason(),
            Reason::FamilyAidNotEligible
        );
        for enabled in [true, false] {
            let error =
                switch(BindingStatus::PendingFace, enabled, Some(Scheme::Employee), Relationship::Child).unwrap_err();
            assert_eq!(error.reason(), Reason::BindingNotActive);
        }
    }

    #[test]
    fn an_owner_face_session_serves_one_binding() {
        assert!(require_unused_owner_face(false).is_ok());
        let error = require_unused_owner_face(true).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::PermissionDenied, Reason::OwnerNotPresent));
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
    fn a_child_is_active_only_once_the_relationship_is_proven() {
        use RelationshipVerdict::*;
        assert_eq!(admit(true, false, None).unwrap(), Admission::PendingFace);
        assert_eq!(admit(true, true, Some(Confirmed)).unwrap(), Admission::PendingFace, "16+: the member consents");
        assert_eq!(admit(false, true, None).unwrap(), Admission::Active(RelationshipProof::WindowAttestation));
        assert_eq!(admit(false, false, Some(Confirmed)).unwrap(), Admission::Active(RelationshipProof::Authority));
        assert_eq!(admit(false, false, Some(CannotAnswer)).unwrap(), Admission::PendingReview);
        assert_eq!(admit(false, false, None).unwrap(), Admission::PendingReview);
        let error = admit(false, false, Some(Refuted)).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::RelationshipNotConfirmed));
        assert!(asks_authority(false, false));
        assert!(!asks_authority(true, false) && !asks_authority(false, true));
    }

    #[test]
    fn only_an_open_review_is_decided() {
        let now = date(2026, 12, 7).and_hms_opt(8, 0, 0).unwrap();
        let later = Some(now + chrono::Duration::hours(1));
        let approve = ReviewDecision::Approve;
        assert_eq!(decide_review(BindingStatus::PendingReview, later, now, &approve).unwrap(), BindingStatus::Active);
        let reject = ReviewDecision::Reject("the register page is not legible".into());
        assert_eq!(decide_review(BindingStatus::PendingReview, later, now, &reject).unwrap(), BindingStatus::Rejected);
        for (status, deadline) in [
            (BindingStatus::PendingReview, Some(now)),
            (BindingStatus::Active, later),
            (BindingStatus::PendingFace, later),
            (BindingStatus::Expired, later),
        ] {
            let error = decide_review(status, deadline, now, &approve).unwrap_err();
            assert_eq!(error.reason(), Reason::BindingNotInReview, "{status:?}");
        }
        assert!(rejection_reason("  ").is_err());
        assert!(rejection_reason("a\nb").is_err());
        assert!(rejection_reason(&"字".repeat(201)).is_err());
        assert_eq!(rejection_reason(" unreadable ").unwrap(), "unreadable");
        assert_eq!(review_decision(true, "").unwrap(), ReviewDecision::Approve);
        assert_eq!(review_decision(false, " unreadable ").unwrap(), ReviewDecision::Reject("unreadable".into()));
        for (approve, reason) in [(true, "why"), (false, ""), (false, "a\nb")] {
            let error = review_decision(approve, reason).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidArgument));
        }
    }

    #[test]
    fn review_page_tokens_round_trip_and_sizes_are_bounded() {
        let cursor = ReviewCursor {
            deadline: date(2026, 12, 14).and_hms_micro_opt(7, 58, 46, 357_303).unwrap(),
            binding_id: Uuid::now_v7(),
        };
        assert_eq!(ReviewCursor::decode(&cursor.encode()).unwrap(), cursor);
        for junk in ["", "x", "cjEuMS4y", &cursor.encode()[1..]] {
            let error = ReviewCursor::decode(junk).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{junk:?}");
        }
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(100).unwrap(), 100);
        assert!(page_size(101).is_err() && page_size(-1).is_err());
    }

    #[test]
    fn only_the_current_notice_is_accepted() {
        assert_eq!(accepted_notice_version(CURRENT_NOTICE_VERSION).unwrap(), CURRENT_NOTICE_VERSION);
        let empty = accepted_notice_version("").unwrap_err();
        assert_eq!((empty.code(), empty.reason()), (tonic::Code::InvalidArgument, Reason::NoticeNotAccepted));
        for old in [RETIRED_NOTICE_VERSIONS[0], "FBN-1999-01", "fbn-2026-12"] {
            let error = accepted_notice_version(old).unwrap_err();
            assert_eq!(
                (error.code(), error.reason()),
                (tonic::Code::FailedPrecondition, Reason::NoticeVersionNotCurrent)
            );
        }
    }

    #[test]
    fn statuses_and_relationships_round_trip() {
        for &status in BindingStatus::ALL {
            assert_eq!(BindingStatus::parse(status.as_str()), Some(status));
        }
        for &relationship in Relationship::ALL {
            assert_eq!(Relationship::parse(relationship.as_str()), Some(relationship));
        }
        assert_eq!(month_key(date(2026, 1, 31)), "2026-01");
        assert_eq!(status_after_face(FaceOutcome::Failed), BindingStatus::Rejected);
        for proof in [
            RelationshipProof::MemberFace,
            RelationshipProof::Authority,
            RelationshipProof::OperatorReview,
            RelationshipProof::WindowAttestation,
        ] {
            assert_eq!(RelationshipProof::parse(proof.as_str()), Some(proof));
        }
        for channel in
            [BindingChannel::Online, BindingChannel::Terminal, BindingChannel::HospitalOffice, BindingChannel::Window]
        {
            assert_eq!(BindingChannel::parse(channel.as_str()), Some(channel));
        }
    }

    #[test]
    fn only_the_owner_or_an_operator_switches_family_aid() {
        let (owner, member) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(require_aid_switcher(owner, Some(owner)).is_ok());
        assert!(require_aid_switcher(owner, None).is_ok(), "an operator");
        let error = require_aid_switcher(owner, Some(member)).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::PermissionDenied, Reason::PersonTokenInvalid));
    }
}
