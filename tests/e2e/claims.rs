//! Who a person is, and whose a phone is: a name + ID number pair nobody confirmed is a claim
//! that never locks the real resident out and is superseded by the confirmed registration; a
//! phone becomes a person's only by proof (SMS to it plus the person's face, or an operator's
//! recorded reason), never by RegisterPerson.

use std::sync::Arc;

use diesel::{QueryableByName, RunQueryDsl, sql_types::BigInt};
use identity_svc::authority::{AuthorityError, AuthorityVerdict, IdentityAuthority};
use medins_proto::{
    identity::v1::{
        ChangePhoneRequest, CompleteRealNameRequest, FacePurpose, FaceSessionStatus, GetFaceVerificationRequest,
        GetPersonRequest, IssuePersonTokenRequest, LinkPartnerAccountRequest, MatchPersonRequest, PersonView,
        RealNameStatus, RegisterPersonRequest, ResolvePersonRequest, SendSmsCodeRequest, SmsPurpose,
        StartFaceVerificationRequest, SubmitFaceResultRequest, VerifySmsCodeRequest, change_phone_request::Proof,
    },
    insurance::v1::{
        AccountStatus, GetAccountRequest, OpenAccountRequest, PersonIdentity, PersonSupersededRequest, Scheme,
        get_account_request, open_account_request,
    },
};
use tonic::{Code, Status};

use crate::support::{SeedPerson, Stack, StackOptions, privacy, reason};

/// The identity authority as it really is: it confirms a number only under its holder's name.
#[derive(Debug)]
struct RegistryAuthority {
    holders: Vec<(String, String)>,
}

#[tonic::async_trait]
impl IdentityAuthority for RegistryAuthority {
    async fn check(&self, name: &str, id_number: &str) -> Result<AuthorityVerdict, AuthorityError> {
        let known = self.holders.iter().any(|(n, id)| n == name && id == id_number);
        Ok(if known { AuthorityVerdict::Match } else { AuthorityVerdict::Mismatch })
    }
}

async fn stack_knowing(residents: &[&SeedPerson]) -> Stack {
    let holders = residents.iter().map(|p| (p.name.clone(), p.id_number.clone())).collect();
    Stack::start_with(StackOptions {
        identity_authority: Some(Arc::new(RegistryAuthority { holders })),
        ..Default::default()
    })
    .await
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, expected_reason: &str) {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), reason(&status).as_str()), (code, expected_reason), "{status:?}");
}

fn register(name: &str, id_number: &str, phone: &str) -> RegisterPersonRequest {
    RegisterPersonRequest { name: name.to_owned(), id_number: id_number.to_owned(), phone: phone.to_owned() }
}

/// A phone nobody else in these tests uses.
fn fresh_phone() -> String {
    let phone = SeedPerson::adult().phone;
    privacy::sensitive(&phone);
    phone
}

/// A verified challenge: a PHONE_CHANGE code goes to `phone`; a code of any other purpose goes to
/// the phone on record of `person_id`, which the test knows to be `phone`.
async fn verified_challenge(stack: &Stack, key: &str, person_id: &str, phone: &str, purpose: SmsPurpose) -> String {
    let mut sms = stack.sms_codes(Some(key));
    let request = if purpose == SmsPurpose::PhoneChange {
        SendSmsCodeRequest { phone: phone.to_owned(), purpose: purpose as i32, ..Default::default() }
    } else {
        SendSmsCodeRequest { person_id: person_id.to_owned(), purpose: purpose as i32, ..Default::default() }
    };
    let sent = sms.send_sms_code(request).await.expect("send code").into_inner();
    let code = stack.sms.last_code(phone);
    sms.verify_sms_code(VerifySmsCodeRequest { challenge_id: sent.challenge_id.clone(), code })
        .await
        .expect("verify code");
    sent.challenge_id
}

