//! Social security cards (docs/architecture.md#cards): channels and what each needs, the
//! application and card state tables, who may act, working days, card numbers with their check
//! digit, and the validation of every free-form field. Pure.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Weekday};
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::PartnerKind,
    validate::{Amount, TextField},
};
use rand::{CryptoRng, Rng};
use uuid::Uuid;

use super::{
    access::Standing,
    account::{is_employer_code, is_region_code},
};

/// Below this age a guardian applies (an ACTIVE family binder of the applicant).
pub const GUARDIAN_AGE: i32 = 16;
/// Below this age the photo of an ONLINE application is optional.
pub const PHOTO_AGE: i32 = 7;
/// Working days between approval and a pick-up card being ready.
pub const PICKUP_WORKING_DAYS: u32 = 3;
/// The largest employer batch.
pub const MAX_BATCH: usize = 100;
/// The largest card fee (1,000 yuan), in fen.
pub const MAX_FEE_CENTS: i64 = 100_000;
/// A card fee's amount (`amount_cents`): 1 fen to [`MAX_FEE_CENTS`].
pub const CARD_FEE: Amount = Amount { max_cents: MAX_FEE_CENTS };
/// The issuer prefix of every card number medins issues (country 86, issuer 1100).
pub const ISSUER_PREFIX: &str = "861100";
/// Digits of the sequence part of a card number.
const SEQUENCE_DIGITS: usize = 9;
/// Digits of a whole card number: prefix, sequence, check digit.
pub const CARD_NUMBER_DIGITS: usize = ISSUER_PREFIX.len() + SEQUENCE_DIGITS + 1;

medins_common::text_enum! {
    /// Where an application was made.
    pub enum CardChannel {
        /// Online through a partner app.
        Online => "ONLINE",
        /// At a service center, issued on the spot.
        ServiceCenter => "SERVICE_CENTER",
        /// At a service point, picked up there.
        ServicePoint => "SERVICE_POINT",
        /// Through an entrusted agent.
        Agent => "AGENT",
        /// In an employer batch.
        Employer => "EMPLOYER",
        /// A replacement of a formally lost card.
        Replacement => "REPLACEMENT",
    }
}

medins_common::text_enum! {
    /// How a card reaches its holder.
    pub enum Delivery {
        /// By mail.
        Mail => "MAIL",
        /// Picked up at a service point.
        Pickup => "PICKUP",
        /// Handed over in the applying call (service center).
        OnTheSpot => "ON_THE_SPOT",
    }
}

medins_common::text_enum! {
    /// Where an application stands.
    pub enum ApplicationStatus {
        /// Waiting for review.
        Submitted => "SUBMITTED",
        /// Approved, waiting for production.
        Approved => "APPROVED",
        /// Refused; final.
        Rejected => "REJECTED",
        /// Made, with a card number.
        Produced => "PRODUCED",
        /// In the mail.
        Mailed => "MAILED",
        /// Waiting at the service point.
        ReadyForPickup => "READY_FOR_PICKUP",
        /// Handed over; final.
        Delivered => "DELIVERED",
    }
}

medins_common::text_enum! {
    /// A step of an application.
    pub enum ApplicationAction {
        /// Ops approve it.
        Approve => "APPROVE",
        /// Ops reject it.
        Reject => "REJECT",
        /// The card is produced.
        Produce => "PRODUCE",
        /// The card leaves production: mailed or ready for pick-up, by the delivery.
        Dispatch => "DISPATCH",
        /// The card reached its holder.
        ConfirmDelivery => "CONFIRM_DELIVERY",
    }
}

medins_common::text_enum! {
    /// Where a card stands.
    pub enum CardStatus {
        /// In force.
        Valid => "VALID",
        /// Frozen by a temporary loss report.
        LostTemporary => "LOST_TEMPORARY",
        /// Formally lost: ended.
        Lost => "LOST",
        /// Replaced by a new application: ended.
        Replaced => "REPLACED",
    }
}

medins_common::text_enum! {
    /// A step of a card.
    pub enum CardAction {
        /// Activate (or use) a function.
        Activate => "ACTIVATE",
        /// Report it lost, temporarily.
        ReportTemporaryLoss => "REPORT_TEMPORARY_LOSS",
        /// Report it lost, formally.
        ReportFormalLoss => "REPORT_FORMAL_LOSS",
        /// Lift a temporary loss report.
        CancelLossReport => "CANCEL_LOSS_REPORT",
        /// Apply for its replacement.
        Replace => "REPLACE",
    }
}

impl ApplicationStatus {
    /// Open applications block another application of the same person.
    pub fn is_open(self) -> bool {
        !matches!(self, ApplicationStatus::Rejected | ApplicationStatus::Delivered)
    }
}

/// A step the current state does not allow: FAILED_PRECONDITION / CARD_STATE_CONFLICT with the
/// state and the action in the ErrorInfo metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateConflict {
    /// The current state.
    pub status: &'static str,
    /// The refused action.
    pub action: &'static str,
}

impl StateConflict {
    /// The error.
    pub fn into_error(self) -> ApiError {
        ApiError::failed_precondition(
            Reason::CardStateConflict,
            format!("a card or application in state {} does not allow {}", self.status, self.action),
        )
        .with_metadata("status", self.status)
        .with_metadata("action", self.action)
    }
}

impl From<StateConflict> for ApiError {
    fn from(conflict: StateConflict) -> Self {
        conflict.into_error()
    }
}

/// The application state table: the state `action` leads to from `status` for an application
/// delivered by `delivery`. Anything not listed is a conflict.
pub fn next_application_status(
    status: ApplicationStatus,
    action: ApplicationAction,
    delivery: Delivery,
) -> Result<ApplicationStatus, StateConflict> {
    use ApplicationAction as A;
    use ApplicationStatus as S;
    match (status, action, delivery) {
        (S::Submitted, A::Approve, _) => Ok(S::Approved),
        (S::Submitted, A::Reject, _) => Ok(S::Rejected),
        (S::Approved, A::Produce, _) => Ok(S::Produced),
        (S::Produced, A::Dispatch, Delivery::Mail) => Ok(S::Mailed),
        (S::Produced, A::Dispatch, Delivery::Pickup) => Ok(S::ReadyForPickup),
        // Issued on the spot: handed over as soon as it is made, in the applying call.
        (S::Produced, A::ConfirmDelivery, Delivery::OnTheSpot) => Ok(S::Delivered),
        (S::Mailed, A::ConfirmDelivery, Delivery::Mail) => Ok(S::Delivered),
        (S::ReadyForPickup, A::ConfirmDelivery, Delivery::Pickup) => Ok(S::Delivered),
        _ => Err(StateConflict { status: status.as_str(), action: action.as_str() }),
    }
}

/// The card state table. Activation keeps a VALID card VALID (it changes the functions).
pub fn next_card_status(status: CardStatus, action: CardAction) -> Result<CardStatus, StateConflict> {
    use CardAction as A;
    use CardStatus as S;
    match (status, action) {
        (S::Valid, A::Activate) => Ok(S::Valid),
        (S::Valid, A::ReportTemporaryLoss) => Ok(S::LostTemporary),
        (S::Valid | S::LostTemporary, A::ReportFormalLoss) => Ok(S::Lost),
        (S::LostTemporary, A::CancelLossReport) => Ok(S::Valid),
        (S::Lost, A::Replace) => Ok(S::Replaced),
        _ => Err(StateConflict { status: status.as_str(), action: action.as_str() }),
    }
}

/// What a person sees of one card function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionStatus {
    /// Not activated yet.
    Inactive,
    /// Usable.
    Active,
    /// Frozen by a temporary loss report.
    Frozen,
    /// The card ended.
    Closed,
}

