//! Face verification rules (docs/architecture.md#identity-svc): purposes, the session lifecycle,
//! what a provider's submission does, and the liveness challenge. Pure: the caller brings the time
//! and the randomness.
//!
//! A passing submission (liveness and similarity >= threshold) ends the session PASSED. A
//! failing one leaves it PENDING so the person can try again in front of the camera, except the
//! third, which ends it FAILED: a session takes at most [`MAX_SUBMISSIONS`]. We chose this over
//! "the first failure ends it" because a failed liveness check is usually light, angle or a
//! misread digit, and a new session would mean a new challenge and a new round trip through the
//! partner's app for nothing; three tries bound the guessing a bad actor can do.

use chrono::{Duration, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason};
use uuid::Uuid;

use super::access::Standing;

/// How long a session waits for a passing submission.
pub const SESSION_LIFETIME: Duration = Duration::minutes(5);

/// Submissions a session accepts.
pub const MAX_SUBMISSIONS: i32 = 3;

/// Longest `reference` a caller may attach, in characters (`validate::reference`).
pub const MAX_REFERENCE_CHARS: usize = medins_common::validate::REFERENCE_MAX_CHARS;

/// The default similarity threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.80;

medins_common::text_enum! {
    /// What a session is for.
    pub enum FacePurpose {
        /// Real-name verification at identity-svc.
        RealName => "REAL_NAME",
        /// Activating the insurance voucher.
        VoucherActivation => "VOUCHER_ACTIVATION",
        /// Binding a family member aged 16 or over.
        FamilyBinding => "FAMILY_BINDING",
        /// Applying for a card online.
        CardApplication => "CARD_APPLICATION",
        /// Proving that the person themself asks to bind or change their phone.
        PhoneChange => "PHONE_CHANGE",
    }
}

impl FacePurpose {
    /// Whether insurance-svc is told when a session of this purpose ends (through the outbox).
    pub fn notifies_insurance(self) -> bool {
        match self {
            FacePurpose::RealName | FacePurpose::PhoneChange => false,
            FacePurpose::VoucherActivation | FacePurpose::FamilyBinding | FacePurpose::CardApplication => true,
        }
    }
}

/// The binder a session may name at its start (issue 13 item 1): only a caller standing as a
/// medins service (insurance-svc, starting a family binding's member check for the binder's
/// partner; the access table's [`Standing::Service`]) names one, only for a FAMILY_BINDING
/// session, and never the person verified. Everyone else naming one: PERMISSION_DENIED /
/// PARTNER_KIND_NOT_ALLOWED, as for `on_behalf_of_partner_id`.
pub fn session_binder(
    field: &str,
    standing: Standing,
    purpose: FacePurpose,
    person: Uuid,
    binder: Option<Uuid>,
) -> ApiResult<Option<Uuid>> {
    let Some(binder) = binder else { return Ok(None) };
    if standing != Standing::Service {
        return Err(ApiError::of(
            Reason::PartnerKindNotAllowed,
            "only medins services (kind SERVICE) name a session's binder",
        )
        .with_field_violation(field, "must be empty"));
    }
    if purpose != FacePurpose::FamilyBinding {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "only for FACE_PURPOSE_FAMILY_BINDING"));
    }
    if binder == person {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must not be the person verified"));
    }
    Ok(Some(binder))
}

/// Whose own person token may read and watch a session: the person verified, then, for a
/// family binding's member check that named one, the binder who started the binding (the
/// binder's phone runs the check of an elder who has no phone of their own). Nobody else: a
/// binding alone opens no other session of the member.
pub fn session_readers(person: Uuid, purpose: FacePurpose, binder: Option<Uuid>) -> Vec<Uuid> {
    let mut readers = vec![person];
    if let Some(binder) = binder.filter(|binder| purpose == FacePurpose::FamilyBinding && *binder != person) {
        readers.push(binder);
    }
    readers
}

medins_common::text_enum! {
    /// Where a session stands.
    pub enum FaceStatus {
        /// Waiting for a passing submission.
        Pending => "PENDING",
        /// A submission passed.
        Passed => "PASSED",
        /// Three submissions, none passed.
        Failed => "FAILED",
        /// No passing submission before the expiry.
        Expired => "EXPIRED",
    }
}

impl FaceStatus {
    /// Whether the session has ended (and so never changes again).
    pub fn is_final(self) -> bool {
        self != FaceStatus::Pending
    }
}

