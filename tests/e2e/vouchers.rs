//! Vouchers: activation through the real front door (register, SMS real name, link, token, face
//! session), each refusal with its reason, re-activation through another channel, suspension
//! and resumption by the holder and by operators.

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use identity_svc::store::schema::persons;
use medins_common::db::DbError;
use medins_proto::{
    identity::v1::FacePurpose,
    insurance::v1::{
        ActivateVoucherRequest, ActivationChannel, GetVoucherRequest, ResumeVoucherRequest, SuspendAccountRequest,
        SuspendVoucherRequest, VoucherStatus, VoucherSuspender,
    },
};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::{Stack, bad_fields, reason, vouchers::FrontDoorPerson, with_person_token};

fn activate(
    person: &FrontDoorPerson,
    channel: ActivationChannel,
    face_session_id: &str,
) -> Request<ActivateVoucherRequest> {
    with_person_token(
        ActivateVoucherRequest {
            person_id: person.person_id.clone(),
            channel: channel as i32,
            face_session_id: face_session_id.to_owned(),
        },
        &person.token,
    )
}

/// Asserts the refusal's code, reason and (when given) one ErrorInfo metadata entry.
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

/// A front-door person of the bank with an open account.
async fn insured(stack: &Stack) -> FrontDoorPerson {
    let person = stack.front_door_person(&stack.keys.bank).await;
    stack.open_account_for(&person.person_id).await;
    person
}

async fn voucher_rows(stack: &Stack) -> (i64, i64) {
    (stack.count_insurance_rows("vouchers").await, stack.count_insurance_rows("voucher_activations").await)
}

#[tokio::test]
async fn activation_creates_one_voucher_and_another_channel_is_recorded_on_it() {
    let stack = Stack::start().await;
    let person = insured(&stack).await;
    let mut vouchers = stack.vouchers(Some(&stack.keys.bank));

    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    let first =
        vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &face)).await.unwrap().into_inner();
    assert!(first.created);
    let voucher = first.voucher.unwrap();
    assert_eq!(voucher.person_id, person.person_id);
    assert_eq!(voucher.status, VoucherStatus::Active as i32);
    assert_eq!(voucher.channels, vec![ActivationChannel::BankApp as i32]);

    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    let second =
        vouchers.activate_voucher(activate(&person, ActivationChannel::Wechat, &face)).await.unwrap().into_inner();
    assert!(!second.created);
    let again = second.voucher.unwrap();
    assert_eq!(again.voucher_id, voucher.voucher_id, "one person, one voucher");
    assert_eq!(again.channels, vec![ActivationChannel::BankApp as i32, ActivationChannel::Wechat as i32]);
    assert_eq!(voucher_rows(&stack).await, (1, 2));

    let read = vouchers
        .get_voucher(with_person_token(GetVoucherRequest { person_id: person.person_id.clone() }, &person.token))
        .await
        .unwrap()
        .into_inner()
        .voucher
        .unwrap();
    assert_eq!(read, again);
    // Operators read any voucher without a token.
    let by_ops = stack
        .vouchers(Some(&stack.keys.ops))
        .get_voucher(GetVoucherRequest { person_id: person.person_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_ops.voucher.unwrap(), again);
    stack.shutdown().await;
}