/// A function's status from the card's status and whether the function was ever activated.
pub fn function_status(card: CardStatus, activated: bool) -> FunctionStatus {
    match card {
        CardStatus::Valid if activated => FunctionStatus::Active,
        CardStatus::Valid => FunctionStatus::Inactive,
        CardStatus::LostTemporary => FunctionStatus::Frozen,
        CardStatus::Lost | CardStatus::Replaced => FunctionStatus::Closed,
    }
}

medins_common::text_enum! {
    /// Where a card is activated (or used), stored beside the activating partner.
    pub enum ActivationChannel {
        /// A bank: the financial function, after checking the holder's ID; sets the PIN.
        Bank => "BANK",
        /// A hospital: the medical function, at its first use.
        Hospital => "HOSPITAL",
        /// A pharmacy: the medical function, at its first use.
        Pharmacy => "PHARMACY",
    }
}

impl ActivationChannel {
    /// The channel of a hospital's or pharmacy's counter, where a card is used for care (and
    /// its medical function activated at first use); none for other kinds.
    pub fn of_care_counter(kind: PartnerKind) -> Option<ActivationChannel> {
        match kind {
            PartnerKind::Hospital => Some(ActivationChannel::Hospital),
            PartnerKind::Pharmacy => Some(ActivationChannel::Pharmacy),
            _ => None,
        }
    }

    /// Whether it activates the financial function too.
    pub fn activates_financial(self) -> bool {
        matches!(self, ActivationChannel::Bank)
    }

    /// The one partner kind that may activate through this channel (a bank's counter is a
    /// bank): PERMISSION_DENIED / PARTNER_KIND_NOT_ALLOWED for any other.
    pub fn require_partner(self, kind: PartnerKind) -> ApiResult<()> {
        let expected = match self {
            ActivationChannel::Bank => PartnerKind::Bank,
            ActivationChannel::Hospital => PartnerKind::Hospital,
            ActivationChannel::Pharmacy => PartnerKind::Pharmacy,
        };
        if kind == expected {
            Ok(())
        } else {
            Err(kind_not_allowed(format!("only a {} partner activates through this channel", expected.as_str())))
        }
    }
}

fn kind_not_allowed(message: String) -> ApiError {
    ApiError::of(Reason::PartnerKindNotAllowed, message)
}

/// Counter channels (SERVICE_CENTER, SERVICE_POINT, AGENT) are operated by OPS partners with
/// the person (or agent) present; ONLINE by any partner holding the person's token.
pub fn require_channel_partner(channel: CardChannel, kind: PartnerKind) -> ApiResult<()> {
    match channel {
        CardChannel::ServiceCenter | CardChannel::ServicePoint | CardChannel::Agent if kind != PartnerKind::Ops => {
            Err(kind_not_allowed(format!("channel {} is operated by OPS partners only", channel.as_str())))
        }
        _ => Ok(()),
    }
}

/// Only banks record card fees.
pub fn require_fee_partner(kind: PartnerKind) -> ApiResult<()> {
    if kind == PartnerKind::Bank { Ok(()) } else { Err(kind_not_allowed("only BANK partners record card fees".into())) }
}

/// How a channel's cards are delivered (REPLACEMENT: by mail with an address, else pick-up).
pub fn delivery_of(channel: CardChannel, has_address: bool) -> Delivery {
    match channel {
        CardChannel::Online => Delivery::Mail,
        CardChannel::ServiceCenter => Delivery::OnTheSpot,
        CardChannel::ServicePoint | CardChannel::Agent | CardChannel::Employer => Delivery::Pickup,
        CardChannel::Replacement if has_address => Delivery::Mail,
        CardChannel::Replacement => Delivery::Pickup,
    }
}

/// Which optional fields an ApplyForCard request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplicationFields {
    /// `sms_challenge_id`.
    pub sms: bool,
    /// `id_card_front_document_id`.
    pub front: bool,
    /// `id_card_back_document_id`.
    pub back: bool,
    /// `photo_document_id`.
    pub photo: bool,
    /// `face_session_id`.
    pub face: bool,
    /// `mailing_address`.
    pub address: bool,
    /// `fee_id`.
    pub fee: bool,
    /// `agent`.
    pub agent: bool,
}

/// Checks that the request's channel is one ApplyForCard takes and that it carries the fields
/// that channel needs and none it does not use (INVALID_ARGUMENT naming each field). Missing
/// ONLINE documents are left to the document check (DOCUMENT_MISSING), which knows the age.
pub fn check_channel_fields(channel: CardChannel, fields: ApplicationFields) -> ApiResult<()> {
    if matches!(channel, CardChannel::Employer | CardChannel::Replacement) {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "channel",
            "EMPLOYER applications go through ApplyForCardsBatch, replacements through ReplaceCard",
        ));
    }
    let online = channel == CardChannel::Online;
    let rules: [(&str, bool, bool); 8] = [
        // (field, given, used by the channel)
        ("sms_challenge_id", fields.sms, online),
        ("id_card_front_document_id", fields.front, online),
        ("id_card_back_document_id", fields.back, online),
        ("photo_document_id", fields.photo, online),
        ("face_session_id", fields.face, online),
        ("mailing_address", fields.address, online),
        ("fee_id", fields.fee, online),
        ("agent", fields.agent, channel == CardChannel::Agent),
    ];
    let required = |field: &str| match field {
        "sms_challenge_id" | "face_session_id" | "mailing_address" | "fee_id" => online,
        "agent" => channel == CardChannel::Agent,
        _ => false,
    };
    let mut error: Option<ApiError> = None;
    let mut add = |field: &str, description: String| {
        error = Some(match error.take() {
            None => ApiError::invalid_field(Reason::InvalidArgument, field, description),
            Some(error) => error.with_field_violation(field, description),
        });
    };
    for (field, given, used) in rules {
        if given && !used {
            add(field, format!("not used by channel {}", channel.as_str()));
        } else if !given && required(field) {
            add(field, format!("required for channel {}", channel.as_str()));
        }
    }
    error.map_or(Ok(()), Err)
}

/// Whose proof an application needs: the guardian for a person under [`GUARDIAN_AGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applicant {
    /// The person applies themself.
    Themself,
    /// A guardian applies; the caller must confirm the guardian is an ACTIVE binder.
    Guardian(Uuid),
}

/// The guardian rule: under 16 a guardian is required (FAILED_PRECONDITION /
/// GUARDIAN_REQUIRED), from 16 none is allowed (GUARDIAN_NOT_ALLOWED).
pub fn applicant_rule(age: i32, guardian: Option<Uuid>) -> ApiResult<Applicant> {
    match (age < GUARDIAN_AGE, guardian) {
        (true, Some(guardian)) => Ok(Applicant::Guardian(guardian)),
        (true, None) => Err(guardian_required("missing")),
        (false, Some(_)) => Err(ApiError::failed_precondition(
            Reason::GuardianNotAllowed,
            "the applicant is 16 or over and applies themself",
        )),
        (false, None) => Ok(Applicant::Themself),
    }
}

/// FAILED_PRECONDITION / GUARDIAN_REQUIRED with metadata `guardian_check` (`missing`,
/// `not_binder`).
pub fn guardian_required(check: &str) -> ApiError {
    ApiError::failed_precondition(
        Reason::GuardianRequired,
        "an applicant under 16 is applied for by a guardian who is an ACTIVE family binder of the applicant",
    )
    .with_metadata("guardian_check", check)
}

/// Whether an ONLINE application needs a photo at this age.
pub fn photo_required(age: i32) -> bool {
    age >= PHOTO_AGE
}

/// Why a fee does not pay for an application (ErrorInfo metadata `fee_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeCheck {
    /// No such fee.
    NotFound,
    /// Another person's fee.
    Foreign,
    /// Already paid for an application.
    Used,
}

