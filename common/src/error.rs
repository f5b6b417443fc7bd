//! The one error type of both services and its single mapping to `tonic::Status`
//! (docs/architecture.md#errors): the most specific gRPC code, a `google.rpc.ErrorInfo` whose
//! reason partners switch on, `BadRequest` field violations for field problems and `RetryInfo` for
//! limits.
//!
//! Messages are written by us, never copied from input: they hold no personal data.

use std::{collections::HashMap, fmt, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error medins returns.
pub const ERROR_DOMAIN: &str = "medins.io";

macro_rules! reasons {
    ($($variant:ident => $text:literal,)*) => {
        /// Stable `ErrorInfo.reason` values. Partners switch on these strings; never rename one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(
                #[doc = $text]
                $variant,
            )*
        }

        impl Reason {
            /// Every reason, in declaration order (the README lists them all).
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The UPPER_SNAKE string sent as `ErrorInfo.reason`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $text,)*
                }
            }
        }
    };
}

reasons! {
    InvalidArgument => "INVALID_ARGUMENT",
    InvalidIdNumber => "INVALID_ID_NUMBER",
    InvalidPhone => "INVALID_PHONE",
    InvalidEnumValue => "INVALID_ENUM_VALUE",
    NameMismatch => "NAME_MISMATCH",
    PersonNotFound => "PERSON_NOT_FOUND",
    AccountNotFound => "ACCOUNT_NOT_FOUND",
    AccountAlreadyOpen => "ACCOUNT_ALREADY_OPEN",
    RealNameRequired => "REAL_NAME_REQUIRED",
    FaceVerificationRequired => "FACE_VERIFICATION_REQUIRED",
    FaceSessionExpired => "FACE_SESSION_EXPIRED",
    FaceSessionNotFound => "FACE_SESSION_NOT_FOUND",
    FaceSessionFinished => "FACE_SESSION_FINISHED",
    FaceAttemptsExhausted => "FACE_ATTEMPTS_EXHAUSTED",
    PartnerKindNotAllowed => "PARTNER_KIND_NOT_ALLOWED",
    SmsCodeInvalid => "SMS_CODE_INVALID",
    SmsCodeExpired => "SMS_CODE_EXPIRED",
    SmsRateLimited => "SMS_RATE_LIMITED",
    SmsLocked => "SMS_LOCKED",
    SmsChallengeNotFound => "SMS_CHALLENGE_NOT_FOUND",
    RealNameRejected => "REAL_NAME_REJECTED",
    PhoneRequired => "PHONE_REQUIRED",
    NotInsured => "NOT_INSURED",
    VoucherNotActive => "VOUCHER_NOT_ACTIVE",
    VoucherNotFound => "VOUCHER_NOT_FOUND",
    CodeExpired => "CODE_EXPIRED",
    CodeAlreadyUsed => "CODE_ALREADY_USED",
    CodeInvalid => "CODE_INVALID",
    InsufficientBalance => "INSUFFICIENT_BALANCE",
    AccountClosed => "ACCOUNT_CLOSED",
    VisitNotFound => "VISIT_NOT_FOUND",
    VisitPartnerMismatch => "VISIT_PARTNER_MISMATCH",
    VisitAlreadySettled => "VISIT_ALREADY_SETTLED",
    SettlementNotFound => "SETTLEMENT_NOT_FOUND",
    SettlementAlreadyReversed => "SETTLEMENT_ALREADY_REVERSED",
    FamilyAidNotAuthorised => "FAMILY_AID_NOT_AUTHORISED",
    CannotBindSelf => "CANNOT_BIND_SELF",
    AlreadyBound => "ALREADY_BOUND",
    FamilyQuotaExceeded => "FAMILY_QUOTA_EXCEEDED",
    MemberMonthlyLimit => "MEMBER_MONTHLY_LIMIT",
    RelationshipAgeMismatch => "RELATIONSHIP_AGE_MISMATCH",
    BindingNotFound => "BINDING_NOT_FOUND",
    BindingNotActive => "BINDING_NOT_ACTIVE",
    DocumentMissing => "DOCUMENT_MISSING",
    DocumentInvalid => "DOCUMENT_INVALID",
    DocumentNotFound => "DOCUMENT_NOT_FOUND",
    DocumentTooLarge => "DOCUMENT_TOO_LARGE",
    DocumentTypeNotAllowed => "DOCUMENT_TYPE_NOT_ALLOWED",
    CardStateConflict => "CARD_STATE_CONFLICT",
    CardApplicationNotFound => "CARD_APPLICATION_NOT_FOUND",
    CardNotFound => "CARD_NOT_FOUND",
    CardFeeInvalid => "CARD_FEE_INVALID",
    CardHolderMismatch => "CARD_HOLDER_MISMATCH",
    AgentIsApplicant => "AGENT_IS_APPLICANT",
    GuardianRequired => "GUARDIAN_REQUIRED",
    GuardianNotAllowed => "GUARDIAN_NOT_ALLOWED",
    EmployerMismatch => "EMPLOYER_MISMATCH",
    IdempotencyKeyMismatch => "IDEMPOTENCY_KEY_MISMATCH",
    IdempotencyKeyInvalid => "IDEMPOTENCY_KEY_INVALID",
    RequestInFlight => "REQUEST_IN_FLIGHT",
    Unauthenticated => "UNAUTHENTICATED",
    PermissionDeniedScope => "PERMISSION_DENIED_SCOPE",
    PersonTokenRequired => "PERSON_TOKEN_REQUIRED",
    PersonTokenInvalid => "PERSON_TOKEN_INVALID",
    PartnerLinkRequired => "PARTNER_LINK_REQUIRED",
    PartnerLinkConflict => "PARTNER_LINK_CONFLICT",
    PartnerRateLimited => "PARTNER_RATE_LIMITED",
    MessageTooLarge => "MESSAGE_TOO_LARGE",
    DependencyUnavailable => "DEPENDENCY_UNAVAILABLE",
    DatabaseUnavailable => "DATABASE_UNAVAILABLE",
    Internal => "INTERNAL",
    // Issue 12, SMS and face providers: per-partner SMS quotas and sessions bound to a provider.
    SmsQuotaExceeded => "SMS_QUOTA_EXCEEDED",
    FaceProviderRequired => "FACE_PROVIDER_REQUIRED",
    FaceProviderUnknown => "FACE_PROVIDER_UNKNOWN",
    FaceProviderMismatch => "FACE_PROVIDER_MISMATCH",
    // Issue 12, assurance levels and tokens that die with their link.
    AssuranceLevelTooLow => "ASSURANCE_LEVEL_TOO_LOW",
    PersonTokenRevoked => "PERSON_TOKEN_REVOKED",
    PersonSuspended => "PERSON_SUSPENDED",
    // Issue 12, names as people write them (medins_common::name).
    InvalidName => "INVALID_NAME",
    // Issue 12, persons: phone changes and claims.
    PhoneChangeConflict => "PHONE_CHANGE_CONFLICT",
    PhoneUnchanged => "PHONE_UNCHANGED",
    FaceSessionAlreadyUsed => "FACE_SESSION_ALREADY_USED",
    // Issue 13, audit: calls a SERVICE relays on a partner's behalf (`x-on-behalf-of`).
    OnBehalfOfNotAllowed => "ON_BEHALF_OF_NOT_ALLOWED",
    OnBehalfOfInvalid => "ON_BEHALF_OF_INVALID",
    // Issue 13, access at insurance-svc accounts, vouchers, codes, settlements (helper "access"):
    // employers bound to their employer codes.
    EmployerCodeNotHeld => "EMPLOYER_CODE_NOT_HELD",
    // Issue 14 items 1, 2, 7, family bindings: relationships proven before power, the notice
    // version accepted, binding at the counter.
    RelationshipNotConfirmed => "RELATIONSHIP_NOT_CONFIRMED",
    BindingNotInReview => "BINDING_NOT_IN_REVIEW",
    NoticeNotAccepted => "NOTICE_NOT_ACCEPTED",
    NoticeVersionNotCurrent => "NOTICE_VERSION_NOT_CURRENT",
    OwnerNotPresent => "OWNER_NOT_PRESENT",
    // Issue 13, cards at the counter: a partner's failed card lookups per day are limited.
    CardLookupLimitExceeded => "CARD_LOOKUP_LIMIT_EXCEEDED",
    // Issue 14, family aid as policy says and writes that survive concurrency (helper "safety").
    FamilyAidNotEligible => "FAMILY_AID_NOT_ELIGIBLE",
    TransactionConflict => "TRANSACTION_CONFLICT",
    // Issue 14, documents: parsed within limits, tied to what they prove.
    DocumentUnreadable => "DOCUMENT_UNREADABLE",
    ImageTooLarge => "IMAGE_TOO_LARGE",
    DocumentNotTied => "DOCUMENT_NOT_TIED",
    // Issue 15, TLS: a partner's key pinned to its client certificate (docs/tls.md).
    ClientCertificateMismatch => "CLIENT_CERTIFICATE_MISMATCH",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of an RPC, built by handlers and domain code, turned into a `Status` in one place.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: Code,
    reason: Reason,
    message: String,
    field_violations: Vec<(String, String)>,
    retry_after: Option<Duration>,
    metadata: HashMap<String, String>,
}

