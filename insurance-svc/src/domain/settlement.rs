//! Settlement rules: the per-scheme policy table, how a bill is split between the pooling
//! fund, the individual account and self-pay, retries and reversals, and annual expenses.
//! Pure: no I/O.
//!
//! The split of one bill, on the person's year-to-date totals for its category:
//!
//! ```text
//! deductible_part = min(total, max(0, deductible - deductible_ytd))
//! fund            = min(floor((total - deductible_part) * ratio_bp / 10 000), max(0, cap - fund_ytd))
//! rest            = total - fund
//! account         = min(rest, balance)   when paying from the holder's ACTIVE account, else 0
//! self            = rest - account
//! ```
//!
//! so fund + account + self = total, every part >= 0, and the balance never goes negative.

use std::{collections::BTreeMap, path::Path};

use chrono::{Datelike, NaiveDateTime};
use medins_common::{
    ApiError, ApiResult, Reason,
    clock::china_standard_time,
    error::require_uuid,
    validate::{Amount, TextField},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    account::{AccountStatus, Scheme},
    family::{BindingStatus, Relationship},
    ledger::EntryKind,
};

/// Largest bill: 1 000 000 yuan.
pub const MAX_BILL_CENTS: i64 = 100_000_000;
/// Longest items summary.
pub const MAX_ITEMS_SUMMARY_CHARS: usize = 500;
/// A bill's total (`total_cents`): 1 cent to [`MAX_BILL_CENTS`].
pub const BILL_TOTAL: Amount = Amount { max_cents: MAX_BILL_CENTS };
/// A bill's items summary: optional, at most [`MAX_ITEMS_SUMMARY_CHARS`].
pub const ITEMS_SUMMARY: TextField = TextField { max_chars: MAX_ITEMS_SUMMARY_CHARS, required: false };
/// Basis points in 100 %.
pub const FULL_RATIO_BP: u32 = 10_000;

medins_common::text_enum! {
    /// What a bill was for; each category has its own deductible and cap.
    #[derive(PartialOrd, Ord)]
    pub enum Category {
        /// Outpatient visit.
        Outpatient => "OUTPATIENT",
        /// Inpatient stay.
        Inpatient => "INPATIENT",
        /// Pharmacy purchase.
        Pharmacy => "PHARMACY",
    }
}

medins_common::text_enum! {
    /// Which individual account pays what the fund does not.
    pub enum PayFrom {
        /// The holder's own account, up to its balance, then self-pay.
        HolderAccount => "HOLDER_ACCOUNT",
        /// A family binder's account (family mutual aid): needs that binder's authorisation.
        BinderAccount => "BINDER_ACCOUNT",
        /// No individual account: the rest is self-pay.
        SelfPay => "SELF",
    }
}

medins_common::text_enum! {
    /// Whether a settlement stands.
    pub enum SettlementStatus {
        /// Settled: counts in year-to-date totals and annual expenses.
        Settled => "SETTLED",
        /// Reversed by operations: counts nowhere.
        Reversed => "REVERSED",
    }
}

/// The fund's terms for one scheme and category, per calendar year. Money in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What the person pays each year before the fund pays anything.
    pub deductible_cents: i64,
    /// Share of the bill above the deductible the fund pays, in basis points (7000 = 70 %).
    pub reimbursement_ratio_bp: u32,
    /// Most the fund pays in a year.
    pub annual_cap_cents: i64,
}

impl Policy {
    fn validate(&self, at: &str) -> Result<(), PolicyError> {
        let bad = |what: &str| Err(PolicyError::Invalid(format!("{at}: {what}")));
        if self.deductible_cents < 0 {
            return bad("deductible_cents must be >= 0");
        }
        if self.reimbursement_ratio_bp > FULL_RATIO_BP {
            return bad("reimbursement_ratio_bp must be 0 to 10000");
        }
        if self.annual_cap_cents < 0 {
            return bad("annual_cap_cents must be >= 0");
        }
        Ok(())
    }
}

/// A policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Unreadable file.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (missing scheme or category, unknown key, wrong type).
    #[error("policy file: {0}")]
    Parse(String),
    /// A value out of range.
    #[error("policy file: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemePolicies {
    #[serde(rename = "OUTPATIENT")]
    outpatient: Policy,
    #[serde(rename = "INPATIENT")]
    inpatient: Policy,
    #[serde(rename = "PHARMACY")]
    pharmacy: Policy,
}

/// Family aid (docs/architecture.md#visits-and-settlement): whose individual account may pay the
/// bills of which bound relatives. National policy lets an EMPLOYEE scheme's individual account pay
/// for the holder's spouse, parents and children (whatever their own scheme); RESIDENT schemes have
/// no individual account to share. Each scheme lists the relationships (as bound: the member's
/// relationship to the binder) its accounts may pay for; an empty list pays for no one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyAidPolicy {
    employee: Vec<Relationship>,
    resident: Vec<Relationship>,
}

impl FamilyAidPolicy {
    /// The relationships a `scheme`'s individual accounts may pay for.
    pub fn payable_for(&self, scheme: Scheme) -> &[Relationship] {
        match scheme {
            Scheme::Employee => &self.employee,
            Scheme::Resident => &self.resident,
        }
    }
}

/// `[FAMILY_AID]` as written: both schemes required, relationships by their stored names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyAidFile {
    #[serde(rename = "EMPLOYEE")]
    employee: Vec<String>,
    #[serde(rename = "RESIDENT")]
    resident: Vec<String>,
}

impl FamilyAidFile {
    fn validate(self) -> Result<FamilyAidPolicy, PolicyError> {
        let parse = |scheme: Scheme, names: Vec<String>| {
            let mut relationships = Vec::with_capacity(names.len());
            for name in names {
                let at = format!("FAMILY_AID.{}", scheme.as_str());
                let relationship = Relationship::parse(&name)
                    .ok_or_else(|| PolicyError::Invalid(format!("{at}: unknown relationship {name:?}")))?;
                if relationships.contains(&relationship) {
                    return Err(PolicyError::Invalid(format!("{at}: {name} listed twice")));
                }
                relationships.push(relationship);
            }
            Ok(relationships)
        };
        Ok(FamilyAidPolicy {
            employee: parse(Scheme::Employee, self.employee)?,
            resident: parse(Scheme::Resident, self.resident)?,
        })
    }
}

/// The policy file as written (see [`PolicyTable`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(rename = "EMPLOYEE")]
    employee: SchemePolicies,
    #[serde(rename = "RESIDENT")]
    resident: SchemePolicies,
    #[serde(rename = "FAMILY_AID")]
    family_aid: FamilyAidFile,
}

