//! Rules about persons that are not about the ID number itself: names, real-name status.

use chrono::NaiveDateTime;
use medins_common::{ApiError, ApiResult, Reason};

use super::{id_number::IdNumberError, phone::PhoneError};

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
        assert_eq!(normalize_name("name", "   ").unwrap_err().reason(), Reason::InvalidName);
        assert_eq!(normalize_name("name", "张\u{200B}三").unwrap_err().reason(), Reason::InvalidName);
        assert_eq!(normalize_name("name", "Jose\u{301}").unwrap(), "Jos\u{e9}");
        assert!(normalize_name("name", &"名".repeat(65)).is_err());
        assert!(normalize_name("name", &"名".repeat(64)).is_ok());
        assert!(normalize_name("name", "张\u{0}三").is_err());
    }
}
