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
    ($($variant:ident => $text:literal @ $code:ident,)*) => {
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

            /// The gRPC code this reason is answered with unless the place that fails says
            /// otherwise (README, error table: the same column). Exceptions are written where
            /// they happen, with a named constructor ([`ApiError::permission_denied`], ...).
            pub const fn code(self) -> Code {
                match self {
                    $(Reason::$variant => Code::$code,)*
                }
            }
        }
    };
}

reasons! {
    InvalidArgument => "INVALID_ARGUMENT" @ InvalidArgument,
    InvalidIdNumber => "INVALID_ID_NUMBER" @ InvalidArgument,
    InvalidPhone => "INVALID_PHONE" @ InvalidArgument,
    InvalidEnumValue => "INVALID_ENUM_VALUE" @ InvalidArgument,
    NameMismatch => "NAME_MISMATCH" @ FailedPrecondition,
    PersonNotFound => "PERSON_NOT_FOUND" @ NotFound,
    AccountNotFound => "ACCOUNT_NOT_FOUND" @ NotFound,
    AccountAlreadyOpen => "ACCOUNT_ALREADY_OPEN" @ AlreadyExists,
    RealNameRequired => "REAL_NAME_REQUIRED" @ FailedPrecondition,
    FaceVerificationRequired => "FACE_VERIFICATION_REQUIRED" @ FailedPrecondition,
    FaceSessionExpired => "FACE_SESSION_EXPIRED" @ FailedPrecondition,
    FaceSessionNotFound => "FACE_SESSION_NOT_FOUND" @ NotFound,
    FaceSessionFinished => "FACE_SESSION_FINISHED" @ FailedPrecondition,
    FaceAttemptsExhausted => "FACE_ATTEMPTS_EXHAUSTED" @ FailedPrecondition,
    PartnerKindNotAllowed => "PARTNER_KIND_NOT_ALLOWED" @ PermissionDenied,
    SmsCodeInvalid => "SMS_CODE_INVALID" @ FailedPrecondition,
    SmsCodeExpired => "SMS_CODE_EXPIRED" @ FailedPrecondition,
    SmsRateLimited => "SMS_RATE_LIMITED" @ ResourceExhausted,
    SmsLocked => "SMS_LOCKED" @ FailedPrecondition,
    SmsChallengeNotFound => "SMS_CHALLENGE_NOT_FOUND" @ NotFound,
    RealNameRejected => "REAL_NAME_REJECTED" @ FailedPrecondition,
    PhoneRequired => "PHONE_REQUIRED" @ FailedPrecondition,
    NotInsured => "NOT_INSURED" @ FailedPrecondition,
    VoucherNotActive => "VOUCHER_NOT_ACTIVE" @ FailedPrecondition,
    VoucherNotFound => "VOUCHER_NOT_FOUND" @ NotFound,
    CodeExpired => "CODE_EXPIRED" @ FailedPrecondition,
    CodeAlreadyUsed => "CODE_ALREADY_USED" @ FailedPrecondition,
    CodeInvalid => "CODE_INVALID" @ InvalidArgument,
    InsufficientBalance => "INSUFFICIENT_BALANCE" @ FailedPrecondition,
    AccountClosed => "ACCOUNT_CLOSED" @ FailedPrecondition,
    VisitNotFound => "VISIT_NOT_FOUND" @ NotFound,
    CatalogItemNotFound => "CATALOG_ITEM_NOT_FOUND" @ NotFound,
    NotCrossRegion => "NOT_CROSS_REGION" @ FailedPrecondition,
    CrossRegionFilingExists => "CROSS_REGION_FILING_EXISTS" @ AlreadyExists,
    CrossRegionFilingLimit => "CROSS_REGION_FILING_LIMIT" @ FailedPrecondition,
    CrossRegionFilingCancelled => "CROSS_REGION_FILING_CANCELLED" @ FailedPrecondition,
    CrossRegionFilingNotFound => "CROSS_REGION_FILING_NOT_FOUND" @ NotFound,
    VisitPartnerMismatch => "VISIT_PARTNER_MISMATCH" @ PermissionDenied,
    VisitAlreadySettled => "VISIT_ALREADY_SETTLED" @ FailedPrecondition,
    SettlementNotFound => "SETTLEMENT_NOT_FOUND" @ NotFound,
    SettlementAlreadyReversed => "SETTLEMENT_ALREADY_REVERSED" @ FailedPrecondition,
    CrossRegionNotFiled => "CROSS_REGION_NOT_FILED" @ FailedPrecondition,
    PreSettlementNotFound => "PRE_SETTLEMENT_NOT_FOUND" @ NotFound,
    PreSettlementExpired => "PRE_SETTLEMENT_EXPIRED" @ FailedPrecondition,
    PreSettlementStale => "PRE_SETTLEMENT_STALE" @ FailedPrecondition,
    PreSettlementTermsDiffer => "PRE_SETTLEMENT_TERMS_DIFFER" @ FailedPrecondition,
    FamilyAidNotAuthorised => "FAMILY_AID_NOT_AUTHORISED" @ FailedPrecondition,
    CannotBindSelf => "CANNOT_BIND_SELF" @ FailedPrecondition,
    AlreadyBound => "ALREADY_BOUND" @ AlreadyExists,
    FamilyQuotaExceeded => "FAMILY_QUOTA_EXCEEDED" @ ResourceExhausted,
    MemberMonthlyLimit => "MEMBER_MONTHLY_LIMIT" @ ResourceExhausted,
    RelationshipAgeMismatch => "RELATIONSHIP_AGE_MISMATCH" @ FailedPrecondition,
    BindingNotFound => "BINDING_NOT_FOUND" @ NotFound,
    BindingNotActive => "BINDING_NOT_ACTIVE" @ FailedPrecondition,
    DocumentMissing => "DOCUMENT_MISSING" @ FailedPrecondition,
    DocumentInvalid => "DOCUMENT_INVALID" @ FailedPrecondition,
    DocumentNotFound => "DOCUMENT_NOT_FOUND" @ NotFound,
    DocumentTooLarge => "DOCUMENT_TOO_LARGE" @ InvalidArgument,
    DocumentTypeNotAllowed => "DOCUMENT_TYPE_NOT_ALLOWED" @ InvalidArgument,
    CardStateConflict => "CARD_STATE_CONFLICT" @ FailedPrecondition,
    CardApplicationNotFound => "CARD_APPLICATION_NOT_FOUND" @ NotFound,
    CardNotFound => "CARD_NOT_FOUND" @ NotFound,
    CardFeeInvalid => "CARD_FEE_INVALID" @ FailedPrecondition,
    CardHolderMismatch => "CARD_HOLDER_MISMATCH" @ FailedPrecondition,
    // Issue 17 item 5, the card at the counter: its PIN (insurance-svc `domain::card_pin`).
    CardPinIncorrect => "CARD_PIN_INCORRECT" @ PermissionDenied,
    CardPinLocked => "CARD_PIN_LOCKED" @ FailedPrecondition,
    CardPinTooWeak => "CARD_PIN_TOO_WEAK" @ InvalidArgument,
    CardPinNotSet => "CARD_PIN_NOT_SET" @ FailedPrecondition,
    AgentIsApplicant => "AGENT_IS_APPLICANT" @ FailedPrecondition,
    GuardianRequired => "GUARDIAN_REQUIRED" @ FailedPrecondition,
    GuardianNotAllowed => "GUARDIAN_NOT_ALLOWED" @ FailedPrecondition,
    EmployerMismatch => "EMPLOYER_MISMATCH" @ FailedPrecondition,
    IdempotencyKeyMismatch => "IDEMPOTENCY_KEY_MISMATCH" @ FailedPrecondition,
    IdempotencyKeyInvalid => "IDEMPOTENCY_KEY_INVALID" @ InvalidArgument,
    RequestInFlight => "REQUEST_IN_FLIGHT" @ Aborted,
    Unauthenticated => "UNAUTHENTICATED" @ Unauthenticated,
    PermissionDeniedScope => "PERMISSION_DENIED_SCOPE" @ PermissionDenied,
    PersonTokenRequired => "PERSON_TOKEN_REQUIRED" @ Unauthenticated,
    PersonTokenInvalid => "PERSON_TOKEN_INVALID" @ Unauthenticated,
    PartnerLinkRequired => "PARTNER_LINK_REQUIRED" @ FailedPrecondition,
    PartnerLinkConflict => "PARTNER_LINK_CONFLICT" @ AlreadyExists,
    PartnerRateLimited => "PARTNER_RATE_LIMITED" @ ResourceExhausted,
    MessageTooLarge => "MESSAGE_TOO_LARGE" @ ResourceExhausted,
    DependencyUnavailable => "DEPENDENCY_UNAVAILABLE" @ Unavailable,
    DatabaseUnavailable => "DATABASE_UNAVAILABLE" @ Unavailable,
    Internal => "INTERNAL" @ Internal,
    // Issue 12, SMS and face providers: per-partner SMS quotas and sessions bound to a provider.
    SmsQuotaExceeded => "SMS_QUOTA_EXCEEDED" @ ResourceExhausted,
    FaceProviderRequired => "FACE_PROVIDER_REQUIRED" @ FailedPrecondition,
    FaceProviderUnknown => "FACE_PROVIDER_UNKNOWN" @ InvalidArgument,
    FaceProviderMismatch => "FACE_PROVIDER_MISMATCH" @ PermissionDenied,
    // Issue 12, assurance levels and tokens that die with their link.
    AssuranceLevelTooLow => "ASSURANCE_LEVEL_TOO_LOW" @ PermissionDenied,
    PersonTokenRevoked => "PERSON_TOKEN_REVOKED" @ Unauthenticated,
    PersonSuspended => "PERSON_SUSPENDED" @ FailedPrecondition,
    // Issue 12, names as people write them (medins_common::name).
    InvalidName => "INVALID_NAME" @ InvalidArgument,
    // Issue 12, persons: phone changes and claims.
    PhoneChangeConflict => "PHONE_CHANGE_CONFLICT" @ Aborted,
    PhoneUnchanged => "PHONE_UNCHANGED" @ FailedPrecondition,
    FaceSessionAlreadyUsed => "FACE_SESSION_ALREADY_USED" @ FailedPrecondition,
    // Issue 13, audit: calls a SERVICE relays on a partner's behalf (`x-on-behalf-of`).
    OnBehalfOfNotAllowed => "ON_BEHALF_OF_NOT_ALLOWED" @ PermissionDenied,
    OnBehalfOfInvalid => "ON_BEHALF_OF_INVALID" @ InvalidArgument,
    // Issue 13, access at insurance-svc accounts, vouchers, codes, settlements (helper "access"):
    // employers bound to their employer codes.
    EmployerCodeNotHeld => "EMPLOYER_CODE_NOT_HELD" @ PermissionDenied,
    // Issue 14 items 1, 2, 7, family bindings: relationships proven before power, the notice
    // version accepted, binding at the counter.
    RelationshipNotConfirmed => "RELATIONSHIP_NOT_CONFIRMED" @ FailedPrecondition,
    BindingNotInReview => "BINDING_NOT_IN_REVIEW" @ FailedPrecondition,
    NoticeNotAccepted => "NOTICE_NOT_ACCEPTED" @ InvalidArgument,
    NoticeVersionNotCurrent => "NOTICE_VERSION_NOT_CURRENT" @ FailedPrecondition,
    OwnerNotPresent => "OWNER_NOT_PRESENT" @ PermissionDenied,
    // Issue 13, cards at the counter: a partner's failed card lookups per day are limited.
    CardLookupLimitExceeded => "CARD_LOOKUP_LIMIT_EXCEEDED" @ ResourceExhausted,
    // Issue 14, family aid as policy says and writes that survive concurrency (helper "safety").
    FamilyAidNotEligible => "FAMILY_AID_NOT_ELIGIBLE" @ FailedPrecondition,
    TransactionConflict => "TRANSACTION_CONFLICT" @ Aborted,
    // Issue 14, documents: parsed within limits, tied to what they prove.
    DocumentUnreadable => "DOCUMENT_UNREADABLE" @ InvalidArgument,
    ImageTooLarge => "IMAGE_TOO_LARGE" @ InvalidArgument,
    DocumentNotTied => "DOCUMENT_NOT_TIED" @ FailedPrecondition,
    // Issue 15, TLS: a partner's key pinned to its client certificate (docs/tls.md).
    ClientCertificateMismatch => "CLIENT_CERTIFICATE_MISMATCH" @ Unauthenticated,
    // Issue 17 item 7, reimbursement claims for bills paid out of pocket.
    ClaimNotFound => "CLAIM_NOT_FOUND" @ NotFound,
    ClaimAlreadyReviewed => "CLAIM_ALREADY_REVIEWED" @ FailedPrecondition,
    ClaimSettlementNotReversible => "CLAIM_SETTLEMENT_NOT_REVERSIBLE" @ FailedPrecondition,
    InvoiceAlreadyClaimed => "INVOICE_ALREADY_CLAIMED" @ FailedPrecondition,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What caused an [`ApiError`]: kept whole (its own `source()` chain too) for the one log line
/// written at the boundary ([`ApiError`] into `Status`). Never sent to the caller.
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A cause given as text (`ApiError::internal("...")`).
#[derive(Debug)]
struct TextCause(String);

impl fmt::Display for TextCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TextCause {}

/// A failure of an RPC, built by handlers and domain code, turned into a `Status` in one place,
/// where it is also logged, once (`From<ApiError> for Status`).
#[derive(Debug, Clone)]
pub struct ApiError {
    code: Code,
    reason: Reason,
    message: String,
    field_violations: Vec<(String, String)>,
    retry_after: Option<Duration>,
    // A list, not a map (a few entries at most): keeps `ApiError`, returned everywhere, small.
    metadata: Vec<(String, String)>,
    cause: Option<Cause>,
}

impl From<Reason> for ApiError {
    /// The reason's own code ([`Reason::code`]) and its name as the message.
    fn from(reason: Reason) -> Self {
        ApiError::of(reason, reason.as_str().to_ascii_lowercase().replace('_', " "))
    }
}

impl ApiError {
    /// A new error with an explicit code. Prefer [`ApiError::of`] (the reason's own code) or a
    /// named constructor; this is for codes only known at run time (`from_remote`).
    /// `message` must not contain personal data: write it, never echo input.
    pub fn new(code: Code, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            field_violations: Vec::new(),
            retry_after: None,
            metadata: Vec::new(),
            cause: None,
        }
    }

    /// A new error answered with the reason's own code ([`Reason::code`], the README's error
    /// table). `message` must not contain personal data.
    pub fn of(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(reason.code(), reason, message)
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

    /// PERMISSION_DENIED: the caller is known but may not do this.
    pub fn permission_denied(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    /// UNAUTHENTICATED: the caller (or the person token it sent) is not proven.
    pub fn unauthenticated(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, reason, message)
    }

    /// ABORTED: a concurrent request won; the caller may retry.
    pub fn aborted(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(Code::Aborted, reason, message)
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

    /// INTERNAL: a fault of ours. The caller sees a generic message; `cause` (which must not
    /// hold personal data either) is kept for the boundary's log line. Logs nothing itself.
    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::new(Code::Internal, Reason::Internal, "internal error").with_cause(TextCause(cause.to_string()))
    }

    /// [`ApiError::internal`] keeping an error whole, with its own `source()` chain.
    pub fn internal_error(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(Code::Internal, Reason::Internal, "internal error").with_cause(cause)
    }

    /// Keeps `cause` as this error's `source()` (logged at the boundary, never sent).
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(std::sync::Arc::new(cause));
        self
    }

    /// The `BadRequest` field violations' fields, in order.
    pub fn violated_fields(&self) -> Vec<&str> {
        self.field_violations.iter().map(|(field, _)| field.as_str()).collect()
    }

    /// The ErrorInfo metadata value of `key`, if set.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Adds a `BadRequest` field violation.
    pub fn with_field_violation(mut self, field: &str, description: impl Into<String>) -> Self {
        self.field_violations.push((field.to_owned(), description.into()));
        self
    }

    /// Adds an `ErrorInfo.metadata` entry (never personal data).
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_owned(), value.into()));
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

    /// The `BadRequest` field violations: (field, description).
    pub fn field_violations(&self) -> &[(String, String)] {
        &self.field_violations
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Logs this failure, once, at the level its code calls for: our faults and unreachable
    /// dependencies (INTERNAL, UNKNOWN, DATA_LOSS, UNAVAILABLE) at error, a request refused as
    /// the contract says at debug. Called where the error becomes a `Status`.
    pub fn log(&self) {
        match self.code {
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
                tracing::error!(code = ?self.code, reason = %self.reason, error = %self, "request failed");
            }
            _ => tracing::debug!(code = ?self.code, reason = %self.reason, error = %self, "request refused"),
        }
    }
}

