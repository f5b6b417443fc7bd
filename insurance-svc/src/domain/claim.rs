//! Reimbursement claims for bills paid out of pocket (`ReimbursementService`; README
//! "Reimbursement claims"): what a claim must say, the review's state machine and how an
//! approved claim is paid. Pure: no I/O.
//!
//! ```text
//! SUBMITTED --approve--> APPROVED (settled: one settlement, the fund share paid out)
//!           --reject---> REJECTED (the reason kept, nothing paid)
//! ```
//!
//! A reviewed claim is never reviewed again (CLAIM_ALREADY_REVIEWED). An approved claim is
//! settled by the one settlement decision (`domain::settlement::decide`) as a self-paid bill:
//! the person already paid the whole bill, so the individual account pays nothing at the
//! counter; the fund's share is then paid back to the person, credited to their individual
//! account (a CLAIM_REIMBURSEMENT ledger entry) or sent by bank transfer (its reference kept).

use std::collections::BTreeSet;

use chrono::NaiveDate;
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::HospitalLevel,
    validate::{PageSize, TextField},
};
use uuid::Uuid;

use super::{
    account::is_region_code,
    catalog::{Catalog, is_item_code},
    settlement::{BILL_TOTAL, Category, Site, UnfiledCare},
};

medins_common::text_enum! {
    /// Why the bill was not settled directly at the counter.
    pub enum NotSettledBecause {
        /// Emergency care in another region without a cross-region filing.
        EmergencyElsewhereUnfiled => "EMERGENCY_ELSEWHERE_UNFILED",
        /// The hospital could not settle directly (system down, not connected).
        HospitalCouldNotSettle => "HOSPITAL_COULD_NOT_SETTLE",
        /// Anything else; the reviewer reads the invoices.
        Other => "OTHER",
    }
}

medins_common::text_enum! {
    /// Where the fund's share of an approved claim goes.
    pub enum Payout {
        /// Credited to the person's individual account.
        Account => "ACCOUNT",
        /// Sent by bank transfer; the reviewer records the transfer's reference.
        BankTransfer => "BANK_TRANSFER",
    }
}

medins_common::text_enum! {
    /// Where a claim stands.
    pub enum ClaimStatus {
        /// Waiting for an operator's review.
        Submitted => "SUBMITTED",
        /// Approved and settled.
        Approved => "APPROVED",
        /// Refused, with a reason.
        Rejected => "REJECTED",
    }
}

/// The hospital's name as printed on the invoices.
pub const HOSPITAL_NAME: TextField = TextField { max_chars: 100, required: true };
/// A reviewer's reason for refusing a claim (shown to the person).
pub const REJECTION_REASON: TextField = TextField { max_chars: 200, required: true };
/// Most items on one claim.
pub const MAX_ITEMS: usize = 200;
/// Most invoice documents on one claim.
pub const MAX_DOCUMENTS: usize = 10;
/// Most units of one item.
pub const MAX_QUANTITY: i64 = 10_000;
/// How old care may be when it is claimed: a year (the claim window).
pub const CLAIM_WINDOW_DAYS: i64 = 365;
/// Longest bank transfer reference.
pub const MAX_TRANSFER_REFERENCE: usize = 64;
/// Claims of one page: 20 by default, at most 100, larger requests refused.
pub const CLAIM_PAGE: PageSize = PageSize { default: 20, max: 100, cap: false };

/// One billed item, as the invoice lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimItem {
    /// Catalogue code (as it applies in the hospital's region).
    pub code: String,
    /// Units, 1 to [`MAX_QUANTITY`].
    pub quantity: i64,
    /// Price of one unit in cents, at least 1 and at most the item's price cap.
    pub unit_price_cents: i64,
}

/// An item as the request sends it (the wire's fields, unchecked).
#[derive(Debug, Clone, Copy)]
pub struct RawItem<'a> {
    /// Catalogue code.
    pub code: &'a str,
    /// Units.
    pub quantity: i64,
    /// Unit price in cents.
    pub unit_price_cents: i64,
}

