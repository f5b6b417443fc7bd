//! Face verification: start -> provider submits -> PASSED; the threshold, liveness, the
//! submission limit, expiry (by the clock and by the sweeper), who may submit, person tokens,
//! and watching a session.

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use futures::StreamExt;
use identity_svc::{
    domain::face::{FaceStatus, Submission, Threshold},
    store::{
        face::{FaceStore, ProviderCheck, SubmitResult},
        schema::{face_outbox, face_sessions},
    },
};
use medins_common::{
    auth::{PartnerKind, PartnersFile, RateLimit},
    clock::Clock,
    convert::from_timestamp,
    db::DbError,
};
use medins_proto::identity::v1::{
    FacePurpose, FaceSessionStatus, GetFaceVerificationRequest, StartFaceVerificationRequest,
    StartFaceVerificationResponse, SubmitFaceResultRequest, SubmitFaceResultResponse, WatchFaceVerificationRequest,
    WatchFaceVerificationResponse,
};
use tonic::Code;

use crate::{
    support::{Stack, StackOptions, bad_fields, reason, with_person_token},
    tokens::{issue, register, verify_and_link},
};

/// Starts a session for `person_id` as ops (exempt from person tokens).
async fn start(stack: &Stack, person_id: &str, purpose: FacePurpose) -> StartFaceVerificationResponse {
    stack
        .faces(Some(&stack.keys.ops))
        .start_face_verification(StartFaceVerificationRequest {
            person_id: person_id.to_owned(),
            purpose: purpose as i32,
            reference: "binding-7f3a".into(),
            ..Default::default()
        })
        .await
        .expect("start face verification")
        .into_inner()
}

