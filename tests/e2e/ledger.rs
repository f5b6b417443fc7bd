//! The individual-account ledger: contributions (idempotent by reference), paging through
//! entries, suspending and resuming accounts.

use std::collections::HashSet;

use medins_proto::insurance::v1::{
    AccountStatus, CreditContributionRequest, EntryKind, ListAccountEntriesRequest, ResumeAccountRequest, Scheme,
    SuspendAccountRequest,
};
use tonic::Code;

use crate::support::{Stack, bad_fields, reason, with_person_token};

fn credit_request(account_id: &str, amount_cents: i64, reference: &str) -> CreditContributionRequest {
    CreditContributionRequest { account_id: account_id.into(), amount_cents, reference: reference.into() }
}

#[tokio::test]
async fn a_contribution_is_credited_once_per_reference() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Employee, 0).await;
    let (entry, after) = stack.credit(&account.account_id, 12_345, "PAYROLL-2026-11").await;
    assert_eq!(entry.kind, EntryKind::Contribution as i32);
    assert_eq!((entry.amount_cents, entry.balance_after_cents), (12_345, 12_345));
    assert_eq!(entry.reference, "PAYROLL-2026-11");
    assert_eq!(after.balance_cents, 12_345);

    // A retry answers the first entry and credits nothing.
    let (again, after_again) = stack.credit(&account.account_id, 12_345, "PAYROLL-2026-11").await;
    assert_eq!(again, entry);
    assert_eq!(after_again.balance_cents, 12_345);

    // The same reference with another amount is refused.
    let error = stack
        .accounts(Some(&stack.keys.employer))
        .credit_contribution(credit_request(&account.account_id, 99, "PAYROLL-2026-11"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "IDEMPOTENCY_KEY_MISMATCH");

    // Sixteen concurrent credits of one new reference credit once.
    let client = stack.accounts(Some(&stack.keys.ops));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut client = client.clone();
            let request = credit_request(&account.account_id, 1_000, "BONUS-7");
            tokio::spawn(async move { client.credit_contribution(request).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut ids = HashSet::new();
    for call in calls {
        ids.insert(call.await.unwrap().expect("concurrent credit").entry.unwrap().entry_id);
    }
    assert_eq!(ids.len(), 1, "every concurrent call answered the same entry");

    let entries = stack.all_entries(&account.account_id).await;
    assert_eq!(entries.len(), 2);
    let (balance, sum) = stack.balance_and_ledger_sum(&account.account_id).await;
    assert_eq!((balance, sum), (13_345, 13_345), "the balance is the sum of the ledger");
    stack.shutdown().await;
}

#[tokio::test]
async fn contributions_are_validated_and_need_the_credit_scope() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Resident, 0).await;
    let mut employer = stack.accounts(Some(&stack.keys.employer));
    for (amount, reference, field) in [
        (0, "r-1", "amount_cents"),
        (-5, "r-1", "amount_cents"),
        (100_000_001, "r-1", "amount_cents"),
        (100, "", "reference"),
        (100, "has space", "reference"),
    ] {
        let error =
            employer.credit_contribution(credit_request(&account.account_id, amount, reference)).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{amount} {reference:?}");
        assert_eq!(bad_fields(&error), vec![field.to_owned()]);
    }
    let unknown =
        employer.credit_contribution(credit_request(&uuid::Uuid::now_v7().to_string(), 100, "r-1")).await.unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "ACCOUNT_NOT_FOUND"));

    for key in [&stack.keys.hospital, &stack.keys.mini_program, &stack.keys.bank] {
        let error = stack
            .accounts(Some(key))
            .credit_contribution(credit_request(&account.account_id, 100, "r-1"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
        assert_eq!(reason(&error), "PERMISSION_DENIED_SCOPE");
    }
    assert!(stack.all_entries(&account.account_id).await.is_empty(), "nothing was credited");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_closed_account_takes_no_contribution_and_a_suspended_one_does() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Resident, 500).await;
    let mut ops = stack.accounts(Some(&stack.keys.ops));
    ops.suspend_account(SuspendAccountRequest { account_id: account.account_id.clone(), reason: "card stolen".into() })
        .await
        .expect("suspend");
    let (_, suspended) = stack.credit(&account.account_id, 700, "while-suspended").await;
    assert_eq!(suspended.balance_cents, 1_200);
    assert_eq!(suspended.status, AccountStatus::Suspended as i32);

    stack.force_account_status(&account.account_id, "CLOSED").await;
    let error = ops.credit_contribution(credit_request(&account.account_id, 100, "after-close")).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "ACCOUNT_CLOSED");
    for error in [
        ops.suspend_account(SuspendAccountRequest { account_id: account.account_id.clone(), reason: String::new() })
            .await
            .unwrap_err(),
        ops.resume_account(ResumeAccountRequest { account_id: account.account_id.clone() }).await.unwrap_err(),
    ] {
        assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "ACCOUNT_CLOSED"));
    }
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (1_200, 1_200));
    stack.shutdown().await;
}