/// The validated facts of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimTerms {
    /// The hospital's name.
    pub hospital_name: String,
    /// The hospital's region (six digits).
    pub hospital_region_code: String,
    /// The care type.
    pub category: Category,
    /// The day of care (China Standard Time).
    pub care_date: NaiveDate,
    /// Why it was not settled directly.
    pub because: NotSettledBecause,
    /// The items, in invoice order.
    pub items: Vec<ClaimItem>,
    /// The bill total: the sum of the items.
    pub total_cents: i64,
    /// Where the fund's share goes.
    pub payout: Payout,
    /// The invoice documents (ids, in request order, no repeats).
    pub documents: Vec<Uuid>,
}

/// The request of a claim, unchecked (the wire's fields).
#[derive(Debug, Clone)]
pub struct RawClaim<'a> {
    /// Hospital name.
    pub hospital_name: &'a str,
    /// Hospital region code.
    pub hospital_region_code: &'a str,
    /// Care type.
    pub category: Category,
    /// Day of care.
    pub care_date: NaiveDate,
    /// Why not settled directly.
    pub because: NotSettledBecause,
    /// Items.
    pub items: Vec<RawItem<'a>>,
    /// Declared total.
    pub total_cents: i64,
    /// Payout.
    pub payout: Payout,
    /// Invoice document ids, as sent.
    pub documents: &'a [String],
}

/// Checks a claim: every field, and every item against the catalogue as it applies in the
/// hospital's region. INVALID_ARGUMENT with one field violation per bad field or item (unknown
/// code, price over the item's cap, quantity out of range), and on `total_cents` when the items
/// do not add up to it; nothing is read or written for a refused claim.
pub fn claim_terms(catalog: &Catalog, raw: RawClaim<'_>, today: NaiveDate) -> ApiResult<ClaimTerms> {
    let mut violations: Vec<(String, String)> = Vec::new();
    let mut bad = |field: String, description: &str| violations.push((field, description.to_owned()));
    let hospital_name = match HOSPITAL_NAME.check("hospital_name", raw.hospital_name) {
        Ok(name) => name,
        Err(_) => {
            bad("hospital_name".into(), "1-100 characters, no control characters");
            String::new()
        }
    };
    let region_ok = is_region_code(raw.hospital_region_code);
    if !region_ok {
        bad("hospital_region_code".into(), "must be a six-digit region code");
    }
    if raw.care_date > today {
        bad("care_date".into(), "must not be in the future");
    } else if (today - raw.care_date).num_days() > CLAIM_WINDOW_DAYS {
        bad("care_date".into(), "care more than a year ago is no longer claimed");
    }
    if raw.items.is_empty() || raw.items.len() > MAX_ITEMS {
        bad("items".into(), "1 to 200 items");
    }
    let mut items = Vec::with_capacity(raw.items.len());
    let mut sum: i64 = 0;
    for (index, item) in raw.items.iter().enumerate() {
        let field = |name: &str| format!("items[{index}].{name}");
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            bad(field("quantity"), "1 to 10000");
        }
        if BILL_TOTAL.check("unit_price_cents", item.unit_price_cents).is_err() {
            bad(field("unit_price_cents"), "1 cent to 1 000 000 yuan");
        }
        let found = if is_item_code(item.code) && region_ok {
            catalog.lookup(Some(raw.hospital_region_code), item.code)
        } else {
            None
        };
        match found {
            None => bad(field("code"), "not a catalogue item where the hospital is"),
            Some(found) => {
                if found.item.price_cap_cents.is_some_and(|cap| item.unit_price_cents > cap) {
                    bad(field("unit_price_cents"), "above the item's price cap");
                }
            }
        }
        sum = sum.saturating_add(item.quantity.saturating_mul(item.unit_price_cents));
        items.push(ClaimItem {
            code: item.code.to_owned(),
            quantity: item.quantity,
            unit_price_cents: item.unit_price_cents,
        });
    }
    if BILL_TOTAL.check("total_cents", raw.total_cents).is_err() {
        bad("total_cents".into(), "1 cent to 1 000 000 yuan");
    } else if sum != raw.total_cents {
        bad("total_cents".into(), "must be the sum of quantity x unit price over the items");
    }
    let mut documents = Vec::new();
    let mut seen = BTreeSet::new();
    if raw.documents.is_empty() || raw.documents.len() > MAX_DOCUMENTS {
        bad("invoice_document_ids".into(), "1 to 10 invoice documents");
    }
    for (index, id) in raw.documents.iter().enumerate() {
        match Uuid::parse_str(id) {
            Ok(id) if seen.insert(id) => documents.push(id),
            Ok(_) => bad(format!("invoice_document_ids[{index}]"), "named twice"),
            Err(_) => bad(format!("invoice_document_ids[{index}]"), "must be a UUID"),
        }
    }
    if let Some(((field, description), rest)) = violations.split_first() {
        let mut error = ApiError::invalid_field(Reason::InvalidArgument, field, description.clone());
        for (field, description) in rest {
            error = error.with_field_violation(field, description.clone());
        }
        return Err(error);
    }
    Ok(ClaimTerms {
        hospital_name,
        hospital_region_code: raw.hospital_region_code.to_owned(),
        category: raw.category,
        care_date: raw.care_date,
        because: raw.because,
        items,
        total_cents: raw.total_cents,
        payout: raw.payout,
        documents,
    })
}

