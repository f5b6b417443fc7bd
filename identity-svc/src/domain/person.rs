//! Rules about persons that are not about the ID number itself: names, real-name status.

use chrono::NaiveDateTime;
use medins_common::{ApiError, ApiResult, Reason};

use super::{id_number::IdNumberError, phone::PhoneError};

/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Validates and normalises a legal name: trimmed, 1-64 characters, no control characters.
/// Names are compared exactly after this (minority names keep their `·`).
pub fn normalize_name(field: &str, raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must be 1-64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must not contain control characters"));
    }
    Ok(name.to_owned())
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

/// The request error for a bad ID number.
pub fn id_number_error(field: &str, error: IdNumberError) -> ApiError {
    ApiError::invalid_field(Reason::InvalidIdNumber, field, error.description())
}

/// The request error for a bad phone number.
pub fn phone_error(field: &str, error: PhoneError) -> ApiError {
    ApiError::invalid_field(Reason::InvalidPhone, field, error.description())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(normalize_name("name", "  张三 ").unwrap(), "张三");
        assert_eq!(normalize_name("name", "阿依古丽·买买提").unwrap(), "阿依古丽·买买提");
        assert_eq!(normalize_name("name", "   ").unwrap_err().reason(), Reason::InvalidArgument);
        assert!(normalize_name("name", &"名".repeat(65)).is_err());
        assert!(normalize_name("name", &"名".repeat(64)).is_ok());
        assert!(normalize_name("name", "张\u{0}三").is_err());
    }
}