impl FeeCheck {
    /// FAILED_PRECONDITION / CARD_FEE_INVALID.
    pub fn into_error(self) -> ApiError {
        let (check, message) = match self {
            FeeCheck::NotFound => ("not_found", "no card fee with this id"),
            FeeCheck::Foreign => ("foreign", "the card fee was paid for another person"),
            FeeCheck::Used => ("used", "the card fee already paid for an application"),
        };
        ApiError::failed_precondition(Reason::CardFeeInvalid, message).with_metadata("fee_check", check)
    }
}

/// Checks that a fee (if found) pays for `person_id`'s application.
pub fn check_fee(fee: Option<(Uuid, bool)>, person_id: Uuid) -> Result<(), FeeCheck> {
    match fee {
        None => Err(FeeCheck::NotFound),
        Some((owner, _)) if owner != person_id => Err(FeeCheck::Foreign),
        Some((_, true)) => Err(FeeCheck::Used),
        Some((_, false)) => Ok(()),
    }
}

/// A validated fee: 1 fen to 1,000 yuan, a reference of 1-64 letters, digits, `-` or `_`.
pub fn fee_terms(amount_cents: i64, reference: &str) -> ApiResult<(i64, String)> {
    let amount_cents = CARD_FEE.check("amount_cents", amount_cents)?;
    let reference = reference.trim();
    if !(1..=64).contains(&reference.len())
        || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "reference",
            "must be 1-64 letters, digits, '-' or '_'",
        ));
    }
    Ok((amount_cents, reference.to_owned()))
}

/// A validated mailing address.
#[derive(Clone, PartialEq, Eq)]
pub struct MailingAddress {
    /// Six-digit region code.
    pub region_code: String,
    /// Street.
    pub street: String,
    /// Recipient's name.
    pub recipient: String,
    /// Recipient's mobile, 11 digits.
    pub phone: String,
}

impl std::fmt::Debug for MailingAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Street, recipient and phone are personal data.
        f.debug_struct("MailingAddress").field("region_code", &self.region_code).finish_non_exhaustive()
    }
}

/// A mailing address's street: required, at most 200 characters, no control characters.
pub const STREET: TextField = TextField { max_chars: 200, required: true };

/// Why operators rejected an application: required, at most 200 characters, no control
/// characters.
pub const REJECTION_REASON: TextField = TextField { max_chars: 200, required: true };

/// The one validator of a mailing address (`MailingAddress` in card.proto), used by every RPC
/// that takes one (ApplyForCard, ReplaceCard): the region code, the street ([`STREET`]), the
/// recipient (the one name rule of both services, `medins_common::validate::name`) and the
/// phone (the one mainland mobile rule, `medins_common::phone`). Field violations are named
/// `<prefix>region_code` and so on, all of them at once; a bad recipient alone is
/// INVALID_NAME, as every other name field, several bad fields INVALID_ARGUMENT. The messages
/// never repeat the input.
pub fn mailing_address(
    prefix: &str,
    region_code: &str,
    street: &str,
    recipient: &str,
    phone: &str,
) -> ApiResult<MailingAddress> {
    let field = |name: &str| format!("{prefix}{name}");
    let mut refused: Vec<ApiError> = Vec::new();
    let mut keep = |result: ApiResult<String>| result.map_err(|error| refused.push(error)).ok();
    let region = region_code.trim();
    let region = keep(if is_region_code(region) {
        Ok(region.to_owned())
    } else {
        Err(ApiError::invalid_field(Reason::InvalidArgument, &field("region_code"), "must be a six-digit region code"))
    });
    let street = keep(STREET.check(&field("street"), street));
    let recipient = keep(medins_common::validate::name(&field("recipient"), recipient));
    let phone = keep(medins_common::phone::parse(phone).map(|phone| phone.as_str().to_owned()).map_err(|_| {
        ApiError::invalid_field(Reason::InvalidArgument, &field("phone"), "must be a mainland mobile number")
    }));
    match (region, street, recipient, phone) {
        (Some(region_code), Some(street), Some(recipient), Some(phone)) => {
            Ok(MailingAddress { region_code, street, recipient, phone })
        }
        _ => {
            let reason = match refused.as_slice() {
                [only] => only.reason(),
                _ => Reason::InvalidArgument,
            };
            let mut violations = refused.iter().flat_map(|error| error.field_violations().iter().cloned());
            let (name, description) =
                violations.next().ok_or_else(|| ApiError::internal("an address refused without a field"))?;
            let mut error = ApiError::invalid_field(reason, &name, description);
            for (name, description) in violations {
                error = error.with_field_violation(&name, description);
            }
            Err(error)
        }
    }
}

/// A rejection reason ([`REJECTION_REASON`]).
pub fn rejection_reason(text: &str) -> ApiResult<String> {
    REJECTION_REASON.check("rejection_reason", text)
}

/// A carrier's tracking number: 6-32 letters, digits or `-`.
pub fn tracking_number(text: &str) -> ApiResult<String> {
    let text = text.trim();
    if (6..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(text.to_owned())
    } else {
        Err(ApiError::invalid_field(Reason::InvalidArgument, "tracking_number", "must be 6-32 letters, digits or '-'"))
    }
}

/// An employer code (as accounts carry it).
pub fn employer_code(text: &str) -> ApiResult<String> {
    let text = text.trim();
    if is_employer_code(text) {
        Ok(text.to_owned())
    } else {
        Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "employer_code",
            "must be 1-32 letters, digits or hyphens",
        ))
    }
}

/// Whether a day is a working day (Monday to Friday; public holidays are not modelled).
pub fn is_working_day(date: NaiveDate) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The date `days` working days after `from` (`from` itself never counts).
pub fn add_working_days(from: NaiveDate, days: u32) -> NaiveDate {
    let mut date = from;
    let mut left = days;
    while left > 0 {
        date = date.succ_opt().expect("dates far from the end of the calendar");
        if is_working_day(date) {
            left -= 1;
        }
    }
    date
}

/// When a pick-up card approved on `approved_on` (China Standard Time) is ready by.
pub fn ready_by(approved_on: NaiveDate) -> NaiveDate {
    add_working_days(approved_on, PICKUP_WORKING_DAYS)
}

/// The Luhn check digit of `payload` (decimal digits).
pub fn luhn_check_digit(payload: &str) -> u8 {
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            // From the right, every other digit starting with the one next to the check digit
            // is doubled.
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// A new card number: the issuer prefix, `SEQUENCE_DIGITS` digits drawn uniformly from `rng`
/// (a CSPRNG in the service), and the Luhn check digit. Drawn rather than counted, so that a
/// counter that knows one card number cannot walk to its neighbours; the store draws again in
/// the rare case the number is taken.
pub fn random_card_number<R: Rng + CryptoRng>(rng: &mut R) -> String {
    let body = rng.gen_range(0..10_u64.pow(SEQUENCE_DIGITS as u32));
    let payload = format!("{ISSUER_PREFIX}{body:0width$}", width = SEQUENCE_DIGITS);
    let check = luhn_check_digit(&payload);
    format!("{payload}{check}")
}

/// A card number field: 16 digits with our issuer prefix and a valid check digit
/// (INVALID_ARGUMENT otherwise: a mistyped number is caught before any lookup).
pub fn parse_card_number(field: &str, text: &str) -> ApiResult<String> {
    let text = text.trim();
    let valid = text.len() == CARD_NUMBER_DIGITS
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.starts_with(ISSUER_PREFIX)
        && luhn_check_digit(&text[..CARD_NUMBER_DIGITS - 1]) == text.as_bytes()[CARD_NUMBER_DIGITS - 1] - b'0';
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            field,
            "must be a 16-digit medins card number with a valid check digit",
        ))
    }
}

