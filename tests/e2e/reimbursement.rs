//! Reimbursement claims for bills paid out of pocket (issue 17 item 7): an approved claim is
//! settled by the one settlement decision and its fund share credited to the person's account
//! (or a bank transfer recorded); a refused claim keeps its reason and pays nothing; a claim is
//! reviewed once, also when reviews race; strangers can neither submit for nor read another.

use chrono::{Datelike, Duration};
use medins_proto::insurance::v1::{
    BindingStatus, CardDate, Category, Claim, ClaimItem, ClaimPayout, ClaimStatus, DocumentKind, EntryKind,
    GetSettlementRequest, ListClaimsRequest, ListSettlementsRequest, NotSettledBecause, Relationship,
    ReverseSettlementRequest, ReviewClaimRequest, Scheme, SettlementStatus, SubmitClaimRequest,
};
use tonic::{Code, Status};

use crate::support::{Stack, bad_fields, documents::sample_pdf, family::Binder, reason, with_person_token};

/// A national item with a price cap of 25 yuan (class A), and a self-funded one (class C).
const CAPPED: &str = "250101001";
const SELF_FUNDED: &str = "XA11HAX001A001010101";

/// An INVOICE document of `person`, uploaded with their token through the bank's app.
async fn invoice_of(stack: &Stack, person: &Binder) -> String {
    stack
        .upload_document(&stack.keys.bank, Some(&person.token), &person.person_id, DocumentKind::Invoice, &sample_pdf())
        .await
        .expect("upload the invoice")
        .document_id
}

/// An inpatient bill three days ago at a hospital of the person's own region (110105) that could
/// not settle directly: 100 x 25 yuan of a class A item, 3 000 yuan of a self-funded one.
fn claim_request(stack: &Stack, person_id: &str, invoices: Vec<String>, payout: ClaimPayout) -> SubmitClaimRequest {
    let day = stack.clock_today() - Duration::days(3);
    SubmitClaimRequest {
        person_id: person_id.into(),
        hospital_name: "北京市朝阳区某医院".into(),
        hospital_region_code: "110105".into(),
        category: Category::Inpatient as i32,
        care_date: Some(CardDate { year: day.year(), month: day.month() as i32, day: day.day() as i32 }),
        not_settled_because: NotSettledBecause::HospitalCouldNotSettle as i32,
        items: vec![
            ClaimItem { code: CAPPED.into(), quantity: 100, unit_price_cents: 2_500 },
            ClaimItem { code: SELF_FUNDED.into(), quantity: 1, unit_price_cents: 300_000 },
        ],
        total_cents: 550_000,
        invoice_document_ids: invoices,
        payout: payout as i32,
    }
}

async fn submit(stack: &Stack, person: &Binder, request: SubmitClaimRequest) -> Result<Claim, Status> {
    stack
        .reimbursements(Some(&stack.keys.bank))
        .submit_claim(with_person_token(request, &person.token))
        .await
        .map(|response| response.into_inner().claim.expect("claim"))
}

fn review_request(claim_id: &str, decision: ClaimStatus, reason: &str, transfer: &str) -> ReviewClaimRequest {
    ReviewClaimRequest {
        claim_id: claim_id.into(),
        decision: decision as i32,
        rejection_reason: reason.into(),
        transfer_reference: transfer.into(),
    }
}

async fn review(stack: &Stack, request: ReviewClaimRequest) -> Result<Claim, Status> {
    stack
        .reimbursements(Some(&stack.keys.ops))
        .review_claim(request)
        .await
        .map(|response| response.into_inner().claim.expect("claim"))
}

async fn balance(stack: &Stack, person: &Binder) -> i64 {
    stack.balance_and_ledger_sum(&person.account_id).await.0
}

