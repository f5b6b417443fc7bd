//! Persons: registration, masked views, resolution, GB 11643 validation.

use chrono::Datelike;
use medins_proto::identity::v1::{
    GetPersonRequest, RealNameStatus, RegisterPersonRequest, ResolvePersonRequest, SendSmsCodeRequest, Sex, SmsPurpose,
    VerifySmsCodeRequest,
};
use tonic::Code;

use crate::support::{SeedPerson, Stack, bad_fields, privacy, reason};

fn register(person: &SeedPerson) -> RegisterPersonRequest {
    RegisterPersonRequest {
        name: person.name.clone(),
        id_number: person.id_number.clone(),
        phone: person.phone.clone(),
    }
}

#[tokio::test]
async fn the_gb_11643_example_registers_with_derived_facts_and_a_masked_view() {
    let stack = Stack::start().await;
    privacy::sensitive("11010519491231002X");
    privacy::sensitive("13812341234");
    let registered = stack
        .persons(Some(&stack.keys.bank))
        .register_person(RegisterPersonRequest {
            name: "张三".into(),
            id_number: "11010519491231002x".into(),
            phone: "+86 138 1234 1234".into(),
        })
        .await
        .expect("register")
        .into_inner();
    assert!(registered.created);
    let view = registered.person.unwrap();
    assert_eq!(view.masked_id_number, "110105***********X");
    assert_eq!(view.masked_name, "*三");
    assert_eq!(view.masked_phone, "138****1234");
    assert_eq!(view.region_code, "110105");
    assert_eq!(view.sex, Sex::Female as i32);
    // No birth date: only the age reached this calendar year (born 1949-12-31).
    assert_eq!(view.age, stack.clock_today().year() - 1949);
    assert_eq!(view.real_name_status, RealNameStatus::Unverified as i32);

    let fetched = stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: view.person_id.clone() })
        .await
        .expect("get")
        .into_inner()
        .person
        .unwrap();
    assert_eq!(fetched, view);
    stack.shutdown().await;
}

#[tokio::test]
async fn registering_again_with_the_same_name_returns_the_same_person() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let first = persons.register_person(register(&person)).await.unwrap().into_inner();
    let second = persons.register_person(register(&person)).await.unwrap().into_inner();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.person.unwrap().person_id, second.person.unwrap().person_id);
    stack.shutdown().await;
}

#[tokio::test]
async fn another_name_for_an_unconfirmed_number_is_a_new_claim_and_for_a_confirmed_one_name_mismatch() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let first = persons.register_person(register(&person)).await.unwrap().into_inner();
    let mut other = register(&person);
    other.name = "李四".into();
    other.phone = SeedPerson::adult().phone;
    privacy::sensitive(&other.phone);
    // Nobody confirmed the first name: another name is a claim of its own, not a lock-out.
    let claim = persons.register_person(other.clone()).await.unwrap().into_inner();
    assert!(claim.created);
    assert_ne!(claim.person.unwrap().person_id, first.person.as_ref().unwrap().person_id);
    assert_eq!(stack.count_identity_rows("persons").await, 2);

    // Once the authority confirms the first, another name is NAME_MISMATCH.
    let person_id = first.person.unwrap().person_id;
    let mut sms = stack.sms_codes(Some(&stack.keys.bank));
    let challenge = sms
        .send_sms_code(SendSmsCodeRequest {
            person_id: person_id.clone(),
            purpose: SmsPurpose::RealName as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .challenge_id;
    let code = stack.sms.last_code(&person.phone);
    sms.verify_sms_code(VerifySmsCodeRequest { challenge_id: challenge.clone(), code }).await.unwrap();
    persons
        .complete_real_name(medins_proto::identity::v1::CompleteRealNameRequest { person_id, challenge_id: challenge })
        .await
        .unwrap();
    other.name = "王五".into();
    let error = persons.register_person(other).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "NAME_MISMATCH");
    assert_eq!(stack.count_identity_rows("persons").await, 2);
    stack.shutdown().await;
}

