//! Settlement rules: the policy table (pooling region x scheme x care type x hospital level),
//! how a bill, bare total or itemised against the catalogue, is split between the pooling fund,
//! the individual account and self-pay, cross-region care, pre-settlement, retries and
//! reversals, and annual expenses. Pure: no I/O.
//!
//! The split of one bill, on the person's year-to-date totals for its care type ([`split_bill`];
//! a bare total is one in-scope class A line):
//!
//! ```text
//! in_scope        = A items + B items less their first self-pay share (C items: none)
//! deductible_part = min(in_scope, max(0, deductible - deductible_ytd))
//! fund            = min(floor((in_scope - deductible_part) * ratio_bp / 10 000), max(0, cap - fund_ytd))
//! rest            = total - fund
//! account         = min(rest, balance)   when paying from the holder's ACTIVE account, else 0
//! self            = rest - account
//! ```
//!
//! so fund + account + self = total, every part >= 0, and the balance never goes negative;
//! each of them is spread over the items so that the same holds for every item.

use std::{collections::BTreeMap, path::Path};

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::{HospitalLevel, is_region_code},
    clock::china_standard_time,
    error::require_uuid,
    validate::{Amount, TextField},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    account::{AccountStatus, Scheme},
    catalog::{Catalog, CoverageClass, Found},
    cross_region::Filing,
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
        /// Outpatient care of chronic and special diseases (门诊慢特病), with their own terms.
        ChronicSpecial => "CHRONIC_SPECIAL",
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

/// The fund's terms for one pooling region, scheme, care type and hospital level, per calendar
/// year. Money in cents, ratios and shares in basis points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// What the person pays each year (of in-scope money) before the fund pays anything.
    pub deductible_cents: i64,
    /// Share of in-scope money above the deductible the fund pays (7000 = 70 %): care in the
    /// insured pooling region, or cross-region care under an ACTIVE filing.
    pub reimbursement_ratio_bp: u32,
    /// Most the fund pays in a year.
    pub annual_cap_cents: i64,
    /// The share of a class B item the patient pays first; the rest is in scope.
    pub b_self_pay_bp: u32,
    /// The ratio for cross-region care without a filing; `None`: such care is not settled
    /// directly (FAILED_PRECONDITION / CROSS_REGION_NOT_FILED: file it, or claim afterwards).
    pub unfiled_ratio_bp: Option<u32>,
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
    /// Not TOML of the expected shape (unknown key or table, wrong type).
    #[error("policy file: {0}")]
    Parse(String),
    /// A missing or out-of-range value, named by its entry (`NATIONAL.EMPLOYEE.OUTPATIENT`).
    #[error("policy file: {0}")]
    Invalid(String),
}

/// The keys one entry of the file may list; in an override, only those listed override.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    deductible_cents: Option<i64>,
    reimbursement_ratio_bp: Option<u32>,
    annual_cap_cents: Option<i64>,
    b_self_pay_bp: Option<u32>,
    unfiled_ratio_bp: Option<u32>,
    /// `true`: cross-region care without a filing is not settled directly here, whatever the
    /// entries below it in precedence say.
    #[serde(default)]
    no_unfiled: bool,
}

impl Patch {
    /// Checks the values it lists; `at` names the entry.
    fn validate(&self, at: &str) -> Result<(), PolicyError> {
        let bad = |what: &str| Err(PolicyError::Invalid(format!("{at}: {what}")));
        if self.deductible_cents.is_some_and(|v| v < 0) {
            return bad("deductible_cents must be >= 0");
        }
        if self.annual_cap_cents.is_some_and(|v| v < 0) {
            return bad("annual_cap_cents must be >= 0");
        }
        for (name, value) in [
            ("reimbursement_ratio_bp", self.reimbursement_ratio_bp),
            ("b_self_pay_bp", self.b_self_pay_bp),
            ("unfiled_ratio_bp", self.unfiled_ratio_bp),
        ] {
            if value.is_some_and(|v| v > FULL_RATIO_BP) {
                return bad(&format!("{name} must be 0 to 10000"));
            }
        }
        if self.no_unfiled && self.unfiled_ratio_bp.is_some() {
            return bad("no_unfiled and unfiled_ratio_bp exclude each other");
        }
        Ok(())
    }

    /// `base` with the keys this entry lists.
    fn apply(&self, base: Policy) -> Policy {
        Policy {
            deductible_cents: self.deductible_cents.unwrap_or(base.deductible_cents),
            reimbursement_ratio_bp: self.reimbursement_ratio_bp.unwrap_or(base.reimbursement_ratio_bp),
            annual_cap_cents: self.annual_cap_cents.unwrap_or(base.annual_cap_cents),
            b_self_pay_bp: self.b_self_pay_bp.unwrap_or(base.b_self_pay_bp),
            unfiled_ratio_bp: if self.no_unfiled { None } else { self.unfiled_ratio_bp.or(base.unfiled_ratio_bp) },
        }
    }

    /// The complete policy a national care-type entry must be.
    fn complete(&self, at: &str) -> Result<Policy, PolicyError> {
        let missing =
            |name: &str| PolicyError::Invalid(format!("{at}: {name} missing (national entries list every key)"));
        Ok(Policy {
            deductible_cents: self.deductible_cents.ok_or_else(|| missing("deductible_cents"))?,
            reimbursement_ratio_bp: self.reimbursement_ratio_bp.ok_or_else(|| missing("reimbursement_ratio_bp"))?,
            annual_cap_cents: self.annual_cap_cents.ok_or_else(|| missing("annual_cap_cents"))?,
            b_self_pay_bp: self.b_self_pay_bp.ok_or_else(|| missing("b_self_pay_bp"))?,
            unfiled_ratio_bp: self.unfiled_ratio_bp,
        })
    }
}

/// One care type's entry: its own keys, and per-level entries under it.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CareEntry {
    deductible_cents: Option<i64>,
    reimbursement_ratio_bp: Option<u32>,
    annual_cap_cents: Option<i64>,
    b_self_pay_bp: Option<u32>,
    unfiled_ratio_bp: Option<u32>,
    #[serde(default)]
    no_unfiled: bool,
    #[serde(rename = "LEVEL_1")]
    level_1: Option<Patch>,
    #[serde(rename = "LEVEL_2")]
    level_2: Option<Patch>,
    #[serde(rename = "LEVEL_3")]
    level_3: Option<Patch>,
    #[serde(rename = "PHARMACY")]
    pharmacy: Option<Patch>,
    #[serde(rename = "UNGRADED")]
    ungraded: Option<Patch>,
}

impl CareEntry {
    fn own(&self) -> Patch {
        Patch {
            deductible_cents: self.deductible_cents,
            reimbursement_ratio_bp: self.reimbursement_ratio_bp,
            annual_cap_cents: self.annual_cap_cents,
            b_self_pay_bp: self.b_self_pay_bp,
            unfiled_ratio_bp: self.unfiled_ratio_bp,
            no_unfiled: self.no_unfiled,
        }
    }