/// The items summary of a claim's settlement: the codes and quantities, no personal data
/// (the settlement row's 500 characters; a long bill is cut with "...").
pub fn items_summary(items: &[ClaimItem]) -> String {
    let mut summary = String::new();
    for item in items {
        let part = format!("{} x{}", item.code, item.quantity);
        let sep = if summary.is_empty() { "" } else { ", " };
        if summary.chars().count() + sep.len() + part.chars().count() > super::settlement::MAX_ITEMS_SUMMARY_CHARS - 3 {
            summary.push_str("...");
            break;
        }
        summary.push_str(sep);
        summary.push_str(&part);
    }
    summary
}

/// Where a claim's care was given, as the settlement decision sees it: the hospital's region
/// (its level is not on an invoice: UNGRADED), and how care there that no cross-region filing
/// covers is treated. Emergency care in another region could not wait for a filing, so it
/// counts as filed ([`UnfiledCare::CountsAsFiled`]: the policy's own ratio, also where the
/// policy settles no unfiled care); any other claim is treated as the policy says for a
/// counter's bill (the unfiled ratio, or CROSS_REGION_NOT_FILED).
pub fn care_site(terms: &ClaimTerms) -> Site {
    let unfiled = match terms.because {
        NotSettledBecause::EmergencyElsewhereUnfiled => UnfiledCare::CountsAsFiled,
        NotSettledBecause::HospitalCouldNotSettle | NotSettledBecause::Other => UnfiledCare::AsThePolicySays,
    };
    Site { region_code: Some(terms.hospital_region_code.clone()), level: HospitalLevel::Ungraded, unfiled }
}

/// A department code for the items of a claim: invoices of care paid out of pocket name no
/// prescribing department the way a hospital's own bill does.
pub const CLAIM_DEPARTMENT: &str = "CLAIM";

/// The bill items the settlement decision prices: each claimed item, whole units.
pub fn bill_items(items: &[ClaimItem]) -> Vec<super::settlement::BillItem> {
    items
        .iter()
        .map(|item| super::settlement::BillItem {
            code: item.code.clone(),
            quantity_milli: item.quantity * 1000,
            unit_price_cents: item.unit_price_cents,
            department_code: CLAIM_DEPARTMENT.to_owned(),
            department_name: String::new(),
        })
        .collect()
}

/// A reviewer's decision, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// Approve: settle and pay; with a bank transfer, its reference.
    Approve {
        /// The bank transfer's reference (BANK_TRANSFER claims only).
        transfer_reference: Option<String>,
    },
    /// Refuse, with the reason the person reads.
    Reject {
        /// 1-200 characters.
        reason: String,
    },
}

