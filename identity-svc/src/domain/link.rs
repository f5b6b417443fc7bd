//! Partner links and the rules of links and of paging through lists: pure, no I/O.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::NaiveDateTime;
use medins_common::{ApiError, ApiResult, Reason};
use uuid::Uuid;

/// Longest partner user ref, in bytes.
pub const MAX_PARTNER_USER_REF_LEN: usize = 128;

/// Validates a partner's user ref: trimmed, 1-128 printable ASCII characters without spaces
/// (partners' account ids are opaque ASCII; anything else is most likely a mistake, and it keeps
/// the value out of any encoding trouble).
pub fn parse_partner_user_ref(field: &str, raw: &str) -> ApiResult<String> {
    let user_ref = raw.trim();
    if user_ref.is_empty() || user_ref.len() > MAX_PARTNER_USER_REF_LEN {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must be 1-128 characters"));
    }
    if !user_ref.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must be printable ASCII without spaces"));
    }
    Ok(user_ref.to_owned())
}

/// The value the blind index of a user ref is computed over: the partner and the ref, so the
/// same ref at two partners gives unrelated index values.
pub fn user_ref_index_input(partner_id: &str, user_ref: &str) -> String {
    format!("{partner_id}\u{0}{user_ref}")
}

/// What happens to a link request, given the caller's live link with the person (its user ref)
/// and whether the user ref is live-linked to another person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDecision {
    /// No link yet: make one.
    Create,
    /// The same link is live: return it (idempotent).
    Existing,
    /// The person is linked to another ref of this partner, or the ref to another person.
    Conflict,
}

/// A live link, decrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct PartnerLink {
    /// Link id (UUIDv7).
    pub id: Uuid,
    /// The partner.
    pub partner_id: String,
    /// The person.
    pub person_id: Uuid,
    /// The partner's own user id. Never logged.
    pub partner_user_ref: String,
    /// When it was made.
    pub linked_at: NaiveDateTime,
}

impl std::fmt::Debug for PartnerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerLink")
            .field("id", &self.id)
            .field("partner_id", &self.partner_id)
            .field("person_id", &self.person_id)
            .finish_non_exhaustive()
    }
}

/// Decides a link request (one live link per (partner, person) and per (partner, user ref)).
pub fn decide_link(live_ref_for_person: Option<&str>, requested_ref: &str, ref_taken_by_other: bool) -> LinkDecision {
    match live_ref_for_person {
        Some(existing) if existing == requested_ref => LinkDecision::Existing,
        Some(_) => LinkDecision::Conflict,
        None if ref_taken_by_other => LinkDecision::Conflict,
        None => LinkDecision::Create,
    }
}

/// ALREADY_EXISTS / PARTNER_LINK_CONFLICT.
pub fn link_conflict() -> ApiError {
    ApiError::of(
        Reason::PartnerLinkConflict,
        "the caller already links this person to another user ref, or this user ref to another person",
    )
}

/// An opaque page token: base64url of `kind:cursor`. The kind keeps a token of one list from
/// being accepted by another.
pub fn encode_page_token(kind: &str, cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{cursor}"))
}

/// The cursor inside a page token of `kind` (`None` for an empty token, the first page).
pub fn decode_page_token(field: &str, kind: &str, raw: &str) -> ApiResult<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid_field(Reason::InvalidArgument, field, "is not a token this list returned");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let cursor = text.strip_prefix(kind).and_then(|rest| rest.strip_prefix(':')).ok_or_else(invalid)?;
    if cursor.is_empty() {
        return Err(invalid());
    }
    Ok(Some(cursor.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_refs_are_trimmed_printable_ascii_up_to_128() {
        assert_eq!(parse_partner_user_ref("r", "  wx_o6_abc-123 ").unwrap(), "wx_o6_abc-123");
        assert!(parse_partner_user_ref("r", &"a".repeat(128)).is_ok());
        for bad in ["", "   ", "a b", "用户", "a\u{7}", &"a".repeat(129)] {
            let error = parse_partner_user_ref("partner_user_ref", bad).unwrap_err();
            assert_eq!(error.reason(), Reason::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn one_live_link_per_partner_and_person_and_per_partner_and_ref() {
        assert_eq!(decide_link(None, "u1", false), LinkDecision::Create);
        assert_eq!(decide_link(Some("u1"), "u1", false), LinkDecision::Existing);
        assert_eq!(decide_link(Some("u1"), "u2", false), LinkDecision::Conflict);
        assert_eq!(decide_link(None, "u1", true), LinkDecision::Conflict);
    }

    #[test]
    fn the_index_input_separates_partners() {
        assert_ne!(user_ref_index_input("a", "bc"), user_ref_index_input("ab", "c"));
    }

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_their_list() {
        let token = encode_page_token("audit", "42");
        assert_eq!(decode_page_token("page_token", "audit", &token).unwrap().as_deref(), Some("42"));
        assert_eq!(decode_page_token("page_token", "audit", "").unwrap(), None);
        assert!(decode_page_token("page_token", "links", &token).is_err());
        assert!(decode_page_token("page_token", "audit", "!!").is_err());
        assert!(decode_page_token("page_token", "audit", &encode_page_token("audit", "")).is_err());
    }
}
