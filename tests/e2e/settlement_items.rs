//! Itemised settlement (issue 17): a bill of A, B and C items split item by item with the
//! deductible crossed inside it and the annual cap reached; bad items each named; PreSettle
//! then Settle with the same split, or refused when the balance moved, the pre-settlement
//! expired or the bill changed; cross-region care with and without a filing, and care the policy
//! does not settle unfiled. The bare-total form is the settlement tests' (settlement.rs).

use chrono::Datelike;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use insurance_svc::store::schema::settlement_items;
use medins_common::{
    auth::{CareSite, HospitalLevel, PartnersFile},
    db::DbError,
};
use medins_proto::insurance::v1::{
    Account, BillItem, CardDate, Category, CoverageClass, CrossRegionFilingKind, FileCrossRegionCareRequest, PayFrom,
    PreSettleRequest, PreSettleResponse, Receipt, Scheme, SettleRequest, Settlement,
    cross_region_service_client::CrossRegionServiceClient,
};
use tonic::{Code, Status};

use crate::support::{Stack, bad_fields, interceptor, reason, with_person_token};

/// Puts the stack's hospital at `region_code` with `level` (its partner entry), and reloads.
fn place_hospital(stack: &Stack, region_code: &str, level: HospitalLevel) {
    let mut file = PartnersFile::load(&stack.partners_file).expect("partners file");
    file.set_care_site("hospital", Some(CareSite { region_code: region_code.into(), level })).expect("care site");
    file.save(&stack.partners_file).expect("save partners");
    stack.insurance_partners.reload().expect("reload partners");
}

fn item(code: &str, quantity_milli: i64, unit_price_cents: i64) -> BillItem {
    BillItem {
        code: code.into(),
        quantity_milli,
        unit_price_cents,
        department_code: "NEI-01".into(),
        department_name: "内科".into(),
    }
}

/// A, B, C and B items of the built-in national catalogue: 3 000 + 60 000 + 2 345 + 25 001.
fn abc_items() -> Vec<BillItem> {
    vec![
        item("XJ01CAA040A001010101", 2_000, 1_500),  // amoxicillin, A: 2 boxes x 15.00
        item("XB05AAR040B002010101", 1_500, 40_000), // albumin, B: 1.5 bottles x 400.00
        item("XA11HAX001A001010101", 1_000, 2_345),  // vitamins, C
        item("210300001", 1_000, 25_001),            // CT, B
    ]
}

const ABC_TOTAL: i64 = 90_346;

fn request(
    visit_id: &str,
    total_cents: i64,
    category: Category,
    pay_from: PayFrom,
    items: Vec<BillItem>,
) -> SettleRequest {
    SettleRequest {
        visit_id: visit_id.into(),
        total_cents,
        category: category as i32,
        pay_from: pay_from as i32,
        items_summary: String::new(),
        binder_person_id: String::new(),
        items,
        pre_settlement_id: String::new(),
    }
}

fn pre_request(r: &SettleRequest) -> PreSettleRequest {
    PreSettleRequest {
        visit_id: r.visit_id.clone(),
        total_cents: r.total_cents,
        category: r.category,
        pay_from: r.pay_from,
        items_summary: r.items_summary.clone(),
        binder_person_id: r.binder_person_id.clone(),
        items: r.items.clone(),
    }
}

async fn settle_at_hospital(stack: &Stack, r: SettleRequest) -> Result<Settlement, Status> {
    let settled = stack.settlements(Some(&stack.keys.hospital)).settle(r).await?;
    Ok(settled.into_inner().settlement.expect("settlement"))
}

/// Opens a visit of `account` at the hospital and settles `items` (or the bare total).
async fn visit_and_settle(
    stack: &Stack,
    account: &Account,
    total_cents: i64,
    category: Category,
    pay_from: PayFrom,
    items: Vec<BillItem>,
) -> Result<Settlement, Status> {
    let visit_id = stack.open_visit(account, &stack.keys.hospital).await;
    settle_at_hospital(stack, request(&visit_id, total_cents, category, pay_from, items)).await
}

