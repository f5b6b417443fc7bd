//! Scope names and the scopes each partner kind gets by default. Each service states which
//! scope each of its RPCs needs (its `METHOD_SCOPES` table); this file names them once.

/// Register persons.
pub const PERSON_REGISTER: &str = "person.register";
/// Read masked person views.
pub const PERSON_READ: &str = "person.read";
/// Resolve or match a name + ID number to a person id (insurance-svc, ops; identity-svc's access
/// table admits no other kind).
pub const PERSON_RESOLVE: &str = "person.resolve";
/// Open insured accounts.
pub const ACCOUNT_OPEN: &str = "account.open";
/// Read accounts.
pub const ACCOUNT_READ: &str = "account.read";
/// Service-to-service events (FaceVerificationCompleted).
pub const SERVICE: &str = "service";
/// Submit face-verification outcomes.
pub const FACE_SUBMIT: &str = "face.submit";
/// Start face-verification sessions for a person.
pub const FACE_START: &str = "face.start";
/// Read and watch face-verification sessions.
pub const FACE_READ: &str = "face.read";
/// Send SMS verification codes to a phone.
pub const SMS_SEND: &str = "sms.send";
/// Check SMS verification codes.
pub const SMS_VERIFY: &str = "sms.verify";
/// Complete a person's real-name verification (SMS + identity authority).
pub const REALNAME_COMPLETE: &str = "realname.complete";
/// Link a partner's own user to a person, unlink it, list a person's links.
pub const LINK_MANAGE: &str = "link.manage";
/// Obtain person tokens for linked, real-name verified persons.
pub const TOKEN_ISSUE: &str = "token.issue";
/// Read the public keys that verify person tokens (every partner may).
pub const KEYS_READ: &str = "keys.read";
/// Read the catalogue of drugs, treatment items and consumables (public policy: every partner).
pub const CATALOG_READ: &str = "catalog.read";
/// File and cancel a person's cross-region care filings (with a person token; operators any).
pub const CROSSREGION_MANAGE: &str = "crossregion.manage";
/// Read a person's cross-region care filings (with a person token; operators any).
pub const CROSSREGION_READ: &str = "crossregion.read";
/// Read a person's own access history (with a person token).
pub const AUDIT_READ: &str = "audit.read";
/// Activate a person's electronic medical insurance voucher (with a person token).
pub const VOUCHER_ACTIVATE: &str = "voucher.activate";
/// Read vouchers (a person's own with a person token; operators any).
pub const VOUCHER_READ: &str = "voucher.read";
/// Suspend and resume vouchers (a person's own with a person token; operators any).
pub const VOUCHER_MANAGE: &str = "voucher.manage";
/// Bind and remove family members, switch family aid (with the binder's person token).
pub const FAMILY_MANAGE: &str = "family.manage";
/// Review family bindings whose relationship the authority could not confirm (operators).
pub const FAMILY_REVIEW: &str = "family.review";
/// Bind family members at a counter with the owner present: terminals and hospital insurance
/// offices (card + face), operators at the window (originals seen).
pub const FAMILY_COUNTER: &str = "family.counter";
/// Read family bindings (the binder's or the member's own, with their person token).
pub const FAMILY_READ: &str = "family.read";
/// Issue dynamic payment codes for a voucher holder (with a person token).
pub const CODE_ISSUE: &str = "code.issue";
/// Verify (redeem) payment codes at a hospital or pharmacy counter.
pub const CODE_VERIFY: &str = "code.verify";
/// Upload a person's documents and render their commitment letters (with a person token;
/// operators for anyone).
pub const DOCUMENT_UPLOAD: &str = "document.upload";
/// Read a person's documents, metadata and bytes (with a person token; operators any).
pub const DOCUMENT_READ: &str = "document.read";
/// Credit contributions to individual accounts (employers, operators).
pub const ACCOUNT_CREDIT: &str = "account.credit";
/// Suspend and resume accounts (operators).
pub const ACCOUNT_MANAGE: &str = "account.manage";
/// Settle visits opened at the caller's counter (hospitals, pharmacies).
pub const SETTLEMENT_WRITE: &str = "settlement.write";
/// Reverse settlements (operators).
pub const SETTLEMENT_REVERSE: &str = "settlement.reverse";
/// Read a person's annual medical expenses (with a person token; operators any).
pub const EXPENSES_READ: &str = "expenses.read";
/// Read a person's own settlement records (with a person token; operators any).
pub const SETTLEMENT_READ: &str = "settlement.read";
/// Submit reimbursement claims for bills paid out of pocket (with a person token; operators at
/// the window for anyone).
pub const CLAIMS_SUBMIT: &str = "claims.submit";
/// Read reimbursement claims (a person's own with a person token; operators any, and the queue).
pub const CLAIMS_READ: &str = "claims.read";
/// Approve or reject reimbursement claims (operators).
pub const CLAIMS_REVIEW: &str = "claims.review";
/// Apply for social security cards and replacements (a person's own with a person token;
/// counter channels by operators).
pub const CARD_APPLY: &str = "card.apply";
/// Read card applications and cards (a person's own with a person token; operators any).
pub const CARD_READ: &str = "card.read";
/// Review, produce, dispatch and deliver card applications, and list them (operators).
pub const CARD_MANAGE: &str = "card.manage";
/// Apply for employees' cards in batches (employers, operators).
pub const CARD_BATCH: &str = "card.batch";
/// Activate card functions at a bank, hospital or pharmacy counter.
pub const CARD_ACTIVATE: &str = "card.activate";
/// Record card fees paid at a bank.
pub const CARD_FEE: &str = "card.fee";
/// Change a card's PIN (the holder's app with their token, or a bank with the holder present)
/// and reset it (a bank with the holder present, operators).
pub const CARD_PIN: &str = "card.pin";
/// Report a card lost and lift a temporary report (a person's own with a person token;
/// operators any).
pub const CARD_LOSS: &str = "card.loss";
/// Suspend and resume persons: no new person tokens, every live one refused (operators).
pub const PERSON_MANAGE: &str = "person.manage";

