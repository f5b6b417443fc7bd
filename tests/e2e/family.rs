//! Family accounts (issue 5): binding with documents and face checks, the rules in their order,
//! the quota and the monthly limit under concurrency, codes, expenses and family aid of a
//! bound member, removal.

use chrono::{Datelike, NaiveDate};
use medins_common::clock::Clock;
use medins_proto::{
    identity::v1::{FacePurpose, FaceSessionStatus, SubmitFaceResultRequest},
    insurance::v1::{
        BindingStatus, Category, FaceVerificationCompletedRequest, GetAnnualExpensesRequest, IssueCodeRequest,
        ListFamilyMembersRequest, ListWhoBoundMeRequest, PayFrom, Relationship, RemoveFamilyMemberRequest, Scheme,
        SetFamilyAidRequest, SettleRequest, VerifyCodeRequest, VoucherStatus, VoucherSuspender,
    },
};
use tonic::Code;

use crate::support::{
    Stack, bad_fields,
    family::{Binder, BindingDocuments, Member, add_request},
    privacy, reason, with_person_token,
};

/// Rows of every table a binding writes to, to prove a refusal wrote nothing.
async fn family_rows(stack: &Stack) -> [i64; 4] {
    [
        stack.count_insurance_rows("family_bindings").await,
        stack.count_insurance_rows("family_binder_months").await,
        stack.count_insurance_rows("vouchers").await,
        stack.count_insurance_rows("voucher_activations").await,
    ]
}

/// A face provider's submission for a session: passing or failing.
async fn submit_face(stack: &Stack, session_id: &str, pass: bool) {
    stack
        .faces(Some(&stack.keys.face_provider))
        .submit_face_result(SubmitFaceResultRequest {
            session_id: session_id.to_owned(),
            liveness_passed: true,
            similarity: if pass { 0.95 } else { 0.2 },
            provider_reference: format!("prov-{}", uuid::Uuid::new_v4()),
        })
        .await
        .expect("submit face result");
}

/// Issues a code for `holder` with `token` (bank), verifies it at `counter`; returns the visit.
async fn visit_for(stack: &Stack, holder: &str, token: &str, counter: &str) -> String {
    let code = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(with_person_token(
            IssueCodeRequest { holder_person_id: holder.to_owned(), include_png: false },
            token,
        ))
        .await
        .expect("issue code")
        .into_inner()
        .code;
    privacy::sensitive_token(&code);
    stack.codes(Some(counter)).verify_code(VerifyCodeRequest { code }).await.expect("verify code").into_inner().visit_id
}

fn settle(visit_id: &str, total_cents: i64, pay_from: PayFrom, binder: &str) -> SettleRequest {
    SettleRequest {
        visit_id: visit_id.to_owned(),
        total_cents,
        category: Category::Pharmacy as i32,
        pay_from: pay_from as i32,
        items_summary: "药品 x2".into(),
        binder_person_id: binder.to_owned(),
        ..Default::default()
    }
}

async fn balance(stack: &Stack, account_id: &str) -> i64 {
    stack.balance_and_ledger_sum(account_id).await.0
}

/// A child under 16 bound at once by a fresh binder.
async fn bound_child(stack: &Stack, binder: &Binder) -> (Member, String) {
    let child = stack.member_aged(8, 0).await;
    let documents = stack.binding_documents(binder, &child, Relationship::Child).await;
    stack.confirm_household(binder, &child, Relationship::Child);
    let added = stack.add_member(binder, &child, Relationship::Child, &documents).await.expect("bind child");
    let binding = added.binding.unwrap();
    assert_eq!(binding.status, BindingStatus::Active as i32);
    (child, binding.binding_id)
}