fn column(receipt: &Receipt, f: fn(&medins_proto::insurance::v1::ReceiptItem) -> i64) -> Vec<i64> {
    receipt.items.iter().map(f).collect()
}

/// Every item and the bill: fund + account + self = amount; scope adds up; nothing negative.
fn assert_accounted(s: &Settlement) {
    let r = s.receipt.as_ref().expect("receipt");
    assert_eq!(r.fund_cents + r.account_cents + r.self_cents, s.total_cents);
    assert_eq!((r.fund_cents, r.account_cents, r.self_cents), (s.fund_cents, s.account_cents, s.self_cents));
    for i in &r.items {
        assert_eq!(i.fund_cents + i.account_cents + i.self_cents, i.amount_cents, "{i:?}");
        assert_eq!(i.in_scope_cents + i.b_self_pay_cents + i.c_self_funded_cents, i.amount_cents, "{i:?}");
        assert!([i.fund_cents, i.account_cents, i.self_cents, i.deductible_cents].iter().all(|c| *c >= 0));
    }
    if !r.items.is_empty() {
        assert_eq!(r.items.iter().map(|i| i.fund_cents).sum::<i64>(), r.fund_cents);
        assert_eq!(r.items.iter().map(|i| i.amount_cents).sum::<i64>(), s.total_cents);
    }
}