impl ApiError {
    /// A new error. `message` must not contain personal data: write it, never echo input.
    pub fn new(code: Code, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            field_violations: Vec::new(),
            retry_after: None,
            metadata: HashMap::new(),
        }
    }

    /// INVALID_ARGUMENT: bad input, whatever the state.
    pub fn invalid_argument(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }

    /// INVALID_ARGUMENT with one `BadRequest` field violation.
    pub fn invalid_field(reason: Reason, field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        Self::invalid_argument(reason, format!("invalid {field}: {description}"))
            .with_field_violation(field, description)
    }

    /// FAILED_PRECONDITION: the request is fine but the state does not allow it.
    pub fn failed_precondition(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    /// NOT_FOUND.
    pub fn not_found(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, reason, message)
    }

    /// ALREADY_EXISTS.
    pub fn already_exists(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }

    /// RESOURCE_EXHAUSTED with a `RetryInfo` delay.
    pub fn resource_exhausted(reason: Reason, message: impl Into<String>, retry_after: Duration) -> Self {
        let mut error = Self::new(Code::ResourceExhausted, reason, message);
        error.retry_after = Some(retry_after);
        error
    }

    /// UNAVAILABLE: a dependency is down; the caller may retry.
    pub fn unavailable(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason, message)
    }

    /// INTERNAL: a fault of ours. The cause is logged (it must not hold personal data either);
    /// the caller sees a generic message.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::Internal, Reason::Internal, "internal error")
    }

    /// Adds a `BadRequest` field violation.
    pub fn with_field_violation(mut self, field: &str, description: impl Into<String>) -> Self {
        self.field_violations.push((field.to_owned(), description.into()));
        self
    }

    /// Adds an `ErrorInfo.metadata` entry (never personal data).
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a `RetryInfo` delay.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The stable reason.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let mut details = ErrorDetails::new();
        details.set_error_info(error.reason.as_str(), ERROR_DOMAIN, error.metadata);
        for (field, description) in error.field_violations {
            details.add_bad_request_violation(field, description);
        }
        if let Some(delay) = error.retry_after {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(error.code, error.message, details)
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        crate::db::DbError::from(error).into()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(error: crate::db::DbError) -> Self {
        match error {
            crate::db::DbError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::unavailable(Reason::DatabaseUnavailable, "database unavailable, retry later")
            }
            crate::db::DbError::Conflict(cause) => {
                // Expected under contention and retried first (db::retry_conflicts): not an
                // error of ours unless it outlasts the retries, which ABORTED tells the caller.
                tracing::debug!(error = %cause, "database conflict");
                ApiError::new(
                    Code::Aborted,
                    Reason::TransactionConflict,
                    "the request collided with concurrent ones, retry with the same idempotency key",
                )
            }
            error @ (crate::db::DbError::Query(_) | crate::db::DbError::Config(_)) => ApiError::internal(error),
        }
    }
}

