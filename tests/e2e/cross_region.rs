//! Cross-region care filings (CrossRegionService): the person files, lists and cancels with
//! their token (operators at the window for anyone); a filing for the person's own pooling
//! region, an overlapping one and a second cancel are refused with their reasons; another
//! person's token learns nothing, whether the person exists or not; two concurrent overlapping
//! filings leave exactly one; a guardian files for a minor and an ACTIVE binder lists the
//! member's filings.

use chrono::{Datelike, NaiveDate};
use medins_proto::insurance::v1::{
    BindingStatus, CancelCrossRegionFilingRequest, CardDate, CrossRegionFilingKind, CrossRegionFilingStatus,
    FileCrossRegionCareRequest, ListCrossRegionFilingsRequest, Relationship, Scheme,
    cross_region_service_client::CrossRegionServiceClient,
};
use tonic::Code;

use crate::support::{Intercepted, Stack, bad_fields, interceptor, reason, with_idempotency_key, with_person_token};

fn filings(stack: &Stack, key: &str) -> CrossRegionServiceClient<Intercepted> {
    CrossRegionServiceClient::with_interceptor(stack.insurance_channel(), interceptor(Some(key)))
}

fn date(day: NaiveDate) -> CardDate {
    CardDate { year: day.year(), month: day.month() as i32, day: day.day() as i32 }
}

fn temporary(person_id: &str, destination: &str, starts: NaiveDate, ends: NaiveDate) -> FileCrossRegionCareRequest {
    FileCrossRegionCareRequest {
        person_id: person_id.to_owned(),
        destination_region_code: destination.to_owned(),
        kind: CrossRegionFilingKind::Temporary as i32,
        starts_on: Some(date(starts)),
        ends_on: Some(date(ends)),
    }
}

