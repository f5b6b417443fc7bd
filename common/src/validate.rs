//! One validation per kind of contract field, declared once and used by every RPC that takes
//! such a field (README, error table: INVALID_ARGUMENT with a `BadRequest` field violation
//! naming the field; the description never repeats the input).
//!
//! - Names: [`crate::name`] (one rule, 1-64 characters after NFC, for a person's legal name, a
//!   family member's, a card agent's, a recipient's); [`name`] here is the same rule.
//! - Free text: [`TextField`], a maximum in characters per field meaning ([`OPERATOR_REASON`],
//!   [`SUSPENSION_REASON`], ...), control characters refused.
//! - Page sizes: [`PageSize`], a default and a maximum per list.
//! - Money: [`Amount`], 1 cent up to a maximum per field meaning.
//! - A caller's reference: [`reference()`], kept exactly as sent.

use crate::{ApiError, ApiResult, Reason};

/// A name field ([`crate::name::require_name`]): INVALID_ARGUMENT / INVALID_NAME on `field`.
pub fn name(field: &str, raw: &str) -> ApiResult<String> {
    crate::name::require_name(field, raw)
}

/// A free-text field: trimmed, at most `max_chars` characters (Unicode scalar values), no
/// control characters (they would break log lines and letters); `required` refuses an empty
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextField {
    /// Most characters after trimming.
    pub max_chars: usize,
    /// Whether an empty (or all-space) value is refused.
    pub required: bool,
}

/// Why an operator suspended, resumed, or changed a person's data: shown to auditors, so long
/// enough for a sentence or two.
pub const OPERATOR_REASON: TextField = TextField { max_chars: 500, required: true };

/// Why a voucher was suspended or resumed, or a ledger entry adjusted: a short note, optional.
pub const SUSPENSION_REASON: TextField = TextField { max_chars: 200, required: false };

impl TextField {
    /// The trimmed text, or INVALID_ARGUMENT / INVALID_ARGUMENT on `field`.
    pub fn check(self, field: &str, raw: &str) -> ApiResult<String> {
        let text = raw.trim();
        if self.required && text.is_empty() {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must not be empty"));
        }
        if text.chars().count() > self.max_chars {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                field,
                format!("must be at most {} characters", self.max_chars),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must not contain control characters"));
        }
        Ok(text.to_owned())
    }
}

/// Most characters of a caller's reference ([`reference()`]).
pub const REFERENCE_MAX_CHARS: usize = 128;

/// A caller's reference (a face session's `reference`, checked by identity-svc when the session
/// starts and by insurance-svc when its outcome arrives): at most [`REFERENCE_MAX_CHARS`]
/// characters, no control characters, kept exactly as sent (the caller matches on it, so it is
/// not trimmed); INVALID_ARGUMENT / INVALID_ARGUMENT on `field` otherwise.
pub fn reference(field: &str, raw: &str) -> ApiResult<String> {
    if raw.chars().count() > REFERENCE_MAX_CHARS {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            field,
            format!("must be at most {REFERENCE_MAX_CHARS} characters"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must not contain control characters"));
    }
    Ok(raw.to_owned())
}

/// The page size of one list: 0 asks for `default` (a `default` of 0: the list has none, and
/// 0 is refused); more than `max` is either refused or capped, as the list's contract says;
/// negative is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize {
    /// What 0 (unset) means.
    pub default: usize,
    /// The largest page.
    pub max: usize,
    /// Whether a larger request is answered with `max` (AIP-158's "coerce") instead of
    /// INVALID_ARGUMENT.
    pub cap: bool,
}

/// The lists of identity-svc (links, access history): unset means the maximum, larger
/// requests are capped (their contract since issue 12).
pub const IDENTITY_LISTS: PageSize = PageSize { default: 100, max: 100, cap: true };

/// Ledger entries: 20 by default, at most 100, larger requests refused.
pub const LEDGER_ENTRIES: PageSize = PageSize { default: 20, max: 100, cap: false };

/// A person's access records as another medins service reads them (PersonAccessService): no
/// default, 1 to 101 (a page of 100 and one more to tell whether another page follows).
pub const PERSON_ACCESSES: PageSize = PageSize { default: 0, max: 101, cap: false };

