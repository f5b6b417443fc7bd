//! Mainland China mobile phone numbers.
//!
//! Accepted input: 11 digits starting with `1` and a second digit from 3 to 9, optionally
//! preceded by `+86` or `86` (itself optionally followed by one space or hyphen), with single
//! spaces or hyphens allowed between digit groups, e.g. `13812341234`, `+86 138 1234 1234`,
//! `86-138-1234-1234`. Surrounding whitespace is trimmed. The normalized form is the 11 digits.
//!
//! [`Phone`]'s `Debug` is masked and [`PhoneError`]'s messages never contain the input.

use std::fmt;

/// Number of digits of a mainland mobile number.
pub const DIGITS: usize = 11;

/// A valid mainland mobile number, normalized to its 11 digits.
///
/// `Debug` prints `Phone(<masked>)` only; there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// The normalized 11 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(<masked>)")
    }
}

/// Why a string is not a valid mainland mobile number. Messages never contain the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing but whitespace.
    #[error("phone number is empty")]
    Empty,
    /// A character other than digits and single spaces or hyphens between digits (after an
    /// optional `+86` / `86` prefix).
    #[error("phone number may contain only digits, an optional +86 prefix and single spaces or hyphens between digits")]
    InvalidFormat,
    /// Not exactly 11 digits (after the optional prefix).
    #[error("phone number must have 11 digits")]
    WrongLength,
    /// 11 digits, but not starting with `1` followed by 3-9.
    #[error("phone number is not a mainland mobile number")]
    NotMobile,
}

impl PhoneError {
    /// Short description suitable for a `google.rpc.BadRequest` field violation.
    pub fn description(&self) -> &'static str {
        match self {
            PhoneError::Empty => "must not be empty",
            PhoneError::InvalidFormat => {
                "must be digits with an optional +86 prefix and single spaces or hyphens between groups"
            }
            PhoneError::WrongLength => "must have 11 digits",
            PhoneError::NotMobile => "must be a mainland mobile number starting with 13-19",
        }
    }
}

/// Parses a mainland mobile number (see the module documentation for accepted forms).
///
/// Checks run in this order: empty, format (characters and separators), digit count,
/// mobile prefix `1[3-9]`.
///
/// # Errors
///
/// The [`PhoneError`] of the first check that fails.
pub fn parse(input: &str) -> Result<Phone, PhoneError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    let rest = strip_country_code(trimmed);

    let mut digits = String::with_capacity(DIGITS);
    let mut previous_was_digit = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => {
                digits.push(c);
                previous_was_digit = true;
            }
            // A separator must follow a digit (no leading or doubled separators) ...
            ' ' | '-' if previous_was_digit => previous_was_digit = false,
            _ => return Err(PhoneError::InvalidFormat),
        }
    }
    // ... and be followed by one (no trailing separator); also rejects a bare prefix.
    if !previous_was_digit {
        return Err(if digits.is_empty() { PhoneError::WrongLength } else { PhoneError::InvalidFormat });
    }

    if digits.len() != DIGITS {
        return Err(PhoneError::WrongLength);
    }
    let bytes = digits.as_bytes();
    if bytes[0] != b'1' || !(b'3'..=b'9').contains(&bytes[1]) {
        return Err(PhoneError::NotMobile);
    }
    Ok(Phone(digits))
}

