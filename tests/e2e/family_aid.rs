//! Family aid (issue 14, items 5 and 6): whose individual account may pay for whom is the
//! settlement policy's `[FAMILY_AID]` table, asked by SetFamilyAid and by Settle alike; and
//! family-aid settlements that cross (A pays B's bill while B pays A's) all settle, with no
//! deadlock and no error, on both backends.

use chrono::{Datelike, NaiveDate};
use medins_proto::{
    identity::v1::SubmitFaceResultRequest,
    insurance::v1::{
        BindingStatus, Category, EntryKind, FamilyBinding, IssueCodeRequest, PayFrom, Relationship, Scheme,
        SetFamilyAidRequest, SettleRequest, VerifyCodeRequest,
    },
};
use tonic::{Code, Status};

use crate::support::{
    Stack,
    family::{Binder, Member},
    privacy, reason, with_person_token,
};

/// Binds `member`, 16 or over, to `binder` as `relationship` through the member's face check
/// (a passing submission by the face provider); returns the ACTIVE binding's id.
pub(crate) async fn bind_adult(stack: &Stack, binder: &Binder, member: &Member, relationship: Relationship) -> String {
    let documents = stack.binding_documents(binder, member, relationship).await;
    let added = stack.add_member(binder, member, relationship, &documents).await.expect("add member");
    let binding_id = added.binding.expect("binding").binding_id;
    let face = added.face_check.expect("a face check for a member of 16 or over");
    stack
        .faces(Some(&stack.keys.face_provider))
        .submit_face_result(SubmitFaceResultRequest {
            session_id: face.session_id,
            liveness_passed: true,
            similarity: 0.95,
            provider_reference: format!("prov-{}", uuid::Uuid::new_v4()),
        })
        .await
        .expect("submit face result");
    stack.wait_for_binding(&binding_id, BindingStatus::Active).await;
    binding_id
}

/// SetFamilyAid by the binder, through the bank.
async fn set_aid(stack: &Stack, binder: &Binder, binding_id: &str, enabled: bool) -> Result<FamilyBinding, Status> {
    stack
        .family(Some(&stack.keys.bank))
        .set_family_aid(with_person_token(
            SetFamilyAidRequest { binding_id: binding_id.to_owned(), enabled },
            &binder.token,
        ))
        .await
        .map(|response| response.into_inner().binding.expect("binding"))
}

/// A visit of `holder`, who shows their own code (bank token) at the hospital.
async fn own_visit(stack: &Stack, holder: &Binder) -> String {
    let code = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(with_person_token(
            IssueCodeRequest { holder_person_id: holder.person_id.clone(), include_png: false },
            &holder.token,
        ))
        .await
        .expect("issue code")
        .into_inner()
        .code;
    privacy::sensitive_token(&code);
    stack
        .codes(Some(&stack.keys.hospital))
        .verify_code(VerifyCodeRequest { code })
        .await
        .expect("verify code")
        .into_inner()
        .visit_id
}

/// A pharmacy bill of `total_cents` paid from `binder`'s individual account.
fn aid_request(visit_id: &str, total_cents: i64, binder_person_id: &str) -> SettleRequest {
    SettleRequest {
        visit_id: visit_id.to_owned(),
        total_cents,
        category: Category::Pharmacy as i32,
        pay_from: PayFrom::BinderAccount as i32,
        items_summary: "药品 x1".into(),
        binder_person_id: binder_person_id.to_owned(),
        ..Default::default()
    }
}

fn code_and_reason(status: &Status) -> (Code, String) {
    (status.code(), reason(status))
}

fn not_eligible() -> (Code, String) {
    (Code::FailedPrecondition, "FAMILY_AID_NOT_ELIGIBLE".to_owned())
}

async fn family_aid_entries(stack: &Stack, account_id: &str) -> usize {
    stack.all_entries(account_id).await.iter().filter(|e| e.kind == EntryKind::FamilyAid as i32).count()
}