#[tokio::test]
async fn entries_page_newest_first_and_pages_hold_still_while_entries_arrive() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Employee, 0).await;
    for i in 0..25 {
        stack.credit(&account.account_id, 100 + i, &format!("c-{i:02}")).await;
        stack.clock.advance(chrono::Duration::seconds(1));
    }
    let mut ops = stack.accounts(Some(&stack.keys.ops));
    let list = |page_size: i32, page_token: String| ListAccountEntriesRequest {
        account_id: account.account_id.clone(),
        page_size,
        page_token,
    };
    let first = ops.list_account_entries(list(10, String::new())).await.expect("page 1").into_inner();
    assert_eq!(first.entries.len(), 10);
    assert_eq!(first.entries[0].reference, "c-24", "newest first");
    assert!(!first.next_page_token.is_empty());

    // New entries arriving while the client pages do not shift the pages it has not read yet.
    stack.clock.advance(chrono::Duration::seconds(1));
    stack.credit(&account.account_id, 9_999, "late-arrival").await;

    let second = ops.list_account_entries(list(10, first.next_page_token.clone())).await.expect("page 2").into_inner();
    let third = ops.list_account_entries(list(10, second.next_page_token.clone())).await.expect("page 3").into_inner();
    assert_eq!((second.entries.len(), third.entries.len()), (10, 5));
    assert!(third.next_page_token.is_empty(), "the last page says so");
    let references: Vec<String> =
        [first.entries, second.entries, third.entries].concat().into_iter().map(|e| e.reference).collect();
    let expected: Vec<String> = (0..25).rev().map(|i| format!("c-{i:02}")).collect();
    assert_eq!(references, expected, "each entry exactly once, newest first");

    // The default page is 20; the newest entry now heads the list.
    let fresh = ops.list_account_entries(list(0, String::new())).await.expect("default page").into_inner();
    assert_eq!(fresh.entries.len(), 20);
    assert_eq!(fresh.entries[0].reference, "late-arrival");
    assert_eq!(fresh.entries[0].balance_after_cents, (100..125).sum::<i64>() + 9_999);

    // Bad sizes and tokens, and another account's token, are refused.
    let other = stack.insured_with_balance(Scheme::Employee, 0).await;
    for (request, field) in [
        (list(101, String::new()), "page_size"),
        (list(-1, String::new()), "page_size"),
        (list(10, "not-a-token".into()), "page_token"),
        (
            ListAccountEntriesRequest {
                account_id: other.account_id.clone(),
                page_size: 10,
                page_token: fresh.next_page_token.clone(),
            },
            "page_token",
        ),
    ] {
        let error = ops.list_account_entries(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&error), vec![field.to_owned()]);
    }
    let unknown = ops
        .list_account_entries(ListAccountEntriesRequest {
            account_id: uuid::Uuid::now_v7().to_string(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "ACCOUNT_NOT_FOUND"));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_ledger_is_read_by_ops_the_employer_and_the_holders_front_door_with_their_token() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Employee, 300).await;
    let other = stack.insured_with_balance(Scheme::Employee, 0).await;
    let request = || ListAccountEntriesRequest {
        account_id: account.account_id.clone(),
        page_size: 0,
        page_token: String::new(),
    };
    // Operators read every entry; the employer (of ACME-01) only the contributions it credited
    // itself, and the seed credit was the operators' (docs/architecture.md#trust-model;
    // tests/e2e/access.rs).
    for (key, count) in [(&stack.keys.ops, 1), (&stack.keys.employer, 0)] {
        let page = stack.accounts(Some(key)).list_account_entries(request()).await.expect("ops and the employer");
        assert_eq!(page.into_inner().entries.len(), count);
    }
    let token = stack.holder_token(&account).await;
    let page = stack
        .accounts(Some(&stack.keys.bank))
        .list_account_entries(with_person_token(request(), &token))
        .await
        .expect("the holder's front door with the holder's token");
    assert_eq!(page.into_inner().entries[0].amount_cents, 300);

    let refused = [
        (&stack.keys.bank, None, Code::Unauthenticated, "PERSON_TOKEN_REQUIRED"),
        (&stack.keys.hospital, None, Code::Unauthenticated, "PERSON_TOKEN_REQUIRED"),
        (&stack.keys.mini_program, Some(token.clone()), Code::Unauthenticated, "PERSON_TOKEN_INVALID"),
        // Another person's token: the answer a missing account gets
        // (docs/architecture.md#trust-model).
        (&stack.keys.bank, Some(stack.holder_token(&other).await), Code::NotFound, "ACCOUNT_NOT_FOUND"),
    ];
    for (key, token, code, expected) in refused {
        let call = match &token {
            Some(token) => with_person_token(request(), token),
            None => tonic::Request::new(request()),
        };
        let error = stack.accounts(Some(key)).list_account_entries(call).await.unwrap_err();
        assert_eq!((error.code(), reason(&error).as_str()), (code, expected));
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn ops_suspend_and_resume_accounts_and_both_are_safe_to_repeat() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Resident, 0).await;
    let mut ops = stack.accounts(Some(&stack.keys.ops));
    let suspend = || SuspendAccountRequest { account_id: account.account_id.clone(), reason: "reported stolen".into() };
    for _ in 0..2 {
        let suspended = ops.suspend_account(suspend()).await.expect("suspend").into_inner().account.unwrap();
        assert_eq!(suspended.status, AccountStatus::Suspended as i32);
    }
    let resume = || ResumeAccountRequest { account_id: account.account_id.clone() };
    for _ in 0..2 {
        let resumed = ops.resume_account(resume()).await.expect("resume").into_inner().account.unwrap();
        assert_eq!(resumed.status, AccountStatus::Active as i32);
    }
    let error = stack.accounts(Some(&stack.keys.employer)).suspend_account(suspend()).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::PermissionDenied, "PERMISSION_DENIED_SCOPE"));
    let long = SuspendAccountRequest { account_id: account.account_id.clone(), reason: "x".repeat(201) };
    let error = ops.suspend_account(long).await.unwrap_err();
    assert_eq!(bad_fields(&error), vec!["reason".to_owned()]);
    stack.shutdown().await;
}
