//! A person's own settlement records (issue 17 item 6): ListSettlements by year with paging,
//! for the person and an ACTIVE binder; strangers learn nothing, whether the ids exist or not;
//! GetSettlement of another person's settlement is NOT_FOUND like a missing one.

use chrono::Datelike;
use medins_proto::insurance::v1::{
    Category, GetSettlementRequest, ListSettlementsRequest, ListSettlementsResponse, PayFrom, PreSettleRequest,
    Relationship, Scheme, SettleRequest, Settlement, SettlementRecord, VerifyCodeRequest,
};
use tonic::{Code, Status};

use crate::{
    family_aid::bind_adult,
    support::{Stack, bad_fields, family::Binder, reason, with_idempotency_key, with_person_token},
};

/// A visit of `holder` at the hospital (the holder's own code), settled there.
async fn settled_visit(stack: &Stack, holder: &Binder, total_cents: i64) -> Settlement {
    // open_visit reads only the ids of the account.
    let account = medins_proto::insurance::v1::Account {
        account_id: holder.account_id.clone(),
        person_id: holder.person_id.clone(),
        ..Default::default()
    };
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let settled = stack
        .settlements(Some(&stack.keys.hospital))
        .settle(SettleRequest {
            visit_id,
            total_cents,
            category: Category::Outpatient as i32,
            pay_from: PayFrom::HolderAccount as i32,
            items_summary: "挂号费 x1".into(),
            binder_person_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("settle")
        .into_inner()
        .settlement
        .expect("settlement");
    // The next settlement is later, so "newest first" is an order of times, not of ids alone.
    stack.clock.advance(chrono::Duration::seconds(1));
    settled
}

fn list_request(person_id: &str, year: i32, page_size: i32, page_token: &str) -> ListSettlementsRequest {
    ListSettlementsRequest { person_id: person_id.into(), year, page_size, page_token: page_token.into() }
}

async fn list_as(
    stack: &Stack,
    token: &str,
    person_id: &str,
    year: i32,
    page_size: i32,
    page_token: &str,
) -> Result<ListSettlementsResponse, Status> {
    stack
        .settlements(Some(&stack.keys.bank))
        .list_settlements(with_person_token(list_request(person_id, year, page_size, page_token), token))
        .await
        .map(|response| response.into_inner())
}

fn ids(records: &[SettlementRecord]) -> Vec<String> {
    records.iter().map(|r| r.settlement.as_ref().expect("settlement").settlement_id.clone()).collect()
}

#[tokio::test]
async fn a_person_pages_through_their_settlements_of_a_year_newest_first_and_a_binder_reads_them_too() {
    let stack = Stack::start().await;
    let holder = stack.binder_in(Scheme::Employee, 500_000).await;
    let year = stack.clock_today().year();
    let mut settled = Vec::new();
    for total in [10_000, 20_000, 30_000] {
        settled.push(settled_visit(&stack, &holder, total).await);
    }
    let newest_first: Vec<String> = settled.iter().rev().map(|s| s.settlement_id.clone()).collect();

    let first = list_as(&stack, &holder.token, &holder.person_id, year, 2, "").await.expect("first page");
    assert_eq!(ids(&first.settlements), newest_first[..2]);
    assert!(!first.next_page_token.is_empty());
    let record = &first.settlements[0];
    assert_eq!((record.partner_id.as_str(), record.partner_name.as_str()), ("hospital", "hospital"));
    assert!(record.visit_opened_at.is_some());
    assert_eq!(record.claim_id, "");
    let shown = record.settlement.as_ref().unwrap();
    assert_eq!(
        (settled[2].person_id.as_str(), settled[2].charged_account_id.as_str()),
        ("", ""),
        "Settle answered the counter without a person or account id"
    );
    let as_settled = Settlement {
        person_id: holder.person_id.clone(),
        charged_account_id: holder.account_id.clone(),
        ..settled[2].clone()
    };
    assert_eq!(
        shown, &as_settled,
        "the record carries the settlement as Settle made it, with the person's and account's ids"
    );
    assert_eq!(shown.category, Category::Outpatient as i32);

    let second =
        list_as(&stack, &holder.token, &holder.person_id, year, 2, &first.next_page_token).await.expect("second page");
    assert_eq!(ids(&second.settlements), newest_first[2..]);
    assert_eq!(second.next_page_token, "", "the last page");

    // Another year has none; the default page holds all three.
    let last_year = list_as(&stack, &holder.token, &holder.person_id, year - 1, 0, "").await.unwrap();
    assert!(last_year.settlements.is_empty());
    let all = list_as(&stack, &holder.token, &holder.person_id, year, 0, "").await.unwrap();
    assert_eq!(ids(&all.settlements), newest_first);

    // A token of this listing does not page another year's or another person's, and hostile
    // bytes are refused before anything is read.
    let other_year = list_as(&stack, &holder.token, &holder.person_id, year - 1, 2, &first.next_page_token).await;
    let binder = stack.binder(0).await;
    let mut hostile = vec![
        other_year.unwrap_err(),
        list_as(&stack, &holder.token, &holder.person_id, year, 2, "not-a-token").await.unwrap_err(),
        list_as(&stack, &holder.token, &holder.person_id, year, 2, "\u{feff}\u{0}").await.unwrap_err(),
    ];
    for status in hostile.drain(..) {
        assert_eq!((status.code(), bad_fields(&status)), (Code::InvalidArgument, vec!["page_token".to_owned()]));
    }
    let too_big = list_as(&stack, &holder.token, &holder.person_id, year, 101, "").await.unwrap_err();
    assert_eq!(bad_fields(&too_big), vec!["page_size".to_owned()]);
    let bad_year = list_as(&stack, &holder.token, &holder.person_id, 99_999, 0, "").await.unwrap_err();
    assert_eq!(bad_fields(&bad_year), vec!["year".to_owned()]);

    // Before the binding the binder is a stranger; once it is ACTIVE, they read the records.
    let refused = list_as(&stack, &binder.token, &holder.person_id, year, 0, "").await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
    bind_adult(&stack, &binder, &holder.as_member(), Relationship::Spouse).await;
    let as_binder = list_as(&stack, &binder.token, &holder.person_id, year, 0, "").await.expect("binder lists");
    assert_eq!(ids(&as_binder.settlements), newest_first);
    let one = stack
        .settlements(Some(&stack.keys.bank))
        .get_settlement(with_person_token(
            GetSettlementRequest { settlement_id: settled[0].settlement_id.clone() },
            &binder.token,
        ))
        .await
        .expect("binder gets one")
        .into_inner()
        .settlement
        .unwrap();
    assert_eq!(
        one.settlement.as_ref(),
        Some(&Settlement {
            person_id: holder.person_id.clone(),
            charged_account_id: holder.account_id.clone(),
            ..settled[0].clone()
        })
    );

    // Operators read any person's records without a token.
    let ops = stack
        .settlements(Some(&stack.keys.ops))
        .list_settlements(list_request(&holder.person_id, year, 0, ""))
        .await
        .expect("ops lists")
        .into_inner();
    assert_eq!(ids(&ops.settlements), newest_first);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_stranger_learns_nothing_and_another_persons_settlement_is_not_found_like_a_missing_one() {
    let stack = Stack::start().await;
    let holder = stack.binder_in(Scheme::Resident, 100_000).await;
    let stranger = stack.binder(100_000).await;
    let year = stack.clock_today().year();
    let theirs = settled_visit(&stack, &holder, 12_345).await;
    let own = settled_visit(&stack, &stranger, 5_000).await;

    // ListSettlements: an existing person with settlements and a made-up id get the same answer.
    let existing = list_as(&stack, &stranger.token, &holder.person_id, year, 0, "").await.unwrap_err();
    let missing = list_as(&stack, &stranger.token, &uuid::Uuid::now_v7().to_string(), year, 0, "").await.unwrap_err();
    for refused in [&existing, &missing] {
        assert_eq!((refused.code(), reason(refused).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
    }
    assert_eq!(existing.message(), missing.message());
    let no_token = stack
        .settlements(Some(&stack.keys.bank))
        .list_settlements(list_request(&holder.person_id, year, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(reason(&no_token), "PERSON_TOKEN_REQUIRED");
    // A hospital has no scope to read anyone's records.
    let hospital = stack
        .settlements(Some(&stack.keys.hospital))
        .list_settlements(list_request(&holder.person_id, year, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(hospital.code(), Code::PermissionDenied);

    // GetSettlement: another person's id and a missing id are the same NOT_FOUND.
    let get = |id: String| {
        let mut client = stack.settlements(Some(&stack.keys.bank));
        let token = stranger.token.clone();
        async move { client.get_settlement(with_person_token(GetSettlementRequest { settlement_id: id }, &token)).await }
    };
    let another = get(theirs.settlement_id.clone()).await.unwrap_err();
    let unknown = get(uuid::Uuid::now_v7().to_string()).await.unwrap_err();
    for refused in [&another, &unknown] {
        assert_eq!((refused.code(), reason(refused).as_str()), (Code::NotFound, "SETTLEMENT_NOT_FOUND"));
    }
    assert_eq!(another.message(), unknown.message());
    let malformed = get("../etc".into()).await.unwrap_err();
    assert_eq!((malformed.code(), bad_fields(&malformed)), (Code::InvalidArgument, vec!["settlement_id".to_owned()]));
    // Their own is theirs to read.
    let mine = get(own.settlement_id.clone()).await.expect("own settlement").into_inner().settlement.unwrap();
    let as_settled = Settlement {
        person_id: stranger.person_id.clone(),
        charged_account_id: stranger.account_id.clone(),
        ..own.clone()
    };
    assert_eq!(mine.settlement.as_ref(), Some(&as_settled));

    // The holder's access history shows the stranger's refused look at their settlement, and
    // the holder's own listing.
    list_as(&stack, &holder.token, &holder.person_id, year, 0, "").await.expect("own list");
    let audit = stack.audit_replica("insurance-svc");
    let history = audit.history(uuid::Uuid::parse_str(&holder.person_id).unwrap(), None, 1000).await.unwrap();
    let rows: Vec<(String, String)> = history.iter().map(|e| (e.method.clone(), e.outcome.clone())).collect();
    for (method, outcome) in [("GetSettlement", "NOT_FOUND"), ("ListSettlements", "OK")] {
        let row = (format!("/medins.insurance.v1.SettlementService/{method}"), outcome.to_owned());
        assert!(rows.contains(&row), "{row:?} in {rows:?}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn the_counter_learns_no_person_id_while_the_person_a_binder_and_operators_read_it() {
    let stack = Stack::start().await;
    let holder = stack.binder_in(Scheme::Employee, 50_000).await;
    let code = stack.code_of(&holder.person_id).await;

    // VerifyCode at the hospital, and its retry with the same idempotency key: the visit and the
    // masked holder, no person id.
    let verify = || with_idempotency_key(VerifyCodeRequest { code: code.clone() }, "verify-1");
    let verified = stack.codes(Some(&stack.keys.hospital)).verify_code(verify()).await.expect("verify").into_inner();
    let replayed = stack.codes(Some(&stack.keys.hospital)).verify_code(verify()).await.expect("retry").into_inner();
    for response in [&verified, &replayed] {
        let shown = response.holder.as_ref().expect("holder");
        assert_eq!(shown.person_id, "", "no person id at the counter");
        assert!(shown.masked_name.contains('*'));
    }
    assert_eq!(replayed.visit_id, verified.visit_id);
    // The holder's history still names both verifications (the replay found its holder by the visit).
    let audit = stack.audit_replica("insurance-svc");
    let history = audit.history(uuid::Uuid::parse_str(&holder.person_id).unwrap(), None, 1000).await.unwrap();
    let verifications = history
        .iter()
        .filter(|e| e.method == "/medins.insurance.v1.CodeService/VerifyCode" && e.outcome == "OK")
        .count();
    assert_eq!(verifications, 2);

    // PreSettle shows a receipt (no person in it); Settle and its retry: no person id.
    let bill = SettleRequest {
        visit_id: verified.visit_id.clone(),
        total_cents: 30_000,
        category: Category::Outpatient as i32,
        pay_from: PayFrom::HolderAccount as i32,
        items_summary: "挂号费 x1".into(),
        ..Default::default()
    };
    let pre = stack
        .settlements(Some(&stack.keys.hospital))
        .pre_settle(PreSettleRequest {
            visit_id: bill.visit_id.clone(),
            total_cents: bill.total_cents,
            category: bill.category,
            pay_from: bill.pay_from,
            items_summary: bill.items_summary.clone(),
            ..Default::default()
        })
        .await
        .expect("pre-settle")
        .into_inner();
    assert_eq!(pre.receipt.expect("receipt").total_cents, 30_000);
    let mut counter = stack.settlements(Some(&stack.keys.hospital));
    let settled = counter.settle(bill.clone()).await.expect("settle").into_inner().settlement.expect("settlement");
    let again = counter.settle(bill).await.expect("retry").into_inner().settlement.expect("settlement");
    assert_eq!((settled.person_id.as_str(), again.person_id.as_str()), ("", ""));
    // The holder's account paid, yet the counter is not told which account.
    assert!(settled.account_cents > 0, "the account paid part of the bill");
    assert_eq!((settled.charged_account_id.as_str(), again.charged_account_id.as_str()), ("", ""));
    assert_eq!(again.settlement_id, settled.settlement_id);

    // The person, an ACTIVE binder and operators read the same settlement with the person's id.
    let binder = stack.binder(0).await;
    bind_adult(&stack, &binder, &holder.as_member(), Relationship::Spouse).await;
    let get = || GetSettlementRequest { settlement_id: settled.settlement_id.clone() };
    let mut reader = stack.settlements(Some(&stack.keys.bank));
    let charged = holder.account_id.as_str();
    for who in [&holder.token, &binder.token] {
        let seen = reader.get_settlement(with_person_token(get(), who)).await.expect("get").into_inner();
        let seen = seen.settlement.and_then(|r| r.settlement).expect("settlement");
        assert_eq!((seen.person_id.as_str(), seen.charged_account_id.as_str()), (holder.person_id.as_str(), charged));
    }
    let by_ops = stack.settlements(Some(&stack.keys.ops)).get_settlement(get()).await.expect("ops").into_inner();
    let by_ops = by_ops.settlement.and_then(|r| r.settlement).expect("settlement");
    assert_eq!((by_ops.person_id.as_str(), by_ops.charged_account_id.as_str()), (holder.person_id.as_str(), charged));
    let year = stack.clock_today().year();
    let listed = list_as(&stack, &holder.token, &holder.person_id, year, 0, "").await.expect("list");
    let record = listed.settlements[0].settlement.as_ref().expect("settlement");
    assert_eq!(
        (record.settlement_id.as_str(), record.person_id.as_str(), record.charged_account_id.as_str()),
        (settled.settlement_id.as_str(), holder.person_id.as_str(), charged)
    );
    stack.shutdown().await;
}
