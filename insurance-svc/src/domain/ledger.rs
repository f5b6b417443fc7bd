//! The individual account as a ledger: entry kinds, what may be credited, account status
//! changes, and the opaque page token of `ListAccountEntries`. Pure: no I/O.
//!
//! The balance on the account row is the running sum of its entries. It changes only together
//! with an entry, in one transaction, by a conditional update that cannot take it below zero
//! (and the schema refuses a negative balance or `balance_after` anyway).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason, validate};
use uuid::Uuid;

use super::account::AccountStatus;

/// Longest contribution reference.
pub const MAX_REFERENCE_LEN: usize = 64;

medins_common::text_enum! {
    /// What a ledger entry records.
    pub enum EntryKind {
        /// Money paid in (employer, person).
        Contribution => "CONTRIBUTION",
        /// Paid out for the holder's settled bill.
        Settlement => "SETTLEMENT",
        /// Paid out for a family member's bill (family mutual aid).
        FamilyAid => "FAMILY_AID",
        /// A correction by operations.
        Adjustment => "ADJUSTMENT",
        /// Undoes a settlement or family-aid entry.
        Reversal => "REVERSAL",
        /// The fund's share of an approved reimbursement claim, credited (`domain::claim`).
        ClaimReimbursement => "CLAIM_REIMBURSEMENT",
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry id.
    pub id: Uuid,
    /// Account.
    pub account_id: Uuid,
    /// Kind.
    pub kind: EntryKind,
    /// Signed cents: credits positive, debits negative.
    pub amount_cents: i64,
    /// Balance right after this entry.
    pub balance_after_cents: i64,
    /// Contribution reference, or the settlement id.
    pub reference: String,
    /// The settlement this entry pays or reverses.
    pub settlement_id: Option<Uuid>,
    /// When.
    pub created_at: NaiveDateTime,
    /// The partner that credited this contribution (contributions credited since the column exists).
    pub credited_by: Option<String>,
}

/// A validated contribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// Cents, 1 to `validate::CONTRIBUTION.max_cents`.
    pub amount_cents: i64,
    /// The contributor's reference, unique per account: the contribution's idempotency key.
    pub reference: String,
}

/// Validates a contribution: 1 cent to 1 000 000 yuan; a reference of 1-64 letters, digits,
/// `-` or `_`.
pub fn contribution(amount_cents: i64, reference: &str) -> ApiResult<Contribution> {
    let amount_cents = validate::CONTRIBUTION.check("amount_cents", amount_cents)?;
    let reference = reference.trim();
    let valid = !reference.is_empty()
        && reference.len() <= MAX_REFERENCE_LEN
        && reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "reference",
            "must be 1-64 letters, digits, '-' or '_'",
        ));
    }
    Ok(Contribution { amount_cents, reference: reference.to_owned() })
}

/// What a retried contribution (same account and reference) answers: the first entry when the
/// amount is the same, IDEMPOTENCY_KEY_MISMATCH otherwise. The reference is the contribution's
/// idempotency key, so the contract is the one partners already know for `idempotency-key`.
pub fn replay_contribution(first_amount_cents: i64, retry: &Contribution) -> ApiResult<()> {
    if first_amount_cents == retry.amount_cents {
        Ok(())
    } else {
        Err(ApiError::of(
            Reason::IdempotencyKeyMismatch,
            "this reference was already credited to the account with another amount",
        )
        .with_metadata("field", "reference"))
    }
}

/// Whether an account in `status` may receive a contribution: ACTIVE and SUSPENDED do (a
/// frozen account still receives its employer's money, it only pays nothing); CLOSED does not.
pub fn may_receive_credit(status: AccountStatus) -> ApiResult<()> {
    match status {
        AccountStatus::Active | AccountStatus::Suspended => Ok(()),
        AccountStatus::Closed => Err(account_closed()),
    }
}

/// Whether an account in `status` pays for bills (suspended and closed accounts pay nothing).
pub fn pays_bills(status: AccountStatus) -> bool {
    status == AccountStatus::Active
}

