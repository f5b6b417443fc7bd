//! Server hardening as a partner sees it (docs/architecture.md#server-hardening): message size
//! limits, malformed requests. (Unknown and `_UNSPECIFIED` enum values: accounts.rs.)

use medins_proto::{
    identity::v1::RegisterPersonRequest,
    insurance::v1::{GetAccountRequest, OpenAccountRequest, Scheme},
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{SeedPerson, Stack, bad_fields, reason};

#[tokio::test]
async fn an_oversized_message_is_message_too_large_and_stores_nothing() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let error = persons
        .register_person(RegisterPersonRequest {
            name: "x".repeat(100 * 1024),
            id_number: person.id_number.clone(),
            phone: person.phone.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert_eq!(reason(&error), "MESSAGE_TOO_LARGE");
    let info = error.get_details_error_info().expect("error info");
    assert_eq!(info.metadata.get("max_bytes").map(String::as_str), Some("65536"));
    assert_eq!(stack.count_identity_rows("persons").await, 0);
    assert_eq!(stack.count_identity_rows("idempotency_records").await, 0);

    // Just under the limit the message reaches the handler, which judges the name.
    let error = persons
        .register_person(RegisterPersonRequest {
            name: "x".repeat(60 * 1024),
            id_number: person.id_number.clone(),
            phone: person.phone.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&error), vec!["name".to_owned()]);
    // The connection is still usable afterwards.
    persons
        .register_person(RegisterPersonRequest {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
            phone: person.phone.clone(),
        })
        .await
        .expect("a normal call on the same channel");
    assert_eq!(stack.count_identity_rows("persons").await, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_get_account_with_neither_key_set_is_invalid_argument() {
    let stack = Stack::start().await;
    let error = stack.accounts(Some(&stack.keys.ops)).get_account(GetAccountRequest { key: None }).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(reason(&error), "INVALID_ARGUMENT");
    assert_eq!(bad_fields(&error), vec!["key".to_owned()]);
    stack.shutdown().await;
}

#[tokio::test]
async fn an_open_account_without_a_person_is_invalid_argument_and_opens_nothing() {
    let stack = Stack::start().await;
    let error = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(OpenAccountRequest {
            person: None,
            scheme: Scheme::Resident as i32,
            region_code: "110105".into(),
            employer_code: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(reason(&error), "INVALID_ARGUMENT");
    assert_eq!(bad_fields(&error), vec!["person".to_owned()]);
    assert_eq!(stack.count_insurance_rows("accounts").await, 0);
    stack.shutdown().await;
}
