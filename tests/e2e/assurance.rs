//! Assurance levels: real name gives level 1, a PASSED REAL_NAME face session on top of it
//! level 2; tokens carry the level; binding family members, switching family aid and applying
//! for a card refuse a level-1 token with ASSURANCE_LEVEL_TOO_LOW and write nothing.

use medins_common::{clock::Clock, token::TokenKeyRing};
use medins_proto::{
    identity::v1::{
        AssuranceLevel, CompleteRealNameRequest, FacePurpose, IssuePersonTokenRequest, RegisterPersonRequest,
        SendSmsCodeRequest, SmsPurpose, StartFaceVerificationRequest, SubmitFaceResultRequest, VerifySmsCodeRequest,
    },
    insurance::v1::{
        ApplyForCardRequest, CardChannel, GetFamilyBindingRequest, MailingAddress, Relationship, SetFamilyAidRequest,
    },
};
use tonic::Code;

use crate::support::{
    SeedPerson, Stack,
    family::{Binder, add_request},
    privacy, reason, with_person_token,
};

fn code_and_reason<T>(result: &Result<T, tonic::Status>) -> (Code, String) {
    let status = result.as_ref().err().expect("refused");
    (status.code(), reason(status))
}

fn too_low() -> (Code, String) {
    (Code::PermissionDenied, "ASSURANCE_LEVEL_TOO_LOW".to_owned())
}

async fn issued_level(stack: &Stack, key: &str, person_id: &str) -> i32 {
    stack
        .person_tokens(Some(key))
        .issue_person_token(IssuePersonTokenRequest { person_id: person_id.to_owned() })
        .await
        .expect("issue")
        .into_inner()
        .assurance_level
}