#[tokio::test]
async fn a_person_files_lists_and_cancels_their_cross_region_care() {
    let stack = Stack::start().await;
    let (person, account) = stack.insured_holder(Scheme::Resident, 0).await;
    let today = stack.clock_today();
    let mut bank = filings(&stack, &stack.keys.bank);

    let filed = bank
        .file_cross_region_care(with_person_token(
            temporary(&person.person_id, "310115", today, today + chrono::Days::new(30)),
            &person.token,
        ))
        .await
        .expect("file")
        .into_inner()
        .filing
        .expect("filing");
    assert_eq!(filed.insured_region_code, account.region_code);
    assert_eq!(filed.destination_region_code, "310115");
    assert_eq!(filed.status, CrossRegionFilingStatus::Active as i32);
    assert_eq!(filed.ends_on, Some(date(today + chrono::Days::new(30))));

    // Long-term residence elsewhere: open-ended.
    let long_term = FileCrossRegionCareRequest {
        person_id: person.person_id.clone(),
        destination_region_code: "440305".to_owned(),
        kind: CrossRegionFilingKind::LongTermResidence as i32,
        starts_on: Some(date(today + chrono::Days::new(7))),
        ends_on: None,
    };
    let long_term =
        bank.file_cross_region_care(with_person_token(long_term, &person.token)).await.expect("file long term");
    assert_eq!(long_term.into_inner().filing.unwrap().ends_on, None);

    // Another Shanghai district, overlapping: refused; within the person's own Beijing: refused.
    let overlapping = bank
        .file_cross_region_care(with_person_token(
            temporary(&person.person_id, "310104", today + chrono::Days::new(30), today + chrono::Days::new(40)),
            &person.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (overlapping.code(), reason(&overlapping).as_str()),
        (Code::AlreadyExists, "CROSS_REGION_FILING_EXISTS")
    );
    let at_home = bank
        .file_cross_region_care(with_person_token(
            temporary(&person.person_id, "110108", today, today + chrono::Days::new(3)),
            &person.token,
        ))
        .await
        .unwrap_err();
    assert_eq!((at_home.code(), reason(&at_home).as_str()), (Code::FailedPrecondition, "NOT_CROSS_REGION"));

    let listed = bank
        .list_cross_region_filings(with_person_token(
            ListCrossRegionFilingsRequest { person_id: person.person_id.clone() },
            &person.token,
        ))
        .await
        .expect("list")
        .into_inner()
        .filings;
    assert_eq!(listed.len(), 2, "two filings, the refused ones left nothing");
    assert_eq!(listed[1].filing_id, filed.filing_id, "newest first");

    let cancel =
        CancelCrossRegionFilingRequest { person_id: person.person_id.clone(), filing_id: filed.filing_id.clone() };
    let cancelled = bank
        .cancel_cross_region_filing(with_person_token(cancel.clone(), &person.token))
        .await
        .expect("cancel")
        .into_inner()
        .filing
        .unwrap();
    assert_eq!(cancelled.status, CrossRegionFilingStatus::Cancelled as i32);
    assert!(cancelled.cancelled_at.is_some());
    let again = bank.cancel_cross_region_filing(with_person_token(cancel, &person.token)).await.unwrap_err();
    assert_eq!((again.code(), reason(&again).as_str()), (Code::FailedPrecondition, "CROSS_REGION_FILING_CANCELLED"));
    // The cancelled period is free again.
    bank.file_cross_region_care(with_person_token(
        temporary(&person.person_id, "310104", today, today + chrono::Days::new(5)),
        &person.token,
    ))
    .await
    .expect("file again after the cancel");

    // Operators see the same list at the window.
    let by_ops = filings(&stack, &stack.keys.ops)
        .list_cross_region_filings(ListCrossRegionFilingsRequest { person_id: person.person_id.clone() })
        .await
        .expect("ops list")
        .into_inner()
        .filings;
    assert_eq!(by_ops.len(), 3);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_guardian_files_for_a_minor_and_an_active_binder_lists_the_filings() {
    let stack = Stack::start().await;
    let today = stack.clock_today();
    let parent = stack.binder(0).await;
    let child = stack.member_aged(8, 0).await;
    let mut bank = filings(&stack, &stack.keys.bank);
    let for_child = || temporary(&child.person_id, "310115", today, today + chrono::Days::new(30));
    let list_child = || ListCrossRegionFilingsRequest { person_id: child.person_id.clone() };

    // Unbound, the parent's token is another person's: refused, nothing filed.
    let unbound = bank.file_cross_region_care(with_person_token(for_child(), &parent.token)).await.unwrap_err();
    assert_eq!((unbound.code(), reason(&unbound).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));

    let binding = stack.bind_confirmed(&parent, &child, Relationship::Child).await;
    assert_eq!(binding.status, BindingStatus::Active as i32);
    // A second ACTIVE binder of the same child.
    let grandparent = stack.binder(0).await;
    let binding = stack.bind_confirmed(&grandparent, &child, Relationship::Grandchild).await;
    assert_eq!(binding.status, BindingStatus::Active as i32);

    // The parent, guardian of an 8-year-old, files in the child's name, on the child's account.
    let filed = bank
        .file_cross_region_care(with_person_token(for_child(), &parent.token))
        .await
        .expect("the guardian files")
        .into_inner()
        .filing
        .unwrap();
    assert_eq!(filed.person_id, child.person_id);
    assert_eq!(filed.insured_region_code, "110105", "the insured region is the child's account's");
    assert_eq!(filed.status, CrossRegionFilingStatus::Active as i32);

    // The other ACTIVE binder reads the child's filings with their own token.
    let listed = bank
        .list_cross_region_filings(with_person_token(list_child(), &grandparent.token))
        .await
        .expect("an active binder lists")
        .into_inner()
        .filings;
    assert_eq!(listed.iter().map(|f| f.filing_id.as_str()).collect::<Vec<_>>(), [filed.filing_id.as_str()]);
    // A person bound to no one still learns nothing of the child.
    let stranger = stack.binder(0).await;
    let refused = bank.list_cross_region_filings(with_person_token(list_child(), &stranger.token)).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_stranger_learns_nothing_and_bad_requests_name_the_field() {
    let stack = Stack::start().await;
    let (person, _) = stack.insured_holder(Scheme::Resident, 0).await;
    let (other, _) = stack.insured_holder(Scheme::Resident, 0).await;
    let today = stack.clock_today();
    let mut bank = filings(&stack, &stack.keys.bank);
    let filed = bank
        .file_cross_region_care(with_person_token(
            temporary(&person.person_id, "310115", today, today + chrono::Days::new(10)),
            &person.token,
        ))
        .await
        .expect("file")
        .into_inner()
        .filing
        .unwrap();

    // Another person's token: the same refusal for an existing and a missing person, before
    // anything is read or written.
    let missing = uuid::Uuid::now_v7().to_string();
    for target in [&person.person_id, &missing] {
        let listed = bank
            .list_cross_region_filings(with_person_token(
                ListCrossRegionFilingsRequest { person_id: target.clone() },
                &other.token,
            ))
            .await
            .unwrap_err();
        let filed = bank
            .file_cross_region_care(with_person_token(
                temporary(target, "440305", today, today + chrono::Days::new(3)),
                &other.token,
            ))
            .await
            .unwrap_err();
        for refused in [&listed, &filed] {
            assert_eq!((refused.code(), reason(refused).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
        }
    }
    let no_token = bank
        .list_cross_region_filings(ListCrossRegionFilingsRequest { person_id: person.person_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(reason(&no_token), "PERSON_TOKEN_REQUIRED");
    // A hospital has no scope here at all.
    let hospital = filings(&stack, &stack.keys.hospital)
        .list_cross_region_filings(ListCrossRegionFilingsRequest { person_id: person.person_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(hospital.code(), Code::PermissionDenied);
    // The person's filing id, cancelled in the other person's name: not found, nothing changed.
    let foreign = bank
        .cancel_cross_region_filing(with_person_token(
            CancelCrossRegionFilingRequest { person_id: other.person_id.clone(), filing_id: filed.filing_id.clone() },
            &other.token,
        ))
        .await
        .unwrap_err();
    assert_eq!((foreign.code(), reason(&foreign).as_str()), (Code::NotFound, "CROSS_REGION_FILING_NOT_FOUND"));
    let still = filings(&stack, &stack.keys.ops)
        .list_cross_region_filings(ListCrossRegionFilingsRequest { person_id: person.person_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .filings;
    assert_eq!(still[0].status, CrossRegionFilingStatus::Active as i32);

    let yesterday = today.pred_opt().unwrap();
    let bad_date = FileCrossRegionCareRequest {
        starts_on: Some(CardDate { year: 2026, month: 2, day: 30 }),
        ..temporary(&person.person_id, "440305", today, today)
    };
    let no_end = FileCrossRegionCareRequest { ends_on: None, ..temporary(&person.person_id, "440305", today, today) };
    let unspecified = FileCrossRegionCareRequest { kind: 0, ..temporary(&person.person_id, "440305", today, today) };
    for (request, field) in [
        (temporary("not-a-uuid", "440305", today, today), "person_id"),
        (temporary(&person.person_id, "44030", today, today), "destination_region_code"),
        (temporary(&person.person_id, "440305", yesterday, today), "starts_on"),
        (temporary(&person.person_id, "440305", today, today + chrono::Days::new(180)), "ends_on"),
        (bad_date, "starts_on"),
        (no_end, "ends_on"),
        (unspecified, "kind"),
    ] {
        let status = bank.file_cross_region_care(with_person_token(request, &person.token)).await.unwrap_err();
        assert_eq!((status.code(), bad_fields(&status)), (Code::InvalidArgument, vec![field.to_owned()]), "{field}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_overlapping_filings_leave_exactly_one_and_a_retry_returns_the_first_answer() {
    let stack = Stack::start().await;
    let (person, _) = stack.insured_holder(Scheme::Resident, 0).await;
    let today = stack.clock_today();
    let attempts = (0..8).map(|i| {
        let mut client = filings(&stack, &stack.keys.bank);
        let request = with_person_token(
            temporary(&person.person_id, "310115", today + chrono::Days::new(i), today + chrono::Days::new(20)),
            &person.token,
        );
        async move { client.file_cross_region_care(request).await }
    });
    let results = futures::future::join_all(attempts).await;
    let filed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(filed, 1, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(refused), "CROSS_REGION_FILING_EXISTS", "{refused:?}");
    }

    let request = temporary(&person.person_id, "440305", today, today + chrono::Days::new(3));
    let mut bank = filings(&stack, &stack.keys.bank);
    let mut first_try = with_idempotency_key(request.clone(), "file-shenzhen-1");
    first_try.metadata_mut().insert("x-person-token", person.token.parse().unwrap());
    let first = bank.file_cross_region_care(first_try).await.expect("first").into_inner();
    let mut retry = with_idempotency_key(request, "file-shenzhen-1");
    retry.metadata_mut().insert("x-person-token", person.token.parse().unwrap());
    let second = bank.file_cross_region_care(retry).await.expect("retry").into_inner();
    assert_eq!(first, second, "the retry returns the first filing, not an overlap refusal");
    let all = filings(&stack, &stack.keys.ops)
        .list_cross_region_filings(ListCrossRegionFilingsRequest { person_id: person.person_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .filings;
    assert_eq!(all.len(), 2);
    stack.shutdown().await;
}