async fn submit_as(
    stack: &Stack,
    key: &str,
    session_id: &str,
    liveness_passed: bool,
    similarity: f64,
) -> Result<SubmitFaceResultResponse, tonic::Status> {
    stack
        .faces(Some(key))
        .submit_face_result(SubmitFaceResultRequest {
            session_id: session_id.to_owned(),
            liveness_passed,
            similarity,
            provider_reference: format!("prov-{}", uuid::Uuid::new_v4()),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn submit(stack: &Stack, session_id: &str, liveness_passed: bool, similarity: f64) -> SubmitFaceResultResponse {
    submit_as(stack, &stack.keys.face_provider, session_id, liveness_passed, similarity).await.expect("submit")
}

async fn get(stack: &Stack, session_id: &str) -> medins_proto::identity::v1::FaceSession {
    stack
        .faces(Some(&stack.keys.ops))
        .get_face_verification(GetFaceVerificationRequest { session_id: session_id.to_owned() })
        .await
        .expect("get face verification")
        .into_inner()
        .session
        .expect("session")
}

fn session_id(started: &StartFaceVerificationResponse) -> String {
    started.session.as_ref().expect("session").session_id.clone()
}

/// The stored session once the sweeper (every 50 ms in tests) has recorded its expiry, or
/// None if it has not within 5 s.
async fn stored_once_expired(stack: &Stack, session_id: &str) -> Option<(String, Vec<String>)> {
    for _ in 0..200 {
        let now = stored(stack, session_id).await;
        if now.0 == "EXPIRED" {
            return Some(now);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// The stored status and the outbox rows of a session.
async fn stored(stack: &Stack, session_id: &str) -> (String, Vec<String>) {
    let id = session_id.to_owned();
    stack
        .identity_db
        .run(move |conn| {
            let status: String =
                face_sessions::table.find(&id).select(face_sessions::status).first(conn).map_err(DbError::from)?;
            let outcomes: Vec<String> = face_outbox::table
                .filter(face_outbox::session_id.eq(&id))
                .order(face_outbox::sequence.asc())
                .select(face_outbox::outcome)
                .load(conn)
                .map_err(DbError::from)?;
            Ok::<_, DbError>((status, outcomes))
        })
        .await
        .expect("read face session")
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, expected_reason: &str) {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), reason(&status).as_str()), (code, expected_reason), "{}", status.message());
}

#[tokio::test]
async fn a_started_session_passes_when_the_provider_submits_a_passing_result() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let started = start(&stack, &person_id, FacePurpose::VoucherActivation).await;
    let challenge = &started.liveness_challenge;
    assert!((4..=6).contains(&challenge.len()) && challenge.bytes().all(|b| b.is_ascii_digit()), "{challenge}");
    let expires_at = from_timestamp(started.expires_at.as_ref().unwrap()).unwrap();
    assert_eq!(expires_at.naive_utc() - stack.clock.stored_now(), chrono::Duration::minutes(5));
    let session = started.session.as_ref().unwrap();
    assert_eq!(session.status, FaceSessionStatus::Pending as i32);
    assert_eq!((session.submissions, session.submissions_left), (0, 3));
    assert_eq!(session.reference, "binding-7f3a");

    let submitted = submit(&stack, &session.session_id, true, 0.93).await;
    assert!(submitted.passed);
    let after = submitted.session.unwrap();
    assert_eq!(after.status, FaceSessionStatus::Passed as i32);
    assert_eq!((after.submissions, after.submissions_left), (1, 0));
    assert!(after.finished_at.is_some());
    assert!(after.liveness_challenge.is_empty(), "an ended session no longer shows its challenge");

    assert_eq!(get(&stack, &session.session_id).await, after);
    assert_eq!(stored(&stack, &session.session_id).await, ("PASSED".into(), vec!["PASSED".into()]));
    stack.shutdown().await;
}

#[tokio::test]
async fn the_threshold_is_exact_0_7999_fails_and_0_80_passes() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::FamilyBinding).await);

    let below = submit(&stack, &id, true, 0.7999).await;
    assert!(!below.passed);
    let session = below.session.unwrap();
    assert_eq!(session.status, FaceSessionStatus::Pending as i32, "a failed try leaves the session open");
    assert_eq!((session.submissions, session.submissions_left), (1, 2));
    assert_eq!(stored(&stack, &id).await, ("PENDING".into(), vec![]), "no event before the session ends");

    let at = submit(&stack, &id, true, 0.80).await;
    assert!(at.passed);
    assert_eq!(at.session.unwrap().status, FaceSessionStatus::Passed as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn failed_liveness_fails_whatever_the_similarity() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::RealName).await);
    let submitted = submit(&stack, &id, false, 0.99).await;
    assert!(!submitted.passed);
    assert_eq!(submitted.session.unwrap().status, FaceSessionStatus::Pending as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn the_third_failure_fails_the_session_and_a_fourth_submission_is_refused() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::CardApplication).await);
    for (n, similarity) in [(1, 0.1), (2, 0.5)] {
        let session = submit(&stack, &id, true, similarity).await.session.unwrap();
        assert_eq!((session.status, session.submissions), (FaceSessionStatus::Pending as i32, n));
    }
    let third = submit(&stack, &id, true, 0.79).await.session.unwrap();
    assert_eq!((third.status, third.submissions, third.submissions_left), (FaceSessionStatus::Failed as i32, 3, 0));

    let fourth = submit_as(&stack, &stack.keys.face_provider, &id, true, 0.99).await;
    assert_refused(fourth, Code::FailedPrecondition, "FACE_ATTEMPTS_EXHAUSTED");
    assert_eq!(get(&stack, &id).await, third, "the refused submission changed nothing");
    assert_eq!(stored(&stack, &id).await, ("FAILED".into(), vec!["FAILED".into()]));
    stack.shutdown().await;
}

#[tokio::test]
async fn an_ended_session_never_changes() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::VoucherActivation).await);
    let passed = submit(&stack, &id, true, 0.9).await.session.unwrap();
    let again = submit_as(&stack, &stack.keys.face_provider, &id, false, 0.1).await;
    assert_refused(again, Code::FailedPrecondition, "FACE_SESSION_FINISHED");
    assert_eq!(get(&stack, &id).await, passed);
    assert_eq!(stored(&stack, &id).await.1.len(), 1, "one event per session");
    stack.shutdown().await;
}