/// The similarity a submission must reach, validated to lie in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold(f64);

impl Threshold {
    /// A threshold; `None` unless `0 <= value <= 1` (NaN included).
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value))
    }

    /// The value.
    pub fn value(self) -> f64 {
        self.0
    }
}

impl Default for Threshold {
    fn default() -> Self {
        Self(DEFAULT_THRESHOLD)
    }
}

/// The part of a session the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// Stored status.
    pub status: FaceStatus,
    /// Submissions so far.
    pub submissions: i32,
    /// When a pending session expires.
    pub expires_at: NaiveDateTime,
}

impl SessionState {
    /// The status a caller sees at `now`: a PENDING session past its expiry is EXPIRED even
    /// before the sweeper has recorded it.
    pub fn effective_status(&self, now: NaiveDateTime) -> FaceStatus {
        if self.status == FaceStatus::Pending && now >= self.expires_at { FaceStatus::Expired } else { self.status }
    }

    /// Submissions still allowed.
    pub fn submissions_left(&self, now: NaiveDateTime) -> i32 {
        if self.effective_status(now).is_final() { 0 } else { (MAX_SUBMISSIONS - self.submissions).max(0) }
    }
}

/// A face session.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceSession {
    /// Session id.
    pub id: Uuid,
    /// The person being verified.
    pub person_id: Uuid,
    /// What it is for.
    pub purpose: FacePurpose,
    /// The starting caller's reference.
    pub reference: String,
    /// The partner that started it.
    pub partner_id: String,
    /// The FACE_PROVIDER partner that may decide it.
    pub bound_provider_id: String,
    /// The liveness challenge.
    pub challenge: String,
    /// Stored status (see [`FaceSession::state`] for the status at a given time).
    pub status: FaceStatus,
    /// Submissions so far.
    pub submissions: i32,
    /// Started.
    pub created_at: NaiveDateTime,
    /// Expires, while pending.
    pub expires_at: NaiveDateTime,
    /// Ended; `None` while pending.
    pub finished_at: Option<NaiveDateTime>,
    /// Last change.
    pub updated_at: NaiveDateTime,
}

impl FaceSession {
    /// What the rules look at.
    pub fn state(&self) -> SessionState {
        SessionState { status: self.status, submissions: self.submissions, expires_at: self.expires_at }
    }
}

/// A provider's submission, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Submission {
    /// Whether liveness passed.
    pub liveness_passed: bool,
    /// Similarity, in 0..=1.
    pub similarity: f64,
}

impl Submission {
    /// Validates the similarity: INVALID_ARGUMENT unless `0 <= similarity <= 1` (NaN refused).
    pub fn new(liveness_passed: bool, similarity: f64) -> ApiResult<Self> {
        if !(0.0..=1.0).contains(&similarity) {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, "similarity", "must be a number from 0 to 1"));
        }
        Ok(Self { liveness_passed, similarity })
    }

    /// Whether it passes: liveness and similarity >= threshold, compared exactly on the value
    /// as sent (no rounding: 0.7999 fails a 0.80 threshold, 0.80 passes it).
    pub fn passes(&self, threshold: Threshold) -> bool {
        self.liveness_passed && self.similarity >= threshold.value()
    }
}

/// What a submission does to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitDecision {
    /// Record it: the new status and submission count (the session ends if the status is final).
    Record {
        /// Status afterwards.
        status: FaceStatus,
        /// Submissions afterwards.
        submissions: i32,
        /// Whether this submission passed.
        passed: bool,
    },
    /// The session is past its expiry but still stored PENDING: record EXPIRED, then refuse the
    /// submission with [`expired_error`].
    ExpireAndRefuse,
}