    fn level(&self, level: HospitalLevel) -> Option<Patch> {
        match level {
            HospitalLevel::Level1 => self.level_1,
            HospitalLevel::Level2 => self.level_2,
            HospitalLevel::Level3 => self.level_3,
            HospitalLevel::Pharmacy => self.pharmacy,
            HospitalLevel::Ungraded => self.ungraded,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemeEntry {
    #[serde(rename = "OUTPATIENT")]
    outpatient: Option<CareEntry>,
    #[serde(rename = "INPATIENT")]
    inpatient: Option<CareEntry>,
    #[serde(rename = "PHARMACY")]
    pharmacy: Option<CareEntry>,
    #[serde(rename = "CHRONIC_SPECIAL")]
    chronic_special: Option<CareEntry>,
}

impl SchemeEntry {
    fn care(&self, category: Category) -> Option<CareEntry> {
        match category {
            Category::Outpatient => self.outpatient,
            Category::Inpatient => self.inpatient,
            Category::Pharmacy => self.pharmacy,
            Category::ChronicSpecial => self.chronic_special,
        }
    }
}

/// The national table, or one region's overrides.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    #[serde(rename = "EMPLOYEE")]
    employee: Option<SchemeEntry>,
    #[serde(rename = "RESIDENT")]
    resident: Option<SchemeEntry>,
}

impl Layer {
    fn care(&self, scheme: Scheme, category: Category) -> Option<CareEntry> {
        match scheme {
            Scheme::Employee => self.employee,
            Scheme::Resident => self.resident,
        }
        .and_then(|entry| entry.care(category))
    }
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
    #[serde(rename = "NATIONAL")]
    national: Layer,
    #[serde(rename = "REGION", default)]
    regions: BTreeMap<String, Layer>,
    #[serde(rename = "FAMILY_AID")]
    family_aid: FamilyAidFile,
}

const SCHEMES: [Scheme; 2] = [Scheme::Employee, Scheme::Resident];

/// Every (scheme, care type, level) policy of one pooling region, resolved.
type Resolved = BTreeMap<(&'static str, Category, HospitalLevel), Policy>;

/// The policy table: a [`Policy`] for every pooling region x scheme x care type x hospital
/// level, and the [`FamilyAidPolicy`].
///
/// The file (`--policy-file`) is TOML. `[NATIONAL.<scheme>.<care type>]` entries are the
/// national defaults: all eight (EMPLOYEE and RESIDENT x OUTPATIENT, INPATIENT, PHARMACY,
/// CHRONIC_SPECIAL) are required and list every key but `unfiled_ratio_bp` (absent: cross-region
/// care without a filing is not settled directly). Everything else overrides only the keys it
/// lists, most specific last:
///
/// 1. `[NATIONAL.<scheme>.<care>]`, the base;
/// 2. `[NATIONAL.<scheme>.<care>.<level>]` (LEVEL_1, LEVEL_2, LEVEL_3, PHARMACY, UNGRADED);
/// 3. `[REGION.<pooling region>.<scheme>.<care>]`, a pooling region's own terms;
/// 4. `[REGION.<pooling region>.<scheme>.<care>.<level>]`.
///
/// A pooling region is named by its six-digit code (`310000` for Shanghai, whose fund pools
/// city-wide; `440300` for Shenzhen): the policy of the person's INSURED region applies,
/// wherever the care is given. `no_unfiled = true` in an override removes unfiled care.
/// Values are checked at start and a bad one names its entry; a missing national entry, an
/// unknown key, table or level, or a region not named by its pooling code is an error, never a
/// silent default.
///
/// ```toml
/// [NATIONAL.EMPLOYEE.OUTPATIENT]
/// deductible_cents = 180000        # 1 800 yuan a year, of in-scope money
/// reimbursement_ratio_bp = 7000    # the fund pays 70 % above the deductible
/// annual_cap_cents = 2000000       # and at most 20 000 yuan a year
/// b_self_pay_bp = 1000             # class B items: the patient pays 10 % first
/// unfiled_ratio_bp = 5000          # cross-region care without a filing: 50 %
///
/// [NATIONAL.EMPLOYEE.OUTPATIENT.LEVEL_1]
/// reimbursement_ratio_bp = 8000    # community hospitals pay more
///
/// [REGION.310000.EMPLOYEE.OUTPATIENT]
/// deductible_cents = 150000        # Shanghai's own deductible
///
/// [FAMILY_AID]                     # whose individual account may pay for which relatives
/// EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]
/// RESIDENT = []
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTable {
    national: Resolved,
    regions: BTreeMap<String, Resolved>,
    family_aid: FamilyAidPolicy,
}

/// The built-in policy (`medins up` and tests); production deployments load their own file.
/// Its shape follows the national practice: a yearly deductible per care type, a higher ratio
/// at lower-level hospitals (to steer minor care to community hospitals), a B-class first
/// self-pay share, and a lower ratio for cross-region care without a filing (none for pharmacy
/// and chronic-disease care, which need a filing).
pub const DEFAULT_POLICY_TOML: &str = r#"
# Built-in settlement policy: money in cents (fen), ratios and shares in basis points.
[NATIONAL.EMPLOYEE.OUTPATIENT]
deductible_cents = 180000
reimbursement_ratio_bp = 7000
annual_cap_cents = 2000000
b_self_pay_bp = 1000
unfiled_ratio_bp = 5000

[NATIONAL.EMPLOYEE.OUTPATIENT.LEVEL_1]
reimbursement_ratio_bp = 8000

[NATIONAL.EMPLOYEE.OUTPATIENT.LEVEL_3]
reimbursement_ratio_bp = 6500

[NATIONAL.EMPLOYEE.INPATIENT]
deductible_cents = 130000
reimbursement_ratio_bp = 8500
annual_cap_cents = 50000000
b_self_pay_bp = 1000
unfiled_ratio_bp = 7000

[NATIONAL.EMPLOYEE.INPATIENT.LEVEL_1]
reimbursement_ratio_bp = 9000

[NATIONAL.EMPLOYEE.INPATIENT.LEVEL_3]
reimbursement_ratio_bp = 8000

[NATIONAL.EMPLOYEE.PHARMACY]
deductible_cents = 100000
reimbursement_ratio_bp = 5000
annual_cap_cents = 500000
b_self_pay_bp = 1000

[NATIONAL.EMPLOYEE.CHRONIC_SPECIAL]
deductible_cents = 0
reimbursement_ratio_bp = 8500
annual_cap_cents = 5000000
b_self_pay_bp = 1000

[NATIONAL.RESIDENT.OUTPATIENT]
deductible_cents = 10000
reimbursement_ratio_bp = 5000
annual_cap_cents = 300000
b_self_pay_bp = 1500
unfiled_ratio_bp = 3000

[NATIONAL.RESIDENT.OUTPATIENT.LEVEL_1]
reimbursement_ratio_bp = 6000

[NATIONAL.RESIDENT.INPATIENT]
deductible_cents = 80000
reimbursement_ratio_bp = 7000
annual_cap_cents = 25000000
b_self_pay_bp = 1500
unfiled_ratio_bp = 5000

[NATIONAL.RESIDENT.INPATIENT.LEVEL_1]
deductible_cents = 30000
reimbursement_ratio_bp = 8000

[NATIONAL.RESIDENT.INPATIENT.LEVEL_3]
deductible_cents = 120000
reimbursement_ratio_bp = 6000

[NATIONAL.RESIDENT.PHARMACY]
deductible_cents = 10000
reimbursement_ratio_bp = 5000
annual_cap_cents = 200000
b_self_pay_bp = 1500

[NATIONAL.RESIDENT.CHRONIC_SPECIAL]
deductible_cents = 0
reimbursement_ratio_bp = 6500
annual_cap_cents = 2000000
b_self_pay_bp = 1500

# Shanghai's fund (pooled city-wide): its own outpatient deductible and a higher cap for
# inpatient care at its level-3 hospitals.
[REGION.310000.EMPLOYEE.OUTPATIENT]
deductible_cents = 150000

[REGION.310000.EMPLOYEE.INPATIENT.LEVEL_3]
reimbursement_ratio_bp = 8500

# Family aid: whose individual account may pay the bills of which bound relatives (the
# member's relationship to the binder). National policy: EMPLOYEE individual accounts, for
# the spouse, parents and children; RESIDENT schemes have no individual account to share.
[FAMILY_AID]
EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]
RESIDENT = []
"#;

/// The six-digit code naming the pooling region `region_code` belongs to (`310115` ->
/// `310000`, `440305` -> `440300`).
pub fn pooling_region_code(region_code: &str) -> String {
    format!("{:0<6}", super::cross_region::pooling_region(region_code))
}

fn resolve(national: &Layer, region: Option<(&str, &Layer)>) -> Result<Resolved, PolicyError> {
    let mut resolved = Resolved::new();
    for scheme in SCHEMES {
        for &category in Category::ALL {
            let path = format!("{}.{}", scheme.as_str(), category.as_str());
            let base_entry = national
                .care(scheme, category)
                .ok_or_else(|| PolicyError::Invalid(format!("NATIONAL.{path}: entry missing")))?;
            let base = base_entry.own().complete(&format!("NATIONAL.{path}"))?;
            let regional = region.and_then(|(_, layer)| layer.care(scheme, category));
            for level in HospitalLevel::ALL {
                let mut policy = base;
                let mut named = format!("NATIONAL.{path}");
                if let Some(patch) = base_entry.level(level) {
                    policy = patch.apply(policy);
                    named = format!("NATIONAL.{path}.{}", level.as_str());
                }
                if let (Some((code, _)), Some(entry)) = (region, regional) {
                    policy = entry.own().apply(policy);
                    named = format!("REGION.{code}.{path}");
                    if let Some(patch) = entry.level(level) {
                        policy = patch.apply(policy);
                        named = format!("REGION.{code}.{path}.{}", level.as_str());
                    }
                }
                if policy.unfiled_ratio_bp.is_some_and(|unfiled| unfiled > policy.reimbursement_ratio_bp) {
                    return Err(PolicyError::Invalid(format!(
                        "{named} ({}): unfiled_ratio_bp must not exceed reimbursement_ratio_bp",
                        level.as_str()
                    )));
                }
                resolved.insert((scheme.as_str(), category, level), policy);
            }
        }
    }
    Ok(resolved)
}

/// Checks every entry a layer lists, naming it.
fn validate_layer(name: &str, layer: &Layer) -> Result<(), PolicyError> {
    for scheme in SCHEMES {
        for &category in Category::ALL {
            let Some(entry) = layer.care(scheme, category) else { continue };
            let at = format!("{name}.{}.{}", scheme.as_str(), category.as_str());
            entry.own().validate(&at)?;
            for level in HospitalLevel::ALL {
                if let Some(patch) = entry.level(level) {
                    patch.validate(&format!("{at}.{}", level.as_str()))?;
                }
            }
        }
    }
    Ok(())
}

impl PolicyTable {
    /// The built-in policy.
    pub fn builtin() -> PolicyTable {
        PolicyTable::from_toml_str(DEFAULT_POLICY_TOML).expect("the built-in policy is valid")
    }

    /// Parses and validates a policy file's text.
    pub fn from_toml_str(text: &str) -> Result<PolicyTable, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse(e.message().to_owned()))?;
        validate_layer("NATIONAL", &file.national)?;
        let national = resolve(&file.national, None)?;
        let mut regions = BTreeMap::new();
        for (code, layer) in &file.regions {
            let at = format!("REGION.{code}");
            if !is_region_code(code) || pooling_region_code(code) != *code {
                return Err(PolicyError::Invalid(format!(
                    "{at}: a region table is named by its pooling region's six-digit code (such as 310000 or 440300)"
                )));
            }
            validate_layer(&at, layer)?;
            regions.insert(code.clone(), resolve(&file.national, Some((code, layer)))?);
        }
        Ok(PolicyTable { national, regions, family_aid: file.family_aid.validate()? })
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

    /// The policy for a person insured in `insured_region` (any six-digit code of it) under
    /// `scheme`, for care of `category` at a hospital of `level`: the region's own table when
    /// its pooling region has one, else the national one.
    pub fn policy(&self, insured_region: &str, scheme: Scheme, category: Category, level: HospitalLevel) -> Policy {
        let table = self.regions.get(&pooling_region_code(insured_region)).unwrap_or(&self.national);
        table[&(scheme.as_str(), category, level)]
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

/// Most items in one bill.
pub const MAX_BILL_ITEMS: usize = 200;
/// Largest quantity of one item, in thousandths: 100 000 units.
pub const MAX_QUANTITY_MILLI: i64 = 100_000_000;
/// Longest department code.
pub const MAX_DEPARTMENT_CODE_CHARS: usize = 32;
/// Longest department name.
pub const MAX_DEPARTMENT_NAME_CHARS: usize = 50;

/// One line of an itemised bill, as the hospital sent it (checked on its own by
/// [`settle_terms`], against the catalogue by [`decide`]). Free of personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BillItem {
    /// Catalogue code (national or the treatment region's).
    pub code: String,
    /// Quantity in thousandths of the catalogue unit (1 500 = 1.5 boxes).
    pub quantity_milli: i64,
    /// Price per unit, in cents.
    pub unit_price_cents: i64,
    /// The prescribing department's code in the hospital (letters, digits, '-', '_', '.').
    pub department_code: String,
    /// Its name (optional; at most 50 characters).
    pub department_name: String,
}

impl BillItem {
    /// The line's amount: quantity x unit price, to the nearest cent (halves up), as hospitals
    /// price a fractional quantity.
    pub fn amount_cents(&self) -> i64 {
        let milli = i128::from(self.quantity_milli) * i128::from(self.unit_price_cents);
        i64::try_from((milli + 500) / 1000).unwrap_or(i64::MAX)
    }
}

/// Validated terms of a Settle request; a retry must repeat them exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleTerms {
    /// Bill total, 1 cent to [`MAX_BILL_CENTS`].
    pub total_cents: i64,
    /// Care type.
    pub category: Category,
    /// Who pays the rest.
    pub pay_from: PayFrom,
    /// Items, at most 500 characters.
    pub items_summary: String,
    /// The bill's items (empty: the bare-total form, the whole total in scope as one A item);
    /// their amounts add up to `total_cents`.
    pub items: Vec<BillItem>,
}

impl SettleTerms {
    /// SHA-256 (hex) of the terms and the paying binder in a canonical form: what a
    /// pre-settlement was for, compared when a Settle names it.
    pub fn sha256(&self, binder: Option<Uuid>) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        field(&self.total_cents.to_be_bytes());
        field(self.category.as_str().as_bytes());
        field(self.pay_from.as_str().as_bytes());
        field(self.items_summary.as_bytes());
        field(binder.map(|b| b.to_string()).unwrap_or_default().as_bytes());
        for item in &self.items {
            field(item.code.as_bytes());
            field(&item.quantity_milli.to_be_bytes());
            field(&item.unit_price_cents.to_be_bytes());
            field(item.department_code.as_bytes());
            field(item.department_name.as_bytes());
        }
        hex::encode(hash.finalize())
    }
}

