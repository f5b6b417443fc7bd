//! The access table for CardService and for the face check a binder runs (issue 13 items 1
//! and 3): every card RPC x caller, with the same answer for an existing and a missing card and
//! nothing changed; the holder at the counter; the per-partner limit on failed card lookups
//! (concurrent); a guardian's ONLINE application for a minor with the guardian's token; the
//! binder reading and watching the member's face check; and the person's access history.

use std::time::Duration;

use chrono::NaiveDate;
use futures::StreamExt;
use medins_common::audit::AuditEntry;
use medins_proto::{
    identity::v1::{FacePurpose, GetFaceVerificationRequest, WatchFaceVerificationRequest},
    insurance::v1::{
        ActivateCardRequest, ApplyForCardRequest, ApplyForCardsBatchRequest, CancelCardLossReportRequest, Card,
        CardActivationChannel, CardApplicationStatus, CardBatchPerson, CardChannel, CardFunctionStatus, CardLossKind,
        CardReviewDecision, CardStatus, DocumentKind, GetCardApplicationRequest, GetCardRequest,
        ListCardApplicationsRequest, MailingAddress, PersonIdentity, RecordCardFeeRequest, RecordCardProductionRequest,
        Relationship, ReplaceCardRequest, ReportCardLossRequest, ReviewCardApplicationRequest, card_batch_person,
        get_card_request,
    },
};
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::support::{
    SeedPerson, Stack,
    documents::{sample_jpeg, sample_png},
    privacy, reason,
    vouchers::FrontDoorPerson,
    with_person_token,
};

/// A Luhn-valid card number of the issuer that was (almost surely) never issued.
fn unissued_number(serial: u32) -> String {
    use insurance_svc::domain::card::{ISSUER_PREFIX, luhn_check_digit};
    let payload = format!("{ISSUER_PREFIX}{:09}", 900_000_000 + serial);
    format!("{payload}{}", luhn_check_digit(&payload))
}

fn identity(seed: &SeedPerson) -> PersonIdentity {
    PersonIdentity { name: seed.name.clone(), id_number: seed.id_number.clone() }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(token) => with_person_token(message, token),
        None => Request::new(message),
    }
}

fn answer<T>(result: &Result<T, Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), reason(status)),
    }
}

/// A card as operators see it.
async fn card_by_ops(stack: &Stack, number: &str) -> Card {
    stack
        .cards(Some(&stack.keys.ops))
        .get_card(GetCardRequest { key: Some(get_card_request::Key::CardNumber(number.to_owned())) })
        .await
        .expect("operators read any card")
        .into_inner()
        .card
        .unwrap()
}

/// A person who came through the mini program's front door (with its token), insured, with a
/// card issued on the spot by operators. Returns the person, the card and its application id.
async fn holder_with_card(stack: &Stack) -> (FrontDoorPerson, Card) {
    let person = stack.front_door_person(&stack.keys.mini_program).await;
    stack.open_account_for(&person.person_id).await;
    let card = stack.card_issued_on_the_spot(&person.person_id).await;
    (person, card)
}

