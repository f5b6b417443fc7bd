//! Rules of SMS verification codes (docs/architecture.md#identity-svc): pure, no I/O.
//!
//! A code is 6 digits from a CSPRNG, valid for 5 minutes. A phone gets at most one code per
//! 60 seconds and [`DAILY_LIMIT`] per calendar day in China Standard Time. A challenge allows
//! [`MAX_WRONG_ATTEMPTS`] - 1 wrong codes; the next wrong one locks it. A verified challenge
//! can be used up once, for its own phone and purpose, within [`VERIFIED_VALIDITY_MINUTES`].
//!
//! Abuse: each partner has a daily SMS quota (partners file), counted per China-time day in
//! the database; codes for a person go only to that person's phone on record
//! ([`SmsPurpose::goes_to_phone_on_record`]), so nobody can pump codes to numbers of their
//! choosing; and a challenge answers only the partner that asked for it (any other partner is
//! told it does not exist).

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use medins_common::{ApiError, ApiResult, Reason};
use medins_proto::identity::v1 as pb;
use rand::{CryptoRng, Rng};

/// Digits of a code.
pub const CODE_DIGITS: usize = 6;
/// How long a code is accepted after it was sent.
pub const CODE_TTL_MINUTES: i64 = 5;
/// Least time between two codes to one phone.
pub const RESEND_INTERVAL_SECONDS: i64 = 60;
/// Most codes to one phone per calendar day (China Standard Time).
pub const DAILY_LIMIT: u32 = 10;
/// Wrong codes that lock a challenge (the third wrong try locks it).
pub const MAX_WRONG_ATTEMPTS: u32 = 3;
/// How long a verified challenge can still be used up by the call it was sent for.
pub const VERIFIED_VALIDITY_MINUTES: i64 = 10;

medins_common::text_enum! {
    /// What a code is for. A verified challenge serves only its own purpose.
    pub enum SmsPurpose {
        /// Completing real-name verification.
        RealName => "REAL_NAME",
        /// Linking a partner platform's account.
        LinkAccount => "LINK_ACCOUNT",
        /// Applying for a social security card.
        CardApplication => "CARD_APPLICATION",
        /// Proving a new phone before it replaces (or becomes) the phone on record. The code goes
        /// to the new phone, not the one on record: that is what it proves.
        PhoneChange => "PHONE_CHANGE",
    }
}

impl SmsPurpose {
    /// What the SMS text says the code is for.
    pub fn description_zh(self) -> &'static str {
        match self {
            SmsPurpose::RealName => "医保实名认证",
            SmsPurpose::LinkAccount => "绑定医保账户",
            SmsPurpose::CardApplication => "申领社会保障卡",
            SmsPurpose::PhoneChange => "更换医保预留手机号",
        }
    }

    /// Whether codes of this purpose go only to the phone on record of the person the request
    /// names (`person_id`), never to a phone the caller gives. Purposes that prove a phone the
    /// person does not have on record yet (registration, a phone change) are the exceptions.
    pub fn goes_to_phone_on_record(self) -> bool {
        match self {
            SmsPurpose::RealName | SmsPurpose::LinkAccount | SmsPurpose::CardApplication => true,
            SmsPurpose::PhoneChange => false,
        }
    }

    /// The purpose of a request (`None` for UNSPECIFIED, which callers reject first).
    pub fn from_proto(purpose: pb::SmsPurpose) -> Option<SmsPurpose> {
        match purpose {
            pb::SmsPurpose::Unspecified => None,
            pb::SmsPurpose::RealName => Some(SmsPurpose::RealName),
            pb::SmsPurpose::LinkAccount => Some(SmsPurpose::LinkAccount),
            pb::SmsPurpose::CardApplication => Some(SmsPurpose::CardApplication),
            pb::SmsPurpose::PhoneChange => Some(SmsPurpose::PhoneChange),
        }
    }
}

medins_common::text_enum! {
    /// Where a challenge is in its life.
    pub enum ChallengeState {
        /// Sent, waiting for the code.
        Pending => "PENDING",
        /// The right code was given; waiting to be used up.
        Verified => "VERIFIED",
        /// Too many wrong codes.
        Locked => "LOCKED",
        /// Used up by the call it was sent for.
        Consumed => "CONSUMED",
    }
}

