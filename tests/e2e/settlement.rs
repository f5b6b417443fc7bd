//! Settlement: the split under the built-in policy across the deductible and the annual cap,
//! suspended accounts, retries, 64 concurrent settlements on one account, reversal, annual
//! expenses by category and month (China Standard Time).

use std::collections::HashSet;

use chrono::{Datelike, TimeZone, Utc};
use medins_proto::insurance::v1::{
    Account, Category, EntryKind, GetAnnualExpensesRequest, GetSettlementRequest, PayFrom, ResumeAccountRequest,
    ReverseSettlementRequest, Scheme, SettleRequest, Settlement, SettlementStatus, SuspendAccountRequest,
};
use tonic::Code;

use crate::support::{Stack, bad_fields, privacy, reason, with_idempotency_key, with_person_token};

fn settle_request(visit_id: &str, total_cents: i64, category: Category, pay_from: PayFrom) -> SettleRequest {
    SettleRequest {
        visit_id: visit_id.into(),
        total_cents,
        category: category as i32,
        pay_from: pay_from as i32,
        items_summary: "挂号费 x1, 血常规 x1".into(),
        binder_person_id: String::new(),
        ..Default::default()
    }
}

/// Opens a visit at the hospital and settles it there.
async fn settle(
    stack: &Stack,
    account: &Account,
    total_cents: i64,
    category: Category,
    pay_from: PayFrom,
) -> Settlement {
    let visit_id = stack.open_visit(account, &stack.keys.hospital).await;
    stack
        .settlements(Some(&stack.keys.hospital))
        .settle(settle_request(&visit_id, total_cents, category, pay_from))
        .await
        .expect("settle")
        .into_inner()
        .settlement
        .expect("settlement")
}

/// (deductible is not on the wire) fund, account, self.
fn shares(s: &Settlement) -> (i64, i64, i64) {
    (s.fund_cents, s.account_cents, s.self_cents)
}