#[tokio::test]
async fn an_elderly_parent_is_bound_with_a_face_check_then_the_child_pays_with_their_code_and_reads_their_expenses() {
    let stack = Stack::start().await;
    let child = stack.binder(0).await;
    let parent = stack.insured_member(NaiveDate::from_ymd_opt(1956, 3, 10).unwrap()).await;
    stack.credit(&parent.account_id, 20_000, "parent-contribution-1").await;
    let documents = stack.binding_documents(&child, &parent, Relationship::Parent).await;

    let added = stack.add_member(&child, &parent, Relationship::Parent, &documents).await.expect("add parent");
    let binding = added.binding.expect("binding");
    assert_eq!(binding.status, BindingStatus::PendingFace as i32);
    assert_eq!(binding.member_age, 70);
    assert_eq!(binding.relationship, Relationship::Parent as i32);
    assert!(binding.member_masked_name.contains('*'));
    let face = added.face_check.expect("a face check for a member of 16 or over");
    assert_eq!(binding.face_session_id, face.session_id);
    assert!(!face.liveness_challenge.is_empty());
    let session = stack
        .faces(Some(&stack.keys.ops))
        .get_face_verification(medins_proto::identity::v1::GetFaceVerificationRequest {
            session_id: face.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        (session.person_id.as_str(), session.purpose),
        (parent.person_id.as_str(), FacePurpose::FamilyBinding as i32)
    );
    assert_eq!(session.reference, binding.binding_id);
    // Until the face check passes the child cannot show the parent's code.
    let early = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(with_person_token(
            IssueCodeRequest { holder_person_id: parent.person_id.clone(), include_png: false },
            &child.token,
        ))
        .await
        .unwrap_err();
    assert_eq!((early.code(), reason(&early).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));

    // The child's phone captures the parent's face; the provider submits the outcome.
    submit_face(&stack, &face.session_id, true).await;
    let active = stack.wait_for_binding(&binding.binding_id, BindingStatus::Active).await;
    assert!(active.activated_at.is_some());
    assert_eq!(active.relationship_proof, medins_proto::insurance::v1::RelationshipProof::MemberFace as i32);
    let voucher = stack.voucher_of(&parent.person_id).await;
    assert_eq!(voucher.status, VoucherStatus::Active as i32);
    assert_eq!(voucher.channels, vec![medins_proto::insurance::v1::ActivationChannel::Family as i32]);

    // The child shows the parent's code; the pharmacy sees the parent and settles on their account.
    let visit = visit_for(&stack, &parent.person_id, &child.token, &stack.keys.pharmacy).await;
    let settled = stack
        .settlements(Some(&stack.keys.pharmacy))
        .settle(settle(&visit, 12_000, PayFrom::HolderAccount, ""))
        .await
        .expect("settle")
        .into_inner()
        .settlement
        .unwrap();
    assert_eq!(settled.person_id, "", "the counter learns no person id");
    assert_eq!(settled.fund_cents + settled.account_cents + settled.self_cents, 12_000);
    assert_eq!(balance(&stack, &parent.account_id).await, 20_000 - settled.account_cents);

    let year = stack.clock_today().format("%Y").to_string().parse().unwrap();
    let expenses = stack
        .settlements(Some(&stack.keys.bank))
        .get_annual_expenses(with_person_token(
            GetAnnualExpensesRequest { person_id: parent.person_id.clone(), year },
            &child.token,
        ))
        .await
        .expect("the child reads the parent's expenses")
        .into_inner();
    let totals = expenses.totals.unwrap();
    assert_eq!((totals.total_cents, totals.settlements), (12_000, 1));

    // A stranger's token reads nothing.
    let stranger = stack.binder(0).await;
    let refused = stack
        .settlements(Some(&stack.keys.bank))
        .get_annual_expenses(with_person_token(
            GetAnnualExpensesRequest { person_id: parent.person_id.clone(), year },
            &stranger.token,
        ))
        .await
        .unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_child_under_16_this_year_with_a_confirmed_household_is_bound_at_once_and_the_year_of_the_16th_birthday_brings_the_face_check()
 {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let year = stack.clock_today().year();

    // Born on 1 January fifteen years ago: 15 this calendar year, bound at once.
    let fifteen_this_year = stack.insured_member(NaiveDate::from_ymd_opt(year - 15, 1, 1).unwrap()).await;
    let documents = stack.binding_documents(&binder, &fifteen_this_year, Relationship::Child).await;
    stack.confirm_household(&binder, &fifteen_this_year, Relationship::Child);
    let added =
        stack.add_member(&binder, &fifteen_this_year, Relationship::Child, &documents).await.expect("15 this year");
    let binding = added.binding.unwrap();
    assert_eq!((binding.status, binding.member_age), (BindingStatus::Active as i32, 15));
    assert!(added.face_check.is_none());
    assert_eq!(
        stack.count_identity_rows("face_sessions").await,
        2,
        "only the binder's own sessions (REAL_NAME for level 2, and activation): none for the child"
    );

    // Born on 31 December sixteen years ago: 16 this calendar year (on every day but 31 December
    // still 15 years old): the face check is asked for, so that the binding's status never tells
    // on which side of the binding date the birthday falls.
    let sixteen_this_year = stack.insured_member(NaiveDate::from_ymd_opt(year - 16, 12, 31).unwrap()).await;
    let documents = stack.binding_documents(&binder, &sixteen_this_year, Relationship::Child).await;
    let added =
        stack.add_member(&binder, &sixteen_this_year, Relationship::Child, &documents).await.expect("16 this year");
    let binding = added.binding.unwrap();
    assert_eq!((binding.status, binding.member_age), (BindingStatus::PendingFace as i32, 16));
    assert!(added.face_check.is_some());
    stack.shutdown().await;
}

#[tokio::test]
async fn the_quota_of_five_counts_pending_bindings_and_a_removal_frees_a_place() {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let mut bindings = Vec::new();
    for n in 0..5 {
        // Two adults (pending their face check) and three children.
        let member = if n < 2 { stack.member_aged(40, 0).await } else { stack.member_aged(5 + n, 0).await };
        let relationship = if n < 2 { Relationship::Sibling } else { Relationship::Child };
        let documents = stack.binding_documents(&binder, &member, relationship).await;
        bindings.push(stack.add_member(&binder, &member, relationship, &documents).await.expect("within quota"));
    }
    let sixth = stack.member_aged(3, 0).await;
    let documents = stack.binding_documents(&binder, &sixth, Relationship::Child).await;
    let before = family_rows(&stack).await;
    let refused = stack.add_member(&binder, &sixth, Relationship::Child, &documents).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::ResourceExhausted, "FAMILY_QUOTA_EXCEEDED"));
    assert_eq!(family_rows(&stack).await, before, "a refusal writes nothing");

    let pending = bindings[0].binding.as_ref().unwrap().binding_id.clone();
    let removed = stack
        .family(Some(&stack.keys.bank))
        .remove_family_member(with_person_token(RemoveFamilyMemberRequest { binding_id: pending }, &binder.token))
        .await
        .expect("remove")
        .into_inner();
    assert_eq!(removed.binding.unwrap().status, BindingStatus::Removed as i32);
    stack.add_member(&binder, &sixth, Relationship::Child, &documents).await.expect("the freed place");
    let listed = stack
        .family(Some(&stack.keys.bank))
        .list_family_members(with_person_token(
            ListFamilyMembersRequest { owner_person_id: binder.person_id.clone(), include_ended: false },
            &binder.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert_eq!(listed.len(), 5);
    stack.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_adds_for_one_owner_leave_exactly_five_live() {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let mut members = Vec::new();
    for n in 0..20 {
        let member = stack.member_aged(1 + n % 14, 0).await;
        let documents = stack.binding_documents(&binder, &member, Relationship::OtherCloseRelative).await;
        members.push((member, documents));
    }
    let calls = members.iter().map(|(member, documents)| {
        let mut client = stack.family(Some(&stack.keys.bank));
        let request = add_request(&binder, member, Relationship::OtherCloseRelative, documents);
        async move { client.add_family_member(request).await }
    });
    let outcomes = futures::future::join_all(calls).await;
    let accepted = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    for refused in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        assert_eq!((refused.code(), reason(refused).as_str()), (Code::ResourceExhausted, "FAMILY_QUOTA_EXCEEDED"));
    }
    assert_eq!(accepted, 5);
    assert_eq!(stack.count_insurance_rows("family_bindings").await, 5);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_member_is_bound_by_at_most_two_persons_a_month() {
    let stack = Stack::start().await;
    let member = stack.member_aged(10, 0).await;
    let mut binders = Vec::new();
    for _ in 0..3 {
        let binder = stack.binder(0).await;
        let documents = stack.binding_documents(&binder, &member, Relationship::OtherCloseRelative).await;
        binders.push((binder, documents));
    }
    for (binder, documents) in &binders[..2] {
        stack.add_member(binder, &member, Relationship::OtherCloseRelative, documents).await.expect("within the limit");
    }
    let (third, documents) = &binders[2];
    let before = family_rows(&stack).await;
    let refused = stack.add_member(third, &member, Relationship::OtherCloseRelative, documents).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::ResourceExhausted, "MEMBER_MONTHLY_LIMIT"));
    assert_eq!(family_rows(&stack).await, before);

    // Next calendar month (China Standard Time) the third binder is accepted.
    let today = stack.clock_today();
    let next_month = today.checked_add_months(chrono::Months::new(1)).unwrap().with_day(1).unwrap();
    stack.clock.advance(chrono::Duration::days((next_month - today).num_days()));
    let third = Binder { token: stack.fresh_person_token(&stack.keys.bank, &third.person_id).await, ..third.clone() };
    stack.add_member(&third, &member, Relationship::OtherCloseRelative, documents).await.expect("next month");
    stack.shutdown().await;
}

#[tokio::test]
async fn every_refusal_has_its_reason_in_the_contract_order_and_writes_nothing() {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let member = stack.member_aged(40, 0).await;
    let documents = stack.binding_documents(&binder, &member, Relationship::Sibling).await;
    let mut family = stack.family(Some(&stack.keys.bank));
    let refused = |result: Result<tonic::Response<_>, tonic::Status>| {
        let status =
            result.map(|_: tonic::Response<medins_proto::insurance::v1::AddFamilyMemberResponse>| ()).unwrap_err();
        (status.code(), reason(&status), status)
    };
    let before = family_rows(&stack).await;

    // 1. The owner's voucher: a person insured but never activated.
    let unactivated = stack.front_door_person(&stack.keys.bank).await;
    stack.open_account_for(&unactivated.person_id).await;
    let owner_without_voucher = Binder {
        person_id: unactivated.person_id.clone(),
        account_id: String::new(),
        token: unactivated.token.clone(),
        seed: unactivated.seed.clone(),
    };
    let (code, why, _) = refused(
        family.add_family_member(add_request(&owner_without_voucher, &member, Relationship::Sibling, &documents)).await,
    );
    assert_eq!((code, why.as_str()), (Code::FailedPrecondition, "VOUCHER_NOT_ACTIVE"));
    // The member's name must match the ID number: a pair that is no person is no insured
    // member, and the check (a match, not a resolution) creates nobody.
    let mut misnamed = member.clone();
    misnamed.seed.name = "王小明".into();
    let persons_before = stack.count_identity_rows("persons").await;
    let (code, why, _) =
        refused(family.add_family_member(add_request(&binder, &misnamed, Relationship::Sibling, &documents)).await);
    assert_eq!((code, why.as_str()), (Code::FailedPrecondition, "NOT_INSURED"));
    assert_eq!(stack.count_identity_rows("persons").await, persons_before);
    // 2. The member is insured.
    let uninsured = stack.front_door_person(&stack.keys.bank).await;
    let uninsured = Member { person_id: uninsured.person_id, account_id: String::new(), seed: uninsured.seed };
    let (code, why, _) =
        refused(family.add_family_member(add_request(&binder, &uninsured, Relationship::Sibling, &documents)).await);
    assert_eq!((code, why.as_str()), (Code::FailedPrecondition, "NOT_INSURED"));
    // 3. Not self: the binder names themself.
    let (code, why, _) = refused(
        family.add_family_member(add_request(&binder, &binder.as_member(), Relationship::Sibling, &documents)).await,
    );
    assert_eq!((code, why.as_str()), (Code::FailedPrecondition, "CANNOT_BIND_SELF"));
    // 7. The relationship fits the ages: a "parent" younger than the binder, a "child" older.
    let young = stack.member_aged(20, 0).await;
    let old = stack.member_aged(60, 0).await;
    for (who, relationship) in [(&young, Relationship::Parent), (&old, Relationship::Child)] {
        let (code, why, _) =
            refused(family.add_family_member(add_request(&binder, who, relationship, &documents)).await);
        assert_eq!((code, why.as_str()), (Code::FailedPrecondition, "RELATIONSHIP_AGE_MISMATCH"));
    }
    // 8. Documents: missing, unknown, another person's, the wrong kind.
    let other = stack.binder(0).await;
    let others = stack.binding_documents(&other, &member, Relationship::Sibling).await;
    let cases = [
        (
            BindingDocuments { commitment_letter: String::new(), ..documents.clone() },
            "DOCUMENT_MISSING",
            "commitment_letter",
        ),
        (
            BindingDocuments { member_register: uuid::Uuid::now_v7().to_string(), ..documents.clone() },
            "DOCUMENT_INVALID",
            "member_household_register",
        ),
        (
            BindingDocuments { owner_register: others.owner_register.clone(), ..documents.clone() },
            "DOCUMENT_INVALID",
            "owner_household_register",
        ),
        (
            BindingDocuments { commitment_letter: documents.owner_register.clone(), ..documents.clone() },
            "DOCUMENT_INVALID",
            "commitment_letter",
        ),
    ];
    for (bad, expected, which) in cases {
        let (code, why, status) =
            refused(family.add_family_member(add_request(&binder, &member, Relationship::Sibling, &bad)).await);
        assert_eq!((code, why.as_str()), (Code::FailedPrecondition, expected), "{which}");
        let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
        assert_eq!(info.metadata.get("document").map(String::as_str), Some(which));
    }
    // Malformed input is INVALID_ARGUMENT on its field.
    let mut bad = add_request(&binder, &member, Relationship::Unspecified, &documents);
    let status = family.add_family_member(bad).await.unwrap_err();
    assert_eq!((status.code(), bad_fields(&status)), (Code::InvalidArgument, vec!["relationship".to_owned()]));
    bad = add_request(
        &binder,
        &member,
        Relationship::Sibling,
        &BindingDocuments { commitment_letter: "letter".into(), ..documents.clone() },
    );
    let status = family.add_family_member(bad).await.unwrap_err();
    assert_eq!(bad_fields(&status), vec!["commitment_letter_document_id".to_owned()]);
    let after_refusals = family_rows(&stack).await;
    assert_eq!(after_refusals[0..2], before[0..2], "no binding written by any refusal");

    // 4. Already bound (once the member is bound).
    stack.add_member(&binder, &member, Relationship::Sibling, &documents).await.expect("bind");
    let rows = family_rows(&stack).await;
    let (code, why, _) =
        refused(family.add_family_member(add_request(&binder, &member, Relationship::Sibling, &documents)).await);
    assert_eq!((code, why.as_str()), (Code::AlreadyExists, "ALREADY_BOUND"));
    assert_eq!(family_rows(&stack).await, rows);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_failed_face_check_rejects_an_expired_one_expires_both_free_the_place_and_duplicates_change_nothing() {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let failing = stack.member_aged(30, 0).await;
    let expiring = stack.member_aged(50, 0).await;
    let documents = stack.binding_documents(&binder, &failing, Relationship::Sibling).await;
    let first = stack.add_member(&binder, &failing, Relationship::Sibling, &documents).await.unwrap();
    let documents = stack.binding_documents(&binder, &expiring, Relationship::Sibling).await;
    let second = stack.add_member(&binder, &expiring, Relationship::Sibling, &documents).await.unwrap();
    let (first_id, second_id) =
        (first.binding.unwrap().binding_id, second.binding.as_ref().unwrap().binding_id.clone());

    let session = first.face_check.unwrap().session_id;
    for _ in 0..3 {
        submit_face(&stack, &session, false).await;
    }
    let rejected = stack.wait_for_binding(&first_id, BindingStatus::Rejected).await;
    assert!(rejected.ended_at.is_some());

    // Six minutes on, identity-svc's sweeper expires the other session.
    stack.clock.advance(chrono::Duration::minutes(6));
    stack.wait_for_binding(&second_id, BindingStatus::Expired).await;
    let token = stack.fresh_person_token(&stack.keys.bank, &binder.person_id).await;
    let live = stack
        .family(Some(&stack.keys.bank))
        .list_family_members(with_person_token(
            ListFamilyMembersRequest { owner_person_id: binder.person_id.clone(), include_ended: false },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert!(live.is_empty(), "both places are free");

    // A duplicated event (now PASSED, as a faulty sender might) changes nothing; an event for an
    // unknown session is acknowledged.
    let binding_rows = stack.count_insurance_rows("family_bindings").await;
    let mut events = stack.identity_events(Some(&stack.keys.identity_service));
    for (session_id, person_id) in
        [(session.clone(), failing.person_id.clone()), (uuid::Uuid::now_v7().to_string(), failing.person_id.clone())]
    {
        events
            .face_verification_completed(FaceVerificationCompletedRequest {
                event_id: uuid::Uuid::now_v7().to_string(),
                session_id,
                person_id,
                purpose: FacePurpose::FamilyBinding as i32,
                reference: first_id.clone(),
                outcome: FaceSessionStatus::Passed as i32,
                finished_at: Some(medins_common::convert::timestamp(stack.clock.now().naive_utc())),
                sequence: 1,
            })
            .await
            .expect("acknowledged");
    }
    assert_eq!(stack.binding(&first_id).await.status, BindingStatus::Rejected as i32);
    assert_eq!(stack.count_insurance_rows("family_bindings").await, binding_rows);
    stack.shutdown().await;
}

#[tokio::test]
async fn family_aid_is_refused_without_authorisation_paid_by_the_binder_with_it_and_refused_again_when_off() {
    let stack = Stack::start().await;
    // EMPLOYEE: the scheme whose individual accounts the built-in policy lets pay for a child.
    let binder = stack.binder_in(Scheme::Employee, 50_000).await;
    let (child, binding_id) = bound_child(&stack, &binder).await;
    let mut hospital = stack.settlements(Some(&stack.keys.hospital));

    let visit = visit_for(&stack, &child.person_id, &binder.token, &stack.keys.hospital).await;
    let refused = hospital.settle(settle(&visit, 10_000, PayFrom::BinderAccount, &binder.person_id)).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "FAMILY_AID_NOT_AUTHORISED"));

    let set_aid = |enabled: bool| {
        let mut client = stack.family(Some(&stack.keys.bank));
        let request = with_person_token(SetFamilyAidRequest { binding_id: binding_id.clone(), enabled }, &binder.token);
        async move { client.set_family_aid(request).await.expect("set family aid").into_inner().binding.unwrap() }
    };
    assert!(set_aid(true).await.family_aid);
    let settled = hospital
        .settle(settle(&visit, 10_000, PayFrom::BinderAccount, &binder.person_id))
        .await
        .expect("family aid pays")
        .into_inner()
        .settlement
        .unwrap();
    assert!(settled.account_cents > 0);
    assert_eq!(settled.person_id, "", "the counter learns no person id");
    assert_eq!(balance(&stack, &binder.account_id).await, 50_000 - settled.account_cents);
    assert_eq!(balance(&stack, &child.account_id).await, 0);
    let entries = stack.all_entries(&binder.account_id).await;
    let aid: Vec<_> =
        entries.iter().filter(|e| e.kind == medins_proto::insurance::v1::EntryKind::FamilyAid as i32).collect();
    assert_eq!(aid.len(), 1);
    assert_eq!(
        (aid[0].amount_cents, aid[0].reference.as_str()),
        (-settled.account_cents, settled.settlement_id.as_str())
    );

    assert!(!set_aid(false).await.family_aid);
    let visit = visit_for(&stack, &child.person_id, &binder.token, &stack.keys.hospital).await;
    let refused = hospital.settle(settle(&visit, 10_000, PayFrom::BinderAccount, &binder.person_id)).await.unwrap_err();
    assert_eq!(reason(&refused), "FAMILY_AID_NOT_AUTHORISED");
    stack.shutdown().await;
}

#[tokio::test]
async fn family_aid_splits_the_bill_by_the_patients_scheme_and_totals_not_the_paying_binders() {
    let stack = Stack::start().await;
    // An EMPLOYEE binder pays for a RESIDENT child: PHARMACY deductibles 1,000 and 100 yuan.
    let binder = stack.binder_in(Scheme::Employee, 50_000).await;
    let (child, binding_id) = bound_child(&stack, &binder).await;
    let mut family = stack.family(Some(&stack.keys.bank));
    let request = with_person_token(SetFamilyAidRequest { binding_id, enabled: true }, &binder.token);
    family.set_family_aid(request).await.expect("set family aid");
    let visit = visit_for(&stack, &child.person_id, &binder.token, &stack.keys.hospital).await;
    let settled = stack
        .settlements(Some(&stack.keys.hospital))
        .settle(settle(&visit, 30_000, PayFrom::BinderAccount, &binder.person_id))
        .await
        .expect("family aid pays")
        .into_inner()
        .settlement
        .unwrap();
    // RESIDENT.PHARMACY: the first 10,000 is deductible, the fund pays 50 % of the rest.
    assert_eq!((settled.fund_cents, settled.account_cents, settled.self_cents), (10_000, 20_000, 0));
    assert_eq!(balance(&stack, &binder.account_id).await, 30_000);
    let year = stack.clock_today().year();
    assert_eq!(stack.year_to_date(&child.person_id, year, "PHARMACY").await, (30_000, 10_000, 10_000));
    assert_eq!(stack.year_to_date(&binder.person_id, year, "PHARMACY").await, (0, 0, 0));
    stack.shutdown().await;
}

#[tokio::test]
async fn removal_suspends_a_family_only_voucher_and_members_of_16_remove_themselves() {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let (child, binding_id) = bound_child(&stack, &binder).await;
    let mut family = stack.family(Some(&stack.keys.bank));

    let removed = family
        .remove_family_member(with_person_token(
            RemoveFamilyMemberRequest { binding_id: binding_id.clone() },
            &binder.token,
        ))
        .await
        .expect("remove")
        .into_inner();
    assert!(removed.member_voucher_suspended);
    let voucher = stack.voucher_of(&child.person_id).await;
    assert_eq!(
        (voucher.status, voucher.suspended_by),
        (VoucherStatus::Suspended as i32, VoucherSuspender::Family as i32)
    );
    let again = family
        .remove_family_member(with_person_token(RemoveFamilyMemberRequest { binding_id }, &binder.token))
        .await
        .unwrap_err();
    assert_eq!((again.code(), reason(&again).as_str()), (Code::FailedPrecondition, "BINDING_NOT_ACTIVE"));
    // A new binding lifts the FAMILY suspension.
    let documents = stack.binding_documents(&binder, &child, Relationship::Child).await;
    stack.add_member(&binder, &child, Relationship::Child, &documents).await.expect("bind again");
    let voucher = stack.voucher_of(&child.person_id).await;
    assert_eq!(voucher.status, VoucherStatus::Active as i32);

    // An adult member with their own app sees who bound them and removes the binding themself.
    let adult = stack.front_door_person(&stack.keys.bank).await;
    stack.open_account_for(&adult.person_id).await;
    let adult_member =
        Member { person_id: adult.person_id.clone(), account_id: String::new(), seed: adult.seed.clone() };
    let documents = stack.binding_documents(&binder, &adult_member, Relationship::Sibling).await;
    let added = stack.add_member(&binder, &adult_member, Relationship::Sibling, &documents).await.unwrap();
    let adult_binding = added.binding.unwrap().binding_id;
    let mine = family
        .list_who_bound_me(with_person_token(
            ListWhoBoundMeRequest { member_person_id: adult.person_id.clone() },
            &adult.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].owner_person_id, binder.person_id);
    let removed = family
        .remove_family_member(with_person_token(
            RemoveFamilyMemberRequest { binding_id: adult_binding.clone() },
            &adult.token,
        ))
        .await
        .expect("the member removes themself")
        .into_inner();
    assert_eq!(removed.binding.unwrap().status, BindingStatus::Removed as i32);
    // A stranger's token learns nothing about a binding.
    let stranger = stack.binder(0).await;
    let hidden = family
        .get_family_binding(with_person_token(
            medins_proto::insurance::v1::GetFamilyBindingRequest { binding_id: adult_binding },
            &stranger.token,
        ))
        .await
        .unwrap_err();
    assert_eq!((hidden.code(), reason(&hidden).as_str()), (Code::NotFound, "BINDING_NOT_FOUND"));
    stack.shutdown().await;
}

/// Sets `partner`'s face provider in the stack's partners file and reloads identity-svc.
fn configure_face_provider(stack: &Stack, partner: &str, provider: &str) {
    let mut file = medins_common::auth::PartnersFile::load(&stack.partners_file).expect("partners file");
    file.set_face_provider(partner, Some(provider)).expect("configure provider");
    file.save(&stack.partners_file).expect("save partners");
    stack.identity_partners.reload().expect("reload partners");
}

#[tokio::test]
async fn a_binding_face_check_goes_to_the_binders_partners_provider_and_no_other() {
    use medins_common::auth::{PartnerKind, RateLimit};
    let stack = crate::support::Stack::start_with(crate::support::StackOptions {
        extra_partner: Some(("face-provider-2".into(), PartnerKind::FaceProvider, RateLimit::default())),
        ..Default::default()
    })
    .await;
    let second = stack.extra_key.clone().expect("second provider key");
    // Two providers: the bank's own sessions (its customers' voucher activations) need one named.
    configure_face_provider(&stack, "bank", "face-provider");
    let child = stack.binder(0).await;
    let parent = stack.insured_member(NaiveDate::from_ymd_opt(1956, 3, 10).unwrap()).await;
    let documents = stack.binding_documents(&child, &parent, Relationship::Parent).await;
    // The bank now sends its customers to the second provider: insurance-svc starts the
    // member's session on the bank's behalf, so it is bound to that one.
    configure_face_provider(&stack, "bank", "face-provider-2");
    let added = stack.add_member(&child, &parent, Relationship::Parent, &documents).await.expect("add parent");
    let binding = added.binding.expect("binding");
    let face = added.face_check.expect("face check");
    let session = stack
        .faces(Some(&stack.keys.ops))
        .get_face_verification(medins_proto::identity::v1::GetFaceVerificationRequest {
            session_id: face.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.provider_id, "face-provider-2");

    let submit = |key: &str| {
        let mut faces = stack.faces(Some(key));
        let request = SubmitFaceResultRequest {
            session_id: face.session_id.clone(),
            liveness_passed: true,
            similarity: 0.97,
            provider_reference: "prov-family-1".into(),
        };
        async move { faces.submit_face_result(request).await }
    };
    let refused = submit(&stack.keys.face_provider).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "FACE_PROVIDER_MISMATCH"));
    assert_eq!(stack.binding(&binding.binding_id).await.status, BindingStatus::PendingFace as i32);
    submit(&second).await.expect("the bound provider decides");
    stack.wait_for_binding(&binding.binding_id, BindingStatus::Active).await;
    stack.shutdown().await;
}