/// Validates a review: a rejection needs a reason of 1-200 characters and names no transfer;
/// an approval has no reason, and a transfer reference (1-64 letters, digits, `-`, `_`) exactly
/// when the claim is paid by bank transfer. INVALID_ARGUMENT on the field otherwise.
pub fn review(approve: bool, reason: &str, transfer_reference: &str, payout: Payout) -> ApiResult<Review> {
    let field = |field: &str, description: &str| ApiError::invalid_field(Reason::InvalidArgument, field, description);
    if !approve {
        if !transfer_reference.is_empty() {
            return Err(field("transfer_reference", "only an approval of a bank transfer claim has one"));
        }
        let reason = REJECTION_REASON.check("rejection_reason", reason)?;
        return Ok(Review::Reject { reason });
    }
    if !reason.is_empty() {
        return Err(field("rejection_reason", "only a rejection has a reason"));
    }
    match (payout, transfer_reference) {
        (Payout::Account, "") => Ok(Review::Approve { transfer_reference: None }),
        (Payout::Account, _) => Err(field("transfer_reference", "this claim is credited to the account")),
        (Payout::BankTransfer, reference) if is_transfer_reference(reference) => {
            Ok(Review::Approve { transfer_reference: Some(reference.to_owned()) })
        }
        (Payout::BankTransfer, _) => Err(field(
            "transfer_reference",
            "a bank transfer claim is approved with the transfer's reference (1-64 letters, digits, '-', '_')",
        )),
    }
}

fn is_transfer_reference(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_TRANSFER_REFERENCE
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The answer to a claim naming an invoice (`invoice_document_ids[index]`) that another claim
/// of the person holds (SUBMITTED or APPROVED: one invoice backs one claim; a REJECTED claim
/// lets its invoices go). FAILED_PRECONDITION rather than ALREADY_EXISTS: what the caller asked
/// to create, a new claim, does not exist; the state of another claim stands in its way, and the
/// same request succeeds once that claim is rejected. Only the person's own invoices get here
/// (a document that is not gets DOCUMENT_INVALID first), so it tells the caller nothing about
/// anyone else.
pub fn invoice_already_claimed(index: usize) -> ApiError {
    let field = format!("invoice_document_ids[{index}]");
    ApiError::failed_precondition(
        Reason::InvoiceAlreadyClaimed,
        "this invoice backs another claim that was not rejected",
    )
    .with_field_violation(&field, "backs another claim")
    .with_metadata("document", field)
}

/// Whether the invoices of a claim in `status` are held by it: while SUBMITTED or APPROVED;
/// a REJECTED claim lets them go.
pub fn holds_invoices(status: ClaimStatus) -> bool {
    match status {
        ClaimStatus::Submitted | ClaimStatus::Approved => true,
        ClaimStatus::Rejected => false,
    }
}

/// Whether a claim in `status` may be reviewed: only SUBMITTED; a reviewed claim is
/// FAILED_PRECONDITION / CLAIM_ALREADY_REVIEWED (with its status in the metadata).
pub fn ensure_reviewable(status: ClaimStatus) -> ApiResult<()> {
    match status {
        ClaimStatus::Submitted => Ok(()),
        ClaimStatus::Approved | ClaimStatus::Rejected => {
            Err(ApiError::failed_precondition(Reason::ClaimAlreadyReviewed, "this claim was already reviewed")
                .with_metadata("status", status.as_str()))
        }
    }
}

/// The status a review leads to.
pub fn status_after(review: &Review) -> ClaimStatus {
    match review {
        Review::Approve { .. } => ClaimStatus::Approved,
        Review::Reject { .. } => ClaimStatus::Rejected,
    }
}

/// The amount credited to the individual account for an approved claim's settlement with
/// `fund_cents` as the fund's share: all of it with [`Payout::Account`] (none when the fund pays
/// nothing: a ledger entry is never zero), nothing with a bank transfer.
pub fn account_credit(payout: Payout, fund_cents: i64) -> Option<i64> {
    match payout {
        Payout::Account if fund_cents > 0 => Some(fund_cents),
        Payout::Account | Payout::BankTransfer => None,
    }
}

/// Whether a settlement with `visit_id` may be reversed by ReverseSettlement: a claim's
/// settlement (no visit) may not, its fund share having been paid back to the person already
/// (FAILED_PRECONDITION / CLAIM_SETTLEMENT_NOT_REVERSIBLE).
pub fn ensure_reversible_settlement(visit_id: Option<Uuid>) -> ApiResult<()> {
    match visit_id {
        Some(_) => Ok(()),
        None => Err(ApiError::failed_precondition(
            Reason::ClaimSettlementNotReversible,
            "a reimbursement claim's settlement is not reversed: its fund share was paid back to the person",
        )),
    }
}

/// A stored claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Claim id.
    pub id: Uuid,
    /// Whose bill.
    pub person_id: Uuid,
    /// The person's account when the claim was submitted (its scheme decides the policy).
    pub account_id: Uuid,
    /// What the claim says.
    pub terms: ClaimTerms,
    /// Where it stands.
    pub status: ClaimStatus,
    /// The partner that submitted it.
    pub submitted_by: String,
    /// When.
    pub submitted_at: chrono::NaiveDateTime,
    /// The review, once reviewed.
    pub review: Option<ClaimReview>,
}

