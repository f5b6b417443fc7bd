//! Assurance levels of a person's identity, and the one table of which RPC needs which level.
//!
//! - Level 1 (`REAL_NAME`): the person proved the phone on record with an SMS code and the
//!   identity authority confirmed name and ID number (CompleteRealName).
//! - Level 2 (`REAL_NAME_AND_FACE`): level 1, then a face session of purpose REAL_NAME PASSED.
//!
//! A person token carries the level its person had when it was issued (claim `lvl`). Acting for
//! other people (binding a family member, paying for them), changing the phone and applying for
//! a card need level 2; everything else a token allows needs level 1. A token below the level an
//! RPC needs is refused PERMISSION_DENIED / ASSURANCE_LEVEL_TOO_LOW before anything is written;
//! operators and medins services (no token) are not subject to levels.
//!
//! The table is keyed by full method path, which the auth layer records for every call
//! ([`crate::auth::CalledMethod`]), so the check runs inside the token check both services
//! already make and no handler has to remember it.

use std::fmt;

use crate::{ApiError, ApiResult, Reason, token::PersonClaims};

/// How strongly a person's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AssuranceLevel {
    /// SMS to the phone on record + identity authority.
    RealName = 1,
    /// Level 1 + a PASSED face session of purpose REAL_NAME.
    RealNameAndFace = 2,
}

impl AssuranceLevel {
    /// The number carried in tokens and stored on persons.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The level of a stored or carried number; `None` outside 1..=2.
    pub fn from_number(number: i64) -> Option<AssuranceLevel> {
        match number {
            1 => Some(AssuranceLevel::RealName),
            2 => Some(AssuranceLevel::RealNameAndFace),
            _ => None,
        }
    }
}

impl fmt::Display for AssuranceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The RPCs a level-1 token is not enough for. Every other RPC that takes a person token needs
/// level 1, which every token has.
pub const LEVEL_2_METHODS: &[&str] = &[
    "/medins.identity.v1.PersonService/ChangePhone",
    "/medins.insurance.v1.FamilyService/AddFamilyMember",
    "/medins.insurance.v1.FamilyService/SetFamilyAid",
    "/medins.insurance.v1.CardService/ApplyForCard",
];

/// The level a person token must carry for `method`. An unknown method (`None`: the call did
/// not pass the auth layer) needs the highest level: failing closed costs a face session,
/// failing open would let a level-1 token through.
pub fn required_level(method: Option<&str>) -> AssuranceLevel {
    match method {
        Some(method) if !LEVEL_2_METHODS.contains(&method) => AssuranceLevel::RealName,
        _ => AssuranceLevel::RealNameAndFace,
    }
}

/// Whether a token carrying `held` may call `method`.
pub fn permits(held: AssuranceLevel, method: Option<&str>) -> bool {
    held >= required_level(method)
}

/// PERMISSION_DENIED / ASSURANCE_LEVEL_TOO_LOW unless the token (if any) carries the level
/// `method` needs. `None` claims (operators, medins services) pass.
pub fn require_level(claims: Option<&PersonClaims>, method: Option<&str>) -> ApiResult<()> {
    match claims {
        Some(claims) if !permits(claims.assurance_level, method) => Err(ApiError::of(
            Reason::AssuranceLevelTooLow,
            format!(
                "this call needs a person token of assurance level {} (real name and a PASSED REAL_NAME face \
                 session); the token carries level {}: pass a face session, then issue a new token",
                required_level(method),
                claims.assurance_level
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_others_paying_for_them_phone_change_and_cards_need_level_2() {
        for method in LEVEL_2_METHODS {
            assert_eq!(required_level(Some(method)), AssuranceLevel::RealNameAndFace, "{method}");
            assert!(!permits(AssuranceLevel::RealName, Some(method)));
            assert!(permits(AssuranceLevel::RealNameAndFace, Some(method)));
        }
        for method in [
            "/medins.identity.v1.PersonService/GetPerson",
            "/medins.insurance.v1.CodeService/IssueCode",
            "/medins.insurance.v1.FamilyService/RemoveFamilyMember",
            "/medins.insurance.v1.AccountService/ListAccountEntries",
        ] {
            assert!(permits(AssuranceLevel::RealName, Some(method)), "{method}");
        }
    }

    #[test]
    fn an_unknown_method_needs_the_highest_level() {
        assert_eq!(required_level(None), AssuranceLevel::RealNameAndFace);
    }

    #[test]
    fn levels_round_trip_through_their_numbers() {
        for level in [AssuranceLevel::RealName, AssuranceLevel::RealNameAndFace] {
            assert_eq!(AssuranceLevel::from_number(i64::from(level.number())), Some(level));
        }
        assert_eq!(AssuranceLevel::from_number(0), None);
        assert_eq!(AssuranceLevel::from_number(3), None);
    }
}
