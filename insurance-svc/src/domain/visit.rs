//! Visits, opened at a hospital or pharmacy counter by redeeming a payment code or by the
//! social security card with its PIN ([`VisitSource`]; the visits table has a CHECK that exactly
//! one source is set), and the decisions that open them. Pure: no I/O.
//!
//! The redemption rule: a code opens a visit when its voucher is [`REDEEMABLE_VOUCHER`] and
//! the holder's open account is [`INSURED_ACCOUNT`]. [`decide_redemption`] is that rule over
//! facts read; the PostgreSQL statement that reads and inserts in one go is built from the same
//! two constants (`store::visit`), so no second spelling of the rule exists.

use chrono::{NaiveDate, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason};
use uuid::Uuid;

use super::{
    account::{AccountStatus, Scheme},
    card::{Activation, ActivationChannel, Card, decide_activation},
    voucher::{VoucherStatus, require_insured},
};

/// The voucher status under which a code opens a visit.
pub const REDEEMABLE_VOUCHER: VoucherStatus = VoucherStatus::Active;

/// The account status that insures a visit (what [`require_insured`] accepts).
pub const INSURED_ACCOUNT: AccountStatus = AccountStatus::Active;

/// The account status an account is never read as the holder's account in (a closed account
/// is history: the holder's open account is the one that is not closed).
pub const CLOSED_ACCOUNT: AccountStatus = AccountStatus::Closed;

/// What opened a visit.
#[derive(Clone, PartialEq, Eq)]
pub enum VisitSource {
    /// A payment code (VerifyCode).
    Code {
        /// The voucher whose code opened it.
        voucher_id: Uuid,
        /// The key that signed the code (`ck-...`).
        code_key_id: String,
    },
    /// The social security card with its PIN (OpenVisitWithCard).
    Card {
        /// The card's number (personal data for partners: never logged).
        card_number: String,
    },
}

impl std::fmt::Debug for VisitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VisitSource::Code { voucher_id, code_key_id } => {
                f.debug_struct("Code").field("voucher_id", voucher_id).field("code_key_id", code_key_id).finish()
            }
            // The card number stays out of every log line.
            VisitSource::Card { .. } => f.debug_struct("Card").finish_non_exhaustive(),
        }
    }
}

/// A visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    /// Visit id.
    pub id: Uuid,
    /// What opened it.
    pub source: VisitSource,
    /// The holder.
    pub person_id: Uuid,
    /// The holder's account (ACTIVE when the visit was opened).
    pub account_id: Uuid,
    /// The hospital or pharmacy partner that opened it; only it settles the visit.
    pub partner_id: String,
    /// When the code was verified or the card's PIN accepted.
    pub opened_at: NaiveDateTime,
}

impl Visit {
    /// The voucher whose code opened it (none for a card visit).
    pub fn voucher_id(&self) -> Option<Uuid> {
        match &self.source {
            VisitSource::Code { voucher_id, .. } => Some(*voucher_id),
            VisitSource::Card { .. } => None,
        }
    }
}

/// A verified code to redeem.
#[derive(Debug, Clone)]
pub struct Redemption {
    /// The voucher named by the code.
    pub voucher_id: Uuid,
    /// The code's [`redemption_key`](crate::domain::code::CodePayload::redemption_key): one
    /// visit per key.
    pub redemption_key: [u8; crate::domain::code::REDEMPTION_KEY_LEN],
    /// The signing key id.
    pub key_id: String,
    /// The verifying partner.
    pub partner_id: String,
}

/// What the counter is told about the insured holder of a new visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedVisit {
    /// The visit.
    pub visit: Visit,
    /// The account's scheme.
    pub scheme: Scheme,
    /// The insured region.
    pub region_code: String,
    /// The account status (ACTIVE).
    pub account_status: AccountStatus,
    /// The holder's birth date (for the age shown).
    pub birth_date: NaiveDate,
}

/// The holder's open account, as a redemption reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderAccount {
    /// Account id.
    pub id: Uuid,
    /// Scheme.
    pub scheme: Scheme,
    /// Insured region.
    pub region_code: String,
    /// Status (never CLOSED: a closed account is not read).
    pub status: AccountStatus,
    /// The holder's birth date.
    pub birth_date: NaiveDate,
}

/// What a redemption is decided on: the code's voucher (its holder and status) and the
/// holder's open account, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedemptionFacts {
    /// The voucher's holder.
    pub person_id: Uuid,
    /// The voucher's status.
    pub voucher_status: VoucherStatus,
    /// The holder's open account.
    pub account: Option<HolderAccount>,
}

