//! Partner ids in requests (a face provider named at StartFaceVerification, the partner a
//! medins service acts for): pure checks of their shape, and whose word counts.

use medins_common::{ApiError, ApiResult, Reason};

use super::access::Standing;

/// Longest partner id a request may carry (ids in the partners file are far shorter).
pub const MAX_PARTNER_ID_LEN: usize = 64;

/// An optional partner id field: empty is `None`; otherwise 1-64 ASCII letters, digits, `-` or
/// `_` (the partners file's alphabet), else INVALID_ARGUMENT. Whether such a partner exists is
/// the caller's next question.
pub fn parse_optional_partner_id(field: &str, raw: &str) -> ApiResult<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > MAX_PARTNER_ID_LEN || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            field,
            "must be a partner id: 1-64 letters, digits, '-' or '_'",
        ));
    }
    Ok(Some(raw.to_owned()))
}

/// The partner a call acts for: the caller itself, or, for a caller standing as a medins service
/// (the access table's [`Standing::Service`]: insurance-svc relaying its own caller's request),
/// the partner it names. Anyone else naming a partner is refused PERMISSION_DENIED /
/// PARTNER_KIND_NOT_ALLOWED: a partner never acts in another's name.
pub fn acting_partner(
    field: &str,
    caller_id: &str,
    standing: Standing,
    on_behalf_of: Option<String>,
) -> ApiResult<String> {
    match on_behalf_of {
        None => Ok(caller_id.to_owned()),
        Some(partner) if standing == Standing::Service => Ok(partner),
        Some(_) => Err(ApiError::of(
            Reason::PartnerKindNotAllowed,
            "only medins services (kind SERVICE) act on behalf of another partner",
        )
        .with_field_violation(field, "must be empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partner_ids_have_the_files_alphabet() {
        assert_eq!(parse_optional_partner_id("f", "").unwrap(), None);
        assert_eq!(parse_optional_partner_id("f", "face-provider_2").unwrap().as_deref(), Some("face-provider_2"));
        for bad in ["a b", "x\u{0}", "ä", &"a".repeat(65), "a/b"] {
            let error = parse_optional_partner_id("f", bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn only_a_service_acts_on_behalf_of_another_partner() {
        assert_eq!(acting_partner("f", "app", Standing::Person, None).unwrap(), "app");
        assert_eq!(acting_partner("f", "svc", Standing::Service, Some("app".into())).unwrap(), "app");
        assert_eq!(acting_partner("f", "svc", Standing::Service, None).unwrap(), "svc");
        for standing in [Standing::Person, Standing::Operator, Standing::FrontDoor, Standing::PhoneChangeStarter] {
            let error = acting_partner("f", "x", standing, Some("app".into())).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::PermissionDenied, Reason::PartnerKindNotAllowed));
        }
    }
}