impl PageSize {
    /// The page size to use, or INVALID_ARGUMENT / INVALID_ARGUMENT on `field`.
    pub fn check(self, field: &str, raw: i32) -> ApiResult<usize> {
        let out_of_range = || {
            let least = if self.default == 0 { 1 } else { 0 };
            ApiError::invalid_field(Reason::InvalidArgument, field, format!("must be {least} to {}", self.max))
        };
        let Ok(requested) = usize::try_from(raw) else {
            if self.default == 0 {
                return Err(out_of_range());
            }
            return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must not be negative"));
        };
        match requested {
            0 if self.default == 0 => Err(out_of_range()),
            0 => Ok(self.default),
            n if n <= self.max => Ok(n),
            _ if self.cap => Ok(self.max),
            _ => Err(out_of_range()),
        }
    }
}

/// A money field: a whole number of cents, at least 1 and at most `max_cents` (declared once
/// per field meaning: [`CONTRIBUTION`], ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    /// The largest amount accepted, in cents.
    pub max_cents: i64,
}

/// One contribution to an account: 1 cent to 1 000 000 yuan.
pub const CONTRIBUTION: Amount = Amount { max_cents: 100_000_000 };

impl Amount {
    /// The amount, or INVALID_ARGUMENT / INVALID_ARGUMENT on `field`.
    pub fn check(self, field: &str, raw: i64) -> ApiResult<i64> {
        if !(1..=self.max_cents).contains(&raw) {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                field,
                format!("must be 1 to {} cents", self.max_cents),
            ));
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(error: &ApiError) -> (tonic::Code, Reason) {
        (error.code(), error.reason())
    }

    #[test]
    fn free_text_is_trimmed_counted_in_characters_and_refuses_control_characters() {
        assert_eq!(OPERATOR_REASON.check("reason", "  lost card  ").unwrap(), "lost card");
        assert_eq!(OPERATOR_REASON.check("reason", &"字".repeat(500)).unwrap().chars().count(), 500);
        for bad in ["", "   ", &"字".repeat(501), "a\nb", "a\u{0}b"] {
            let error = OPERATOR_REASON.check("reason", bad).unwrap_err();
            assert_eq!(violation(&error), (tonic::Code::InvalidArgument, Reason::InvalidArgument), "{bad:?}");
        }
        assert_eq!(SUSPENSION_REASON.check("reason", "").unwrap(), "");
        assert!(SUSPENSION_REASON.check("reason", &"x".repeat(201)).is_err());
    }

    #[test]
    fn page_sizes_default_cap_or_refuse_as_their_list_says() {
        assert_eq!(IDENTITY_LISTS.check("page_size", 0).unwrap(), 100);
        assert_eq!(IDENTITY_LISTS.check("page_size", 7).unwrap(), 7);
        assert_eq!(IDENTITY_LISTS.check("page_size", 1000).unwrap(), 100);
        assert_eq!(LEDGER_ENTRIES.check("page_size", 0).unwrap(), 20);
        assert_eq!(LEDGER_ENTRIES.check("page_size", 100).unwrap(), 100);
        assert_eq!(PERSON_ACCESSES.check("page_size", 1).unwrap(), 1);
        assert_eq!(PERSON_ACCESSES.check("page_size", 101).unwrap(), 101);
        for (list, raw) in [
            (IDENTITY_LISTS, -1),
            (LEDGER_ENTRIES, -1),
            (LEDGER_ENTRIES, 101),
            (PERSON_ACCESSES, 0),
            (PERSON_ACCESSES, -1),
            (PERSON_ACCESSES, 102),
        ] {
            let error = list.check("page_size", raw).unwrap_err();
            assert_eq!(violation(&error), (tonic::Code::InvalidArgument, Reason::InvalidArgument), "{raw}");
        }
    }

    #[test]
    fn references_are_kept_as_sent_up_to_128_characters_without_control_characters() {
        assert_eq!(reference("reference", " r-1 ").unwrap(), " r-1 ");
        assert_eq!(reference("reference", &"字".repeat(128)).unwrap().chars().count(), 128);
        for bad in [&"x".repeat(129), "a\nb"] {
            let error = reference("reference", bad).unwrap_err();
            assert_eq!(violation(&error), (tonic::Code::InvalidArgument, Reason::InvalidArgument), "{bad:?}");
        }
    }

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert_eq!(CONTRIBUTION.check("amount_cents", 1).unwrap(), 1);
        assert_eq!(CONTRIBUTION.check("amount_cents", 100_000_000).unwrap(), 100_000_000);
        for bad in [0, -1, 100_000_001, i64::MIN] {
            let error = CONTRIBUTION.check("amount_cents", bad).unwrap_err();
            assert_eq!(violation(&error), (tonic::Code::InvalidArgument, Reason::InvalidArgument), "{bad}");
        }
    }
}