#[tokio::test]
async fn an_expired_session_is_recorded_by_the_sweeper_and_refuses_submissions() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::VoucherActivation).await);
    let pending = submit(&stack, &id, true, 0.2).await.session.unwrap();
    assert_eq!(pending.status, FaceSessionStatus::Pending as i32);

    stack.clock.advance(chrono::Duration::minutes(6));
    // Nobody asks: the sweeper records the expiry and its event.
    let recorded = stored_once_expired(&stack, &id).await;
    assert_eq!(recorded, Some(("EXPIRED".into(), vec!["EXPIRED".into()])), "the sweeper expired the session");

    let late = submit_as(&stack, &stack.keys.face_provider, &id, true, 0.99).await;
    assert_refused(late, Code::FailedPrecondition, "FACE_SESSION_EXPIRED");
    let session = get(&stack, &id).await;
    assert_eq!(session.status, FaceSessionStatus::Expired as i32);
    assert_eq!(session.finished_at, session.expires_at, "an expired session ended at its expiry");
    assert_eq!(session.submissions, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_pending_session_past_its_expiry_shows_expired_before_the_sweeper_runs() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::RealName).await);
    stack.clock.advance(chrono::Duration::minutes(5));
    // Whatever the sweeper has done by now, callers see EXPIRED at once.
    let session = get(&stack, &id).await;
    assert_eq!((session.status, session.submissions_left), (FaceSessionStatus::Expired as i32, 0));
    assert_refused(
        submit_as(&stack, &stack.keys.face_provider, &id, true, 0.99).await,
        Code::FailedPrecondition,
        "FACE_SESSION_EXPIRED",
    );
    assert_eq!(stored(&stack, &id).await, ("EXPIRED".into(), vec![]), "REAL_NAME sessions write no event");
    stack.shutdown().await;
}

#[tokio::test]
async fn only_face_providers_submit_results_even_with_the_scope() {
    let stack = Stack::start().await;
    // A bank that somehow holds face.submit.
    let mut file = PartnersFile::load(&stack.partners_file).expect("partners file");
    let scopes = [medins_common::auth::scopes::FACE_SUBMIT.to_owned()].into_iter().collect();
    let bank_key = file
        .add_partner(
            "bank-with-face",
            "x",
            PartnerKind::Bank,
            Some(scopes),
            RateLimit::default(),
            "2026-11-23T00:00:00Z",
        )
        .expect("add partner")
        .expose()
        .to_owned();
    file.save(&stack.partners_file).expect("save partners");
    stack.identity_partners.reload().expect("reload partners");

    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::VoucherActivation).await);
    assert_refused(
        submit_as(&stack, &bank_key, &id, true, 0.99).await,
        Code::PermissionDenied,
        "PARTNER_KIND_NOT_ALLOWED",
    );
    assert_refused(
        submit_as(&stack, &stack.keys.bank, &id, true, 0.99).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
    );
    assert_refused(
        submit_as(&stack, &stack.keys.ops, &id, true, 0.99).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
    );
    let session = get(&stack, &id).await;
    assert_eq!((session.status, session.submissions), (FaceSessionStatus::Pending as i32, 0));
    stack.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_invalid_argument() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::VoucherActivation).await);
    for similarity in [1.5, -0.1, f64::NAN] {
        let status = submit_as(&stack, &stack.keys.face_provider, &id, true, similarity).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{similarity}");
        assert_eq!(bad_fields(&status), vec!["similarity"]);
    }
    assert_eq!(get(&stack, &id).await.submissions, 0, "refused submissions are not counted");

    let mut faces = stack.faces(Some(&stack.keys.ops));
    let unspecified = faces
        .start_face_verification(StartFaceVerificationRequest {
            person_id: person_id.clone(),
            purpose: FacePurpose::Unspecified as i32,
            reference: String::new(),
            ..Default::default()
        })
        .await;
    assert_refused(unspecified, Code::InvalidArgument, "INVALID_ENUM_VALUE");
    let long_reference = faces
        .start_face_verification(StartFaceVerificationRequest {
            person_id: person_id.clone(),
            purpose: FacePurpose::RealName as i32,
            reference: "r".repeat(129),
            ..Default::default()
        })
        .await;
    assert_refused(long_reference, Code::InvalidArgument, "INVALID_ARGUMENT");
    let nobody = faces
        .start_face_verification(StartFaceVerificationRequest {
            person_id: uuid::Uuid::now_v7().to_string(),
            purpose: FacePurpose::RealName as i32,
            reference: String::new(),
            ..Default::default()
        })
        .await;
    assert_refused(nobody, Code::NotFound, "PERSON_NOT_FOUND");
    let unknown =
        faces.get_face_verification(GetFaceVerificationRequest { session_id: uuid::Uuid::now_v7().to_string() }).await;
    assert_refused(unknown, Code::NotFound, "FACE_SESSION_NOT_FOUND");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_front_door_app_acts_for_a_person_only_with_their_token() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let request = |purpose: FacePurpose| StartFaceVerificationRequest {
        person_id: person_id.clone(),
        purpose: purpose as i32,
        reference: String::new(),
        ..Default::default()
    };
    let mut faces = stack.faces(Some(&stack.keys.bank));
    assert_refused(
        faces.start_face_verification(request(FacePurpose::VoucherActivation)).await,
        Code::Unauthenticated,
        "PERSON_TOKEN_REQUIRED",
    );

    verify_and_link(&stack, &person_id, "bank").await;
    let token = issue(&stack, &stack.keys.bank, &person_id).await.token;
    let started = faces
        .start_face_verification(with_person_token(request(FacePurpose::VoucherActivation), &token))
        .await
        .expect("start with the person's token")
        .into_inner();
    let id = session_id(&started);
    assert_refused(
        faces.get_face_verification(GetFaceVerificationRequest { session_id: id.clone() }).await,
        Code::Unauthenticated,
        "PERSON_TOKEN_REQUIRED",
    );
    let seen = faces
        .get_face_verification(with_person_token(GetFaceVerificationRequest { session_id: id.clone() }, &token))
        .await
        .expect("get with the person's token")
        .into_inner();
    assert_eq!(seen.session, started.session);
    stack.shutdown().await;
}

