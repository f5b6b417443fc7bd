//! Binding at the counter (issue 14 item 7): a self-service terminal and a hospital's medical
//! insurance office bind with the owner present (social security card + a face check run
//! there), an operator at the window attests the originals; the same rules as online.

use medins_common::auth::{PartnerKind, RateLimit};
use medins_proto::{
    identity::v1::SubmitFaceResultRequest,
    insurance::v1::{
        BindFamilyMemberAtCounterRequest, BindingChannel, BindingStatus, OriginalDocument, OwnerAtTerminal,
        RelationshipProof, StartCounterOwnerCheckRequest, WindowAttestation,
        bind_family_member_at_counter_request::Presence,
    },
};
use tonic::{Code, Status};

use crate::support::{
    Stack, StackOptions,
    family::{Binder, BindingDocuments, Member, add_request},
    reason,
};

const CHILD: medins_proto::insurance::v1::Relationship = medins_proto::insurance::v1::Relationship::Child;

async fn with_terminal() -> Stack {
    Stack::start_with(StackOptions {
        extra_partner: Some(("terminal-1".into(), PartnerKind::Terminal, RateLimit::default())),
        ..Default::default()
    })
    .await
}

/// A card issued on the spot to `binder` at a service center.
async fn card_of(stack: &Stack, binder: &Binder) -> String {
    let card = stack.card_issued_on_the_spot(&binder.person_id).await;
    card.card_number
}

/// The owner's face check at the counter holding `key`, run by the face provider.
async fn owner_face_check(stack: &Stack, key: &str, card_number: &str, pass: bool) -> Result<String, Status> {
    let check = stack
        .family(Some(key))
        .start_counter_owner_check(StartCounterOwnerCheckRequest { owner_card_number: card_number.to_owned() })
        .await?
        .into_inner()
        .face_check
        .unwrap();
    stack
        .faces(Some(&stack.keys.face_provider))
        .submit_face_result(SubmitFaceResultRequest {
            session_id: check.session_id.clone(),
            liveness_passed: true,
            similarity: if pass { 0.95 } else { 0.1 },
            provider_reference: format!("prov-{}", uuid::Uuid::new_v4()),
        })
        .await
        .expect("submit");
    Ok(check.session_id)
}

fn at_terminal(
    binder: &Binder,
    member: &Member,
    documents: &BindingDocuments,
    card_number: &str,
    session: &str,
) -> BindFamilyMemberAtCounterRequest {
    BindFamilyMemberAtCounterRequest {
        binding: Some(add_request(binder, member, CHILD, documents).into_inner()),
        presence: Some(Presence::Terminal(OwnerAtTerminal {
            owner_card_number: card_number.to_owned(),
            owner_face_session_id: session.to_owned(),
        })),
    }
}

fn all_originals() -> Vec<i32> {
    (1..=6).collect()
}