#[tokio::test]
async fn the_default_policy_splits_bills_across_the_deductible_and_the_annual_cap() {
    let stack = Stack::start().await;
    // EMPLOYEE x OUTPATIENT: 1 800 yuan deductible, 70 %, at most 20 000 yuan a year.
    let account = stack.insured_with_balance(Scheme::Employee, 500_000).await;
    let year = stack.clock_today().year();

    let first = settle(&stack, &account, 100_000, Category::Outpatient, PayFrom::HolderAccount).await;
    assert_eq!(shares(&first), (0, 100_000, 0), "inside the deductible the fund pays nothing");
    // The counter is not told which account paid; operators read it with the settlement.
    assert_eq!(first.charged_account_id, "");
    let by_ops = stack
        .settlements(Some(&stack.keys.ops))
        .get_settlement(GetSettlementRequest { settlement_id: first.settlement_id.clone() })
        .await
        .expect("operators read the settlement")
        .into_inner();
    assert_eq!(
        by_ops.settlement.and_then(|r| r.settlement).expect("settlement").charged_account_id,
        account.account_id
    );
    assert_eq!(first.status, SettlementStatus::Settled as i32);

    let second = settle(&stack, &account, 200_000, Category::Outpatient, PayFrom::HolderAccount).await;
    assert_eq!(shares(&second), (84_000, 116_000, 0), "80 000 finish the deductible, 70 % of the other 120 000");

    let third = settle(&stack, &account, 3_000_000, Category::Outpatient, PayFrom::HolderAccount).await;
    assert_eq!(shares(&third), (1_916_000, 284_000, 800_000), "the fund stops at the cap, the account at zero");

    let fourth = settle(&stack, &account, 10_000, Category::Outpatient, PayFrom::HolderAccount).await;
    assert_eq!(shares(&fourth), (0, 0, 10_000), "cap reached and account empty: all self-pay");
    assert_eq!(fourth.charged_account_id, "", "nothing charged to the account");

    // Another category has its own deductible (INPATIENT: 1 300 yuan, 85 %).
    let inpatient = settle(&stack, &account, 200_000, Category::Inpatient, PayFrom::Self_).await;
    assert_eq!(shares(&inpatient), (59_500, 0, 140_500));

    for s in [&first, &second, &third, &fourth, &inpatient] {
        assert_eq!(s.fund_cents + s.account_cents + s.self_cents, s.total_cents, "every cent accounted");
    }
    assert_eq!(stack.year_to_date(&account.person_id, year, "OUTPATIENT").await, (3_310_000, 2_000_000, 180_000));
    assert_eq!(stack.year_to_date(&account.person_id, year, "INPATIENT").await, (200_000, 59_500, 130_000));

    // The ledger: the credit, then one SETTLEMENT entry per bill the account paid for.
    let entries = stack.all_entries(&account.account_id).await;
    let debits: Vec<(i64, i64, String)> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Settlement as i32)
        .map(|e| (e.amount_cents, e.balance_after_cents, e.reference.clone()))
        .collect();
    assert_eq!(debits.len(), 3);
    for (settlement, balance_after) in [(&first, 400_000), (&second, 284_000), (&third, 0)] {
        assert!(
            debits.contains(&(-settlement.account_cents, balance_after, settlement.settlement_id.clone())),
            "{debits:?}"
        );
    }
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (0, 0));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_suspended_account_pays_nothing_while_the_fund_still_pays_its_share() {
    let stack = Stack::start().await;
    // RESIDENT x OUTPATIENT: 100 yuan deductible, 50 %.
    let account = stack.insured_with_balance(Scheme::Resident, 100_000).await;
    // The code was verified at the counter, then the account was frozen before the bill.
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let mut ops = stack.accounts(Some(&stack.keys.ops));
    ops.suspend_account(SuspendAccountRequest { account_id: account.account_id.clone(), reason: "lost phone".into() })
        .await
        .expect("suspend");

    let frozen = stack
        .settlements(Some(&stack.keys.hospital))
        .settle(settle_request(&visit_id, 30_001, Category::Outpatient, PayFrom::HolderAccount))
        .await
        .expect("settle while suspended")
        .into_inner()
        .settlement
        .unwrap();
    assert_eq!(shares(&frozen), (10_000, 0, 20_001), "50 % of 20 001 floors to 10 000; the account pays nothing");
    assert_eq!(frozen.charged_account_id, "");
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (100_000, 100_000));

    ops.resume_account(ResumeAccountRequest { account_id: account.account_id.clone() }).await.expect("resume");
    let resumed = settle(&stack, &account, 1_000, Category::Outpatient, PayFrom::HolderAccount).await;
    assert_eq!(shares(&resumed), (500, 500, 0));
    // SELF leaves the account alone even when it is active.
    let self_pay = settle(&stack, &account, 1_000, Category::Outpatient, PayFrom::Self_).await;
    assert_eq!(shares(&self_pay), (500, 0, 500));
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (99_500, 99_500));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_retried_settle_is_answered_with_the_first_settlement() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Employee, 50_000).await;
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let mut hospital = stack.settlements(Some(&stack.keys.hospital));
    let request = settle_request(&visit_id, 8_000, Category::Outpatient, PayFrom::HolderAccount);
    let first = hospital.settle(request.clone()).await.expect("settle").into_inner().settlement.unwrap();
    let retry = hospital.settle(request.clone()).await.expect("retry").into_inner().settlement.unwrap();
    assert_eq!(retry, first);
    let keyed = hospital.settle(with_idempotency_key(request.clone(), "settle-1")).await.expect("keyed retry");
    assert_eq!(keyed.into_inner().settlement.unwrap(), first);

    // Other terms for a settled visit are refused, whatever changed.
    for changed in [
        SettleRequest { total_cents: 8_001, ..request.clone() },
        SettleRequest { category: Category::Pharmacy as i32, ..request.clone() },
        SettleRequest { pay_from: PayFrom::Self_ as i32, ..request.clone() },
        SettleRequest { items_summary: "another bill".into(), ..request.clone() },
    ] {
        let error = hospital.settle(changed).await.unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition);
        assert_eq!(reason(&error), "VISIT_ALREADY_SETTLED");
    }

    // Sixteen concurrent settles of one fresh visit: one settlement, every caller answered it.
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let request = settle_request(&visit_id, 2_000, Category::Pharmacy, PayFrom::HolderAccount);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (mut client, request) = (hospital.clone(), request.clone());
            tokio::spawn(async move { client.settle(request).await.map(|r| r.into_inner().settlement.unwrap()) })
        })
        .collect();
    let mut ids = HashSet::new();
    for call in calls {
        ids.insert(call.await.unwrap().expect("concurrent settle").settlement_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(stack.count_insurance_rows("settlements").await, 2);
    let debits = stack.all_entries(&account.account_id).await.into_iter().filter(|e| e.amount_cents < 0).count();
    assert_eq!(debits, 2, "each visit debited the account once");
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (40_000, 40_000));
    stack.shutdown().await;
}

