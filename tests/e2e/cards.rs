//! Social security cards over gRPC: every channel end to end with the statuses a person sees,
//! illegal transitions, the refusals of an online application that write nothing, working days,
//! activation at the bank and the counter, loss and replacement, and concurrent production.

use chrono::{Datelike, NaiveDate, TimeZone, Utc, Weekday};
use medins_common::crypto::{CryptoError, FieldAad, FieldCipher};
use medins_proto::{
    identity::v1::FacePurpose,
    insurance::v1::{
        ActivateCardRequest, ApplyForCardRequest, ApplyForCardsBatchRequest, BindingStatus,
        CancelCardLossReportRequest, Card, CardActivationChannel, CardApplication, CardApplicationStatus,
        CardBatchPerson, CardChannel, CardDelivery, CardFunctionStatus, CardLossKind, CardReviewDecision, CardStatus,
        ConfirmCardDeliveryRequest, DocumentKind, GetCardApplicationRequest, GetCardRequest,
        ListCardApplicationsRequest, MailingAddress, MaskedMailingAddress, PersonIdentity, RecordCardDispatchRequest,
        RecordCardFeeRequest, RecordCardProductionRequest, Relationship, ReplaceCardRequest, ReportCardLossRequest,
        ReviewCardApplicationRequest, card_batch_person, get_card_request,
    },
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    SeedPerson, Stack, TestDatabases,
    cards::InsuredPerson,
    documents::{sample_jpeg, sample_pdf, sample_png},
    privacy, reason,
    vouchers::FrontDoorPerson,
    with_person_token,
};

fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    expected_reason: &str,
    metadata: Option<(&str, &str)>,
) {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), reason(&status).as_str()), (code, expected_reason), "{}", status.message());
    if let Some((key, value)) = metadata {
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.metadata.get(key).map(String::as_str), Some(value), "{:?}", info.metadata);
    }
}

/// The PIN the holders of these tests choose at the bank.
const PIN: &str = "305917";

fn counter(person_id: &str, channel: CardChannel) -> ApplyForCardRequest {
    ApplyForCardRequest { person_id: person_id.to_owned(), channel: channel as i32, ..Default::default() }
}

/// `number` with its check digit changed.
fn mistyped(number: &str) -> String {
    let (payload, check) = number.split_at(number.len() - 1);
    let check: u32 = check.parse().unwrap();
    format!("{payload}{}", (check + 1) % 10)
}

fn statuses(application: &CardApplication) -> Vec<i32> {
    application.history.iter().map(|e| e.status).collect()
}

async fn review(
    stack: &Stack,
    id: &str,
    decision: CardReviewDecision,
    why: &str,
) -> Result<CardApplication, tonic::Status> {
    stack
        .cards(Some(&stack.keys.ops))
        .review_card_application(ReviewCardApplicationRequest {
            application_id: id.to_owned(),
            decision: decision as i32,
            rejection_reason: why.to_owned(),
        })
        .await
        .map(|r| r.into_inner().application.unwrap())
}

async fn produce(stack: &Stack, id: &str) -> Result<(CardApplication, Card), tonic::Status> {
    stack
        .cards(Some(&stack.keys.ops))
        .record_card_production(RecordCardProductionRequest { application_id: id.to_owned() })
        .await
        .map(|r| {
            let r = r.into_inner();
            let card = r.card.unwrap();
            privacy::sensitive(&card.card_number);
            (r.application.unwrap(), card)
        })
}

async fn dispatch(stack: &Stack, id: &str, tracking: &str) -> Result<CardApplication, tonic::Status> {
    stack
        .cards(Some(&stack.keys.ops))
        .record_card_dispatch(RecordCardDispatchRequest {
            application_id: id.to_owned(),
            tracking_number: tracking.to_owned(),
        })
        .await
        .map(|r| r.into_inner().application.unwrap())
}

async fn deliver(stack: &Stack, id: &str) -> Result<(CardApplication, Card), tonic::Status> {
    stack
        .cards(Some(&stack.keys.ops))
        .confirm_card_delivery(ConfirmCardDeliveryRequest { application_id: id.to_owned() })
        .await
        .map(|r| {
            let r = r.into_inner();
            (r.application.unwrap(), r.card.unwrap())
        })
}

async fn activate(
    stack: &Stack,
    key: &str,
    number: &str,
    channel: CardActivationChannel,
    holder: Option<&SeedPerson>,
) -> Result<Card, tonic::Status> {
    stack
        .cards(Some(key))
        .activate_card(ActivateCardRequest {
            card_number: number.to_owned(),
            channel: channel as i32,
            holder: holder.map(|h| PersonIdentity { name: h.name.clone(), id_number: h.id_number.clone() }),
            // The bank sets the PIN with the financial function; the other channels take none.
            pin: if channel == CardActivationChannel::Bank { PIN.into() } else { String::new() },
        })
        .await
        .map(|r| r.into_inner().card.unwrap())
}

async fn card_by_ops(stack: &Stack, number: &str) -> Card {
    stack
        .cards(Some(&stack.keys.ops))
        .get_card(GetCardRequest { key: Some(get_card_request::Key::CardNumber(number.to_owned())) })
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap()
}

/// A card issued on the spot at a service center for a new adult.
async fn issued_card(stack: &Stack) -> (InsuredPerson, Card) {
    let person = stack.insured_adult().await;
    let response = stack
        .cards(Some(&stack.keys.ops))
        .apply_for_card(counter(&person.person_id, CardChannel::ServiceCenter))
        .await
        .unwrap()
        .into_inner();
    let card = response.card.unwrap();
    privacy::sensitive(&card.card_number);
    (person, card)
}