#[tokio::test]
async fn activation_is_refused_without_real_name_or_without_an_active_account() {
    let stack = Stack::start().await;
    let mut vouchers = stack.vouchers(Some(&stack.keys.bank));

    // No account at all.
    let uninsured = stack.front_door_person(&stack.keys.bank).await;
    let face = stack.passed_face_session(&stack.keys.bank, &uninsured, FacePurpose::VoucherActivation).await;
    assert_refused(
        vouchers.activate_voucher(activate(&uninsured, ActivationChannel::BankApp, &face)).await,
        Code::FailedPrecondition,
        "NOT_INSURED",
        Some(("account_status", "NONE")),
    );

    // A suspended account.
    let person = stack.front_door_person(&stack.keys.bank).await;
    let account = stack.open_account_for(&person.person_id).await;
    stack
        .accounts(Some(&stack.keys.ops))
        .suspend_account(SuspendAccountRequest { account_id: account.account_id.clone(), reason: "theft".into() })
        .await
        .expect("suspend account");
    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    assert_refused(
        vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &face)).await,
        Code::FailedPrecondition,
        "NOT_INSURED",
        Some(("account_status", "SUSPENDED")),
    );

    // Real name checked at activation, not only when the token was issued: the status is set
    // back to UNVERIFIED at identity-svc (as a revocation would).
    let revoked = insured(&stack).await;
    let face = stack.passed_face_session(&stack.keys.bank, &revoked, FacePurpose::VoucherActivation).await;
    let id = revoked.person_id.clone();
    stack
        .identity_db
        .run(move |conn| {
            diesel::update(persons::table.find(&id))
                .set((
                    persons::real_name_status.eq("UNVERIFIED"),
                    persons::real_name_method.eq(None::<String>),
                    persons::real_name_verified_at.eq(None::<chrono::NaiveDateTime>),
                ))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .expect("unverify");
    assert_refused(
        vouchers.activate_voucher(activate(&revoked, ActivationChannel::BankApp, &face)).await,
        Code::FailedPrecondition,
        "REAL_NAME_REQUIRED",
        None,
    );
    assert_eq!(voucher_rows(&stack).await, (0, 0), "refusals write nothing");
    stack.shutdown().await;
}

#[tokio::test]
async fn failed_stale_foreign_wrong_purpose_and_reused_face_sessions_are_refused() {
    let stack = Stack::start().await;
    let person = insured(&stack).await;
    let other = insured(&stack).await;
    let mut vouchers = stack.vouchers(Some(&stack.keys.bank));

    let failed = stack.face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation, false).await;
    assert_refused(
        vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &failed)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "failed")),
    );

    let foreign = stack.passed_face_session(&stack.keys.bank, &other, FacePurpose::VoucherActivation).await;
    assert_refused(
        vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &foreign)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "foreign")),
    );

    let family = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::FamilyBinding).await;
    assert_refused(
        vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &family)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "wrong_purpose")),
    );

    assert_refused(
        vouchers
            .activate_voucher(activate(&person, ActivationChannel::BankApp, &uuid::Uuid::now_v7().to_string()))
            .await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "not_found")),
    );

    let stale = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    stack.clock.advance(chrono::Duration::minutes(11));
    assert_refused(
        vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &stale)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "stale")),
    );
    assert_eq!(voucher_rows(&stack).await, (0, 0));

    // Used once: a second activation with the same session, even through another channel, is
    // refused.
    let person =
        FrontDoorPerson { token: stack.fresh_person_token(&stack.keys.bank, &person.person_id).await, ..person };
    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &face)).await.expect("first use");
    assert_refused(
        vouchers.activate_voucher(activate(&person, ActivationChannel::Alipay, &face)).await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
        Some(("face_check", "reused")),
    );
    assert_eq!(voucher_rows(&stack).await, (1, 1));
    stack.shutdown().await;
}