/// Decides a submission by provider `submitter` against a session bound to `bound_provider` at
/// `now`. A provider the session is not bound to is refused first, before anything about the
/// session's state shows: PERMISSION_DENIED / FACE_PROVIDER_MISMATCH, and nothing is recorded.
/// The other errors are the refusals of a session that can take no more submissions.
pub fn decide_submission(
    session: &SessionState,
    bound_provider: &str,
    submitter: &str,
    submission: &Submission,
    threshold: Threshold,
    now: NaiveDateTime,
) -> ApiResult<SubmitDecision> {
    // An empty binding (a session started before sessions were bound) accepts nobody.
    if bound_provider.is_empty() || bound_provider != submitter {
        return Err(ApiError::of(
            Reason::FaceProviderMismatch,
            "this face session is bound to another face-verification provider",
        ));
    }
    match session.status {
        FaceStatus::Expired => return Err(expired_error()),
        _ if session.submissions >= MAX_SUBMISSIONS => {
            return Err(ApiError::of(Reason::FaceAttemptsExhausted, "this face session has taken its 3 submissions"));
        }
        FaceStatus::Passed | FaceStatus::Failed => {
            return Err(ApiError::of(Reason::FaceSessionFinished, "this face session has ended"));
        }
        FaceStatus::Pending if now >= session.expires_at => return Ok(SubmitDecision::ExpireAndRefuse),
        FaceStatus::Pending => {}
    }
    let submissions = session.submissions + 1;
    let passed = submission.passes(threshold);
    let status = if passed {
        FaceStatus::Passed
    } else if submissions >= MAX_SUBMISSIONS {
        FaceStatus::Failed
    } else {
        FaceStatus::Pending
    };
    Ok(SubmitDecision::Record { status, submissions, passed })
}

/// Which FACE_PROVIDER partner may decide a new session: the one the starting call names
/// (`named`, which must be one of `face_providers`), else the one configured for the partner the
/// session is started for (`configured`), else the only FACE_PROVIDER partner when exactly one
/// exists. `face_providers` are the ids of every FACE_PROVIDER partner.
///
/// INVALID_ARGUMENT / FACE_PROVIDER_UNKNOWN when `named` is not a FACE_PROVIDER partner;
/// FAILED_PRECONDITION / FACE_PROVIDER_REQUIRED when no rule picks one.
pub fn choose_provider(
    field: &str,
    named: Option<&str>,
    configured: Option<&str>,
    face_providers: &[String],
) -> ApiResult<String> {
    let is_provider = |id: &str| face_providers.iter().any(|p| p == id);
    if let Some(named) = named {
        return if is_provider(named) {
            Ok(named.to_owned())
        } else {
            Err(ApiError::of(
                Reason::FaceProviderUnknown,
                "no face-verification provider (partner of kind FACE_PROVIDER) has this id",
            )
            .with_field_violation(field, "must be the id of a FACE_PROVIDER partner"))
        };
    }
    if let Some(configured) = configured.filter(|id| is_provider(id)) {
        return Ok(configured.to_owned());
    }
    match face_providers {
        [only] => Ok(only.clone()),
        _ => Err(ApiError::of(
            Reason::FaceProviderRequired,
            "name the face-verification provider (provider_id): none is configured for this partner and \
             there is not exactly one",
        )),
    }
}

/// FAILED_PRECONDITION / FACE_SESSION_EXPIRED.
pub fn expired_error() -> ApiError {
    ApiError::of(Reason::FaceSessionExpired, "this face session has expired; start a new one")
}

/// Validates a caller's reference: the shared rule (`validate::reference`: at most 128
/// characters, no control characters, kept as sent).
pub fn validate_reference(field: &str, raw: &str) -> ApiResult<String> {
    medins_common::validate::reference(field, raw)
}

/// Validates a provider's reference: 1-128 characters, no control characters.
pub fn validate_provider_reference(field: &str, raw: &str) -> ApiResult<String> {
    let reference = validate_reference(field, raw.trim())?;
    if reference.is_empty() {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must be set"));
    }
    Ok(reference)
}