#[tokio::test]
async fn an_itemised_bill_is_split_item_by_item_across_the_deductible_and_the_annual_cap() {
    let stack = Stack::start().await;
    // A level-2 hospital in Beijing, where the person is insured: EMPLOYEE OUTPATIENT, 1 800
    // yuan deductible, 70 %, at most 20 000 yuan a year, B items 10 % first.
    place_hospital(&stack, "110108", HospitalLevel::Level2);
    let account = stack.insured_with_balance(Scheme::Employee, 0).await;
    let year = stack.clock_today().year();

    // The bare total still works, and has a receipt: 1 700 yuan of the deductible.
    let bare = visit_and_settle(&stack, &account, 170_000, Category::Outpatient, PayFrom::Self_, vec![]).await.unwrap();
    let receipt = bare.receipt.clone().expect("receipt");
    assert_eq!(
        (bare.fund_cents, bare.self_cents, receipt.in_scope_cents, receipt.deductible_cents),
        (0, 170_000, 170_000, 170_000)
    );
    assert!(receipt.items.is_empty() && !receipt.cross_region);
    assert_eq!((receipt.insured_region_code.as_str(), receipt.treatment_region_code.as_str()), ("110105", "110108"));

    stack.credit(&account.account_id, 10_000, "items-1").await;
    let billed =
        visit_and_settle(&stack, &account, ABC_TOTAL, Category::Outpatient, PayFrom::HolderAccount, abc_items())
            .await
            .expect("itemised settle");
    assert_accounted(&billed);
    let r = billed.receipt.clone().unwrap();
    assert_eq!(
        r.items.iter().map(|i| i.coverage_class).collect::<Vec<_>>(),
        [CoverageClass::A, CoverageClass::B, CoverageClass::C, CoverageClass::B].map(|c| c as i32)
    );
    assert_eq!(column(&r, |i| i.in_scope_cents), vec![3_000, 54_000, 0, 22_501]);
    assert_eq!(column(&r, |i| i.b_self_pay_cents), vec![0, 6_000, 0, 2_500]);
    assert_eq!(column(&r, |i| i.c_self_funded_cents), vec![0, 0, 2_345, 0]);
    // The last 10 000 of the deductible: 3 000 from the first item, 7 000 from the second.
    assert_eq!(column(&r, |i| i.deductible_cents), vec![3_000, 7_000, 0, 0]);
    // 70 % of the other 69 501 in scope, floored, spread exactly.
    assert_eq!(column(&r, |i| i.fund_cents), vec![0, 32_900, 0, 15_750]);
    assert_eq!(column(&r, |i| i.account_cents), vec![3_000, 7_000, 0, 0]);
    assert_eq!(
        (
            r.in_scope_cents,
            r.b_self_pay_cents,
            r.c_self_funded_cents,
            r.deductible_cents,
            r.fund_cents,
            r.account_cents
        ),
        (79_501, 8_500, 2_345, 10_000, 48_650, 10_000)
    );
    assert_eq!(
        (r.ratio_bp, r.hospital_level),
        (7_000, medins_proto::insurance::v1::HospitalLevel::HospitalLevel2 as i32)
    );
    assert_eq!(stack.year_to_date(&account.person_id, year, "OUTPATIENT").await, (260_346, 48_650, 180_000));
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (0, 0));

    // The cap: a large bill takes the fund to 20 000 yuan, the next itemised bill gets nothing.
    let large =
        visit_and_settle(&stack, &account, 3_000_000, Category::Outpatient, PayFrom::Self_, vec![]).await.unwrap();
    assert_eq!(large.fund_cents, 2_000_000 - 48_650);
    let capped =
        visit_and_settle(&stack, &account, ABC_TOTAL, Category::Outpatient, PayFrom::Self_, abc_items()).await.unwrap();
    assert_accounted(&capped);
    assert_eq!((capped.fund_cents, capped.self_cents), (0, ABC_TOTAL));
    assert_eq!(stack.year_to_date(&account.person_id, year, "OUTPATIENT").await.1, 2_000_000);

    // At rest: four item rows per itemised bill, in bill order, holding their split.
    let ids = [billed.settlement_id.clone(), capped.settlement_id.clone()];
    let rows: Vec<(String, i32, i64, i64)> = stack
        .insurance_db
        .run(move |conn| -> Result<_, DbError> {
            Ok(settlement_items::table
                .filter(settlement_items::settlement_id.eq_any(ids))
                .order((settlement_items::settlement_id, settlement_items::line))
                .select((
                    settlement_items::settlement_id,
                    settlement_items::line,
                    settlement_items::amount_cents,
                    settlement_items::fund_cents,
                ))
                .load(conn)?)
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(
        rows.iter().filter(|r| r.0 == billed.settlement_id).map(|r| r.3).collect::<Vec<_>>(),
        vec![0, 32_900, 0, 15_750]
    );

    // A retry with the same items is the first settlement.
    let visit_id = billed.visit_id.clone();
    let again = settle_at_hospital(
        &stack,
        request(&visit_id, ABC_TOTAL, Category::Outpatient, PayFrom::HolderAccount, abc_items()),
    )
    .await
    .expect("retry");
    assert_eq!(again.settlement_id, billed.settlement_id);
    assert_eq!(again.receipt, billed.receipt);
    stack.shutdown().await;
}

#[tokio::test]
async fn bad_items_are_each_named_and_nothing_is_settled() {
    let stack = Stack::start().await;
    place_hospital(&stack, "110108", HospitalLevel::Level2);
    let account = stack.insured_with_balance(Scheme::Employee, 50_000).await;
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let refused = |items: Vec<BillItem>, total: i64| {
        let r = request(&visit_id, total, Category::Outpatient, PayFrom::HolderAccount, items);
        let stack = &stack;
        async move {
            let error = settle_at_hospital(stack, r).await.unwrap_err();
            assert_eq!((error.code(), reason(&error).as_str()), (Code::InvalidArgument, "INVALID_ARGUMENT"));
            bad_fields(&error)
        }
    };
    // The catalogue: an unknown code, a unit price over the item's cap (CT: 300 yuan).
    let mut items = abc_items();
    items[0].code = "XX00000000".into();
    items[3].unit_price_cents = 30_001;
    let total = ABC_TOTAL + 5_000;
    assert_eq!(refused(items, total).await, vec!["items[0].code", "items[3].unit_price_cents"]);
    // On their own: a quantity of zero, a department code with a space, an over-long name.
    let mut items = abc_items();
    items[1].quantity_milli = 0;
    items[2].department_code = "NEI 01".into();
    items[3].department_name = "科".repeat(51);
    assert_eq!(
        refused(items, ABC_TOTAL).await,
        vec!["items[1].quantity_milli", "items[2].department_code", "items[3].department_name"]
    );
    // Amounts that do not add up to the total.
    assert_eq!(refused(abc_items(), ABC_TOTAL + 1).await, vec!["total_cents"]);

    // Nothing was written: the visit settles now, and the account paid only this once.
    let settled = settle_at_hospital(
        &stack,
        request(&visit_id, ABC_TOTAL, Category::Outpatient, PayFrom::HolderAccount, abc_items()),
    )
    .await
    .expect("settle the good bill");
    assert_eq!(settled.account_cents, 50_000);
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (0, 0));
    stack.shutdown().await;
}