/// A new code: [`CODE_DIGITS`] uniformly random digits (no modulo bias) from `rng`, which must
/// be a CSPRNG (`rand::rngs::OsRng` in the service).
pub fn generate_code<R: Rng + CryptoRng>(rng: &mut R) -> String {
    format!("{:06}", rng.gen_range(0..1_000_000u32))
}

/// Whether `code` has the shape of a code (exactly 6 ASCII digits). Anything else is a bad
/// request, not a wrong try.
pub fn is_well_formed_code(code: &str) -> bool {
    code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// Start of the calendar day `today` (China Standard Time, UTC+8) as a stored UTC time.
pub fn day_start(today: NaiveDate) -> NaiveDateTime {
    today.and_time(NaiveTime::MIN) - Duration::hours(8)
}

/// The China Standard Time calendar day of a stored UTC time.
pub fn china_day(at: NaiveDateTime) -> NaiveDate {
    (at + Duration::hours(8)).date()
}

/// Where a SendSmsCode request's code goes.
#[derive(Clone, PartialEq, Eq)]
pub enum Recipient {
    /// The phone on record of this person.
    PhoneOnRecord(uuid::Uuid),
    /// The phone the request gives, validated (purposes that prove a new phone).
    GivenPhone(super::phone::Phone),
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::PhoneOnRecord(person_id) => f.debug_tuple("PhoneOnRecord").field(person_id).finish(),
            // Never the phone itself.
            Recipient::GivenPhone(_) => f.write_str("GivenPhone(..)"),
        }
    }
}

/// Where the code of a request for `purpose` goes, from what the request holds: `phone` (raw,
/// possibly empty) and `person_id` (parsed, if given). For purposes that go to the phone on
/// record, `phone` must be empty (INVALID_ARGUMENT otherwise, whatever it holds: no caller
/// learns whether a phone is on record by guessing one) and `person_id` set; for the others
/// `phone` must be a valid mobile number (INVALID_ARGUMENT / INVALID_PHONE otherwise).
pub fn decide_recipient(purpose: SmsPurpose, phone: &str, person_id: Option<uuid::Uuid>) -> ApiResult<Recipient> {
    if purpose.goes_to_phone_on_record() {
        if !phone.is_empty() {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "phone",
                "must be empty for this purpose: the code goes to the person's phone on record",
            ));
        }
        let person_id = person_id.ok_or_else(|| {
            ApiError::invalid_field(Reason::InvalidArgument, "person_id", "must be set for this purpose")
        })?;
        return Ok(Recipient::PhoneOnRecord(person_id));
    }
    if phone.is_empty() {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, "phone", "must be set for this purpose"));
    }
    super::phone::parse(phone).map(Recipient::GivenPhone).map_err(|e| super::person::phone_error("phone", e))
}

/// The phone a code for a person goes to: theirs on record. NOT_FOUND / PERSON_NOT_FOUND when
/// there is no such person, FAILED_PRECONDITION / PHONE_REQUIRED when they have no phone.
pub fn phone_on_record(person_found: bool, phone: Option<String>) -> ApiResult<String> {
    if !person_found {
        return Err(ApiError::of(Reason::PersonNotFound, "no person with this id"));
    }
    phone.ok_or_else(|| {
        ApiError::of(
            Reason::PhoneRequired,
            "the person has no phone on record: bind one first (PHONE_CHANGE), then ask again",
        )
    })
}

/// What the rate limits need to know about a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendHistory {
    /// Codes sent (and not discarded as undelivered) since the start of today.
    pub sent_today: u32,
    /// When the latest code was sent, whatever the day.
    pub last_sent_at: Option<NaiveDateTime>,
}

/// A send the limits allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendAllowed {
    /// When the new code expires.
    pub expires_at: NaiveDateTime,
    /// Earliest time of the next send to this phone.
    pub resend_after: NaiveDateTime,
}

/// What the calling partner's daily quota needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartnerBudget {
    /// Codes the partner has had sent today (China Standard Time), undelivered ones excluded.
    pub sent_today: u32,
    /// Its daily quota (partners file).
    pub quota: u32,
}

/// Which limit refused a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// One per 60 seconds.
    Interval,
    /// Ten per day.
    Daily,
    /// The partner's daily quota.
    PartnerQuota,
}

