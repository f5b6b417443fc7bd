//! Rules about persons that are not about the ID number itself: names, real-name status,
//! which person a name + ID number pair is (claims), and what proves a phone change.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason, validate::OPERATOR_REASON};
use uuid::Uuid;

use super::{
    id_number::{IdNumberError, Sex},
    phone::PhoneError,
};

/// Validates and normalises a legal name with the one name rule of both services
/// (`medins_common::name`: NFC, trimmed, 1-64 characters, no invisible or private-use
/// characters; INVALID_ARGUMENT / INVALID_NAME otherwise). Names are stored and compared in
/// this form, so a decomposed `é` matches the composed one; minority names keep their `·`.
pub fn normalize_name(field: &str, raw: &str) -> ApiResult<String> {
    medins_common::name::require_name(field, raw)
}

/// Whether a person's identity was confirmed against the identity authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealName {
    /// Not yet confirmed.
    Unverified,
    /// Confirmed, how and when.
    Verified {
        /// The method (e.g. `SMS_AND_AUTHORITY`).
        method: String,
        /// When.
        at: NaiveDateTime,
    },
}

impl RealName {
    /// Stored spelling of the status.
    pub fn status_str(&self) -> &'static str {
        match self {
            RealName::Unverified => "UNVERIFIED",
            RealName::Verified { .. } => "VERIFIED",
        }
    }
}

/// A person, decrypted. Lives only inside identity-svc; leaves it masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Person {
    /// Person id.
    pub id: Uuid,
    /// Normalised legal name.
    pub name: String,
    /// Normalised ID number.
    pub id_number: String,
    /// Phone on record (11 digits), if any.
    pub phone: Option<String>,
    /// Derived birth date.
    pub birth_date: NaiveDate,
    /// Derived sex.
    pub sex: Sex,
    /// Derived region code.
    pub region_code: String,
    /// Real-name status.
    pub real_name: RealName,
    /// First registered or resolved.
    pub created_at: NaiveDateTime,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The request error for a bad ID number.
pub fn id_number_error(field: &str, error: IdNumberError) -> ApiError {
    ApiError::invalid_field(Reason::InvalidIdNumber, field, error.description())
}

/// The request error for a bad phone number.
pub fn phone_error(field: &str, error: PhoneError) -> ApiError {
    ApiError::invalid_field(Reason::InvalidPhone, field, error.description())
}

/// One live person row of an ID number, as the claim rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimFacts {
    /// The person.
    pub id: Uuid,
    /// Whether its name is the name asked about (compared after normalisation).
    pub same_name: bool,
    /// Whether the identity authority confirmed it (real name VERIFIED).
    pub confirmed: bool,
}

/// Which person a name + ID number pair is, for the flows that may create one
/// (RegisterPerson, ResolvePerson).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimDecision {
    /// This existing person (the confirmed one, or a live claim under the same name).
    Existing(Uuid),
    /// No person under this name and none confirmed: a new claim, beside any other claims. An
    /// unconfirmed name never locks the real resident out.
    NewClaim,
    /// The authority confirmed this ID number under another name.
    NameMismatch,
}

/// Decides which person `live` (every live row of one ID number) makes of a name.
pub fn decide_claim(live: &[ClaimFacts]) -> ClaimDecision {
    if let Some(same) = live.iter().filter(|c| c.same_name).max_by_key(|c| c.confirmed) {
        return ClaimDecision::Existing(same.id);
    }
    if live.iter().any(|c| c.confirmed) { ClaimDecision::NameMismatch } else { ClaimDecision::NewClaim }
}

/// The error of [`ClaimDecision::NameMismatch`].
pub fn name_mismatch() -> ApiError {
    ApiError::of(Reason::NameMismatch, "the identity authority confirmed this ID number under another name")
}