/// The policy table: one [`Policy`] for every scheme x category, and the [`FamilyAidPolicy`].
///
/// The file (`--policy-file`) is TOML with one table per scheme and category, all six present,
/// and a `[FAMILY_AID]` table listing both schemes (a missing one is an error at start, never a
/// silent default):
///
/// ```toml
/// [EMPLOYEE.OUTPATIENT]
/// deductible_cents = 180000        # 1 800 yuan a year
/// reimbursement_ratio_bp = 7000    # the fund pays 70 % above the deductible
/// annual_cap_cents = 2000000       # and at most 20 000 yuan a year
/// # ... EMPLOYEE.INPATIENT, EMPLOYEE.PHARMACY, RESIDENT.OUTPATIENT, RESIDENT.INPATIENT,
/// # RESIDENT.PHARMACY
///
/// [FAMILY_AID]                     # whose individual account may pay for which relatives
/// EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]
/// RESIDENT = []
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTable {
    employee: SchemePolicies,
    resident: SchemePolicies,
    family_aid: FamilyAidPolicy,
}

/// The built-in policy (`medins up` and tests); production deployments load their own file.
pub const DEFAULT_POLICY_TOML: &str = r#"
# Built-in settlement policy: money in cents (fen), ratios in basis points (7000 = 70 %).
[EMPLOYEE.OUTPATIENT]
deductible_cents = 180000
reimbursement_ratio_bp = 7000
annual_cap_cents = 2000000

[EMPLOYEE.INPATIENT]
deductible_cents = 130000
reimbursement_ratio_bp = 8500
annual_cap_cents = 50000000

[EMPLOYEE.PHARMACY]
deductible_cents = 100000
reimbursement_ratio_bp = 5000
annual_cap_cents = 500000

[RESIDENT.OUTPATIENT]
deductible_cents = 10000
reimbursement_ratio_bp = 5000
annual_cap_cents = 300000

[RESIDENT.INPATIENT]
deductible_cents = 80000
reimbursement_ratio_bp = 7000
annual_cap_cents = 25000000

[RESIDENT.PHARMACY]
deductible_cents = 10000
reimbursement_ratio_bp = 5000
annual_cap_cents = 200000

# Family aid: whose individual account may pay the bills of which bound relatives (the
# member's relationship to the binder). National policy: EMPLOYEE individual accounts, for
# the spouse, parents and children; RESIDENT schemes have no individual account to share.
[FAMILY_AID]
EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]
RESIDENT = []
"#;

impl PolicyTable {
    /// The built-in policy.
    pub fn builtin() -> PolicyTable {
        PolicyTable::from_toml_str(DEFAULT_POLICY_TOML).expect("the built-in policy is valid")
    }

    /// Parses and validates a policy file's text.
    pub fn from_toml_str(text: &str) -> Result<PolicyTable, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse(e.message().to_owned()))?;
        let table =
            PolicyTable { employee: file.employee, resident: file.resident, family_aid: file.family_aid.validate()? };
        for scheme in [Scheme::Employee, Scheme::Resident] {
            for &category in Category::ALL {
                table.policy(scheme, category).validate(&format!("{}.{}", scheme.as_str(), category.as_str()))?;
            }
        }
        Ok(table)
    }

    /// Loads a policy file.
    pub fn load(path: &Path) -> Result<PolicyTable, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.display().to_string(), source })?;
        PolicyTable::from_toml_str(&text)
    }

    /// Whose individual accounts may pay for which relatives.
    pub fn family_aid(&self) -> &FamilyAidPolicy {
        &self.family_aid
    }

    /// The policy of a scheme and category.
    pub fn policy(&self, scheme: Scheme, category: Category) -> Policy {
        let per_scheme = match scheme {
            Scheme::Employee => &self.employee,
            Scheme::Resident => &self.resident,
        };
        match category {
            Category::Outpatient => per_scheme.outpatient,
            Category::Inpatient => per_scheme.inpatient,
            Category::Pharmacy => per_scheme.pharmacy,
        }
    }
}

/// A person's totals so far in one year and category (standing settlements only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct YearToDate {
    /// Billed.
    pub total_cents: i64,
    /// Paid by the fund.
    pub fund_cents: i64,
    /// Deductible consumed.
    pub deductible_cents: i64,
}

impl YearToDate {
    /// The totals after `split` is settled.
    pub fn plus(self, split: &Split) -> YearToDate {
        YearToDate {
            total_cents: self.total_cents + split.total_cents(),
            fund_cents: self.fund_cents + split.fund_cents,
            deductible_cents: self.deductible_cents + split.deductible_cents,
        }
    }
}

/// How one bill is paid. `fund + account + self = total`; `deductible_cents` is the part of
/// the total that went to the deductible (paid by account or self, never by the fund).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Deductible consumed by this bill.
    pub deductible_cents: i64,
    /// Paid by the pooling fund.
    pub fund_cents: i64,
    /// Paid from the individual account.
    pub account_cents: i64,
    /// Paid by the person.
    pub self_cents: i64,
}

impl Split {
    /// The bill total.
    pub fn total_cents(&self) -> i64 {
        self.fund_cents + self.account_cents + self.self_cents
    }
}

/// Validated terms of a Settle request; a retry must repeat them exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleTerms {
    /// Bill total, 1 cent to [`MAX_BILL_CENTS`].
    pub total_cents: i64,
    /// Category.
    pub category: Category,
    /// Who pays the rest.
    pub pay_from: PayFrom,
    /// Items, at most 500 characters.
    pub items_summary: String,
}

/// Validates the terms of a Settle request.
pub fn settle_terms(
    total_cents: i64,
    category: Category,
    pay_from: PayFrom,
    items_summary: &str,
) -> ApiResult<SettleTerms> {
    let total_cents = BILL_TOTAL.check("total_cents", total_cents)?;
    let items_summary = ITEMS_SUMMARY.check("items_summary", items_summary)?;
    Ok(SettleTerms { total_cents, category, pay_from, items_summary })
}

/// What a Settle of an already settled visit answers: the first settlement when the terms are
/// the same (a retry), FAILED_PRECONDITION / VISIT_ALREADY_SETTLED when they differ (a visit is
/// settled once; a correction is a reversal and a new visit).
pub fn replay_settlement(first: &SettleTerms, retry: &SettleTerms) -> ApiResult<()> {
    if first == retry {
        Ok(())
    } else {
        Err(ApiError::failed_precondition(
            Reason::VisitAlreadySettled,
            "this visit was already settled with other terms",
        ))
    }
}

/// How much the chosen account may contribute to a bill: its balance when it is ACTIVE (the
/// holder's, or the binder's under family aid); nothing from a SUSPENDED or CLOSED account (the
/// fund share still applies, the rest is self-pay) or for SELF.
pub fn account_available(pay_from: PayFrom, status: AccountStatus, balance_cents: i64) -> i64 {
    match pay_from {
        PayFrom::HolderAccount | PayFrom::BinderAccount if super::ledger::pays_bills(status) => balance_cents.max(0),
        PayFrom::HolderAccount | PayFrom::BinderAccount | PayFrom::SelfPay => 0,
    }
}

/// The binder named by a Settle request: required with BINDER_ACCOUNT, refused with the other
/// choices (a binder who pays nothing would only confuse the record).
pub fn binder_of(pay_from: PayFrom, binder_person_id: &str) -> ApiResult<Option<Uuid>> {
    match (pay_from, binder_person_id.is_empty()) {
        (PayFrom::BinderAccount, _) => require_uuid("binder_person_id", binder_person_id).map(Some),
        (_, true) => Ok(None),
        (_, false) => Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "binder_person_id",
            "only PAY_FROM_BINDER_ACCOUNT names a binder",
        )),
    }
}

