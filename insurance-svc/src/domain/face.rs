//! Face verification outcomes as insurance-svc keeps them: which purposes concern it and how a
//! session can end. The rules that act on them (voucher activation, family binding, card
//! applications) read these, through the one freshness and purpose rule here.

use chrono::{Duration, NaiveDateTime};
use medins_common::{ApiError, Reason};
use uuid::Uuid;

medins_common::text_enum! {
    /// The purposes of face sessions that identity-svc reports to insurance-svc.
    pub enum FacePurpose {
        /// Activating the voucher.
        VoucherActivation => "VOUCHER_ACTIVATION",
        /// Binding a family member aged 16 or over.
        FamilyBinding => "FAMILY_BINDING",
        /// Applying for a card online.
        CardApplication => "CARD_APPLICATION",
    }
}

medins_common::text_enum! {
    /// How a face session ended.
    pub enum FaceOutcome {
        /// Verified.
        Passed => "PASSED",
        /// Three submissions, none passed.
        Failed => "FAILED",
        /// Not verified in time.
        Expired => "EXPIRED",
    }
}

/// A recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceOutcomeRecord {
    /// The face session at identity-svc.
    pub session_id: Uuid,
    /// identity-svc's event id (of the delivery that was recorded).
    pub event_id: Uuid,
    /// The person verified.
    pub person_id: Uuid,
    /// What it was for.
    pub purpose: FacePurpose,
    /// The starting caller's reference.
    pub reference: String,
    /// How it ended.
    pub outcome: FaceOutcome,
    /// When it ended.
    pub finished_at: NaiveDateTime,
}

/// How long after a face session ended it may still prove a step (voucher activation, card
/// application).
pub const FACE_SESSION_FRESHNESS: Duration = Duration::minutes(10);

/// Where a face session stands, as identity-svc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceSessionStatus {
    /// Waiting for the provider.
    Pending,
    /// A submission passed.
    Passed,
    /// Three submissions failed.
    Failed,
    /// Not finished in time.
    Expired,
}

/// What a step needs to know about a face session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaceSessionFacts {
    /// Whose face was checked.
    pub person_id: Uuid,
    /// What for; `None` for a purpose insurance-svc does not know (REAL_NAME).
    pub purpose: Option<FacePurpose>,
    /// Status.
    pub status: FaceSessionStatus,
    /// When it ended.
    pub finished_at: Option<NaiveDateTime>,
}

/// Why a face session does not prove a step (ErrorInfo metadata `face_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceCheck {
    /// identity-svc knows no such session.
    NotFound,
    /// Another person's session.
    Foreign,
    /// Not a session of the purpose the step needs.
    WrongPurpose,
    /// Not finished yet.
    Pending,
    /// Failed.
    Failed,
    /// Expired without a passing result.
    Expired,
    /// Passed, but more than [`FACE_SESSION_FRESHNESS`] ago.
    Stale,
    /// Already used by an earlier step.
    Reused,
}

impl FaceCheck {
    /// The metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            FaceCheck::NotFound => "not_found",
            FaceCheck::Foreign => "foreign",
            FaceCheck::WrongPurpose => "wrong_purpose",
            FaceCheck::Pending => "pending",
            FaceCheck::Failed => "failed",
            FaceCheck::Expired => "expired",
            FaceCheck::Stale => "stale",
            FaceCheck::Reused => "reused",
        }
    }

    /// FAILED_PRECONDITION / FACE_VERIFICATION_REQUIRED with `face_check` metadata.
    pub fn into_error(self) -> ApiError {
        let message = match self {
            FaceCheck::NotFound | FaceCheck::Foreign => "the face session is not one of this person",
            FaceCheck::WrongPurpose => "the face session is not of the purpose this step needs",
            FaceCheck::Pending => "the face session has not passed yet",
            FaceCheck::Failed | FaceCheck::Expired => "the face session did not pass: start a new one",
            FaceCheck::Stale => "the face session passed more than 10 minutes ago: start a new one",
            FaceCheck::Reused => "the face session was already used: start a new one",
        };
        ApiError::of(Reason::FaceVerificationRequired, message).with_metadata("face_check", self.as_str())
    }
}

/// The one face rule: a session proves a step of `purpose` for `person_id` at `now` when it is
/// that person's, of that purpose, PASSED, and finished at most [`FACE_SESSION_FRESHNESS`] ago.
/// Checked in that order. (Used at most once is each step's unique index to decide, in the
/// transaction that records the step.)
pub fn check_face_session(
    face: &FaceSessionFacts,
    person_id: Uuid,
    purpose: FacePurpose,
    now: NaiveDateTime,
) -> Result<(), FaceCheck> {
    if face.person_id != person_id {
        return Err(FaceCheck::Foreign);
    }
    if face.purpose != Some(purpose) {
        return Err(FaceCheck::WrongPurpose);
    }
    match face.status {
        FaceSessionStatus::Passed => {}
        FaceSessionStatus::Pending => return Err(FaceCheck::Pending),
        FaceSessionStatus::Failed => return Err(FaceCheck::Failed),
        FaceSessionStatus::Expired => return Err(FaceCheck::Expired),
    }
    match face.finished_at {
        Some(finished) if now - finished <= FACE_SESSION_FRESHNESS => Ok(()),
        _ => Err(FaceCheck::Stale),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for purpose in [FacePurpose::VoucherActivation, FacePurpose::FamilyBinding, FacePurpose::CardApplication] {
            assert_eq!(FacePurpose::parse(purpose.as_str()), Some(purpose));
        }
        for outcome in [FaceOutcome::Passed, FaceOutcome::Failed, FaceOutcome::Expired] {
            assert_eq!(FaceOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(FacePurpose::parse("REAL_NAME"), None);
    }

    #[test]
    fn a_session_proves_only_its_own_purpose() {
        let person = Uuid::now_v7();
        let now = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap().and_hms_opt(8, 0, 0).unwrap();
        let card = FaceSessionFacts {
            person_id: person,
            purpose: Some(FacePurpose::CardApplication),
            status: FaceSessionStatus::Passed,
            finished_at: Some(now - Duration::minutes(3)),
        };
        assert_eq!(check_face_session(&card, person, FacePurpose::CardApplication, now), Ok(()));
        assert_eq!(
            check_face_session(&card, person, FacePurpose::VoucherActivation, now),
            Err(FaceCheck::WrongPurpose)
        );
        let stale = FaceSessionFacts { finished_at: Some(now - Duration::minutes(11)), ..card };
        assert_eq!(check_face_session(&stale, person, FacePurpose::CardApplication, now), Err(FaceCheck::Stale));
    }
}