/// ErrorInfo metadata `changed` of a refusal.
fn changed(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().and_then(|info| info.metadata.get("changed").cloned())
}

async fn pre_settle(stack: &Stack, r: &SettleRequest) -> PreSettleResponse {
    stack.settlements(Some(&stack.keys.hospital)).pre_settle(pre_request(r)).await.expect("pre-settle").into_inner()
}

#[tokio::test]
async fn pre_settle_then_settle_gives_the_same_split_unless_what_it_rested_on_changed() {
    let stack = Stack::start().await;
    place_hospital(&stack, "110108", HospitalLevel::Level1);
    let account = stack.insured_with_balance(Scheme::Employee, 30_000).await;
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let bill = request(&visit_id, ABC_TOTAL, Category::Outpatient, PayFrom::HolderAccount, abc_items());

    // PreSettle writes nothing but its record: the balance and the totals stay.
    let pre = pre_settle(&stack, &bill).await;
    let receipt = pre.receipt.clone().expect("receipt");
    assert_eq!(receipt.fund_cents + receipt.account_cents + receipt.self_cents, ABC_TOTAL);
    assert_eq!(receipt.account_cents, 30_000);
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (30_000, 30_000));
    assert_eq!(stack.year_to_date(&account.person_id, stack.clock_today().year(), "OUTPATIENT").await, (0, 0, 0));

    // Another pre-settlement's id, or another visit's: NOT_FOUND; another bill: TERMS_DIFFER.
    let confirm = |id: &str, r: &SettleRequest| SettleRequest { pre_settlement_id: id.into(), ..r.clone() };
    let error = settle_at_hospital(&stack, confirm(&uuid::Uuid::now_v7().to_string(), &bill)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::NotFound, "PRE_SETTLEMENT_NOT_FOUND"));
    let mut other = bill.clone();
    other.items_summary = "another bill".into();
    let error = settle_at_hospital(&stack, confirm(&pre.pre_settlement_id, &other)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "PRE_SETTLEMENT_TERMS_DIFFER"));

    // Confirmed: exactly the pre-settled split.
    let settled = settle_at_hospital(&stack, confirm(&pre.pre_settlement_id, &bill)).await.expect("settle");
    let got = settled.receipt.clone().unwrap();
    assert_eq!(got.pre_settlement_id, pre.pre_settlement_id);
    assert_eq!(Receipt { pre_settlement_id: String::new(), ..got }, receipt);
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (0, 0));

    // A balance change in between: stale, naming what moved; nothing settled.
    stack.credit(&account.account_id, 20_000, "pre-1").await;
    let visit_id = stack.open_visit(&account, &stack.keys.hospital).await;
    let bill = request(&visit_id, ABC_TOTAL, Category::Outpatient, PayFrom::HolderAccount, abc_items());
    let pre = pre_settle(&stack, &bill).await;
    stack.credit(&account.account_id, 100, "pre-2").await;
    let error = settle_at_hospital(&stack, confirm(&pre.pre_settlement_id, &bill)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "PRE_SETTLEMENT_STALE"));
    assert_eq!(changed(&error).as_deref(), Some("balance"));
    assert_eq!(stack.balance_and_ledger_sum(&account.account_id).await, (20_100, 20_100));

    // Pre-settled again, then another settlement of the person moves the year's totals.
    let pre = pre_settle(&stack, &bill).await;
    visit_and_settle(&stack, &account, 500, Category::Outpatient, PayFrom::Self_, vec![]).await.unwrap();
    let error = settle_at_hospital(&stack, confirm(&pre.pre_settlement_id, &bill)).await.unwrap_err();
    assert_eq!(changed(&error).as_deref(), Some("ytd"));

    // Five minutes later a pre-settlement has expired.
    let pre = pre_settle(&stack, &bill).await;
    stack.clock.advance(chrono::Duration::minutes(5));
    let error = settle_at_hospital(&stack, confirm(&pre.pre_settlement_id, &bill)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "PRE_SETTLEMENT_EXPIRED"));
    // A fresh one settles.
    let pre = pre_settle(&stack, &bill).await;
    let settled = settle_at_hospital(&stack, confirm(&pre.pre_settlement_id, &bill)).await.expect("settle");
    assert_eq!(settled.account_cents, pre.receipt.unwrap().account_cents);
    stack.shutdown().await;
}

