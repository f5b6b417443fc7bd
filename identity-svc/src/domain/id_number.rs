//! Chinese resident identity card numbers (GB 11643-1999).
//!
//! An 18-character number is laid out as:
//!
//! | positions | meaning                                                    |
//! |-----------|------------------------------------------------------------|
//! | 1-6       | administrative region code (GB/T 2260)                     |
//! | 7-14      | birth date, `YYYYMMDD`                                     |
//! | 15-17     | sequence; odd for men, even for women                      |
//! | 18        | ISO 7064 MOD 11-2 check character, `0`-`9` or `X`          |
//!
//! Nothing in this module prints a number: [`IdNumber`]'s `Debug` is masked and
//! [`IdNumberError`]'s messages never contain the input, so both are safe in logs and
//! error details.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// Length of a GB 11643-1999 number in characters.
pub const LENGTH: usize = 18;

/// ISO 7064 MOD 11-2 weights of positions 1-17 (`2^(17 - i) mod 11`).
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Check character for each value of the weighted sum modulo 11.
const CHECK_CHARACTERS: [u8; 11] = *b"10X98765432";

/// Province-level codes of GB/T 2260 (first two digits of the region code), including
/// 71 (Taiwan), 81 (Hong Kong), 82 (Macao) and 83 (Taiwan residents' residence permits).
pub const PROVINCE_CODES: &[u8] = &[
    11, 12, 13, 14, 15, // North
    21, 22, 23, // North-east
    31, 32, 33, 34, 35, 36, 37, // East
    41, 42, 43, 44, 45, 46, // Central and south
    50, 51, 52, 53, 54, // South-west
    61, 62, 63, 64, 65, // North-west
    71, 81, 82, // Taiwan, Hong Kong, Macao
    83, // Taiwan residents' residence permits
];

/// Earliest birth year accepted.
const MIN_BIRTH_YEAR: i32 = 1900;

medins_common::text_enum! {
    /// Sex as encoded by the parity of the sequence number.
    pub enum Sex {
        /// Odd sequence number.
        Male => "MALE",
        /// Even sequence number.
        Female => "FEMALE",
    }
}

/// A valid, normalized resident ID number and the facts derived from it.
///
/// `Debug` prints `IdNumber(<masked>)` only; there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct IdNumber {
    normalized: String,
    region_code: String,
    birth_date: NaiveDate,
    sequence: u16,
    sex: Sex,
}

impl IdNumber {
    /// The normalized 18-character number (trimmed, a final `x` upper-cased to `X`).
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The 6-digit region code (first six characters).
    pub fn region_code(&self) -> &str {
        &self.region_code
    }

    /// The birth date encoded in positions 7-14.
    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// The 3-digit sequence number in positions 15-17 (0-999).
    pub fn sequence(&self) -> u16 {
        self.sequence
    }

    /// Sex derived from the parity of the sequence: odd is male, even is female.
    pub fn sex(&self) -> Sex {
        self.sex
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdNumber(<masked>)")
    }
}

/// Why a string is not a valid resident ID number. Messages never contain the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    /// Not exactly 18 characters after trimming.
    #[error("ID number must be 18 characters long")]
    WrongLength,
    /// The first 17 characters are not all ASCII digits, or the last is not a digit or `X`.
    #[error("ID number must be 17 digits followed by a digit or X")]
    InvalidCharacter,
    /// The first two digits are not a GB/T 2260 province code.
    #[error("ID number has an invalid region code")]
    InvalidRegion,
    /// Positions 7-14 are not a real calendar date from 1900 on.
    #[error("ID number has an invalid birth date")]
    InvalidBirthDate,
    /// The birth date is after today.
    #[error("ID number has a birth date in the future")]
    FutureBirthDate,
    /// The MOD 11-2 check character does not match.
    #[error("ID number check character does not match")]
    WrongCheckCharacter,
}

impl IdNumberError {
    /// Short description suitable for a `google.rpc.BadRequest` field violation.
    pub fn description(&self) -> &'static str {
        match self {
            IdNumberError::WrongLength => "must be 18 characters long",
            IdNumberError::InvalidCharacter => "must be 17 digits followed by a digit or X",
            IdNumberError::InvalidRegion => "region code is not a valid province",
            IdNumberError::InvalidBirthDate => "birth date is not a valid date from 1900 on",
            IdNumberError::FutureBirthDate => "birth date is in the future",
            IdNumberError::WrongCheckCharacter => "check character does not match",
        }
    }
}