#[tokio::test]
async fn a_service_center_issues_the_card_on_the_spot_and_banks_and_hospitals_activate_its_functions() {
    let stack = Stack::start().await;
    let person = stack.insured_adult().await;
    let response = stack
        .cards(Some(&stack.keys.ops))
        .apply_for_card(counter(&person.person_id, CardChannel::ServiceCenter))
        .await
        .unwrap()
        .into_inner();
    let application = response.application.unwrap();
    let card = response.card.unwrap();
    privacy::sensitive(&card.card_number);
    assert_eq!(application.status, CardApplicationStatus::Delivered as i32);
    assert_eq!(application.delivery, CardDelivery::OnTheSpot as i32);
    assert_eq!(
        statuses(&application),
        [
            CardApplicationStatus::Submitted,
            CardApplicationStatus::Approved,
            CardApplicationStatus::Produced,
            CardApplicationStatus::Delivered
        ]
        .map(|s| s as i32)
    );
    assert_eq!(application.card_number, card.card_number);
    assert_eq!(card.card_number.len(), 16);
    assert!(card.card_number.starts_with("861100"));
    assert!(card.delivered);
    assert_eq!(
        (card.status, card.medical_status, card.financial_status),
        (CardStatus::Valid as i32, CardFunctionStatus::Inactive as i32, CardFunctionStatus::Inactive as i32)
    );

    // A pharmacy may not activate through the bank channel; a bank needs the holder's ID.
    assert_refused(
        activate(&stack, &stack.keys.pharmacy, &card.card_number, CardActivationChannel::Bank, Some(&person.seed))
            .await,
        Code::PermissionDenied,
        "PARTNER_KIND_NOT_ALLOWED",
        None,
    );
    // A holder who does not match gets what an unknown number gets: the counter cannot tell.
    let stranger = stack.insured_adult().await;
    assert_refused(
        activate(&stack, &stack.keys.bank, &card.card_number, CardActivationChannel::Bank, Some(&stranger.seed)).await,
        Code::NotFound,
        "CARD_NOT_FOUND",
        None,
    );
    // The holder check only matches: an identity nobody registered is refused and leaves no
    // person behind, and so is the holder's number under another name.
    let persons_before = stack.count_identity_rows("persons").await;
    let unknown = SeedPerson::adult();
    let mut wrong_name = person.seed.clone();
    wrong_name.name = "冒名顶替".into();
    for identity in [&unknown, &wrong_name] {
        assert_refused(
            activate(&stack, &stack.keys.bank, &card.card_number, CardActivationChannel::Bank, Some(identity)).await,
            Code::NotFound,
            "CARD_NOT_FOUND",
            None,
        );
    }
    assert_eq!(stack.count_identity_rows("persons").await, persons_before, "a failed holder check creates nobody");

    // First use at a hospital activates the medical function only; later uses change nothing.
    let used =
        activate(&stack, &stack.keys.hospital, &card.card_number, CardActivationChannel::Hospital, Some(&person.seed))
            .await
            .unwrap();
    assert_eq!(
        (used.medical_status, used.financial_status),
        (CardFunctionStatus::Active as i32, CardFunctionStatus::Inactive as i32)
    );
    let again =
        activate(&stack, &stack.keys.pharmacy, &card.card_number, CardActivationChannel::Pharmacy, Some(&person.seed))
            .await
            .unwrap();
    assert_eq!(again.medical_activated_at, used.medical_activated_at);

    // The bank activates the financial function (and keeps the medical one).
    let banked = activate(&stack, &stack.keys.bank, &card.card_number, CardActivationChannel::Bank, Some(&person.seed))
        .await
        .unwrap();
    assert_eq!(
        (banked.medical_status, banked.financial_status),
        (CardFunctionStatus::Active as i32, CardFunctionStatus::Active as i32)
    );
    // The counter's view carries no person or application id; operators see the same card in full.
    assert_eq!((banked.person_id.as_str(), banked.application_id.as_str()), ("", ""));
    let full = card_by_ops(&stack, &card.card_number).await;
    assert_eq!(Card { person_id: full.person_id.clone(), application_id: full.application_id.clone(), ..banked }, full);

    // A second first card for the same person is refused.
    assert_refused(
        stack.cards(Some(&stack.keys.ops)).apply_for_card(counter(&person.person_id, CardChannel::ServicePoint)).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        Some(("conflict", "existing_card")),
    );
    // Counter channels are for operators only.
    let front = stack.front_door_person(&stack.keys.mini_program).await;
    assert_refused(
        stack
            .cards(Some(&stack.keys.mini_program))
            .apply_for_card(with_person_token(counter(&front.person_id, CardChannel::ServiceCenter), &front.token))
            .await,
        Code::PermissionDenied,
        "PARTNER_KIND_NOT_ALLOWED",
        None,
    );
    stack.shutdown().await;
}

/// Sets the stack's clock to 10:00 China Standard Time on `date`.
fn set_cst_morning(stack: &Stack, date: NaiveDate) {
    stack.clock.set(Utc.from_utc_datetime(&date.and_hms_opt(2, 0, 0).unwrap()));
}