/// The redemption rule over what was read (`None`: no such voucher): the visit `visit_id` to
/// open at `now` and what the counter is told, or the refusal (VOUCHER_NOT_ACTIVE, NOT_INSURED).
/// Whether the code's redemption key is new is the unique index's to decide, when the visit is written.
pub fn decide_redemption(
    found: Option<RedemptionFacts>,
    redemption: &Redemption,
    visit_id: Uuid,
    now: NaiveDateTime,
) -> ApiResult<OpenedVisit> {
    let not_active = || ApiError::failed_precondition(Reason::VoucherNotActive, "the voucher is not active");
    let found = found.ok_or_else(not_active)?;
    if found.voucher_status != REDEEMABLE_VOUCHER {
        return Err(not_active());
    }
    require_insured(found.account.as_ref().map(|account| account.status))?;
    let account = found.account.ok_or_else(|| ApiError::internal("redemption: insured without an account"))?;
    Ok(OpenedVisit {
        visit: Visit {
            id: visit_id,
            source: VisitSource::Code { voucher_id: redemption.voucher_id, code_key_id: redemption.key_id.clone() },
            person_id: found.person_id,
            account_id: account.id,
            partner_id: redemption.partner_id.clone(),
            opened_at: now,
        },
        scheme: account.scheme,
        region_code: account.region_code,
        account_status: account.status,
        birth_date: account.birth_date,
    })
}

/// A card presented at a hospital or pharmacy counter whose PIN was right, to open a visit with.
#[derive(Debug, Clone)]
pub struct CardUse {
    /// Where: the counter's kind ([`ActivationChannel::of_care_counter`]).
    pub channel: ActivationChannel,
    /// The counter's partner id.
    pub partner_id: String,
}

/// Opening a visit with `card` at a care counter (`card_use`), its PIN already right: the card
/// must be usable there ([`decide_activation`], the same decision ActivateCard HOSPITAL or
/// PHARMACY asks: VALID and delivered, else CARD_STATE_CONFLICT; its medical function switches
/// on at this first use), and its holder's open account insured (NOT_INSURED otherwise, as for
/// a code). Returns the visit `visit_id` opened at `now` with what the counter is told, and what
/// the use activates.
pub fn decide_card_visit(
    card: &Card,
    account: Option<HolderAccount>,
    card_use: &CardUse,
    visit_id: Uuid,
    now: NaiveDateTime,
) -> ApiResult<(OpenedVisit, Activation)> {
    let activation = decide_activation(card, card_use.channel)?;
    require_insured(account.as_ref().map(|account| account.status))?;
    let account = account.ok_or_else(|| ApiError::internal("card visit: insured without an account"))?;
    let opened = OpenedVisit {
        visit: Visit {
            id: visit_id,
            source: VisitSource::Card { card_number: card.card_number.clone() },
            person_id: card.person_id,
            account_id: account.id,
            partner_id: card_use.partner_id.clone(),
            opened_at: now,
        },
        scheme: account.scheme,
        region_code: account.region_code,
        account_status: account.status,
        birth_date: account.birth_date,
    };
    Ok((opened, activation))
}