/// A send the limits refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit.
    pub limit: RateLimit,
    /// How long until a send would be allowed (whole seconds, at least one).
    pub retry_after: std::time::Duration,
}

impl RateLimited {
    /// RESOURCE_EXHAUSTED with RetryInfo: SMS_RATE_LIMITED (metadata `limit`: `INTERVAL` or
    /// `DAILY`) for the phone's limits, SMS_QUOTA_EXCEEDED for the partner's quota.
    pub fn into_error(self) -> ApiError {
        let phone_limit = |limit: &str, message: &str| {
            ApiError::resource_exhausted(Reason::SmsRateLimited, message, self.retry_after)
                .with_metadata("limit", limit)
        };
        match self.limit {
            RateLimit::Interval => phone_limit("INTERVAL", "a code was sent to this phone less than 60 seconds ago"),
            RateLimit::Daily => phone_limit("DAILY", "this phone has had 10 codes today"),
            RateLimit::PartnerQuota => ApiError::resource_exhausted(
                Reason::SmsQuotaExceeded,
                "this partner has used its daily SMS quota; it renews at midnight China time",
                self.retry_after,
            ),
        }
    }
}

/// Whether a partner with `budget` may have a code sent to a phone with `history` at `now`
/// (UTC), `today` being the date in China Standard Time. The partner's quota is checked first:
/// a partner over its quota learns nothing about the phone.
pub fn decide_send(
    now: NaiveDateTime,
    today: NaiveDate,
    budget: PartnerBudget,
    history: SendHistory,
) -> Result<SendAllowed, RateLimited> {
    let tomorrow = day_start(today) + Duration::days(1);
    if budget.sent_today >= budget.quota {
        return Err(RateLimited { limit: RateLimit::PartnerQuota, retry_after: whole_seconds(tomorrow - now) });
    }
    if history.sent_today >= DAILY_LIMIT {
        return Err(RateLimited { limit: RateLimit::Daily, retry_after: whole_seconds(tomorrow - now) });
    }
    if let Some(last) = history.last_sent_at {
        let next = last + Duration::seconds(RESEND_INTERVAL_SECONDS);
        if next > now {
            return Err(RateLimited { limit: RateLimit::Interval, retry_after: whole_seconds(next - now) });
        }
    }
    let resend_after =
        if history.sent_today + 1 >= DAILY_LIMIT { tomorrow } else { now + Duration::seconds(RESEND_INTERVAL_SECONDS) };
    Ok(SendAllowed { expires_at: now + Duration::minutes(CODE_TTL_MINUTES), resend_after })
}

/// A positive delay rounded up to whole seconds (at least one).
fn whole_seconds(delay: Duration) -> std::time::Duration {
    let millis = delay.num_milliseconds().max(1);
    std::time::Duration::from_secs(((millis + 999) / 1000) as u64)
}

/// What a verification needs to know about its challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeFacts {
    /// State.
    pub state: ChallengeState,
    /// Wrong codes so far.
    pub attempts: u32,
    /// When the code expires.
    pub expires_at: NaiveDateTime,
}

/// A change of a PENDING challenge after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// To VERIFIED, stamped with the time.
    Verify,
    /// One more wrong code: the new count, and the state it leaves (PENDING or LOCKED).
    CountWrongCode {
        /// Wrong codes including this one.
        attempts: u32,
        /// PENDING, or LOCKED when the tries are used up.
        state: ChallengeState,
    },
}

/// The outcome of one try at a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The right code: the challenge becomes VERIFIED.
    Verified,
    /// A wrong code; the challenge stays PENDING with `attempts` wrong codes.
    WrongCode {
        /// Wrong codes including this one.
        attempts: u32,
    },
    /// A wrong code that used up the last try: the challenge becomes LOCKED.
    LockedNow {
        /// Wrong codes including this one (= [`MAX_WRONG_ATTEMPTS`]).
        attempts: u32,
    },
    /// The challenge was already locked (the code is not even looked at).
    Locked,
    /// The code expired.
    Expired,
    /// The challenge was already verified (or used up): a code verifies once.
    AlreadyUsed,
}