impl fmt::Display for ApiError {
    /// Code, reason, message and, when there is one, the whole cause chain (so that every log
    /// line that prints an `ApiError` keeps why it happened).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)?;
        let mut cause = self.cause.as_deref().map(|c| c as &(dyn std::error::Error + 'static));
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        error.log();
        let mut details = ErrorDetails::new();
        details.set_error_info(
            error.reason.as_str(),
            ERROR_DOMAIN,
            error.metadata.into_iter().collect::<HashMap<_, _>>(),
        );
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
        use crate::db::DbError;
        match error {
            DbError::Unavailable(_) => {
                ApiError::unavailable(Reason::DatabaseUnavailable, "database unavailable, retry later")
                    .with_cause(error)
            }
            // Expected under contention and retried first (db::retry_conflicts): ABORTED tells
            // the caller it outlasted the retries.
            DbError::Conflict(_) => ApiError::of(
                Reason::TransactionConflict,
                "the request collided with concurrent ones, retry with the same idempotency key",
            )
            .with_cause(error),
            DbError::Query(_) | DbError::Config(_) => ApiError::internal_error(error),
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
    fn each_reason_owns_the_code_the_readme_table_gives_it() {
        let readme = include_str!("../../README.md");
        let mut listed = 0;
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, reason, code, ..] = cells[..] else { continue };
            let Some(reason) = Reason::ALL.iter().find(|r| r.as_str() == reason) else { continue };
            // `FAILED_PRECONDITION` in the table, `FailedPrecondition` in tonic.
            let camel: String =
                code.split('_').map(|word| word[..1].to_owned() + &word[1..].to_ascii_lowercase()).collect();
            assert_eq!(format!("{:?}", reason.code()), camel, "{reason}");
            assert_eq!(ApiError::from(*reason).code(), reason.code(), "{reason}");
            listed += 1;
        }
        assert_eq!(listed, Reason::ALL.len(), "every reason is in the README's table");
    }

    #[test]
    fn a_database_failure_keeps_its_cause_chain_and_tells_the_caller_nothing_of_it() {
        let diesel_error = diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::CheckViolation,
            Box::new(String::from("new row violates check constraint \"balance_not_negative\"")),
        );
        let error = ApiError::from(diesel_error);
        assert_eq!(
            (error.code(), error.reason(), error.message()),
            (Code::Internal, Reason::Internal, "internal error")
        );
        // ApiError -> DbError -> diesel's error, each reachable through source().
        let db = std::error::Error::source(&error).expect("the DbError");
        assert_eq!(db.to_string(), "database query failed");
        let diesel = db.source().expect("diesel's error");
        assert!(diesel.to_string().contains("balance_not_negative"));
        // Every log line that prints the error keeps the whole chain.
        assert!(
            error.to_string().ends_with(
                "internal error: database query failed: new row violates check constraint \"balance_not_negative\""
            ),
            "{error}"
        );
        let status: Status = error.into();
        assert_eq!(status.message(), "internal error");
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