/// Parses and validates a resident ID number as of `today` (used for the future-date check).
///
/// Surrounding whitespace is trimmed and a final `x` is accepted as `X`. Checks run in this
/// order, the first failure wins: length, characters, province, birth date (real date,
/// year >= 1900), birth date not after `today`, check character.
///
/// # Errors
///
/// The [`IdNumberError`] of the first check that fails.
pub fn parse(input: &str, today: NaiveDate) -> Result<IdNumber, IdNumberError> {
    let trimmed = input.trim();
    if trimmed.chars().count() != LENGTH {
        return Err(IdNumberError::WrongLength);
    }
    let bytes = trimmed.as_bytes();
    // 18 chars of which all are ASCII (checked next) means 18 bytes.
    if bytes.len() != LENGTH
        || !bytes[..LENGTH - 1].iter().all(u8::is_ascii_digit)
        || !matches!(bytes[LENGTH - 1], b'0'..=b'9' | b'X' | b'x')
    {
        return Err(IdNumberError::InvalidCharacter);
    }

    let province = digits_value(&bytes[0..2]) as u8;
    if !PROVINCE_CODES.contains(&province) {
        return Err(IdNumberError::InvalidRegion);
    }

    let year = digits_value(&bytes[6..10]) as i32;
    let month = digits_value(&bytes[10..12]);
    let day = digits_value(&bytes[12..14]);
    let birth_date = NaiveDate::from_ymd_opt(year, month, day)
        .filter(|d| d.year() >= MIN_BIRTH_YEAR)
        .ok_or(IdNumberError::InvalidBirthDate)?;
    if birth_date > today {
        return Err(IdNumberError::FutureBirthDate);
    }

    let check = bytes[LENGTH - 1].to_ascii_uppercase();
    if check != check_byte(&bytes[..LENGTH - 1]) {
        return Err(IdNumberError::WrongCheckCharacter);
    }

    let sequence = digits_value(&bytes[14..17]) as u16;
    let sex = if sequence % 2 == 1 { Sex::Male } else { Sex::Female };
    let mut normalized = trimmed[..LENGTH - 1].to_owned();
    normalized.push(char::from(check));

    Ok(IdNumber { region_code: trimmed[..6].to_owned(), normalized, birth_date, sequence, sex })
}

/// The ISO 7064 MOD 11-2 check character (`0`-`9` or `X`) for the first 17 digits.
///
/// # Panics
///
/// If `first17` is not exactly 17 ASCII digits (a programming error: callers build it).
pub fn check_character(first17: &str) -> char {
    let bytes = first17.as_bytes();
    assert!(
        bytes.len() == LENGTH - 1 && bytes.iter().all(u8::is_ascii_digit),
        "check_character needs exactly 17 ASCII digits"
    );
    char::from(check_byte(bytes))
}

/// Whole years between `birth` and `on` (0 if `on` is before `birth`).
///
/// A birthday counts once the calendar reaches its month and day, so a person born on
/// 29 February turns a year older on 1 March in non-leap years.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> u32 {
    if on <= birth {
        return 0;
    }
    let mut years = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).unwrap_or(0)
}