/// Apps that are a person's front door: mini programs, city apps.
pub const FRONT_DOOR_APP: &[&str] = &[
    PERSON_REGISTER,
    PERSON_READ,
    ACCOUNT_READ,
    SMS_SEND,
    SMS_VERIFY,
    REALNAME_COMPLETE,
    FACE_START,
    FACE_READ,
    LINK_MANAGE,
    TOKEN_ISSUE,
    KEYS_READ,
    CATALOG_READ,
    AUDIT_READ,
    VOUCHER_ACTIVATE,
    VOUCHER_READ,
    VOUCHER_MANAGE,
    FAMILY_MANAGE,
    FAMILY_READ,
    CODE_ISSUE,
    EXPENSES_READ,
    SETTLEMENT_READ,
    CLAIMS_SUBMIT,
    CLAIMS_READ,
    DOCUMENT_UPLOAD,
    DOCUMENT_READ,
    CARD_APPLY,
    CARD_READ,
    CARD_LOSS,
    CARD_PIN,
    CROSSREGION_MANAGE,
    CROSSREGION_READ,
];
/// What banks hold beyond a front-door app's scopes: they open accounts, take card fees and
/// activate cards.
pub const BANK_EXTRA: &[&str] = &[ACCOUNT_OPEN, CARD_FEE, CARD_ACTIVATE];
/// Hospitals and pharmacies (a card's medical function activates at first use there).
pub const POINT_OF_CARE: &[&str] =
    &[ACCOUNT_READ, KEYS_READ, CATALOG_READ, CODE_VERIFY, SETTLEMENT_WRITE, CARD_ACTIVATE];
/// What a hospital holds beyond the point-of-care scopes: its medical insurance office binds
/// family members with the owner present.
pub const HOSPITAL_EXTRA: &[&str] = &[FAMILY_COUNTER];
/// Self-service terminals: family bindings with the owner present.
pub const TERMINAL: &[&str] = &[KEYS_READ, CATALOG_READ, FAMILY_COUNTER];
/// Face-verification providers.
pub const FACE_PROVIDER: &[&str] = &[FACE_SUBMIT, KEYS_READ, CATALOG_READ];
/// Employers. They reach identity-svc only through insurance-svc (opening their employees'
/// accounts, card batches), bound to their employer codes there.
pub const EMPLOYER: &[&str] =
    &[ACCOUNT_OPEN, ACCOUNT_READ, KEYS_READ, CATALOG_READ, ACCOUNT_CREDIT, CARD_BATCH, CARD_READ];
/// Operations staff.
pub const OPS: &[&str] = &[
    PERSON_REGISTER,
    PERSON_READ,
    PERSON_RESOLVE,
    ACCOUNT_OPEN,
    ACCOUNT_READ,
    SMS_SEND,
    SMS_VERIFY,
    REALNAME_COMPLETE,
    FACE_START,
    FACE_READ,
    LINK_MANAGE,
    TOKEN_ISSUE,
    KEYS_READ,
    CATALOG_READ,
    AUDIT_READ,
    VOUCHER_READ,
    VOUCHER_MANAGE,
    FAMILY_MANAGE,
    FAMILY_READ,
    FAMILY_REVIEW,
    FAMILY_COUNTER,
    ACCOUNT_CREDIT,
    ACCOUNT_MANAGE,
    SETTLEMENT_WRITE,
    SETTLEMENT_REVERSE,
    EXPENSES_READ,
    SETTLEMENT_READ,
    CLAIMS_SUBMIT,
    CLAIMS_READ,
    CLAIMS_REVIEW,
    DOCUMENT_UPLOAD,
    DOCUMENT_READ,
    CARD_APPLY,
    CARD_READ,
    CARD_MANAGE,
    CARD_BATCH,
    CARD_LOSS,
    CARD_PIN,
    PERSON_MANAGE,
    CROSSREGION_MANAGE,
    CROSSREGION_READ,
];
/// medins services calling each other.
pub const SERVICE_PEER: &[&str] =
    &[PERSON_READ, PERSON_RESOLVE, SERVICE, FACE_START, FACE_READ, KEYS_READ, CATALOG_READ];