/// The next message of a watch, within 5 s.
async fn next(
    stream: &mut tonic::Streaming<WatchFaceVerificationResponse>,
) -> Option<Result<WatchFaceVerificationResponse, tonic::Status>> {
    tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("a message within 5 s")
}

#[tokio::test]
async fn a_watch_sees_pending_then_passed_and_ends() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::VoucherActivation).await);
    let mut stream = stack
        .faces(Some(&stack.keys.ops))
        .watch_face_verification(WatchFaceVerificationRequest { session_id: id.clone() })
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut stream).await.expect("first message").expect("ok");
    assert_eq!(first.session.unwrap().status, FaceSessionStatus::Pending as i32);

    submit(&stack, &id, true, 0.95).await;
    let second = next(&mut stream).await.expect("second message").expect("ok");
    assert_eq!(second.session.unwrap().status, FaceSessionStatus::Passed as i32);
    assert!(next(&mut stream).await.is_none(), "the stream ends once the session has ended");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_watch_sees_changes_committed_elsewhere_and_expiry() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let id = session_id(&start(&stack, &person_id, FacePurpose::RealName).await);
    let mut stream = stack
        .faces(Some(&stack.keys.ops))
        .watch_face_verification(WatchFaceVerificationRequest { session_id: id.clone() })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next(&mut stream).await.unwrap().unwrap().session.unwrap().submissions, 0);

    // A submission committed by "another replica": straight through the store, so this
    // process's change notification never fires and only the database poll can see it.
    let other_replica = FaceStore::new(stack.identity_db.clone());
    let check = ProviderCheck {
        provider_id: "face-provider".into(),
        provider_reference: "elsewhere-1".into(),
        submission: Submission::new(true, 0.1).unwrap(),
    };
    let result = other_replica
        .submit(uuid::Uuid::parse_str(&id).unwrap(), check, Threshold::default(), stack.clock.stored_now())
        .await
        .expect("submit elsewhere");
    assert!(matches!(result, SubmitResult::Recorded { passed: false, .. }));
    let seen = next(&mut stream).await.unwrap().unwrap().session.unwrap();
    assert_eq!((seen.status, seen.submissions), (FaceSessionStatus::Pending as i32, 1));

    stack.clock.advance(chrono::Duration::minutes(6));
    let last = next(&mut stream).await.unwrap().unwrap().session.unwrap();
    assert_eq!(last.status, FaceSessionStatus::Expired as i32);
    assert!(next(&mut stream).await.is_none(), "the stream ends once the session has expired");
    // The stream reports the expiry by the clock; the sweeper records it.
    let recorded = stored_once_expired(&stack, &id).await.map(|(status, _)| status);
    assert_eq!(recorded.as_deref().and_then(FaceStatus::parse), Some(FaceStatus::Expired));
    stack.shutdown().await;
}