/// Check character of 17 ASCII digits, as an ASCII byte.
fn check_byte(first17: &[u8]) -> u8 {
    let sum: u32 = first17.iter().zip(WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    CHECK_CHARACTERS[(sum % 11) as usize]
}

/// Decimal value of a short run of ASCII digits (already validated).
fn digits_value(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GB_EXAMPLE: &str = "11010519491231002X";

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn today() -> NaiveDate {
        date(2025, 6, 1)
    }

    /// Builds a valid number from its parts, computing the check character.
    fn build(region: &str, birth: NaiveDate, sequence: u16) -> String {
        let first17 = format!("{region}{}{sequence:03}", birth.format("%Y%m%d"));
        let check = check_character(&first17);
        format!("{first17}{check}")
    }

    /// Replaces the character at `index` (ASCII input).
    fn with_char_at(s: &str, index: usize, c: char) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        chars[index] = c;
        chars.into_iter().collect()
    }

    #[test]
    fn gb_example_is_accepted() {
        let id = parse(GB_EXAMPLE, today()).unwrap();
        assert_eq!(id.as_str(), GB_EXAMPLE);
        assert_eq!(id.region_code(), "110105");
        assert_eq!(id.birth_date(), date(1949, 12, 31));
        assert_eq!(id.sequence(), 2);
        assert_eq!(id.sex(), Sex::Female);
    }

    #[test]
    fn lowercase_x_is_accepted_and_normalized() {
        let id = parse("11010519491231002x", today()).unwrap();
        assert_eq!(id.as_str(), GB_EXAMPLE);
        assert_eq!(id, parse(GB_EXAMPLE, today()).unwrap());
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let id = parse("  \t11010519491231002x\n ", today()).unwrap();
        assert_eq!(id.as_str(), GB_EXAMPLE);
    }

    #[test]
    fn inner_whitespace_is_rejected() {
        assert_eq!(parse("110105 19491231002", today()), Err(IdNumberError::InvalidCharacter));
    }

    #[test]
    fn check_character_of_gb_example() {
        assert_eq!(check_character("11010519491231002"), 'X');
    }

    #[test]
    fn digit_check_characters() {
        // Every value of the check character appears for some sequence number.
        let mut seen = std::collections::BTreeSet::new();
        for sequence in 0..1000 {
            let number = build("110105", date(1990, 1, 1), sequence);
            let id = parse(&number, today()).unwrap();
            assert_eq!(id.as_str(), number);
            seen.insert(number.chars().last().unwrap());
        }
        assert_eq!(seen.len(), 11);
    }

    #[test]
    #[should_panic(expected = "17 ASCII digits")]
    fn check_character_panics_on_bad_input() {
        let _ = check_character("1101051949123100");
    }

    #[test]
    fn wrong_check_character() {
        assert_eq!(parse("110105194912310021", today()), Err(IdNumberError::WrongCheckCharacter));
        assert_eq!(parse("110105194912310020", today()), Err(IdNumberError::WrongCheckCharacter));
    }

    #[test]
    fn february_30_is_invalid() {
        let number = build("110105", date(1999, 2, 28), 123).replacen("19990228", "19990230", 1);
        assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidBirthDate));
    }

    #[test]
    fn impossible_dates_are_invalid() {
        for birth in ["19990230", "19990229", "19991301", "19990001", "19990100", "19990431"] {
            let first17 = format!("110105{birth}123");
            let number = format!("{first17}{}", check_character(&first17));
            assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidBirthDate), "{birth}");
        }
    }

    #[test]
    fn leap_day_is_valid_in_leap_years() {
        let number = build("110105", date(2000, 2, 29), 7);
        let id = parse(&number, today()).unwrap();
        assert_eq!(id.birth_date(), date(2000, 2, 29));
        assert_eq!(id.sex(), Sex::Male);
    }

    #[test]
    fn year_before_1900_is_invalid() {
        let first17 = "11010518991231002";
        let number = format!("{first17}{}", check_character(first17));
        assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidBirthDate));
        let number = build("110105", date(1900, 1, 1), 2);
        assert!(parse(&number, today()).is_ok());
    }

    #[test]
    fn future_birth_date() {
        let tomorrow = today().succ_opt().unwrap();
        let number = build("110105", tomorrow, 11);
        assert_eq!(parse(&number, today()), Err(IdNumberError::FutureBirthDate));
        // Born today is fine.
        let number = build("110105", today(), 11);
        assert_eq!(parse(&number, today()).unwrap().birth_date(), today());
    }

    #[test]
    fn wrong_lengths() {
        assert_eq!(parse(&GB_EXAMPLE[..17], today()), Err(IdNumberError::WrongLength));
        assert_eq!(parse(&format!("{GB_EXAMPLE}1"), today()), Err(IdNumberError::WrongLength));
        assert_eq!(parse("", today()), Err(IdNumberError::WrongLength));
        assert_eq!(parse("   ", today()), Err(IdNumberError::WrongLength));
        // Old 15-digit numbers are not accepted.
        assert_eq!(parse("110105491231002", today()), Err(IdNumberError::WrongLength));
    }

    #[test]
    fn letter_in_position_5() {
        // Position 5 counted from 1 (index 4) and from 0 (index 5).
        for index in [4, 5] {
            let number = with_char_at(GB_EXAMPLE, index, 'A');
            assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidCharacter));
        }
    }

    #[test]
    fn x_only_allowed_last() {
        let number = with_char_at(GB_EXAMPLE, 16, 'X');
        assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidCharacter));
        let number = with_char_at(GB_EXAMPLE, 17, 'Y');
        assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidCharacter));
    }

    #[test]
    fn non_ascii_characters() {
        // 18 characters, one of them a full-width digit (3 bytes in UTF-8).
        let number = with_char_at(GB_EXAMPLE, 3, '１');
        assert_eq!(number.chars().count(), 18);
        assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidCharacter));
        assert_eq!(parse("一二三四五六七八九十一二三四五六七八", today()), Err(IdNumberError::InvalidCharacter));
    }

    #[test]
    fn invalid_regions() {
        for region in ["000000", "100000", "160101", "240101", "910101", "990101", "840101"] {
            let number = build(region, date(1980, 5, 5), 321);
            assert_eq!(parse(&number, today()), Err(IdNumberError::InvalidRegion), "{region}");
        }
        for province in PROVINCE_CODES {
            let number = build(&format!("{province:02}0101"), date(1980, 5, 5), 321);
            assert!(parse(&number, today()).is_ok(), "{province}");
        }
    }

    #[test]
    fn check_order_region_before_date_before_check() {
        // Bad region and bad date and bad check: region wins.
        assert_eq!(parse("990105199902300000", today()), Err(IdNumberError::InvalidRegion));
        // Bad date and bad check: date wins.
        assert_eq!(parse("110105199902300000", today()), Err(IdNumberError::InvalidBirthDate));
        // Future date and bad check: future wins.
        assert_eq!(parse("110105209901010000", today()), Err(IdNumberError::FutureBirthDate));
        // Bad character beats everything but length.
        assert_eq!(parse("99010519990230000A", today()), Err(IdNumberError::InvalidCharacter));
    }

    #[test]
    fn sex_from_sequence_parity() {
        let odd = parse(&build("310101", date(1985, 7, 1), 1), today()).unwrap();
        assert_eq!(odd.sex(), Sex::Male);
        let even = parse(&build("310101", date(1985, 7, 1), 0), today()).unwrap();
        assert_eq!(even.sex(), Sex::Female);
        assert_eq!(even.sequence(), 0);
        let last = parse(&build("310101", date(1985, 7, 1), 999), today()).unwrap();
        assert_eq!(last.sex(), Sex::Male);
        assert_eq!(last.sequence(), 999);
    }

    #[test]
    fn sex_strings_round_trip() {
        for sex in [Sex::Male, Sex::Female] {
            assert_eq!(Sex::parse(sex.as_str()), Some(sex));
        }
        assert_eq!(Sex::Male.as_str(), "MALE");
        assert_eq!(Sex::Female.as_str(), "FEMALE");
        assert_eq!(Sex::parse("male"), None);
        assert_eq!(Sex::parse(""), None);
        assert_eq!(Sex::parse("UNKNOWN"), None);
    }

    #[test]
    fn debug_does_not_print_the_number() {
        let id = parse(GB_EXAMPLE, today()).unwrap();
        let debug = format!("{id:?} {id:#?}");
        assert_eq!(format!("{id:?}"), "IdNumber(<masked>)");
        for secret in [GB_EXAMPLE, "110105", "19491231", "1949", "002X"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn errors_never_contain_the_input() {
        let inputs = [
            "1101051949123100",
            "11010519491231002X1",
            "1101A519491231002X",
            "990105194912310020",
            "110105199902300000",
            "110105209901010000",
            "110105194912310021",
        ];
        for input in inputs {
            let err = parse(input, today()).unwrap_err();
            for text in [err.to_string(), format!("{err:?}"), err.description().into()] {
                assert!(!text.contains(input), "{text}");
                assert!(!text.contains("110105"), "{text}");
                assert!(!text.is_empty());
            }
        }
    }

    #[test]
    fn every_error_has_distinct_description() {
        let all = [
            IdNumberError::WrongLength,
            IdNumberError::InvalidCharacter,
            IdNumberError::InvalidRegion,
            IdNumberError::InvalidBirthDate,
            IdNumberError::FutureBirthDate,
            IdNumberError::WrongCheckCharacter,
        ];
        let descriptions: std::collections::BTreeSet<_> = all.iter().map(IdNumberError::description).collect();
        assert_eq!(descriptions.len(), all.len());
    }

    #[test]
    fn age_whole_years() {
        let birth = date(1949, 12, 31);
        assert_eq!(age_on(birth, date(1949, 12, 31)), 0);
        assert_eq!(age_on(birth, date(1950, 12, 30)), 0);
        assert_eq!(age_on(birth, date(1950, 12, 31)), 1);
        assert_eq!(age_on(birth, date(2025, 6, 1)), 75);
        assert_eq!(age_on(birth, date(2024, 12, 31)), 75);
        assert_eq!(age_on(birth, date(2024, 12, 30)), 74);
    }

    #[test]
    fn age_before_birth_is_zero() {
        assert_eq!(age_on(date(2000, 1, 1), date(1999, 12, 31)), 0);
        assert_eq!(age_on(date(2000, 1, 1), date(1900, 1, 1)), 0);
    }

    #[test]
    fn age_of_leap_day_births() {
        let birth = date(2000, 2, 29);
        // Non-leap year: older on 1 March, not on 28 February.
        assert_eq!(age_on(birth, date(2001, 2, 28)), 0);
        assert_eq!(age_on(birth, date(2001, 3, 1)), 1);
        assert_eq!(age_on(birth, date(2014, 2, 28)), 13);
        assert_eq!(age_on(birth, date(2014, 3, 1)), 14);
        // Leap year: older on 29 February.
        assert_eq!(age_on(birth, date(2004, 2, 28)), 3);
        assert_eq!(age_on(birth, date(2004, 2, 29)), 4);
    }

    #[test]
    fn age_around_fourteen() {
        let birth = date(2011, 6, 1);
        assert_eq!(age_on(birth, date(2025, 5, 31)), 13);
        assert_eq!(age_on(birth, date(2025, 6, 1)), 14);
    }

    /// A valid number with the facts it was built from.
    #[derive(Debug, Clone)]
    struct Valid {
        number: String,
        region: String,
        birth: NaiveDate,
        sequence: u16,
    }

    fn valid_number() -> impl Strategy<Value = Valid> {
        let first = date(1900, 1, 1);
        let days = (today() - first).num_days();
        (prop::sample::select(PROVINCE_CODES.to_vec()), 0u32..10_000, 0i64..=days, 0u16..1000).prop_map(
            move |(province, rest, offset, sequence)| {
                let region = format!("{province:02}{rest:04}");
                let birth = first + chrono::Duration::days(offset);
                Valid { number: build(&region, birth, sequence), region, birth, sequence }
            },
        )
    }

    proptest! {
        #[test]
        fn valid_numbers_parse(v in valid_number()) {
            let id = parse(&v.number, today()).unwrap();
            prop_assert_eq!(id.as_str(), v.number.as_str());
            prop_assert_eq!(id.region_code(), v.region.as_str());
            prop_assert_eq!(id.birth_date(), v.birth);
            prop_assert_eq!(id.sequence(), v.sequence);
            let sex = if v.sequence % 2 == 1 { Sex::Male } else { Sex::Female };
            prop_assert_eq!(id.sex(), sex);
            prop_assert!(age_on(id.birth_date(), today()) <= 125);
        }

        #[test]
        fn lowercase_and_padding_normalize(v in valid_number()) {
            let input = format!(" {} ", v.number.to_ascii_lowercase());
            let id = parse(&input, today()).unwrap();
            prop_assert_eq!(id.as_str(), v.number.as_str());
        }

        #[test]
        fn every_other_check_character_is_rejected(v in valid_number()) {
            let actual = v.number.chars().last().unwrap();
            for c in "0123456789X".chars().filter(|&c| c != actual) {
                let wrong = with_char_at(&v.number, 17, c);
                prop_assert_eq!(
                    parse(&wrong, today()),
                    Err(IdNumberError::WrongCheckCharacter)
                );
            }
        }

        #[test]
        fn every_single_digit_substitution_is_rejected(v in valid_number()) {
            for index in 0..17 {
                let original = v.number.as_bytes()[index];
                for digit in (b'0'..=b'9').filter(|&d| d != original) {
                    let changed = with_char_at(&v.number, index, char::from(digit));
                    let result = parse(&changed, today());
                    prop_assert!(result.is_err(), "index {} digit {}", index, digit);
                }
            }
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,24}") {
            let _ = parse(&s, today());
        }

        #[test]
        fn age_is_monotonic(v in valid_number(), extra in 0i64..40_000) {
            let a = today();
            let b = a + chrono::Duration::days(extra);
            prop_assert!(age_on(v.birth, a) <= age_on(v.birth, b));
        }
    }
}