#[tokio::test]
async fn a_service_point_card_is_ready_three_working_days_after_approval() {
    let stack = Stack::start().await;
    let friday = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    let wednesday = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
    assert_eq!((friday.weekday(), wednesday.weekday()), (Weekday::Fri, Weekday::Wed));
    let mut cards = stack.cards(Some(&stack.keys.ops));
    // Every step on the injected clock, so the history stays in order whatever today is.
    set_cst_morning(&stack, friday.pred_opt().unwrap());

    let person = stack.insured_adult().await;
    let submitted = cards
        .apply_for_card(counter(&person.person_id, CardChannel::ServicePoint))
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap();
    assert_eq!(submitted.status, CardApplicationStatus::Submitted as i32);
    assert_eq!(submitted.delivery, CardDelivery::Pickup as i32);
    assert!(submitted.ready_by.is_none());
    // One open application per person.
    assert_refused(
        cards.apply_for_card(counter(&person.person_id, CardChannel::ServicePoint)).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        Some(("conflict", "open_application")),
    );

    set_cst_morning(&stack, friday);
    let approved = review(&stack, &submitted.application_id, CardReviewDecision::Approve, "").await.unwrap();
    let ready = approved.ready_by.unwrap();
    assert_eq!((ready.year, ready.month, ready.day), (2026, 12, 2), "Friday + 3 working days = Wednesday");

    let other = stack.insured_adult().await;
    let submitted_other = cards
        .apply_for_card(counter(&other.person_id, CardChannel::ServicePoint))
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap();
    set_cst_morning(&stack, wednesday);
    let ready = review(&stack, &submitted_other.application_id, CardReviewDecision::Approve, "")
        .await
        .unwrap()
        .ready_by
        .unwrap();
    assert_eq!((ready.year, ready.month, ready.day), (2026, 12, 7), "Wednesday + 3 working days = Monday");

    // Production, pick-up (no tracking number), delivery.
    let (produced, card) = produce(&stack, &submitted.application_id).await.unwrap();
    assert_eq!(produced.status, CardApplicationStatus::Produced as i32);
    assert!(!card.delivered);
    assert_refused(
        dispatch(&stack, &submitted.application_id, "SF1234567890").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        None,
    );
    let waiting = dispatch(&stack, &submitted.application_id, "").await.unwrap();
    assert_eq!(waiting.status, CardApplicationStatus::ReadyForPickup as i32);
    // Not delivered yet: no activation.
    assert_refused(
        activate(&stack, &stack.keys.hospital, &card.card_number, CardActivationChannel::Hospital, Some(&person.seed))
            .await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        Some(("status", "NOT_DELIVERED")),
    );
    let (delivered, card) = deliver(&stack, &submitted.application_id).await.unwrap();
    assert_eq!(delivered.status, CardApplicationStatus::Delivered as i32);
    assert!(card.delivered);
    assert_eq!(
        statuses(&delivered),
        [
            CardApplicationStatus::Submitted,
            CardApplicationStatus::Approved,
            CardApplicationStatus::Produced,
            CardApplicationStatus::ReadyForPickup,
            CardApplicationStatus::Delivered
        ]
        .map(|s| s as i32)
    );

    // Operators list by status, newest first, paged.
    let listed = cards
        .list_card_applications(ListCardApplicationsRequest {
            status: CardApplicationStatus::Approved as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.applications.len(), 1);
    assert_eq!(listed.applications[0].application_id, submitted_other.application_id);
    assert!(listed.next_page_token.is_empty());
    let all = cards
        .list_card_applications(ListCardApplicationsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.applications[0].application_id, submitted_other.application_id);
    let next = cards
        .list_card_applications(ListCardApplicationsRequest {
            page_size: 1,
            page_token: all.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.applications[0].application_id, submitted.application_id);
    stack.shutdown().await;
}

#[tokio::test]
async fn an_agent_application_records_the_agent_who_may_not_be_the_applicant() {
    let stack = Stack::start().await;
    let mut cards = stack.cards(Some(&stack.keys.ops));
    let person = stack.insured_adult().await;
    let agent = SeedPerson::adult();
    let identity = |seed: &SeedPerson| PersonIdentity { name: seed.name.clone(), id_number: seed.id_number.clone() };

    // The agent is checked, not created: an agent nobody registered is refused and leaves no
    // person behind.
    let persons_before = stack.count_identity_rows("persons").await;
    assert_refused(
        cards
            .apply_for_card(ApplyForCardRequest {
                agent: Some(identity(&agent)),
                ..counter(&person.person_id, CardChannel::Agent)
            })
            .await,
        Code::NotFound,
        "PERSON_NOT_FOUND",
        None,
    );
    assert_eq!(stack.count_identity_rows("persons").await, persons_before);
    stack.register_as_ops(&agent).await;

    assert_refused(
        cards.apply_for_card(counter(&person.person_id, CardChannel::Agent)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        None,
    );
    assert_refused(
        cards
            .apply_for_card(ApplyForCardRequest {
                agent: Some(identity(&person.seed)),
                ..counter(&person.person_id, CardChannel::Agent)
            })
            .await,
        Code::FailedPrecondition,
        "AGENT_IS_APPLICANT",
        None,
    );
    assert_eq!(stack.count_insurance_rows("card_applications").await, 0);

    let application = cards
        .apply_for_card(ApplyForCardRequest {
            agent: Some(identity(&agent)),
            ..counter(&person.person_id, CardChannel::Agent)
        })
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap();
    assert_eq!(application.channel, CardChannel::Agent as i32);
    assert_eq!(application.delivery, CardDelivery::Pickup as i32);
    assert!(!application.agent_person_id.is_empty());
    assert_ne!(application.agent_person_id, person.person_id);
    // Rejection needs a reason, and is final.
    assert_refused(
        review(&stack, &application.application_id, CardReviewDecision::Reject, "").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        None,
    );
    let rejected =
        review(&stack, &application.application_id, CardReviewDecision::Reject, "agent letter unsigned").await.unwrap();
    assert_eq!(rejected.status, CardApplicationStatus::Rejected as i32);
    assert_eq!(rejected.rejection_reason, "agent letter unsigned");
    // A rejected application is not open: the person may apply again.
    cards.apply_for_card(counter(&person.person_id, CardChannel::ServicePoint)).await.unwrap();
    stack.shutdown().await;
}

#[tokio::test]
async fn an_employer_batch_reports_each_persons_outcome() {
    let stack = Stack::start().await;
    let employee = stack.employee_of("ACME-01").await;
    let resident = stack.insured_adult().await;
    let uninsured = SeedPerson::adult();
    let identity = PersonIdentity { name: uninsured.name.clone(), id_number: uninsured.id_number.clone() };
    let by_id = |id: &str| CardBatchPerson { person: Some(card_batch_person::Person::PersonId(id.to_owned())) };
    let response = stack
        .cards(Some(&stack.keys.employer))
        .apply_for_cards_batch(ApplyForCardsBatchRequest {
            employer_code: "ACME-01".into(),
            persons: vec![
                by_id(&employee.person_id),
                by_id(&resident.person_id),
                CardBatchPerson { person: Some(card_batch_person::Person::Identity(identity)) },
                by_id(&employee.person_id),
                by_id("not-a-uuid"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.accepted, response.refused), (1, 4));
    let outcome: Vec<(i32, &str)> = response.results.iter().map(|r| (r.error_code, r.error_reason.as_str())).collect();
    assert_eq!(
        outcome,
        [
            (0, ""),
            (Code::FailedPrecondition as i32, "EMPLOYER_MISMATCH"),
            (Code::FailedPrecondition as i32, "NOT_INSURED"),
            (Code::FailedPrecondition as i32, "CARD_STATE_CONFLICT"),
            (Code::InvalidArgument as i32, "INVALID_ARGUMENT"),
        ]
    );
    let application = response.results[0].application.clone().unwrap();
    assert_eq!((application.channel, application.employer_code.as_str()), (CardChannel::Employer as i32, "ACME-01"));
    assert_eq!(stack.count_insurance_rows("card_applications").await, 1);
    // The employer reads what it applied for.
    let read = stack
        .cards(Some(&stack.keys.employer))
        .get_card_application(GetCardApplicationRequest { application_id: application.application_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap();
    assert_eq!(read.status, CardApplicationStatus::Submitted as i32);
    // The batch is bounded and needs a valid employer code.
    assert_refused(
        stack
            .cards(Some(&stack.keys.employer))
            .apply_for_cards_batch(ApplyForCardsBatchRequest { employer_code: "ACME 01".into(), persons: vec![] })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        None,
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_minor_is_applied_for_by_an_active_binder_only() {
    let stack = Stack::start().await;
    let mut cards = stack.cards(Some(&stack.keys.ops));
    let birth = NaiveDate::from_ymd_opt(2016, 3, 9).unwrap();
    let child = stack.insured_member(birth).await;
    let parent = stack.binder(0).await;
    let stranger = stack.insured_adult().await;
    let for_child = |guardian: &str| ApplyForCardRequest {
        guardian_person_id: guardian.to_owned(),
        ..counter(&child.person_id, CardChannel::ServicePoint)
    };

    assert_refused(
        cards.apply_for_card(for_child("")).await,
        Code::FailedPrecondition,
        "GUARDIAN_REQUIRED",
        Some(("guardian_check", "missing")),
    );
    assert_refused(
        cards.apply_for_card(for_child(&stranger.person_id)).await,
        Code::FailedPrecondition,
        "GUARDIAN_REQUIRED",
        Some(("guardian_check", "not_binder")),
    );
    // An adult applies themself.
    assert_refused(
        cards
            .apply_for_card(ApplyForCardRequest {
                guardian_person_id: parent.person_id.clone(),
                ..counter(&stranger.person_id, CardChannel::ServicePoint)
            })
            .await,
        Code::FailedPrecondition,
        "GUARDIAN_NOT_ALLOWED",
        None,
    );
    assert_eq!(stack.count_insurance_rows("card_applications").await, 0);

    let documents = stack.binding_documents(&parent, &child, Relationship::Child).await;
    stack.confirm_household(&parent, &child, Relationship::Child);
    let bound = stack.add_member(&parent, &child, Relationship::Child, &documents).await.expect("bind the child");
    assert_eq!(bound.binding.unwrap().status, BindingStatus::Active as i32);
    let application =
        cards.apply_for_card(for_child(&parent.person_id)).await.unwrap().into_inner().application.unwrap();
    assert_eq!(application.guardian_person_id, parent.person_id);
    assert_eq!(application.status, CardApplicationStatus::Submitted as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn every_illegal_step_over_grpc_is_a_card_state_conflict() {
    let stack = Stack::start().await;
    let mut cards = stack.cards(Some(&stack.keys.ops));
    let person = stack.insured_adult().await;
    let id = cards
        .apply_for_card(counter(&person.person_id, CardChannel::ServicePoint))
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap()
        .application_id;
    let conflict = |result: Result<(), tonic::Status>, status: &str, action: &str| {
        let error = result.expect_err("refused");
        assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "CARD_STATE_CONFLICT"));
        let info = error.get_details_error_info().expect("error info");
        assert_eq!(info.metadata.get("status").map(String::as_str), Some(status));
        assert_eq!(info.metadata.get("action").map(String::as_str), Some(action));
    };
    // SUBMITTED: only review.
    conflict(produce(&stack, &id).await.map(|_| ()), "SUBMITTED", "PRODUCE");
    conflict(dispatch(&stack, &id, "").await.map(|_| ()), "SUBMITTED", "DISPATCH");
    conflict(deliver(&stack, &id).await.map(|_| ()), "SUBMITTED", "CONFIRM_DELIVERY");
    review(&stack, &id, CardReviewDecision::Approve, "").await.unwrap();
    // APPROVED: only production.
    conflict(review(&stack, &id, CardReviewDecision::Approve, "").await.map(|_| ()), "APPROVED", "APPROVE");
    conflict(review(&stack, &id, CardReviewDecision::Reject, "late").await.map(|_| ()), "APPROVED", "REJECT");
    conflict(dispatch(&stack, &id, "").await.map(|_| ()), "APPROVED", "DISPATCH");
    conflict(deliver(&stack, &id).await.map(|_| ()), "APPROVED", "CONFIRM_DELIVERY");
    produce(&stack, &id).await.unwrap();
    // PRODUCED: only dispatch (pick-up: no tracking).
    conflict(produce(&stack, &id).await.map(|_| ()), "PRODUCED", "PRODUCE");
    conflict(deliver(&stack, &id).await.map(|_| ()), "PRODUCED", "CONFIRM_DELIVERY");
    dispatch(&stack, &id, "").await.unwrap();
    conflict(dispatch(&stack, &id, "").await.map(|_| ()), "READY_FOR_PICKUP", "DISPATCH");
    conflict(review(&stack, &id, CardReviewDecision::Approve, "").await.map(|_| ()), "READY_FOR_PICKUP", "APPROVE");
    deliver(&stack, &id).await.unwrap();
    conflict(deliver(&stack, &id).await.map(|_| ()), "DELIVERED", "CONFIRM_DELIVERY");
    conflict(produce(&stack, &id).await.map(|_| ()), "DELIVERED", "PRODUCE");
    assert_eq!(stack.count_insurance_rows("cards").await, 1, "no second card for one application");

    // Unknown applications and cards.
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_refused(produce(&stack, &unknown).await, Code::NotFound, "CARD_APPLICATION_NOT_FOUND", None);
    let not_issued = {
        use insurance_svc::domain::card::{ISSUER_PREFIX, luhn_check_digit};
        let payload = format!("{ISSUER_PREFIX}999999999");
        format!("{payload}{}", luhn_check_digit(&payload))
    };
    assert_refused(
        activate(&stack, &stack.keys.hospital, &not_issued, CardActivationChannel::Hospital, Some(&person.seed)).await,
        Code::NotFound,
        "CARD_NOT_FOUND",
        None,
    );
    assert_refused(
        activate(
            &stack,
            &stack.keys.hospital,
            &mistyped(&not_issued),
            CardActivationChannel::Hospital,
            Some(&person.seed),
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        None,
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_frozen_card_is_unusable_a_formally_lost_one_ends_and_is_replaced_under_a_new_number() {
    let stack = Stack::start().await;
    let (person, card) = issued_card(&stack).await;
    let number = card.card_number.clone();
    let mut ops = stack.cards(Some(&stack.keys.ops));
    let loss = |kind: CardLossKind| ReportCardLossRequest { card_number: number.clone(), kind: kind as i32 };

    let frozen = ops.report_card_loss(loss(CardLossKind::Temporary)).await.unwrap().into_inner().card.unwrap();
    assert_eq!(
        (frozen.status, frozen.medical_status, frozen.financial_status),
        (CardStatus::LostTemporary as i32, CardFunctionStatus::Frozen as i32, CardFunctionStatus::Frozen as i32)
    );
    // Neither activated nor used while frozen.
    for (key, channel, holder) in [
        (&stack.keys.bank, CardActivationChannel::Bank, Some(&person.seed)),
        (&stack.keys.hospital, CardActivationChannel::Hospital, Some(&person.seed)),
    ] {
        assert_refused(
            activate(&stack, key, &number, channel, holder).await,
            Code::FailedPrecondition,
            "CARD_STATE_CONFLICT",
            Some(("status", "LOST_TEMPORARY")),
        );
    }
    assert_refused(
        ops.report_card_loss(loss(CardLossKind::Temporary)).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        None,
    );
    // Lifted: usable again.
    let lifted = ops
        .cancel_card_loss_report(CancelCardLossReportRequest { card_number: number.clone() })
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    assert_eq!(lifted.status, CardStatus::Valid as i32);
    activate(&stack, &stack.keys.hospital, &number, CardActivationChannel::Hospital, Some(&person.seed)).await.unwrap();

    // Formal loss ends it: no unfreezing, no use, no first card; a replacement needs a fee.
    let lost = ops.report_card_loss(loss(CardLossKind::Formal)).await.unwrap().into_inner().card.unwrap();
    assert_eq!((lost.status, lost.medical_status), (CardStatus::Lost as i32, CardFunctionStatus::Closed as i32));
    assert_refused(
        ops.cancel_card_loss_report(CancelCardLossReportRequest { card_number: number.clone() }).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        Some(("status", "LOST")),
    );
    assert_refused(
        activate(&stack, &stack.keys.hospital, &number, CardActivationChannel::Hospital, Some(&person.seed)).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        None,
    );
    assert_refused(
        ops.apply_for_card(counter(&person.person_id, CardChannel::ServicePoint)).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        Some(("conflict", "existing_card")),
    );
    let others_fee = {
        let other = stack.insured_adult().await;
        stack.card_fee(&other.person_id, &other.seed).await
    };
    let replace =
        |fee: &str| ReplaceCardRequest { card_number: number.clone(), fee_id: fee.to_owned(), mailing_address: None };
    assert_refused(
        ops.replace_card(replace(&others_fee)).await,
        Code::FailedPrecondition,
        "CARD_FEE_INVALID",
        Some(("fee_check", "foreign")),
    );
    let fee = stack.card_fee(&person.person_id, &person.seed).await;
    let replaced = ops.replace_card(replace(&fee)).await.unwrap().into_inner();
    let application = replaced.application.unwrap();
    let old = replaced.replaced_card.unwrap();
    assert_eq!(
        (application.channel, application.status),
        (CardChannel::Replacement as i32, CardApplicationStatus::Submitted as i32)
    );
    assert_eq!(
        (application.replaces_card_number.as_str(), application.fee_id.as_str()),
        (number.as_str(), fee.as_str())
    );
    assert_eq!(old.status, CardStatus::Replaced as i32);
    assert_eq!(old.replaced_by_application_id, application.application_id);
    assert_refused(ops.replace_card(replace(&fee)).await, Code::FailedPrecondition, "CARD_STATE_CONFLICT", None);

    review(&stack, &application.application_id, CardReviewDecision::Approve, "").await.unwrap();
    let (_, new_card) = produce(&stack, &application.application_id).await.unwrap();
    assert_ne!(new_card.card_number, number, "a lost card's number is never issued again");
    assert_eq!(card_by_ops(&stack, &number).await.status, CardStatus::Replaced as i32);
    // The person's current card is the new one.
    let current = ops
        .get_card(GetCardRequest { key: Some(get_card_request::Key::PersonId(person.person_id.clone())) })
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    assert_eq!(current.card_number, new_card.card_number);
    stack.shutdown().await;
}

#[tokio::test]
async fn one_hundred_concurrent_productions_get_one_hundred_distinct_numbers() {
    let stack = Stack::start().await;
    let mut persons = Vec::new();
    for _ in 0..100 {
        persons.push(stack.employee_of("BULK-1").await);
    }
    let response = stack
        .cards(Some(&stack.keys.ops))
        .apply_for_cards_batch(ApplyForCardsBatchRequest {
            employer_code: "BULK-1".into(),
            persons: persons
                .iter()
                .map(|p| CardBatchPerson { person: Some(card_batch_person::Person::PersonId(p.person_id.clone())) })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.accepted, 100);
    let ids: Vec<String> =
        response.results.iter().map(|r| r.application.as_ref().unwrap().application_id.clone()).collect();
    for id in &ids {
        review(&stack, id, CardReviewDecision::Approve, "").await.unwrap();
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut client = stack.cards(Some(&stack.keys.ops));
            let id = id.clone();
            tokio::spawn(async move {
                client.record_card_production(RecordCardProductionRequest { application_id: id }).await
            })
        })
        .collect();
    let mut numbers = std::collections::HashSet::new();
    for task in tasks {
        let card = task.await.unwrap().expect("produced").into_inner().card.unwrap();
        privacy::sensitive(&card.card_number);
        insurance_svc::domain::card::parse_card_number("card_number", &card.card_number).expect("valid check digit");
        numbers.insert(card.card_number);
    }
    assert_eq!(numbers.len(), 100);
    assert_eq!(stack.count_insurance_rows("cards").await, 100);
    stack.shutdown().await;
}

/// Rows an ONLINE application writes: application, proof, address.
async fn nothing_written(stack: &Stack) -> (i64, i64, i64) {
    (
        stack.count_insurance_rows("card_applications").await,
        stack.count_insurance_rows("card_application_evidence").await,
        stack.count_insurance_rows("card_mailing_addresses").await,
    )
}

fn address() -> MailingAddress {
    MailingAddress {
        region_code: "110105".into(),
        street: "朝阳区建国路 88 号 3 单元 501".into(),
        recipient: "收件人".into(),
        phone: "13912345678".into(),
    }
}

/// Everything an ONLINE application of `person` needs, fresh.
struct OnlineKit {
    front: String,
    back: String,
    photo: String,
    fee: String,
}

async fn online_kit(stack: &Stack, person: &FrontDoorPerson) -> OnlineKit {
    OnlineKit {
        front: stack.uploaded_document(&person.person_id, DocumentKind::IdCardFront, &sample_jpeg()).await,
        back: stack.uploaded_document(&person.person_id, DocumentKind::IdCardBack, &sample_png()).await,
        photo: stack.uploaded_document(&person.person_id, DocumentKind::Photo, &sample_jpeg()).await,
        fee: stack.card_fee(&person.person_id, &person.seed).await,
    }
}

fn online(person: &FrontDoorPerson, kit: &OnlineKit, sms: &str, face: &str) -> ApplyForCardRequest {
    ApplyForCardRequest {
        person_id: person.person_id.clone(),
        channel: CardChannel::Online as i32,
        sms_challenge_id: sms.to_owned(),
        id_card_front_document_id: kit.front.clone(),
        id_card_back_document_id: kit.back.clone(),
        photo_document_id: kit.photo.clone(),
        face_session_id: face.to_owned(),
        mailing_address: Some(address()),
        fee_id: kit.fee.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_online_application_is_refused_for_each_missing_proof_writing_nothing_then_mailed() {
    let stack = Stack::start().await;
    privacy::sensitive("收件人");
    privacy::sensitive("13912345678");
    let key = stack.keys.mini_program.clone();
    let mut person = stack.front_door_person(&key).await;
    stack.open_account_for(&person.person_id).await;
    let kit = online_kit(&stack, &person).await;
    let mut cards = stack.cards(Some(&key));
    // Without a verified SMS code (sent, never verified).
    let face = stack.passed_face_session(&key, &person, FacePurpose::CardApplication).await;
    let unverified = stack.unverified_card_sms(&key, &person.person_id).await;
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &kit, &unverified, &face), &person.token)).await,
        Code::FailedPrecondition,
        "SMS_CODE_INVALID",
        None,
    );
    assert_eq!(nothing_written(&stack).await, (0, 0, 0));

    let sms = stack.verified_card_sms(&key, &person.person_id, &person.seed.phone).await;
    // Without a passed face session.
    let failed = stack.face_session(&key, &person, FacePurpose::CardApplication, false).await;
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &kit, &sms, &failed), &person.token)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "failed")),
    );
    let voucher_face = stack.passed_face_session(&key, &person, FacePurpose::VoucherActivation).await;
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &kit, &sms, &voucher_face), &person.token)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "wrong_purpose")),
    );
    // With another person's documents.
    let other = stack.front_door_person(&key).await;
    let foreign = OnlineKit {
        front: stack.uploaded_document(&other.person_id, DocumentKind::IdCardFront, &sample_jpeg()).await,
        ..online_kit(&stack, &person).await
    };
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &foreign, &sms, &face), &person.token)).await,
        Code::FailedPrecondition,
        "DOCUMENT_INVALID",
        Some(("document_check", "foreign")),
    );
    // A photo must be an image: the document service refuses a PDF uploaded as PHOTO, so no
    // application can name one (the card rule checks it again, see domain::card).
    let pdf_photo = stack
        .upload_document(&stack.keys.ops, None, &person.person_id, DocumentKind::Photo, &sample_pdf())
        .await
        .unwrap_err();
    assert_eq!((pdf_photo.code(), reason(&pdf_photo).as_str()), (Code::InvalidArgument, "DOCUMENT_TYPE_NOT_ALLOWED"));
    let no_photo = OnlineKit { photo: String::new(), ..online_kit(&stack, &person).await };
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &no_photo, &sms, &face), &person.token)).await,
        Code::FailedPrecondition,
        "DOCUMENT_MISSING",
        Some(("document", "photo_document_id")),
    );
    // With an invalid address.
    let mut bad_address = online(&person, &kit, &sms, &face);
    bad_address.mailing_address = Some(MailingAddress { region_code: "1101".into(), phone: "123".into(), ..address() });
    let status = cards.apply_for_card(with_person_token(bad_address, &person.token)).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "INVALID_ARGUMENT"));
    assert_eq!(crate::support::bad_fields(&status), ["mailing_address.region_code", "mailing_address.phone"]);
    // With another person's fee.
    let others_fee =
        OnlineKit { fee: stack.card_fee(&other.person_id, &other.seed).await, ..online_kit(&stack, &person).await };
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &others_fee, &sms, &face), &person.token)).await,
        Code::FailedPrecondition,
        "CARD_FEE_INVALID",
        Some(("fee_check", "foreign")),
    );
    assert_eq!(nothing_written(&stack).await, (0, 0, 0));

    // With a stale face session: passed more than 10 minutes ago.
    stack.clock.advance(chrono::Duration::minutes(11));
    person.token = stack.fresh_person_token(&key, &person.person_id).await;
    let fresh_sms = stack.verified_card_sms(&key, &person.person_id, &person.seed.phone).await;
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &kit, &fresh_sms, &face), &person.token)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "stale")),
    );
    assert_eq!(nothing_written(&stack).await, (0, 0, 0));

    // Every proof in order: the SMS challenge refused nothing before, so it is still usable.
    let face = stack.passed_face_session(&key, &person, FacePurpose::CardApplication).await;
    let application = cards
        .apply_for_card(with_person_token(online(&person, &kit, &fresh_sms, &face), &person.token))
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap();
    assert_eq!(
        (application.status, application.delivery),
        (CardApplicationStatus::Submitted as i32, CardDelivery::Mail as i32)
    );
    assert_eq!(application.fee_id, kit.fee);
    let shown = application.mailing_address.clone().unwrap();
    assert_eq!((shown.masked_recipient.as_str(), shown.masked_phone.as_str()), ("**人", "139****5678"));
    assert_eq!(nothing_written(&stack).await, (1, 1, 1));

    // One open application per person.
    let kit_again =
        OnlineKit { fee: stack.card_fee(&person.person_id, &person.seed).await, ..online_kit(&stack, &person).await };
    assert_refused(
        cards.apply_for_card(with_person_token(online(&person, &kit_again, &fresh_sms, &face), &person.token)).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
        Some(("conflict", "open_application")),
    );
    let other_token = stack.fresh_person_token(&key, &other.person_id).await;

    // The person follows it with their token; another person's token is refused.
    let read = cards
        .get_card_application(with_person_token(
            GetCardApplicationRequest { application_id: application.application_id.clone() },
            &person.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap();
    assert_eq!(read.history.len(), 1);
    assert_refused(
        cards
            .get_card_application(with_person_token(
                GetCardApplicationRequest { application_id: application.application_id.clone() },
                &other_token,
            ))
            .await,
        Code::NotFound,
        "CARD_APPLICATION_NOT_FOUND",
        None,
    );

    // Review, production, mailing with a tracking number, delivery.
    let id = application.application_id.clone();
    review(&stack, &id, CardReviewDecision::Approve, "").await.unwrap();
    let (_, card) = produce(&stack, &id).await.unwrap();
    assert_refused(dispatch(&stack, &id, "").await, Code::InvalidArgument, "INVALID_ARGUMENT", None);
    let mailed = dispatch(&stack, &id, "SF1234567890").await.unwrap();
    assert_eq!(
        (mailed.status, mailed.tracking_number.as_str()),
        (CardApplicationStatus::Mailed as i32, "SF1234567890")
    );
    let (delivered, _) = deliver(&stack, &id).await.unwrap();
    assert_eq!(
        statuses(&delivered),
        [
            CardApplicationStatus::Submitted,
            CardApplicationStatus::Approved,
            CardApplicationStatus::Produced,
            CardApplicationStatus::Mailed,
            CardApplicationStatus::Delivered
        ]
        .map(|s| s as i32)
    );
    let mine = cards
        .get_card(with_person_token(
            GetCardRequest { key: Some(get_card_request::Key::CardNumber(card.card_number.clone())) },
            &person.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    assert!(mine.delivered);
    // The holder reports it lost temporarily and lifts it again, with their token.
    let frozen = cards
        .report_card_loss(with_person_token(
            ReportCardLossRequest { card_number: card.card_number.clone(), kind: CardLossKind::Temporary as i32 },
            &person.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    assert_eq!(frozen.status, CardStatus::LostTemporary as i32);
    assert_refused(
        cards
            .cancel_card_loss_report(with_person_token(
                CancelCardLossReportRequest { card_number: card.card_number.clone() },
                &other_token,
            ))
            .await,
        Code::NotFound,
        "CARD_NOT_FOUND",
        None,
    );
    cards
        .cancel_card_loss_report(with_person_token(
            CancelCardLossReportRequest { card_number: card.card_number.clone() },
            &person.token,
        ))
        .await
        .unwrap();
    stack.shutdown().await;
}

/// The raw bytes of `column` of the one row of `card_mailing_addresses` in `rows`.
fn address_blob(rows: &[(String, Vec<u8>)], column: &str) -> Vec<u8> {
    let place = format!("card_mailing_addresses.{column}");
    let mut blobs = rows.iter().filter(|(label, _)| *label == place).map(|(_, bytes)| bytes.clone());
    let blob = blobs.next().unwrap_or_else(|| panic!("{place} was read"));
    assert!(blobs.next().is_none(), "one address row");
    blob
}

#[tokio::test]
async fn a_mailing_address_is_stored_encrypted_under_insurance_keys_and_read_back_masked() {
    let stack = Stack::start().await;
    let sent = MailingAddress {
        region_code: "110105".into(),
        street: "望京街道阜通东大街 6 号院 2 号楼 1702".into(),
        recipient: "欧阳明月".into(),
        phone: "13698765432".into(),
    };
    for value in [&sent.street, &sent.recipient, &sent.phone] {
        privacy::sensitive(value);
    }
    let key = stack.keys.mini_program.clone();
    let person = stack.front_door_person(&key).await;
    stack.open_account_for(&person.person_id).await;
    let kit = online_kit(&stack, &person).await;
    let sms = stack.verified_card_sms(&key, &person.person_id, &person.seed.phone).await;
    let face = stack.passed_face_session(&key, &person, FacePurpose::CardApplication).await;
    let request = ApplyForCardRequest { mailing_address: Some(sent.clone()), ..online(&person, &kit, &sms, &face) };
    let mut cards = stack.cards(Some(&key));
    // With an idempotency key: the stored first outcome must hold no plaintext either.
    let mut request = with_person_token(request, &person.token);
    request.metadata_mut().insert("idempotency-key", "apply-card-encrypted-address".parse().unwrap());
    let id = cards
        .apply_for_card(request)
        .await
        .expect("apply")
        .into_inner()
        .application
        .expect("application")
        .application_id;
    assert_eq!(stack.count_insurance_rows("card_mailing_addresses").await, 1);

    // At rest no column of any table (nor, on SQLite, the database or WAL file) holds the
    // recipient, the phone or the street; the application id is found, so the scan sees data.
    let secrets = [("recipient", sent.recipient.as_str()), ("phone", sent.phone.as_str()), ("street", &sent.street)];
    let rows = crate::privacy::raw_values(&stack.insurance_db).await;
    crate::privacy::assert_absent(&rows, &secrets, &id);
    if let TestDatabases::Sqlite { insurance, .. } = &stack.databases {
        crate::privacy::assert_absent(&crate::privacy::sqlite_files(insurance), &secrets, &id);
    }
    // The blobs are AES-256-GCM under insurance-svc's keys, bound to table, column and
    // application id; identity-svc's keys do not open them.
    let insurance_cipher = FieldCipher::new(&stack.insurance_data_keys());
    let identity_cipher = FieldCipher::new(&stack.identity_data_keys());
    let aad = |column| FieldAad { table: "card_mailing_addresses", column, row_id: &id };
    for (column, plain) in
        [("street_enc", &sent.street), ("recipient_enc", &sent.recipient), ("phone_enc", &sent.phone)]
    {
        let blob = address_blob(&rows, column);
        assert_eq!(insurance_cipher.decrypt_string(&aad(column), &blob).as_ref(), Ok(plain), "{column}");
        assert_eq!(identity_cipher.decrypt(&aad(column), &blob), Err(CryptoError::Authentication), "{column}");
    }
    assert_eq!(address_blob(&rows, "region_code"), b"110105");

    // Read back through the API: decrypted, then masked (street, recipient and phone).
    let read = |token: String| {
        let mut cards = stack.cards(Some(&key));
        let request = GetCardApplicationRequest { application_id: id.clone() };
        async move { cards.get_card_application(with_person_token(request, &token)).await }
    };
    let shown = read(person.token.clone()).await.expect("read").into_inner().application.unwrap();
    assert_eq!(
        shown.mailing_address,
        Some(MaskedMailingAddress {
            region_code: "110105".into(),
            masked_street: "望京街道阜通****".into(),
            masked_recipient: "***月".into(),
            masked_phone: "136****5432".into(),
        })
    );

    // A blob moved to another column does not decrypt: the read fails as INTERNAL, showing
    // nothing, instead of returning the street as the recipient.
    stack
        .insurance_db
        .run(|conn| -> Result<usize, medins_common::db::DbError> {
            use diesel::RunQueryDsl;
            Ok(diesel::sql_query(
                "UPDATE card_mailing_addresses SET street_enc = recipient_enc, recipient_enc = street_enc",
            )
            .execute(conn)?)
        })
        .await
        .expect("swap two blobs");
    let status = read(person.token.clone()).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::Internal, "INTERNAL"));
    stack.shutdown().await;
}

#[tokio::test]
async fn card_fees_are_recorded_by_banks_once_per_reference() {
    let stack = Stack::start().await;
    let person = stack.insured_adult().await;
    let other = stack.insured_adult().await;
    let request = |payer: &InsuredPerson, amount: i64| RecordCardFeeRequest {
        person_id: payer.person_id.clone(),
        amount_cents: amount,
        reference: "PAY-20261123-0001".into(),
        payer: Some(PersonIdentity { name: payer.seed.name.clone(), id_number: payer.seed.id_number.clone() }),
    };
    let first = stack.cards(Some(&stack.keys.bank)).record_card_fee(request(&person, 2000)).await.unwrap();
    let first = first.into_inner();
    assert!(first.created);
    let retry = stack.cards(Some(&stack.keys.bank)).record_card_fee(request(&person, 2000)).await.unwrap();
    let retry = retry.into_inner();
    assert!(!retry.created);
    assert_eq!(retry.fee, first.fee);
    assert_refused(
        stack.cards(Some(&stack.keys.bank)).record_card_fee(request(&other, 2000)).await,
        Code::FailedPrecondition,
        "IDEMPOTENCY_KEY_MISMATCH",
        None,
    );
    assert_refused(
        stack.cards(Some(&stack.keys.bank)).record_card_fee(request(&person, 0)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        None,
    );
    // Only banks hold the scope; and only a bank's kind may use it.
    assert_refused(
        stack.cards(Some(&stack.keys.mini_program)).record_card_fee(request(&person, 2000)).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
        None,
    );
    assert_eq!(stack.count_insurance_rows("card_fees").await, 1);
    stack.shutdown().await;
}