impl VerifyOutcome {
    /// The state change to store, if any.
    pub fn transition(self) -> Option<Transition> {
        match self {
            VerifyOutcome::Verified => Some(Transition::Verify),
            VerifyOutcome::WrongCode { attempts } => {
                Some(Transition::CountWrongCode { attempts, state: ChallengeState::Pending })
            }
            VerifyOutcome::LockedNow { attempts } => {
                Some(Transition::CountWrongCode { attempts, state: ChallengeState::Locked })
            }
            VerifyOutcome::Locked | VerifyOutcome::Expired | VerifyOutcome::AlreadyUsed => None,
        }
    }

    /// The error the caller sees; `None` for [`VerifyOutcome::Verified`].
    pub fn error(self) -> Option<ApiError> {
        match self {
            VerifyOutcome::Verified => None,
            VerifyOutcome::WrongCode { attempts } => Some(
                ApiError::of(Reason::SmsCodeInvalid, "the code is wrong")
                    .with_metadata("attempts_left", MAX_WRONG_ATTEMPTS.saturating_sub(attempts).to_string()),
            ),
            VerifyOutcome::LockedNow { .. } | VerifyOutcome::Locked => Some(ApiError::of(
                Reason::SmsLocked,
                "too many wrong codes: this challenge is locked, request a new code",
            )),
            VerifyOutcome::Expired => {
                Some(ApiError::of(Reason::SmsCodeExpired, "the code has expired, request a new code"))
            }
            VerifyOutcome::AlreadyUsed => {
                Some(ApiError::of(Reason::SmsCodeInvalid, "this challenge was already verified: a code verifies once"))
            }
        }
    }
}

/// The outcome of a try at `challenge` at `now`, `code_matches` telling whether the code given
/// is the one sent. Checked in this order: used, locked, expired, code.
pub fn decide_verify(challenge: ChallengeFacts, now: NaiveDateTime, code_matches: bool) -> VerifyOutcome {
    match challenge.state {
        ChallengeState::Verified | ChallengeState::Consumed => return VerifyOutcome::AlreadyUsed,
        ChallengeState::Locked => return VerifyOutcome::Locked,
        ChallengeState::Pending => {}
    }
    if challenge.attempts >= MAX_WRONG_ATTEMPTS {
        // Not a stored state (the schema ties LOCKED to 3 attempts), but never let it verify.
        return VerifyOutcome::Locked;
    }
    if now >= challenge.expires_at {
        return VerifyOutcome::Expired;
    }
    if code_matches {
        return VerifyOutcome::Verified;
    }
    let attempts = challenge.attempts + 1;
    if attempts >= MAX_WRONG_ATTEMPTS {
        VerifyOutcome::LockedNow { attempts }
    } else {
        VerifyOutcome::WrongCode { attempts }
    }
}

/// What using up a verified challenge needs to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeFacts {
    /// State.
    pub state: ChallengeState,
    /// Its purpose.
    pub purpose: SmsPurpose,
    /// Whether it was sent to the phone the caller expects.
    pub phone_matches: bool,
    /// When it was verified.
    pub verified_at: Option<NaiveDateTime>,
}

/// Why a challenge cannot be used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeRefusal {
    /// Sent to another phone, or for another purpose.
    OtherPhoneOrPurpose,
    /// Not verified (pending or locked).
    NotVerified,
    /// Already used up.
    AlreadyConsumed,
    /// Verified too long ago.
    Expired,
}

impl ConsumeRefusal {
    /// FAILED_PRECONDITION with SMS_CODE_INVALID, or SMS_CODE_EXPIRED.
    pub fn into_error(self) -> ApiError {
        match self {
            ConsumeRefusal::OtherPhoneOrPurpose => {
                ApiError::of(Reason::SmsCodeInvalid, "the SMS verification was for another phone or purpose")
            }
            ConsumeRefusal::NotVerified => ApiError::of(Reason::SmsCodeInvalid, "the SMS code has not been verified"),
            ConsumeRefusal::AlreadyConsumed => {
                ApiError::of(Reason::SmsCodeInvalid, "the SMS verification was already used")
            }
            ConsumeRefusal::Expired => ApiError::of(
                Reason::SmsCodeExpired,
                "the SMS verification is more than 10 minutes old, verify a new code",
            ),
        }
    }
}