#[tokio::test]
async fn an_approved_claim_is_settled_by_the_policy_and_its_fund_share_credited_to_the_account() {
    let stack = Stack::start().await;
    let person = stack.binder_in(Scheme::Employee, 10_000).await;
    let year = stack.clock_today().year();
    let invoice = invoice_of(&stack, &person).await;

    let request = claim_request(&stack, &person.person_id, vec![invoice.clone()], ClaimPayout::Account);
    // The person's token and an idempotency key, as a front door retries a submission.
    let keyed = |request: SubmitClaimRequest| {
        let mut call = with_person_token(request, &person.token);
        call.metadata_mut().insert("idempotency-key", "claim-1".parse().unwrap());
        call
    };
    let first = stack
        .reimbursements(Some(&stack.keys.bank))
        .submit_claim(keyed(request.clone()))
        .await
        .expect("submit")
        .into_inner();
    let claim = first.claim.expect("claim");
    assert_eq!((claim.status, claim.total_cents), (ClaimStatus::Submitted as i32, 550_000));
    assert_eq!(claim.invoice_document_ids, vec![invoice.clone()]);
    assert_eq!(claim.items.len(), 2);
    let replay = stack
        .reimbursements(Some(&stack.keys.bank))
        .submit_claim(keyed(request.clone()))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(replay.claim.unwrap().claim_id, claim.claim_id, "a retry with the key is the same claim");
    assert_eq!(stack.count_insurance_rows("claims").await, 1);

    // The operators' queue shows it; the operator approves.
    let queue = stack
        .reimbursements(Some(&stack.keys.ops))
        .list_claims(ListClaimsRequest { status: ClaimStatus::Submitted as i32, ..Default::default() })
        .await
        .expect("queue")
        .into_inner();
    assert_eq!(queue.claims.iter().map(|c| c.claim_id.clone()).collect::<Vec<_>>(), vec![claim.claim_id.clone()]);
    let approved =
        review(&stack, review_request(&claim.claim_id, ClaimStatus::Approved, "", "")).await.expect("approve");
    assert_eq!(approved.status, ClaimStatus::Approved as i32);
    // The policy's decision on a self-paid bill: the fund pays part of the 2 500 yuan in scope
    // above EMPLOYEE x INPATIENT's 1 300 yuan deductible, nothing of the self-funded item; the
    // individual account pays nothing (the person paid at the hospital).
    let settled = approved.settlement.clone().expect("the claim's settlement");
    let fund = settled.fund_cents;
    assert!(fund > 0 && fund <= 250_000 - 130_000, "{settled:?}");
    assert_eq!((settled.total_cents, settled.account_cents, settled.self_cents), (550_000, 0, 550_000 - fund));
    let receipt = settled.receipt.clone().expect("the receipt: the decision per item");
    assert_eq!(
        (receipt.in_scope_cents, receipt.c_self_funded_cents, receipt.deductible_cents),
        (250_000, 300_000, 130_000)
    );
    assert_eq!(receipt.items.len(), 2);
    assert_eq!((settled.visit_id.as_str(), settled.status), ("", SettlementStatus::Settled as i32));
    assert_eq!(approved.credited_cents, fund);
    assert_eq!(stack.year_to_date(&person.person_id, year, "INPATIENT").await, (550_000, fund, 130_000));

    // The account: the fund's share credited once, by a CLAIM_REIMBURSEMENT entry naming the claim.
    assert_eq!(balance(&stack, &person).await, 10_000 + fund);
    let credits: Vec<_> = stack
        .all_entries(&person.account_id)
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::ClaimReimbursement as i32)
        .collect();
    assert_eq!(credits.len(), 1);
    assert_eq!((credits[0].amount_cents, credits[0].reference.as_str()), (fund, claim.claim_id.as_str()));
    assert_eq!(stack.balance_and_ledger_sum(&person.account_id).await, (10_000 + fund, 10_000 + fund));

    // The person's records show the settlement as the claim's; their list shows it APPROVED.
    let records = stack
        .settlements(Some(&stack.keys.bank))
        .list_settlements(with_person_token(
            ListSettlementsRequest {
                person_id: person.person_id.clone(),
                year,
                page_size: 0,
                page_token: String::new(),
            },
            &person.token,
        ))
        .await
        .expect("records")
        .into_inner();
    assert_eq!(records.settlements.len(), 1);
    let record = &records.settlements[0];
    assert_eq!((record.claim_id.as_str(), record.partner_id.as_str()), (claim.claim_id.as_str(), ""));
    assert_eq!(record.settlement.as_ref(), Some(&settled));
    let mine = stack
        .reimbursements(Some(&stack.keys.bank))
        .list_claims(with_person_token(
            ListClaimsRequest { person_id: person.person_id.clone(), ..Default::default() },
            &person.token,
        ))
        .await
        .expect("my claims")
        .into_inner();
    assert_eq!(mine.claims, vec![approved.clone()]);

    // The person's access history shows the submission and the review.
    let audit = stack.audit_replica("insurance-svc");
    let history = audit.history(uuid::Uuid::parse_str(&person.person_id).unwrap(), None, 1000).await.unwrap();
    let methods: Vec<String> = history.iter().map(|e| format!("{} {}", e.method, e.outcome)).collect();
    for row in ["ReimbursementService/SubmitClaim OK", "ReimbursementService/ReviewClaim OK"] {
        assert!(methods.contains(&format!("/medins.insurance.v1.{row}")), "{row} in {methods:?}");
    }

    // A claim's settlement is not reversed: its money was paid back already.
    let reversal = stack
        .settlements(Some(&stack.keys.ops))
        .reverse_settlement(ReverseSettlementRequest {
            settlement_id: settled.settlement_id.clone(),
            reason: "entered twice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (reversal.code(), reason(&reversal).as_str()),
        (Code::FailedPrecondition, "CLAIM_SETTLEMENT_NOT_REVERSIBLE")
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_refused_claim_keeps_its_reason_and_pays_nothing_and_a_bank_transfer_is_recorded_not_credited() {
    let stack = Stack::start().await;
    let person = stack.binder_in(Scheme::Resident, 5_000).await;
    let year = stack.clock_today().year();
    let invoice = invoice_of(&stack, &person).await;

    let refused =
        submit(&stack, &person, claim_request(&stack, &person.person_id, vec![invoice.clone()], ClaimPayout::Account))
            .await
            .expect("submit");
    let no_reason = review(&stack, review_request(&refused.claim_id, ClaimStatus::Rejected, "", "")).await.unwrap_err();
    assert_eq!(bad_fields(&no_reason), vec!["rejection_reason".to_owned()]);
    let rejected =
        review(&stack, review_request(&refused.claim_id, ClaimStatus::Rejected, "发票金额与费用清单不符", ""))
            .await
            .expect("reject");
    assert_eq!(
        (rejected.status, rejected.rejection_reason.as_str(), rejected.credited_cents),
        (ClaimStatus::Rejected as i32, "发票金额与费用清单不符", 0)
    );
    assert!(rejected.settlement.is_none());
    assert_eq!(balance(&stack, &person).await, 5_000, "nothing credited");
    assert_eq!(stack.year_to_date(&person.person_id, year, "INPATIENT").await, (0, 0, 0));
    assert_eq!(stack.count_insurance_rows("settlements").await, 0);

    // The same invoice, claimed again for a bank transfer: approved with the transfer's
    // reference, settled, nothing credited to the account.
    let transfer =
        submit(&stack, &person, claim_request(&stack, &person.person_id, vec![invoice], ClaimPayout::BankTransfer))
            .await
            .expect("submit again");
    let missing_reference =
        review(&stack, review_request(&transfer.claim_id, ClaimStatus::Approved, "", "")).await.unwrap_err();
    assert_eq!(bad_fields(&missing_reference), vec!["transfer_reference".to_owned()]);
    let paid = review(&stack, review_request(&transfer.claim_id, ClaimStatus::Approved, "", "ICBC-20261207-0001"))
        .await
        .expect("approve");
    assert_eq!((paid.transfer_reference.as_str(), paid.credited_cents), ("ICBC-20261207-0001", 0));
    let settled = paid.settlement.expect("settlement");
    assert!(settled.fund_cents > 0);
    assert_eq!(balance(&stack, &person).await, 5_000, "a transfer is not an account credit");

    // The person reads both; the refused one with its reason.
    let mine = stack
        .reimbursements(Some(&stack.keys.bank))
        .list_claims(with_person_token(
            ListClaimsRequest { person_id: person.person_id.clone(), page_size: 1, ..Default::default() },
            &person.token,
        ))
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(mine.claims[0].claim_id, transfer.claim_id, "newest first");
    let rest = stack
        .reimbursements(Some(&stack.keys.bank))
        .list_claims(with_person_token(
            ListClaimsRequest {
                person_id: person.person_id.clone(),
                page_size: 1,
                page_token: mine.next_page_token.clone(),
                ..Default::default()
            },
            &person.token,
        ))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.claims, vec![rejected]);
    assert_eq!(rest.next_page_token, "");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_claim_is_reviewed_once_and_of_concurrent_reviews_exactly_one_wins() {
    let stack = Stack::start().await;
    let person = stack.binder_in(Scheme::Employee, 0).await;
    let invoice = invoice_of(&stack, &person).await;
    let once =
        submit(&stack, &person, claim_request(&stack, &person.person_id, vec![invoice.clone()], ClaimPayout::Account))
            .await
            .expect("submit");
    review(&stack, review_request(&once.claim_id, ClaimStatus::Approved, "", "")).await.expect("approve");
    for decision in [(ClaimStatus::Approved, ""), (ClaimStatus::Rejected, "changed my mind")] {
        let twice = review(&stack, review_request(&once.claim_id, decision.0, decision.1, "")).await.unwrap_err();
        assert_eq!((twice.code(), reason(&twice).as_str()), (Code::FailedPrecondition, "CLAIM_ALREADY_REVIEWED"));
    }

    // Eight operators approve (or reject) the same claim at once: one wins, the rest are told.
    // (A new invoice: the approved claim holds the first one.)
    let invoice = invoice_of(&stack, &person).await;
    let raced = submit(&stack, &person, claim_request(&stack, &person.person_id, vec![invoice], ClaimPayout::Account))
        .await
        .expect("submit");
    let before = balance(&stack, &person).await;
    let calls = (0..8).map(|i| {
        let decision = if i % 2 == 0 { (ClaimStatus::Approved, "") } else { (ClaimStatus::Rejected, "duplicate") };
        review(&stack, review_request(&raced.claim_id, decision.0, decision.1, ""))
    });
    let outcomes = futures::future::join_all(calls).await;
    let winners: Vec<&Claim> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for lost in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!((lost.code(), reason(lost).as_str()), (Code::FailedPrecondition, "CLAIM_ALREADY_REVIEWED"));
    }
    let winner = winners[0];
    let expected_credit = winner.settlement.as_ref().map_or(0, |s| s.fund_cents);
    assert_eq!(balance(&stack, &person).await, before + expected_credit, "paid at most once");
    let claims_settled = if winner.status == ClaimStatus::Approved as i32 { 2 } else { 1 };
    assert_eq!(stack.count_insurance_rows("settlements").await, claims_settled);
    assert_eq!(stack.count_insurance_rows("claim_reviews").await, 2);
    stack.shutdown().await;
}

#[tokio::test]
async fn strangers_submit_nothing_for_others_and_learn_nothing_of_their_claims_or_invoices() {
    let stack = Stack::start().await;
    let person = stack.binder_in(Scheme::Resident, 0).await;
    let stranger = stack.binder(0).await;
    let invoice = invoice_of(&stack, &person).await;
    let theirs =
        submit(&stack, &person, claim_request(&stack, &person.person_id, vec![invoice.clone()], ClaimPayout::Account))
            .await
            .expect("submit");

    // Submitting for someone else, existing or not: the same refusal, nothing written.
    for target in [person.person_id.clone(), uuid::Uuid::now_v7().to_string()] {
        let refused =
            submit(&stack, &stranger, claim_request(&stack, &target, vec![invoice.clone()], ClaimPayout::Account))
                .await
                .unwrap_err();
        assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
    }
    // Someone else's invoice, a missing one, a document of another kind: the same answer.
    let photo = stack
        .upload_document(
            &stack.keys.bank,
            Some(&stranger.token),
            &stranger.person_id,
            DocumentKind::Photo,
            &crate::support::documents::sample_png(),
        )
        .await
        .expect("photo")
        .document_id;
    let mut answers = Vec::new();
    for document in [invoice.clone(), uuid::Uuid::now_v7().to_string(), photo] {
        let refused =
            submit(&stack, &stranger, claim_request(&stack, &stranger.person_id, vec![document], ClaimPayout::Account))
                .await
                .unwrap_err();
        assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "DOCUMENT_INVALID"));
        answers.push(refused.message().to_owned());
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "{answers:?}");
    assert_eq!(stack.count_insurance_rows("claims").await, 1);

    // Hostile bytes: every bad field named, nothing written.
    let mut hostile = claim_request(&stack, &stranger.person_id, vec!["x".into()], ClaimPayout::Account);
    hostile.hospital_region_code = "31'--".into();
    hostile.items[0].code = "NOT IN CATALOGUE".into();
    hostile.items[1].unit_price_cents = -1;
    hostile.hospital_name = "\u{0}".into();
    let refused = submit(&stack, &stranger, hostile).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields = bad_fields(&refused);
    for field in [
        "hospital_name",
        "hospital_region_code",
        "items[0].code",
        "items[1].unit_price_cents",
        "invoice_document_ids[0]",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    let mut over_cap = claim_request(&stack, &stranger.person_id, vec![invoice.clone()], ClaimPayout::Account);
    over_cap.items[0].unit_price_cents = 2_501;
    over_cap.total_cents = 100 * 2_501 + 300_000;
    let refused = submit(&stack, &stranger, over_cap).await.unwrap_err();
    assert_eq!(bad_fields(&refused), vec!["items[0].unit_price_cents".to_owned()]);

    // Reading another's claims: refused the same for existing and missing persons; the queue and
    // reviews are the operators'.
    for target in [person.person_id.clone(), uuid::Uuid::now_v7().to_string()] {
        let refused = stack
            .reimbursements(Some(&stack.keys.bank))
            .list_claims(with_person_token(
                ListClaimsRequest { person_id: target, ..Default::default() },
                &stranger.token,
            ))
            .await
            .unwrap_err();
        assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
    }
    let queue = stack
        .reimbursements(Some(&stack.keys.bank))
        .list_claims(with_person_token(
            ListClaimsRequest { status: ClaimStatus::Submitted as i32, ..Default::default() },
            &stranger.token,
        ))
        .await
        .unwrap_err();
    assert_eq!((queue.code(), reason(&queue).as_str()), (Code::PermissionDenied, "PARTNER_KIND_NOT_ALLOWED"));
    let by_bank = stack
        .reimbursements(Some(&stack.keys.bank))
        .review_claim(review_request(&theirs.claim_id, ClaimStatus::Approved, "", ""))
        .await
        .unwrap_err();
    assert_eq!(by_bank.code(), Code::PermissionDenied, "banks hold no claims.review scope");
    let unknown = review(&stack, review_request(&uuid::Uuid::now_v7().to_string(), ClaimStatus::Approved, "", ""))
        .await
        .unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "CLAIM_NOT_FOUND"));
    // The claim's person's settlement is not the stranger's to read either (none yet: SUBMITTED).
    let none = stack
        .settlements(Some(&stack.keys.bank))
        .get_settlement(with_person_token(
            GetSettlementRequest { settlement_id: uuid::Uuid::now_v7().to_string() },
            &stranger.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&none), "SETTLEMENT_NOT_FOUND");
    stack.shutdown().await;
}