/// Removes a leading `+86` or `86`, and one space or hyphen after it.
///
/// A bare `86` is always a prefix: no mobile number starts with 8.
fn strip_country_code(s: &str) -> &str {
    match s.strip_prefix("+86").or_else(|| s.strip_prefix("86")) {
        Some(rest) => rest.strip_prefix(' ').or_else(|| rest.strip_prefix('-')).unwrap_or(rest),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NUMBER: &str = "13812341234";

    #[test]
    fn plain_number() {
        assert_eq!(parse(NUMBER).unwrap().as_str(), NUMBER);
    }

    #[test]
    fn accepted_forms_normalize() {
        for input in [
            "13812341234",
            "  13812341234\t",
            "+8613812341234",
            "8613812341234",
            "+86 13812341234",
            "+86-13812341234",
            "86 13812341234",
            "138 1234 1234",
            "138-1234-1234",
            "+86 138 1234 1234",
            "+86-138-1234-1234",
            "86 138-1234 1234",
            "1 3 8 1 2 3 4 1 2 3 4",
        ] {
            assert_eq!(parse(input).map(|p| p.as_str().to_owned()), Ok(NUMBER.to_owned()), "{input:?}");
        }
    }

    #[test]
    fn all_mobile_prefixes() {
        for second in '3'..='9' {
            let number = format!("1{second}012345678");
            assert_eq!(parse(&number).unwrap().as_str(), number);
        }
    }

    #[test]
    fn not_mobile() {
        for input in ["12812341234", "10812341234", "23812341234", "03812341234", "+86 02112345678"] {
            assert_eq!(parse(input), Err(PhoneError::NotMobile), "{input:?}");
        }
    }

    #[test]
    fn empty() {
        assert_eq!(parse(""), Err(PhoneError::Empty));
        assert_eq!(parse("  \n "), Err(PhoneError::Empty));
    }

    #[test]
    fn wrong_length() {
        for input in [
            "1381234123",
            "138123412345",
            "+86 1381234123",
            "+86",
            "86",
            "+86-",
            "1",
            "861381234123",
            "+86 86 13812341234",
            "0086 13812341234",
        ] {
            assert_eq!(parse(input), Err(PhoneError::WrongLength), "{input:?}");
        }
    }

    #[test]
    fn invalid_format() {
        for input in [
            "138123412a4",
            "138.1234.1234",
            "(138)12341234",
            "138  1234 1234",
            "138--1234-1234",
            "138 -1234-1234",
            "-13812341234",
            "13812341234-",
            "+86  13812341234",
            "+86 -13812341234",
            "+ 8613812341234",
            "+85213812341234",
            "+1 13812341234",
            "１３８１２３４１２３４",
            "13812341234 ext 1",
            "138\t1234\t1234",
        ] {
            assert_eq!(parse(input), Err(PhoneError::InvalidFormat), "{input:?}");
        }
    }

    #[test]
    fn debug_is_masked() {
        let phone = parse(NUMBER).unwrap();
        let debug = format!("{phone:?} {phone:#?}");
        assert_eq!(format!("{phone:?}"), "Phone(<masked>)");
        assert!(!debug.contains("1234"), "{debug}");
        assert!(!debug.contains("138"), "{debug}");
    }

    #[test]
    fn errors_never_contain_the_input() {
        for input in ["1381234123", "12812341234", "138a1234123", "", "+86 1381234123"] {
            let err = parse(input).unwrap_err();
            for text in [err.to_string(), format!("{err:?}"), err.description().to_owned()] {
                assert!(!text.is_empty());
                assert!(!text.contains("1234"), "{text}");
            }
        }
    }

    #[test]
    fn descriptions_are_distinct() {
        let all = [PhoneError::Empty, PhoneError::InvalidFormat, PhoneError::WrongLength, PhoneError::NotMobile];
        let set: std::collections::BTreeSet<_> = all.iter().map(PhoneError::description).collect();
        assert_eq!(set.len(), all.len());
    }

    fn mobile() -> impl Strategy<Value = String> {
        (3u8..=9, 0u64..1_000_000_000).prop_map(|(second, rest)| format!("1{second}{rest:09}"))
    }

    proptest! {
        #[test]
        fn valid_numbers_round_trip(number in mobile()) {
            let phone = parse(&number).unwrap();
            prop_assert_eq!(phone.as_str(), number.as_str());
        }

        #[test]
        fn grouped_and_prefixed_forms_normalize(
            number in mobile(),
            prefix in prop::sample::select(vec!["", "+86", "86", "+86 ", "86-"]),
            a in 1usize..11,
            b in 1usize..11,
            sep in prop::sample::select(vec![" ", "-"]),
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let grouped = if lo == hi {
                format!("{}{sep}{}", &number[..lo], &number[lo..])
            } else {
                format!("{}{sep}{}{sep}{}", &number[..lo], &number[lo..hi], &number[hi..])
            };
            let input = format!("{prefix}{grouped}");
            let phone = parse(&input).unwrap();
            prop_assert_eq!(phone.as_str(), number.as_str());
        }

        #[test]
        fn arbitrary_input_never_panics_and_ok_is_normalized(s in "\\PC{0,20}") {
            if let Ok(phone) = parse(&s) {
                prop_assert_eq!(phone.as_str().len(), DIGITS);
                prop_assert!(phone.as_str().bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