#[tokio::test]
async fn cross_region_care_settles_at_the_filed_or_unfiled_ratio_or_not_at_all() {
    let stack = Stack::start().await;
    // A level-3 hospital in Shanghai; the person is insured in Beijing (110105).
    place_hospital(&stack, "310104", HospitalLevel::Level3);
    let (person, account) = stack.insured_holder(Scheme::Employee, 0).await;
    // The deductible, first (in Shanghai, unfiled: it counts the same).
    let first =
        visit_and_settle(&stack, &account, 180_000, Category::Outpatient, PayFrom::Self_, vec![]).await.unwrap();
    let r = first.receipt.unwrap();
    assert_eq!(
        (r.insured_region_code.as_str(), r.treatment_region_code.as_str(), r.cross_region),
        ("110105", "310104", true)
    );

    // Without a filing: Beijing's policy for a level-3 hospital, at its unfiled ratio (50 %),
    // priced in Shanghai's catalogue (its own cap of 14 yuan for a consultation; 10 nationally).
    let consult = || vec![item("110200001", 1_000, 1_400), item("250101001", 1_000, 2_000)];
    let unfiled =
        visit_and_settle(&stack, &account, 3_400, Category::Outpatient, PayFrom::Self_, consult()).await.unwrap();
    let r = unfiled.receipt.clone().unwrap();
    assert_eq!((r.ratio_bp, r.filing_id.as_str(), unfiled.fund_cents), (5_000, "", 1_700));
    assert_eq!(r.items[0].catalog_version, "310000-2026-12");
    // Chronic-disease care elsewhere is not settled without a filing.
    let error =
        visit_and_settle(&stack, &account, 1_000, Category::ChronicSpecial, PayFrom::Self_, vec![]).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "CROSS_REGION_NOT_FILED"));

    // Filed (temporary care in Shanghai from today): the policy's own level-3 ratio, 65 %.
    let today = stack.clock_today();
    let date = |d: chrono::NaiveDate| CardDate { year: d.year(), month: d.month() as i32, day: d.day() as i32 };
    let filing =
        CrossRegionServiceClient::with_interceptor(stack.insurance_channel(), interceptor(Some(&stack.keys.bank)))
            .file_cross_region_care(with_person_token(
                FileCrossRegionCareRequest {
                    person_id: person.person_id.clone(),
                    destination_region_code: "310115".into(),
                    kind: CrossRegionFilingKind::Temporary as i32,
                    starts_on: Some(date(today)),
                    ends_on: Some(date(today + chrono::Days::new(30))),
                },
                &person.token,
            ))
            .await
            .expect("file")
            .into_inner()
            .filing
            .unwrap();
    let filed =
        visit_and_settle(&stack, &account, 3_400, Category::Outpatient, PayFrom::Self_, consult()).await.unwrap();
    let r = filed.receipt.unwrap();
    assert_eq!((r.ratio_bp, r.filing_id.as_str(), filed.fund_cents), (6_500, filing.filing_id.as_str(), 2_210));
    let chronic =
        visit_and_settle(&stack, &account, 1_000, Category::ChronicSpecial, PayFrom::Self_, vec![]).await.unwrap();
    assert_eq!((chronic.fund_cents, chronic.receipt.unwrap().ratio_bp), (850, 8_500));
    stack.shutdown().await;
}