/// An emergency claim for `items` of `category` at a Shanghai hospital (the person is insured in
/// Beijing, 110105) with no cross-region filing.
fn elsewhere(
    stack: &Stack,
    person: &Binder,
    invoice: String,
    category: Category,
    because: NotSettledBecause,
) -> SubmitClaimRequest {
    SubmitClaimRequest {
        hospital_name: "上海市第六人民医院".into(),
        hospital_region_code: "310104".into(),
        category: category as i32,
        not_settled_because: because as i32,
        items: vec![ClaimItem { code: CAPPED.into(), quantity: 100, unit_price_cents: 2_500 }],
        total_cents: 250_000,
        ..claim_request(stack, &person.person_id, vec![invoice], ClaimPayout::Account)
    }
}

#[tokio::test]
async fn emergency_care_elsewhere_without_a_filing_is_paid_at_the_filed_ratio() {
    let stack = Stack::start().await;
    let person = stack.binder_in(Scheme::Employee, 0).await;
    let year = stack.clock_today().year();

    // Control: pharmacy care in Shanghai that the hospital could not settle, with no filing. The
    // policy settles no unfiled pharmacy care: the approval is refused and the claim waits.
    let invoice = invoice_of(&stack, &person).await;
    let control = elsewhere(&stack, &person, invoice, Category::Pharmacy, NotSettledBecause::HospitalCouldNotSettle);
    let control = submit(&stack, &person, control).await.expect("submit");
    let refused = review(&stack, review_request(&control.claim_id, ClaimStatus::Approved, "", "")).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "CROSS_REGION_NOT_FILED"));
    let waiting = stack
        .reimbursements(Some(&stack.keys.ops))
        .list_claims(ListClaimsRequest { status: ClaimStatus::Submitted as i32, ..Default::default() })
        .await
        .expect("queue")
        .into_inner();
    assert_eq!(waiting.claims.len(), 1);
    assert_eq!(stack.count_insurance_rows("settlements").await, 0);

    // The same care as an emergency: it counts as filed. EMPLOYEE x PHARMACY (Beijing's national
    // terms): 1 000 yuan deductible, then 50 % of the 2 500 yuan in scope.
    let invoice = invoice_of(&stack, &person).await;
    let request = elsewhere(&stack, &person, invoice, Category::Pharmacy, NotSettledBecause::EmergencyElsewhereUnfiled);
    let claim = submit(&stack, &person, request).await.expect("submit");
    let approved =
        review(&stack, review_request(&claim.claim_id, ClaimStatus::Approved, "", "")).await.expect("approve");
    assert_eq!(approved.status, ClaimStatus::Approved as i32);
    let settled = approved.settlement.expect("settlement");
    let receipt = settled.receipt.clone().expect("receipt");
    assert_eq!(
        (receipt.insured_region_code.as_str(), receipt.treatment_region_code.as_str(), receipt.cross_region),
        ("110105", "310104", true)
    );
    assert_eq!((receipt.ratio_bp, receipt.filing_id.as_str()), (5_000, ""), "the filed ratio, no filing");
    assert_eq!((settled.fund_cents, settled.self_cents), (75_000, 175_000));
    assert_eq!(approved.credited_cents, 75_000);
    assert_eq!(balance(&stack, &person).await, 75_000);
    assert_eq!(stack.year_to_date(&person.person_id, year, "PHARMACY").await, (250_000, 75_000, 100_000));

    // Where the policy has an unfiled ratio (EMPLOYEE x OUTPATIENT: 50 %), emergency care gets
    // the filed one (70 %): (2 500 - 1 800 deductible) x 70 % = 490 yuan, not 350.
    let invoice = invoice_of(&stack, &person).await;
    let request =
        elsewhere(&stack, &person, invoice, Category::Outpatient, NotSettledBecause::EmergencyElsewhereUnfiled);
    let claim = submit(&stack, &person, request).await.expect("submit");
    let approved =
        review(&stack, review_request(&claim.claim_id, ClaimStatus::Approved, "", "")).await.expect("approve");
    let settled = approved.settlement.expect("settlement");
    assert_eq!((settled.receipt.expect("receipt").ratio_bp, settled.fund_cents), (7_000, 49_000));
    assert_eq!(balance(&stack, &person).await, 75_000 + 49_000);
    stack.shutdown().await;
}