#[tokio::test]
async fn only_the_partner_that_opened_a_visit_settles_it_and_bad_requests_change_nothing() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Employee, 10_000).await;
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let request = settle_request(&visit_id, 1_000, Category::Outpatient, PayFrom::HolderAccount);

    let foreign = stack.settlements(Some(&stack.keys.pharmacy)).settle(request.clone()).await.unwrap_err();
    // Another counter learns nothing about the visit: the answer a missing one gets
    // (docs/architecture.md#trust-model).
    assert_eq!((foreign.code(), reason(&foreign).as_str()), (Code::NotFound, "VISIT_NOT_FOUND"));
    let no_scope = stack.settlements(Some(&stack.keys.bank)).settle(request.clone()).await.unwrap_err();
    assert_eq!((no_scope.code(), reason(&no_scope).as_str()), (Code::PermissionDenied, "PERMISSION_DENIED_SCOPE"));

    let mut hospital = stack.settlements(Some(&stack.keys.hospital));
    let unknown = hospital
        .settle(settle_request(&uuid::Uuid::now_v7().to_string(), 1_000, Category::Outpatient, PayFrom::Self_))
        .await
        .unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "VISIT_NOT_FOUND"));

    let stranger = uuid::Uuid::now_v7().to_string();
    let binder = hospital
        .settle(SettleRequest {
            pay_from: PayFrom::BinderAccount as i32,
            binder_person_id: stranger.clone(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!((binder.code(), reason(&binder).as_str()), (Code::FailedPrecondition, "FAMILY_AID_NOT_AUTHORISED"));

    for (bad, field) in [
        (SettleRequest { total_cents: 0, ..request.clone() }, "total_cents"),
        (SettleRequest { total_cents: 100_000_001, ..request.clone() }, "total_cents"),
        (SettleRequest { category: 0, ..request.clone() }, "category"),
        (SettleRequest { pay_from: 9, ..request.clone() }, "pay_from"),
        (SettleRequest { items_summary: "x".repeat(501), ..request.clone() }, "items_summary"),
        (SettleRequest { visit_id: "visit-1".into(), ..request.clone() }, "visit_id"),
        (SettleRequest { pay_from: PayFrom::BinderAccount as i32, ..request.clone() }, "binder_person_id"),
        (SettleRequest { binder_person_id: stranger.clone(), ..request.clone() }, "binder_person_id"),
    ] {
        let error = hospital.settle(bad).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{field}");
        assert_eq!(bad_fields(&error), vec![field.to_owned()]);
    }
    assert_eq!(stack.count_insurance_rows("settlements").await, 0);

    // The visit is still settleable by its own partner.
    let settled = hospital.settle(request).await.expect("settle").into_inner().settlement.unwrap();
    assert_eq!(shares(&settled), (0, 1_000, 0));
    stack.shutdown().await;
}

#[tokio::test]
async fn sixty_four_concurrent_settlements_never_take_one_account_below_zero() {
    let stack = Stack::start().await;
    const START: i64 = 10_000;
    let account = stack.insured_with_balance(Scheme::Employee, START).await;
    let mut visits = Vec::new();
    for _ in 0..64 {
        visits.push(stack.open_visit(&account, &stack.keys.hospital).await);
    }
    let hospital = stack.settlements(Some(&stack.keys.hospital));
    let calls: Vec<_> = visits
        .iter()
        .enumerate()
        .map(|(i, visit_id)| {
            let mut client = hospital.clone();
            let total = 500 + (i as i64 % 7) * 100;
            let request = settle_request(visit_id, total, Category::Outpatient, PayFrom::HolderAccount);
            tokio::spawn(async move { client.settle(request).await.map(|r| r.into_inner().settlement.unwrap()) })
        })
        .collect();
    let mut settled = Vec::new();
    for call in calls {
        settled.push(call.await.unwrap().expect("every settlement succeeds"));
    }
    let billed: i64 = settled.iter().map(|s| s.total_cents).sum();
    let from_account: i64 = settled.iter().map(|s| s.account_cents).sum();
    for s in &settled {
        assert_eq!(s.fund_cents + s.account_cents + s.self_cents, s.total_cents);
        assert!(s.account_cents >= 0 && s.self_cents >= 0);
    }
    assert!(billed > START, "the bills ask for more than the account holds");
    assert_eq!(from_account, START, "the account paid exactly what it held, never more");

    let (balance, ledger_sum) = stack.balance_and_ledger_sum(&account.account_id).await;
    assert_eq!((balance, ledger_sum), (0, 0), "the balance is zero and equals the ledger");

    // The debits form one chain of balances: each started from the balance the previous left.
    let mut debits: Vec<_> = stack
        .all_entries(&account.account_id)
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::Settlement as i32)
        .collect();
    assert_eq!(-debits.iter().map(|e| e.amount_cents).sum::<i64>(), START);
    debits.sort_by_key(|e| std::cmp::Reverse(e.balance_after_cents));
    let mut before = START;
    for entry in &debits {
        assert!(entry.balance_after_cents >= 0);
        assert_eq!(entry.balance_after_cents, before + entry.amount_cents, "{debits:?}");
        before = entry.balance_after_cents;
    }
    let paid_by_account: HashSet<_> =
        settled.iter().filter(|s| s.account_cents > 0).map(|s| &s.settlement_id).collect();
    let referenced: HashSet<_> = debits.iter().map(|e| &e.reference).collect();
    assert_eq!(paid_by_account, referenced, "one debit per settlement the account paid into");

    let year = stack.clock_today().year();
    assert_eq!(stack.year_to_date(&account.person_id, year, "OUTPATIENT").await, (billed, 0, billed));
    // On PostgreSQL the concurrent calls were settled in batches, and no batch fell back to
    // settling its calls one by one (which would hide a broken batch behind correct answers).
    assert!(!privacy::logs().contains("a settlement batch failed"), "a batch failed");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_reversal_restores_the_balance_and_the_year_to_date_totals_once() {
    let stack = Stack::start().await;
    // RESIDENT x INPATIENT: 800 yuan deductible, 70 %.
    let account = stack.insured_with_balance(Scheme::Resident, 50_000).await;
    let year = stack.clock_today().year();
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let request = settle_request(&visit_id, 180_000, Category::Inpatient, PayFrom::HolderAccount);
    let settled = stack
        .settlements(Some(&stack.keys.hospital))
        .settle(request.clone())
        .await
        .expect("settle")
        .into_inner()
        .settlement
        .unwrap();
    assert_eq!(shares(&settled), (70_000, 50_000, 60_000));
    assert_eq!(stack.year_to_date(&account.person_id, year, "INPATIENT").await, (180_000, 70_000, 80_000));
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (0, 0));

    let reverse = || ReverseSettlementRequest {
        settlement_id: settled.settlement_id.clone(),
        reason: "billed to the wrong patient".into(),
    };
    let no_scope = stack.settlements(Some(&stack.keys.hospital)).reverse_settlement(reverse()).await.unwrap_err();
    assert_eq!((no_scope.code(), reason(&no_scope).as_str()), (Code::PermissionDenied, "PERMISSION_DENIED_SCOPE"));

    let mut ops = stack.settlements(Some(&stack.keys.ops));
    let reversed = ops.reverse_settlement(reverse()).await.expect("reverse").into_inner().settlement.unwrap();
    assert_eq!(reversed.status, SettlementStatus::Reversed as i32);
    assert!(reversed.reversed_at.is_some());
    assert_eq!(shares(&reversed), shares(&settled), "the record keeps what was paid");
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (50_000, 50_000));
    assert_eq!(stack.year_to_date(&account.person_id, year, "INPATIENT").await, (0, 0, 0));
    let newest = &stack.all_entries(&account.account_id).await[0];
    assert_eq!(newest.kind, EntryKind::Reversal as i32);
    assert_eq!((newest.amount_cents, newest.balance_after_cents), (50_000, 50_000));
    assert_eq!(newest.reference, settled.settlement_id);

    let twice = ops.reverse_settlement(reverse()).await.unwrap_err();
    assert_eq!((twice.code(), reason(&twice).as_str()), (Code::FailedPrecondition, "SETTLEMENT_ALREADY_REVERSED"));
    let unknown = ops
        .reverse_settlement(ReverseSettlementRequest {
            settlement_id: uuid::Uuid::now_v7().to_string(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "SETTLEMENT_NOT_FOUND"));
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (50_000, 50_000), "reversed once only");

    // A retry of the original Settle still answers that settlement, now reversed.
    let retried = stack
        .settlements(Some(&stack.keys.hospital))
        .settle(request)
        .await
        .expect("retry")
        .into_inner()
        .settlement
        .unwrap();
    assert_eq!(
        (reversed.person_id.as_str(), reversed.charged_account_id.as_str()),
        (account.person_id.as_str(), account.account_id.as_str()),
        "operators see whose it is and which account paid"
    );
    assert_eq!(
        retried,
        Settlement { person_id: String::new(), charged_account_id: String::new(), ..reversed.clone() },
        "the counter: no person or account id"
    );

    // The deductible counts again: the same bill on a new visit splits as the first did.
    let again = settle(&stack, &account, 180_000, Category::Inpatient, PayFrom::HolderAccount).await;
    assert_eq!(shares(&again), (70_000, 50_000, 60_000));
    let expenses = ops
        .get_annual_expenses(GetAnnualExpensesRequest { person_id: account.person_id.clone(), year })
        .await
        .expect("expenses")
        .into_inner();
    let totals = expenses.totals.unwrap();
    assert_eq!((totals.total_cents, totals.settlements), (180_000, 1), "reversed settlements do not count");
    stack.shutdown().await;
}