/// The audit rows of SubmitFaceResult: (partner, person, outcome).
async fn submit_audit_rows(stack: &Stack) -> Vec<(String, String, String)> {
    use medins_common::audit::schema::audit_log;
    stack
        .identity_db
        .run(|conn| {
            audit_log::table
                .filter(audit_log::method.eq("/medins.identity.v1.FaceVerificationService/SubmitFaceResult"))
                .order(audit_log::seq.asc())
                .select((audit_log::partner_id, audit_log::person_id, audit_log::outcome))
                .load::<(String, String, String)>(conn)
                .map_err(DbError::from)
        })
        .await
        .expect("audit rows")
}

fn start_request(person_id: &str, provider_id: &str) -> StartFaceVerificationRequest {
    StartFaceVerificationRequest {
        person_id: person_id.to_owned(),
        purpose: FacePurpose::VoucherActivation as i32,
        provider_id: provider_id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_second_provider_cannot_decide_a_session_bound_to_the_first() {
    let stack = Stack::start_with(StackOptions {
        extra_partner: Some(("face-provider-2".into(), PartnerKind::FaceProvider, RateLimit::default())),
        ..Default::default()
    })
    .await;
    let second = stack.extra_key.clone().expect("second provider key");
    let person_id = register(&stack).await;
    let mut faces = stack.faces(Some(&stack.keys.ops));

    // Two providers and none configured for ops: the start must name one, and a real one.
    assert_refused(
        faces.start_face_verification(start_request(&person_id, "")).await,
        Code::FailedPrecondition,
        "FACE_PROVIDER_REQUIRED",
    );
    assert_refused(
        faces.start_face_verification(start_request(&person_id, "bank")).await,
        Code::InvalidArgument,
        "FACE_PROVIDER_UNKNOWN",
    );
    let started = faces.start_face_verification(start_request(&person_id, "face-provider")).await.unwrap();
    let session = started.into_inner().session.unwrap();
    assert_eq!(session.provider_id, "face-provider");
    let before = stack.count_identity_rows("face_outbox").await;

    assert_refused(
        submit_as(&stack, &second, &session.session_id, true, 0.99).await,
        Code::PermissionDenied,
        "FACE_PROVIDER_MISMATCH",
    );
    let now = get(&stack, &session.session_id).await;
    assert_eq!((now.status, now.submissions), (FaceSessionStatus::Pending as i32, 0), "nothing was recorded");
    assert_eq!(stored(&stack, &session.session_id).await, ("PENDING".to_owned(), Vec::new()));
    assert_eq!(stack.count_identity_rows("face_outbox").await, before);
    assert_eq!(
        submit_audit_rows(&stack).await,
        [("face-provider-2".to_owned(), person_id.clone(), "PERMISSION_DENIED".to_owned())],
        "the refusal is in the person's audit trail"
    );

    // The bound provider decides it.
    let passed = submit(&stack, &session.session_id, true, 0.95).await;
    assert!(passed.passed);
    assert_eq!(passed.session.unwrap().status, FaceSessionStatus::Passed as i32);
    assert_eq!(submit_audit_rows(&stack).await.last().unwrap().2, "OK");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_partners_configured_provider_decides_the_sessions_it_starts() {
    let stack = Stack::start_with(StackOptions {
        extra_partner: Some(("face-provider-2".into(), PartnerKind::FaceProvider, RateLimit::default())),
        ..Default::default()
    })
    .await;
    let second = stack.extra_key.clone().expect("second provider key");
    let mut file = PartnersFile::load(&stack.partners_file).expect("partners file");
    file.set_face_provider("ops", Some("face-provider-2")).expect("configure provider");
    file.save(&stack.partners_file).expect("save partners");
    stack.identity_partners.reload().expect("reload partners");

    let person_id = register(&stack).await;
    let session = stack
        .faces(Some(&stack.keys.ops))
        .start_face_verification(start_request(&person_id, ""))
        .await
        .expect("start with the configured provider")
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.provider_id, "face-provider-2");
    assert_refused(
        submit_as(&stack, &stack.keys.face_provider, &session.session_id, true, 0.99).await,
        Code::PermissionDenied,
        "FACE_PROVIDER_MISMATCH",
    );
    assert_eq!(get(&stack, &session.session_id).await.submissions, 0);
    let passed = submit_as(&stack, &second, &session.session_id, true, 0.99).await.expect("bound provider");
    assert!(passed.passed);
    stack.shutdown().await;
}
