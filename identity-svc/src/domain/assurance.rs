//! Assurance levels, token issue and suspensions: pure decisions, no I/O.
//!
//! Level 1 comes with real name (SMS to the phone on record + identity authority). Level 2 comes
//! from a PASSED face session of purpose REAL_NAME on top of level 1. A REAL_NAME face session
//! that passes for a person whose real name is not complete is recorded (the session is PASSED)
//! but raises nothing, and is not counted later: until the authority confirms the name and ID
//! number, the person is only a claim, and a face matched against a claim proves nothing about
//! who will hold the confirmed identity. After real name the person passes a new session.

use medins_common::{ApiError, ApiResult, Reason, assurance::AssuranceLevel};

use super::face::{FacePurpose, FaceStatus};

/// How level 1 was reached by CompleteRealName.
pub const METHOD_REAL_NAME: &str = "SMS_AND_AUTHORITY";
/// How level 2 was reached.
pub const METHOD_FACE: &str = "REAL_NAME_FACE_SESSION";

/// The level a person's tokens carry: `None` before real name is complete (no token at all).
/// A stored level below 1 for a verified person (a row verified before levels existed, or by
/// hand) counts as 1.
pub fn effective_level(real_name_verified: bool, stored_level: i32) -> Option<AssuranceLevel> {
    if !real_name_verified {
        return None;
    }
    Some(AssuranceLevel::from_number(i64::from(stored_level)).unwrap_or(AssuranceLevel::RealName))
}

/// What a finished face session does to its person's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceAssurance {
    /// Raise to level 2.
    Raise,
    /// Nothing changes (another purpose, not PASSED, not yet level 1, already level 2).
    Unchanged,
}

/// Decides what a face session that ended with `status` does to a person at `current` level.
pub fn decide_face_assurance(
    purpose: FacePurpose,
    status: FaceStatus,
    current: Option<AssuranceLevel>,
) -> FaceAssurance {
    match (purpose, status, current) {
        (FacePurpose::RealName, FaceStatus::Passed, Some(AssuranceLevel::RealName)) => FaceAssurance::Raise,
        _ => FaceAssurance::Unchanged,
    }
}

/// What IssuePersonToken finds about a person, once the access table has found the calling
/// partner linked with them (`domain::access`, standing Linked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenIssueFacts {
    /// An operator suspended the person and has not resumed them.
    pub suspended: bool,
    /// Real name is complete.
    pub real_name_verified: bool,
    /// The stored level.
    pub stored_level: i32,
}

/// The level of the token to issue to a linked partner, or why none is issued.
pub fn decide_token_issue(facts: TokenIssueFacts) -> ApiResult<AssuranceLevel> {
    if facts.suspended {
        return Err(ApiError::of(
            Reason::PersonSuspended,
            "an operator suspended this person: no person tokens are issued until the suspension is lifted",
        ));
    }
    effective_level(facts.real_name_verified, facts.stored_level)
        .ok_or_else(|| ApiError::of(Reason::RealNameRequired, "the person's real name is not verified"))
}

/// Longest partner id accepted in a request.
pub const MAX_PARTNER_ID_LEN: usize = 64;

/// Validates a partner id named in a request: 1-64 printable ASCII characters without spaces.
pub fn parse_partner_id(field: &str, raw: &str) -> ApiResult<String> {
    let id = raw.trim();
    if id.is_empty() || id.len() > MAX_PARTNER_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            field,
            "must be 1-64 printable ASCII characters without spaces",
        ));
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const L1: Option<AssuranceLevel> = Some(AssuranceLevel::RealName);
    const L2: Option<AssuranceLevel> = Some(AssuranceLevel::RealNameAndFace);

    #[test]
    fn a_passed_real_name_face_session_raises_level_1_to_2_and_nothing_else_does() {
        use FaceAssurance::{Raise, Unchanged};
        assert_eq!(decide_face_assurance(FacePurpose::RealName, FaceStatus::Passed, L1), Raise);
        assert_eq!(decide_face_assurance(FacePurpose::RealName, FaceStatus::Passed, L2), Unchanged);
        assert_eq!(decide_face_assurance(FacePurpose::RealName, FaceStatus::Passed, None), Unchanged, "a claim");
        for status in [FaceStatus::Failed, FaceStatus::Expired, FaceStatus::Pending] {
            assert_eq!(decide_face_assurance(FacePurpose::RealName, status, L1), Unchanged);
        }
        for purpose in [FacePurpose::VoucherActivation, FacePurpose::FamilyBinding, FacePurpose::CardApplication] {
            assert_eq!(decide_face_assurance(purpose, FaceStatus::Passed, L1), Unchanged);
        }
    }

    #[test]
    fn the_level_needs_real_name_and_counts_a_verified_person_as_at_least_1() {
        assert_eq!(effective_level(false, 2), None);
        assert_eq!(effective_level(true, 0), L1);
        assert_eq!(effective_level(true, 1), L1);
        assert_eq!(effective_level(true, 2), L2);
    }

    #[test]
    fn tokens_need_no_suspension_then_real_name() {
        let ok = TokenIssueFacts { suspended: false, real_name_verified: true, stored_level: 2 };
        assert_eq!(decide_token_issue(ok).unwrap(), AssuranceLevel::RealNameAndFace);
        let reason = |facts| decide_token_issue(facts).unwrap_err().reason();
        assert_eq!(
            reason(TokenIssueFacts { suspended: true, real_name_verified: false, ..ok }),
            Reason::PersonSuspended
        );
        assert_eq!(reason(TokenIssueFacts { real_name_verified: false, ..ok }), Reason::RealNameRequired);
    }

    #[test]
    fn operator_reasons_and_partner_ids_are_validated() {
        // The operator's reason of SuspendPerson and ResumePerson is the shared declaration.
        use medins_common::validate::OPERATOR_REASON;
        assert_eq!(OPERATOR_REASON.check("reason", "  fraud report 42 ").unwrap(), "fraud report 42");
        for bad in ["", "  ", "a\u{7}b", &"x".repeat(501)] {
            assert_eq!(OPERATOR_REASON.check("reason", bad).unwrap_err().reason(), Reason::InvalidArgument);
        }
        assert_eq!(parse_partner_id("partner_id", "bank").unwrap(), "bank");
        for bad in ["", "a b", "银行", &"p".repeat(65)] {
            assert!(parse_partner_id("partner_id", bad).is_err(), "{bad:?}");
        }
    }
}