/// A PHONE_CHANGE face session a front door starts WITHOUT a person token, ended by the
/// provider: PASSED (the person's own face) or FAILED (someone else's, three times).
async fn phone_change_face(stack: &Stack, key: &str, person_id: &str, own_face: bool) -> String {
    let started = stack
        .faces(Some(key))
        .start_face_verification(StartFaceVerificationRequest {
            person_id: person_id.to_owned(),
            purpose: FacePurpose::PhoneChange as i32,
            reference: String::new(),
            ..Default::default()
        })
        .await
        .expect("a front door starts a phone-change face session without a token")
        .into_inner();
    let session_id = started.session.expect("session").session_id;
    for _ in 0..(if own_face { 1 } else { 3 }) {
        stack
            .faces(Some(&stack.keys.face_provider))
            .submit_face_result(SubmitFaceResultRequest {
                session_id: session_id.clone(),
                liveness_passed: true,
                similarity: if own_face { 0.95 } else { 0.38 },
                provider_reference: format!("prov-{}", uuid::Uuid::new_v4()),
            })
            .await
            .expect("submit");
    }
    session_id
}

fn change_phone(person_id: &str, new_phone: &str, challenge_id: &str, proof: Proof) -> ChangePhoneRequest {
    ChangePhoneRequest {
        person_id: person_id.to_owned(),
        new_phone: new_phone.to_owned(),
        challenge_id: challenge_id.to_owned(),
        proof: Some(proof),
    }
}

async fn as_ops(stack: &Stack, person_id: &str) -> Result<PersonView, Status> {
    stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: person_id.to_owned() })
        .await
        .map(|r| r.into_inner().person.expect("person"))
}

async fn count_where(stack: &Stack, sql: String) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    stack
        .identity_db
        .run(move |conn| {
            diesel::sql_query(sql).get_result::<Count>(conn).map(|c| c.count).map_err(medins_common::db::DbError::from)
        })
        .await
        .expect("count")
}

async fn live_links(stack: &Stack, person_id: &str) -> i64 {
    count_where(
        stack,
        format!("SELECT COUNT(*) AS count FROM partner_links WHERE person_id = '{person_id}' AND unlinked_at IS NULL"),
    )
    .await
}

async fn sms_state(stack: &Stack, challenge_id: &str) -> i64 {
    count_where(
        stack,
        format!("SELECT COUNT(*) AS count FROM sms_challenges WHERE id = '{challenge_id}' AND state = 'CONSUMED'"),
    )
    .await
}

fn open_by_identity(name: &str, id_number: &str) -> OpenAccountRequest {
    OpenAccountRequest {
        person: Some(open_account_request::Person::Identity(PersonIdentity {
            name: name.to_owned(),
            id_number: id_number.to_owned(),
        })),
        scheme: Scheme::Resident as i32,
        region_code: "110105".into(),
        employer_code: String::new(),
    }
}