#[tokio::test]
async fn bad_requests_and_missing_or_foreign_tokens_are_refused_before_anything_else() {
    let stack = Stack::start().await;
    let person = insured(&stack).await;
    let other = insured(&stack).await;
    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    let mut vouchers = stack.vouchers(Some(&stack.keys.bank));

    let status = vouchers.activate_voucher(activate(&person, ActivationChannel::Family, &face)).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "INVALID_ARGUMENT"));
    assert_eq!(bad_fields(&status), vec!["channel"]);
    let status = vouchers.activate_voucher(activate(&person, ActivationChannel::Unspecified, &face)).await.unwrap_err();
    assert_eq!(bad_fields(&status), vec!["channel"]);
    let status = vouchers.activate_voucher(activate(&person, ActivationChannel::Wechat, "nope")).await.unwrap_err();
    assert_eq!(bad_fields(&status), vec!["face_session_id"]);

    let no_token = ActivateVoucherRequest {
        person_id: person.person_id.clone(),
        channel: ActivationChannel::Wechat as i32,
        face_session_id: face.clone(),
    };
    assert_refused(vouchers.activate_voucher(no_token).await, Code::Unauthenticated, "PERSON_TOKEN_REQUIRED", None);
    let foreign_token = FrontDoorPerson { token: other.token.clone(), ..person.clone() };
    assert_refused(
        vouchers.activate_voucher(activate(&foreign_token, ActivationChannel::Wechat, &face)).await,
        Code::PermissionDenied,
        "PERSON_TOKEN_INVALID",
        None,
    );
    // The bank's token is not the mini program's.
    assert_refused(
        stack
            .vouchers(Some(&stack.keys.mini_program))
            .activate_voucher(activate(&person, ActivationChannel::Wechat, &face))
            .await,
        Code::Unauthenticated,
        "PERSON_TOKEN_INVALID",
        None,
    );
    // Hospitals do not activate vouchers.
    assert_refused(
        stack
            .vouchers(Some(&stack.keys.hospital))
            .activate_voucher(activate(&person, ActivationChannel::Wechat, &face))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
        None,
    );
    assert_refused(
        vouchers
            .get_voucher(with_person_token(GetVoucherRequest { person_id: person.person_id.clone() }, &person.token))
            .await,
        Code::NotFound,
        "VOUCHER_NOT_FOUND",
        None,
    );
    // The face session was not used up by the refusals.
    vouchers.activate_voucher(activate(&person, ActivationChannel::Wechat, &face)).await.expect("activates");
    stack.shutdown().await;
}

#[tokio::test]
async fn the_holder_lifts_their_own_suspension_but_not_an_operators() {
    let stack = Stack::start().await;
    let person = insured(&stack).await;
    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    let mut vouchers = stack.vouchers(Some(&stack.keys.bank));
    vouchers.activate_voucher(activate(&person, ActivationChannel::BankApp, &face)).await.expect("activate");
    let suspend = |reason: &str| SuspendVoucherRequest { person_id: person.person_id.clone(), reason: reason.into() };
    let resume = || ResumeVoucherRequest { person_id: person.person_id.clone() };

    let suspended = vouchers
        .suspend_voucher(with_person_token(suspend("lost phone"), &person.token))
        .await
        .unwrap()
        .into_inner()
        .voucher
        .unwrap();
    assert_eq!(
        (suspended.status, suspended.suspended_by),
        (VoucherStatus::Suspended as i32, VoucherSuspender::Holder as i32)
    );
    // Suspending again changes nothing.
    let again = vouchers.suspend_voucher(with_person_token(suspend("again"), &person.token)).await.unwrap();
    assert_eq!(again.into_inner().voucher.unwrap(), suspended);
    // A suspended voucher is not activated again by a face check.
    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    assert_refused(
        vouchers.activate_voucher(activate(&person, ActivationChannel::Wechat, &face)).await,
        Code::FailedPrecondition,
        "VOUCHER_NOT_ACTIVE",
        None,
    );
    let resumed = vouchers.resume_voucher(with_person_token(resume(), &person.token)).await.unwrap().into_inner();
    assert_eq!(resumed.voucher.unwrap().status, VoucherStatus::Active as i32);

    // Operators suspend; the holder cannot lift that, operators can.
    let mut ops = stack.vouchers(Some(&stack.keys.ops));
    let by_ops = ops.suspend_voucher(suspend("fraud review")).await.unwrap().into_inner().voucher.unwrap();
    assert_eq!(by_ops.suspended_by, VoucherSuspender::Ops as i32);
    assert_refused(
        vouchers.resume_voucher(with_person_token(resume(), &person.token)).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
        None,
    );
    let lifted = ops.resume_voucher(resume()).await.unwrap().into_inner().voucher.unwrap();
    assert_eq!(
        (lifted.status, lifted.suspended_by),
        (VoucherStatus::Active as i32, VoucherSuspender::Unspecified as i32)
    );
    // A reason over 200 characters is refused.
    let status = ops.suspend_voucher(suspend(&"x".repeat(201))).await.unwrap_err();
    assert_eq!(bad_fields(&status), vec!["reason"]);
    stack.shutdown().await;
}
