//! Idempotency keys (docs/architecture.md#retries-and-idempotency): one outcome per (partner, key),
//! replayed on retry, refused for another request, never stored for a failure.

use medins_proto::{
    identity::v1::RegisterPersonRequest,
    insurance::v1::{OpenAccountRequest, PersonIdentity, Scheme, open_account_request},
};
use tonic::Code;

use crate::support::{SeedPerson, Stack, bad_fields, reason, with_idempotency_key};

fn open(person: &SeedPerson, region_code: &str) -> OpenAccountRequest {
    OpenAccountRequest {
        person: Some(open_account_request::Person::Identity(PersonIdentity {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
        })),
        scheme: Scheme::Resident as i32,
        region_code: region_code.into(),
        employer_code: String::new(),
    }
}

fn register(person: &SeedPerson) -> RegisterPersonRequest {
    RegisterPersonRequest {
        name: person.name.clone(),
        id_number: person.id_number.clone(),
        phone: person.phone.clone(),
    }
}

#[tokio::test]
async fn thirty_two_concurrent_open_accounts_with_one_key_open_one_account_and_all_succeed() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let request = open(&person, "110105");
    let client = stack.accounts(Some(&stack.keys.bank));
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                client.open_account(with_idempotency_key(request, "open-once-7f3a")).await.map(|r| r.into_inner())
            })
        })
        .collect();
    let mut account_ids = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        let response = call.await.expect("task").unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
        account_ids.push(response.account.expect("account").account_id);
    }
    account_ids.dedup();
    assert_eq!(account_ids.len(), 1, "every call answered the same account: {account_ids:?}");
    assert_eq!(stack.count_insurance_rows("accounts").await, 1);
    assert_eq!(stack.count_insurance_rows("idempotency_records").await, 1);
    assert_eq!(stack.count_identity_rows("persons").await, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn the_same_key_with_a_different_request_is_idempotency_key_mismatch() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    let first =
        accounts.open_account(with_idempotency_key(open(&person, "110105"), "k-mismatch")).await.expect("first");
    let error = accounts.open_account(with_idempotency_key(open(&person, "310101"), "k-mismatch")).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "IDEMPOTENCY_KEY_MISMATCH");
    assert_eq!(stack.count_insurance_rows("accounts").await, 1);
    // The stored outcome is intact: the original request still replays it.
    let replay =
        accounts.open_account(with_idempotency_key(open(&person, "110105"), "k-mismatch")).await.expect("replay");
    assert_eq!(replay.into_inner().account, first.into_inner().account);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_success_returns_the_same_account_not_already_open() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    let first = accounts
        .open_account(with_idempotency_key(open(&person, "110105"), "k-retry"))
        .await
        .expect("first")
        .into_inner()
        .account
        .unwrap();
    let retry = accounts
        .open_account(with_idempotency_key(open(&person, "110105"), "k-retry"))
        .await
        .expect("retry with the same key")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(retry, first);
    // Without the key the same request is a second open, refused.
    let error = accounts.open_account(open(&person, "110105")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::AlreadyExists, "ACCOUNT_ALREADY_OPEN"));
    // Keys are per partner: another partner's same key is a new call, refused the same way.
    let error = stack
        .accounts(Some(&stack.keys.ops))
        .open_account(with_idempotency_key(open(&person, "110105"), "k-retry"))
        .await
        .unwrap_err();
    assert_eq!(reason(&error), "ACCOUNT_ALREADY_OPEN");
    assert_eq!(stack.count_insurance_rows("accounts").await, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_invalid_argument_and_opens_nothing() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    for key in ["k".repeat(200), " ".into()] {
        let error = accounts.open_account(with_idempotency_key(open(&person, "110105"), &key)).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "key of {} chars", key.len());
        assert_eq!(reason(&error), "IDEMPOTENCY_KEY_INVALID");
        assert_eq!(bad_fields(&error), vec!["idempotency-key".to_owned()]);
    }
    assert_eq!(stack.count_insurance_rows("accounts").await, 0);
    assert_eq!(stack.count_insurance_rows("idempotency_records").await, 0);
    // 128 characters is the longest accepted key.
    accounts.open_account(with_idempotency_key(open(&person, "110105"), &"k".repeat(128))).await.expect("128 ok");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_failed_call_stores_no_outcome_and_the_key_can_be_reused() {
    let stack = Stack::start().await;
    // Registered and confirmed by the authority: another name is NAME_MISMATCH.
    let person = stack.front_door_person(&stack.keys.bank).await.seed;
    let other_name = SeedPerson::adult().name;
    assert_ne!(other_name, person.name);
    let impostor = SeedPerson { name: other_name, ..person.clone() };

    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    for attempt in 0..2 {
        let error = accounts.open_account(with_idempotency_key(open(&impostor, "110105"), "k-fail")).await.unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition, "attempt {attempt}");
        assert_eq!(reason(&error), "NAME_MISMATCH", "attempt {attempt}");
        assert_eq!(stack.count_insurance_rows("idempotency_records").await, 0, "attempt {attempt}");
    }
    let opened = accounts
        .open_account(with_idempotency_key(open(&person, "110105"), "k-fail"))
        .await
        .expect("the same key with the correct request")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(stack.count_insurance_rows("accounts").await, 1);
    // Now the key is taken by the successful outcome.
    let error = accounts.open_account(with_idempotency_key(open(&impostor, "110105"), "k-fail")).await.unwrap_err();
    assert_eq!(reason(&error), "IDEMPOTENCY_KEY_MISMATCH");
    let replay = accounts
        .open_account(with_idempotency_key(open(&person, "110105"), "k-fail"))
        .await
        .expect("replay")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(replay, opened);
    stack.shutdown().await;
}

#[tokio::test]
async fn register_person_retried_with_its_key_replays_the_first_outcome() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let first =
        persons.register_person(with_idempotency_key(register(&person), "reg-1")).await.expect("first").into_inner();
    let retry =
        persons.register_person(with_idempotency_key(register(&person), "reg-1")).await.expect("retry").into_inner();
    assert!(first.created);
    // The stored outcome is replayed as it was (a fresh call would say created = false).
    assert_eq!(retry, first);
    let fresh = persons.register_person(register(&person)).await.expect("no key").into_inner();
    assert!(!fresh.created);
    assert_eq!(fresh.person.unwrap().person_id, first.person.unwrap().person_id);
    assert_eq!(stack.count_identity_rows("persons").await, 1);
    stack.shutdown().await;
}