#[tokio::test]
async fn resolve_creates_an_unverified_person_once_and_another_name_is_another_claim() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut persons = stack.persons(Some(&stack.keys.service));
    let request = ResolvePersonRequest { name: person.name.clone(), id_number: person.id_number.clone() };
    let first = persons.resolve_person(request.clone()).await.unwrap().into_inner();
    let second = persons.resolve_person(request.clone()).await.unwrap().into_inner();
    assert!(first.created && !second.created);
    assert_eq!(first.person.as_ref().unwrap().person_id, second.person.as_ref().unwrap().person_id);
    assert_eq!(first.person.as_ref().unwrap().masked_phone, "", "no phone is known yet");
    let other = persons
        .resolve_person(ResolvePersonRequest { name: "王五".into(), id_number: person.id_number.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(other.created, "an unconfirmed name never blocks another");
    assert_ne!(other.person.unwrap().person_id, first.person.unwrap().person_id);
    stack.shutdown().await;
}

#[tokio::test]
async fn invalid_id_numbers_are_refused_with_a_field_violation_and_store_nothing() {
    let stack = Stack::start().await;
    let today = stack.clock_today();
    let tomorrow = today.succ_opt().unwrap();
    let future_first17 = format!("110105{}123", tomorrow.format("%Y%m%d"));
    let future = format!("{future_first17}{}", identity_svc::domain::id_number::check_character(&future_first17));
    let cases = [
        ("wrong check character", "110105194912310021".to_owned()),
        ("impossible date", {
            let first17 = "11010519990230123";
            format!("{first17}{}", identity_svc::domain::id_number::check_character(first17))
        }),
        ("future birth date", future),
        ("17 characters", "11010519491231002".to_owned()),
        ("19 characters", "11010519491231002X1".to_owned()),
        ("a letter inside", "1101051949A231002X".to_owned()),
    ];
    let mut persons = stack.persons(Some(&stack.keys.bank));
    for (case, id_number) in cases {
        privacy::sensitive(&id_number);
        let error = persons
            .register_person(RegisterPersonRequest { name: "张三".into(), id_number, phone: "13812341234".into() })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{case}");
        assert_eq!(reason(&error), "INVALID_ID_NUMBER", "{case}");
        assert_eq!(bad_fields(&error), vec!["id_number".to_owned()], "{case}");
    }
    assert_eq!(stack.count_identity_rows("persons").await, 0, "nothing was stored");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_bad_phone_and_an_empty_name_are_field_errors() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let mut bad_phone = register(&person);
    bad_phone.phone = "12345".into();
    let error = persons.register_person(bad_phone).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::InvalidArgument, "INVALID_PHONE"));
    assert_eq!(bad_fields(&error), vec!["phone".to_owned()]);
    let mut no_name = register(&person);
    no_name.name = "  ".into();
    let error = persons.register_person(no_name).await.unwrap_err();
    // Every name refusal, an empty name included, is INVALID_NAME (the one name rule).
    assert_eq!((error.code(), reason(&error).as_str()), (Code::InvalidArgument, "INVALID_NAME"));
    assert_eq!(bad_fields(&error), vec!["name".to_owned()]);
    stack.shutdown().await;
}

#[tokio::test]
async fn get_person_of_an_unknown_or_malformed_id() {
    let stack = Stack::start().await;
    let mut persons = stack.persons(Some(&stack.keys.ops));
    let missing =
        persons.get_person(GetPersonRequest { person_id: uuid::Uuid::now_v7().to_string() }).await.unwrap_err();
    assert_eq!((missing.code(), reason(&missing).as_str()), (Code::NotFound, "PERSON_NOT_FOUND"));
    let malformed = persons.get_person(GetPersonRequest { person_id: "not-a-uuid".into() }).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&malformed), vec!["person_id".to_owned()]);
    stack.shutdown().await;
}