#[tokio::test]
async fn only_employee_accounts_pay_and_only_for_spouse_parents_and_children_by_default() {
    let stack = Stack::start().await;
    let parent = || stack.insured_member(NaiveDate::from_ymd_opt(1956, 3, 10).unwrap());

    // A RESIDENT binder's account pays for no one: switching aid on is refused, nothing changes.
    let resident = stack.binder_in(Scheme::Resident, 50_000).await;
    let resident_parent = parent().await;
    let binding = bind_adult(&stack, &resident, &resident_parent, Relationship::Parent).await;
    let refused = set_aid(&stack, &resident, &binding, true).await.unwrap_err();
    assert_eq!(code_and_reason(&refused), not_eligible());
    assert!(refused.message().contains("RESIDENT") && refused.message().contains("no one"), "{}", refused.message());
    assert!(!stack.binding(&binding).await.family_aid, "aid stays off");
    // Switching off is always allowed.
    assert!(!set_aid(&stack, &resident, &binding, false).await.expect("switch off").family_aid);
    // With aid off, paying from the binder's account is refused as before, and costs nothing.
    let visit = own_visit_of_member(&stack, &resident, &resident_parent).await;
    let mut pharmacy = stack.settlements(Some(&stack.keys.hospital));
    let refused = pharmacy.settle(aid_request(&visit, 1_000, &resident.person_id)).await.unwrap_err();
    assert_eq!(reason(&refused), "FAMILY_AID_NOT_AUTHORISED");
    assert_eq!(stack.balance_and_ledger_sum(&resident.account_id).await, (50_000, 50_000));

    // An EMPLOYEE binder's account pays for a parent, not for a sibling.
    let employee = stack.binder_in(Scheme::Employee, 50_000).await;
    let sibling = stack.insured_member(NaiveDate::from_ymd_opt(1988, 7, 1).unwrap()).await;
    let sibling_binding = bind_adult(&stack, &employee, &sibling, Relationship::Sibling).await;
    let refused = set_aid(&stack, &employee, &sibling_binding, true).await.unwrap_err();
    assert_eq!(code_and_reason(&refused), not_eligible());
    assert!(refused.message().contains("SIBLING"), "{}", refused.message());
    assert!(!stack.binding(&sibling_binding).await.family_aid);

    let employee_parent = parent().await;
    let parent_binding = bind_adult(&stack, &employee, &employee_parent, Relationship::Parent).await;
    assert!(set_aid(&stack, &employee, &parent_binding, true).await.expect("EMPLOYEE pays for a parent").family_aid);
    let visit = own_visit_of_member(&stack, &employee, &employee_parent).await;
    let settled = pharmacy
        .settle(aid_request(&visit, 1_000, &employee.person_id))
        .await
        .expect("family aid pays")
        .into_inner()
        .settlement
        .expect("settlement");
    assert_eq!(settled.account_cents, 1_000, "within the parent's deductible the account pays it all");
    assert_eq!(stack.balance_and_ledger_sum(&employee.account_id).await, (49_000, 49_000));
    assert_eq!(family_aid_entries(&stack, &employee.account_id).await, 1);
    stack.shutdown().await;
}

/// A visit of `member`, whose code `binder` shows (an ACTIVE binder may).
async fn own_visit_of_member(stack: &Stack, binder: &Binder, member: &Member) -> String {
    let code = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(with_person_token(
            IssueCodeRequest { holder_person_id: member.person_id.clone(), include_png: false },
            &binder.token,
        ))
        .await
        .expect("the binder issues the member's code")
        .into_inner()
        .code;
    privacy::sensitive_token(&code);
    stack
        .codes(Some(&stack.keys.hospital))
        .verify_code(VerifyCodeRequest { code })
        .await
        .expect("verify code")
        .into_inner()
        .visit_id
}