fn is_department_code(text: &str) -> bool {
    (1..=MAX_DEPARTMENT_CODE_CHARS).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Validates the terms of a Settle (or PreSettle) request: the total, the summary and, when
/// there are items, each item on its own (code syntax, quantity, unit price, department; each
/// problem a field violation naming the item, `items[3].unit_price_cents`) and that their
/// amounts add up to the total (`total_cents`). The catalogue is asked later, by [`decide`],
/// in the treatment region.
pub fn settle_terms(
    total_cents: i64,
    category: Category,
    pay_from: PayFrom,
    items_summary: &str,
    items: Vec<BillItem>,
) -> ApiResult<SettleTerms> {
    let total_cents = BILL_TOTAL.check("total_cents", total_cents)?;
    let items_summary = ITEMS_SUMMARY.check("items_summary", items_summary)?;
    if items.len() > MAX_BILL_ITEMS {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, "items", "at most 200 items in one bill"));
    }
    let mut violations: Vec<(String, &str)> = Vec::new();
    let mut sum: i64 = 0;
    for (index, item) in items.iter().enumerate() {
        let mut bad = |field: &str, what: &'static str| violations.push((format!("items[{index}].{field}"), what));
        if !super::catalog::is_item_code(&item.code) {
            bad("code", "must be 1-40 upper-case letters, digits, '-' or '.'");
        }
        if !(1..=MAX_QUANTITY_MILLI).contains(&item.quantity_milli) {
            bad("quantity_milli", "must be 1 to 100 000 000 thousandths of a unit");
        }
        if !(1..=MAX_BILL_CENTS).contains(&item.unit_price_cents) {
            bad("unit_price_cents", "must be 1 to 100 000 000 cents");
        }
        if !is_department_code(&item.department_code) {
            bad("department_code", "must be 1-32 letters, digits, '-', '_' or '.'");
        }
        if item.department_name.chars().count() > MAX_DEPARTMENT_NAME_CHARS
            || item.department_name.trim() != item.department_name
            || item.department_name.chars().any(char::is_control)
        {
            bad("department_name", "must be at most 50 printable characters, without surrounding spaces");
        }
        let amount = item.amount_cents();
        if (1..=MAX_QUANTITY_MILLI).contains(&item.quantity_milli)
            && (1..=MAX_BILL_CENTS).contains(&item.unit_price_cents)
            && !(1..=MAX_BILL_CENTS).contains(&amount)
        {
            bad("quantity_milli", "quantity x unit price must come to 1 cent to 100 000 000 cents");
        }
        sum = sum.saturating_add(amount);
    }
    if violations.is_empty() && !items.is_empty() && sum != total_cents {
        violations.push(("total_cents".to_owned(), "must equal the sum of the items' amounts (quantity x unit price)"));
    }
    if let Some(error) = invalid_fields(violations) {
        return Err(error);
    }
    Ok(SettleTerms { total_cents, category, pay_from, items_summary, items })
}

/// INVALID_ARGUMENT with every field violation, or nothing when there are none.
fn invalid_fields(violations: Vec<(String, &str)>) -> Option<ApiError> {
    let mut iter = violations.into_iter();
    let (field, what) = iter.next()?;
    let error = ApiError::invalid_field(Reason::InvalidArgument, &field, what);
    Some(iter.fold(error, |error, (field, what)| error.with_field_violation(&field, what)))
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

/// One line of a bill as the split sees it: its amount and coverage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Amount, cents.
    pub amount_cents: i64,
    /// Coverage class.
    pub class: CoverageClass,
}

/// How one line (or a whole bill) was split, by scope and by payer:
/// `in_scope + b_self_pay + c_self_funded = amount = fund + account + self`, and the fund pays
/// only in-scope money above the deductible (`deductible + fund <= in_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineSplit {
    /// Within the fund's scope (A whole, B after its first self-pay share, C none).
    pub in_scope_cents: i64,
    /// A class B item's share the patient pays first.
    pub b_self_pay_cents: i64,
    /// Class C: outside the fund's scope.
    pub c_self_funded_cents: i64,
    /// In-scope money that went to the year's deductible.
    pub deductible_cents: i64,
    /// Paid by the pooling fund.
    pub fund_cents: i64,
    /// Paid from the individual account.
    pub account_cents: i64,
    /// Paid by the person.
    pub self_cents: i64,
}

impl LineSplit {
    /// The amount it splits.
    pub fn amount_cents(&self) -> i64 {
        self.fund_cents + self.account_cents + self.self_cents
    }

    fn add(&mut self, other: &LineSplit) {
        self.in_scope_cents += other.in_scope_cents;
        self.b_self_pay_cents += other.b_self_pay_cents;
        self.c_self_funded_cents += other.c_self_funded_cents;
        self.deductible_cents += other.deductible_cents;
        self.fund_cents += other.fund_cents;
        self.account_cents += other.account_cents;
        self.self_cents += other.self_cents;
    }

    /// The bill-level split (payers and deductible).
    pub fn split(&self) -> Split {
        Split {
            deductible_cents: self.deductible_cents,
            fund_cents: self.fund_cents,
            account_cents: self.account_cents,
            self_cents: self.self_cents,
        }
    }
}

fn mul_bp(amount: i64, bp: u32) -> i128 {
    i128::from(amount) * i128::from(bp)
}