#[tokio::test]
async fn annual_expenses_add_up_by_category_and_by_china_standard_time_month() {
    let stack = Stack::start().await;
    let account = stack.insured_with_balance(Scheme::Resident, 2_500).await;
    let at = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
    let mut settled = Vec::new();
    for (when, total, category) in [
        (at(2026, 12, 31, 15, 0), 1_000, Category::Outpatient), // 23:00 on Dec 31 in Beijing: 2026
        (at(2026, 12, 31, 17, 0), 2_000, Category::Outpatient), // 01:00 on Jan 1 in Beijing: 2027
        (at(2027, 1, 31, 16, 30), 3_000, Category::Pharmacy),   // Feb 1 in Beijing
        (at(2027, 3, 10, 2, 0), 4_000, Category::Inpatient),
        (at(2027, 3, 10, 3, 0), 500, Category::Outpatient),
    ] {
        stack.clock.set(when);
        settled.push(settle(&stack, &account, total, category, PayFrom::HolderAccount).await);
    }
    stack.clock.set(at(2027, 3, 11, 1, 0));
    let reversed = settle(&stack, &account, 700, Category::Outpatient, PayFrom::HolderAccount).await;
    let mut ops = stack.settlements(Some(&stack.keys.ops));
    ops.reverse_settlement(ReverseSettlementRequest { settlement_id: reversed.settlement_id, reason: String::new() })
        .await
        .expect("reverse");

    let expenses = |year| GetAnnualExpensesRequest { person_id: account.person_id.clone(), year };
    let y2027 = ops.get_annual_expenses(expenses(2027)).await.expect("2027").into_inner();
    assert_eq!(y2027.year, 2027);
    let totals = y2027.totals.unwrap();
    let standing = &settled[1..];
    assert_eq!(totals.total_cents, 9_500);
    assert_eq!(totals.settlements, 4);
    assert_eq!(totals.fund_cents, standing.iter().map(|s| s.fund_cents).sum::<i64>());
    assert_eq!(totals.account_cents, standing.iter().map(|s| s.account_cents).sum::<i64>());
    assert_eq!(totals.self_cents, standing.iter().map(|s| s.self_cents).sum::<i64>());
    assert_eq!(totals.fund_cents + totals.account_cents + totals.self_cents, 9_500);
    let by_category: Vec<(i32, i64, i32)> = y2027
        .by_category
        .iter()
        .map(|c| (c.category, c.totals.unwrap().total_cents, c.totals.unwrap().settlements))
        .collect();
    assert_eq!(
        by_category,
        vec![
            (Category::Outpatient as i32, 2_500, 2),
            (Category::Inpatient as i32, 4_000, 1),
            (Category::Pharmacy as i32, 3_000, 1),
            (Category::ChronicSpecial as i32, 0, 0)
        ]
    );
    let by_month: Vec<(i32, i64)> = y2027.by_month.iter().map(|m| (m.month, m.totals.unwrap().total_cents)).collect();
    assert_eq!(by_month, vec![(1, 2_000), (2, 3_000), (3, 4_500)]);
    assert_eq!(stack.year_to_date(&account.person_id, 2027, "OUTPATIENT").await.0, 2_500);

    let y2026 = ops.get_annual_expenses(expenses(2026)).await.expect("2026").into_inner();
    assert_eq!(y2026.totals.unwrap().total_cents, 1_000);
    assert_eq!(y2026.by_month.iter().map(|m| m.month).collect::<Vec<_>>(), vec![12]);
    assert_eq!(stack.year_to_date(&account.person_id, 2026, "OUTPATIENT").await.0, 1_000);

    let empty = ops.get_annual_expenses(expenses(2028)).await.expect("2028").into_inner();
    assert_eq!(empty.totals.unwrap().settlements, 0);
    assert_eq!(empty.by_category.len(), 4, "every category is listed, zero or not");
    assert!(empty.by_month.is_empty());

    let bad_year = ops.get_annual_expenses(expenses(0)).await.unwrap_err();
    assert_eq!(bad_fields(&bad_year), vec!["year".to_owned()]);
    // The holder's own front door reads the same, with the holder's token; without it, nothing.
    let token = stack.holder_token(&account).await;
    let mine = stack
        .settlements(Some(&stack.keys.bank))
        .get_annual_expenses(with_person_token(expenses(2027), &token))
        .await
        .expect("the holder's expenses")
        .into_inner();
    assert_eq!(mine, y2027);
    let no_token = stack.settlements(Some(&stack.keys.bank)).get_annual_expenses(expenses(2027)).await.unwrap_err();
    assert_eq!((no_token.code(), reason(&no_token).as_str()), (Code::Unauthenticated, "PERSON_TOKEN_REQUIRED"));
    let other_app = stack
        .settlements(Some(&stack.keys.mini_program))
        .get_annual_expenses(with_person_token(expenses(2027), &token))
        .await
        .unwrap_err();
    assert_eq!(reason(&other_app), "PERSON_TOKEN_INVALID", "a token is good only for the partner it was issued to");
    let hospital = stack.settlements(Some(&stack.keys.hospital)).get_annual_expenses(expenses(2027)).await.unwrap_err();
    assert_eq!(hospital.code(), Code::PermissionDenied);
    stack.shutdown().await;
}
