//! Vouchers (docs/architecture.md#vouchers-and-codes): channels, statuses, the activation rules and
//! who may suspend and resume. Pure.

use chrono::{NaiveDate, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason, validate};
use uuid::Uuid;

pub use super::face::{FACE_SESSION_FRESHNESS, FaceCheck, FaceSessionFacts, FaceSessionStatus};
use super::{
    account::AccountStatus,
    face::{FacePurpose, check_face_session},
};

medins_common::text_enum! {
    /// Where a voucher was activated.
    pub enum Channel {
        /// The national medical insurance app.
        NationalApp => "NATIONAL_APP",
        /// A WeChat mini program.
        Wechat => "WECHAT",
        /// An Alipay mini program.
        Alipay => "ALIPAY",
        /// A bank's app.
        BankApp => "BANK_APP",
        /// A city government app.
        CityApp => "CITY_APP",
        /// By the family member who bound the holder (FamilyService.AddFamilyMember; never through
        /// ActivateVoucher).
        Family => "FAMILY",
    }
}

/// A channel a person may activate through themself: every channel but FAMILY
/// (INVALID_ARGUMENT otherwise).
pub fn self_activation_channel(channel: Channel) -> ApiResult<Channel> {
    match channel {
        Channel::Family => Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "channel",
            "ACTIVATION_CHANNEL_FAMILY is set by family binding, not by ActivateVoucher",
        )),
        other => Ok(other),
    }
}

medins_common::text_enum! {
    /// Whether a voucher's codes work.
    pub enum VoucherStatus {
        /// Codes are issued and verified.
        Active => "ACTIVE",
        /// Codes are refused.
        Suspended => "SUSPENDED",
    }
}

medins_common::text_enum! {
    /// Who suspended a voucher.
    pub enum Suspender {
        /// Operators (fraud, theft reported to the service center): only operators resume.
        Ops => "OPS",
        /// The holder through a partner app (lost phone): the holder or operators resume.
        Holder => "HOLDER",
        /// The last family binding that kept a FAMILY-only voucher ended: a new binding, the
        /// holder's own activation (ActivateVoucher, with a face check) or operators lift it.
        Family => "FAMILY",
    }
}

/// A voucher with the channels it was activated through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    /// Voucher id.
    pub id: Uuid,
    /// Holder.
    pub person_id: Uuid,
    /// Status.
    pub status: VoucherStatus,
    /// Who suspended it, while suspended.
    pub suspended_by: Option<Suspender>,
    /// First activation.
    pub activated_at: NaiveDateTime,
    /// Last change.
    pub updated_at: NaiveDateTime,
    /// Distinct channels, first activation first.
    pub channels: Vec<Channel>,
}

/// The voucher a code is issued for (`found`: the holder's voucher id and status, `None`
/// without one): it must be ACTIVE; otherwise FAILED_PRECONDITION / VOUCHER_NOT_ACTIVE, with
/// `voucher_status` NONE in the metadata when the holder has none.
pub fn active_voucher(found: Option<(Uuid, VoucherStatus)>) -> ApiResult<Uuid> {
    match found {
        Some((id, VoucherStatus::Active)) => Ok(id),
        Some((_, VoucherStatus::Suspended)) => {
            Err(ApiError::failed_precondition(Reason::VoucherNotActive, "the voucher is suspended"))
        }
        None => Err(ApiError::failed_precondition(Reason::VoucherNotActive, "the holder has not activated a voucher")
            .with_metadata("voucher_status", "NONE")),
    }
}

/// Checks that `actor` may lift a suspension made by `suspended_by`: operators lift any, the
/// holder only their own.
pub fn may_resume(suspended_by: Suspender, actor: Suspender) -> ApiResult<()> {
    match (suspended_by, actor) {
        (_, Suspender::Ops) | (Suspender::Holder, Suspender::Holder) => Ok(()),
        (Suspender::Ops, Suspender::Holder) => Err(ApiError::of(
            Reason::PermissionDeniedScope,
            "this voucher was suspended by operators: only operators resume it",
        )),
        (Suspender::Family, Suspender::Holder) => Err(ApiError::of(
            Reason::VoucherNotActive,
            "this voucher was kept by a family binding that ended: activate it yourself (ActivateVoucher)",
        )),
        (_, Suspender::Family) => Err(ApiError::internal("family bindings do not resume vouchers this way")),
    }
}

/// A suspension reason as stored (`validate::SUSPENSION_REASON`): trimmed, at most 200
/// characters, no control characters (free text for operators; the caller must not put
/// personal data in it).
pub fn suspension_reason(text: &str) -> ApiResult<String> {
    validate::SUSPENSION_REASON.check("reason", text)
}

/// The account state activation needs: an ACTIVE account. None or not active is
/// FAILED_PRECONDITION / NOT_INSURED with `account_status` (`NONE`, `SUSPENDED`) in the error
/// metadata: a suspended account pays nothing, so its holder is not insured for now.
pub fn require_insured(account: Option<AccountStatus>) -> ApiResult<()> {
    match account {
        Some(AccountStatus::Active) => Ok(()),
        None | Some(AccountStatus::Closed) => {
            Err(ApiError::of(Reason::NotInsured, "the person has no open insured account")
                .with_metadata("account_status", "NONE"))
        }
        Some(AccountStatus::Suspended) => {
            Err(ApiError::of(Reason::NotInsured, "the person's insured account is suspended")
                .with_metadata("account_status", "SUSPENDED"))
        }
    }
}

/// Checks that a face session activates `person_id`'s voucher at `now`: that person's,
/// VOUCHER_ACTIVATION, PASSED, finished at most 10 minutes ago (the shared rule,
/// [`check_face_session`]). Never used before is the unique index's to decide, in the same
/// transaction as the activation.
pub fn check_activation_face(face: &FaceSessionFacts, person_id: Uuid, now: NaiveDateTime) -> Result<(), FaceCheck> {
    check_face_session(face, person_id, FacePurpose::VoucherActivation, now)
}