/// Family aid is authorised when the binder holds an ACTIVE binding of the holder with aid on:
/// FAILED_PRECONDITION / FAMILY_AID_NOT_AUTHORISED otherwise.
pub fn require_family_aid(binding: Option<(BindingStatus, bool)>) -> ApiResult<()> {
    match binding {
        Some((BindingStatus::Active, true)) => Ok(()),
        _ => Err(ApiError::failed_precondition(
            Reason::FamilyAidNotAuthorised,
            "this binder has not authorised family aid for this holder: pay from the holder's account or SELF",
        )),
    }
}

/// Whether the individual account of a binder insured under `payer_scheme` (`None`: the
/// binder has no open account) may pay the bills of a member bound as `relationship`, as
/// `policy` says. The one decision behind switching family aid on (SetFamilyAid) and paying
/// from a binder's account (Settle with PAY_FROM_BINDER_ACCOUNT), so a policy change also stops
/// aid switched on before it. FAILED_PRECONDITION / FAMILY_AID_NOT_ELIGIBLE otherwise.
pub fn require_family_aid_eligible(
    policy: &FamilyAidPolicy,
    payer_scheme: Option<Scheme>,
    relationship: Relationship,
) -> ApiResult<()> {
    let Some(scheme) = payer_scheme else {
        return Err(ApiError::failed_precondition(
            Reason::FamilyAidNotEligible,
            "the binder has no open individual account to pay from",
        ));
    };
    if policy.payable_for(scheme).contains(&relationship) {
        return Ok(());
    }
    Err(ApiError::failed_precondition(
        Reason::FamilyAidNotEligible,
        format!(
            "family aid policy: {} individual accounts do not pay for a {} (payable for: {})",
            scheme.as_str(),
            relationship.as_str(),
            match policy.payable_for(scheme) {
                [] => "no one".to_owned(),
                listed => listed.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            }
        ),
    )
    .with_metadata("scheme", scheme.as_str())
    .with_metadata("relationship", relationship.as_str()))
}

/// Splits a bill of `total_cents` under `policy` on the year-to-date totals `ytd`, taking at
/// most `account_available_cents` from the individual account (see the module doc).
pub fn split(total_cents: i64, policy: &Policy, ytd: YearToDate, account_available_cents: i64) -> Split {
    let total = total_cents.max(0);
    let deductible_left = (policy.deductible_cents - ytd.deductible_cents).max(0);
    let deductible_part = total.min(deductible_left);
    let eligible = total - deductible_part;
    // i128: a bill of 10^8 cents times 10^4 basis points fits i64, but a policy file need not
    // be that kind; floor to whole cents (the person, not the fund, keeps the fraction).
    let by_ratio =
        (i128::from(eligible) * i128::from(policy.reimbursement_ratio_bp) / i128::from(FULL_RATIO_BP)) as i64;
    let cap_left = (policy.annual_cap_cents - ytd.fund_cents).max(0);
    let fund = by_ratio.min(cap_left);
    let rest = total - fund;
    let account = rest.min(account_available_cents.max(0));
    Split { deductible_cents: deductible_part, fund_cents: fund, account_cents: account, self_cents: rest - account }
}

/// Whether a settlement may be reversed: once only (FAILED_PRECONDITION /
/// SETTLEMENT_ALREADY_REVERSED the second time).
pub fn ensure_reversible(status: SettlementStatus) -> ApiResult<()> {
    match status {
        SettlementStatus::Settled => Ok(()),
        SettlementStatus::Reversed => Err(ApiError::failed_precondition(
            Reason::SettlementAlreadyReversed,
            "this settlement was already reversed",
        )),
    }
}

/// The calendar year (China Standard Time) a settlement at `settled_at` (UTC) counts in.
pub fn settlement_year(settled_at: NaiveDateTime) -> i32 {
    settled_at.and_utc().with_timezone(&china_standard_time()).year()
}

/// The calendar month 1-12 (China Standard Time) of `settled_at` (UTC).
pub fn settlement_month(settled_at: NaiveDateTime) -> u32 {
    settled_at.and_utc().with_timezone(&china_standard_time()).month()
}

/// Validates the year of GetAnnualExpenses.
pub fn expenses_year(year: i32) -> ApiResult<i32> {
    if (1900..=2999).contains(&year) {
        Ok(year)
    } else {
        Err(ApiError::invalid_field(Reason::InvalidArgument, "year", "must be a calendar year such as 2026"))
    }
}

/// A settled (or reversed) bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Settlement id.
    pub id: Uuid,
    /// The visit; none for a reimbursement claim's settlement (`domain::claim`).
    pub visit_id: Option<Uuid>,
    /// The patient.
    pub person_id: Uuid,
    /// Category.
    pub category: Category,
    /// Who paid the rest.
    pub pay_from: PayFrom,
    /// The account charged, when it paid anything.
    pub charged_account_id: Option<Uuid>,
    /// Total.
    pub total_cents: i64,
    /// Fund share.
    pub fund_cents: i64,
    /// Account share.
    pub account_cents: i64,
    /// Self-pay.
    pub self_cents: i64,
    /// Deductible consumed by this bill.
    pub deductible_cents: i64,
    /// Calendar year (China Standard Time) it counts in.
    pub year: i32,
    /// Items summary.
    pub items_summary: String,
    /// Status.
    pub status: SettlementStatus,
    /// When settled.
    pub settled_at: NaiveDateTime,
    /// When reversed.
    pub reversed_at: Option<NaiveDateTime>,
}

impl Settlement {
    /// The terms it was settled with (a retry must repeat them).
    pub fn terms(&self) -> SettleTerms {
        SettleTerms {
            total_cents: self.total_cents,
            category: self.category,
            pay_from: self.pay_from,
            items_summary: self.items_summary.clone(),
        }
    }

    /// How it was paid.
    pub fn split(&self) -> Split {
        Split {
            deductible_cents: self.deductible_cents,
            fund_cents: self.fund_cents,
            account_cents: self.account_cents,
            self_cents: self.self_cents,
        }
    }
}

/// A Settle call: the visit, the partner settling it, the validated bill and the time.
#[derive(Debug, Clone)]
pub struct SettleCall {
    /// The visit.
    pub visit_id: Uuid,
    /// The partner settling it.
    pub partner_id: String,
    /// The bill.
    pub terms: SettleTerms,
    /// When (UTC).
    pub now: NaiveDateTime,
}

impl SettleCall {
    /// The calendar year the bill counts in.
    pub fn year(&self) -> i32 {
        settlement_year(self.now)
    }
}

/// An individual account as a settlement reads it (locked when it may be charged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountFacts {
    /// Account id.
    pub id: Uuid,
    /// Its scheme.
    pub scheme: Scheme,
    /// Its status.
    pub status: AccountStatus,
    /// Its balance.
    pub balance_cents: i64,
}