#[tokio::test]
async fn a_stricter_policy_stops_aid_switched_on_under_the_old_one_at_settlement() {
    let stack = Stack::start().await;
    let employee = stack.binder_in(Scheme::Employee, 50_000).await;
    let spouse = stack.insured_member(NaiveDate::from_ymd_opt(1986, 1, 20).unwrap()).await;
    let binding = bind_adult(&stack, &employee, &spouse, Relationship::Spouse).await;
    assert!(
        set_aid(&stack, &employee, &binding, true).await.expect("the built-in policy pays for a spouse").family_aid
    );

    // A replica on the same database whose policy pays for parents only.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let stricter = insurance_svc::domain::settlement::DEFAULT_POLICY_TOML
        .replace(r#"EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]"#, r#"EMPLOYEE = ["PARENT"]"#);
    assert_ne!(stricter, insurance_svc::domain::settlement::DEFAULT_POLICY_TOML);
    std::fs::write(&policy, stricter).unwrap();
    let replica = stack.start_insurance_replica_with(|config| config.policy_file = Some(policy.clone())).await;

    let visit = own_visit_of_member(&stack, &employee, &spouse).await;
    let mut strict = stack.settlements_at(replica.addr, Some(&stack.keys.hospital));
    let refused = strict.settle(aid_request(&visit, 1_000, &employee.person_id)).await.unwrap_err();
    assert_eq!(code_and_reason(&refused), not_eligible());
    assert_eq!(stack.balance_and_ledger_sum(&employee.account_id).await, (50_000, 50_000));
    assert_eq!(family_aid_entries(&stack, &employee.account_id).await, 0);
    // Nor can it be switched on again there; switching off still works.
    let mut strict_family = stack.family_at(replica.addr, Some(&stack.keys.bank));
    let request =
        |enabled| with_person_token(SetFamilyAidRequest { binding_id: binding.clone(), enabled }, &employee.token);
    assert_eq!(code_and_reason(&strict_family.set_family_aid(request(true)).await.unwrap_err()), not_eligible());
    strict_family.set_family_aid(request(false)).await.expect("switching off is always allowed");
    assert!(!stack.binding(&binding).await.family_aid);
    replica.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_crossed_family_aid_pairs_settle_concurrently_without_one_error() {
    let stack = Stack::start().await;
    // Two EMPLOYEE spouses, each bound by the other with family aid on.
    let a = stack.binder_in(Scheme::Employee, 50_000).await;
    let b = stack.binder_in(Scheme::Employee, 50_000).await;
    let a_binds_b = bind_adult(&stack, &a, &b.as_member(), Relationship::Spouse).await;
    let b_binds_a = bind_adult(&stack, &b, &a.as_member(), Relationship::Spouse).await;
    set_aid(&stack, &a, &a_binds_b, true).await.expect("A pays for B");
    set_aid(&stack, &b, &b_binds_a, true).await.expect("B pays for A");

    const PAIRS: usize = 100;
    const BILL: i64 = 100;
    let mut calls = Vec::with_capacity(2 * PAIRS);
    for _ in 0..PAIRS {
        // B pays A's bill while A pays B's: on PostgreSQL each locks the other's account.
        calls.push(aid_request(&own_visit(&stack, &a).await, BILL, &b.person_id));
        calls.push(aid_request(&own_visit(&stack, &b).await, BILL, &a.person_id));
    }
    let settled = futures::future::join_all(calls.into_iter().map(|request| {
        let mut client = stack.settlements(Some(&stack.keys.hospital));
        async move { client.settle(request).await.map(|r| r.into_inner().settlement.expect("settlement")) }
    }))
    .await;
    let errors: Vec<(Code, String)> = settled.iter().filter_map(|r| r.as_ref().err()).map(code_and_reason).collect();
    assert!(errors.is_empty(), "{} of {} crossed settlements failed: {errors:?}", errors.len(), 2 * PAIRS);

    // Every bill lies within the holder's deductible: the paying account pays it whole.
    for settlement in settled.iter().map(|r| r.as_ref().unwrap()) {
        assert_eq!((settlement.fund_cents, settlement.account_cents, settlement.self_cents), (0, BILL, 0));
    }
    let paid = PAIRS as i64 * BILL;
    for (payer, patient) in [(&a, &b), (&b, &a)] {
        assert_eq!(stack.balance_and_ledger_sum(&payer.account_id).await, (50_000 - paid, 50_000 - paid));
        assert_eq!(family_aid_entries(&stack, &payer.account_id).await, PAIRS);
        let year = stack.clock_today().year();
        assert_eq!(stack.year_to_date(&patient.person_id, year, "PHARMACY").await, (paid, 0, paid));
    }
    stack.shutdown().await;
}