/// The access history insurance-svc recorded for `person`, once `count` entries are there.
async fn history(stack: &Stack, person: &str, count: usize) -> Vec<AuditEntry> {
    let store = stack.audit_replica("insurance-svc");
    let person = Uuid::parse_str(person).unwrap();
    for _ in 0..200 {
        let entries = store.history(person, None, 500).await.expect("read the history");
        if entries.len() >= count {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.history(person, None, 500).await.expect("read the history")
}

/// One card RPC, called with a card number (or the holder's person id / application id).
#[derive(Debug, Clone, Copy)]
enum Probe {
    GetCardByNumber,
    GetCardByPerson,
    GetCardApplication,
    ReportLoss,
    CancelLoss,
    Replace,
    ActivateAtBankAsStranger,
}

const PROBES: [Probe; 7] = [
    Probe::GetCardByNumber,
    Probe::GetCardByPerson,
    Probe::GetCardApplication,
    Probe::ReportLoss,
    Probe::CancelLoss,
    Probe::Replace,
    Probe::ActivateAtBankAsStranger,
];

/// What a probe names: a card number, its holder and its application.
struct Target {
    number: String,
    person_id: String,
    application_id: String,
}

async fn call(
    stack: &Stack,
    key: &str,
    token: Option<&str>,
    probe: Probe,
    target: &Target,
    stranger: &SeedPerson,
) -> Result<(), Status> {
    let mut cards = stack.cards(Some(key));
    let number = target.number.clone();
    match probe {
        Probe::GetCardByNumber => cards
            .get_card(with_token(GetCardRequest { key: Some(get_card_request::Key::CardNumber(number)) }, token))
            .await
            .map(drop),
        Probe::GetCardByPerson => cards
            .get_card(with_token(
                GetCardRequest { key: Some(get_card_request::Key::PersonId(target.person_id.clone())) },
                token,
            ))
            .await
            .map(drop),
        Probe::GetCardApplication => cards
            .get_card_application(with_token(
                GetCardApplicationRequest { application_id: target.application_id.clone() },
                token,
            ))
            .await
            .map(drop),
        Probe::ReportLoss => cards
            .report_card_loss(with_token(
                ReportCardLossRequest { card_number: number, kind: CardLossKind::Formal as i32 },
                token,
            ))
            .await
            .map(drop),
        Probe::CancelLoss => cards
            .cancel_card_loss_report(with_token(CancelCardLossReportRequest { card_number: number }, token))
            .await
            .map(drop),
        Probe::Replace => cards
            .replace_card(with_token(
                ReplaceCardRequest { card_number: number, fee_id: Uuid::now_v7().to_string(), mailing_address: None },
                token,
            ))
            .await
            .map(drop),
        Probe::ActivateAtBankAsStranger => cards
            .activate_card(with_token(
                ActivateCardRequest {
                    card_number: number,
                    channel: CardActivationChannel::Bank as i32,
                    holder: Some(identity(stranger)),
                    pin: "305917".into(),
                },
                token,
            ))
            .await
            .map(drop),
    }
}

#[tokio::test]
async fn a_caller_without_a_relationship_gets_the_answer_a_missing_card_gets_and_changes_nothing() {
    let stack = Stack::start().await;
    let (holder, card) = holder_with_card(&stack).await;
    let stranger = stack.front_door_person(&stack.keys.mini_program).await;
    let binder = stack.binder(0).await;
    let existing = Target {
        number: card.card_number.clone(),
        person_id: holder.person_id.clone(),
        application_id: card.application_id.clone(),
    };
    let missing = Target {
        number: unissued_number(1),
        person_id: Uuid::now_v7().to_string(),
        application_id: Uuid::now_v7().to_string(),
    };
    let keys = &stack.keys;
    // (who, key, token): nobody here stands to the holder.
    let callers: [(&str, &str, Option<&str>); 8] = [
        ("another person's token", &keys.mini_program, Some(&stranger.token)),
        ("the front door without a token", &keys.mini_program, None),
        ("an ACTIVE binder of nobody here", &keys.bank, Some(&binder.token)),
        ("a bank without a token", &keys.bank, None),
        ("a hospital", &keys.hospital, None),
        ("a pharmacy", &keys.pharmacy, None),
        ("an employer", &keys.employer, None),
        ("a face provider", &keys.face_provider, None),
    ];
    for (who, key, token) in callers {
        for probe in PROBES {
            let on_existing = call(&stack, key, token, probe, &existing, &stranger.seed).await;
            let on_missing = call(&stack, key, token, probe, &missing, &stranger.seed).await;
            assert!(on_existing.is_err(), "{who} {probe:?} was allowed");
            assert_eq!(answer(&on_existing), answer(&on_missing), "{who} {probe:?}: existence shows");
            if let Err(status) = &on_existing {
                assert!(!status.message().contains(&card.card_number), "{who} {probe:?}: the number echoed");
            }
        }
    }
    // A few rows in words: another person's token and a stranger at the bank get NOT_FOUND.
    for probe in [Probe::GetCardByNumber, Probe::ReportLoss, Probe::ActivateAtBankAsStranger] {
        let key = if matches!(probe, Probe::ActivateAtBankAsStranger) { &keys.bank } else { &keys.mini_program };
        let token = if matches!(probe, Probe::ActivateAtBankAsStranger) { None } else { Some(stranger.token.as_str()) };
        let refused = call(&stack, key, token, probe, &existing, &stranger.seed).await;
        assert_eq!(answer(&refused), (Code::NotFound, "CARD_NOT_FOUND".to_owned()), "{probe:?}");
    }
    let refused =
        call(&stack, &keys.mini_program, Some(&stranger.token), Probe::GetCardApplication, &existing, &stranger.seed)
            .await;
    assert_eq!(answer(&refused), (Code::NotFound, "CARD_APPLICATION_NOT_FOUND".to_owned()));
    let refused = call(&stack, &keys.mini_program, None, Probe::GetCardByNumber, &existing, &stranger.seed).await;
    assert_eq!(answer(&refused), (Code::Unauthenticated, "PERSON_TOKEN_REQUIRED".to_owned()));

    // Nothing changed: still VALID, no function active, no replacement applied for.
    let after = card_by_ops(&stack, &card.card_number).await;
    assert_eq!(
        (after.status, after.medical_status, after.financial_status),
        (CardStatus::Valid as i32, CardFunctionStatus::Inactive as i32, CardFunctionStatus::Inactive as i32)
    );
    assert_eq!(stack.count_insurance_rows("card_applications").await, 1);

    // The holder's own token and operators are answered, in full.
    let mine = stack
        .cards(Some(&keys.mini_program))
        .get_card(with_person_token(
            GetCardRequest { key: Some(get_card_request::Key::PersonId(holder.person_id.clone())) },
            &holder.token,
        ))
        .await
        .expect("the holder reads their card")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(
        (mine.card_number.as_str(), mine.person_id.as_str()),
        (card.card_number.as_str(), holder.person_id.as_str())
    );
    let application = stack
        .cards(Some(&keys.mini_program))
        .get_card_application(with_person_token(
            GetCardApplicationRequest { application_id: card.application_id.clone() },
            &holder.token,
        ))
        .await
        .expect("the holder reads their application");
    assert_eq!(application.into_inner().application.unwrap().person_id, holder.person_id);
    let frozen = stack
        .cards(Some(&keys.mini_program))
        .report_card_loss(with_person_token(
            ReportCardLossRequest { card_number: card.card_number.clone(), kind: CardLossKind::Temporary as i32 },
            &holder.token,
        ))
        .await
        .expect("the holder freezes their card")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(frozen.status, CardStatus::LostTemporary as i32);

    // Operators' steps and lists stay operators': a bank with the scope missing is refused by
    // scope, the holder's own token cannot review.
    let review = stack
        .cards(Some(&keys.mini_program))
        .review_card_application(with_person_token(
            ReviewCardApplicationRequest {
                application_id: card.application_id.clone(),
                decision: CardReviewDecision::Approve as i32,
                rejection_reason: String::new(),
            },
            &holder.token,
        ))
        .await;
    assert_eq!(answer(&review).0, Code::PermissionDenied);
    let list = stack.cards(Some(&keys.employer)).list_card_applications(ListCardApplicationsRequest::default()).await;
    assert_eq!(answer(&list).0, Code::PermissionDenied);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_hospital_walking_card_numbers_without_the_holder_learns_nothing_and_activates_nothing() {
    let stack = Stack::start().await;
    let (holder, card) = holder_with_card(&stack).await;
    let stranger = SeedPerson::adult();
    let mut hospital = stack.cards(Some(&stack.keys.hospital));
    let activate = |number: &str, holder: Option<PersonIdentity>| ActivateCardRequest {
        card_number: number.to_owned(),
        channel: CardActivationChannel::Hospital as i32,
        holder,
        pin: String::new(),
    };
    // Without the holder: refused before any lookup.
    let bare = hospital.activate_card(activate(&card.card_number, None)).await;
    assert_eq!(answer(&bare), (Code::InvalidArgument, "INVALID_ARGUMENT".to_owned()));
    // With someone else's identity: the answer of a number never issued, for the real card and
    // its neighbours alike.
    let real = hospital.activate_card(activate(&card.card_number, Some(identity(&stranger)))).await;
    let unissued = hospital.activate_card(activate(&unissued_number(2), Some(identity(&stranger)))).await;
    assert_eq!(answer(&real), (Code::NotFound, "CARD_NOT_FOUND".to_owned()));
    assert_eq!(answer(&real), answer(&unissued));
    assert_eq!(real.unwrap_err().message(), unissued.unwrap_err().message());
    // A malformed identity: the same INVALID_ARGUMENT for both.
    let bad = PersonIdentity { name: "x".into(), id_number: "123".into() };
    let real = hospital.activate_card(activate(&card.card_number, Some(bad.clone()))).await;
    let unissued = hospital.activate_card(activate(&unissued_number(3), Some(bad))).await;
    assert_eq!(answer(&real).0, Code::InvalidArgument);
    assert_eq!(answer(&real), answer(&unissued));
    // Without `card.read` it reads no card at all.
    let read = hospital
        .get_card(GetCardRequest { key: Some(get_card_request::Key::CardNumber(card.card_number.clone())) })
        .await;
    assert_eq!(answer(&read), (Code::PermissionDenied, "PERMISSION_DENIED_SCOPE".to_owned()));
    let after = card_by_ops(&stack, &card.card_number).await;
    assert_eq!(after.medical_status, CardFunctionStatus::Inactive as i32, "nothing was activated");

    // The holder present: activated, and the counter's view has no person or application id.
    let used = hospital
        .activate_card(activate(&card.card_number, Some(identity(&holder.seed))))
        .await
        .expect("the holder is present")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(used.medical_status, CardFunctionStatus::Active as i32);
    assert_eq!((used.person_id.as_str(), used.application_id.as_str()), ("", ""));
    assert_eq!(used.card_number, card.card_number);
    let banked = stack
        .cards(Some(&stack.keys.bank))
        .activate_card(ActivateCardRequest {
            card_number: card.card_number.clone(),
            channel: CardActivationChannel::Bank as i32,
            holder: Some(identity(&holder.seed)),
            pin: "305917".into(),
        })
        .await
        .expect("the holder at the bank")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(banked.financial_status, CardFunctionStatus::Active as i32);
    assert_eq!(banked.person_id, "");

    // The holder's access history shows the hospital's attempts and uses, refused or not.
    let entries = history(&stack, &holder.person_id, 4).await;
    let activations: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.method == "/medins.insurance.v1.CardService/ActivateCard")
        .map(|e| (e.partner_id.as_str(), e.outcome.as_str()))
        .collect();
    for expected in [("hospital", "NOT_FOUND"), ("hospital", "OK"), ("bank", "OK")] {
        assert!(activations.contains(&expected), "{expected:?} missing from {activations:?}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_partners_failed_card_lookups_stop_at_the_daily_limit_under_concurrency() {
    let stack = Stack::start().await;
    let (holder, card) = holder_with_card(&stack).await;
    let limit = insurance_svc::domain::card::LOOKUP_FAILURES_PER_DAY as usize;
    let at_pharmacy = |number: String, who: PersonIdentity| {
        let mut client = stack.cards(Some(&stack.keys.pharmacy));
        async move {
            client
                .activate_card(ActivateCardRequest {
                    card_number: number,
                    channel: CardActivationChannel::Pharmacy as i32,
                    holder: Some(who),
                    pin: String::new(),
                })
                .await
        }
    };
    // Found lookups give their unit back: more uses than the limit leave the budget whole.
    for _ in 0..limit + 2 {
        at_pharmacy(card.card_number.clone(), identity(&holder.seed)).await.expect("a use with the holder present");
    }
    // 1.5 x the limit of wrong numbers at once: exactly `limit` are looked up.
    let stranger = SeedPerson::adult();
    let attempts = futures::future::join_all(
        (0..limit * 3 / 2).map(|i| at_pharmacy(unissued_number(100 + i as u32), identity(&stranger))),
    )
    .await;
    let not_found = attempts.iter().filter(|r| answer(r) == (Code::NotFound, "CARD_NOT_FOUND".to_owned())).count();
    let exhausted = attempts
        .iter()
        .filter(|r| answer(r) == (Code::ResourceExhausted, "CARD_LOOKUP_LIMIT_EXCEEDED".to_owned()))
        .count();
    assert_eq!((not_found, exhausted), (limit, limit / 2), "{:?}", attempts.iter().map(answer).collect::<Vec<_>>());
    // Now even the real card with its holder is refused to this partner, with a RetryInfo...
    let blocked = at_pharmacy(card.card_number.clone(), identity(&holder.seed)).await.unwrap_err();
    assert_eq!((blocked.code(), reason(&blocked).as_str()), (Code::ResourceExhausted, "CARD_LOOKUP_LIMIT_EXCEEDED"));
    use tonic_types::StatusExt;
    assert!(blocked.get_details_retry_info().is_some_and(|info| info.retry_delay.is_some()));
    // ...while another partner is not affected.
    stack
        .cards(Some(&stack.keys.hospital))
        .activate_card(ActivateCardRequest {
            card_number: card.card_number.clone(),
            channel: CardActivationChannel::Hospital as i32,
            holder: Some(identity(&holder.seed)),
            pin: String::new(),
        })
        .await
        .expect("the hospital's budget is its own");
    // The next China-time day the pharmacy looks cards up again.
    stack.clock.advance(chrono::Duration::days(1));
    at_pharmacy(card.card_number.clone(), identity(&holder.seed)).await.expect("a new day");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_bank_records_a_fee_only_for_the_payer_at_its_counter_or_with_the_persons_token() {
    let stack = Stack::start().await;
    let person = stack.front_door_person(&stack.keys.bank).await;
    stack.open_account_for(&person.person_id).await;
    let stranger = SeedPerson::adult();
    let fee = |person_id: &str, payer: Option<PersonIdentity>, reference: &str| RecordCardFeeRequest {
        person_id: person_id.to_owned(),
        amount_cents: 2000,
        reference: reference.to_owned(),
        payer,
    };
    let mut bank = stack.cards(Some(&stack.keys.bank));
    // Neither payer nor token.
    let bare = bank.record_card_fee(fee(&person.person_id, None, "R-1")).await;
    assert_eq!(answer(&bare), (Code::InvalidArgument, "INVALID_ARGUMENT".to_owned()));
    // Someone else at the counter: the answer a missing person gets.
    let wrong = bank.record_card_fee(fee(&person.person_id, Some(identity(&stranger)), "R-2")).await;
    let missing = bank.record_card_fee(fee(&Uuid::now_v7().to_string(), Some(identity(&stranger)), "R-3")).await;
    assert_eq!(answer(&wrong), (Code::NotFound, "PERSON_NOT_FOUND".to_owned()));
    assert_eq!(answer(&wrong), answer(&missing));
    assert_eq!(stack.count_insurance_rows("card_fees").await, 0);
    // The payer present, or the person's token: recorded.
    bank.record_card_fee(fee(&person.person_id, Some(identity(&person.seed)), "R-4")).await.expect("payer present");
    bank.record_card_fee(with_person_token(fee(&person.person_id, None, "R-5"), &person.token))
        .await
        .expect("the person's token");
    assert_eq!(stack.count_insurance_rows("card_fees").await, 2);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_guardian_applies_online_for_a_minor_with_the_guardians_token_and_manages_that_card() {
    let stack = Stack::start().await;
    let bank = stack.keys.bank.clone();
    let guardian = stack.binder(0).await;
    let child = stack.insured_member(NaiveDate::from_ymd_opt(2016, 3, 9).unwrap()).await;
    let documents = stack.binding_documents(&guardian, &child, Relationship::Child).await;
    // The household register confirms the relationship (issue 14: a child's binding is ACTIVE
    // only once proven).
    stack.confirm_household(&guardian, &child, Relationship::Child);
    stack.add_member(&guardian, &child, Relationship::Child, &documents).await.expect("bind the child");
    // The child's documents (uploaded here by operators: the guardian's own uploads are
    // DocumentService's), the child's fee paid at the bank with the child present, the
    // guardian's SMS challenge and face session.
    let front = stack.uploaded_document(&child.person_id, DocumentKind::IdCardFront, &sample_jpeg()).await;
    let back = stack.uploaded_document(&child.person_id, DocumentKind::IdCardBack, &sample_png()).await;
    let photo = stack.uploaded_document(&child.person_id, DocumentKind::Photo, &sample_jpeg()).await;
    let fee = stack.card_fee(&child.person_id, &child.seed).await;
    let as_front_door = FrontDoorPerson {
        person_id: guardian.person_id.clone(),
        token: guardian.token.clone(),
        seed: guardian.seed.clone(),
    };
    let sms = stack.verified_card_sms(&bank, &guardian.person_id, &guardian.seed.phone).await;
    let face = stack.passed_face_session(&bank, &as_front_door, FacePurpose::CardApplication).await;
    let token = stack.fresh_person_token(&bank, &guardian.person_id).await;
    let application = |guardian_person_id: &str| ApplyForCardRequest {
        person_id: child.person_id.clone(),
        channel: CardChannel::Online as i32,
        guardian_person_id: guardian_person_id.to_owned(),
        sms_challenge_id: sms.clone(),
        id_card_front_document_id: front.clone(),
        id_card_back_document_id: back.clone(),
        photo_document_id: photo.clone(),
        face_session_id: face.clone(),
        mailing_address: Some(MailingAddress {
            region_code: "110105".into(),
            street: "朝阳区建国路 88 号".into(),
            recipient: "监护人".into(),
            phone: "13912345678".into(),
        }),
        fee_id: fee.clone(),
        ..Default::default()
    };
    privacy::sensitive("监护人");
    let mut cards = stack.cards(Some(&bank));
    // The guardian's token without naming the guardian is refused like a token for another
    // person; so is a stranger's token naming the guardian.
    let unnamed = cards.apply_for_card(with_person_token(application(""), &token)).await;
    assert_eq!(answer(&unnamed), (Code::PermissionDenied, "PERSON_TOKEN_INVALID".to_owned()));
    let stranger = stack.front_door_person(&bank).await;
    let foreign = cards.apply_for_card(with_person_token(application(&guardian.person_id), &stranger.token)).await;
    assert_eq!(answer(&foreign), (Code::PermissionDenied, "PERSON_TOKEN_INVALID".to_owned()));
    assert_eq!(stack.count_insurance_rows("card_applications").await, 0);

    let submitted = cards
        .apply_for_card(with_person_token(application(&guardian.person_id), &token))
        .await
        .expect("the guardian applies online")
        .into_inner()
        .application
        .unwrap();
    assert_eq!(
        (submitted.person_id.as_str(), submitted.guardian_person_id.as_str(), submitted.status),
        (child.person_id.as_str(), guardian.person_id.as_str(), CardApplicationStatus::Submitted as i32)
    );
    // The guardian follows the application and, once produced, the child's card.
    cards
        .get_card_application(with_person_token(
            GetCardApplicationRequest { application_id: submitted.application_id.clone() },
            &token,
        ))
        .await
        .expect("the guardian reads it");
    let ops = stack.cards(Some(&stack.keys.ops));
    ops.clone()
        .review_card_application(ReviewCardApplicationRequest {
            application_id: submitted.application_id.clone(),
            decision: CardReviewDecision::Approve as i32,
            rejection_reason: String::new(),
        })
        .await
        .unwrap();
    let card = ops
        .clone()
        .record_card_production(RecordCardProductionRequest { application_id: submitted.application_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    privacy::sensitive(&card.card_number);
    let read = cards
        .get_card(with_person_token(
            GetCardRequest { key: Some(get_card_request::Key::PersonId(child.person_id.clone())) },
            &token,
        ))
        .await
        .expect("the guardian reads the child's card")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(read.card_number, card.card_number);
    // The child's history names the bank for the guardian's calls.
    let entries = history(&stack, &child.person_id, 3).await;
    assert!(
        entries.iter().any(|e| e.method == "/medins.insurance.v1.CardService/ApplyForCard"
            && e.partner_id == "bank"
            && e.outcome == "OK"),
        "{entries:?}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn the_binder_reads_and_watches_the_elders_face_check_and_nobody_else_does() {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let elder = stack.insured_member(NaiveDate::from_ymd_opt(1950, 6, 1).unwrap()).await;
    let documents = stack.binding_documents(&binder, &elder, Relationship::Parent).await;
    let added = stack.add_member(&binder, &elder, Relationship::Parent, &documents).await.expect("bind the parent");
    let session_id = added.face_check.expect("a face check").session_id;
    let get = |key: &str, token: Option<&str>, id: &str| {
        let mut faces = stack.faces(Some(key));
        let request = with_token(GetFaceVerificationRequest { session_id: id.to_owned() }, token);
        async move { faces.get_face_verification(request).await }
    };
    // The binder, with their own token at their own partner, reads it...
    let read = get(&stack.keys.bank, Some(&binder.token), &session_id).await.expect("the binder reads the check");
    let session = read.into_inner().session.unwrap();
    assert_eq!(session.person_id, elder.person_id);
    // ...and watches it.
    let mut watch = stack
        .faces(Some(&stack.keys.bank))
        .watch_face_verification(with_person_token(
            WatchFaceVerificationRequest { session_id: session_id.clone() },
            &binder.token,
        ))
        .await
        .expect("the binder watches the check")
        .into_inner();
    let first =
        tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("a first state").unwrap().unwrap();
    assert_eq!(first.session.unwrap().session_id, session_id);

    // Another person's token, or the binder's token at another partner: the person-token
    // refusal, as before.
    let stranger = stack.front_door_person(&stack.keys.bank).await;
    let refused = get(&stack.keys.bank, Some(&stranger.token), &session_id).await;
    assert_eq!(answer(&refused), (Code::PermissionDenied, "PERSON_TOKEN_INVALID".to_owned()));
    let elsewhere = get(&stack.keys.mini_program, Some(&binder.token), &session_id).await;
    assert!(elsewhere.is_err());
    let watched = stack
        .faces(Some(&stack.keys.bank))
        .watch_face_verification(with_person_token(
            WatchFaceVerificationRequest { session_id: session_id.clone() },
            &stranger.token,
        ))
        .await;
    assert_eq!(answer(&watched), (Code::PermissionDenied, "PERSON_TOKEN_INVALID".to_owned()));
    // The binder reads no other session of the member: one the member's own partner started.
    let other_session = stack
        .faces(Some(&stack.keys.ops))
        .start_face_verification(medins_proto::identity::v1::StartFaceVerificationRequest {
            person_id: elder.person_id.clone(),
            purpose: FacePurpose::RealName as i32,
            ..Default::default()
        })
        .await
        .expect("operators start a session for anyone")
        .into_inner()
        .session
        .unwrap()
        .session_id;
    let not_theirs = get(&stack.keys.bank, Some(&binder.token), &other_session).await;
    assert_eq!(answer(&not_theirs), (Code::PermissionDenied, "PERSON_TOKEN_INVALID".to_owned()));
    // Only a medins service names a binder at the start.
    let named = stack
        .faces(Some(&stack.keys.bank))
        .start_face_verification(with_person_token(
            medins_proto::identity::v1::StartFaceVerificationRequest {
                person_id: binder.person_id.clone(),
                purpose: FacePurpose::FamilyBinding as i32,
                binder_person_id: stranger.person_id.clone(),
                ..Default::default()
            },
            &binder.token,
        ))
        .await;
    assert_eq!(answer(&named), (Code::PermissionDenied, "PARTNER_KIND_NOT_ALLOWED".to_owned()));
    stack.shutdown().await;
}

#[tokio::test]
async fn an_employer_reads_the_applications_it_made_and_no_other() {
    let stack = Stack::start().await;
    let employee = stack.employee_of("ACME-01").await;
    let batch = stack
        .cards(Some(&stack.keys.employer))
        .apply_for_cards_batch(ApplyForCardsBatchRequest {
            employer_code: "ACME-01".into(),
            persons: vec![CardBatchPerson {
                person: Some(card_batch_person::Person::PersonId(employee.person_id.clone())),
            }],
        })
        .await
        .expect("the employer's batch")
        .into_inner();
    let own = batch.results[0].application.clone().expect("applied").application_id;
    // The same employee's application made by operators is not the employer's to read.
    let (_, card) = holder_with_card(&stack).await;
    let mut employer = stack.cards(Some(&stack.keys.employer));
    let read = employer.get_card_application(GetCardApplicationRequest { application_id: own.clone() }).await;
    assert_eq!(read.expect("its own application").into_inner().application.unwrap().person_id, employee.person_id);
    let other =
        employer.get_card_application(GetCardApplicationRequest { application_id: card.application_id.clone() }).await;
    let missing =
        employer.get_card_application(GetCardApplicationRequest { application_id: Uuid::now_v7().to_string() }).await;
    assert_eq!(answer(&other), (Code::NotFound, "CARD_APPLICATION_NOT_FOUND".to_owned()));
    assert_eq!(answer(&other), answer(&missing));
    // The employee's history names the employer for the batch and the read.
    let entries = history(&stack, &employee.person_id, 2).await;
    for method in ["ApplyForCardsBatch", "GetCardApplication"] {
        let method = format!("/medins.insurance.v1.CardService/{method}");
        assert!(
            entries.iter().any(|e| e.method == method && e.partner_id == "employer" && e.outcome == "OK"),
            "{method} missing from {entries:?}"
        );
    }
    stack.shutdown().await;
}