/// Where a page of applications (newest first) continues: strictly older than this one by
/// (submitted_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplicationCursor {
    /// The last application's submission time.
    pub submitted_at: NaiveDateTime,
    /// The last application's id.
    pub application_id: Uuid,
}

const CURSOR_VERSION: &str = "a1";

impl ApplicationCursor {
    /// The opaque token.
    pub fn encode(&self) -> String {
        let micros = self.submitted_at.and_utc().timestamp_micros();
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}.{micros}.{}", self.application_id))
    }

    /// Parses a token: INVALID_ARGUMENT naming `page_token` when it is not one of ours.
    pub fn decode(token: &str) -> ApiResult<ApplicationCursor> {
        let invalid = || ApiError::invalid_field(Reason::InvalidArgument, "page_token", "not a token of this listing");
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.split('.');
        let (Some(CURSOR_VERSION), Some(micros), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let submitted_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?.naive_utc();
        let application_id = Uuid::parse_str(id).map_err(|_| invalid())?;
        Ok(ApplicationCursor { submitted_at, application_id })
    }
}

/// Failed card lookups a partner may make per China Standard Time day before every further
/// lookup by card number is refused (RESOURCE_EXHAUSTED / CARD_LOOKUP_LIMIT_EXCEEDED until the
/// next day). A counter types the number off a card in front of it: a few typos a day are
/// normal, a walk through the number space is not.
pub const LOOKUP_FAILURES_PER_DAY: u32 = 20;

/// How a card-number lookup ended, for the per-partner failed-lookup count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The number named a card the caller may act on: the reserved unit is given back.
    Found,
    /// No such card, or a card the caller has no standing for (another holder, another
    /// person's token): the unit stays used.
    Failed,
    /// Something else went wrong (a dependency down, a bad field found late): not a lookup
    /// that taught the caller anything; the unit is given back.
    NotALookup,
}

/// Classifies a card lookup (find the card, match the holder, ask the access table, check a
/// PIN) by its error's reason, if any: the refusals that also answer a missing card (the
/// access rows of card RPCs refuse with CARD_NOT_FOUND), a wrong PIN (OpenVisitWithCard answers
/// it as it answers an unknown card) and a locked PIN count as failed.
pub fn lookup_outcome(error: Option<&ApiError>) -> LookupOutcome {
    match error.map(ApiError::reason) {
        None => LookupOutcome::Found,
        Some(Reason::CardNotFound | Reason::CardHolderMismatch | Reason::CardPinIncorrect | Reason::CardPinLocked) => {
            LookupOutcome::Failed
        }
        Some(_) => LookupOutcome::NotALookup,
    }
}

/// Whether a partner of `kind` has its failed card lookups counted: everyone but operators and
/// medins' own services (who look cards up for people, audited, and need no budget).
pub fn lookups_counted(kind: PartnerKind) -> bool {
    !matches!(kind, PartnerKind::Ops | PartnerKind::Service)
}

/// The refusal once a partner used up its failed lookups of the day `today` (China Standard
/// Time) at `now` (stored UTC): retry after the next China midnight.
pub fn lookup_limit_exceeded(now: NaiveDateTime, today: NaiveDate) -> ApiError {
    let next_day_start =
        today.succ_opt().unwrap_or(today).and_time(chrono::NaiveTime::MIN) - chrono::Duration::hours(8);
    let wait = (next_day_start - now).to_std().unwrap_or_default().max(std::time::Duration::from_secs(1));
    ApiError::resource_exhausted(
        Reason::CardLookupLimitExceeded,
        "too many card lookups failed today for this partner; card numbers are refused until tomorrow",
        wait,
    )
}

/// Whether a Binder standing really acts for the holder in a card RPC: only the guardian who
/// applied for the member's card (the application's `guardian_person_id`) manages it, so a
/// binding alone does not open an adult member's card.
pub fn binder_acts(standing: Standing, token_subject: Option<Uuid>, guardian_of_record: Option<Uuid>) -> bool {
    standing != Standing::Binder || (token_subject.is_some() && token_subject == guardian_of_record)
}

/// Whether the token a card application came with fits what it says: a named guardian applies
/// with the guardian's own token (standing Binder), an applicant for themselves with their own
/// (standing Person); operators apply at the counter with no token. Anything else is refused
/// like a token for another person.
pub fn check_applying_as(standing: Standing, token_subject: Option<Uuid>, guardian: Option<Uuid>) -> ApiResult<()> {
    let fits = match standing {
        Standing::Person => guardian.is_none(),
        Standing::Binder => guardian.is_some() && guardian == token_subject,
        Standing::Operator | Standing::Service => true,
        Standing::Counter
        | Standing::Employer
        | Standing::HolderPresent
        | Standing::Guardian
        | Standing::Present
        | Standing::FrontDoor
        | Standing::Linked
        | Standing::PhoneChangeStarter
        | Standing::FaceProvider => false,
    };
    if fits {
        Ok(())
    } else {
        // PERMISSION_DENIED rather than the reason's UNAUTHENTICATED: the token is proven, it is
        // only not this applicant's (or their guardian's).
        Err(ApiError::permission_denied(
            Reason::PersonTokenInvalid,
            "the person token is not the applicant's or their guardian's",
        ))
    }
}

/// What a caller sees of a card: the holder's own app, a guardian and operators see it all; a
/// counter where the holder is present sees the card's state only, no person or application
/// id (the counter knows the person by the ID card shown, and ids would let it reach the
/// person's data through other calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardView {
    /// Every field.
    Full,
    /// Without person and application ids.
    Counter,
}

/// The view a caller of `standing` gets.
pub fn card_view(standing: Standing) -> CardView {
    match standing {
        Standing::HolderPresent | Standing::Counter => CardView::Counter,
        _ => CardView::Full,
    }
}

/// A card fee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFee {
    /// Fee id.
    pub id: Uuid,
    /// Who paid.
    pub person_id: Uuid,
    /// The bank partner.
    pub bank_partner_id: String,
    /// The bank's reference.
    pub reference: String,
    /// Amount in fen.
    pub amount_cents: i64,
    /// The application it paid for.
    pub application_id: Option<Uuid>,
    /// Recorded.
    pub recorded_at: NaiveDateTime,
}

/// One status an application reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationEvent {
    /// The status.
    pub status: ApplicationStatus,
    /// The partner whose call made the step.
    pub partner_id: String,
    /// When.
    pub at: NaiveDateTime,
}

/// A card application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardApplication {
    /// Application id.
    pub id: Uuid,
    /// The applicant.
    pub person_id: Uuid,
    /// Channel.
    pub channel: CardChannel,
    /// Delivery.
    pub delivery: Delivery,
    /// Status.
    pub status: ApplicationStatus,
    /// The partner that submitted it.
    pub partner_id: String,
    /// The guardian who applied (applicants under 16).
    pub guardian_person_id: Option<Uuid>,
    /// The agent (AGENT).
    pub agent_person_id: Option<Uuid>,
    /// The employer code (EMPLOYER).
    pub employer_code: Option<String>,
    /// The lost card replaced (REPLACEMENT).
    pub replaces_card_number: Option<String>,
    /// Why it was rejected.
    pub rejection_reason: Option<String>,
    /// When a pick-up card is ready by.
    pub ready_by: Option<NaiveDate>,
    /// Mail tracking number.
    pub tracking_number: Option<String>,
    /// The card's number.
    pub card_number: Option<String>,
    /// Submitted.
    pub submitted_at: NaiveDateTime,
    /// Last change.
    pub updated_at: NaiveDateTime,
    /// Mailing address (mailed cards; loaded by single reads only).
    pub mailing_address: Option<MailingAddress>,
    /// The fee that paid for it (loaded by single reads only).
    pub fee_id: Option<Uuid>,
    /// Every status reached, oldest first (loaded by single reads only).
    pub history: Vec<ApplicationEvent>,
}