/// The binding a family-aid settlement relies on: the binder's ACTIVE binding of the holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AidBinding {
    /// The binding's status.
    pub status: BindingStatus,
    /// Whether the binder switched family aid on.
    pub family_aid: bool,
    /// The holder's relationship to the binder.
    pub relationship: Relationship,
}

/// What a family-aid settlement (PAY_FROM_BINDER_ACCOUNT) reads about the binder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyAidFacts {
    /// The binder's ACTIVE binding of the holder, if any.
    pub binding: Option<AidBinding>,
    /// The binder's open individual account, if any (locked).
    pub binder_account: Option<AccountFacts>,
}

/// Everything the settlement of one call is decided on, read in the settling transaction.
#[derive(Debug, Clone)]
pub struct SettleFacts<'a> {
    /// The call.
    pub call: &'a SettleCall,
    /// The partner that opened the visit.
    pub opened_by: &'a str,
    /// The visit's holder.
    pub person_id: Uuid,
    /// The visit's settlement, when it was settled before (a retry, or other terms).
    pub earlier: Option<Settlement>,
    /// The holder's account (the one insured when the visit was opened).
    pub holder_account: AccountFacts,
    /// With PAY_FROM_BINDER_ACCOUNT: the binder's binding and account.
    pub family_aid: Option<FamilyAidFacts>,
    /// The holder's totals so far in the bill's year and category.
    pub year_to_date: YearToDate,
}

/// The ledger entry of a settlement's account share, with the balance after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debit {
    /// The settlement it pays.
    pub settlement_id: Uuid,
    /// The account charged.
    pub account_id: Uuid,
    /// SETTLEMENT, or FAMILY_AID from a binder's account.
    pub kind: EntryKind,
    /// Signed: negative.
    pub amount_cents: i64,
    /// The account's balance after it ([`super::ledger::post`] on the read balance).
    pub balance_after_cents: i64,
    /// When.
    pub created_at: NaiveDateTime,
}

/// A new settlement to write: its row, the debit of the account that pays a share, and the
/// holder's totals after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSettlement {
    /// The settlement.
    pub settlement: Settlement,
    /// The account's debit, when it pays anything.
    pub debit: Option<Debit>,
    /// The holder's year-to-date totals (the bill's year and category) after it.
    pub year_to_date: YearToDate,
}

/// What a Settle call comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The visit was settled before with the same terms: that settlement, nothing to write.
    Replay(Settlement),
    /// A new settlement to write.
    Settle(NewSettlement),
}

/// Only the partner that opened a visit settles it: PERMISSION_DENIED / VISIT_PARTNER_MISMATCH.
pub fn require_opening_partner(opened_by: &str, partner_id: &str) -> ApiResult<()> {
    if opened_by == partner_id {
        return Ok(());
    }
    Err(ApiError::of(Reason::VisitPartnerMismatch, "only the partner that opened a visit may settle it"))
}

/// The account that pays a family-aid bill: the binder's, when the binder holds an ACTIVE
/// binding of the holder with aid on ([`require_family_aid`]), has an open account (else
/// FAMILY_AID_NOT_AUTHORISED) and the policy lets that account's scheme pay for the
/// relationship ([`require_family_aid_eligible`]).
fn binder_pays(policy: &FamilyAidPolicy, aid: FamilyAidFacts) -> ApiResult<AccountFacts> {
    require_family_aid(aid.binding.map(|b| (b.status, b.family_aid)))?;
    let account = aid.binder_account.ok_or_else(|| {
        ApiError::failed_precondition(Reason::FamilyAidNotAuthorised, "the binder has no open individual account")
    })?;
    let relationship =
        aid.binding.map(|b| b.relationship).ok_or_else(|| ApiError::internal("family aid: no binding"))?;
    require_family_aid_eligible(policy, Some(account.scheme), relationship)?;
    Ok(account)
}

/// Settles one call on its facts, the one decision of the single path and the PostgreSQL batch
/// alike: only the opening partner settles; a settled visit answers a retry with the same terms
/// with its settlement ([`replay_settlement`]); family aid is authorised and the binder's
/// account pays instead of the holder's; the bill is [`split`] under the holder's scheme and
/// the bill's category, the paying account contributing what [`account_available`] allows; its
/// share is debited ([`super::ledger::post`]) and the totals move by the split.
pub fn decide(policy: &PolicyTable, facts: SettleFacts<'_>) -> ApiResult<Decision> {
    let call = facts.call;
    require_opening_partner(facts.opened_by, &call.partner_id)?;
    if let Some(earlier) = facts.earlier {
        replay_settlement(&earlier.terms(), &call.terms)?;
        return Ok(Decision::Replay(earlier));
    }
    let (payer, kind) = match facts.family_aid {
        Some(aid) => (binder_pays(policy.family_aid(), aid)?, EntryKind::FamilyAid),
        None => (facts.holder_account, EntryKind::Settlement),
    };
    let terms = &call.terms;
    let available = account_available(terms.pay_from, payer.status, payer.balance_cents);
    let policy = policy.policy(facts.holder_account.scheme, terms.category);
    let split = split(terms.total_cents, &policy, facts.year_to_date, available);
    let settlement = Settlement {
        id: Uuid::now_v7(),
        visit_id: Some(call.visit_id),
        person_id: facts.person_id,
        category: terms.category,
        pay_from: terms.pay_from,
        charged_account_id: (split.account_cents > 0).then_some(payer.id),
        total_cents: terms.total_cents,
        fund_cents: split.fund_cents,
        account_cents: split.account_cents,
        self_cents: split.self_cents,
        deductible_cents: split.deductible_cents,
        year: call.year(),
        items_summary: terms.items_summary.clone(),
        status: SettlementStatus::Settled,
        settled_at: call.now,
        reversed_at: None,
    };
    let debit = match settlement.charged_account_id {
        Some(account_id) => Some(Debit {
            settlement_id: settlement.id,
            account_id,
            kind,
            amount_cents: -split.account_cents,
            balance_after_cents: super::ledger::post(payer.balance_cents, -split.account_cents)?,
            created_at: call.now,
        }),
        None => None,
    };
    Ok(Decision::Settle(NewSettlement { settlement, debit, year_to_date: facts.year_to_date.plus(&split) }))
}

/// The holder's totals after `settlement` is reversed.
pub fn year_to_date_after_reversal(ytd: YearToDate, settlement: &Settlement) -> YearToDate {
    let split = settlement.split();
    YearToDate {
        total_cents: ytd.total_cents - split.total_cents(),
        fund_cents: ytd.fund_cents - split.fund_cents,
        deductible_cents: ytd.deductible_cents - split.deductible_cents,
    }
}

/// One standing settlement, as annual expenses see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpenseLine {
    /// Category.
    pub category: Category,
    /// When (UTC).
    pub settled_at: NaiveDateTime,
    /// Billed.
    pub total_cents: i64,
    /// Fund share.
    pub fund_cents: i64,
    /// Account share.
    pub account_cents: i64,
    /// Self-pay.
    pub self_cents: i64,
}