/// Side-effect-free match (MatchPerson): the live person of this name, and, when the caller
/// names a person, only that one. Never a mismatch error: no match is an answer.
pub fn decide_match(live: &[ClaimFacts], person_id: Option<Uuid>) -> Option<Uuid> {
    live.iter()
        .filter(|c| c.same_name && person_id.is_none_or(|id| id == c.id))
        .max_by_key(|c| c.confirmed)
        .map(|c| c.id)
}

/// Which live claims a confirmation of `confirmed` supersedes: every other live row of its ID
/// number. Whatever their names, the authority has now said who holds the number.
pub fn claims_to_supersede(confirmed: Uuid, live: &[ClaimFacts]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = live.iter().map(|c| c.id).filter(|id| *id != confirmed).collect();
    ids.sort();
    ids
}

/// How long a PASSED PHONE_CHANGE face session proves the person's presence.
pub const PHONE_CHANGE_FACE_FRESHNESS: Duration = Duration::minutes(10);

/// What a face session offered as proof of a phone change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneChangeFaceFacts {
    /// Whether the session is of the person whose phone changes.
    pub same_person: bool,
    /// Whether its purpose is PHONE_CHANGE.
    pub phone_change_purpose: bool,
    /// Whether it PASSED.
    pub passed: bool,
    /// When it ended, if it did.
    pub finished_at: Option<NaiveDateTime>,
    /// Whether an earlier phone change already used it.
    pub already_used: bool,
}

/// The second proof of a phone change, beside the SMS code to the new phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneChangeProof {
    /// A face session of the person; `None` when no session has that id.
    Face(Option<PhoneChangeFaceFacts>),
    /// An operator's decision: whether the caller is of kind OPS, and the reason given.
    Operator {
        /// The caller is an operator.
        caller_is_ops: bool,
        /// The reason, trimmed.
        reason: String,
    },
}

medins_common::text_enum! {
    /// How a phone change was proven (stored in the history).
    pub enum PhoneChangeMethod {
        /// SMS to the new phone + a PASSED face session of the person.
        Face => "FACE",
        /// SMS to the new phone + an operator's recorded reason.
        Operator => "OPERATOR",
    }
}

/// Why a phone change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneChangeRefusal {
    /// The new phone is the one on record.
    Unchanged,
    /// An operator reason from a caller that is not an operator.
    OperatorOnly,
    /// An operator call without a reason (or with an overlong one, or one with control
    /// characters: `validate::OPERATOR_REASON`).
    ReasonInvalid,
    /// No face session with that id.
    FaceNotFound,
    /// A session of someone else, of another purpose, not PASSED, or too old.
    FaceNotProof,
    /// The session already proved a phone change.
    FaceUsed,
    /// The session passed more than 10 minutes ago.
    FaceStale,
    /// The phone on record changed (or another change was recorded) while this one ran.
    Conflict,
}

impl PhoneChangeRefusal {
    /// The error the caller sees. A session of someone else reads like a missing one, so that a
    /// session id says nothing about whose it is.
    pub fn into_error(self) -> ApiError {
        match self {
            PhoneChangeRefusal::Unchanged => {
                ApiError::of(Reason::PhoneUnchanged, "the new phone is already the phone on record")
            }
            PhoneChangeRefusal::OperatorOnly => ApiError::of(
                Reason::PartnerKindNotAllowed,
                "only operators (kind OPS) may change a phone on a recorded reason; others prove the person's face",
            ),
            PhoneChangeRefusal::ReasonInvalid => ApiError::invalid_field(
                Reason::InvalidArgument,
                "operator_reason",
                "an operator's phone change needs a reason of 1-500 characters without control characters",
            ),
            PhoneChangeRefusal::FaceNotFound | PhoneChangeRefusal::FaceNotProof => ApiError::of(
                Reason::FaceVerificationRequired,
                "a PASSED PHONE_CHANGE face session of this person, finished within 10 minutes, is required",
            ),
            PhoneChangeRefusal::FaceUsed => ApiError::of(
                Reason::FaceSessionAlreadyUsed,
                "this face session already proved a phone change: start a new one",
            ),
            PhoneChangeRefusal::FaceStale => ApiError::of(
                Reason::FaceSessionExpired,
                "the face session passed more than 10 minutes ago: start a new one",
            ),
            PhoneChangeRefusal::Conflict => ApiError::of(
                Reason::PhoneChangeConflict,
                "the phone on record changed while this change ran: read the person and start again",
            ),
        }
    }
}