/// A card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// The number.
    pub card_number: String,
    /// The holder.
    pub person_id: Uuid,
    /// Its application.
    pub application_id: Uuid,
    /// Status.
    pub status: CardStatus,
    /// Medical function activated.
    pub medical_activated_at: Option<NaiveDateTime>,
    /// Financial function activated.
    pub financial_activated_at: Option<NaiveDateTime>,
    /// The application replacing it.
    pub replaced_by_application_id: Option<Uuid>,
    /// Produced.
    pub issued_at: NaiveDateTime,
    /// Last change.
    pub updated_at: NaiveDateTime,
    /// Whether its application is DELIVERED.
    pub delivered: bool,
}

/// The proof an ONLINE application was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// ID card front.
    pub id_card_front: Uuid,
    /// ID card back.
    pub id_card_back: Uuid,
    /// Photo (optional under 7).
    pub photo: Option<Uuid>,
    /// The face session.
    pub face_session_id: Uuid,
    /// The consumed SMS challenge.
    pub sms_challenge_id: Uuid,
}

/// A new application.
#[derive(Debug, Clone)]
pub struct NewApplication {
    /// The applicant.
    pub person_id: Uuid,
    /// Channel.
    pub channel: CardChannel,
    /// Delivery.
    pub delivery: Delivery,
    /// The partner submitting it.
    pub partner_id: String,
    /// The guardian applying.
    pub guardian_person_id: Option<Uuid>,
    /// The agent.
    pub agent_person_id: Option<Uuid>,
    /// The employer code.
    pub employer_code: Option<String>,
    /// ONLINE proof.
    pub evidence: Option<Evidence>,
    /// Where to mail it.
    pub mailing_address: Option<MailingAddress>,
    /// The fee paying for it.
    pub fee_id: Option<Uuid>,
}

/// The refusal of an application while the person has an open one.
pub fn open_application_conflict() -> ApiError {
    ApiError::failed_precondition(Reason::CardStateConflict, "the person already has an open card application")
        .with_metadata("conflict", "open_application")
}

/// The refusal of an application (or of a card's production) while the person has a current
/// card.
pub fn existing_card_conflict() -> ApiError {
    ApiError::failed_precondition(
        Reason::CardStateConflict,
        "the person already has a card: report it lost formally and replace it (ReplaceCard)",
    )
    .with_metadata("conflict", "existing_card")
}

/// Whether a person may apply: not with an open application ([`ApplicationStatus::is_open`]),
/// not with a current card (one not REPLACED). FAILED_PRECONDITION / CARD_STATE_CONFLICT with
/// the conflict in the metadata otherwise.
pub fn require_may_apply(open_application: bool, current_card: bool) -> ApiResult<()> {
    if open_application {
        return Err(open_application_conflict());
    }
    if current_card {
        return Err(existing_card_conflict());
    }
    Ok(())
}

/// Whether a dispatch fits the application's delivery: a mailed card needs a tracking number,
/// a card picked up at a service point has none (INVALID_ARGUMENT on `tracking_number`). The
/// state table ([`next_application_status`]) decides whether it may be dispatched at all.
pub fn check_dispatch(delivery: Delivery, has_tracking: bool) -> ApiResult<()> {
    match (delivery, has_tracking) {
        (Delivery::Mail, false) => {
            Err(ApiError::invalid_field(Reason::InvalidArgument, "tracking_number", "required for a mailed card"))
        }
        (Delivery::Pickup, true) => Err(ApiError::invalid_field(
            Reason::InvalidArgument,
            "tracking_number",
            "must be empty for a card picked up at a service point",
        )),
        _ => Ok(()),
    }
}

/// The ready-by date a review sets: an application approved on `today` for pick-up is ready
/// [`PICKUP_WORKING_DAYS`] working days later ([`ready_by`]); no date otherwise.
pub fn ready_by_after(next: ApplicationStatus, delivery: Delivery, today: NaiveDate) -> Option<NaiveDate> {
    (next == ApplicationStatus::Approved && delivery == Delivery::Pickup).then(|| ready_by(today))
}

/// What an activation (or use) of a card switches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activation {
    /// The medical function, at its first use at a hospital or pharmacy.
    pub medical: bool,
    /// The financial function, at a bank (which sets the card's PIN with it).
    pub financial: bool,
}

/// Activating (or using) `card` through `channel`: a VALID card ([`next_card_status`]) that
/// was delivered (else CARD_STATE_CONFLICT, status NOT_DELIVERED). At a hospital or pharmacy
/// the medical function switches on at its first use (ActivateCard HOSPITAL/PHARMACY and
/// OpenVisitWithCard both ask this one decision); later uses change nothing. At a bank the
/// financial function switches on, once: the bank sets the PIN with it, so a second activation
/// there is CARD_STATE_CONFLICT (status FINANCIAL_ACTIVE: the PIN is changed with ChangeCardPin
/// or reset with ResetCardPin, never overwritten by an activation).
pub fn decide_activation(card: &Card, channel: ActivationChannel) -> ApiResult<Activation> {
    next_card_status(card.status, CardAction::Activate)?;
    if !card.delivered {
        return Err(StateConflict { status: "NOT_DELIVERED", action: CardAction::Activate.as_str() }.into_error());
    }
    if channel.activates_financial() {
        if card.financial_activated_at.is_some() {
            return Err(
                StateConflict { status: "FINANCIAL_ACTIVE", action: CardAction::Activate.as_str() }.into_error()
            );
        }
        return Ok(Activation { medical: false, financial: true });
    }
    Ok(Activation { medical: card.medical_activated_at.is_none(), financial: false })
}