/// The status after SuspendAccount: ACTIVE or SUSPENDED becomes SUSPENDED (suspending twice
/// changes nothing, so a retry is harmless); CLOSED is refused.
pub fn suspend(status: AccountStatus) -> ApiResult<AccountStatus> {
    match status {
        AccountStatus::Active | AccountStatus::Suspended => Ok(AccountStatus::Suspended),
        AccountStatus::Closed => Err(account_closed()),
    }
}

/// The status after ResumeAccount: SUSPENDED or ACTIVE becomes ACTIVE; CLOSED is refused.
pub fn resume(status: AccountStatus) -> ApiResult<AccountStatus> {
    match status {
        AccountStatus::Active | AccountStatus::Suspended => Ok(AccountStatus::Active),
        AccountStatus::Closed => Err(account_closed()),
    }
}

fn account_closed() -> ApiError {
    ApiError::of(Reason::AccountClosed, "the account is closed")
}

/// Validates an operations reason (`validate::SUSPENSION_REASON`: at most 200 characters, no
/// control characters); returns it trimmed.
pub fn ops_reason(reason: &str) -> ApiResult<&str> {
    validate::SUSPENSION_REASON.check("reason", reason)?;
    Ok(reason.trim())
}

/// The balance after adding `delta`, if it stays at or above zero (and does not overflow).
pub fn balance_after(balance_cents: i64, delta_cents: i64) -> Option<i64> {
    balance_cents.checked_add(delta_cents).filter(|after| *after >= 0)
}

/// Posting `amount_cents` (credits positive, debits negative) on a balance of `balance_cents`:
/// the balance after it ([`balance_after`]), or FAILED_PRECONDITION / INSUFFICIENT_BALANCE for
/// a debit the balance does not cover. The one rule of every posting: the batch computes its
/// entries with it, and `store::ledger::post_entry`'s conditional update is its SQL form (it
/// answers a non-match with [`insufficient_balance`]).
pub fn post(balance_cents: i64, amount_cents: i64) -> ApiResult<i64> {
    balance_after(balance_cents, amount_cents).ok_or_else(insufficient_balance)
}

/// The refusal of a debit the balance does not cover.
pub fn insufficient_balance() -> ApiError {
    ApiError::failed_precondition(Reason::InsufficientBalance, "the account balance does not cover this debit")
}

/// The page size of a list request (`validate::LEDGER_ENTRIES`): 0 means 20; 1-100 as asked.
pub fn page_size(requested: i32) -> ApiResult<usize> {
    validate::LEDGER_ENTRIES.check("page_size", requested)
}

/// Where a page of entries (newest first) continues: strictly older than this entry, ordered by
/// (created_at, id). Keyset paging: entries inserted while a client pages are newer than every
/// cursor it holds, so pages never repeat or skip an entry that existed when paging began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryCursor {
    /// The account the listing is of (a token is refused for another account).
    pub account_id: Uuid,
    /// The last entry's time.
    pub created_at: NaiveDateTime,
    /// The last entry's id.
    pub entry_id: Uuid,
}

const CURSOR_VERSION: &str = "e1";