#[tokio::test]
async fn a_terminal_binds_with_the_owners_card_and_face_and_refuses_anyone_else() {
    let stack = with_terminal().await;
    let terminal = stack.extra_key.clone().unwrap();
    let parent = stack.binder(0).await;
    let card = card_of(&stack, &parent).await;
    let child = stack.member_aged(7, 0).await;
    let documents = stack.binding_documents(&parent, &child, CHILD).await;
    stack.confirm_household(&parent, &child, CHILD);

    // An unknown card number starts nothing and names no one.
    let unknown = owner_face_check(&stack, &terminal, "8611000000000000", true).await.unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::PermissionDenied, "OWNER_NOT_PRESENT"));
    // A failed face check proves nothing.
    let failed = owner_face_check(&stack, &terminal, &card, false).await.unwrap();
    let rows = stack.count_insurance_rows("family_bindings").await;
    let refused = stack
        .family(Some(&terminal))
        .bind_family_member_at_counter(at_terminal(&parent, &child, &documents, &card, &failed))
        .await
        .unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "OWNER_NOT_PRESENT"));
    // Another person's card with a passed face check of that person proves nothing for the owner.
    let other = stack.binder(0).await;
    let other_card = card_of(&stack, &other).await;
    let others_face = owner_face_check(&stack, &terminal, &other_card, true).await.unwrap();
    let refused = stack
        .family(Some(&terminal))
        .bind_family_member_at_counter(at_terminal(&parent, &child, &documents, &other_card, &others_face))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "OWNER_NOT_PRESENT");
    assert_eq!(stack.count_insurance_rows("family_bindings").await, rows, "nothing written");

    // The owner's card and passed face: bound, by the same rules (the household confirms it).
    let face = owner_face_check(&stack, &terminal, &card, true).await.unwrap();
    let bound = stack
        .family(Some(&terminal))
        .bind_family_member_at_counter(at_terminal(&parent, &child, &documents, &card, &face))
        .await
        .expect("bound at the terminal")
        .into_inner()
        .binding
        .unwrap();
    assert_eq!(bound.status, BindingStatus::Active as i32);
    assert_eq!(bound.channel, BindingChannel::Terminal as i32);
    assert_eq!(bound.relationship_proof, RelationshipProof::Authority as i32);

    // One face check serves one binding.
    let second = stack.member_aged(4, 0).await;
    let second_documents = stack.binding_documents(&parent, &second, CHILD).await;
    let reused = stack
        .family(Some(&terminal))
        .bind_family_member_at_counter(at_terminal(&parent, &second, &second_documents, &card, &face))
        .await
        .unwrap_err();
    assert_eq!(reason(&reused), "OWNER_NOT_PRESENT");
    // The same rules as online: the child is already bound.
    let again = owner_face_check(&stack, &terminal, &card, true).await.unwrap();
    let bound_twice = stack
        .family(Some(&terminal))
        .bind_family_member_at_counter(at_terminal(&parent, &child, &documents, &card, &again))
        .await
        .unwrap_err();
    assert_eq!((bound_twice.code(), reason(&bound_twice).as_str()), (Code::AlreadyExists, "ALREADY_BOUND"));
    // A pharmacy has no counter binding at all.
    let pharmacy = stack
        .family(Some(&stack.keys.pharmacy))
        .bind_family_member_at_counter(at_terminal(&parent, &second, &documents, &card, &again))
        .await
        .unwrap_err();
    assert_eq!(pharmacy.code(), Code::PermissionDenied);
    stack.shutdown().await;
}

#[tokio::test]
async fn the_hospital_insurance_office_binds_like_a_terminal_and_an_unconfirmed_child_waits_for_review() {
    let stack = Stack::start().await;
    let parent = stack.binder(0).await;
    let card = card_of(&stack, &parent).await;
    let child = stack.member_aged(2, 0).await;
    let documents = stack.binding_documents(&parent, &child, CHILD).await;
    let face = owner_face_check(&stack, &stack.keys.hospital, &card, true).await.unwrap();
    let bound = stack
        .family(Some(&stack.keys.hospital))
        .bind_family_member_at_counter(at_terminal(&parent, &child, &documents, &card, &face))
        .await
        .expect("bound at the office")
        .into_inner()
        .binding
        .unwrap();
    assert_eq!(bound.status, BindingStatus::PendingReview as i32);
    assert_eq!(bound.channel, BindingChannel::HospitalOffice as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn an_operator_at_the_window_attests_the_six_originals_and_the_child_is_bound_at_once() {
    let stack = Stack::start().await;
    let ops = stack.keys.ops.clone();
    let parent = stack.binder(0).await;
    let child = stack.member_aged(11, 0).await;
    let documents = stack.binding_documents(&parent, &child, CHILD).await;
    let window = |originals: Vec<i32>| BindFamilyMemberAtCounterRequest {
        binding: Some(add_request(&parent, &child, CHILD, &documents).into_inner()),
        presence: Some(Presence::Window(WindowAttestation { staff_id: "w-0042".into(), originals_seen: originals })),
    };
    let rows = stack.count_insurance_rows("family_bindings").await;
    let mut five = all_originals();
    five.retain(|original| *original != OriginalDocument::MemberHouseholdRegister as i32);
    let missing = stack.family(Some(&ops)).bind_family_member_at_counter(window(five)).await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    let wrong = stack
        .family(Some(&ops))
        .bind_family_member_at_counter(at_terminal(
            &parent,
            &child,
            &documents,
            "8611000000000000",
            &uuid::Uuid::now_v7().to_string(),
        ))
        .await
        .unwrap_err();
    assert_eq!((wrong.code(), reason(&wrong).as_str()), (Code::PermissionDenied, "PARTNER_KIND_NOT_ALLOWED"));
    assert_eq!(stack.count_insurance_rows("family_bindings").await, rows);

    let bound = stack
        .family(Some(&ops))
        .bind_family_member_at_counter(window(all_originals()))
        .await
        .expect("bound at the window")
        .into_inner()
        .binding
        .unwrap();
    assert_eq!(bound.status, BindingStatus::Active as i32);
    assert_eq!(bound.channel, BindingChannel::Window as i32);
    assert_eq!(bound.relationship_proof, RelationshipProof::WindowAttestation as i32);
    stack.shutdown().await;
}