impl crate::db::TransientConflict for ApiError {
    fn is_transient_conflict(&self) -> bool {
        self.reason == Reason::TransactionConflict
    }
}

impl ApiError {
    /// An error answered by another medins service, passed on to our caller: the same code and
    /// reason, field violations renamed into our request (`field_prefix` + their field).
    /// Unknown reasons and codes that are our fault at their end become UNAVAILABLE or INTERNAL.
    pub fn from_remote(status: &Status, field_prefix: &str) -> Self {
        let reason = status_reason(status).and_then(|text| Reason::ALL.iter().copied().find(|r| r.as_str() == text));
        match (status.code(), reason) {
            (Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled, _) => {
                ApiError::unavailable(Reason::DependencyUnavailable, "a medins dependency is unavailable, retry later")
            }
            (Code::Internal | Code::Unknown | Code::Unauthenticated | Code::PermissionDenied, _) | (_, None) => {
                ApiError::internal(format_args!("dependency answered {:?}", status.code()))
            }
            (code, Some(reason)) => {
                let mut error = ApiError::new(code, reason, status.message());
                if let Some(bad_request) = status.get_details_bad_request() {
                    for violation in bad_request.field_violations {
                        error = error
                            .with_field_violation(&format!("{field_prefix}{}", violation.field), violation.description);
                    }
                }
                error
            }
        }
    }
}

