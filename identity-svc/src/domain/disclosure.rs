//! What a partner may learn about a person's ID number: the age it is shown, and the count of
//! ID numbers left by everything it reads (the masks and their arithmetic are in
//! `medins_common::mask`).
//!
//! A partner reads, about one person and from all RPCs of both services together: the ID number
//! masked to region + check character, the region code, the sex, the age of [`shown_age`], and
//! timestamps (registration, real name, accounts, bindings, cards...) none of which is earlier
//! than the person's registration, so none earlier than the birth date. [`consistent_id_numbers`]
//! lists every valid ID number that fits all of it; the tests assert that at least
//! [`MIN_CANDIDATES`] are left for any person.

use chrono::{Datelike, NaiveDate};

use super::id_number::{self, Sex};

/// The fewest ID numbers that everything a partner reads about a person may leave.
pub const MIN_CANDIDATES: usize = 10_000;

/// The year a partner's age is counted from: the birth year, or the year before it for a person
/// registered (on the China date `registered_on`) in the calendar year of their birth.
///
/// Why the exception: every timestamp a partner sees about a person is at or after the
/// registration, and so an upper bound of the birth date. With the true birth year beside a
/// registration on 5 January, only the dates 1-5 January would be left (about 225 numbers).
/// Counting from the year before leaves that whole year as well: at least 365 dates.
pub fn shown_birth_year(birth: NaiveDate, registered_on: NaiveDate) -> i32 {
    if registered_on.year() <= birth.year() { birth.year() - 1 } else { birth.year() }
}

/// The age shown to partners on `today` (China dates): the current year minus
/// [`shown_birth_year`], i.e. the age the person reaches on their birthday this year. It changes
/// on 1 January for everyone and never on a birthday, so a partner that polls daily learns the
/// birth year and nothing finer.
pub fn shown_age(birth: NaiveDate, registered_on: NaiveDate, today: NaiveDate) -> u32 {
    u32::try_from(today.year() - shown_birth_year(birth, registered_on)).unwrap_or(0)
}

/// Everything a partner reads about one person that bears on the ID number, from all views.
#[derive(Debug, Clone, Copy)]
pub struct PartnerReading<'a> {
    /// The masked ID number (`*` for hidden characters).
    pub masked_id_number: &'a str,
    /// The six-digit region code.
    pub region_code: &'a str,
    /// The sex.
    pub sex: Sex,
    /// The age shown.
    pub age: u32,
    /// The China date on which the age was read.
    pub read_on: NaiveDate,
    /// The China date of the earliest timestamp read about the person (the registration, or
    /// anything later): the person was born on or before it.
    pub registered_on: NaiveDate,
}