#[tokio::test]
async fn one_invoice_backs_one_claim_and_of_two_concurrent_submissions_exactly_one_wins() {
    let stack = Stack::start().await;
    let person = stack.binder_in(Scheme::Employee, 0).await;
    let (first, second) = (invoice_of(&stack, &person).await, invoice_of(&stack, &person).await);
    let held =
        submit(&stack, &person, claim_request(&stack, &person.person_id, vec![first.clone()], ClaimPayout::Account))
            .await
            .expect("submit");

    // A second claim naming the invoice, SUBMITTED and then APPROVED: refused, naming the field.
    let again = || claim_request(&stack, &person.person_id, vec![second.clone(), first.clone()], ClaimPayout::Account);
    for step in ["submitted", "approved"] {
        let refused = submit(&stack, &person, again()).await.unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::FailedPrecondition, "INVOICE_ALREADY_CLAIMED"),
            "{step}"
        );
        assert_eq!(bad_fields(&refused), vec!["invoice_document_ids[1]".to_owned()], "{step}");
        assert_eq!(stack.count_insurance_rows("claims").await, 1, "{step}: nothing written");
        if step == "submitted" {
            review(&stack, review_request(&held.claim_id, ClaimStatus::Approved, "", "")).await.expect("approve");
        }
    }
    // A rejected claim lets its invoices go: the bill may be claimed again.
    let rejected =
        submit(&stack, &person, claim_request(&stack, &person.person_id, vec![second.clone()], ClaimPayout::Account))
            .await
            .expect("submit");
    review(&stack, review_request(&rejected.claim_id, ClaimStatus::Rejected, "发票不清晰，请重新上传", ""))
        .await
        .expect("reject");
    let resubmitted =
        submit(&stack, &person, claim_request(&stack, &person.person_id, vec![second], ClaimPayout::Account))
            .await
            .expect("the rejected claim's invoice, claimed again");
    assert_eq!(resubmitted.status, ClaimStatus::Submitted as i32);

    // Two submissions with the same invoice at once, three times over: exactly one wins each.
    for round in 0..3 {
        let invoice = invoice_of(&stack, &person).await;
        let request = claim_request(&stack, &person.person_id, vec![invoice], ClaimPayout::Account);
        let (a, b) = tokio::join!(submit(&stack, &person, request.clone()), submit(&stack, &person, request));
        let outcomes = [a, b];
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "round {round}: {outcomes:?}");
        for lost in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            assert_eq!(
                (lost.code(), reason(lost).as_str()),
                (Code::FailedPrecondition, "INVOICE_ALREADY_CLAIMED"),
                "round {round}"
            );
        }
    }
    assert_eq!(stack.count_insurance_rows("claims").await, 3 + 3);
    stack.shutdown().await;
}