impl EntryCursor {
    /// The opaque token: base64url of `e1.<account>.<microseconds>.<entry>`.
    pub fn encode(&self) -> String {
        let micros = self.created_at.and_utc().timestamp_micros();
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}.{}.{micros}.{}", self.account_id, self.entry_id))
    }

    /// Parses a token of a listing of `account_id`: INVALID_ARGUMENT naming `page_token` when it
    /// is not one we issued for this account.
    pub fn decode(token: &str, account_id: Uuid) -> ApiResult<EntryCursor> {
        let invalid = || ApiError::invalid_field(Reason::InvalidArgument, "page_token", "not a token of this listing");
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.split('.');
        let (Some(CURSOR_VERSION), Some(account), Some(micros), Some(entry), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let account = Uuid::parse_str(account).map_err(|_| invalid())?;
        if account != account_id {
            return Err(invalid());
        }
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?.naive_utc();
        let entry_id = Uuid::parse_str(entry).map_err(|_| invalid())?;
        Ok(EntryCursor { account_id, created_at, entry_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_are_one_cent_to_a_million_yuan_with_a_plain_reference() {
        assert!(contribution(1, "PAY-2026-11_01").is_ok());
        assert!(contribution(validate::CONTRIBUTION.max_cents, "r").is_ok());
        for amount in [0, -5, validate::CONTRIBUTION.max_cents + 1] {
            assert_eq!(contribution(amount, "r").unwrap_err().reason(), Reason::InvalidArgument, "{amount}");
        }
        for reference in ["", " ", "a b", "工资", &"r".repeat(65), "a/b"] {
            assert!(contribution(100, reference).is_err(), "{reference:?}");
        }
        assert_eq!(contribution(100, " r-1 ").unwrap().reference, "r-1");
    }

    #[test]
    fn a_reference_replayed_with_another_amount_is_an_idempotency_key_mismatch() {
        let retry = contribution(500, "r").unwrap();
        assert!(replay_contribution(500, &retry).is_ok());
        let error = replay_contribution(400, &retry).unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert_eq!(error.reason(), Reason::IdempotencyKeyMismatch);
    }

    #[test]
    fn closed_accounts_take_no_credit_and_cannot_be_suspended_or_resumed() {
        assert!(may_receive_credit(AccountStatus::Active).is_ok());
        assert!(may_receive_credit(AccountStatus::Suspended).is_ok());
        assert_eq!(may_receive_credit(AccountStatus::Closed).unwrap_err().reason(), Reason::AccountClosed);
        assert_eq!(suspend(AccountStatus::Active).unwrap(), AccountStatus::Suspended);
        assert_eq!(suspend(AccountStatus::Suspended).unwrap(), AccountStatus::Suspended);
        assert_eq!(resume(AccountStatus::Suspended).unwrap(), AccountStatus::Active);
        assert_eq!(resume(AccountStatus::Active).unwrap(), AccountStatus::Active);
        assert!(suspend(AccountStatus::Closed).is_err());
        assert!(resume(AccountStatus::Closed).is_err());
        assert!(pays_bills(AccountStatus::Active));
        assert!(!pays_bills(AccountStatus::Suspended));
        assert!(!pays_bills(AccountStatus::Closed));
    }

    #[test]
    fn balances_never_go_below_zero() {
        assert_eq!(balance_after(100, -100), Some(0));
        assert_eq!(balance_after(100, -101), None);
        assert_eq!(balance_after(i64::MAX, 1), None);
        assert_eq!(balance_after(0, 5), Some(5));
        assert_eq!(post(100, -100).unwrap(), 0);
        assert_eq!(post(100, -101).unwrap_err().reason(), Reason::InsufficientBalance);
    }

    #[test]
    fn page_sizes_default_to_twenty_and_stop_at_a_hundred() {
        assert_eq!(page_size(0).unwrap(), 20);
        assert_eq!(page_size(1).unwrap(), 1);
        assert_eq!(page_size(100).unwrap(), 100);
        assert!(page_size(101).is_err());
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_belong_to_one_account() {
        let account_id = Uuid::now_v7();
        let cursor = EntryCursor {
            account_id,
            created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap().naive_utc(),
            entry_id: Uuid::now_v7(),
        };
        let token = cursor.encode();
        assert_eq!(EntryCursor::decode(&token, account_id).unwrap(), cursor);
        assert!(EntryCursor::decode(&token, Uuid::now_v7()).is_err(), "another account's token");
        for bad in ["", "x", "ZTEuYS5iLmM", &token[..token.len() - 2]] {
            assert!(EntryCursor::decode(bad, account_id).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_kinds_round_trip() {
        for &kind in EntryKind::ALL {
            assert_eq!(EntryKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EntryKind::parse("GIFT"), None);
    }
}
