//! Register -> open account -> get account, and the account rules.

use medins_proto::{
    identity::v1::RegisterPersonRequest,
    insurance::v1::{
        AccountStatus, GetAccountRequest, OpenAccountRequest, PersonIdentity, Scheme, get_account_request,
        open_account_request,
    },
};
use tonic::Code;

use crate::support::{SeedPerson, Stack, bad_fields, reason};

fn open_by_identity(person: &SeedPerson, scheme: Scheme, employer_code: &str) -> OpenAccountRequest {
    OpenAccountRequest {
        person: Some(open_account_request::Person::Identity(PersonIdentity {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
        })),
        scheme: scheme as i32,
        region_code: "110105".into(),
        employer_code: employer_code.into(),
    }
}

#[tokio::test]
async fn register_then_open_then_get_account() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let registered = stack
        .persons(Some(&stack.keys.bank))
        .register_person(RegisterPersonRequest {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
            phone: person.phone.clone(),
        })
        .await
        .expect("register")
        .into_inner();
    let person_id = registered.person.unwrap().person_id;

    let opened = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(open_by_identity(&person, Scheme::Employee, "ACME-01"))
        .await
        .expect("open")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(opened.person_id, person_id, "the account belongs to the registered person");
    assert_eq!(opened.status, AccountStatus::Active as i32);
    assert_eq!(opened.balance_cents, 0);
    assert_eq!(opened.employer_code, "ACME-01");

    // Read by person id as operators (a hospital or app needs the person's token: see
    // tests/e2e/access.rs).
    let by_person = stack
        .accounts(Some(&stack.keys.ops))
        .get_account(GetAccountRequest { key: Some(get_account_request::Key::PersonId(person_id.clone())) })
        .await
        .expect("get by person")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(by_person, opened);
    let by_id = stack
        .accounts(Some(&stack.keys.ops))
        .get_account(GetAccountRequest { key: Some(get_account_request::Key::AccountId(opened.account_id.clone())) })
        .await
        .expect("get by id")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(by_id, opened);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_person_has_one_open_account() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    accounts.open_account(open_by_identity(&person, Scheme::Resident, "")).await.expect("first open");
    let second = accounts.open_account(open_by_identity(&person, Scheme::Resident, "")).await.unwrap_err();
    assert_eq!(second.code(), Code::AlreadyExists);
    assert_eq!(reason(&second), "ACCOUNT_ALREADY_OPEN");
    stack.shutdown().await;
}

#[tokio::test]
async fn opening_for_a_confirmed_number_with_another_name_is_name_mismatch() {
    let stack = Stack::start().await;
    // Only a name the identity authority confirmed blocks another (an unconfirmed one would be
    // another claim: see the claims tests).
    let person = stack.front_door_person(&stack.keys.bank).await.seed;
    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    accounts.open_account(open_by_identity(&person, Scheme::Resident, "")).await.expect("open");
    let impostor = SeedPerson { name: "冒名者".into(), ..person.clone() };
    let error = accounts.open_account(open_by_identity(&impostor, Scheme::Resident, "")).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "NAME_MISMATCH");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_bad_id_number_is_reported_on_the_open_account_field() {
    let stack = Stack::start().await;
    let mut person = SeedPerson::adult();
    person.id_number.replace_range(17.., if person.id_number.ends_with('0') { "1" } else { "0" });
    let error = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(open_by_identity(&person, Scheme::Resident, ""))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(reason(&error), "INVALID_ID_NUMBER");
    assert_eq!(bad_fields(&error), vec!["identity.id_number".to_owned()]);
    stack.shutdown().await;
}

#[tokio::test]
async fn unspecified_and_unknown_schemes_are_invalid_and_open_nothing() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    for scheme in [0, 99] {
        let mut request = open_by_identity(&person, Scheme::Resident, "");
        request.scheme = scheme;
        let error = accounts.open_account(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "scheme {scheme}");
        assert_eq!(reason(&error), "INVALID_ENUM_VALUE");
        assert_eq!(bad_fields(&error), vec!["scheme".to_owned()]);
    }
    // Nothing was opened: the first valid open succeeds.
    accounts.open_account(open_by_identity(&person, Scheme::Resident, "")).await.expect("open");
    stack.shutdown().await;
}

#[tokio::test]
async fn get_account_of_an_unknown_person_is_not_found() {
    let stack = Stack::start().await;
    let error = stack
        .accounts(Some(&stack.keys.ops))
        .get_account(GetAccountRequest {
            key: Some(get_account_request::Key::PersonId(uuid::Uuid::now_v7().to_string())),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(reason(&error), "ACCOUNT_NOT_FOUND");
    stack.shutdown().await;
}