/// Splits a bill's lines under `policy` at `ratio_bp` (the policy's ratio, or its unfiled
/// ratio for cross-region care without a filing) on the year-to-date totals `ytd`, taking at
/// most `account_available_cents` from the individual account:
///
/// 1. scope per line: A in scope; B: `b_self_pay_bp` of it (to the nearest cent, halves up)
///    paid first by the patient, the rest in scope; C: self-funded;
/// 2. the deductible still open this year is taken from in-scope money, line by line in order
///    (so it may be crossed inside one bill);
/// 3. the fund pays `floor(eligible x ratio)` of all in-scope money above the deductible, at
///    most what is left under the annual cap, spread over the lines in proportion to their
///    eligible money by largest remainder (ties to the earlier line): every cent placed;
/// 4. the account pays the rest of each line, in order, up to what it may contribute;
///    the remainder is self-pay.
///
/// Returns each line's split and the totals.
pub fn split_bill(
    lines: &[Line],
    policy: &Policy,
    ratio_bp: u32,
    ytd: YearToDate,
    account_available_cents: i64,
) -> (Vec<LineSplit>, LineSplit) {
    let mut splits: Vec<LineSplit> = lines
        .iter()
        .map(|line| {
            let amount = line.amount_cents.max(0);
            match line.class {
                CoverageClass::A => LineSplit { in_scope_cents: amount, ..LineSplit::default() },
                CoverageClass::B => {
                    let first = ((mul_bp(amount, policy.b_self_pay_bp) + 5_000) / 10_000) as i64;
                    let first = first.min(amount);
                    LineSplit { in_scope_cents: amount - first, b_self_pay_cents: first, ..LineSplit::default() }
                }
                CoverageClass::C => LineSplit { c_self_funded_cents: amount, ..LineSplit::default() },
            }
        })
        .collect();
    // The deductible, line by line.
    let mut deductible_left = (policy.deductible_cents - ytd.deductible_cents).max(0);
    for split in &mut splits {
        split.deductible_cents = split.in_scope_cents.min(deductible_left);
        deductible_left -= split.deductible_cents;
    }
    // The fund: its ratio of the eligible total, floored (the person, not the fund, keeps the
    // fraction), under the cap; i128 because a policy file need not keep products in i64.
    let eligible: Vec<i64> = splits.iter().map(|s| s.in_scope_cents - s.deductible_cents).collect();
    let eligible_total: i64 = eligible.iter().sum();
    let by_ratio = (mul_bp(eligible_total, ratio_bp.min(FULL_RATIO_BP)) / i128::from(FULL_RATIO_BP)) as i64;
    let cap_left = (policy.annual_cap_cents - ytd.fund_cents).max(0);
    let fund = by_ratio.min(cap_left);
    if eligible_total > 0 && fund > 0 {
        let mut remainders = Vec::with_capacity(splits.len());
        let mut placed = 0;
        for (index, (split, &e)) in splits.iter_mut().zip(&eligible).enumerate() {
            let share = i128::from(fund) * i128::from(e);
            split.fund_cents = (share / i128::from(eligible_total)) as i64;
            placed += split.fund_cents;
            remainders.push((share % i128::from(eligible_total), index));
        }
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, index) in remainders.iter().take((fund - placed) as usize) {
            splits[index].fund_cents += 1;
        }
    }
    // The account, line by line, then self-pay.
    let mut available = account_available_cents.max(0);
    let mut totals = LineSplit::default();
    for (split, line) in splits.iter_mut().zip(lines) {
        let rest = line.amount_cents.max(0) - split.fund_cents;
        split.account_cents = rest.min(available);
        available -= split.account_cents;
        split.self_cents = rest - split.account_cents;
        totals.add(split);
    }
    (splits, totals)
}

/// Splits a bare-total bill of `total_cents` (one in-scope A line) under `policy` at its ratio
/// on the year-to-date totals `ytd`, taking at most `account_available_cents` from the
/// individual account (see the module doc).
pub fn split(total_cents: i64, policy: &Policy, ytd: YearToDate, account_available_cents: i64) -> Split {
    let line = Line { amount_cents: total_cents, class: CoverageClass::A };
    split_bill(&[line], policy, policy.reimbursement_ratio_bp, ytd, account_available_cents).1.split()
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

/// One item of a settled bill: as billed, as priced against the catalogue, and its split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledItem {
    /// The line as billed.
    pub item: BillItem,
    /// The version of the catalogue book it was priced against.
    pub catalog_version: String,
    /// Its coverage class there.
    pub class: CoverageClass,
    /// Quantity x unit price.
    pub amount_cents: i64,
    /// How it was paid.
    pub split: LineSplit,
}

/// What a settlement was decided on and its receipt's totals by scope (settlements from
/// before itemised settlement have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementDetails {
    /// The holder's insured region (their account's), whose policy applied.
    pub insured_region_code: String,
    /// Where the care was given (the hospital's region; its catalogue applied).
    pub treatment_region_code: String,
    /// Whether they are different pooling regions.
    pub cross_region: bool,
    /// The ACTIVE filing that covered cross-region care, if one did.
    pub filing_id: Option<Uuid>,
    /// The hospital's level.
    pub hospital_level: HospitalLevel,
    /// The ratio applied, basis points.
    pub ratio_bp: u32,
    /// Whether the bill was itemised (else the bare-total form).
    pub itemised: bool,
    /// Totals by scope.
    pub in_scope_cents: i64,
    /// B-class first self-pay, total.
    pub b_self_pay_cents: i64,
    /// C-class self-funded, total.
    pub c_self_funded_cents: i64,
    /// The pre-settlement it confirmed, if any.
    pub pre_settlement_id: Option<Uuid>,
    /// The items, in bill order (none for a bare total).
    pub items: Vec<SettledItem>,
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
    /// Care type.
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
    /// Regions, level, ratio, items and their splits (None: settled before these were kept).
    pub details: Option<SettlementDetails>,
}

impl Settlement {
    /// The terms it was settled with (a retry must repeat them).
    pub fn terms(&self) -> SettleTerms {
        SettleTerms {
            total_cents: self.total_cents,
            category: self.category,
            pay_from: self.pay_from,
            items_summary: self.items_summary.clone(),
            items: self.details.iter().flat_map(|d| d.items.iter().map(|i| i.item.clone())).collect(),
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

/// Where a visit's care is given, as the settling partner's entry says: its region (None: the
/// entry has none, and care there counts as care in the patient's insured region) and level;
/// and how cross-region care there that no filing covers is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Six-digit region code, when the partner entry has one.
    pub region_code: Option<String>,
    /// Hospital level (UNGRADED, or PHARMACY for a pharmacy, when the entry has none).
    pub level: HospitalLevel,
    /// Cross-region care without a covering filing: as the policy says (a counter's bill), or
    /// as filed (emergency care elsewhere, claimed afterwards: `domain::claim::care_site`).
    pub unfiled: UnfiledCare,
}

/// How [`care_terms`] treats cross-region care that no ACTIVE filing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnfiledCare {
    /// As the policy says: its unfiled ratio, or not settled (CROSS_REGION_NOT_FILED).
    AsThePolicySays,
    /// As filed care: the policy's own ratio, with no filing named. Emergency care cannot wait
    /// for a filing, so a claim for it afterwards is paid as filed care would have been (README
    /// "Reimbursement claims").
    CountsAsFiled,
}

/// A Settle (or PreSettle) call: the visit, the partner settling it and where it gives care,
/// the validated bill, the binder paying (family aid), the pre-settlement it confirms and the
/// time.
#[derive(Debug, Clone)]
pub struct SettleCall {
    /// The visit.
    pub visit_id: Uuid,
    /// The partner settling it.
    pub partner_id: String,
    /// Where the partner gives care.
    pub site: Site,
    /// The bill.
    pub terms: SettleTerms,
    /// With PAY_FROM_BINDER_ACCOUNT: the binder.
    pub binder: Option<Uuid>,
    /// The pre-settlement this Settle confirms, if it names one.
    pub pre_settlement_id: Option<Uuid>,
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

/// How long a pre-settlement may be confirmed by a Settle: 5 minutes, the time a cashier's
/// window keeps a patient at the counter.
pub const PRE_SETTLEMENT_VALIDITY_SECS: i64 = 300;

/// What a split rested on: the holder's year-to-date totals of the bill's year and care type,
/// and the account that may pay (its id, balance and status when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestedOn {
    /// The totals.
    pub year_to_date: YearToDate,
    /// The account that pays what the fund does not (the holder's or the binder's).
    pub paying_account_id: Uuid,
    /// Its balance.
    pub balance_cents: i64,
    /// Its status.
    pub account_status: AccountStatus,
}

/// A pre-settlement: PreSettle's split of a bill, valid for [`PRE_SETTLEMENT_VALIDITY_SECS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreSettlement {
    /// Its id.
    pub id: Uuid,
    /// The visit.
    pub visit_id: Uuid,
    /// The partner that asked (only it may confirm it).
    pub partner_id: String,
    /// [`SettleTerms::sha256`] of what it was for.
    pub terms_sha256: String,
    /// The bill total.
    pub total_cents: i64,
    /// The split.
    pub split: Split,
    /// The facts it rested on.
    pub rested_on: RestedOn,
    /// When.
    pub created_at: NaiveDateTime,
    /// Until when a Settle may confirm it.
    pub expires_at: NaiveDateTime,
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
    /// The holder's insured region (that account's region code).
    pub insured_region_code: &'a str,
    /// The holder's ACTIVE cross-region filings (read when the care is cross-region; empty
    /// otherwise).
    pub filings: &'a [Filing],
    /// With PAY_FROM_BINDER_ACCOUNT: the binder's binding and account.
    pub family_aid: Option<FamilyAidFacts>,
    /// The holder's totals so far in the bill's year and category.
    pub year_to_date: YearToDate,
    /// The pre-settlement the call names, as stored (None: it names none, or none by that id).
    pub pre_settlement: Option<PreSettlement>,
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

/// A new settlement to write: its row (with its details and items), the debit of the account
/// that pays a share, the holder's totals after it, and what it rested on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSettlement {
    /// The settlement.
    pub settlement: Settlement,
    /// The account's debit, when it pays anything.
    pub debit: Option<Debit>,
    /// The holder's year-to-date totals (the bill's year and category) after it.
    pub year_to_date: YearToDate,
    /// The facts the split rested on (what a pre-settlement keeps).
    pub rested_on: RestedOn,
}

impl NewSettlement {
    /// The details written with it.
    pub fn details(&self) -> &SettlementDetails {
        self.settlement.details.as_ref().expect("a new settlement has details")
    }