/// Whether a challenge can be used up now for `purpose`.
pub fn decide_consume(challenge: ConsumeFacts, purpose: SmsPurpose, now: NaiveDateTime) -> Result<(), ConsumeRefusal> {
    if !challenge.phone_matches || challenge.purpose != purpose {
        return Err(ConsumeRefusal::OtherPhoneOrPurpose);
    }
    match challenge.state {
        ChallengeState::Consumed => return Err(ConsumeRefusal::AlreadyConsumed),
        ChallengeState::Pending | ChallengeState::Locked => return Err(ConsumeRefusal::NotVerified),
        ChallengeState::Verified => {}
    }
    match challenge.verified_at {
        Some(at) if now < at + Duration::minutes(VERIFIED_VALIDITY_MINUTES) => Ok(()),
        Some(_) => Err(ConsumeRefusal::Expired),
        None => Err(ConsumeRefusal::NotVerified),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    /// A partner far from its quota.
    const ROOM: PartnerBudget = PartnerBudget { sent_today: 0, quota: 5_000 };

    #[test]
    fn a_partner_at_its_quota_waits_for_midnight_china_time_before_any_phone_rule() {
        let today = date("2026-11-23");
        let now = at("2026-11-23 10:00:00"); // 18:00 China time
        let fresh = SendHistory { sent_today: 0, last_sent_at: None };
        let full = PartnerBudget { sent_today: 3, quota: 3 };
        let refused = decide_send(now, today, full, fresh).unwrap_err();
        assert_eq!(
            refused,
            RateLimited { limit: RateLimit::PartnerQuota, retry_after: std::time::Duration::from_secs(6 * 3600) }
        );
        let error = refused.into_error();
        assert_eq!((error.code(), error.reason()), (tonic::Code::ResourceExhausted, Reason::SmsQuotaExceeded));
        // Checked before the phone's own limits.
        let busy_phone = SendHistory { sent_today: 10, last_sent_at: Some(now) };
        assert_eq!(decide_send(now, today, full, busy_phone).unwrap_err().limit, RateLimit::PartnerQuota);
        assert!(decide_send(now, today, PartnerBudget { sent_today: 2, quota: 3 }, fresh).is_ok());
        assert_eq!(
            decide_send(now, today, PartnerBudget { sent_today: 0, quota: 0 }, fresh).unwrap_err().limit,
            RateLimit::PartnerQuota
        );
    }

    #[test]
    fn the_china_day_of_a_stored_time() {
        assert_eq!(china_day(at("2026-11-23 15:59:59")), date("2026-11-23"));
        assert_eq!(china_day(at("2026-11-23 16:00:00")), date("2026-11-24"));
    }

    #[test]
    fn codes_for_a_person_go_to_the_phone_on_record_only() {
        let id = uuid::Uuid::now_v7();
        for purpose in SmsPurpose::ALL.iter().copied().filter(|p| p.goes_to_phone_on_record()) {
            assert_eq!(decide_recipient(purpose, "", Some(id)).unwrap(), Recipient::PhoneOnRecord(id));
            // Any phone at all is refused, valid or not: no guessing which one is on record.
            for phone in ["13800138000", "x"] {
                let error = decide_recipient(purpose, phone, Some(id)).unwrap_err();
                assert_eq!(error.code(), tonic::Code::InvalidArgument);
            }
            assert_eq!(decide_recipient(purpose, "", None).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        assert!(SmsPurpose::RealName.goes_to_phone_on_record());
        assert_eq!(phone_on_record(true, Some("13800138000".into())).unwrap(), "13800138000");
        assert_eq!(phone_on_record(true, None).unwrap_err().reason(), Reason::PhoneRequired);
        assert_eq!(phone_on_record(false, None).unwrap_err().reason(), Reason::PersonNotFound);
    }

    #[test]
    fn codes_are_six_digits_and_vary() {
        let mut rng = rand::rngs::OsRng;
        let codes: std::collections::HashSet<String> = (0..200).map(|_| generate_code(&mut rng)).collect();
        assert!(codes.iter().all(|c| is_well_formed_code(c)));
        assert!(codes.len() > 190, "random codes rarely repeat");
    }

    #[test]
    fn small_numbers_keep_their_leading_zeros() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            assert_eq!(generate_code(&mut rng).len(), 6);
        }
    }

    #[test]
    fn only_six_ascii_digits_are_a_code() {
        assert!(is_well_formed_code("012345"));
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", " 12345", "12345 "] {
            assert!(!is_well_formed_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_day_starts_at_midnight_china_time() {
        assert_eq!(day_start(date("2026-11-23")), at("2026-11-22 16:00:00"));
    }

    #[test]
    fn a_first_send_is_allowed_with_a_five_minute_code() {
        let now = at("2026-11-23 02:00:00");
        let allowed =
            decide_send(now, date("2026-11-23"), ROOM, SendHistory { sent_today: 0, last_sent_at: None }).unwrap();
        assert_eq!(allowed.expires_at, at("2026-11-23 02:05:00"));
        assert_eq!(allowed.resend_after, at("2026-11-23 02:01:00"));
    }

    #[test]
    fn a_second_send_within_60_seconds_is_refused_with_the_wait() {
        let now = at("2026-11-23 02:00:45");
        let history = SendHistory { sent_today: 1, last_sent_at: Some(at("2026-11-23 02:00:00")) };
        let refused = decide_send(now, date("2026-11-23"), ROOM, history).unwrap_err();
        assert_eq!(
            refused,
            RateLimited { limit: RateLimit::Interval, retry_after: std::time::Duration::from_secs(15) }
        );
        let error = refused.into_error();
        assert_eq!((error.code(), error.reason()), (tonic::Code::ResourceExhausted, Reason::SmsRateLimited));
        assert!(
            decide_send(at("2026-11-23 02:01:00"), date("2026-11-23"), ROOM, history).is_ok(),
            "60 s later is fine"
        );
    }

    #[test]
    fn the_interval_holds_across_midnight() {
        // 23:59:30 and 00:00:10 China time are on different days but 40 s apart.
        let history = SendHistory { sent_today: 0, last_sent_at: Some(at("2026-11-23 15:59:30")) };
        let refused = decide_send(at("2026-11-23 16:00:10"), date("2026-11-24"), ROOM, history).unwrap_err();
        assert_eq!(refused.limit, RateLimit::Interval);
    }

    #[test]
    fn the_eleventh_send_of_a_day_waits_for_midnight_china_time() {
        let today = date("2026-11-23");
        let now = at("2026-11-23 10:00:00"); // 18:00 China time
        let history = SendHistory { sent_today: 10, last_sent_at: Some(at("2026-11-23 09:00:00")) };
        let refused = decide_send(now, today, ROOM, history).unwrap_err();
        assert_eq!(
            refused,
            RateLimited { limit: RateLimit::Daily, retry_after: std::time::Duration::from_secs(6 * 3600) }
        );
        // The tenth is allowed, and says the next one must wait for tomorrow.
        let tenth = decide_send(now, today, ROOM, SendHistory { sent_today: 9, ..history }).unwrap();
        assert_eq!(tenth.resend_after, at("2026-11-23 16:00:00"));
    }

    fn pending(attempts: u32) -> ChallengeFacts {
        ChallengeFacts { state: ChallengeState::Pending, attempts, expires_at: at("2026-11-23 02:05:00") }
    }

    #[test]
    fn the_right_code_verifies() {
        let outcome = decide_verify(pending(2), at("2026-11-23 02:04:59"), true);
        assert_eq!(outcome, VerifyOutcome::Verified);
        assert!(outcome.error().is_none());
        assert_eq!(outcome.transition(), Some(Transition::Verify));
    }

    #[test]
    fn wrong_codes_count_down_and_the_third_locks() {
        let now = at("2026-11-23 02:01:00");
        let first = decide_verify(pending(0), now, false);
        assert_eq!(first, VerifyOutcome::WrongCode { attempts: 1 });
        let error = first.error().unwrap();
        assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::SmsCodeInvalid));
        let status: tonic::Status = error.into();
        use tonic_types::StatusExt;
        assert_eq!(status.get_details_error_info().unwrap().metadata["attempts_left"], "2");

        assert_eq!(decide_verify(pending(1), now, false), VerifyOutcome::WrongCode { attempts: 2 });
        let third = decide_verify(pending(2), now, false);
        assert_eq!(third, VerifyOutcome::LockedNow { attempts: 3 });
        assert_eq!(third.error().unwrap().reason(), Reason::SmsLocked);
        assert_eq!(third.transition(), Some(Transition::CountWrongCode { attempts: 3, state: ChallengeState::Locked }));
    }

    #[test]
    fn a_locked_challenge_refuses_even_the_right_code() {
        let locked = ChallengeFacts { state: ChallengeState::Locked, ..pending(3) };
        let outcome = decide_verify(locked, at("2026-11-23 02:01:00"), true);
        assert_eq!(outcome, VerifyOutcome::Locked);
        assert_eq!(outcome.error().unwrap().reason(), Reason::SmsLocked);
        assert_eq!(outcome.transition(), None);
    }

    #[test]
    fn an_expired_code_is_refused_without_counting_a_try() {
        let outcome = decide_verify(pending(0), at("2026-11-23 02:05:00"), true);
        assert_eq!(outcome, VerifyOutcome::Expired);
        assert_eq!(outcome.error().unwrap().reason(), Reason::SmsCodeExpired);
        assert_eq!(decide_verify(pending(0), at("2026-11-23 02:06:00"), false).transition(), None);
    }

    #[test]
    fn a_code_verifies_once() {
        for state in [ChallengeState::Verified, ChallengeState::Consumed] {
            let outcome = decide_verify(ChallengeFacts { state, ..pending(0) }, at("2026-11-23 02:01:00"), true);
            assert_eq!(outcome, VerifyOutcome::AlreadyUsed);
            assert_eq!(outcome.error().unwrap().reason(), Reason::SmsCodeInvalid);
        }
    }

    fn verified() -> ConsumeFacts {
        ConsumeFacts {
            state: ChallengeState::Verified,
            purpose: SmsPurpose::RealName,
            phone_matches: true,
            verified_at: Some(at("2026-11-23 02:00:00")),
        }
    }

    #[test]
    fn a_verified_challenge_is_consumed_within_ten_minutes_for_its_phone_and_purpose() {
        assert_eq!(decide_consume(verified(), SmsPurpose::RealName, at("2026-11-23 02:09:59")), Ok(()));
        assert_eq!(
            decide_consume(verified(), SmsPurpose::RealName, at("2026-11-23 02:10:00")),
            Err(ConsumeRefusal::Expired)
        );
        assert_eq!(
            decide_consume(verified(), SmsPurpose::LinkAccount, at("2026-11-23 02:01:00")),
            Err(ConsumeRefusal::OtherPhoneOrPurpose)
        );
        let other_phone = ConsumeFacts { phone_matches: false, ..verified() };
        assert_eq!(
            decide_consume(other_phone, SmsPurpose::RealName, at("2026-11-23 02:01:00")),
            Err(ConsumeRefusal::OtherPhoneOrPurpose)
        );
        for (state, refusal) in [
            (ChallengeState::Consumed, ConsumeRefusal::AlreadyConsumed),
            (ChallengeState::Pending, ConsumeRefusal::NotVerified),
            (ChallengeState::Locked, ConsumeRefusal::NotVerified),
        ] {
            let facts = ConsumeFacts { state, ..verified() };
            assert_eq!(decide_consume(facts, SmsPurpose::RealName, at("2026-11-23 02:01:00")), Err(refusal));
        }
        assert_eq!(ConsumeRefusal::Expired.into_error().reason(), Reason::SmsCodeExpired);
        assert_eq!(ConsumeRefusal::AlreadyConsumed.into_error().reason(), Reason::SmsCodeInvalid);
    }

    #[test]
    fn purposes_and_states_round_trip_their_stored_spelling() {
        for &purpose in SmsPurpose::ALL {
            assert_eq!(SmsPurpose::parse(purpose.as_str()), Some(purpose));
        }
        for state in
            [ChallengeState::Pending, ChallengeState::Verified, ChallengeState::Locked, ChallengeState::Consumed]
        {
            assert_eq!(ChallengeState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SmsPurpose::from_proto(pb::SmsPurpose::Unspecified), None);
        assert_eq!(SmsPurpose::from_proto(pb::SmsPurpose::CardApplication), Some(SmsPurpose::CardApplication));
    }
}