/// Every valid ID number consistent with `reading`: the visible characters of the mask, the
/// region, the sex, the age shown on `read_on`, and a birth date not after `registered_on`.
pub fn consistent_id_numbers(reading: &PartnerReading<'_>) -> Vec<String> {
    let masked: Vec<char> = reading.masked_id_number.chars().collect();
    if masked.len() != id_number::LENGTH || reading.region_code.len() != 6 {
        return Vec::new();
    }
    let visible_fits = |candidate: &str| candidate.chars().zip(&masked).all(|(c, &m)| m == '*' || c == m);
    // shown_birth_year is the birth year or the one before, so the birth year is one of these.
    let counted_from = reading.read_on.year() - i32::try_from(reading.age).unwrap_or(i32::MAX);
    let mut found = Vec::new();
    for year in counted_from..=counted_from.saturating_add(1) {
        let Some(first) = NaiveDate::from_ymd_opt(year, 1, 1) else { continue };
        for birth in first.iter_days().take_while(|day| day.year() == year) {
            if birth > reading.registered_on || shown_age(birth, reading.registered_on, reading.read_on) != reading.age
            {
                continue;
            }
            let date = birth.format("%Y%m%d").to_string();
            let parity = match reading.sex {
                Sex::Male => 1,
                Sex::Female => 0,
            };
            for sequence in (parity..1000).step_by(2) {
                let first17 = format!("{}{date}{sequence:03}", reading.region_code);
                let candidate = format!("{first17}{}", id_number::check_character(&first17));
                if visible_fits(&candidate) && id_number::parse(&candidate, reading.read_on).is_ok() {
                    found.push(candidate);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use medins_common::mask::mask_id_number;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn id_of(region: &str, birth: NaiveDate, sequence: u16) -> String {
        let first17 = format!("{region}{}{sequence:03}", birth.format("%Y%m%d"));
        format!("{first17}{}", id_number::check_character(&first17))
    }

    /// What a partner reads about the person with `id`, registered on `registered_on`, on `read_on`.
    fn candidates_for(id: &str, masked: &str, registered_on: NaiveDate, read_on: NaiveDate) -> Vec<String> {
        let parsed = id_number::parse(id, read_on).unwrap();
        consistent_id_numbers(&PartnerReading {
            masked_id_number: masked,
            region_code: parsed.region_code(),
            sex: parsed.sex(),
            age: shown_age(parsed.birth_date(), registered_on, read_on),
            read_on,
            registered_on,
        })
    }

    #[test]
    fn the_age_shown_changes_on_1_january_and_not_on_the_birthday() {
        let birth = date(1960, 1, 18);
        let registered = date(2020, 5, 1);
        assert_eq!(shown_age(birth, registered, date(2026, 1, 1)), 66);
        assert_eq!(shown_age(birth, registered, date(2026, 1, 17)), 66);
        assert_eq!(shown_age(birth, registered, date(2026, 1, 18)), 66);
        assert_eq!(shown_age(birth, registered, date(2026, 12, 31)), 66);
        assert_eq!(shown_age(birth, registered, date(2025, 12, 31)), 65);
    }

    #[test]
    fn a_person_registered_in_their_birth_year_is_counted_from_the_year_before() {
        assert_eq!(shown_birth_year(date(2026, 1, 3), date(2026, 1, 5)), 2025);
        assert_eq!(shown_age(date(2026, 1, 3), date(2026, 1, 5), date(2026, 2, 1)), 1);
        assert_eq!(shown_birth_year(date(2025, 12, 30), date(2026, 1, 5)), 2025);
    }

    #[test]
    fn the_former_view_left_one_number_and_the_current_one_thousands() {
        let id = "110105196001184885";
        let (registered, today) = (date(2020, 5, 1), date(2026, 12, 7));
        // The former mask showed the sequence and the check character: even beside an age that
        // gives only the birth year, it leaves a few dozen numbers (one sequence per date).
        let former = format!("{}********{}", &id[..6], &id[14..]);
        assert!(candidates_for(id, &former, registered, today).len() < 400);
        let current = candidates_for(id, &mask_id_number(id), registered, today);
        assert!(current.len() >= MIN_CANDIDATES, "{}", current.len());
        assert!(current.iter().any(|c| c == id));
    }

    #[test]
    fn a_newborn_registered_days_after_birth_still_leaves_thousands() {
        let id = id_of("110105", date(2026, 1, 3), 123);
        let candidates = candidates_for(&id, &mask_id_number(&id), date(2026, 1, 5), date(2026, 1, 7));
        assert!(candidates.len() >= MIN_CANDIDATES, "{}", candidates.len());
        assert!(candidates.contains(&id));
    }

    fn valid_person() -> impl Strategy<Value = (String, NaiveDate, NaiveDate)> {
        // Leap days are drawn on purpose, both sexes through the sequence's parity.
        let today = date(2026, 12, 7);
        let birth = prop_oneof![
            (1900i32..=2026, 1u32..=366).prop_filter_map("a date", |(y, d)| NaiveDate::from_yo_opt(y, d)),
            prop::sample::select(vec![1904, 1960, 2000, 2004, 2024]).prop_map(|y| date(y, 2, 29)),
        ]
        .prop_filter("not in the future", move |birth| *birth <= today);
        let region = prop::sample::select(vec!["110105", "440301", "310101", "650102", "820000", "540102"]);
        (region, birth, 0u16..1000, 0i64..30_000, 0i64..30_000).prop_map(move |(region, birth, seq, after, read)| {
            let registered = (birth + chrono::Days::new(after as u64)).min(today);
            let read_on = (registered + chrono::Days::new(read as u64)).min(today);
            (id_of(region, birth, seq), registered, read_on)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn everything_a_partner_reads_leaves_at_least_10000_id_numbers((id, registered, read_on) in valid_person()) {
            let candidates = candidates_for(&id, &mask_id_number(&id), registered, read_on);
            prop_assert!(candidates.len() >= MIN_CANDIDATES, "{} left for {}", candidates.len(), mask_id_number(&id));
            prop_assert!(candidates.contains(&id), "the true number is a candidate");
        }
    }
}