    /// The pre-settlement PreSettle stores for this decision.
    pub fn pre_settlement(&self, call: &SettleCall) -> PreSettlement {
        PreSettlement {
            id: Uuid::now_v7(),
            visit_id: call.visit_id,
            partner_id: call.partner_id.clone(),
            terms_sha256: call.terms.sha256(call.binder),
            total_cents: call.terms.total_cents,
            split: self.settlement.split(),
            rested_on: self.rested_on,
            created_at: call.now,
            expires_at: call.now + chrono::Duration::seconds(PRE_SETTLEMENT_VALIDITY_SECS),
        }
    }
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

/// The calendar day (China Standard Time) of `at` (UTC): the day a filing must cover.
pub fn care_day(at: NaiveDateTime) -> NaiveDate {
    at.and_utc().with_timezone(&china_standard_time()).date_naive()
}

/// Where the care counts and at what ratio: the treatment region (the site's, else the
/// insured region), whether it is cross-region, the filing that covers it, and the ratio —
/// the policy's own ratio at home or under an ACTIVE filing of the treatment region's pooling
/// region on the care day ([`super::cross_region::covering`]), or where the site's unfiled care
/// counts as filed ([`UnfiledCare::CountsAsFiled`]), else the policy's unfiled ratio, else
/// FAILED_PRECONDITION / CROSS_REGION_NOT_FILED.
pub fn care_terms<'f>(
    policy: &Policy,
    insured_region: &str,
    site: &Site,
    filings: &'f [Filing],
    now: NaiveDateTime,
) -> ApiResult<(String, bool, Option<&'f Filing>, u32)> {
    let treatment = site.region_code.clone().unwrap_or_else(|| insured_region.to_owned());
    if !super::cross_region::is_cross_region(insured_region, &treatment) {
        return Ok((treatment, false, None, policy.reimbursement_ratio_bp));
    }
    if let Some(filing) = super::cross_region::covering(filings, &treatment, care_day(now)) {
        return Ok((treatment, true, Some(filing), policy.reimbursement_ratio_bp));
    }
    if site.unfiled == UnfiledCare::CountsAsFiled {
        return Ok((treatment, true, None, policy.reimbursement_ratio_bp));
    }
    match policy.unfiled_ratio_bp {
        Some(ratio) => Ok((treatment, true, None, ratio)),
        None => Err(ApiError::failed_precondition(
            Reason::CrossRegionNotFiled,
            "care outside the insured region without a cross-region filing is not settled directly under this \
             policy: the person may file it (CrossRegionService.FileCrossRegionCare) or claim reimbursement",
        )
        .with_metadata("treatment_region_code", pooling_region_code(&treatment))),
    }
}

/// Prices a bill's items in the treatment region's catalogue ([`Catalog::lookup`]): an
/// unknown code or a unit price above the item's cap is INVALID_ARGUMENT with a field
/// violation naming the item (`items[3].code`, `items[3].unit_price_cents`), all of them.
pub fn price_items<'c>(catalog: &'c Catalog, treatment_region: &str, items: &[BillItem]) -> ApiResult<Vec<Found<'c>>> {
    let mut found = Vec::with_capacity(items.len());
    let mut violations: Vec<(String, &str)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match catalog.lookup(Some(treatment_region), &item.code) {
            None => violations.push((format!("items[{index}].code"), "not in the treatment region's catalogue")),
            Some(hit) => {
                if hit.item.price_cap_cents.is_some_and(|cap| item.unit_price_cents > cap) {
                    violations.push((
                        format!("items[{index}].unit_price_cents"),
                        "above the catalogue's price cap for this item",
                    ));
                }
                found.push(hit);
            }
        }
    }
    match invalid_fields(violations) {
        Some(error) => Err(error),
        None => Ok(found),
    }
}

/// A pre-settlement named by a Settle stands: it is this visit's and this partner's (else
/// NOT_FOUND / PRE_SETTLEMENT_NOT_FOUND, the answer an unknown id gets), not expired
/// (PRE_SETTLEMENT_EXPIRED), for the same terms (PRE_SETTLEMENT_TERMS_DIFFER), and the facts
/// it rested on are unchanged (PRE_SETTLEMENT_STALE, metadata `changed`: `ytd` or `balance`).
fn confirm_pre_settlement(call: &SettleCall, pre: Option<&PreSettlement>, now_rested_on: &RestedOn) -> ApiResult<()> {
    let not_found = || ApiError::not_found(Reason::PreSettlementNotFound, "no such pre-settlement of this visit");
    let pre = pre.ok_or_else(not_found)?;
    if pre.visit_id != call.visit_id || pre.partner_id != call.partner_id {
        return Err(not_found());
    }
    if call.now >= pre.expires_at {
        return Err(ApiError::failed_precondition(
            Reason::PreSettlementExpired,
            "the pre-settlement has expired: pre-settle again",
        ));
    }
    if pre.terms_sha256 != call.terms.sha256(call.binder) {
        return Err(ApiError::failed_precondition(
            Reason::PreSettlementTermsDiffer,
            "the bill differs from the one pre-settled: send the same terms, or pre-settle again",
        ));
    }
    let stale = |changed: &str| {
        Err(ApiError::failed_precondition(
            Reason::PreSettlementStale,
            format!("what the pre-settlement rested on has changed ({changed}): pre-settle again"),
        )
        .with_metadata("changed", changed))
    };
    if pre.rested_on.year_to_date != now_rested_on.year_to_date {
        return stale("ytd");
    }
    if pre.rested_on != *now_rested_on {
        return stale("balance");
    }
    Ok(())
}