/// Replacing a LOST `card`: the card becomes REPLACED ([`next_card_status`]) and a new
/// REPLACEMENT application paid by `fee_id` is submitted for its holder, mailed to
/// `mailing_address` or picked up. Refused while the holder has an open application, and
/// unless the fee (`fee`: its payer and whether it paid already, [`check_fee`]) is the
/// holder's and unused.
pub fn decide_replacement(
    card: &Card,
    open_application: bool,
    fee: Option<(Uuid, bool)>,
    fee_id: Uuid,
    mailing_address: Option<MailingAddress>,
    partner_id: &str,
) -> ApiResult<(CardStatus, NewApplication)> {
    let next = next_card_status(card.status, CardAction::Replace)?;
    if open_application {
        return Err(open_application_conflict());
    }
    check_fee(fee, card.person_id).map_err(FeeCheck::into_error)?;
    let new = NewApplication {
        person_id: card.person_id,
        channel: CardChannel::Replacement,
        delivery: delivery_of(CardChannel::Replacement, mailing_address.is_some()),
        partner_id: partner_id.to_owned(),
        guardian_person_id: None,
        agent_person_id: None,
        employer_code: None,
        evidence: None,
        mailing_address,
        fee_id: Some(fee_id),
    };
    Ok((next, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn card(status: CardStatus, delivered: bool) -> Card {
        let at = date(2026, 5, 1).and_hms_opt(3, 0, 0).unwrap();
        Card {
            card_number: "8611000000000001".into(),
            person_id: Uuid::now_v7(),
            application_id: Uuid::now_v7(),
            status,
            medical_activated_at: None,
            financial_activated_at: None,
            replaced_by_application_id: None,
            issued_at: at,
            updated_at: at,
            delivered,
        }
    }

    #[test]
    fn one_open_application_and_one_current_card_per_person() {
        assert!(require_may_apply(false, false).is_ok());
        for (open, current, conflict) in
            [(true, false, "open_application"), (true, true, "open_application"), (false, true, "existing_card")]
        {
            let error = require_may_apply(open, current).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::FailedPrecondition, Reason::CardStateConflict));
            let expected =
                if conflict == "open_application" { open_application_conflict() } else { existing_card_conflict() };
            assert_eq!(error.message(), expected.message());
        }
        let open: Vec<_> = ApplicationStatus::ALL.iter().filter(|s| s.is_open()).map(|s| s.as_str()).collect();
        assert_eq!(open, ["SUBMITTED", "APPROVED", "PRODUCED", "MAILED", "READY_FOR_PICKUP"]);
    }

    #[test]
    fn a_dispatch_fits_its_delivery() {
        assert!(check_dispatch(Delivery::Mail, true).is_ok());
        assert!(check_dispatch(Delivery::Pickup, false).is_ok());
        for (delivery, tracking) in [(Delivery::Mail, false), (Delivery::Pickup, true)] {
            let error = check_dispatch(delivery, tracking).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidArgument));
        }
        let friday = date(2026, 11, 27);
        assert_eq!(ready_by_after(ApplicationStatus::Approved, Delivery::Pickup, friday), Some(ready_by(friday)));
        assert_eq!(ready_by_after(ApplicationStatus::Approved, Delivery::Mail, friday), None);
        assert_eq!(ready_by_after(ApplicationStatus::Rejected, Delivery::Pickup, friday), None);
    }

    #[test]
    fn a_delivered_valid_card_activates_each_function_once() {
        let fresh = card(CardStatus::Valid, true);
        assert_eq!(
            decide_activation(&fresh, ActivationChannel::Hospital).unwrap(),
            Activation { medical: true, financial: false }
        );
        // The bank switches on the financial function only (the medical one waits for its first
        // use at a hospital or pharmacy), once.
        assert_eq!(
            decide_activation(&fresh, ActivationChannel::Bank).unwrap(),
            Activation { medical: false, financial: true }
        );
        let used = Card {
            medical_activated_at: Some(fresh.issued_at),
            financial_activated_at: Some(fresh.issued_at),
            ..fresh.clone()
        };
        assert_eq!(
            decide_activation(&used, ActivationChannel::Pharmacy).unwrap(),
            Activation { medical: false, financial: false }
        );
        let again = decide_activation(&used, ActivationChannel::Bank).unwrap_err();
        assert_eq!(again.reason(), Reason::CardStateConflict);
        assert!(again.message().contains("FINANCIAL_ACTIVE"));
        assert_eq!(ActivationChannel::of_care_counter(PartnerKind::Pharmacy), Some(ActivationChannel::Pharmacy));
        assert_eq!(ActivationChannel::of_care_counter(PartnerKind::Bank), None);

        let undelivered = decide_activation(&card(CardStatus::Valid, false), ActivationChannel::Hospital).unwrap_err();
        assert_eq!(undelivered.reason(), Reason::CardStateConflict);
        assert!(undelivered.message().contains("NOT_DELIVERED"));
        for status in [CardStatus::LostTemporary, CardStatus::Lost, CardStatus::Replaced] {
            let error = decide_activation(&card(status, true), ActivationChannel::Pharmacy).unwrap_err();
            assert_eq!(error.reason(), Reason::CardStateConflict);
        }
    }

    #[test]
    fn a_lost_card_is_replaced_by_a_new_application_paid_by_the_holders_unused_fee() {
        let lost = card(CardStatus::Lost, true);
        let fee_id = Uuid::now_v7();
        let (next, new) =
            decide_replacement(&lost, false, Some((lost.person_id, false)), fee_id, None, "bank-1").unwrap();
        assert_eq!(next, CardStatus::Replaced);
        assert_eq!((new.person_id, new.channel, new.fee_id), (lost.person_id, CardChannel::Replacement, Some(fee_id)));
        assert_eq!((new.delivery, new.partner_id.as_str()), (delivery_of(CardChannel::Replacement, false), "bank-1"));

        let valid =
            decide_replacement(&card(CardStatus::Valid, true), false, Some((lost.person_id, false)), fee_id, None, "b");
        assert_eq!(valid.unwrap_err().reason(), Reason::CardStateConflict);
        let open = decide_replacement(&lost, true, Some((lost.person_id, false)), fee_id, None, "b").unwrap_err();
        assert_eq!(open.message(), open_application_conflict().message());
        for fee in [None, Some((Uuid::now_v7(), false)), Some((lost.person_id, true))] {
            let error = decide_replacement(&lost, false, fee, fee_id, None, "b").unwrap_err();
            assert_eq!(error.reason(), Reason::CardFeeInvalid);
        }
    }

    #[test]
    fn approval_on_a_friday_is_ready_by_wednesday_and_on_a_wednesday_by_monday() {
        let friday = date(2026, 11, 27);
        assert_eq!(friday.weekday(), Weekday::Fri);
        assert_eq!(ready_by(friday), date(2026, 12, 2));
        assert_eq!(ready_by(friday).weekday(), Weekday::Wed);
        let wednesday = date(2026, 11, 25);
        assert_eq!(ready_by(wednesday), date(2026, 11, 30));
        assert_eq!(ready_by(wednesday).weekday(), Weekday::Mon);
        // Weekend approvals count from Monday.
        assert_eq!(ready_by(date(2026, 11, 28)), date(2026, 12, 2));
        assert_eq!(ready_by(date(2026, 11, 29)), date(2026, 12, 2));
        assert_eq!(add_working_days(friday, 0), friday);
    }

    const APPLICATION_TABLE: &[(ApplicationStatus, ApplicationAction, Delivery, ApplicationStatus)] = {
        use ApplicationAction as A;
        use ApplicationStatus as S;
        &[
            (S::Submitted, A::Approve, Delivery::Mail, S::Approved),
            (S::Submitted, A::Approve, Delivery::Pickup, S::Approved),
            (S::Submitted, A::Approve, Delivery::OnTheSpot, S::Approved),
            (S::Submitted, A::Reject, Delivery::Mail, S::Rejected),
            (S::Submitted, A::Reject, Delivery::Pickup, S::Rejected),
            (S::Submitted, A::Reject, Delivery::OnTheSpot, S::Rejected),
            (S::Approved, A::Produce, Delivery::Mail, S::Produced),
            (S::Approved, A::Produce, Delivery::Pickup, S::Produced),
            (S::Approved, A::Produce, Delivery::OnTheSpot, S::Produced),
            (S::Produced, A::Dispatch, Delivery::Mail, S::Mailed),
            (S::Produced, A::Dispatch, Delivery::Pickup, S::ReadyForPickup),
            (S::Produced, A::ConfirmDelivery, Delivery::OnTheSpot, S::Delivered),
            (S::Mailed, A::ConfirmDelivery, Delivery::Mail, S::Delivered),
            (S::ReadyForPickup, A::ConfirmDelivery, Delivery::Pickup, S::Delivered),
        ]
    };

    #[test]
    fn every_application_state_action_and_delivery_outside_the_table_is_a_conflict() {
        let mut allowed = 0;
        for &status in ApplicationStatus::ALL {
            for &action in ApplicationAction::ALL {
                for &delivery in Delivery::ALL {
                    let expected = APPLICATION_TABLE
                        .iter()
                        .find(|(s, a, d, _)| (*s, *a, *d) == (status, action, delivery))
                        .map(|row| row.3);
                    match (next_application_status(status, action, delivery), expected) {
                        (Ok(next), Some(want)) => {
                            assert_eq!(next, want);
                            allowed += 1;
                        }
                        (Err(conflict), None) => {
                            let error = conflict.into_error();
                            assert_eq!(
                                (error.code(), error.reason()),
                                (tonic::Code::FailedPrecondition, Reason::CardStateConflict)
                            );
                            assert_eq!(conflict.status, status.as_str());
                            assert_eq!(conflict.action, action.as_str());
                        }
                        (got, want) => panic!("{status:?} x {action:?} x {delivery:?}: {got:?}, expected {want:?}"),
                    }
                }
            }
        }
        assert_eq!(allowed, APPLICATION_TABLE.len());
    }

    #[test]
    fn every_card_state_and_action_outside_the_table_is_a_conflict() {
        use CardAction as A;
        use CardStatus as S;
        let table = [
            (S::Valid, A::Activate, S::Valid),
            (S::Valid, A::ReportTemporaryLoss, S::LostTemporary),
            (S::Valid, A::ReportFormalLoss, S::Lost),
            (S::LostTemporary, A::ReportFormalLoss, S::Lost),
            (S::LostTemporary, A::CancelLossReport, S::Valid),
            (S::Lost, A::Replace, S::Replaced),
        ];
        for &status in CardStatus::ALL {
            for &action in CardAction::ALL {
                let expected = table.iter().find(|(s, a, _)| (*s, *a) == (status, action)).map(|row| row.2);
                match expected {
                    Some(want) => assert_eq!(next_card_status(status, action), Ok(want)),
                    None => assert_eq!(
                        next_card_status(status, action),
                        Err(StateConflict { status: status.as_str(), action: action.as_str() }),
                        "{status:?} x {action:?}"
                    ),
                }
            }
        }
        // A formally lost card is never unfrozen; a frozen one cannot be activated (used).
        assert!(next_card_status(S::Lost, A::CancelLossReport).is_err());
        assert!(next_card_status(S::LostTemporary, A::Activate).is_err());
    }

    #[test]
    fn spellings_round_trip() {
        for &c in CardChannel::ALL {
            assert_eq!(CardChannel::parse(c.as_str()), Some(c));
        }
        for &s in ApplicationStatus::ALL {
            assert_eq!(ApplicationStatus::parse(s.as_str()), Some(s));
        }
        for &s in CardStatus::ALL {
            assert_eq!(CardStatus::parse(s.as_str()), Some(s));
        }
        for &d in Delivery::ALL {
            assert_eq!(Delivery::parse(d.as_str()), Some(d));
        }
        assert!(ApplicationStatus::Submitted.is_open());
        assert!(ApplicationStatus::ReadyForPickup.is_open());
        assert!(!ApplicationStatus::Rejected.is_open());
        assert!(!ApplicationStatus::Delivered.is_open());
    }

    #[test]
    fn card_numbers_carry_the_issuer_prefix_and_a_luhn_check_digit() {
        // The classic Luhn example: 7992739871 has check digit 3.
        assert_eq!(luhn_check_digit("7992739871"), 3);
        let mut rng = rand::rngs::OsRng;
        let first = random_card_number(&mut rng);
        assert_eq!(first.len(), CARD_NUMBER_DIGITS);
        assert!(first.starts_with(ISSUER_PREFIX));
        assert_eq!(parse_card_number("card_number", &first).unwrap(), first);
        // One wrong digit is caught by the check digit.
        let mut typo = first.clone().into_bytes();
        typo[10] = if typo[10] == b'9' { b'8' } else { typo[10] + 1 };
        assert!(parse_card_number("card_number", std::str::from_utf8(&typo).unwrap()).is_err());
        assert!(parse_card_number("card_number", "1234").is_err());
        assert!(parse_card_number("card_number", &format!("9{}", &first[1..])).is_err());
        // Drawn, not counted: a thousand numbers are valid and (almost surely) all different.
        let drawn: std::collections::BTreeSet<String> = (0..1000).map(|_| random_card_number(&mut rng)).collect();
        assert!(drawn.len() >= 999);
        assert!(drawn.iter().all(|n| parse_card_number("card_number", n).is_ok()));
    }

    #[test]
    fn channels_take_exactly_their_fields() {
        let online = ApplicationFields {
            sms: true,
            front: true,
            back: true,
            photo: true,
            face: true,
            address: true,
            fee: true,
            agent: false,
        };
        assert!(check_channel_fields(CardChannel::Online, online).is_ok());
        // The photo and ID documents are checked later (DOCUMENT_MISSING).
        assert!(check_channel_fields(CardChannel::Online, ApplicationFields { photo: false, ..online }).is_ok());
        let error = check_channel_fields(CardChannel::Online, ApplicationFields { sms: false, ..online }).unwrap_err();
        assert_eq!(error.reason(), Reason::InvalidArgument);
        assert!(check_channel_fields(CardChannel::ServiceCenter, ApplicationFields::default()).is_ok());
        assert!(check_channel_fields(CardChannel::ServicePoint, online).is_err());
        assert!(check_channel_fields(CardChannel::Agent, ApplicationFields::default()).is_err());
        assert!(
            check_channel_fields(CardChannel::Agent, ApplicationFields { agent: true, ..Default::default() }).is_ok()
        );
        assert!(check_channel_fields(CardChannel::Employer, ApplicationFields::default()).is_err());
        assert!(check_channel_fields(CardChannel::Replacement, ApplicationFields::default()).is_err());
    }

    #[test]
    fn counter_channels_are_for_ops_and_activation_for_the_matching_kind() {
        assert!(require_channel_partner(CardChannel::Online, PartnerKind::MiniProgram).is_ok());
        for channel in [CardChannel::ServiceCenter, CardChannel::ServicePoint, CardChannel::Agent] {
            assert!(require_channel_partner(channel, PartnerKind::Ops).is_ok());
            let error = require_channel_partner(channel, PartnerKind::Bank).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::PermissionDenied, Reason::PartnerKindNotAllowed));
        }
        assert!(ActivationChannel::Bank.require_partner(PartnerKind::Bank).is_ok());
        assert!(ActivationChannel::Bank.require_partner(PartnerKind::Hospital).is_err());
        assert!(ActivationChannel::Pharmacy.require_partner(PartnerKind::Pharmacy).is_ok());
        assert!(require_fee_partner(PartnerKind::Bank).is_ok());
        assert!(require_fee_partner(PartnerKind::Ops).is_err());
    }

    #[test]
    fn under_sixteen_a_guardian_applies_and_over_none_may() {
        let guardian = Uuid::now_v7();
        assert_eq!(applicant_rule(15, Some(guardian)).unwrap(), Applicant::Guardian(guardian));
        assert_eq!(applicant_rule(15, None).unwrap_err().reason(), Reason::GuardianRequired);
        assert_eq!(applicant_rule(16, Some(guardian)).unwrap_err().reason(), Reason::GuardianNotAllowed);
        assert_eq!(applicant_rule(16, None).unwrap(), Applicant::Themself);
        assert!(!photo_required(6));
        assert!(photo_required(7));
    }

    #[test]
    fn functions_freeze_with_the_card_and_close_with_it() {
        assert_eq!(function_status(CardStatus::Valid, false), FunctionStatus::Inactive);
        assert_eq!(function_status(CardStatus::Valid, true), FunctionStatus::Active);
        assert_eq!(function_status(CardStatus::LostTemporary, true), FunctionStatus::Frozen);
        assert_eq!(function_status(CardStatus::Lost, true), FunctionStatus::Closed);
        assert_eq!(function_status(CardStatus::Replaced, false), FunctionStatus::Closed);
    }

    #[test]
    fn fees_addresses_and_free_text_are_validated() {
        assert_eq!(fee_terms(2000, " PAY-1_a ").unwrap(), (2000, "PAY-1_a".to_owned()));
        assert!(fee_terms(0, "r").is_err());
        assert!(fee_terms(MAX_FEE_CENTS + 1, "r").is_err());
        assert!(fee_terms(100, "a b").is_err());
        let person = Uuid::now_v7();
        assert_eq!(check_fee(Some((person, false)), person), Ok(()));
        assert_eq!(check_fee(None, person), Err(FeeCheck::NotFound));
        assert_eq!(check_fee(Some((Uuid::now_v7(), false)), person), Err(FeeCheck::Foreign));
        assert_eq!(check_fee(Some((person, true)), person), Err(FeeCheck::Used));

        let address = mailing_address("a.", "110105", " 1 Main St ", "张三", "+86 138-1234-5678").unwrap();
        assert_eq!((address.street.as_str(), address.phone.as_str()), ("1 Main St", "13812345678"));
        assert!(!format!("{address:?}").contains("张三"));
        let error = mailing_address("a.", "11010", "", "x", "12345").unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidArgument));
        assert!(!error.message().contains("12345"));
        let fields: Vec<&str> = error.field_violations().iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(fields, ["a.region_code", "a.street", "a.phone"], "every bad field at once");
        let street = mailing_address("a.", "110105", &"街".repeat(STREET.max_chars + 1), "张三", "13812345678");
        assert_eq!(street.unwrap_err().field_violations()[0].0, "a.street");
        let name = mailing_address("a.", "110105", "1 Main St", "\u{202e}张三", "13812345678").unwrap_err();
        assert_eq!(name.reason(), Reason::InvalidName, "a bad recipient alone is a bad name");
        for bad_phone in ["12812345678", "138--12345678"] {
            let error = mailing_address("a.", "110105", "1 Main St", "张三", bad_phone).unwrap_err();
            assert!(error.message().starts_with("invalid a.phone:"), "{bad_phone}");
        }
        assert!(rejection_reason("photo unclear").is_ok());
        assert!(rejection_reason(" ").is_err());
        assert!(tracking_number("SF1234567890").is_ok());
        assert!(tracking_number("SF 1").is_err());
        assert!(employer_code("ACME-01").is_ok());
        assert!(employer_code("").is_err());
    }

    #[test]
    fn page_tokens_round_trip() {
        let cursor = ApplicationCursor {
            submitted_at: date(2026, 11, 23).and_hms_micro_opt(8, 1, 2, 345_678).unwrap(),
            application_id: Uuid::now_v7(),
        };
        assert_eq!(ApplicationCursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(ApplicationCursor::decode("nonsense").is_err());
    }
    #[test]
    fn a_binder_acts_for_a_card_only_as_the_guardian_who_applied() {
        let (guardian, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(binder_acts(Standing::Binder, Some(guardian), Some(guardian)));
        assert!(!binder_acts(Standing::Binder, Some(other), Some(guardian)));
        assert!(!binder_acts(Standing::Binder, Some(guardian), None));
        assert!(binder_acts(Standing::Person, Some(other), None));
        assert!(binder_acts(Standing::Operator, None, None));
    }

    #[test]
    fn an_application_token_must_be_the_applicants_or_the_named_guardians() {
        let (guardian, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(check_applying_as(Standing::Person, Some(other), None).is_ok());
        assert!(check_applying_as(Standing::Person, Some(other), Some(guardian)).is_err());
        assert!(check_applying_as(Standing::Binder, Some(guardian), Some(guardian)).is_ok());
        assert!(check_applying_as(Standing::Binder, Some(guardian), None).is_err());
        assert!(check_applying_as(Standing::Binder, Some(other), Some(guardian)).is_err());
        assert!(check_applying_as(Standing::Operator, None, Some(guardian)).is_ok());
        let refused = check_applying_as(Standing::HolderPresent, None, None).unwrap_err();
        assert_eq!((refused.code(), refused.reason()), (tonic::Code::PermissionDenied, Reason::PersonTokenInvalid));
    }

    #[test]
    fn failed_lookups_are_the_answers_a_missing_card_also_gets() {
        assert_eq!(lookup_outcome(None), LookupOutcome::Found);
        let missing = ApiError::not_found(Reason::CardNotFound, "no card");
        assert_eq!(lookup_outcome(Some(&missing)), LookupOutcome::Failed);
        for reason in [Reason::CardPinIncorrect, Reason::CardPinLocked] {
            assert_eq!(lookup_outcome(Some(&ApiError::of(reason, "pin"))), LookupOutcome::Failed);
        }
        let down = ApiError::of(Reason::DependencyUnavailable, "down");
        assert_eq!(lookup_outcome(Some(&down)), LookupOutcome::NotALookup);
        assert!(!lookups_counted(PartnerKind::Ops) && lookups_counted(PartnerKind::Hospital));
    }

    #[test]
    fn the_lookup_limit_lifts_at_the_next_china_midnight() {
        // 2026-12-07 23:00 CST = 15:00 UTC: one hour to wait.
        let now = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap().and_hms_opt(15, 0, 0).unwrap();
        let error = lookup_limit_exceeded(now, NaiveDate::from_ymd_opt(2026, 12, 7).unwrap());
        assert_eq!((error.code(), error.reason()), (tonic::Code::ResourceExhausted, Reason::CardLookupLimitExceeded));
    }

    #[test]
    fn a_counter_sees_no_ids() {
        assert_eq!(card_view(Standing::HolderPresent), CardView::Counter);
        assert_eq!(card_view(Standing::Person), CardView::Full);
        assert_eq!(card_view(Standing::Operator), CardView::Full);
    }
    #[test]
    fn every_card_rpc_but_the_employer_batch_has_an_access_row() {
        use crate::domain::access::rule;
        for method in [
            "RecordCardFee",
            "ApplyForCard",
            "ReviewCardApplication",
            "RecordCardProduction",
            "RecordCardDispatch",
            "ConfirmCardDelivery",
            "GetCardApplication",
            "ListCardApplications",
            "ActivateCard",
            "GetCard",
            "ReportCardLoss",
            "CancelCardLossReport",
            "ReplaceCard",
        ] {
            assert!(rule(&format!("/medins.insurance.v1.CardService/{method}")).is_some(), "{method}");
        }
    }

    #[test]
    fn a_card_is_used_only_by_a_counter_where_the_holder_is_present() {
        use crate::domain::access::{Facts, decide};
        const ACTIVATE: &str = "/medins.insurance.v1.CardService/ActivateCard";
        let person = Uuid::now_v7();
        let facts = |caller, token_subject, holder_present| Facts {
            caller,
            token_subject,
            person,
            binder: false,
            counter_visit: false,
            employer: false,
            present: false,
            holder_present,
            guardian: false,
        };
        for counter in [PartnerKind::Bank, PartnerKind::Hospital, PartnerKind::Pharmacy] {
            assert_eq!(decide(ACTIVATE, &facts(counter, None, true)).unwrap(), Standing::HolderPresent);
            let absent = decide(ACTIVATE, &facts(counter, Some(person), false)).unwrap_err();
            assert_eq!((absent.code(), absent.reason()), (tonic::Code::NotFound, Reason::CardNotFound));
        }
        // An app cannot claim a holder at its counter, and operators do not use cards.
        assert!(decide(ACTIVATE, &facts(PartnerKind::MiniProgram, None, true)).is_err());
        assert!(decide(ACTIVATE, &facts(PartnerKind::Ops, None, false)).is_err());
        // Reading a card: the holder's token, not a counter.
        const GET: &str = "/medins.insurance.v1.CardService/GetCard";
        assert_eq!(decide(GET, &facts(PartnerKind::MiniProgram, Some(person), false)).unwrap(), Standing::Person);
        assert!(decide(GET, &facts(PartnerKind::Hospital, None, true)).is_err());
        assert!(decide(GET, &facts(PartnerKind::MiniProgram, Some(Uuid::now_v7()), false)).is_err());
    }
}