/// A claim's review as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimReview {
    /// The reviewing operator (partner id).
    pub reviewed_by: String,
    /// When.
    pub reviewed_at: chrono::NaiveDateTime,
    /// A rejection's reason.
    pub rejection_reason: Option<String>,
    /// An approval's settlement.
    pub settlement_id: Option<Uuid>,
    /// A bank transfer's reference.
    pub transfer_reference: Option<String>,
}

/// Which claims a ListClaims call lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// A person's claims, optionally of one status.
    Person(Uuid, Option<ClaimStatus>),
    /// The operators' queue of one status.
    Queue(ClaimStatus),
}

impl Listing {
    fn key(&self) -> String {
        let status = |s: Option<ClaimStatus>| s.map_or("ANY", ClaimStatus::as_str);
        match self {
            Listing::Person(person, wanted) => format!("p:{person}:{}", status(*wanted)),
            Listing::Queue(wanted) => format!("q:{}", wanted.as_str()),
        }
    }
}

/// Where a listing of claims (newest first, by submitted_at then id) continues: strictly older
/// than this claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimCursor {
    /// The listing the token belongs to.
    pub listing: Listing,
    /// The last claim's time.
    pub submitted_at: chrono::NaiveDateTime,
    /// The last claim's id.
    pub claim_id: Uuid,
}

const CURSOR_VERSION: &str = "c1";

