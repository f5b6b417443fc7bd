//! The face-outcome outbox: outcomes wait while insurance-svc is away and arrive exactly once
//! when it comes back; a crash of identity-svc mid-delivery loses nothing; a redelivered event
//! changes nothing; workers never hold one event at once; events of a session go in order.

use std::{collections::BTreeSet, time::Duration};

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use identity_svc::store::{outbox::OutboxStore, schema::face_outbox};
use insurance_svc::store::schema::face_outcomes;
use medins_common::{clock::Clock, convert::timestamp, db::DbError};
use medins_proto::{
    identity::v1::{FacePurpose, FaceSessionStatus, StartFaceVerificationRequest, SubmitFaceResultRequest},
    insurance::v1::FaceVerificationCompletedRequest,
};
use tonic::Code;

use crate::{
    support::{Stack, StackOptions, reason},
    tokens::register,
};

/// Finishes `count` VOUCHER_ACTIVATION sessions of one person (PASSED); returns their ids.
async fn finish_sessions(stack: &Stack, count: usize) -> BTreeSet<String> {
    let person_id = register(stack).await;
    let mut faces = stack.faces(Some(&stack.keys.ops));
    let mut provider = stack.faces(Some(&stack.keys.face_provider));
    let mut ids = BTreeSet::new();
    for n in 0..count {
        let started = faces
            .start_face_verification(StartFaceVerificationRequest {
                person_id: person_id.clone(),
                purpose: FacePurpose::VoucherActivation as i32,
                reference: format!("voucher-{n}"),
                ..Default::default()
            })
            .await
            .expect("start")
            .into_inner();
        let id = started.session.unwrap().session_id;
        let submitted = provider
            .submit_face_result(SubmitFaceResultRequest {
                session_id: id.clone(),
                liveness_passed: true,
                similarity: 0.9,
                provider_reference: format!("p-{n}"),
            })
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(submitted.session.unwrap().status, FaceSessionStatus::Passed as i32);
        ids.insert(id);
    }
    ids
}

/// Session ids recorded at insurance-svc.
pub(crate) async fn received(stack: &Stack) -> Vec<String> {
    stack
        .insurance_db
        .run(|conn| face_outcomes::table.select(face_outcomes::session_id).load::<String>(conn).map_err(DbError::from))
        .await
        .expect("read face_outcomes")
}

/// Outbox rows: (session id, delivered, leased).
async fn outbox_rows(stack: &Stack) -> Vec<(String, bool, bool)> {
    stack
        .identity_db
        .run(|conn| {
            face_outbox::table
                .select((
                    face_outbox::session_id,
                    face_outbox::delivered_at,
                    face_outbox::lease_owner,
                    face_outbox::attempts,
                ))
                .load::<(String, Option<chrono::NaiveDateTime>, Option<String>, i32)>(conn)
                .map_err(DbError::from)
        })
        .await
        .expect("read face_outbox")
        .into_iter()
        .map(|(session, delivered, owner, _)| (session, delivered.is_some(), owner.is_some()))
        .collect()
}