/// Whole years from `birth` to `today` (the birthday counts from its day; 29 February birthdays
/// from 1 March in common years).
pub fn age_on(birth: NaiveDate, today: NaiveDate) -> i32 {
    use chrono::Datelike;
    let mut age = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age.max(0)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn now() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap().and_hms_opt(8, 0, 0).unwrap()
    }

    #[test]
    fn a_code_is_issued_for_an_active_voucher_only() {
        let id = Uuid::now_v7();
        assert_eq!(active_voucher(Some((id, VoucherStatus::Active))).unwrap(), id);
        let suspended = active_voucher(Some((id, VoucherStatus::Suspended))).unwrap_err();
        assert_eq!((suspended.code(), suspended.reason()), (tonic::Code::FailedPrecondition, Reason::VoucherNotActive));
        assert_eq!(suspended.metadata_value("voucher_status"), None);
        let none = active_voucher(None).unwrap_err();
        assert_eq!((none.code(), none.reason()), (tonic::Code::FailedPrecondition, Reason::VoucherNotActive));
        assert_eq!(none.metadata_value("voucher_status"), Some("NONE"));
    }

    fn passed(person_id: Uuid, minutes_ago: i64) -> FaceSessionFacts {
        FaceSessionFacts {
            person_id,
            purpose: Some(FacePurpose::VoucherActivation),
            status: FaceSessionStatus::Passed,
            finished_at: Some(now() - Duration::minutes(minutes_ago)),
        }
    }

    #[test]
    fn a_fresh_passed_voucher_session_of_the_person_activates() {
        let person = Uuid::now_v7();
        assert_eq!(check_activation_face(&passed(person, 0), person, now()), Ok(()));
        assert_eq!(check_activation_face(&passed(person, 10), person, now()), Ok(()));
    }

    #[test]
    fn a_session_older_than_ten_minutes_is_stale() {
        let person = Uuid::now_v7();
        let face = FaceSessionFacts { finished_at: Some(now() - Duration::seconds(601)), ..passed(person, 0) };
        assert_eq!(check_activation_face(&face, person, now()), Err(FaceCheck::Stale));
        assert_eq!(check_activation_face(&passed(person, 11), person, now()), Err(FaceCheck::Stale));
    }

    #[test]
    fn foreign_wrong_purpose_and_unpassed_sessions_are_refused_in_that_order() {
        let person = Uuid::now_v7();
        let other = Uuid::now_v7();
        let failed_foreign = FaceSessionFacts { status: FaceSessionStatus::Failed, ..passed(other, 0) };
        assert_eq!(check_activation_face(&failed_foreign, person, now()), Err(FaceCheck::Foreign));
        let family = FaceSessionFacts { purpose: Some(FacePurpose::FamilyBinding), ..passed(person, 0) };
        assert_eq!(check_activation_face(&family, person, now()), Err(FaceCheck::WrongPurpose));
        let real_name = FaceSessionFacts { purpose: None, ..passed(person, 0) };
        assert_eq!(check_activation_face(&real_name, person, now()), Err(FaceCheck::WrongPurpose));
        for (status, check) in [
            (FaceSessionStatus::Pending, FaceCheck::Pending),
            (FaceSessionStatus::Failed, FaceCheck::Failed),
            (FaceSessionStatus::Expired, FaceCheck::Expired),
        ] {
            let face = FaceSessionFacts { status, finished_at: None, ..passed(person, 0) };
            assert_eq!(check_activation_face(&face, person, now()), Err(check));
        }
        let error = FaceCheck::Reused.into_error();
        assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::FaceVerificationRequired));
    }

    #[test]
    fn family_is_not_a_self_activation_channel() {
        assert_eq!(self_activation_channel(Channel::Wechat).unwrap(), Channel::Wechat);
        let error = self_activation_channel(Channel::Family).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidArgument));
        for &channel in Channel::ALL {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
    }

    #[test]
    fn only_an_active_account_is_insured() {
        assert!(require_insured(Some(AccountStatus::Active)).is_ok());
        for status in [None, Some(AccountStatus::Suspended), Some(AccountStatus::Closed)] {
            let error = require_insured(status).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::NotInsured));
        }
    }

    #[test]
    fn an_ops_suspension_is_lifted_by_ops_only() {
        assert!(may_resume(Suspender::Ops, Suspender::Ops).is_ok());
        assert!(may_resume(Suspender::Holder, Suspender::Ops).is_ok());
        assert!(may_resume(Suspender::Holder, Suspender::Holder).is_ok());
        let error = may_resume(Suspender::Ops, Suspender::Holder).unwrap_err();
        assert_eq!(error.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn suspension_reasons_are_short_plain_text() {
        assert_eq!(suspension_reason("  lost phone ").unwrap(), "lost phone");
        assert!(suspension_reason(&"x".repeat(201)).is_err());
        assert!(suspension_reason("a\nb").is_err());
    }

    #[test]
    fn ages_count_whole_years() {
        let birth = NaiveDate::from_ymd_opt(1985, 11, 24).unwrap();
        assert_eq!(age_on(birth, NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()), 40);
        assert_eq!(age_on(birth, NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()), 41);
        let leap = NaiveDate::from_ymd_opt(2000, 2, 29).unwrap();
        assert_eq!(age_on(leap, NaiveDate::from_ymd_opt(2027, 2, 28).unwrap()), 26);
        assert_eq!(age_on(leap, NaiveDate::from_ymd_opt(2027, 3, 1).unwrap()), 27);
    }
}