/// What a refusal tells: its code, reason and message.
fn answer(status: &Status) -> (Code, String, String) {
    (status.code(), reason(status), status.message().to_owned())
}

#[tokio::test]
async fn a_guardian_claims_for_a_minor_an_active_binder_lists_them_and_the_unrelated_learn_nothing() {
    let stack = Stack::start().await;
    let parent = stack.binder(0).await;
    let child = stack.member_aged(8, 0).await;
    assert_eq!(stack.bind_confirmed(&parent, &child, Relationship::Child).await.status, BindingStatus::Active as i32);
    let grandparent = stack.binder(0).await;
    let binding = stack.bind_confirmed(&grandparent, &child, Relationship::Grandchild).await;
    assert_eq!(binding.status, BindingStatus::Active as i32);

    // The parent, guardian of an 8-year-old, uploads the child's invoice and claims the bill in
    // the child's name with their own token; the fund's share goes to the child's account.
    let invoice = stack
        .upload_document(&stack.keys.bank, Some(&parent.token), &child.person_id, DocumentKind::Invoice, &sample_pdf())
        .await
        .expect("the guardian uploads the child's invoice")
        .document_id;
    let request = claim_request(&stack, &child.person_id, vec![invoice], ClaimPayout::Account);
    let claim = submit(&stack, &parent, request).await.expect("the guardian submits");
    assert_eq!((claim.person_id.as_str(), claim.status), (child.person_id.as_str(), ClaimStatus::Submitted as i32));
    let approved =
        review(&stack, review_request(&claim.claim_id, ClaimStatus::Approved, "", "")).await.expect("approve");
    assert!(approved.credited_cents > 0);
    let credited = approved.credited_cents;
    assert_eq!(stack.balance_and_ledger_sum(&child.account_id).await, (credited, credited));
    assert_eq!(balance(&stack, &parent).await, 0, "the guardian's own account is untouched");

    // The other ACTIVE binder lists the child's claims with their own token.
    let list = |person_id: &str| ListClaimsRequest { person_id: person_id.into(), ..Default::default() };
    let listed = stack
        .reimbursements(Some(&stack.keys.bank))
        .list_claims(with_person_token(list(&child.person_id), &grandparent.token))
        .await
        .expect("an active binder lists")
        .into_inner();
    assert_eq!(listed.claims, vec![approved]);

    // Unrelated callers: a person bound to no one (their token), and partners holding no token
    // (a mini program with the claims scopes, a hospital and an employer without them). Each gets
    // one answer for the child and for a person who does not exist; nothing is written.
    let stranger = stack.binder(0).await;
    let missing = uuid::Uuid::now_v7().to_string();
    let claims_before = stack.count_insurance_rows("claims").await;
    let callers: [(&str, &str, Option<&str>); 4] = [
        ("a stranger's token", &stack.keys.bank, Some(&stranger.token)),
        ("a mini program without a token", &stack.keys.mini_program, None),
        ("a hospital", &stack.keys.hospital, None),
        ("an employer", &stack.keys.employer, None),
    ];
    for (who, key, token) in callers {
        let mut answers = Vec::new();
        for target in [child.person_id.as_str(), missing.as_str()] {
            let mut client = stack.reimbursements(Some(key));
            let listed = match token {
                Some(token) => client.list_claims(with_person_token(list(target), token)).await,
                None => client.list_claims(list(target)).await,
            }
            .unwrap_err();
            let request = claim_request(&stack, target, vec![uuid::Uuid::now_v7().to_string()], ClaimPayout::Account);
            let submitted = match token {
                Some(token) => client.submit_claim(with_person_token(request, token)).await,
                None => client.submit_claim(request).await,
            }
            .unwrap_err();
            // Refused for who is calling (no token: PERSON_TOKEN_REQUIRED), never NOT_FOUND.
            for refused in [&listed, &submitted] {
                assert!(matches!(refused.code(), Code::PermissionDenied | Code::Unauthenticated), "{who}: {refused:?}");
            }
            answers.push((answer(&listed), answer(&submitted)));
        }
        assert_eq!(answers[0], answers[1], "{who}: the same answer for an existing and a missing person");
    }
    assert_eq!(stack.count_insurance_rows("claims").await, claims_before);
    stack.shutdown().await;
}
