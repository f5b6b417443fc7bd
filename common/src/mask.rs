//! Masking of personal data for display outside identity-svc.
//!
//! Outside identity-svc an ID number, a name or a phone number appears only masked:
//! ID `110105***********X`, name `*三`, phone `138****1234`. Every function here works on
//! characters (not bytes), never panics, and returns a string with as many characters as
//! its input, so an empty input gives an empty output. Input is not trimmed or validated:
//! anything that does not have the expected shape is masked more, never less.
//!
//! # What the masks leave, counted with everything else a partner reads
//!
//! Nothing a partner receives about a person, from all RPCs of both services together, may
//! narrow the person's ID number, phone or name to fewer than 10,000 candidates. A partner
//! reads, besides these masks: the six-digit region code, the sex, an age that changes only on
//! 1 January (identity-svc's `domain::disclosure::shown_age`: the current year minus the birth
//! year, so it gives the birth year and nothing finer), and timestamps that are never earlier
//! than the person's registration (so never earlier than the birth date).
//!
//! - ID number (GB 11643: region 6 + birth date 8 + sequence 3 whose parity is the sex + an
//!   ISO 7064 MOD 11-2 check character fixed by the other 17): the mask keeps the region and
//!   the check character and hides the birth date and the sequence. Knowing region, birth year
//!   and sex leaves 365 (or 366) dates x 500 sequences = 182,500 numbers; the visible check
//!   character keeps one in 11 of them: for one date the 500 sequences of one parity spread over
//!   the 11 check characters with 45 or 46 on each, so at least 365 x 45 = 16,425 numbers are
//!   left whatever the check character. The former mask kept the last four
//!   characters (sequence and check): with a birth date or age beside it, one number was left.
//!   A person registered in the calendar year of their birth is shown one year older (their
//!   age counts from the year before), so that a registration timestamp early in the year does
//!   not confine their birth date to a few days: the candidates then span the whole previous
//!   year too.
//! - Phone (11 digits): the mask hides 4 digits, 10,000 candidates; no view shows another part
//!   of a phone.
//! - Name: all characters but the last are hidden; with thousands of common given-name
//!   characters for each hidden position, a masked name of two or more characters leaves well
//!   over 10,000 names, and a one-character name is hidden entirely.

/// The character that replaces hidden characters.
const MASK: char = '*';

/// Length of a GB 11643-1999 resident ID number in characters.
const ID_NUMBER_LENGTH: usize = 18;

/// Masks a resident ID number, keeping the 6-character region code and the check character
/// only: `11010519491231002X` becomes `110105***********X`. The birth date and the sequence
/// (which the age and sex shown beside it would otherwise complete) stay hidden.
///
/// Input that is not exactly 18 characters long is masked entirely (`*` for each character).
pub fn mask_id_number(id: &str) -> String {
    if id.chars().count() == ID_NUMBER_LENGTH { keep_ends(id, 6, 1) } else { mask_all(id) }
}

/// Masks a person's name character by character, keeping only the last character: one
/// character becomes `*`, `张三` becomes `*三`, `王小明` becomes `**明`, `欧阳娜娜` becomes `***娜`.
pub fn mask_name(name: &str) -> String {
    keep_ends(name, 0, 1)
}

/// Masks a phone number, keeping the first 3 and the last 4 characters:
/// `13812341234` becomes `138****1234`.
///
/// Any input of 8 or more characters keeps its first 3 and last 4 characters; shorter input
/// is masked entirely (`*` for each character).
pub fn mask_phone(phone: &str) -> String {
    if phone.chars().count() >= 8 { keep_ends(phone, 3, 4) } else { mask_all(phone) }
}

/// Masks a street address, keeping its first 6 characters (the district or road) and hiding
/// the rest, and its length, behind `****`: `朝阳区建国路 88 号 501` becomes `朝阳区建国路****`.
/// Six characters or fewer are masked entirely.
pub fn mask_street(street: &str) -> String {
    const KEEP: usize = 6;
    if street.chars().count() <= KEEP {
        return "****".to_owned();
    }
    let head: String = street.chars().take(KEEP).collect();
    format!("{head}****")
}

/// Keeps the first `head` and the last `tail` characters and masks those in between.
/// If `head + tail` covers the whole input, everything is masked instead.
fn keep_ends(s: &str, head: usize, tail: usize) -> String {
    let len = s.chars().count();
    if head + tail >= len {
        return mask_all(s);
    }
    s.chars().enumerate().map(|(i, c)| if i < head || i >= len - tail { c } else { MASK }).collect()
}

/// One `*` for each character.
fn mask_all(s: &str) -> String {
    s.chars().map(|_| MASK).collect()
}

#[cfg(test)]
mod street_tests {
    use super::mask_street;

