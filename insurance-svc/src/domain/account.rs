//! Accounts: the entity, schemes, statuses and the rules for opening one.

use chrono::{NaiveDate, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason};
use uuid::Uuid;

medins_common::text_enum! {
    /// The insurance scheme of an account.
    pub enum Scheme {
        /// Urban employee basic medical insurance (has an employer).
        Employee => "EMPLOYEE",
        /// Urban and rural resident basic medical insurance.
        Resident => "RESIDENT",
    }
}

medins_common::text_enum! {
    /// Lifecycle of an account.
    pub enum AccountStatus {
        /// Pays and receives.
        Active => "ACTIVE",
        /// Frozen: pays nothing.
        Suspended => "SUSPENDED",
        /// Closed for good.
        Closed => "CLOSED",
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Account id.
    pub id: Uuid,
    /// Person id at identity-svc.
    pub person_id: Uuid,
    /// Scheme.
    pub scheme: Scheme,
    /// Region code.
    pub region_code: String,
    /// Employer code (employee scheme).
    pub employer_code: Option<String>,
    /// Status.
    pub status: AccountStatus,
    /// Individual-account balance in cents.
    pub balance_cents: i64,
    /// The holder's birth date (from identity-svc; for age rules).
    pub birth_date: NaiveDate,
    /// Opened.
    pub opened_at: NaiveDateTime,
}

/// What opening an account needs besides the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTerms {
    /// Scheme.
    pub scheme: Scheme,
    /// Six-digit region code of the insuring place.
    pub region_code: String,
    /// Employer code, for the employee scheme only.
    pub employer_code: Option<String>,
}

/// Whether `text` is a six-digit administrative region code.
pub fn is_region_code(text: &str) -> bool {
    text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0')
}

/// Whether `text` is an employer code: 1-32 letters, digits or hyphens (one rule with the
/// partners file's `employer_codes`).
pub use medins_common::auth::is_employer_code;

/// Validates the terms of a new account: a six-digit region code; an employer code (1-32
/// letters, digits or hyphens) for EMPLOYEE and none for RESIDENT.
pub fn account_terms(scheme: Scheme, region_code: &str, employer_code: &str) -> ApiResult<AccountTerms> {
    let region_code = region_code.trim();
    if !is_region_code(region_code) {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, "region_code", "must be a six-digit region code"));
    }
    let employer_code = employer_code.trim();
    let employer_code = match (scheme, employer_code.is_empty()) {
        (Scheme::Employee, true) => {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "employer_code",
                "required for SCHEME_EMPLOYEE",
            ));
        }
        (Scheme::Resident, false) => {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "employer_code",
                "must be empty for SCHEME_RESIDENT",
            ));
        }
        (Scheme::Resident, true) => None,
        (Scheme::Employee, false) => {
            if !is_employer_code(employer_code) {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "employer_code",
                    "must be 1-32 letters, digits or hyphens",
                ));
            }
            Some(employer_code.to_owned())
        }
    };
    Ok(AccountTerms { scheme, region_code: region_code.to_owned(), employer_code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn employee_accounts_need_an_employer_and_residents_have_none() {
        assert!(account_terms(Scheme::Employee, "110105", "").is_err());
        assert!(account_terms(Scheme::Resident, "110105", "ACME").is_err());
        assert_eq!(
            account_terms(Scheme::Employee, "110105", "ACME-1").unwrap().employer_code.as_deref(),
            Some("ACME-1")
        );
        assert_eq!(account_terms(Scheme::Resident, "110105", "").unwrap().employer_code, None);
        assert!(account_terms(Scheme::Employee, "110105", "ACME 1").is_err());
        assert!(account_terms(Scheme::Employee, "110105", &"A".repeat(33)).is_err());
    }

    #[test]
    fn region_codes_are_six_digits() {
        for bad in ["", "11010", "1101050", "11010a", "010105"] {
            let error = account_terms(Scheme::Resident, bad, "").unwrap_err();
            assert_eq!(error.reason(), Reason::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn stored_spellings_round_trip() {
        for scheme in [Scheme::Employee, Scheme::Resident] {
            assert_eq!(Scheme::parse(scheme.as_str()), Some(scheme));
        }
        for status in [AccountStatus::Active, AccountStatus::Suspended, AccountStatus::Closed] {
            assert_eq!(AccountStatus::parse(status.as_str()), Some(status));
        }
    }
}