/// Result of handler and domain code.
pub type ApiResult<T> = Result<T, ApiError>;

/// The reason carried by a `Status`, if it came from medins (or any server using ErrorInfo).
pub fn status_reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// Rejects the zero (`_UNSPECIFIED`) value and numbers the enum does not know, with
/// INVALID_ARGUMENT / INVALID_ENUM_VALUE naming the field.
pub fn require_enum<E>(field: &str, raw: i32) -> ApiResult<E>
where
    E: TryFrom<i32>,
{
    if raw == 0 {
        return Err(ApiError::invalid_field(
            Reason::InvalidEnumValue,
            field,
            "must be set (UNSPECIFIED is not allowed)",
        ));
    }
    E::try_from(raw)
        .map_err(|_| ApiError::invalid_field(Reason::InvalidEnumValue, field, format!("unknown value {raw}")))
}

/// Parses a UUID field, with INVALID_ARGUMENT naming the field.
pub fn require_uuid(field: &str, raw: &str) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::invalid_field(Reason::InvalidArgument, field, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_error_info_field_violations_and_retry_info() {
        let status: Status = ApiError::invalid_field(Reason::InvalidIdNumber, "id_number", "wrong check character")
            .with_retry_after(Duration::from_secs(3))
            .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ID_NUMBER");
        assert_eq!(info.domain, ERROR_DOMAIN);
        let bad_request = status.get_details_bad_request().expect("bad request");
        assert_eq!(bad_request.field_violations[0].field, "id_number");
        assert_eq!(status.get_details_retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(3)));
    }

    #[test]
    fn unspecified_and_unknown_enum_values_are_invalid() {
        let zero = require_enum::<medins_proto::insurance::v1::Scheme>("scheme", 0).unwrap_err();
        assert_eq!(zero.reason(), Reason::InvalidEnumValue);
        let unknown = require_enum::<medins_proto::insurance::v1::Scheme>("scheme", 99).unwrap_err();
        assert_eq!(unknown.code(), Code::InvalidArgument);
        assert!(require_enum::<medins_proto::insurance::v1::Scheme>("scheme", 1).is_ok());
    }

    #[test]
    fn every_reason_is_upper_snake_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(text.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{text}");
            assert!(seen.insert(text), "duplicate {text}");
        }
    }
}