    #[test]
    fn a_street_keeps_its_first_six_characters_and_hides_the_rest_and_its_length() {
        assert_eq!(mask_street("朝阳区建国路 88 号 3 单元 501"), "朝阳区建国路****");
        assert_eq!(mask_street("朝阳区建国路 1 号"), "朝阳区建国路****");
        assert_eq!(mask_street("建国路1号"), "****");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn id_number_keeps_region_and_check_character_only() {
        assert_eq!(mask_id_number("11010519491231002X"), "110105***********X");
        assert_eq!(mask_id_number("11010519491231002x"), "110105***********x");
        assert_eq!(mask_id_number("440301199001011234"), "440301***********4");
    }

    #[test]
    fn id_number_of_other_lengths_is_fully_masked() {
        assert_eq!(mask_id_number(""), "");
        assert_eq!(mask_id_number("1"), "*");
        assert_eq!(mask_id_number("1101051949123100"), "****************");
        assert_eq!(mask_id_number("110105491231002"), "***************");
        assert_eq!(mask_id_number("11010519491231002X1"), "*******************");
    }

    #[test]
    fn id_number_counts_characters_not_bytes() {
        // 18 characters, several of them multi-byte: no panic, still 18 characters out.
        let odd = "一二三四五六七八九十一二三四五六七八";
        assert_eq!(mask_id_number(odd), "一二三四五六***********八");
        let mixed = "11010519491231002é";
        assert_eq!(mask_id_number(mixed), "110105***********é");
    }

    #[test]
    fn name_of_one_character() {
        assert_eq!(mask_name("张"), "*");
        assert_eq!(mask_name("A"), "*");
    }

    #[test]
    fn name_of_two_characters_keeps_last() {
        assert_eq!(mask_name("张三"), "*三");
        assert_eq!(mask_name("李四"), "*四");
    }

    #[test]
    fn name_of_three_or_more_keeps_only_the_last() {
        assert_eq!(mask_name("王小明"), "**明");
        assert_eq!(mask_name("王小国"), "**国");
        assert_eq!(mask_name("欧阳娜娜"), "***娜");
        assert_eq!(mask_name("司马相如"), "***如");
        assert_eq!(mask_name("阿卜杜拉·买买提"), "*******提");
        assert_eq!(mask_name("Li Lei"), "*****i");
    }

    #[test]
    fn empty_inputs_give_empty_outputs() {
        assert_eq!(mask_id_number(""), "");
        assert_eq!(mask_name(""), "");
        assert_eq!(mask_phone(""), "");
    }

    #[test]
    fn phone_keeps_first_three_and_last_four() {
        assert_eq!(mask_phone("13812341234"), "138****1234");
        assert_eq!(mask_phone("19900001111"), "199****1111");
    }

    #[test]
    fn phone_of_other_lengths() {
        assert_eq!(mask_phone("12345678"), "123*5678");
        assert_eq!(mask_phone("1234567"), "*******");
        assert_eq!(mask_phone("1"), "*");
        assert_eq!(mask_phone("+8613812341234"), "+86*******1234");
        assert_eq!(mask_phone("021-12345678"), "021*****5678");
    }

    #[test]
    fn phone_counts_characters_not_bytes() {
        assert_eq!(mask_phone("１３８１２３４１２３４"), "１３８****１２３４");
        assert_eq!(mask_phone("一二三四五六七"), "*******");
    }

    /// Characters of the output that are not masks, in order.
    fn kept(masked: &str) -> String {
        masked.chars().filter(|&c| c != MASK).collect()
    }

    proptest! {
        #[test]
        fn output_has_as_many_characters_as_input(s in "\\PC{0,40}") {
            let n = s.chars().count();
            prop_assert_eq!(mask_id_number(&s).chars().count(), n);
            prop_assert_eq!(mask_name(&s).chars().count(), n);
            prop_assert_eq!(mask_phone(&s).chars().count(), n);
        }

        #[test]
        fn at_least_one_character_is_masked(s in "[^*]{1,40}") {
            prop_assert!(mask_id_number(&s).contains(MASK));
            prop_assert!(mask_name(&s).contains(MASK));
            prop_assert!(mask_phone(&s).contains(MASK));
        }

        #[test]
        fn names_keep_at_most_one_character_and_hide_all_others(s in "[^*]{0,20}") {
            let n = s.chars().count();
            prop_assert!(kept(&mask_name(&s)).chars().count() <= 1);
            prop_assert_eq!(mask_name(&s).chars().filter(|&c| c == MASK).count(), n.saturating_sub(1).max(usize::from(n == 1)));
        }

        #[test]
        fn id_numbers_hide_the_birth_date_and_the_sequence(
            region in "[1-8][0-9]{5}",
            birth in "(19|20)[0-9]{2}(0[1-9]|1[0-2])[0-2][0-9]",
            sequence in "[0-9]{3}",
            check in "[0-9X]",
        ) {
            let id = format!("{region}{birth}{sequence}{check}");
            prop_assert_eq!(mask_id_number(&id), format!("{region}***********{check}"));
        }

        #[test]
        fn mobile_numbers_hide_the_middle(number in "1[3-9][0-9]{9}") {
            let masked = mask_phone(&number);
            prop_assert_eq!(&masked[..3], &number[..3]);
            prop_assert_eq!(&masked[3..7], "****");
            prop_assert_eq!(&masked[7..], &number[7..]);
        }
    }
}