/// A liveness challenge of 4-6 decimal digits built from uniformly random bytes (the caller
/// draws them from a CSPRNG): the first byte picks the length, the others one digit each,
/// rejecting bytes >= 250 so every digit is equally likely. Returns `None` when the bytes ran
/// out before 6 digits (vanishingly rare with 32 bytes: draw again).
pub fn liveness_challenge(random: &[u8]) -> Option<String> {
    let (&first, rest) = random.split_first()?;
    let length = 4 + usize::from(first % 3);
    let digits: String = rest.iter().filter(|&&b| b < 250).take(length).map(|&b| char::from(b'0' + b % 10)).collect();
    (digits.len() == length).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap().naive_utc() + Duration::minutes(minutes)
    }

    fn pending(submissions: i32) -> SessionState {
        SessionState { status: FaceStatus::Pending, submissions, expires_at: at(5) }
    }

    fn submit(liveness: bool, similarity: f64) -> Submission {
        Submission::new(liveness, similarity).unwrap()
    }

    #[test]
    fn the_threshold_is_compared_exactly_on_the_value_sent() {
        let threshold = Threshold::default();
        assert!(!submit(true, 0.7999).passes(threshold));
        assert!(!submit(true, 0.799_999_999_999).passes(threshold));
        assert!(submit(true, 0.80).passes(threshold));
        assert!(submit(true, 1.0).passes(threshold));
        assert!(!submit(false, 1.0).passes(threshold), "liveness is required whatever the similarity");
    }

    #[test]
    fn similarity_outside_0_to_1_or_nan_is_invalid() {
        for bad in [-0.01, 1.0001, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let error = Submission::new(true, bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        assert!(Submission::new(true, 0.0).is_ok());
        assert!(Threshold::new(f64::NAN).is_none());
        assert!(Threshold::new(1.5).is_none());
    }

    #[test]
    fn a_passing_submission_ends_the_session_passed() {
        let decision =
            decide_submission(&pending(0), "fp", "fp", &submit(true, 0.9), Threshold::default(), at(1)).unwrap();
        assert_eq!(decision, SubmitDecision::Record { status: FaceStatus::Passed, submissions: 1, passed: true });
    }

    #[test]
    fn failing_submissions_keep_it_pending_until_the_third_fails_it() {
        let threshold = Threshold::default();
        let first = decide_submission(&pending(0), "fp", "fp", &submit(false, 0.9), threshold, at(1)).unwrap();
        assert_eq!(first, SubmitDecision::Record { status: FaceStatus::Pending, submissions: 1, passed: false });
        let second = decide_submission(&pending(1), "fp", "fp", &submit(true, 0.5), threshold, at(1)).unwrap();
        assert_eq!(second, SubmitDecision::Record { status: FaceStatus::Pending, submissions: 2, passed: false });
        let third = decide_submission(&pending(2), "fp", "fp", &submit(true, 0.5), threshold, at(1)).unwrap();
        assert_eq!(third, SubmitDecision::Record { status: FaceStatus::Failed, submissions: 3, passed: false });
        let passing_third = decide_submission(&pending(2), "fp", "fp", &submit(true, 0.95), threshold, at(1)).unwrap();
        assert_eq!(passing_third, SubmitDecision::Record { status: FaceStatus::Passed, submissions: 3, passed: true });
    }

    #[test]
    fn an_ended_session_refuses_with_the_reason_of_how_it_ended() {
        let threshold = Threshold::default();
        let ok = submit(true, 0.9);
        let failed = SessionState { status: FaceStatus::Failed, submissions: 3, expires_at: at(5) };
        assert_eq!(
            decide_submission(&failed, "fp", "fp", &ok, threshold, at(1)).unwrap_err().reason(),
            Reason::FaceAttemptsExhausted
        );
        let passed = SessionState { status: FaceStatus::Passed, submissions: 1, expires_at: at(5) };
        assert_eq!(
            decide_submission(&passed, "fp", "fp", &ok, threshold, at(1)).unwrap_err().reason(),
            Reason::FaceSessionFinished
        );
        let expired = SessionState { status: FaceStatus::Expired, submissions: 1, expires_at: at(5) };
        assert_eq!(
            decide_submission(&expired, "fp", "fp", &ok, threshold, at(9)).unwrap_err().reason(),
            Reason::FaceSessionExpired
        );
        assert_eq!(
            decide_submission(&pending(1), "fp", "fp", &ok, threshold, at(5)).unwrap(),
            SubmitDecision::ExpireAndRefuse
        );
    }

    #[test]
    fn only_the_bound_provider_decides_and_another_learns_nothing_of_the_state() {
        let threshold = Threshold::default();
        let ok = submit(true, 0.9);
        let ended = SessionState { status: FaceStatus::Passed, submissions: 1, expires_at: at(5) };
        for session in [pending(0), pending(2), ended] {
            for (bound, submitter) in [("fp-a", "fp-b"), ("", "fp-b"), ("", "")] {
                let error = decide_submission(&session, bound, submitter, &ok, threshold, at(1)).unwrap_err();
                assert_eq!(
                    (error.code(), error.reason()),
                    (tonic::Code::PermissionDenied, Reason::FaceProviderMismatch)
                );
            }
        }
        assert!(matches!(
            decide_submission(&pending(0), "fp-a", "fp-a", &ok, threshold, at(1)),
            Ok(SubmitDecision::Record { status: FaceStatus::Passed, .. })
        ));
    }

    #[test]
    fn a_provider_is_named_else_configured_else_the_only_one() {
        let one = vec!["fp-a".to_owned()];
        let two = vec!["fp-a".to_owned(), "fp-b".to_owned()];
        assert_eq!(choose_provider("provider_id", Some("fp-b"), Some("fp-a"), &two).unwrap(), "fp-b");
        let unknown = choose_provider("provider_id", Some("bank"), None, &two).unwrap_err();
        assert_eq!((unknown.code(), unknown.reason()), (tonic::Code::InvalidArgument, Reason::FaceProviderUnknown));
        assert_eq!(choose_provider("provider_id", None, Some("fp-b"), &two).unwrap(), "fp-b");
        assert_eq!(choose_provider("provider_id", None, None, &one).unwrap(), "fp-a");
        assert_eq!(choose_provider("provider_id", None, Some("gone"), &one).unwrap(), "fp-a");
        for providers in [two, Vec::new()] {
            let none = choose_provider("provider_id", None, None, &providers).unwrap_err();
            assert_eq!((none.code(), none.reason()), (tonic::Code::FailedPrecondition, Reason::FaceProviderRequired));
        }
    }

    #[test]
    fn a_pending_session_past_its_expiry_shows_expired() {
        let session = pending(1);
        assert_eq!(session.effective_status(at(4)), FaceStatus::Pending);
        assert_eq!(session.submissions_left(at(4)), 2);
        assert_eq!(session.effective_status(at(5)), FaceStatus::Expired);
        assert_eq!(session.submissions_left(at(5)), 0);
    }

    #[test]
    fn only_insurance_purposes_notify_insurance() {
        assert!(!FacePurpose::RealName.notifies_insurance());
        for purpose in [FacePurpose::VoucherActivation, FacePurpose::FamilyBinding, FacePurpose::CardApplication] {
            assert!(purpose.notifies_insurance());
            assert_eq!(FacePurpose::parse(purpose.as_str()), Some(purpose));
        }
    }

    #[test]
    fn challenges_are_4_to_6_digits() {
        assert_eq!(liveness_challenge(&[0, 1, 2, 3, 4, 5, 6, 7]).as_deref(), Some("1234"));
        assert_eq!(liveness_challenge(&[2, 255, 9, 19, 29, 39, 49, 59]).as_deref(), Some("999999"));
        assert_eq!(liveness_challenge(&[1, 1, 2]), None, "too few bytes");
        for _ in 0..200 {
            let bytes: [u8; 32] = medins_common::crypto::random_bytes();
            let challenge = liveness_challenge(&bytes).expect("32 bytes suffice");
            assert!((4..=6).contains(&challenge.len()) && challenge.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn references_are_bounded() {
        assert!(validate_reference("reference", "").is_ok());
        assert!(validate_reference("reference", &"x".repeat(128)).is_ok());
        assert!(validate_reference("reference", &"x".repeat(129)).is_err());
        assert!(validate_reference("reference", "a\nb").is_err());
        assert!(validate_provider_reference("provider_reference", " ").is_err());
    }

    #[test]
    fn only_a_service_names_a_binder_and_only_for_a_family_binding_check() {
        let (person, binder) = (Uuid::now_v7(), Uuid::now_v7());
        let named = |standing, purpose, who| session_binder("binder_person_id", standing, purpose, person, who);
        assert_eq!(named(Standing::Service, FacePurpose::FamilyBinding, Some(binder)).unwrap(), Some(binder));
        assert_eq!(named(Standing::Person, FacePurpose::FamilyBinding, None).unwrap(), None);
        for standing in [Standing::Person, Standing::Operator, Standing::PhoneChangeStarter] {
            let refused = named(standing, FacePurpose::FamilyBinding, Some(binder)).unwrap_err();
            assert_eq!(refused.reason(), Reason::PartnerKindNotAllowed, "{standing:?}");
        }
        let other_purpose = named(Standing::Service, FacePurpose::RealName, Some(binder)).unwrap_err();
        assert_eq!(other_purpose.code(), tonic::Code::InvalidArgument);
        assert!(named(Standing::Service, FacePurpose::FamilyBinding, Some(person)).is_err());
    }

    #[test]
    fn a_binder_reads_only_the_family_binding_check_that_named_them() {
        let (person, binder) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(session_readers(person, FacePurpose::FamilyBinding, Some(binder)), [person, binder]);
        assert_eq!(session_readers(person, FacePurpose::FamilyBinding, None), [person]);
        assert_eq!(session_readers(person, FacePurpose::RealName, Some(binder)), [person]);
    }
}