/// Settles one call on its facts, the one decision of the single path, the PostgreSQL batch
/// and PreSettle alike: only the opening partner settles; a settled visit answers a retry with
/// the same terms with its settlement ([`replay_settlement`]); family aid is authorised and the
/// binder's account pays instead of the holder's; the policy is the holder's insured region's
/// for their scheme, the care type and the hospital's level, at the ratio [`care_terms`] gives
/// (cross-region care: filed, unfiled or refused); the items are priced in the treatment
/// region's catalogue ([`price_items`]); the bill is [`split_bill`] with the paying account
/// contributing what [`account_available`] allows; a named pre-settlement must still stand
/// and give the same split; the account share is debited ([`super::ledger::post`]) and the
/// totals move by the split.
pub fn decide(policy: &PolicyTable, catalog: &Catalog, facts: SettleFacts<'_>) -> ApiResult<Decision> {
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
    let rested_on = RestedOn {
        year_to_date: facts.year_to_date,
        paying_account_id: payer.id,
        balance_cents: payer.balance_cents,
        account_status: payer.status,
    };
    if call.pre_settlement_id.is_some() {
        confirm_pre_settlement(call, facts.pre_settlement.as_ref(), &rested_on)?;
    }
    let available = account_available(terms.pay_from, payer.status, payer.balance_cents);
    let policy = policy.policy(facts.insured_region_code, facts.holder_account.scheme, terms.category, call.site.level);
    let (treatment_region, cross_region, filing, ratio_bp) =
        care_terms(&policy, facts.insured_region_code, &call.site, facts.filings, call.now)?;
    let priced = price_items(catalog, &treatment_region, &terms.items)?;
    let lines: Vec<Line> = if terms.items.is_empty() {
        vec![Line { amount_cents: terms.total_cents, class: CoverageClass::A }]
    } else {
        terms
            .items
            .iter()
            .zip(&priced)
            .map(|(item, hit)| Line { amount_cents: item.amount_cents(), class: hit.item.class })
            .collect()
    };
    let (line_splits, totals) = split_bill(&lines, &policy, ratio_bp, facts.year_to_date, available);
    let split = totals.split();
    if let Some(pre) = &facts.pre_settlement
        && call.pre_settlement_id.is_some()
        && pre.split != split
    {
        // The totals and balance are unchanged: the filing that set the ratio is what moved.
        return Err(ApiError::failed_precondition(
            Reason::PreSettlementStale,
            "what the pre-settlement rested on has changed (filing): pre-settle again",
        )
        .with_metadata("changed", "filing"));
    }
    let items = terms
        .items
        .iter()
        .zip(&priced)
        .zip(&line_splits)
        .map(|((item, hit), split)| SettledItem {
            item: item.clone(),
            catalog_version: hit.version.to_owned(),
            class: hit.item.class,
            amount_cents: item.amount_cents(),
            split: *split,
        })
        .collect();
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
        details: Some(SettlementDetails {
            insured_region_code: facts.insured_region_code.to_owned(),
            treatment_region_code: treatment_region.clone(),
            cross_region,
            filing_id: filing.map(|f| f.id),
            hospital_level: call.site.level,
            ratio_bp,
            itemised: !terms.items.is_empty(),
            in_scope_cents: totals.in_scope_cents,
            b_self_pay_cents: totals.b_self_pay_cents,
            c_self_funded_cents: totals.c_self_funded_cents,
            pre_settlement_id: call.pre_settlement_id,
            items,
        }),
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
    Ok(Decision::Settle(NewSettlement { settlement, debit, year_to_date: facts.year_to_date.plus(&split), rested_on }))
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
        Policy {
            deductible_cents,
            reimbursement_ratio_bp,
            annual_cap_cents,
            b_self_pay_bp: 1_000,
            unfiled_ratio_bp: None,
        }
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
                site: Site { region_code: None, level: HospitalLevel::Ungraded, unfiled: UnfiledCare::AsThePolicySays },
                binder: None,
                pre_settlement_id: None,
                terms: settle_terms(total_cents, Category::Outpatient, pay_from, "x-ray", vec![]).unwrap(),
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
                insured_region_code: "110105",
                filings: &[],
                family_aid: None,
                year_to_date: YearToDate::default(),
                pre_settlement: None,
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
        let new = settled(decide(&table, &Catalog::builtin(), c.facts()));
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
        let new = settled(decide(&PolicyTable::builtin(), &Catalog::builtin(), c.facts()));
        assert_eq!((new.settlement.account_cents, new.settlement.self_cents), (2_500, 7_500));
        assert_eq!(new.debit.unwrap().balance_after_cents, 0);

        let empty = case(10_000, PayFrom::HolderAccount, 0);
        let new = settled(decide(&PolicyTable::builtin(), &Catalog::builtin(), empty.facts()));
        assert_eq!((new.settlement.charged_account_id, new.debit), (None, None), "nothing paid, nothing posted");
    }

    #[test]
    fn a_suspended_account_or_self_pay_is_not_debited() {
        let mut c = case(10_000, PayFrom::HolderAccount, 50_000);
        c.holder.status = AccountStatus::Suspended;
        let new = settled(decide(&PolicyTable::builtin(), &Catalog::builtin(), c.facts()));
        assert_eq!((new.settlement.account_cents, new.settlement.self_cents, new.debit), (0, 10_000, None));
        let c = case(10_000, PayFrom::SelfPay, 50_000);
        let new = settled(decide(&PolicyTable::builtin(), &Catalog::builtin(), c.facts()));
        assert_eq!((new.settlement.account_cents, new.settlement.self_cents, new.debit), (0, 10_000, None));
    }

    #[test]
    fn once_the_annual_cap_is_reached_the_fund_pays_nothing() {
        let c = case(100_000, PayFrom::SelfPay, 0);
        let cap = at("110105", Scheme::Employee, Category::Outpatient, HospitalLevel::Ungraded).annual_cap_cents;
        let reached = YearToDate { total_cents: 9_000_000, fund_cents: cap, deductible_cents: 180_000 };
        let new = settled(decide(
            &PolicyTable::builtin(),
            &Catalog::builtin(),
            SettleFacts { year_to_date: reached, ..c.facts() },
        ));
        assert_eq!((new.settlement.fund_cents, new.settlement.self_cents), (0, 100_000));
        assert_eq!(new.year_to_date.fund_cents, cap);
        assert_eq!(new.year_to_date.total_cents, 9_100_000);
    }

    #[test]
    fn only_the_opening_partner_settles() {
        let c = case(1_000, PayFrom::HolderAccount, 0);
        let error =
            decide(&PolicyTable::builtin(), &Catalog::builtin(), SettleFacts { opened_by: "pharmacy-9", ..c.facts() })
                .unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::PermissionDenied, Reason::VisitPartnerMismatch));
    }

    #[test]
    fn a_settled_visit_replays_the_same_terms_and_refuses_others() {
        let table = PolicyTable::builtin();
        let c = case(1_000, PayFrom::HolderAccount, 5_000);
        let first = settled(decide(&table, &Catalog::builtin(), c.facts())).settlement;
        let replay =
            decide(&table, &Catalog::builtin(), SettleFacts { earlier: Some(first.clone()), ..c.facts() }).unwrap();
        assert_eq!(replay, Decision::Replay(first.clone()));

        let mut other = c.call.clone();
        other.terms.total_cents = 1_001;
        let facts = SettleFacts { call: &other, earlier: Some(first), ..c.facts() };
        let error = decide(&table, &Catalog::builtin(), facts).unwrap_err();
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
        let new = settled(decide(&PolicyTable::builtin(), &Catalog::builtin(), facts));
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
            let error = decide(&table, &Catalog::builtin(), SettleFacts { family_aid: Some(family_aid), ..c.facts() })
                .unwrap_err();
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
        let new = settled(decide(
            &PolicyTable::builtin(),
            &Catalog::builtin(),
            SettleFacts { year_to_date: before, ..c.facts() },
        ));
        assert_eq!(year_to_date_after_reversal(new.year_to_date, &new.settlement), before);
    }

    #[test]
    fn a_retry_must_repeat_the_terms() {
        let first = settle_terms(1_000, Category::Outpatient, PayFrom::HolderAccount, "x-ray", vec![]).unwrap();
        assert!(replay_settlement(&first, &first.clone()).is_ok());
        let other = SettleTerms { total_cents: 1_001, ..first.clone() };
        assert_eq!(replay_settlement(&first, &other).unwrap_err().reason(), Reason::VisitAlreadySettled);
    }

    #[test]
    fn settle_terms_are_bounded() {
        assert!(settle_terms(0, Category::Pharmacy, PayFrom::SelfPay, "", vec![]).is_err());
        assert!(settle_terms(MAX_BILL_CENTS + 1, Category::Pharmacy, PayFrom::SelfPay, "", vec![]).is_err());
        assert!(settle_terms(MAX_BILL_CENTS, Category::Pharmacy, PayFrom::SelfPay, &"药".repeat(500), vec![]).is_ok());
        let error = settle_terms(1, Category::Pharmacy, PayFrom::SelfPay, &"药".repeat(501), vec![]).unwrap_err();
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
            vec![
                (Category::Outpatient, 3_000),
                (Category::Inpatient, 0),
                (Category::Pharmacy, 400),
                (Category::ChronicSpecial, 0)
            ]
        );
        let months: Vec<_> = expenses.by_month.iter().map(|(m, t)| (*m, t.total_cents)).collect();
        assert_eq!(months, vec![(3, 1_000), (4, 400), (7, 2_000)]);
    }

    const BEIJING: &str = "110105";
    const SHANGHAI: &str = "310115";

    fn at(region: &str, scheme: Scheme, category: Category, level: HospitalLevel) -> Policy {
        PolicyTable::builtin().policy(region, scheme, category, level)
    }

    #[test]
    fn the_builtin_policy_covers_every_region_scheme_care_type_and_level() {
        let table = PolicyTable::builtin();
        for region in [BEIJING, SHANGHAI, "440305"] {
            for scheme in [Scheme::Employee, Scheme::Resident] {
                for &category in Category::ALL {
                    for level in HospitalLevel::ALL {
                        let p = table.policy(region, scheme, category, level);
                        assert!(p.reimbursement_ratio_bp <= FULL_RATIO_BP && p.annual_cap_cents > 0);
                        assert!(p.unfiled_ratio_bp.is_none_or(|u| u <= p.reimbursement_ratio_bp));
                    }
                }
            }
        }
        // The national base, unchanged for ungraded institutions (the terms before levels).
        let base = Policy { unfiled_ratio_bp: Some(5_000), ..policy(180_000, 7_000, 2_000_000) };
        assert_eq!(at(BEIJING, Scheme::Employee, Category::Outpatient, HospitalLevel::Ungraded), base);
        assert_eq!(
            at(BEIJING, Scheme::Resident, Category::Pharmacy, HospitalLevel::Pharmacy),
            Policy { b_self_pay_bp: 1_500, ..policy(10_000, 5_000, 200_000) }
        );
        // A level override changes only the keys it lists.
        let level_1 = at(BEIJING, Scheme::Employee, Category::Outpatient, HospitalLevel::Level1);
        assert_eq!(level_1, Policy { reimbursement_ratio_bp: 8_000, ..base });
        // Shanghai's table: its deductible on top of the national level entry.
        let shanghai = at(SHANGHAI, Scheme::Employee, Category::Outpatient, HospitalLevel::Level1);
        assert_eq!(shanghai, Policy { deductible_cents: 150_000, ..level_1 });
        assert_eq!(
            at(SHANGHAI, Scheme::Employee, Category::Inpatient, HospitalLevel::Level3).reimbursement_ratio_bp,
            8_500
        );
        assert_eq!(
            at(BEIJING, Scheme::Employee, Category::Inpatient, HospitalLevel::Level3).reimbursement_ratio_bp,
            8_000
        );
        // Pharmacy and chronic-disease care elsewhere needs a filing.
        assert_eq!(
            at(BEIJING, Scheme::Employee, Category::ChronicSpecial, HospitalLevel::Level2).unfiled_ratio_bp,
            None
        );
    }

    #[test]
    fn a_policy_file_is_parsed_and_a_bad_entry_is_named() {
        let custom = DEFAULT_POLICY_TOML.replace("deductible_cents = 130000", "deductible_cents = 0");
        let table = PolicyTable::from_toml_str(&custom).unwrap();
        assert_eq!(
            table.policy(BEIJING, Scheme::Employee, Category::Inpatient, HospitalLevel::Level2).deductible_cents,
            0
        );

        let error = |text: &str| PolicyTable::from_toml_str(text).unwrap_err().to_string();
        let missing = DEFAULT_POLICY_TOML.replace("[NATIONAL.RESIDENT.PHARMACY]", "[NATIONAL.RESIDENT.UNUSED]");
        assert!(error(&missing).contains("UNUSED"), "{}", error(&missing));
        let no_chronic = DEFAULT_POLICY_TOML
            .replace("[NATIONAL.RESIDENT.CHRONIC_SPECIAL]", "[REGION.440300.RESIDENT.CHRONIC_SPECIAL]");
        assert!(
            error(&no_chronic).contains("NATIONAL.RESIDENT.CHRONIC_SPECIAL: entry missing"),
            "{}",
            error(&no_chronic)
        );
        let incomplete =
            DEFAULT_POLICY_TOML.replacen("b_self_pay_bp = 1000\nunfiled_ratio_bp = 5000", "unfiled_ratio_bp = 5000", 1);
        assert!(
            error(&incomplete).contains("NATIONAL.EMPLOYEE.OUTPATIENT: b_self_pay_bp missing"),
            "{}",
            error(&incomplete)
        );
        let unknown_key = DEFAULT_POLICY_TOML.replacen("annual_cap_cents", "annual_cap_yuan", 1);
        assert!(PolicyTable::from_toml_str(&unknown_key).is_err());
        let unknown_level = DEFAULT_POLICY_TOML.replacen("OUTPATIENT.LEVEL_1]", "OUTPATIENT.LEVEL_4]", 1);
        assert!(PolicyTable::from_toml_str(&unknown_level).is_err());

        let ratio = DEFAULT_POLICY_TOML.replacen("reimbursement_ratio_bp = 8000", "reimbursement_ratio_bp = 10001", 1);
        let message = error(&ratio);
        assert!(
            message.contains("NATIONAL.EMPLOYEE.OUTPATIENT.LEVEL_1") && message.contains("reimbursement_ratio_bp"),
            "{message}"
        );
        let negative = DEFAULT_POLICY_TOML.replacen("deductible_cents = 150000", "deductible_cents = -1", 1);
        assert!(
            error(&negative).contains("REGION.310000.EMPLOYEE.OUTPATIENT: deductible_cents"),
            "{}",
            error(&negative)
        );
        let unfiled_above =
            DEFAULT_POLICY_TOML.replacen("reimbursement_ratio_bp = 6500", "reimbursement_ratio_bp = 4000", 1);
        let message = error(&unfiled_above);
        assert!(
            message.contains("NATIONAL.EMPLOYEE.OUTPATIENT.LEVEL_3") && message.contains("unfiled_ratio_bp"),
            "{message}"
        );
        let not_pooling = DEFAULT_POLICY_TOML.replace("REGION.310000", "REGION.310115");
        assert!(error(&not_pooling).contains("REGION.310115"), "{}", error(&not_pooling));

        // A region may take unfiled care away.
        let no_unfiled = format!("{DEFAULT_POLICY_TOML}\n[REGION.440300.EMPLOYEE.OUTPATIENT]\nno_unfiled = true\n");
        let table = PolicyTable::from_toml_str(&no_unfiled).unwrap();
        assert_eq!(
            table.policy("440305", Scheme::Employee, Category::Outpatient, HospitalLevel::Level2).unfiled_ratio_bp,
            None
        );
        assert_eq!(
            table.policy(BEIJING, Scheme::Employee, Category::Outpatient, HospitalLevel::Level2).unfiled_ratio_bp,
            Some(5_000)
        );

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

    fn item(code: &str, quantity_milli: i64, unit_price_cents: i64) -> BillItem {
        BillItem {
            code: code.into(),
            quantity_milli,
            unit_price_cents,
            department_code: "NEI-01".into(),
            department_name: "内科".into(),
        }
    }

    /// A, B and C items of the built-in catalogue: amoxicillin (A, cap 1 800), albumin (B, cap
    /// 45 000), vitamins (C, no cap), CT (B, cap 30 000).
    fn abc_items() -> Vec<BillItem> {
        vec![
            item("XJ01CAA040A001010101", 2_000, 1_500),  // A: 2 boxes x 15.00 = 3 000
            item("XB05AAR040B002010101", 1_500, 40_000), // B: 1.5 x 400.00 = 60 000
            item("XA11HAX001A001010101", 1_000, 2_345),  // C: 2 345
            item("210300001", 1_000, 25_001),            // B: 25 001
        ]
    }

    #[test]
    fn an_itemised_bill_is_split_per_item_with_the_deductible_crossed_inside_it() {
        let items = abc_items();
        let total: i64 = items.iter().map(BillItem::amount_cents).sum();
        assert_eq!(total, 90_346);
        let mut c = case(total, PayFrom::HolderAccount, 10_000);
        c.call.terms = settle_terms(total, Category::Outpatient, PayFrom::HolderAccount, "", items).unwrap();
        // 170 000 of the 180 000 deductible already used: 10 000 left, crossed in item 1.
        let ytd = YearToDate { total_cents: 170_000, fund_cents: 0, deductible_cents: 170_000 };
        let new = settled(decide(
            &PolicyTable::builtin(),
            &Catalog::builtin(),
            SettleFacts { year_to_date: ytd, ..c.facts() },
        ));
        let d = new.settlement.details.clone().unwrap();
        let lines: Vec<_> = d.items.iter().map(|i| i.split).collect();
        // Scope: A whole; B 10 % first (6 000 and 2 500.1 -> 2 500); C outside.
        assert_eq!(lines.iter().map(|l| l.in_scope_cents).collect::<Vec<_>>(), vec![3_000, 54_000, 0, 22_501]);
        assert_eq!(lines.iter().map(|l| l.b_self_pay_cents).collect::<Vec<_>>(), vec![0, 6_000, 0, 2_500]);
        assert_eq!(lines.iter().map(|l| l.c_self_funded_cents).collect::<Vec<_>>(), vec![0, 0, 2_345, 0]);
        // The deductible: 3 000 from item 0, the other 7 000 from item 1.
        assert_eq!(lines.iter().map(|l| l.deductible_cents).collect::<Vec<_>>(), vec![3_000, 7_000, 0, 0]);
        // The fund: 70 % of 47 000 + 22 501 = 48 650.7 -> 48 650, spread 32 900 + 15 750.7.
        assert_eq!(new.settlement.fund_cents, 48_650);
        assert_eq!(lines.iter().map(|l| l.fund_cents).collect::<Vec<_>>(), vec![0, 32_900, 0, 15_750]);
        // The account: 10 000 item by item, the rest self-pay.
        assert_eq!(lines.iter().map(|l| l.account_cents).collect::<Vec<_>>(), vec![3_000, 7_000, 0, 0]);
        for (l, i) in lines.iter().zip(&d.items) {
            assert_eq!(l.fund_cents + l.account_cents + l.self_cents, i.amount_cents);
            assert_eq!(l.in_scope_cents + l.b_self_pay_cents + l.c_self_funded_cents, i.amount_cents);
        }
        assert_eq!((d.in_scope_cents, d.b_self_pay_cents, d.c_self_funded_cents), (79_501, 8_500, 2_345));
        assert_eq!(new.settlement.deductible_cents, 10_000);
        assert_eq!(new.year_to_date.deductible_cents, 180_000);
        assert_eq!((d.treatment_region_code.as_str(), d.cross_region, d.ratio_bp), ("110105", false, 7_000));
        assert_eq!(d.items[1].class, CoverageClass::B);
        assert_eq!(d.items[0].catalog_version, "NATIONAL-2026-12");
    }

    #[test]
    fn the_annual_cap_stops_the_fund_inside_a_bill() {
        let items = abc_items();
        let total: i64 = items.iter().map(BillItem::amount_cents).sum();
        let mut c = case(total, PayFrom::SelfPay, 0);
        c.call.terms = settle_terms(total, Category::Outpatient, PayFrom::SelfPay, "", items).unwrap();
        let ytd = YearToDate { total_cents: 3_000_000, fund_cents: 2_000_000 - 1_001, deductible_cents: 180_000 };
        let new = settled(decide(
            &PolicyTable::builtin(),
            &Catalog::builtin(),
            SettleFacts { year_to_date: ytd, ..c.facts() },
        ));
        assert_eq!(new.settlement.fund_cents, 1_001);
        assert_eq!(new.year_to_date.fund_cents, 2_000_000);
        let items = &new.settlement.details.as_ref().unwrap().items;
        assert_eq!(items.iter().map(|i| i.split.fund_cents).sum::<i64>(), 1_001);
    }

    #[test]
    fn bad_items_are_named_one_by_one() {
        let violations = |error: ApiError| error.violated_fields().into_iter().map(str::to_owned).collect::<Vec<_>>();
        let mut items = abc_items();
        items[0].code = "bad code".into();
        items[1].quantity_milli = 0;
        items[2].department_code = String::new();
        items[3].unit_price_cents = -5;
        let error = settle_terms(1, Category::Outpatient, PayFrom::SelfPay, "", items).unwrap_err();
        assert_eq!(
            violations(error),
            vec!["items[0].code", "items[1].quantity_milli", "items[2].department_code", "items[3].unit_price_cents"]
        );
        let error = settle_terms(90_345, Category::Outpatient, PayFrom::SelfPay, "", abc_items()).unwrap_err();
        assert_eq!(violations(error), vec!["total_cents"]);

        // The catalogue: an unknown code and a price over its cap.
        let mut items = abc_items();
        items[0].code = "XX0000".into();
        items[3].unit_price_cents = 30_001;
        let total = items.iter().map(BillItem::amount_cents).sum();
        let mut c = case(total, PayFrom::SelfPay, 0);
        c.call.terms = settle_terms(total, Category::Outpatient, PayFrom::SelfPay, "", items).unwrap();
        let error = decide(&PolicyTable::builtin(), &Catalog::builtin(), c.facts()).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert_eq!(violations(error), vec!["items[0].code", "items[3].unit_price_cents"]);
    }

    fn filing(destination: &str, status: super::super::cross_region::FilingStatus) -> Filing {
        let day = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
        Filing {
            id: Uuid::now_v7(),
            person_id: Uuid::now_v7(),
            insured_region_code: "110105".into(),
            destination_region_code: destination.into(),
            kind: super::super::cross_region::FilingKind::LongTermResidence,
            starts_on: day,
            ends_on: None,
            status,
            filed_by: "app".into(),
            filed_at: day.and_hms_opt(0, 0, 0).unwrap(),
            cancelled_at: None,
        }
    }

    #[test]
    fn cross_region_care_uses_the_treatment_catalogue_the_insured_policy_and_the_filing() {
        use super::super::cross_region::FilingStatus;
        let table = PolicyTable::builtin();
        let catalog = Catalog::builtin();
        // Shanghai's own book caps the consultation at 1 400 (national: 1 000).
        let bill = vec![item("110200001", 1_000, 1_200)];
        let mut c = case(1_200, PayFrom::SelfPay, 0);
        c.call.terms = settle_terms(1_200, Category::Outpatient, PayFrom::SelfPay, "", bill).unwrap();
        c.call.site = Site {
            region_code: Some("310104".into()),
            level: HospitalLevel::Level3,
            unfiled: UnfiledCare::AsThePolicySays,
        };
        let spent = YearToDate { deductible_cents: 180_000, ..YearToDate::default() };

        let filed = [filing("310115", FilingStatus::Active)];
        let new = settled(decide(&table, &catalog, SettleFacts { filings: &filed, year_to_date: spent, ..c.facts() }));
        let d = new.settlement.details.unwrap();
        assert_eq!((d.insured_region_code.as_str(), d.treatment_region_code.as_str()), ("110105", "310104"));
        assert!(d.cross_region);
        assert_eq!(d.filing_id, Some(filed[0].id));
        // The insured region's (national) LEVEL_3 ratio, 65 %.
        assert_eq!((d.ratio_bp, new.settlement.fund_cents), (6_500, 780));
        assert_eq!(d.items[0].catalog_version, "310000-2026-12");

        // Without a filing (or with a cancelled one): the unfiled ratio, 50 %.
        let cancelled = [filing("310115", FilingStatus::Cancelled)];
        let new =
            settled(decide(&table, &catalog, SettleFacts { filings: &cancelled, year_to_date: spent, ..c.facts() }));
        let d = new.settlement.details.unwrap();
        assert_eq!((d.filing_id, d.ratio_bp, new.settlement.fund_cents), (None, 5_000, 600));
        // Unfiled care that counts as filed (emergency care, claimed): the filed ratio, no filing.
        c.call.site.unfiled = UnfiledCare::CountsAsFiled;
        let new = settled(decide(&table, &catalog, SettleFacts { year_to_date: spent, ..c.facts() }));
        let d = new.settlement.details.unwrap();
        assert_eq!((d.cross_region, d.filing_id, d.ratio_bp, new.settlement.fund_cents), (true, None, 6_500, 780));

        // Nationally the same price is over the cap: the treatment region's book decides.
        c.call.site.region_code = Some("110108".into());
        let error = decide(&table, &catalog, SettleFacts { year_to_date: spent, ..c.facts() }).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);

        // Chronic-disease care elsewhere without a filing is not settled directly.
        let mut c = case(1_000, PayFrom::SelfPay, 0);
        c.call.terms.category = Category::ChronicSpecial;
        c.call.site = Site {
            region_code: Some("440305".into()),
            level: HospitalLevel::Level2,
            unfiled: UnfiledCare::AsThePolicySays,
        };
        let error = decide(&table, &catalog, c.facts()).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::CrossRegionNotFiled));
        let other_region = [filing("310115", FilingStatus::Active)];
        let error = decide(&table, &catalog, SettleFacts { filings: &other_region, ..c.facts() }).unwrap_err();
        assert_eq!(error.reason(), Reason::CrossRegionNotFiled, "a filing for another region covers nothing here");
        let there = [filing("440300", FilingStatus::Active)];
        let new = settled(decide(&table, &catalog, SettleFacts { filings: &there, ..c.facts() }));
        assert_eq!(new.settlement.details.unwrap().ratio_bp, 8_500);
        // Where the policy settles no unfiled care at all, emergency care still counts as filed.
        c.call.site.unfiled = UnfiledCare::CountsAsFiled;
        let new = settled(decide(&table, &catalog, c.facts()));
        let d = new.settlement.details.unwrap();
        assert_eq!((d.filing_id, d.ratio_bp), (None, 8_500));
    }

    #[test]
    fn a_pre_settlement_is_confirmed_only_while_it_stands() {
        let table = PolicyTable::builtin();
        let catalog = Catalog::builtin();
        let c = case(200_000, PayFrom::HolderAccount, 50_000);
        let new = settled(decide(&table, &catalog, c.facts()));
        let pre = new.pre_settlement(&c.call);
        assert_eq!(pre.expires_at - pre.created_at, chrono::Duration::minutes(5));

        let mut confirm = c.call.clone();
        confirm.pre_settlement_id = Some(pre.id);
        confirm.now += chrono::Duration::minutes(4);
        let with = |pre: Option<PreSettlement>| SettleFacts { call: &confirm, pre_settlement: pre, ..c.facts() };
        let again = settled(decide(&table, &catalog, with(Some(pre.clone()))));
        assert_eq!(again.settlement.split(), pre.split);
        assert_eq!(again.settlement.details.unwrap().pre_settlement_id, Some(pre.id));

        let refused = |facts: SettleFacts<'_>| {
            let e = decide(&table, &catalog, facts).unwrap_err();
            (e.code(), e.reason(), e.metadata_value("changed").map(str::to_owned))
        };
        assert_eq!(refused(with(None)).1, Reason::PreSettlementNotFound);
        let other_partner = PreSettlement { partner_id: "hospital-2".into(), ..pre.clone() };
        assert_eq!(refused(with(Some(other_partner))).1, Reason::PreSettlementNotFound);
        let expired = PreSettlement { expires_at: confirm.now, ..pre.clone() };
        assert_eq!(refused(with(Some(expired))).1, Reason::PreSettlementExpired);
        let moved = SettleFacts {
            year_to_date: YearToDate { total_cents: 1, fund_cents: 0, deductible_cents: 1 },
            ..with(Some(pre.clone()))
        };
        assert_eq!(refused(moved), (tonic::Code::FailedPrecondition, Reason::PreSettlementStale, Some("ytd".into())));
        let credited = SettleFacts {
            holder_account: AccountFacts { balance_cents: 50_001, ..c.holder },
            ..with(Some(pre.clone()))
        };
        assert_eq!(refused(credited).2, Some("balance".into()));
        let mut other_terms = confirm.clone();
        other_terms.terms.items_summary = "other".into();
        let facts = SettleFacts { call: &other_terms, pre_settlement: Some(pre.clone()), ..c.facts() };
        assert_eq!(refused(facts).1, Reason::PreSettlementTermsDiffer);
    }

    fn class() -> impl Strategy<Value = CoverageClass> {
        prop_oneof![Just(CoverageClass::A), Just(CoverageClass::B), Just(CoverageClass::C)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// For any itemised bill and any year before it: every item and the bill are paid in
        /// full (fund + account + self = amount), no share is negative, scope adds up, the fund
        /// pays only in-scope money above the deductible, and the year's fund never passes the cap.
        #[test]
        fn every_item_is_accounted_for_and_the_cap_holds(
            p in (0..=500_000i64, 0..=FULL_RATIO_BP, 0..=5_000_000i64, 0..=FULL_RATIO_BP),
            ratio in 0..=FULL_RATIO_BP,
            lines in proptest::collection::vec((1..=5_000_000i64, class()), 1..20),
            ytd in (0..=600_000i64, 0..=6_000_000i64),
            available in 0..=3_000_000i64,
        ) {
            let policy = Policy { deductible_cents: p.0, reimbursement_ratio_bp: p.1, annual_cap_cents: p.2, b_self_pay_bp: p.3, unfiled_ratio_bp: None };
            let lines: Vec<Line> = lines.into_iter().map(|(amount_cents, class)| Line { amount_cents, class }).collect();
            let before = YearToDate { total_cents: ytd.0, fund_cents: ytd.1.min(policy.annual_cap_cents), deductible_cents: ytd.0.min(policy.deductible_cents) };
            let (splits, totals) = split_bill(&lines, &policy, ratio, before, available);
            let mut sum = LineSplit::default();
            for (s, line) in splits.iter().zip(&lines) {
                prop_assert_eq!(s.fund_cents + s.account_cents + s.self_cents, line.amount_cents);
                prop_assert_eq!(s.in_scope_cents + s.b_self_pay_cents + s.c_self_funded_cents, line.amount_cents);
                for part in [s.in_scope_cents, s.b_self_pay_cents, s.c_self_funded_cents, s.deductible_cents, s.fund_cents, s.account_cents, s.self_cents] {
                    prop_assert!(part >= 0);
                }
                prop_assert!(s.deductible_cents + s.fund_cents <= s.in_scope_cents);
                if line.class == CoverageClass::C {
                    prop_assert_eq!(s.fund_cents, 0);
                }
                sum.add(s);
            }
            prop_assert_eq!(sum, totals);
            let total: i64 = lines.iter().map(|l| l.amount_cents).sum();
            prop_assert_eq!(totals.amount_cents(), total);
            prop_assert!(totals.account_cents <= available);
            let after = before.plus(&totals.split());
            prop_assert!(after.fund_cents <= policy.annual_cap_cents);
            prop_assert!(after.deductible_cents <= policy.deductible_cents);
            let eligible = totals.in_scope_cents - totals.deductible_cents;
            prop_assert_eq!(totals.fund_cents, (eligible * i64::from(ratio) / 10_000).min(policy.annual_cap_cents - before.fund_cents));
        }
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