#[tokio::test]
async fn a_stranger_who_knows_a_name_and_id_number_cannot_take_over_a_person_a_bank_opened() {
    let victim = SeedPerson::adult();
    let stack = stack_knowing(&[&victim]).await;
    let stranger_phone = fresh_phone();

    // A bank opens an account by name + ID number: a person with no phone on record.
    let account = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(open_by_identity(&victim.name, &victim.id_number))
        .await
        .expect("open account")
        .into_inner()
        .account
        .expect("account");
    let person_id = account.person_id.clone();
    assert_eq!(as_ops(&stack, &person_id).await.unwrap().masked_phone, "");

    // The stranger registers the victim's name and ID number with their own phone: the existing
    // person is answered, and the phone is NOT recorded.
    let answered = stack
        .persons(Some(&stack.keys.mini_program))
        .register_person(register(&victim.name, &victim.id_number, &stranger_phone))
        .await
        .expect("register")
        .into_inner();
    assert!(!answered.created);
    assert!(!answered.phone_recorded);
    let view = answered.person.expect("person");
    assert_eq!(view.person_id, person_id);
    assert_eq!(view.masked_phone, "", "no phone is on record, and none was added");
    assert_eq!(as_ops(&stack, &person_id).await.unwrap().masked_phone, "");

    // Real name cannot be completed: there is no phone on record for the stranger's SMS to prove.
    // (a real-name code goes only to the phone on record, so not even a code is sent).
    assert_refused(
        stack
            .sms_codes(Some(&stack.keys.mini_program))
            .send_sms_code(SendSmsCodeRequest {
                person_id: person_id.clone(),
                purpose: SmsPurpose::RealName as i32,
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "PHONE_REQUIRED",
    );
    assert!(stack.sms.sender.last_code(&stranger_phone).is_none(), "no code reached the stranger's phone");

    // Nor can the phone be changed: the stranger proves their phone, but not the victim's face.
    stack.clock.advance(chrono::Duration::seconds(61));
    let proof_of_phone =
        verified_challenge(&stack, &stack.keys.mini_program, &person_id, &stranger_phone, SmsPurpose::PhoneChange)
            .await;
    let strangers_face = phone_change_face(&stack, &stack.keys.mini_program, &person_id, false).await;
    let failed = stack
        .faces(Some(&stack.keys.mini_program))
        .get_face_verification(GetFaceVerificationRequest { session_id: strangers_face.clone() })
        .await
        .expect("the starting front door reads its phone-change session")
        .into_inner()
        .session
        .unwrap();
    assert_eq!(failed.status, FaceSessionStatus::Failed as i32);
    let mut persons = stack.persons(Some(&stack.keys.mini_program));
    assert_refused(
        persons
            .change_phone(change_phone(
                &person_id,
                &stranger_phone,
                &proof_of_phone,
                Proof::FaceSessionId(strangers_face),
            ))
            .await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
    );
    assert_refused(
        persons
            .change_phone(change_phone(
                &person_id,
                &stranger_phone,
                &proof_of_phone,
                Proof::OperatorReason("the customer asked".into()),
            ))
            .await,
        Code::PermissionDenied,
        "PARTNER_KIND_NOT_ALLOWED",
    );
    assert_eq!(as_ops(&stack, &person_id).await.unwrap().masked_phone, "");
    assert_eq!(stack.count_identity_rows("phone_changes").await, 0);
    assert_eq!(sms_state(&stack, &proof_of_phone).await, 0, "a refused change uses up no challenge");

    // The victim binds their own phone with their own face, then completes real name.
    let proof_of_phone =
        verified_challenge(&stack, &stack.keys.bank, &person_id, &victim.phone, SmsPurpose::PhoneChange).await;
    let own_face = phone_change_face(&stack, &stack.keys.bank, &person_id, true).await;
    let changed = stack
        .persons(Some(&stack.keys.bank))
        .change_phone(change_phone(&person_id, &victim.phone, &proof_of_phone, Proof::FaceSessionId(own_face)))
        .await
        .expect("the victim binds their phone")
        .into_inner()
        .person
        .unwrap();
    let masked = format!("{}****{}", &victim.phone[..3], &victim.phone[7..]);
    assert_eq!(changed.masked_phone, masked);
    assert_eq!(as_ops(&stack, &person_id).await.unwrap().masked_phone, masked);
    assert_eq!(sms_state(&stack, &proof_of_phone).await, 1, "the challenge is used up");
    assert_eq!(
        count_where(
            &stack,
            format!(
                "SELECT COUNT(*) AS count FROM phone_changes WHERE person_id = '{person_id}' AND method = 'FACE' \
                 AND previous_phone_index IS NULL"
            )
        )
        .await,
        1
    );
    stack.clock.advance(chrono::Duration::seconds(61));
    let real_name = verified_challenge(&stack, &stack.keys.bank, &person_id, &victim.phone, SmsPurpose::RealName).await;
    let verified = stack
        .persons(Some(&stack.keys.bank))
        .complete_real_name(CompleteRealNameRequest { person_id: person_id.clone(), challenge_id: real_name })
        .await
        .expect("the victim completes real name")
        .into_inner()
        .person
        .unwrap();
    assert_eq!(verified.real_name_status, RealNameStatus::Verified as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn an_operator_changes_a_phone_on_a_recorded_reason_and_others_need_the_persons_face() {
    let person = SeedPerson::adult();
    let stack = stack_knowing(&[&person]).await;
    let registered = stack
        .persons(Some(&stack.keys.bank))
        .register_person(register(&person.name, &person.id_number, &person.phone))
        .await
        .unwrap()
        .into_inner();
    assert!(registered.created && registered.phone_recorded);
    let person_id = registered.person.unwrap().person_id;
    let new_phone = fresh_phone();
    let challenge = verified_challenge(&stack, &stack.keys.ops, "", &new_phone, SmsPurpose::PhoneChange).await;
    let mut ops = stack.persons(Some(&stack.keys.ops));
    let mut bank = stack.persons(Some(&stack.keys.bank));

    // An operator without a reason, a bank without a face or with an operator's reason, a face
    // session that does not exist: refused, nothing changes, the challenge stays usable.
    for blank in ["", "   "] {
        assert_refused(
            ops.change_phone(change_phone(&person_id, &new_phone, &challenge, Proof::OperatorReason(blank.into())))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
    assert_refused(
        bank.change_phone(ChangePhoneRequest {
            proof: None,
            ..change_phone(&person_id, &new_phone, &challenge, Proof::OperatorReason(String::new()))
        })
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_refused(
        bank.change_phone(change_phone(&person_id, &new_phone, &challenge, Proof::OperatorReason("lost SIM".into())))
            .await,
        Code::PermissionDenied,
        "PARTNER_KIND_NOT_ALLOWED",
    );
    assert_refused(
        bank.change_phone(change_phone(
            &person_id,
            &new_phone,
            &challenge,
            Proof::FaceSessionId(uuid::Uuid::now_v7().to_string()),
        ))
        .await,
        Code::FailedPrecondition,
        "FACE_VERIFICATION_REQUIRED",
    );
    let old_masked = format!("{}****{}", &person.phone[..3], &person.phone[7..]);
    assert_eq!(as_ops(&stack, &person_id).await.unwrap().masked_phone, old_masked);
    assert_eq!(stack.count_identity_rows("phone_changes").await, 0);

    // The operator with a reason: changed, recorded with the reason encrypted.
    let reason_text = "customer lost the SIM card; ID card checked at counter 3";
    let changed = ops
        .change_phone(change_phone(&person_id, &new_phone, &challenge, Proof::OperatorReason(reason_text.into())))
        .await
        .expect("operator change")
        .into_inner()
        .person
        .unwrap();
    assert_eq!(changed.masked_phone, format!("{}****{}", &new_phone[..3], &new_phone[7..]));
    assert_eq!(
        count_where(
            &stack,
            format!(
                "SELECT COUNT(*) AS count FROM phone_changes WHERE person_id = '{person_id}' AND method = 'OPERATOR' \
                 AND partner_id = 'ops' AND reason_enc IS NOT NULL AND previous_phone_index IS NOT NULL"
            )
        )
        .await,
        1
    );
    // The challenge proved one change; the same phone again is no change.
    assert_refused(
        ops.change_phone(change_phone(&person_id, &new_phone, &challenge, Proof::OperatorReason(reason_text.into())))
            .await,
        Code::FailedPrecondition,
        "PHONE_UNCHANGED",
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_phone_changes_on_one_face_session_have_exactly_one_winner() {
    let person = SeedPerson::adult();
    let stack = stack_knowing(&[&person]).await;
    // Created by a resolution: no phone on record.
    let person_id = stack
        .persons(Some(&stack.keys.service))
        .resolve_person(ResolvePersonRequest { name: person.name.clone(), id_number: person.id_number.clone() })
        .await
        .unwrap()
        .into_inner()
        .person
        .unwrap()
        .person_id;
    let face = phone_change_face(&stack, &stack.keys.bank, &person_id, true).await;
    let phones = [fresh_phone(), fresh_phone(), fresh_phone(), fresh_phone()];
    let mut challenges = Vec::new();
    for phone in &phones {
        challenges.push(verified_challenge(&stack, &stack.keys.bank, "", phone, SmsPurpose::PhoneChange).await);
    }
    let calls = phones.iter().zip(&challenges).map(|(phone, challenge)| {
        let mut persons = stack.persons(Some(&stack.keys.bank));
        let request = change_phone(&person_id, phone, challenge, Proof::FaceSessionId(face.clone()));
        async move { persons.change_phone(request).await }
    });
    let results = futures::future::join_all(calls).await;
    let winners: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(status) = result {
            let refusal = (status.code(), reason(status));
            assert!(
                refusal == (Code::FailedPrecondition, "FACE_SESSION_ALREADY_USED".into())
                    || refusal == (Code::Aborted, "PHONE_CHANGE_CONFLICT".into()),
                "{status:?}"
            );
        }
    }
    let winner = winners[0];
    let phone = &phones[winner];
    assert_eq!(as_ops(&stack, &person_id).await.unwrap().masked_phone, format!("{}****{}", &phone[..3], &phone[7..]));
    assert_eq!(stack.count_identity_rows("phone_changes").await, 1);
    for (i, challenge) in challenges.iter().enumerate() {
        assert_eq!(sms_state(&stack, challenge).await, i64::from(i == winner), "only the winner's challenge is used");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_squatters_claim_never_locks_out_the_resident_and_is_superseded_by_the_confirmed_registration() {
    let resident = SeedPerson::adult();
    let stack = stack_knowing(&[&resident]).await;
    let squatter_phone = fresh_phone();
    let squatter_name = "冒名者";
    let bank_name = "冒名顶替";

    // A squatter registers the resident's number under a wrong name, and links it.
    let squat = stack
        .persons(Some(&stack.keys.mini_program))
        .register_person(register(squatter_name, &resident.id_number, &squatter_phone))
        .await
        .unwrap()
        .into_inner();
    assert!(squat.created);
    let squat_id = squat.person.unwrap().person_id;
    let link_challenge =
        verified_challenge(&stack, &stack.keys.mini_program, &squat_id, &squatter_phone, SmsPurpose::LinkAccount).await;
    stack
        .links(Some(&stack.keys.mini_program))
        .link_partner_account(LinkPartnerAccountRequest {
            person_id: squat_id.clone(),
            partner_user_ref: "squatter-user".into(),
            challenge_id: link_challenge,
        })
        .await
        .expect("a claim can be linked");
    assert_eq!(live_links(&stack, &squat_id).await, 1);
    // The authority does not confirm the wrong name.
    stack.clock.advance(chrono::Duration::seconds(61));
    let real_name =
        verified_challenge(&stack, &stack.keys.mini_program, &squat_id, &squatter_phone, SmsPurpose::RealName).await;
    assert_refused(
        stack
            .persons(Some(&stack.keys.mini_program))
            .complete_real_name(CompleteRealNameRequest { person_id: squat_id.clone(), challenge_id: real_name })
            .await,
        Code::FailedPrecondition,
        "REAL_NAME_REJECTED",
    );
    // A bank opens an account under yet another wrong name: another claim, with an account.
    let bank_claim = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(open_by_identity(bank_name, &resident.id_number))
        .await
        .expect("a bank's account under a wrong name is a claim")
        .into_inner()
        .account
        .unwrap()
        .person_id;
    assert_ne!(bank_claim, squat_id);

    // The resident is not locked out: they register and open their account.
    let own = stack
        .persons(Some(&stack.keys.bank))
        .register_person(register(&resident.name, &resident.id_number, &resident.phone))
        .await
        .expect("the resident registers")
        .into_inner();
    assert!(own.created && own.phone_recorded);
    let resident_id = own.person.unwrap().person_id;
    assert!(resident_id != squat_id && resident_id != bank_claim);
    let account = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(open_by_identity(&resident.name, &resident.id_number))
        .await
        .expect("the resident opens an account")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(account.person_id, resident_id);
    // Before confirmation the squatter's pair still matches its own claim.
    let mut service = stack.persons(Some(&stack.keys.service));
    let matched = |name: &str| MatchPersonRequest {
        name: name.to_owned(),
        id_number: resident.id_number.clone(),
        person_id: String::new(),
    };
    assert_eq!(service.match_person(matched(squatter_name)).await.unwrap().into_inner().person_id, squat_id);

    // The resident completes real name: every other claim of the number is superseded.
    let real_name =
        verified_challenge(&stack, &stack.keys.bank, &resident_id, &resident.phone, SmsPurpose::RealName).await;
    stack
        .persons(Some(&stack.keys.bank))
        .complete_real_name(CompleteRealNameRequest { person_id: resident_id.clone(), challenge_id: real_name })
        .await
        .expect("real name");
    for claim in [&squat_id, &bank_claim] {
        assert_refused(as_ops(&stack, claim).await, Code::NotFound, "PERSON_NOT_FOUND");
        assert_eq!(live_links(&stack, claim).await, 0, "a superseded claim's links end");
        assert_refused(
            stack
                .faces(Some(&stack.keys.ops))
                .start_face_verification(StartFaceVerificationRequest {
                    person_id: claim.to_string(),
                    purpose: FacePurpose::RealName as i32,
                    reference: String::new(),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
            "PERSON_NOT_FOUND",
        );
    }
    // The squatter's partner gets no token for it: its link ended with the claim, and without
    // a link the answer is the one a missing id gets (the access table: PARTNER_LINK_REQUIRED).
    assert_refused(
        stack
            .person_tokens(Some(&stack.keys.mini_program))
            .issue_person_token(IssuePersonTokenRequest { person_id: squat_id.clone() })
            .await,
        Code::FailedPrecondition,
        "PARTNER_LINK_REQUIRED",
    );
    // insurance-svc cannot act for it either: it asks identity-svc, which knows no such person.
    assert_refused(
        stack
            .accounts(Some(&stack.keys.ops))
            .open_account(OpenAccountRequest {
                person: Some(open_account_request::Person::PersonId(squat_id.clone())),
                ..open_by_identity(&resident.name, &resident.id_number)
            })
            .await,
        Code::NotFound,
        "PERSON_NOT_FOUND",
    );
    assert_eq!(stack.count_identity_rows("person_supersessions").await, 2);
    assert_eq!(stack.count_identity_rows("persons").await, 3, "superseded claims stay on record");
    // insurance-svc is told (outbox): the bank claim's account is suspended, no money moves on
    // it; the resident's own account is untouched.
    let status_of = |person_id: String| {
        let mut accounts = stack.accounts(Some(&stack.keys.ops));
        async move {
            accounts
                .get_account(GetAccountRequest { key: Some(get_account_request::Key::PersonId(person_id)) })
                .await
                .expect("get account")
                .into_inner()
                .account
                .unwrap()
                .status
        }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_of(bank_claim.clone()).await != AccountStatus::Suspended as i32 {
        assert!(tokio::time::Instant::now() < deadline, "the claim's account is suspended within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(resident_id.clone()).await, AccountStatus::Active as i32);
    // Both supersessions' events are delivered; the outbox marks each once insurance-svc has
    // answered it, so the second may still be on its way when the first account is suspended.
    let delivered =
        || count_where(&stack, "SELECT COUNT(*) AS count FROM person_outbox WHERE delivered_at IS NOT NULL".into());
    while delivered().await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "both events delivered within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(delivered().await, 2);
    // A redelivery changes nothing.
    let again = stack
        .identity_events(Some(&stack.keys.identity_service))
        .person_superseded(PersonSupersededRequest {
            event_id: uuid::Uuid::now_v7().to_string(),
            person_id: bank_claim.clone(),
            superseded_by: resident_id.clone(),
            superseded_at: None,
        })
        .await
        .expect("redelivery")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(status_of(bank_claim.clone()).await, AccountStatus::Suspended as i32);
    // It no longer matches, and the wrong names are now NAME_MISMATCH.
    for name in [squatter_name, bank_name] {
        let answer = service.match_person(matched(name)).await.unwrap().into_inner();
        assert!(!answer.matched && answer.person_id.is_empty());
        assert_refused(
            stack
                .persons(Some(&stack.keys.mini_program))
                .register_person(register(name, &resident.id_number, &fresh_phone()))
                .await,
            Code::FailedPrecondition,
            "NAME_MISMATCH",
        );
        assert_refused(
            service
                .resolve_person(ResolvePersonRequest { name: name.to_owned(), id_number: resident.id_number.clone() })
                .await,
            Code::FailedPrecondition,
            "NAME_MISMATCH",
        );
    }
    assert_eq!(stack.count_identity_rows("persons").await, 3);
    // The resident's own name still answers the resident.
    let again = stack
        .persons(Some(&stack.keys.mini_program))
        .register_person(register(&resident.name, &resident.id_number, &fresh_phone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created && !again.phone_recorded);
    assert_eq!(again.person.unwrap().person_id, resident_id);
    assert_eq!(service.match_person(matched(&resident.name)).await.unwrap().into_inner().person_id, resident_id);
    stack.shutdown().await;
}

#[tokio::test]
async fn match_person_answers_without_creating_anyone_and_never_name_mismatch() {
    let person = SeedPerson::adult();
    let stack = stack_knowing(&[&person]).await;
    let mut service = stack.persons(Some(&stack.keys.service));
    let request = |name: &str, person_id: &str| MatchPersonRequest {
        name: name.to_owned(),
        id_number: person.id_number.clone(),
        person_id: person_id.to_owned(),
    };
    let unknown = service.match_person(request(&person.name, "")).await.unwrap().into_inner();
    assert!(!unknown.matched && unknown.person_id.is_empty());
    assert_eq!(stack.count_identity_rows("persons").await, 0, "a match creates nobody");

    let person_id = stack.register_as_ops(&person).await;
    let found = service.match_person(request(&person.name, "")).await.unwrap().into_inner();
    assert!(found.matched);
    assert_eq!(found.person_id, person_id);
    let named = service.match_person(request(&person.name, &person_id)).await.unwrap().into_inner();
    assert!(named.matched);
    let other =
        service.match_person(request(&person.name, &uuid::Uuid::now_v7().to_string())).await.unwrap().into_inner();
    assert!(!other.matched);
    let wrong = service.match_person(request("别人", "")).await.unwrap().into_inner();
    assert!(!wrong.matched);
    assert_refused(
        service.match_person(request(&person.name, "not-a-uuid")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    // A front door holds no `person.resolve`.
    assert_refused(
        stack.persons(Some(&stack.keys.mini_program)).match_person(request(&person.name, "")).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
    );
    assert_eq!(stack.count_identity_rows("persons").await, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn claims_racing_a_confirmation_are_superseded_or_refused_never_left_live() {
    let resident = SeedPerson::adult();
    let stack = stack_knowing(&[&resident]).await;
    let resident_id = stack.register_as_ops(&resident).await;
    let real_name =
        verified_challenge(&stack, &stack.keys.bank, &resident_id, &resident.phone, SmsPurpose::RealName).await;
    let confirm = {
        let mut persons = stack.persons(Some(&stack.keys.bank));
        let request = CompleteRealNameRequest { person_id: resident_id.clone(), challenge_id: real_name };
        async move { persons.complete_real_name(request).await.map(|_| ()) }
    };
    let names = ["甲冒名", "乙冒名", "丙冒名", "丁冒名", "戊冒名", "己冒名"];
    let squats = names.iter().map(|name| {
        let mut persons = stack.persons(Some(&stack.keys.mini_program));
        let request = register(name, &resident.id_number, &fresh_phone());
        async move { persons.register_person(request).await.map(|_| ()) }
    });
    let (confirmed, squatted) = tokio::join!(confirm, futures::future::join_all(squats));
    confirmed.expect("the resident is confirmed");
    for result in &squatted {
        if let Err(status) = result {
            assert_eq!((status.code(), reason(status).as_str()), (Code::FailedPrecondition, "NAME_MISMATCH"));
        }
    }
    let created = squatted.iter().filter(|r| r.is_ok()).count() as i64;
    assert_eq!(
        count_where(&stack, "SELECT COUNT(*) AS count FROM persons WHERE claim_status = 'LIVE'".into()).await,
        1,
        "only the confirmed person is live"
    );
    assert_eq!(stack.count_identity_rows("person_supersessions").await, created);
    stack.shutdown().await;
}

#[tokio::test]
async fn rows_without_a_name_index_get_one_at_start_and_still_decide_claims() {
    let person = SeedPerson::adult();
    let mut stack = stack_knowing(&[&person]).await;
    let person_id = stack.register_as_ops(&person).await;
    // As a row written before names had a blind index.
    stack
        .identity_db
        .run(|conn| {
            diesel::sql_query("UPDATE persons SET name_index = NULL")
                .execute(conn)
                .map_err(medins_common::db::DbError::from)
        })
        .await
        .expect("clear the name index");
    let without = "SELECT COUNT(*) AS count FROM persons WHERE name_index IS NULL".to_owned();
    assert_eq!(count_where(&stack, without.clone()).await, 1);
    stack.kill_identity().await;
    stack.restart_identity().await;
    assert_eq!(count_where(&stack, without).await, 0, "filled in at start");
    // The same name is still the same person, and the unique index holds it.
    let again = stack
        .persons(Some(&stack.keys.bank))
        .register_person(register(&person.name, &person.id_number, &person.phone))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.person.unwrap().person_id, person_id);
    stack.shutdown().await;
}