impl ClaimCursor {
    /// The opaque token: base64url of `c1|<listing>|<microseconds>|<claim>`.
    pub fn encode(&self) -> String {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        let micros = self.submitted_at.and_utc().timestamp_micros();
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}|{}|{micros}|{}", self.listing.key(), self.claim_id))
    }

    /// Parses a token of `listing`: INVALID_ARGUMENT naming `page_token` for anything else
    /// (bytes that are not one of our tokens, another listing's token).
    pub fn decode(token: &str, listing: Listing) -> ApiResult<ClaimCursor> {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        let invalid = || ApiError::invalid_field(Reason::InvalidArgument, "page_token", "not a token of this listing");
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.split('|');
        let (Some(CURSOR_VERSION), Some(key), Some(micros), Some(claim), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if key != listing.key() {
            return Err(invalid());
        }
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let submitted_at = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?.naive_utc();
        let claim_id = Uuid::parse_str(claim).map_err(|_| invalid())?;
        Ok(ClaimCursor { listing, submitted_at, claim_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn catalog() -> Catalog {
        Catalog::builtin()
    }

    /// A national item of the built-in catalogue with a price cap of 25 yuan.
    const CAPPED: &str = "250101001";

    fn raw<'a>(code: &'a str, price: i64, documents: &'a [String], today: NaiveDate) -> RawClaim<'a> {
        RawClaim {
            hospital_name: "上海市第六人民医院",
            hospital_region_code: "310104",
            category: Category::Inpatient,
            care_date: today - chrono::Duration::days(3),
            because: NotSettledBecause::EmergencyElsewhereUnfiled,
            items: vec![RawItem { code, quantity: 2, unit_price_cents: price }],
            total_cents: 2 * price,
            payout: Payout::Account,
            documents,
        }
    }

    #[test]
    fn a_claim_names_catalogue_items_that_add_up_to_its_total() {
        let catalog = catalog();
        let (code, price) = (CAPPED.to_owned(), 1_000);
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let documents = vec![Uuid::now_v7().to_string()];
        let terms = claim_terms(&catalog, raw(&code, price, &documents, today), today).expect("a good claim");
        assert_eq!((terms.total_cents, terms.items.len(), terms.documents.len()), (2 * price, 1, 1));

        let mut wrong_total = raw(&code, price, &documents, today);
        wrong_total.total_cents += 1;
        let error = claim_terms(&catalog, wrong_total, today).unwrap_err();
        assert_eq!((error.code(), error.reason()), (Code::InvalidArgument, Reason::InvalidArgument));
        let status: tonic::Status = error.into();
        assert!(String::from_utf8_lossy(status.details()).contains("total_cents"));

        let twice = vec![documents[0].clone(), documents[0].clone()];
        let mut many = raw("NO-SUCH-CODE", price, &twice, today);
        many.care_date = today + chrono::Duration::days(1);
        many.hospital_region_code = "31";
        many.items.push(RawItem { code: &code, quantity: 0, unit_price_cents: -5 });
        let error = claim_terms(&catalog, many, today).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        let status: tonic::Status = error.into();
        // The field violations travel in the status details (google.rpc.BadRequest).
        let details = String::from_utf8_lossy(status.details()).into_owned();
        for field in [
            "hospital_region_code",
            "care_date",
            "items[0].code",
            "items[1].quantity",
            "items[1].unit_price_cents",
            "invoice_document_ids[1]",
        ] {
            assert!(details.contains(field), "{field} in {details:?}");
        }
        let old = RawClaim {
            care_date: today - chrono::Duration::days(CLAIM_WINDOW_DAYS + 1),
            ..raw(&code, price, &documents, today)
        };
        assert!(claim_terms(&catalog, old, today).is_err());
        let none: Vec<String> = Vec::new();
        assert!(claim_terms(&catalog, raw(&code, price, &none, today), today).is_err(), "an invoice is required");
    }

    #[test]
    fn a_price_above_the_items_cap_is_refused_on_that_item() {
        let catalog = catalog();
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let documents = vec![Uuid::now_v7().to_string()];
        assert!(claim_terms(&catalog, raw(CAPPED, 2_500, &documents, today), today).is_ok(), "at the cap");
        let error = claim_terms(&catalog, raw(CAPPED, 2_501, &documents, today), today).unwrap_err();
        let status: tonic::Status = error.into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(String::from_utf8_lossy(status.details()).contains("items[0].unit_price_cents"));
    }

    #[test]
    fn a_claim_is_reviewed_once_approve_or_reject() {
        assert!(ensure_reviewable(ClaimStatus::Submitted).is_ok());
        for done in [ClaimStatus::Approved, ClaimStatus::Rejected] {
            let error = ensure_reviewable(done).unwrap_err();
            assert_eq!((error.code(), error.reason()), (Code::FailedPrecondition, Reason::ClaimAlreadyReviewed));
        }
        let approve = review(true, "", "", Payout::Account).unwrap();
        assert_eq!(status_after(&approve), ClaimStatus::Approved);
        let reject = review(false, "发票与费用清单不符", "", Payout::Account).unwrap();
        assert_eq!(status_after(&reject), ClaimStatus::Rejected);
        assert!(review(false, "", "", Payout::Account).is_err(), "a rejection needs a reason");
        assert!(review(false, &"x".repeat(201), "", Payout::Account).is_err());
        assert!(review(true, "why", "", Payout::Account).is_err(), "an approval has no reason");
        assert!(review(true, "", "TX-1", Payout::Account).is_err(), "an account credit has no transfer");
        assert!(review(true, "", "", Payout::BankTransfer).is_err(), "a transfer needs its reference");
        assert!(review(true, "", "TX 1", Payout::BankTransfer).is_err());
        assert_eq!(
            review(true, "", "ICBC-20261207-01", Payout::BankTransfer).unwrap(),
            Review::Approve { transfer_reference: Some("ICBC-20261207-01".into()) }
        );
        assert_eq!(account_credit(Payout::Account, 500), Some(500));
        assert_eq!(account_credit(Payout::Account, 0), None, "no zero entry");
        assert_eq!(account_credit(Payout::BankTransfer, 500), None);
    }

    #[test]
    fn a_claim_holds_its_invoices_until_it_is_rejected() {
        assert!(holds_invoices(ClaimStatus::Submitted) && holds_invoices(ClaimStatus::Approved));
        assert!(!holds_invoices(ClaimStatus::Rejected));
        let error = invoice_already_claimed(2);
        assert_eq!((error.code(), error.reason()), (Code::FailedPrecondition, Reason::InvoiceAlreadyClaimed));
        let status: tonic::Status = error.into();
        assert!(String::from_utf8_lossy(status.details()).contains("invoice_document_ids[2]"));
    }

    #[test]
    fn emergency_care_elsewhere_counts_as_filed_and_other_claims_as_the_policy_says() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let documents = vec![Uuid::now_v7().to_string()];
        let mut terms = claim_terms(&catalog(), raw(CAPPED, 1_000, &documents, today), today).unwrap();
        let site = care_site(&terms);
        assert_eq!(
            (site.region_code.as_deref(), site.level, site.unfiled),
            (Some("310104"), HospitalLevel::Ungraded, UnfiledCare::CountsAsFiled)
        );
        for because in [NotSettledBecause::HospitalCouldNotSettle, NotSettledBecause::Other] {
            terms.because = because;
            assert_eq!(care_site(&terms).unfiled, UnfiledCare::AsThePolicySays, "{because:?}");
        }
    }

    #[test]
    fn page_tokens_belong_to_one_listing() {
        let person = Uuid::now_v7();
        let at = chrono::DateTime::from_timestamp_micros(1_790_000_000_000_001).unwrap().naive_utc();
        let listing = Listing::Person(person, None);
        let cursor = ClaimCursor { listing, submitted_at: at, claim_id: Uuid::now_v7() };
        let token = cursor.encode();
        assert_eq!(ClaimCursor::decode(&token, listing).unwrap(), cursor);
        for other in [
            Listing::Person(Uuid::now_v7(), None),
            Listing::Person(person, Some(ClaimStatus::Submitted)),
            Listing::Queue(ClaimStatus::Submitted),
        ] {
            assert!(ClaimCursor::decode(&token, other).is_err(), "{other:?}");
        }
        for bad in ["", "!!", "YzE", "\u{0}"] {
            let error = ClaimCursor::decode(bad, listing).unwrap_err();
            assert_eq!((error.code(), error.reason()), (Code::InvalidArgument, Reason::InvalidArgument));
        }
    }

    #[test]
    fn the_summary_stays_within_the_settlement_row() {
        let items: Vec<ClaimItem> =
            (0..200).map(|i| ClaimItem { code: format!("XB01BAC{i:03}"), quantity: 1, unit_price_cents: 1 }).collect();
        let summary = items_summary(&items);
        assert!(summary.chars().count() <= super::super::settlement::MAX_ITEMS_SUMMARY_CHARS);
        assert!(summary.ends_with("..."));
        assert_eq!(items_summary(&items[..1]), "XB01BAC000 x1");
    }
}
