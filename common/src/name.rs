//! The one rule for a person's name, in both services and in every field that carries one
//! (a person's legal name, a family member's, a card agent's, a mailing address's recipient).
//!
//! A name is taken as people write it, then made comparable:
//! - normalised to Unicode NFC, so that a decomposed `é` (e + U+0301) and the composed `é`
//!   are the same name, and stored and compared in that form;
//! - trimmed of surrounding white space;
//! - 1 to [`MAX_NAME_CHARS`] characters (Unicode scalar values, counted after NFC);
//! - refused when it holds a character no one writes in a name but that can hide or reorder
//!   what is shown: control characters (Cc, e.g. NUL, line feed), format characters (Cf, e.g.
//!   U+200B ZERO WIDTH SPACE, U+202E RIGHT-TO-LEFT OVERRIDE, U+FEFF), private-use characters
//!   (Co, e.g. U+E000), surrogates (Cs), unassigned code points (Cn), and line or paragraph
//!   separators (Zl, Zp). The categories come from the Unicode character database as the
//!   `unicode-properties` crate ships it, not from hand-written ranges.
//!
//! Everything else stays: minority names with the middle dot (`阿依古丽·买买提`), names in
//! Latin script with inner spaces (`Li Lei`), combining marks. A refusal is INVALID_ARGUMENT
//! with reason INVALID_NAME and a field violation whose description never repeats the input.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::{ApiError, ApiResult, Reason};

/// The longest accepted name, in characters after NFC: the longest limit any name field had
/// (identity-svc and family members), so no name accepted before is refused now for length.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a name was refused. The descriptions are safe to send: they never hold the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Nothing left after trimming.
    Empty,
    /// More than [`MAX_NAME_CHARS`] characters.
    TooLong,
    /// A control, format, private-use, surrogate, unassigned or separator character.
    ForbiddenCharacter,
}

impl NameError {
    /// The field violation's description.
    pub fn description(self) -> &'static str {
        match self {
            NameError::Empty => "must not be empty",
            NameError::TooLong => "must be at most 64 characters",
            NameError::ForbiddenCharacter => {
                "must not contain control, format (zero-width, direction), private-use or unassigned characters"
            }
        }
    }
}

/// Whether `c` may appear in a name.
fn allowed(c: char) -> bool {
    !matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// The name in its one stored and compared form (NFC, trimmed), or why it is refused.
pub fn normalize(raw: &str) -> Result<String, NameError> {
    // Characters are checked before trimming too: `str::trim` would silently drop a leading
    // U+2028 or a trailing control character instead of refusing it.
    if !raw.chars().all(allowed) {
        return Err(NameError::ForbiddenCharacter);
    }
    let name: String = raw.trim().nfc().collect();
    let count = name.chars().count();
    if count == 0 {
        return Err(NameError::Empty);
    }
    if count > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    // NFC of allowed characters is made of allowed characters, but checking the output keeps
    // the rule true whatever a future normalisation table does.
    if !name.chars().all(allowed) {
        return Err(NameError::ForbiddenCharacter);
    }
    Ok(name)
}

/// [`normalize`] for a request field: INVALID_ARGUMENT / INVALID_NAME with a field violation
/// on `field` (the full field path, e.g. `identity.name`).
pub fn require_name(field: &str, raw: &str) -> ApiResult<String> {
    normalize(raw).map_err(|error| ApiError::invalid_field(Reason::InvalidName, field, error.description()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tonic::Code;

    #[test]
    fn names_are_trimmed() {
        assert_eq!(normalize("  张三 ").unwrap(), "张三");
        assert_eq!(normalize("\u{3000}张三\u{3000}").unwrap(), "张三");
    }

    #[test]
    fn names_as_people_write_them_are_kept() {
        for name in ["阿依古丽·买买提", "Li Lei", "欧阳娜娜", "José", "O'Brien", "Zoë Müller-Lüdenscheidt"]
        {
            assert_eq!(normalize(name).unwrap(), name);
        }
    }

    #[test]
    fn a_decomposed_name_becomes_the_composed_one() {
        let decomposed = "Jose\u{301}";
        let composed = "Jos\u{e9}";
        assert_ne!(decomposed, composed);
        assert_eq!(normalize(decomposed).unwrap(), composed);
        assert_eq!(normalize(decomposed).unwrap(), normalize(composed).unwrap());
    }

    #[test]
    fn empty_names_are_refused() {
        assert_eq!(normalize(""), Err(NameError::Empty));
        assert_eq!(normalize("   "), Err(NameError::Empty));
    }

    #[test]
    fn the_length_limit_counts_characters_after_nfc() {
        assert!(normalize(&"名".repeat(MAX_NAME_CHARS)).is_ok());
        assert_eq!(normalize(&"名".repeat(MAX_NAME_CHARS + 1)), Err(NameError::TooLong));
        // 64 composed characters written decomposed (128 scalar values) fit.
        assert_eq!(normalize(&"e\u{301}".repeat(MAX_NAME_CHARS)).unwrap().chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn invisible_and_reordering_characters_are_refused() {
        for bad in [
            "张\u{200B}三",   // zero width space (Cf)
            "张\u{202E}三",   // right-to-left override (Cf)
            "\u{FEFF}张三",   // byte order mark (Cf)
            "张\u{2060}三",   // word joiner (Cf)
            "张\u{E000}三",   // private use (Co)
            "张\u{F0000}三",  // supplementary private use (Co)
            "张\u{0}三",      // NUL (Cc)
            "张三\n",         // line feed (Cc), even where trimming would drop it
            "\t张三",         // tab (Cc)
            "张\u{85}三",     // next line (Cc)
            "张\u{2028}三",   // line separator (Zl)
            "张\u{2029}三",   // paragraph separator (Zp)
            "张\u{378}三",    // unassigned (Cn)
            "张\u{10FFFF}三", // noncharacter, unassigned (Cn)
        ] {
            assert_eq!(normalize(bad), Err(NameError::ForbiddenCharacter), "{:?}", bad.escape_unicode().to_string());
        }
    }

    #[test]
    fn a_refusal_is_invalid_name_on_the_field_and_does_not_repeat_the_name() {
        let error = require_name("member_name", "张\u{200B}三").unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.reason(), Reason::InvalidName);
        let status: tonic::Status = error.into();
        assert!(!status.message().contains('张'));
    }

    proptest! {
        #[test]
        fn an_accepted_name_is_stable_nfc_and_free_of_forbidden_characters(raw in "\\PC{0,80}") {
            if let Ok(name) = normalize(&raw) {
                prop_assert_eq!(normalize(&name), Ok(name.clone()));
                prop_assert!(unicode_normalization::is_nfc(&name));
                prop_assert!(name.chars().all(allowed));
                prop_assert!((1..=MAX_NAME_CHARS).contains(&name.chars().count()));
                prop_assert_eq!(name.trim(), name.as_str());
            }
        }

        #[test]
        fn any_format_or_private_use_character_inside_a_name_is_refused(
            head in "[\\p{Han}]{1,5}",
            bad in "[\\p{Cf}\\p{Co}\\p{Cc}]",
            tail in "[\\p{Han}]{1,5}",
        ) {
            prop_assert_eq!(normalize(&format!("{head}{bad}{tail}")), Err(NameError::ForbiddenCharacter));
        }
    }
}