/// Waits (bounded) until `count` outcomes are recorded at insurance-svc.
async fn wait_for_received(stack: &Stack, count: usize, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = received(stack).await;
        if now.len() >= count || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn outcomes_wait_for_a_late_insurance_svc_and_arrive_exactly_once() {
    let mut stack = Stack::start_with(StackOptions { start_insurance: false, ..StackOptions::default() }).await;
    let ids = finish_sessions(&stack, 50).await;
    assert_eq!(stack.count_identity_rows("face_outbox").await, 50, "one event per ended session");

    // The worker tries (and fails: nobody answers) before insurance-svc starts.
    let mut tried = false;
    for _ in 0..200 {
        let attempts: i32 = stack
            .identity_db
            .run(|conn| {
                face_outbox::table
                    .select(diesel::dsl::max(face_outbox::attempts))
                    .first::<Option<i32>>(conn)
                    .map(Option::unwrap_or_default)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        if attempts >= 1 {
            tried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(tried, "deliveries were attempted while insurance-svc was away");
    assert!(received(&stack).await.is_empty());
    assert!(outbox_rows(&stack).await.iter().all(|(_, delivered, _)| !delivered));

    // Requests that timed out against the silent address may still reach insurance-svc from its
    // accept queue once it starts: delivery is at least once, and the receiver keeps one row per
    // session whatever arrives twice.
    stack.start_insurance().await;
    let got = wait_for_received(&stack, 50, Duration::from_secs(30)).await;
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), 50, "all 50 arrived");
    assert_eq!(distinct, ids, "each session once, none lost");
    let mut delivered = false;
    for _ in 0..200 {
        if outbox_rows(&stack).await.iter().all(|(_, delivered, leased)| *delivered && !leased) {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(delivered, "every event is marked delivered");
    stack.shutdown().await;
}

#[tokio::test]
async fn killing_identity_svc_mid_delivery_loses_nothing() {
    let mut stack = Stack::start_with(StackOptions {
        start_insurance: false,
        // Calls hang for 1 s against the silent address; leases last 4 s.
        outbox_timeout: Duration::from_secs(1),
        ..StackOptions::default()
    })
    .await;
    let ids = finish_sessions(&stack, 50).await;

    // Wait until the worker holds events in flight, then kill identity-svc right there.
    let mut in_flight = 0;
    for _ in 0..400 {
        in_flight = outbox_rows(&stack).await.iter().filter(|(_, _, leased)| *leased).count();
        if in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(in_flight > 0, "events were in flight");
    stack.kill_identity().await;
    assert!(outbox_rows(&stack).await.iter().all(|(_, delivered, _)| !delivered));

    // insurance-svc comes up, and a new identity-svc on the same database takes over once the
    // dead worker's leases run out.
    stack.start_insurance().await;
    stack.restart_identity().await;
    let got = wait_for_received(&stack, 50, Duration::from_secs(30)).await;
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!((got.len(), distinct), (50, ids.clone()), "every outcome arrived, once");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_event_is_acknowledged_and_changes_nothing() {
    let stack = Stack::start().await;
    let session_id = uuid::Uuid::now_v7().to_string();
    let event = FaceVerificationCompletedRequest {
        event_id: uuid::Uuid::now_v7().to_string(),
        session_id: session_id.clone(),
        person_id: uuid::Uuid::now_v7().to_string(),
        purpose: FacePurpose::FamilyBinding as i32,
        reference: "binding-1".into(),
        outcome: FaceSessionStatus::Passed as i32,
        finished_at: Some(timestamp(stack.clock.stored_now())),
        sequence: 1,
    };
    let mut events = stack.identity_events(Some(&stack.keys.identity_service));
    let first = events.face_verification_completed(event.clone()).await.expect("first").into_inner();
    assert!(!first.duplicate);
    let row = |stack: &Stack| {
        let id = session_id.clone();
        let db = stack.insurance_db.clone();
        async move {
            db.run(move |conn| {
                face_outcomes::table
                    .find(&id)
                    .select((
                        face_outcomes::event_id,
                        face_outcomes::outcome,
                        face_outcomes::reference,
                        face_outcomes::received_at,
                    ))
                    .first::<(String, String, String, chrono::NaiveDateTime)>(conn)
                    .map_err(DbError::from)
            })
            .await
            .expect("face outcome row")
        }
    };
    let recorded = row(&stack).await;

    stack.clock.advance(chrono::Duration::seconds(30));
    let again = events.face_verification_completed(event.clone()).await.expect("again").into_inner();
    assert!(again.duplicate);
    // Even a conflicting redelivery (another event id and outcome) is acknowledged, not applied.
    let conflicting = FaceVerificationCompletedRequest {
        event_id: uuid::Uuid::now_v7().to_string(),
        outcome: FaceSessionStatus::Failed as i32,
        ..event.clone()
    };
    assert!(events.face_verification_completed(conflicting).await.expect("conflicting").into_inner().duplicate);
    assert_eq!(row(&stack).await, recorded, "nothing changed");
    assert_eq!(stack.count_insurance_rows("face_outcomes").await, 1);

    // Only medins services may send events, and only insurance purposes with final outcomes.
    let status = stack
        .identity_events(Some(&stack.keys.bank))
        .face_verification_completed(event.clone())
        .await
        .expect_err("a bank cannot send events");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "PERMISSION_DENIED_SCOPE"));
    for bad in [
        FaceVerificationCompletedRequest { purpose: FacePurpose::RealName as i32, ..event.clone() },
        FaceVerificationCompletedRequest { outcome: FaceSessionStatus::Pending as i32, ..event.clone() },
        FaceVerificationCompletedRequest { finished_at: None, ..event.clone() },
        FaceVerificationCompletedRequest { session_id: "x".into(), ..event.clone() },
    ] {
        let status = events.face_verification_completed(bad).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn two_workers_never_hold_one_event_and_a_session_s_events_go_in_order() {
    let mut stack = Stack::start_with(StackOptions { start_insurance: false, ..StackOptions::default() }).await;
    let ids = finish_sessions(&stack, 20).await;
    // Stop identity-svc's own worker; its leases (if any) run out after 2 s.
    stack.kill_identity().await;
    let first_session = ids.iter().next().unwrap().clone();
    let now = stack.clock.stored_now();
    // A second event for one session, as a later change of that session would write.
    let second = first_session.clone();
    stack
        .identity_db
        .run(move |conn| {
            let (person_id, purpose, finished_at): (String, String, chrono::NaiveDateTime) = face_outbox::table
                .filter(face_outbox::session_id.eq(&second))
                .select((face_outbox::person_id, face_outbox::purpose, face_outbox::finished_at))
                .first(conn)?;
            diesel::insert_into(face_outbox::table)
                .values((
                    face_outbox::id.eq(medins_common::db::DbUuid(uuid::Uuid::now_v7())),
                    face_outbox::session_id.eq(&second),
                    face_outbox::person_id.eq(person_id),
                    face_outbox::purpose.eq(purpose),
                    face_outbox::reference.eq(""),
                    face_outbox::outcome.eq("PASSED"),
                    face_outbox::finished_at.eq(finished_at),
                    face_outbox::sequence.eq(2),
                    face_outbox::attempts.eq(0),
                    face_outbox::created_at.eq(now),
                ))
                .execute(conn)?;
            Ok::<_, DbError>(())
        })
        .await
        .expect("insert a second event");

    // Claims are made on the wall clock: well past any lease the killed worker held.
    let later = chrono::Utc::now().naive_utc() + chrono::Duration::seconds(10);
    let store = OutboxStore::new(stack.identity_db.clone());
    let lease = Duration::from_secs(60);
    let (a, b) =
        tokio::join!(store.claim_due("worker-a", later, lease, 100), store.claim_due("worker-b", later, lease, 100));
    let (a, b) = (a.expect("claim a"), b.expect("claim b"));
    let a_ids: BTreeSet<_> = a.iter().map(|e| e.id).collect();
    let b_ids: BTreeSet<_> = b.iter().map(|e| e.id).collect();
    assert!(a_ids.is_disjoint(&b_ids), "no event is held by both workers");
    let claimed: Vec<_> = a.iter().chain(&b).collect();
    assert_eq!(claimed.len(), 20, "every session's first event, and only that");
    assert!(claimed.iter().all(|e| e.sequence == 1));
    assert!(store.claim_due("worker-c", later, lease, 100).await.unwrap().is_empty(), "all held");

    // Once the first event of the session is delivered, its second becomes due.
    let first = claimed.iter().find(|e| e.session_id.to_string() == first_session).unwrap();
    assert!(store.mark_delivered(first.id, later).await.unwrap());
    let next = store.claim_due("worker-c", later, lease, 100).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].session_id, next[0].sequence), (first.session_id, 2));
    stack.shutdown().await;
}