/// The refusal of a code whose nonce already opened a visit.
pub fn code_already_used() -> ApiError {
    ApiError::failed_precondition(Reason::CodeAlreadyUsed, "this code was already used: show a fresh one")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redemption() -> Redemption {
        Redemption {
            voucher_id: Uuid::now_v7(),
            redemption_key: [7; crate::domain::code::REDEMPTION_KEY_LEN],
            key_id: "ck-1".into(),
            partner_id: "hospital-1".into(),
        }
    }

    fn facts(voucher_status: VoucherStatus, account_status: Option<AccountStatus>) -> RedemptionFacts {
        RedemptionFacts {
            person_id: Uuid::now_v7(),
            voucher_status,
            account: account_status.map(|status| HolderAccount {
                id: Uuid::now_v7(),
                scheme: Scheme::Employee,
                region_code: "310000".into(),
                status,
                birth_date: NaiveDate::from_ymd_opt(1980, 1, 2).unwrap(),
            }),
        }
    }

    fn now() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 5, 1).unwrap().and_hms_opt(3, 0, 0).unwrap()
    }

    #[test]
    fn an_active_voucher_of_an_insured_holder_opens_a_visit() {
        let (r, visit_id) = (redemption(), Uuid::now_v7());
        let found = facts(VoucherStatus::Active, Some(AccountStatus::Active));
        let account = found.account.clone().unwrap();
        let opened = decide_redemption(Some(found.clone()), &r, visit_id, now()).unwrap();
        let expected = Visit {
            id: visit_id,
            source: VisitSource::Code { voucher_id: r.voucher_id, code_key_id: "ck-1".into() },
            person_id: found.person_id,
            account_id: account.id,
            partner_id: "hospital-1".into(),
            opened_at: now(),
        };
        assert_eq!(opened.visit, expected);
        assert_eq!(
            (opened.scheme, opened.region_code.as_str(), opened.account_status, opened.birth_date),
            (Scheme::Employee, "310000", AccountStatus::Active, account.birth_date)
        );
    }

    #[test]
    fn a_missing_or_inactive_voucher_is_refused_first() {
        let refused = |found| decide_redemption(found, &redemption(), Uuid::now_v7(), now()).unwrap_err();
        assert_eq!(refused(None).reason(), Reason::VoucherNotActive);
        let error = refused(Some(facts(VoucherStatus::Suspended, Some(AccountStatus::Active))));
        assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::VoucherNotActive));
        // The voucher is checked before the account.
        assert_eq!(refused(Some(facts(VoucherStatus::Suspended, None))).reason(), Reason::VoucherNotActive);
    }

    #[test]
    fn an_uninsured_holder_is_refused() {
        for account in [None, Some(AccountStatus::Suspended)] {
            let error =
                decide_redemption(Some(facts(VoucherStatus::Active, account)), &redemption(), Uuid::now_v7(), now())
                    .unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::NotInsured));
        }
    }

    fn card(medical_active: bool) -> Card {
        Card {
            card_number: "8611000000000000".into(),
            person_id: Uuid::now_v7(),
            application_id: Uuid::now_v7(),
            status: crate::domain::card::CardStatus::Valid,
            medical_activated_at: medical_active.then(now),
            financial_activated_at: Some(now()),
            replaced_by_application_id: None,
            issued_at: now(),
            updated_at: now(),
            delivered: true,
        }
    }

    fn at_hospital() -> CardUse {
        CardUse { channel: ActivationChannel::Hospital, partner_id: "hospital-1".into() }
    }

    #[test]
    fn a_usable_card_of_an_insured_holder_opens_a_visit_and_its_first_use_activates_it() {
        let account = facts(VoucherStatus::Active, Some(AccountStatus::Active)).account;
        let fresh = card(false);
        let visit_id = Uuid::now_v7();
        let (opened, activation) = decide_card_visit(&fresh, account.clone(), &at_hospital(), visit_id, now()).unwrap();
        assert_eq!(
            (activation.medical, activation.financial, opened.visit.voucher_id()),
            (true, false, None),
            "the first use at a hospital activates the medical function"
        );
        assert_eq!(opened.visit.source, VisitSource::Card { card_number: fresh.card_number.clone() });
        assert_eq!((opened.visit.person_id, opened.visit.partner_id.as_str()), (fresh.person_id, "hospital-1"));
        assert_eq!(opened.visit.account_id, account.as_ref().unwrap().id);
        let (_, later) = decide_card_visit(&card(true), account, &at_hospital(), visit_id, now()).unwrap();
        assert!(!later.medical, "later uses change nothing");
        assert_eq!(format!("{:?}", opened.visit.source), "Card { .. }", "no card number in logs");
    }

    #[test]
    fn an_unusable_card_or_an_uninsured_holder_opens_nothing() {
        let insured = facts(VoucherStatus::Active, Some(AccountStatus::Active)).account;
        let frozen = Card { status: crate::domain::card::CardStatus::LostTemporary, ..card(true) };
        let error = decide_card_visit(&frozen, insured.clone(), &at_hospital(), Uuid::now_v7(), now()).unwrap_err();
        assert_eq!(error.reason(), Reason::CardStateConflict);
        let undelivered = Card { delivered: false, ..card(false) };
        let error = decide_card_visit(&undelivered, insured, &at_hospital(), Uuid::now_v7(), now()).unwrap_err();
        assert_eq!(error.reason(), Reason::CardStateConflict);
        for account in [None, facts(VoucherStatus::Active, Some(AccountStatus::Suspended)).account] {
            let error = decide_card_visit(&card(true), account, &at_hospital(), Uuid::now_v7(), now()).unwrap_err();
            assert_eq!(error.reason(), Reason::NotInsured);
        }
    }

    #[test]
    fn the_constants_the_sql_is_built_from_are_the_rule() {
        assert!(require_insured(Some(INSURED_ACCOUNT)).is_ok());
        for status in [AccountStatus::Suspended, AccountStatus::Closed] {
            assert_ne!(status, INSURED_ACCOUNT);
            assert!(require_insured(Some(status)).is_err());
        }
        assert_eq!(REDEEMABLE_VOUCHER, VoucherStatus::Active);
        assert_eq!(code_already_used().reason(), Reason::CodeAlreadyUsed);
    }
}