async fn stored_level(stack: &Stack, person_id: &str) -> Option<i32> {
    use diesel::{OptionalExtension, QueryDsl, RunQueryDsl};
    use identity_svc::store::schema::person_assurance;
    let person_id = person_id.to_owned();
    stack
        .identity_db
        .run(move |conn| {
            person_assurance::table
                .find(person_id)
                .select(person_assurance::level)
                .first::<i32>(conn)
                .optional()
                .map_err(medins_common::db::DbError::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_passed_real_name_face_session_raises_the_next_token_to_level_2() {
    let stack = Stack::start().await;
    let bank = stack.keys.bank.clone();
    let person = stack.level_1_person(&bank).await;
    assert_eq!(issued_level(&stack, &bank, &person.person_id).await, AssuranceLevel::RealName as i32);
    assert_eq!(stored_level(&stack, &person.person_id).await, Some(1));

    // A failed session changes nothing; a session of another purpose neither.
    stack.face_session(&bank, &person, FacePurpose::RealName, false).await;
    stack.passed_face_session(&bank, &person, FacePurpose::VoucherActivation).await;
    assert_eq!(issued_level(&stack, &bank, &person.person_id).await, AssuranceLevel::RealName as i32);

    stack.passed_face_session(&bank, &person, FacePurpose::RealName).await;
    assert_eq!(stored_level(&stack, &person.person_id).await, Some(2));
    assert_eq!(issued_level(&stack, &bank, &person.person_id).await, AssuranceLevel::RealNameAndFace as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_real_name_face_session_passed_before_real_name_raises_nothing() {
    let stack = Stack::start().await;
    let bank = stack.keys.bank.clone();
    let seed = SeedPerson::adult();
    let person_id = stack
        .persons(Some(&bank))
        .register_person(RegisterPersonRequest {
            name: seed.name.clone(),
            id_number: seed.id_number.clone(),
            phone: seed.phone.clone(),
        })
        .await
        .expect("register")
        .into_inner()
        .person
        .unwrap()
        .person_id;
    // An operator starts a REAL_NAME session for the unverified claim; the provider passes it.
    let session = stack
        .faces(Some(&stack.keys.ops))
        .start_face_verification(StartFaceVerificationRequest {
            person_id: person_id.clone(),
            purpose: FacePurpose::RealName as i32,
            reference: String::new(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .session
        .unwrap()
        .session_id;
    stack
        .faces(Some(&stack.keys.face_provider))
        .submit_face_result(SubmitFaceResultRequest {
            session_id: session,
            liveness_passed: true,
            similarity: 0.95,
            provider_reference: "prov-early".into(),
        })
        .await
        .expect("submit");
    assert_eq!(stored_level(&stack, &person_id).await, None, "recorded, raises nothing");

    // Real name afterwards: level 1, not 2.
    let mut sms = stack.sms_codes(Some(&bank));
    let sent = sms
        .send_sms_code(SendSmsCodeRequest {
            person_id: person_id.clone(),
            purpose: SmsPurpose::RealName as i32,
            ..Default::default()
        })
        .await
        .expect("send")
        .into_inner();
    let code = stack.sms.last_code(&seed.phone);
    sms.verify_sms_code(VerifySmsCodeRequest { challenge_id: sent.challenge_id.clone(), code }).await.expect("verify");
    stack
        .persons(Some(&bank))
        .complete_real_name(CompleteRealNameRequest { person_id: person_id.clone(), challenge_id: sent.challenge_id })
        .await
        .expect("real name");
    stack.link_with_sms(&bank, &person_id, &seed.phone).await;
    assert_eq!(stored_level(&stack, &person_id).await, Some(1));
    assert_eq!(issued_level(&stack, &bank, &person_id).await, AssuranceLevel::RealName as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_level_1_token_is_refused_on_every_level_2_rpc_and_nothing_is_written() {
    let stack = Stack::start().await;
    let bank = stack.keys.bank.clone();
    // A level-2 binder with an ACTIVE binding of a child (EMPLOYEE: family aid policy lets its
    // account pay for a child).
    let binder = stack.binder_in(medins_proto::insurance::v1::Scheme::Employee, 0).await;
    let child = stack.member_aged(10, 0).await;
    let documents = stack.binding_documents(&binder, &child, Relationship::Child).await;
    let added = stack.add_member(&binder, &child, Relationship::Child, &documents).await.expect("level 2 binds");
    let binding_id = added.binding.unwrap().binding_id;

    // A correctly signed level-1 token for the same binder, as a partner would have had before
    // the face session.
    let ring = TokenKeyRing::load(&stack.token_keys_file).expect("token keys");
    let level_1 = ring.sign(binder.person_id.parse().unwrap(), "bank", stack.clock.now()).token;
    privacy::sensitive_token(&level_1);
    let weak = Binder { token: level_1.clone(), ..binder.clone() };
    let bindings_before = stack.count_insurance_rows("family_bindings").await;

    let other = stack.member_aged(8, 0).await;
    let add =
        stack.family(Some(&bank)).add_family_member(add_request(&weak, &other, Relationship::Child, &documents)).await;
    assert_eq!(code_and_reason(&add), too_low());
    assert_eq!(stack.count_insurance_rows("family_bindings").await, bindings_before);

    let aid = stack
        .family(Some(&bank))
        .set_family_aid(with_person_token(
            SetFamilyAidRequest { binding_id: binding_id.clone(), enabled: true },
            &level_1,
        ))
        .await;
    assert_eq!(code_and_reason(&aid), too_low());
    assert!(!stack.binding(&binding_id).await.family_aid, "family aid stays off");

    let card = stack
        .cards(Some(&bank))
        .apply_for_card(with_person_token(
            ApplyForCardRequest {
                person_id: binder.person_id.clone(),
                channel: CardChannel::Online as i32,
                sms_challenge_id: uuid::Uuid::now_v7().to_string(),
                id_card_front_document_id: uuid::Uuid::now_v7().to_string(),
                id_card_back_document_id: uuid::Uuid::now_v7().to_string(),
                photo_document_id: uuid::Uuid::now_v7().to_string(),
                face_session_id: uuid::Uuid::now_v7().to_string(),
                mailing_address: Some(MailingAddress {
                    region_code: "110105".into(),
                    street: "建国路 88 号".into(),
                    recipient: binder.seed.name.clone(),
                    phone: binder.seed.phone.clone(),
                }),
                fee_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            },
            &level_1,
        ))
        .await;
    assert_eq!(code_and_reason(&card), too_low());
    assert_eq!(stack.count_insurance_rows("card_applications").await, 0);

    // The same level-1 token still does what level 1 allows.
    stack
        .family(Some(&bank))
        .get_family_binding(with_person_token(GetFamilyBindingRequest { binding_id: binding_id.clone() }, &level_1))
        .await
        .expect("reading needs level 1");
    // And the level-2 token switches family aid.
    stack
        .family(Some(&bank))
        .set_family_aid(with_person_token(
            SetFamilyAidRequest { binding_id: binding_id.clone(), enabled: true },
            &binder.token,
        ))
        .await
        .expect("level 2 switches family aid");
    assert!(stack.binding(&binding_id).await.family_aid);
    stack.shutdown().await;
}