/// Decides the outcome of the phone change's compare-and-set: the update keyed on the phone
/// read at the start changed `rows_changed` rows; anything but one means a concurrent change
/// won (ABORTED / PHONE_CHANGE_CONFLICT).
pub fn decide_phone_swap(rows_changed: usize) -> Result<(), PhoneChangeRefusal> {
    if rows_changed == 1 { Ok(()) } else { Err(PhoneChangeRefusal::Conflict) }
}

/// Decides a change record refused by a unique index (one change per face session, per SMS
/// challenge): with face proof the session proved another change that committed meanwhile
/// (FACE_SESSION_ALREADY_USED); otherwise the challenge did (PHONE_CHANGE_CONFLICT).
pub fn decide_duplicate_change_record(method: PhoneChangeMethod) -> PhoneChangeRefusal {
    match method {
        PhoneChangeMethod::Face => PhoneChangeRefusal::FaceUsed,
        PhoneChangeMethod::Operator => PhoneChangeRefusal::Conflict,
    }
}

/// Decides a confirmation of a real name that a unique index refused: another claim of the
/// same ID number was confirmed first, under another name (FAILED_PRECONDITION / NAME_MISMATCH).
pub fn decide_confirmation_refused() -> ApiError {
    name_mismatch()
}

/// Decides a phone change of a person whose phone on record is `current` to `new` (both
/// normalised), given the second proof, at `now`. The SMS code to the new phone is checked by
/// the SMS rules; this is everything else.
pub fn decide_phone_change(
    current: Option<&str>,
    new: &str,
    proof: &PhoneChangeProof,
    now: NaiveDateTime,
) -> Result<PhoneChangeMethod, PhoneChangeRefusal> {
    let method = match proof {
        PhoneChangeProof::Operator { caller_is_ops: false, .. } => return Err(PhoneChangeRefusal::OperatorOnly),
        PhoneChangeProof::Operator { caller_is_ops: true, reason } => {
            // The same rule as every operator's reason (`validate::OPERATOR_REASON`).
            if OPERATOR_REASON.check("operator_reason", reason).is_err() {
                return Err(PhoneChangeRefusal::ReasonInvalid);
            }
            PhoneChangeMethod::Operator
        }
        PhoneChangeProof::Face(None) => return Err(PhoneChangeRefusal::FaceNotFound),
        PhoneChangeProof::Face(Some(face)) => {
            if !face.same_person || !face.phone_change_purpose || !face.passed {
                return Err(PhoneChangeRefusal::FaceNotProof);
            }
            let Some(finished_at) = face.finished_at else { return Err(PhoneChangeRefusal::FaceNotProof) };
            if now - finished_at > PHONE_CHANGE_FACE_FRESHNESS {
                return Err(PhoneChangeRefusal::FaceStale);
            }
            if face.already_used {
                return Err(PhoneChangeRefusal::FaceUsed);
            }
            PhoneChangeMethod::Face
        }
    };
    if current == Some(new) {
        return Err(PhoneChangeRefusal::Unchanged);
    }
    Ok(method)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_phone_change_that_lost_its_compare_and_set_or_its_record_is_refused_by_kind() {
        assert_eq!(super::decide_phone_swap(1), Ok(()));
        for rows in [0, 2] {
            let refusal = super::decide_phone_swap(rows).unwrap_err();
            let error = refusal.into_error();
            assert_eq!(
                (error.code(), error.reason()),
                (tonic::Code::Aborted, medins_common::Reason::PhoneChangeConflict)
            );
        }
        let face = super::decide_duplicate_change_record(super::PhoneChangeMethod::Face).into_error();
        assert_eq!(face.reason(), medins_common::Reason::FaceSessionAlreadyUsed);
        let operator = super::decide_duplicate_change_record(super::PhoneChangeMethod::Operator).into_error();
        assert_eq!(
            (operator.code(), operator.reason()),
            (tonic::Code::Aborted, medins_common::Reason::PhoneChangeConflict)
        );
        let mismatch = super::decide_confirmation_refused();
        assert_eq!(
            (mismatch.code(), mismatch.reason()),
            (tonic::Code::FailedPrecondition, medins_common::Reason::NameMismatch)
        );
    }

    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(normalize_name("name", "  张三 ").unwrap(), "张三");
        assert_eq!(normalize_name("name", "阿依古丽·买买提").unwrap(), "阿依古丽·买买提");
        assert_eq!(normalize_name("name", "   ").unwrap_err().reason(), Reason::InvalidName);
        assert_eq!(normalize_name("name", "张\u{200B}三").unwrap_err().reason(), Reason::InvalidName);
        assert_eq!(normalize_name("name", "Jose\u{301}").unwrap(), "Jos\u{e9}");
        assert!(normalize_name("name", &"名".repeat(65)).is_err());
        assert!(normalize_name("name", &"名".repeat(64)).is_ok());
        assert!(normalize_name("name", "张\u{0}三").is_err());
    }

    fn claim(n: u128, same_name: bool, confirmed: bool) -> ClaimFacts {
        ClaimFacts { id: Uuid::from_u128(n), same_name, confirmed }
    }

    #[test]
    fn a_new_number_or_another_unconfirmed_name_makes_a_new_claim() {
        assert_eq!(decide_claim(&[]), ClaimDecision::NewClaim);
        assert_eq!(decide_claim(&[claim(1, false, false), claim(2, false, false)]), ClaimDecision::NewClaim);
    }

    #[test]
    fn the_same_name_is_the_existing_person() {
        assert_eq!(
            decide_claim(&[claim(1, false, false), claim(2, true, false)]),
            ClaimDecision::Existing(Uuid::from_u128(2))
        );
        assert_eq!(decide_claim(&[claim(1, true, true)]), ClaimDecision::Existing(Uuid::from_u128(1)));
    }

    #[test]
    fn only_a_confirmed_name_blocks_another_name() {
        assert_eq!(decide_claim(&[claim(1, false, true)]), ClaimDecision::NameMismatch);
        assert_eq!(name_mismatch().reason(), Reason::NameMismatch);
    }

    #[test]
    fn a_match_never_fails_and_respects_the_named_person() {
        let live = [claim(1, false, false), claim(2, true, false)];
        assert_eq!(decide_match(&live, None), Some(Uuid::from_u128(2)));
        assert_eq!(decide_match(&live, Some(Uuid::from_u128(2))), Some(Uuid::from_u128(2)));
        assert_eq!(decide_match(&live, Some(Uuid::from_u128(1))), None);
        assert_eq!(decide_match(&[claim(1, false, true)], None), None);
        assert_eq!(decide_match(&[], None), None);
    }

    #[test]
    fn a_confirmation_supersedes_every_other_live_claim() {
        let live = [claim(3, false, false), claim(1, true, false), claim(2, false, false)];
        assert_eq!(claims_to_supersede(Uuid::from_u128(1), &live), vec![Uuid::from_u128(2), Uuid::from_u128(3)]);
        assert!(claims_to_supersede(Uuid::from_u128(1), &[claim(1, true, false)]).is_empty());
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn face(finished: &str) -> PhoneChangeFaceFacts {
        PhoneChangeFaceFacts {
            same_person: true,
            phone_change_purpose: true,
            passed: true,
            finished_at: Some(at(finished)),
            already_used: false,
        }
    }

    #[test]
    fn a_fresh_unused_passed_phone_change_face_of_the_person_proves_a_change() {
        let now = at("2026-12-07 05:10:00");
        let proof = PhoneChangeProof::Face(Some(face("2026-12-07 05:00:00")));
        assert_eq!(decide_phone_change(None, "13800000000", &proof, now), Ok(PhoneChangeMethod::Face));
        assert_eq!(decide_phone_change(Some("13900000000"), "13800000000", &proof, now), Ok(PhoneChangeMethod::Face));
        assert_eq!(
            decide_phone_change(Some("13800000000"), "13800000000", &proof, now),
            Err(PhoneChangeRefusal::Unchanged)
        );
    }

    #[test]
    fn any_other_face_session_is_refused() {
        let now = at("2026-12-07 05:10:01");
        let fresh = face("2026-12-07 05:05:00");
        let cases = [
            (PhoneChangeProof::Face(None), PhoneChangeRefusal::FaceNotFound),
            (
                PhoneChangeProof::Face(Some(PhoneChangeFaceFacts { same_person: false, ..fresh })),
                PhoneChangeRefusal::FaceNotProof,
            ),
            (
                PhoneChangeProof::Face(Some(PhoneChangeFaceFacts { phone_change_purpose: false, ..fresh })),
                PhoneChangeRefusal::FaceNotProof,
            ),
            (
                PhoneChangeProof::Face(Some(PhoneChangeFaceFacts { passed: false, ..fresh })),
                PhoneChangeRefusal::FaceNotProof,
            ),
            (
                PhoneChangeProof::Face(Some(PhoneChangeFaceFacts { finished_at: None, ..fresh })),
                PhoneChangeRefusal::FaceNotProof,
            ),
            (
                PhoneChangeProof::Face(Some(PhoneChangeFaceFacts { already_used: true, ..fresh })),
                PhoneChangeRefusal::FaceUsed,
            ),
            (PhoneChangeProof::Face(Some(face("2026-12-07 05:00:00"))), PhoneChangeRefusal::FaceStale),
        ];
        for (proof, refusal) in cases {
            assert_eq!(decide_phone_change(None, "13800000000", &proof, now), Err(refusal), "{proof:?}");
        }
        assert_eq!(PhoneChangeRefusal::FaceNotProof.into_error().reason(), Reason::FaceVerificationRequired);
    }

    #[test]
    fn only_an_operator_with_a_reason_may_change_a_phone_without_a_face() {
        let now = at("2026-12-07 05:10:00");
        let operator =
            |caller_is_ops: bool, reason: &str| PhoneChangeProof::Operator { caller_is_ops, reason: reason.to_owned() };
        assert_eq!(
            decide_phone_change(None, "13800000000", &operator(true, "lost SIM, ID checked at counter 3"), now),
            Ok(PhoneChangeMethod::Operator)
        );
        assert_eq!(
            decide_phone_change(None, "13800000000", &operator(true, "  "), now),
            Err(PhoneChangeRefusal::ReasonInvalid)
        );
        assert_eq!(
            decide_phone_change(None, "13800000000", &operator(true, &"x".repeat(501)), now),
            Err(PhoneChangeRefusal::ReasonInvalid)
        );
        assert_eq!(
            decide_phone_change(None, "13800000000", &operator(true, "lost\nSIM"), now),
            Err(PhoneChangeRefusal::ReasonInvalid)
        );
        assert_eq!(
            decide_phone_change(None, "13800000000", &operator(false, "because"), now),
            Err(PhoneChangeRefusal::OperatorOnly)
        );
        assert_eq!(PhoneChangeRefusal::OperatorOnly.into_error().code(), tonic::Code::PermissionDenied);
    }
}