/// Sums of expense lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpenseTotals {
    /// Billed.
    pub total_cents: i64,
    /// Fund.
    pub fund_cents: i64,
    /// Individual accounts.
    pub account_cents: i64,
    /// Self-pay.
    pub self_cents: i64,
    /// How many settlements.
    pub settlements: i32,
}

impl ExpenseTotals {
    fn add(&mut self, line: &ExpenseLine) {
        self.total_cents += line.total_cents;
        self.fund_cents += line.fund_cents;
        self.account_cents += line.account_cents;
        self.self_cents += line.self_cents;
        self.settlements += 1;
    }
}

/// A person's expenses in one year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnualExpenses {
    /// The whole year.
    pub totals: ExpenseTotals,
    /// Every category, in [`Category::ALL`] order (zero when none).
    pub by_category: Vec<(Category, ExpenseTotals)>,
    /// Months (1-12, China Standard Time) with at least one settlement, ascending.
    pub by_month: Vec<(u32, ExpenseTotals)>,
}

/// Sums standing settlements of one year by category and by month (China Standard Time).
pub fn annual_expenses(lines: &[ExpenseLine]) -> AnnualExpenses {
    let mut totals = ExpenseTotals::default();
    let mut by_category: Vec<(Category, ExpenseTotals)> =
        Category::ALL.iter().map(|&c| (c, ExpenseTotals::default())).collect();
    let mut by_month: BTreeMap<u32, ExpenseTotals> = BTreeMap::new();
    for line in lines {
        totals.add(line);
        if let Some((_, t)) = by_category.iter_mut().find(|(c, _)| *c == line.category) {
            t.add(line);
        }
        by_month.entry(settlement_month(line.settled_at)).or_default().add(line);
    }
    AnnualExpenses { totals, by_category, by_month: by_month.into_iter().collect() }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::*;

    fn policy(deductible_cents: i64, reimbursement_ratio_bp: u32, annual_cap_cents: i64) -> Policy {
        Policy { deductible_cents, reimbursement_ratio_bp, annual_cap_cents }
    }

    #[test]
    fn the_deductible_is_paid_first_then_the_fund_pays_its_ratio() {
        let p = policy(1_000, 7_000, 1_000_000);
        // Inside the deductible: nothing from the fund.
        let s = split(600, &p, YearToDate::default(), 0);
        assert_eq!(s, Split { deductible_cents: 600, fund_cents: 0, account_cents: 0, self_cents: 600 });
        // Crossing it: 400 deductible, 70 % of the other 600.
        let ytd = YearToDate::default().plus(&s);
        let s = split(1_000, &p, ytd, 10_000);
        assert_eq!(s, Split { deductible_cents: 400, fund_cents: 420, account_cents: 580, self_cents: 0 });
    }

    #[test]
    fn the_fund_stops_at_the_annual_cap_and_fractions_of_a_cent_go_to_the_person() {
        let p = policy(0, 3_333, 500);
        let s = split(100, &p, YearToDate::default(), 0);
        assert_eq!(s.fund_cents, 33, "33.33 floors to 33");
        let ytd = YearToDate { total_cents: 1_000, fund_cents: 480, deductible_cents: 0 };
        let s = split(1_000, &p, ytd, 0);
        assert_eq!(s.fund_cents, 20, "only 20 left under the cap");
        assert_eq!(s.self_cents, 980);
        let over = YearToDate { fund_cents: 900, ..ytd };
        assert_eq!(split(1_000, &p, over, 0).fund_cents, 0, "a lowered cap pays nothing, never negative");
    }

    #[test]
    fn the_account_pays_up_to_its_balance_then_self_pay() {
        let p = policy(0, 5_000, 1_000_000);
        let s = split(1_000, &p, YearToDate::default(), 300);
        assert_eq!((s.fund_cents, s.account_cents, s.self_cents), (500, 300, 200));
    }

    #[test]
    fn suspended_accounts_and_self_pay_take_nothing() {
        for pay_from in [PayFrom::HolderAccount, PayFrom::BinderAccount] {
            assert_eq!(account_available(pay_from, AccountStatus::Active, 900), 900);
            assert_eq!(account_available(pay_from, AccountStatus::Suspended, 900), 0);
            assert_eq!(account_available(pay_from, AccountStatus::Closed, 900), 0);
        }
        assert_eq!(account_available(PayFrom::SelfPay, AccountStatus::Active, 900), 0);
    }

    #[test]
    fn only_an_active_binding_with_aid_on_lets_the_binder_pay() {
        assert!(require_family_aid(Some((BindingStatus::Active, true))).is_ok());
        for binding in [None, Some((BindingStatus::Active, false)), Some((BindingStatus::PendingFace, true))] {
            let error = require_family_aid(binding).unwrap_err();
            assert_eq!(
                (error.code(), error.reason()),
                (tonic::Code::FailedPrecondition, Reason::FamilyAidNotAuthorised)
            );
        }
        assert_eq!(binder_of(PayFrom::SelfPay, "").unwrap(), None);
        assert!(binder_of(PayFrom::SelfPay, &Uuid::now_v7().to_string()).is_err());
        assert!(binder_of(PayFrom::BinderAccount, "").is_err());
    }

    /// Facts of a visit opened by "hospital-1" for a holder with an ACTIVE EMPLOYEE account.
    struct Case {
        call: SettleCall,
        person_id: Uuid,
        holder: AccountFacts,
    }

    fn case(total_cents: i64, pay_from: PayFrom, balance_cents: i64) -> Case {
        let now = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap().and_hms_opt(3, 0, 0).unwrap();
        Case {
            call: SettleCall {
                visit_id: Uuid::now_v7(),
                partner_id: "hospital-1".into(),
                terms: settle_terms(total_cents, Category::Outpatient, pay_from, "x-ray").unwrap(),
                now,
            },
            person_id: Uuid::now_v7(),
            holder: AccountFacts {
                id: Uuid::now_v7(),
                scheme: Scheme::Employee,
                status: AccountStatus::Active,
                balance_cents,
            },
        }
    }

    impl Case {
        fn facts(&self) -> SettleFacts<'_> {
            SettleFacts {
                call: &self.call,
                opened_by: "hospital-1",
                person_id: self.person_id,
                earlier: None,
                holder_account: self.holder,
                family_aid: None,
                year_to_date: YearToDate::default(),
            }
        }
    }

    fn settled(decision: ApiResult<Decision>) -> NewSettlement {
        match decision.unwrap() {
            Decision::Settle(new) => new,
            Decision::Replay(first) => panic!("replayed {first:?}"),
        }
    }

    /// EMPLOYEE OUTPATIENT in the built-in policy: 180 000 deductible, 70 %, cap 2 000 000.
    #[test]
    fn a_bill_is_split_and_the_holders_account_debited_by_the_one_posting_rule() {
        let table = PolicyTable::builtin();
        let c = case(200_000, PayFrom::HolderAccount, 1_000_000);
        let new = settled(decide(&table, c.facts()));
        let s = &new.settlement;
        // 180 000 deductible, 70 % of the other 20 000 from the fund, the rest from the account.
        assert_eq!((s.deductible_cents, s.fund_cents, s.account_cents, s.self_cents), (180_000, 14_000, 186_000, 0));
        assert_eq!(
            (s.visit_id, s.person_id, s.year, s.status),
            (Some(c.call.visit_id), c.person_id, 2026, SettlementStatus::Settled)
        );
        assert_eq!(s.charged_account_id, Some(c.holder.id));
        let debit = new.debit.unwrap();
        assert_eq!((debit.account_id, debit.kind, debit.amount_cents), (c.holder.id, EntryKind::Settlement, -186_000));
        assert_eq!(debit.balance_after_cents, 1_000_000 - 186_000);
        assert_eq!(debit.settlement_id, s.id);
        assert_eq!(
            new.year_to_date,
            YearToDate { total_cents: 200_000, fund_cents: 14_000, deductible_cents: 180_000 }
        );
    }

    #[test]
    fn an_insufficient_balance_pays_what_it_holds_and_the_rest_is_self_pay() {
        let c = case(10_000, PayFrom::HolderAccount, 2_500);
        let new = settled(decide(&PolicyTable::builtin(), c.facts()));
        assert_eq!((new.settlement.account_cents, new.settlement.self_cents), (2_500, 7_500));
        assert_eq!(new.debit.unwrap().balance_after_cents, 0);

        let empty = case(10_000, PayFrom::HolderAccount, 0);
        let new = settled(decide(&PolicyTable::builtin(), empty.facts()));
        assert_eq!((new.settlement.charged_account_id, new.debit), (None, None), "nothing paid, nothing posted");
    }

    #[test]
    fn a_suspended_account_or_self_pay_is_not_debited() {
        let mut c = case(10_000, PayFrom::HolderAccount, 50_000);
        c.holder.status = AccountStatus::Suspended;
        let new = settled(decide(&PolicyTable::builtin(), c.facts()));
        assert_eq!((new.settlement.account_cents, new.settlement.self_cents, new.debit), (0, 10_000, None));
        let c = case(10_000, PayFrom::SelfPay, 50_000);
        let new = settled(decide(&PolicyTable::builtin(), c.facts()));
        assert_eq!((new.settlement.account_cents, new.settlement.self_cents, new.debit), (0, 10_000, None));
    }

    #[test]
    fn once_the_annual_cap_is_reached_the_fund_pays_nothing() {
        let c = case(100_000, PayFrom::SelfPay, 0);
        let cap = PolicyTable::builtin().policy(Scheme::Employee, Category::Outpatient).annual_cap_cents;
        let reached = YearToDate { total_cents: 9_000_000, fund_cents: cap, deductible_cents: 180_000 };
        let new = settled(decide(&PolicyTable::builtin(), SettleFacts { year_to_date: reached, ..c.facts() }));
        assert_eq!((new.settlement.fund_cents, new.settlement.self_cents), (0, 100_000));
        assert_eq!(new.year_to_date.fund_cents, cap);
        assert_eq!(new.year_to_date.total_cents, 9_100_000);
    }

    #[test]
    fn only_the_opening_partner_settles() {
        let c = case(1_000, PayFrom::HolderAccount, 0);
        let error = decide(&PolicyTable::builtin(), SettleFacts { opened_by: "pharmacy-9", ..c.facts() }).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::PermissionDenied, Reason::VisitPartnerMismatch));
    }

    #[test]
    fn a_settled_visit_replays_the_same_terms_and_refuses_others() {
        let table = PolicyTable::builtin();
        let c = case(1_000, PayFrom::HolderAccount, 5_000);
        let first = settled(decide(&table, c.facts())).settlement;
        let replay = decide(&table, SettleFacts { earlier: Some(first.clone()), ..c.facts() }).unwrap();
        assert_eq!(replay, Decision::Replay(first.clone()));

        let mut other = c.call.clone();
        other.terms.total_cents = 1_001;
        let facts = SettleFacts { call: &other, earlier: Some(first), ..c.facts() };
        let error = decide(&table, facts).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::VisitAlreadySettled));
    }

    fn aid(relationship: Relationship, family_aid: bool, binder: Option<AccountFacts>) -> FamilyAidFacts {
        FamilyAidFacts {
            binding: Some(AidBinding { status: BindingStatus::Active, family_aid, relationship }),
            binder_account: binder,
        }
    }

    #[test]
    fn family_aid_charges_the_binders_account_when_authorised_and_eligible() {
        let c = case(10_000, PayFrom::BinderAccount, 0);
        let binder = AccountFacts { id: Uuid::now_v7(), balance_cents: 3_000, ..c.holder };
        let facts = SettleFacts { family_aid: Some(aid(Relationship::Child, true, Some(binder))), ..c.facts() };
        let new = settled(decide(&PolicyTable::builtin(), facts));
        assert_eq!(new.settlement.charged_account_id, Some(binder.id));
        assert_eq!((new.settlement.account_cents, new.settlement.self_cents), (3_000, 7_000));
        let debit = new.debit.unwrap();
        assert_eq!((debit.account_id, debit.kind, debit.balance_after_cents), (binder.id, EntryKind::FamilyAid, 0));
    }

    #[test]
    fn family_aid_is_refused_without_authorisation_account_or_eligibility() {
        let table = PolicyTable::builtin();
        let c = case(10_000, PayFrom::BinderAccount, 0);
        let binder = AccountFacts { id: Uuid::now_v7(), ..c.holder };
        let refused = |family_aid| {
            let error = decide(&table, SettleFacts { family_aid: Some(family_aid), ..c.facts() }).unwrap_err();
            (error.code(), error.reason())
        };
        let not_authorised = (tonic::Code::FailedPrecondition, Reason::FamilyAidNotAuthorised);
        assert_eq!(refused(FamilyAidFacts { binding: None, binder_account: Some(binder) }), not_authorised);
        assert_eq!(refused(aid(Relationship::Child, false, Some(binder))), not_authorised, "aid switched off");
        assert_eq!(refused(aid(Relationship::Child, true, None)), not_authorised, "no open account");
        let not_eligible = (tonic::Code::FailedPrecondition, Reason::FamilyAidNotEligible);
        assert_eq!(refused(aid(Relationship::Sibling, true, Some(binder))), not_eligible);
        let resident = AccountFacts { scheme: Scheme::Resident, ..binder };
        assert_eq!(refused(aid(Relationship::Child, true, Some(resident))), not_eligible);
    }

    #[test]
    fn a_reversal_takes_the_settlement_out_of_the_totals() {
        let c = case(200_000, PayFrom::SelfPay, 0);
        let before = YearToDate { total_cents: 50_000, fund_cents: 0, deductible_cents: 50_000 };
        let new = settled(decide(&PolicyTable::builtin(), SettleFacts { year_to_date: before, ..c.facts() }));
        assert_eq!(year_to_date_after_reversal(new.year_to_date, &new.settlement), before);
    }

    #[test]
    fn a_retry_must_repeat_the_terms() {
        let first = settle_terms(1_000, Category::Outpatient, PayFrom::HolderAccount, "x-ray").unwrap();
        assert!(replay_settlement(&first, &first.clone()).is_ok());
        let other = SettleTerms { total_cents: 1_001, ..first.clone() };
        assert_eq!(replay_settlement(&first, &other).unwrap_err().reason(), Reason::VisitAlreadySettled);
    }

    #[test]
    fn settle_terms_are_bounded() {
        assert!(settle_terms(0, Category::Pharmacy, PayFrom::SelfPay, "").is_err());
        assert!(settle_terms(MAX_BILL_CENTS + 1, Category::Pharmacy, PayFrom::SelfPay, "").is_err());
        assert!(settle_terms(MAX_BILL_CENTS, Category::Pharmacy, PayFrom::SelfPay, &"药".repeat(500)).is_ok());
        let error = settle_terms(1, Category::Pharmacy, PayFrom::SelfPay, &"药".repeat(501)).unwrap_err();
        assert_eq!(error.reason(), Reason::InvalidArgument);
    }

    #[test]
    fn a_settlement_is_reversed_once() {
        assert!(ensure_reversible(SettlementStatus::Settled).is_ok());
        assert_eq!(
            ensure_reversible(SettlementStatus::Reversed).unwrap_err().reason(),
            Reason::SettlementAlreadyReversed
        );
    }

    #[test]
    fn years_and_months_are_counted_in_china_standard_time() {
        // 2026-12-31 16:30 UTC is 2027-01-01 00:30 in Beijing.
        let at = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap().and_hms_opt(16, 30, 0).unwrap();
        assert_eq!(settlement_year(at), 2027);
        assert_eq!(settlement_month(at), 1);
        let before = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap().and_hms_opt(15, 59, 59).unwrap();
        assert_eq!((settlement_year(before), settlement_month(before)), (2026, 12));
    }

    #[test]
    fn annual_expenses_list_every_category_and_months_with_settlements() {
        let at = |m, d, h| NaiveDate::from_ymd_opt(2026, m, d).unwrap().and_hms_opt(h, 0, 0).unwrap();
        let line = |category, settled_at, total: i64| ExpenseLine {
            category,
            settled_at,
            total_cents: total,
            fund_cents: total / 2,
            account_cents: total / 4,
            self_cents: total - total / 2 - total / 4,
        };
        let expenses = annual_expenses(&[
            line(Category::Outpatient, at(3, 1, 2), 1_000),
            line(Category::Pharmacy, at(3, 31, 17), 400), // April 1st in Beijing
            line(Category::Outpatient, at(7, 9, 9), 2_000),
        ]);
        assert_eq!(expenses.totals.total_cents, 3_400);
        assert_eq!(expenses.totals.settlements, 3);
        assert_eq!(expenses.totals.fund_cents + expenses.totals.account_cents + expenses.totals.self_cents, 3_400);
        let categories: Vec<_> = expenses.by_category.iter().map(|(c, t)| (*c, t.total_cents)).collect();
        assert_eq!(
            categories,
            vec![(Category::Outpatient, 3_000), (Category::Inpatient, 0), (Category::Pharmacy, 400)]
        );
        let months: Vec<_> = expenses.by_month.iter().map(|(m, t)| (*m, t.total_cents)).collect();
        assert_eq!(months, vec![(3, 1_000), (4, 400), (7, 2_000)]);
    }

    #[test]
    fn the_builtin_policy_covers_every_scheme_and_category() {
        let table = PolicyTable::builtin();
        for scheme in [Scheme::Employee, Scheme::Resident] {
            for &category in Category::ALL {
                let p = table.policy(scheme, category);
                assert!(p.reimbursement_ratio_bp <= FULL_RATIO_BP && p.annual_cap_cents > 0);
            }
        }
        assert_eq!(table.policy(Scheme::Employee, Category::Outpatient), policy(180_000, 7_000, 2_000_000));
        assert_eq!(table.policy(Scheme::Resident, Category::Pharmacy), policy(10_000, 5_000, 200_000));
    }

    #[test]
    fn a_policy_file_is_parsed_and_every_table_is_required() {
        let custom = DEFAULT_POLICY_TOML.replace("deductible_cents = 130000", "deductible_cents = 0");
        let table = PolicyTable::from_toml_str(&custom).unwrap();
        assert_eq!(table.policy(Scheme::Employee, Category::Inpatient).deductible_cents, 0);

        let missing = DEFAULT_POLICY_TOML.replace("[RESIDENT.PHARMACY]", "[RESIDENT.UNUSED]");
        let error = PolicyTable::from_toml_str(&missing).unwrap_err().to_string();
        assert!(error.contains("UNUSED") || error.contains("PHARMACY"), "{error}");

        let no_scheme: String = DEFAULT_POLICY_TOML.split("[RESIDENT.OUTPATIENT]").next().unwrap().to_owned();
        assert!(PolicyTable::from_toml_str(&no_scheme).unwrap_err().to_string().contains("RESIDENT"));

        let unknown_key = DEFAULT_POLICY_TOML.replacen("annual_cap_cents", "annual_cap_yuan", 1);
        assert!(PolicyTable::from_toml_str(&unknown_key).is_err());

        let ratio = DEFAULT_POLICY_TOML.replacen("reimbursement_ratio_bp = 7000", "reimbursement_ratio_bp = 10001", 1);
        let error = PolicyTable::from_toml_str(&ratio).unwrap_err().to_string();
        assert!(error.contains("EMPLOYEE.OUTPATIENT") && error.contains("reimbursement_ratio_bp"), "{error}");

        let negative = DEFAULT_POLICY_TOML.replacen("deductible_cents = 10000\n", "deductible_cents = -1\n", 1);
        assert!(PolicyTable::from_toml_str(&negative).unwrap_err().to_string().contains("RESIDENT.OUTPATIENT"));

        let wrong_type = DEFAULT_POLICY_TOML.replacen("annual_cap_cents = 2000000", "annual_cap_cents = \"lots\"", 1);
        assert!(PolicyTable::from_toml_str(&wrong_type).is_err());
        assert!(PolicyTable::from_toml_str("not toml [").is_err());
    }

    #[test]
    fn a_policy_file_is_loaded_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, DEFAULT_POLICY_TOML).unwrap();
        assert_eq!(PolicyTable::load(&path).unwrap(), PolicyTable::builtin());
        assert!(matches!(PolicyTable::load(&dir.path().join("absent.toml")), Err(PolicyError::Read { .. })));
    }

    #[test]
    fn by_default_only_employee_accounts_pay_and_only_for_spouse_parents_and_children() {
        let table = PolicyTable::builtin();
        let aid = table.family_aid();
        let every = [
            Relationship::Spouse,
            Relationship::Child,
            Relationship::Parent,
            Relationship::Grandparent,
            Relationship::Grandchild,
            Relationship::Sibling,
            Relationship::OtherCloseRelative,
        ];
        for relationship in every {
            let employee = require_family_aid_eligible(aid, Some(Scheme::Employee), relationship);
            let eligible = matches!(relationship, Relationship::Spouse | Relationship::Parent | Relationship::Child);
            assert_eq!(employee.is_ok(), eligible, "EMPLOYEE for {relationship:?}");
            let resident = require_family_aid_eligible(aid, Some(Scheme::Resident), relationship).unwrap_err();
            assert_eq!(
                (resident.code(), resident.reason()),
                (tonic::Code::FailedPrecondition, Reason::FamilyAidNotEligible)
            );
            let no_account = require_family_aid_eligible(aid, None, relationship).unwrap_err();
            assert_eq!(no_account.reason(), Reason::FamilyAidNotEligible);
        }
        let refused = require_family_aid_eligible(aid, Some(Scheme::Employee), Relationship::Sibling).unwrap_err();
        assert!(refused.message().contains("SIBLING") && refused.message().contains("SPOUSE, PARENT, CHILD"));
    }

    #[test]
    fn the_family_aid_table_is_configurable_and_checked_at_start() {
        let wider = DEFAULT_POLICY_TOML.replace("RESIDENT = []", r#"RESIDENT = ["CHILD"]"#).replace(
            r#"EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]"#,
            r#"EMPLOYEE = ["SPOUSE", "PARENT", "CHILD", "GRANDPARENT"]"#,
        );
        let table = PolicyTable::from_toml_str(&wider).unwrap();
        assert!(require_family_aid_eligible(table.family_aid(), Some(Scheme::Resident), Relationship::Child).is_ok());
        assert!(
            require_family_aid_eligible(table.family_aid(), Some(Scheme::Employee), Relationship::Grandparent).is_ok()
        );
        assert!(require_family_aid_eligible(table.family_aid(), Some(Scheme::Resident), Relationship::Spouse).is_err());

        let none = DEFAULT_POLICY_TOML.replace(r#"EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]"#, "EMPLOYEE = []");
        let table = PolicyTable::from_toml_str(&none).unwrap();
        let refused = require_family_aid_eligible(table.family_aid(), Some(Scheme::Employee), Relationship::Child);
        assert!(refused.unwrap_err().message().contains("no one"));

        let unknown = DEFAULT_POLICY_TOML.replace(r#""PARENT""#, r#""COUSIN""#);
        let error = PolicyTable::from_toml_str(&unknown).unwrap_err().to_string();
        assert!(error.contains("FAMILY_AID.EMPLOYEE") && error.contains("COUSIN"), "{error}");
        let twice = DEFAULT_POLICY_TOML.replace(r#""PARENT""#, r#""CHILD""#);
        assert!(PolicyTable::from_toml_str(&twice).unwrap_err().to_string().contains("twice"));
        let lower = DEFAULT_POLICY_TOML.replace(r#""PARENT""#, r#""parent""#);
        assert!(PolicyTable::from_toml_str(&lower).is_err(), "stored spellings only");
        let missing_scheme = DEFAULT_POLICY_TOML.replace("RESIDENT = []", "");
        assert!(PolicyTable::from_toml_str(&missing_scheme).unwrap_err().to_string().contains("RESIDENT"));
        let missing_table: String = DEFAULT_POLICY_TOML.split("# Family aid").next().unwrap().to_owned();
        assert!(PolicyTable::from_toml_str(&missing_table).unwrap_err().to_string().contains("FAMILY_AID"));
        let unknown_scheme = DEFAULT_POLICY_TOML.replace("RESIDENT = []", "RESIDENT = []\nMILITARY = []");
        assert!(PolicyTable::from_toml_str(&unknown_scheme).is_err());
    }

    /// One step of a random history: a bill, a credit, or a status change.
    #[derive(Debug, Clone)]
    enum Step {
        Bill { total: i64, category: usize, from_account: bool },
        Credit(i64),
        Suspend,
        Resume,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (1..=MAX_BILL_CENTS / 100, 0..3usize, any::<bool>())
                .prop_map(|(total, category, from_account)| Step::Bill { total, category, from_account }),
            1 => (1..=MAX_BILL_CENTS / 1000, 0..3usize, any::<bool>())
                .prop_map(|(total, category, from_account)| Step::Bill { total, category, from_account }),
            2 => (1..=5_000_000i64).prop_map(Step::Credit),
            1 => Just(Step::Suspend),
            1 => Just(Step::Resume),
        ]
    }

    fn policy_strategy() -> impl Strategy<Value = Policy> {
        (0..=500_000i64, 0..=FULL_RATIO_BP, 0..=5_000_000i64).prop_map(|(d, r, c)| policy(d, r, c))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Over any sequence of bills, credits and suspensions: every cent is accounted for, the
        /// balance never goes negative, the deductible is paid before the fund pays and never
        /// more than once a year, the fund pays exactly its ratio above the deductible up to the
        /// cap and never beyond it, and the account pays all it can (unless suspended).
        #[test]
        fn every_cent_is_accounted_for_and_limits_hold(
            policies in proptest::array::uniform3(policy_strategy()),
            start_balance in 0..=2_000_000i64,
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let mut balance = start_balance;
            let mut status = AccountStatus::Active;
            let mut ytd = [YearToDate::default(); 3];
            for step in steps {
                match step {
                    Step::Credit(amount) => balance = super::super::ledger::balance_after(balance, amount).unwrap(),
                    Step::Suspend => status = super::super::ledger::suspend(status).unwrap(),
                    Step::Resume => status = super::super::ledger::resume(status).unwrap(),
                    Step::Bill { total, category, from_account } => {
                        let p = policies[category];
                        let pay_from = if from_account { PayFrom::HolderAccount } else { PayFrom::SelfPay };
                        let available = account_available(pay_from, status, balance);
                        let before = ytd[category];
                        let s = split(total, &p, before, available);

                        prop_assert_eq!(s.fund_cents + s.account_cents + s.self_cents, total);
                        prop_assert!(s.fund_cents >= 0 && s.account_cents >= 0 && s.self_cents >= 0);
                        prop_assert!(s.deductible_cents >= 0 && s.deductible_cents <= total);

                        // The account: all it can, and never below zero.
                        prop_assert!(s.account_cents <= available);
                        prop_assert_eq!(s.account_cents, (total - s.fund_cents).min(available));
                        if status != AccountStatus::Active || !from_account {
                            prop_assert_eq!(s.account_cents, 0);
                        }
                        balance = super::super::ledger::balance_after(balance, -s.account_cents)
                            .expect("the balance never goes below zero");

                        // The deductible: consumed first, never beyond the year's amount.
                        let after = before.plus(&s);
                        prop_assert!(after.deductible_cents <= p.deductible_cents);
                        prop_assert_eq!(s.deductible_cents, total.min(p.deductible_cents - before.deductible_cents));
                        if s.fund_cents > 0 {
                            prop_assert_eq!(after.deductible_cents, p.deductible_cents);
                        }

                        // The fund: its ratio of the rest, floored, up to the cap and never beyond.
                        let by_ratio = (total - s.deductible_cents) * i64::from(p.reimbursement_ratio_bp) / 10_000;
                        prop_assert!(s.fund_cents <= by_ratio);
                        prop_assert!(after.fund_cents <= p.annual_cap_cents);
                        prop_assert_eq!(s.fund_cents, by_ratio.min(p.annual_cap_cents - before.fund_cents));
                        ytd[category] = after;
                    }
                }
                prop_assert!(balance >= 0);
            }
        }
    }
}
