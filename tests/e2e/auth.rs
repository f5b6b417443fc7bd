//! Who may call what (docs/architecture.md#who-may-call-what): API keys, scopes, revocation on
//! reload, public health and reflection, per-partner rate limits.

use std::time::Duration;

use medins_common::auth::{PartnerKind, PartnersFile, RateLimit};
use medins_proto::{
    identity::v1::{GetPersonRequest, RegisterPersonRequest},
    insurance::v1::{
        GetAccountRequest, OpenAccountRequest, PersonIdentity, Scheme, get_account_request, open_account_request,
    },
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request,
    server_reflection_response,
};
use tonic_types::StatusExt;

use crate::support::{SeedPerson, Stack, StackOptions, channel, reason};

const WRONG_KEY: &str = "mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn register(person: &SeedPerson) -> RegisterPersonRequest {
    RegisterPersonRequest {
        name: person.name.clone(),
        id_number: person.id_number.clone(),
        phone: person.phone.clone(),
    }
}

fn open(person: &SeedPerson) -> OpenAccountRequest {
    OpenAccountRequest {
        person: Some(open_account_request::Person::Identity(PersonIdentity {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
        })),
        scheme: Scheme::Resident as i32,
        region_code: "110105".into(),
        employer_code: String::new(),
    }
}

fn get_person(person_id: &str) -> GetPersonRequest {
    GetPersonRequest { person_id: person_id.to_owned() }
}

fn get_account_of(person_id: &str) -> GetAccountRequest {
    GetAccountRequest { key: Some(get_account_request::Key::PersonId(person_id.to_owned())) }
}

fn assert_unauthenticated(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(error.code(), Code::Unauthenticated, "{what}");
    assert_eq!(reason(&error), "UNAUTHENTICATED", "{what}");
}

#[tokio::test]
async fn no_key_and_a_wrong_key_are_unauthenticated_on_both_services() {
    let stack = Stack::start().await;
    let some_id = uuid::Uuid::now_v7().to_string();
    for key in [None, Some(WRONG_KEY), Some("not-even-a-medins-key")] {
        assert_unauthenticated(
            stack.persons(key).get_person(get_person(&some_id)).await,
            &format!("identity GetPerson with key {key:?}"),
        );
        assert_unauthenticated(
            stack.accounts(key).get_account(get_account_of(&some_id)).await,
            &format!("insurance GetAccount with key {key:?}"),
        );
    }
    // A valid key gets past authentication to the handler.
    let error = stack.persons(Some(&stack.keys.ops)).get_person(get_person(&some_id)).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let error = stack.accounts(Some(&stack.keys.ops)).get_account(get_account_of(&some_id)).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_key_without_the_scope_is_permission_denied_and_changes_nothing() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();

    for (who, key) in [("hospital", &stack.keys.hospital), ("pharmacy", &stack.keys.pharmacy)] {
        let error = stack.persons(Some(key)).register_person(register(&person)).await.unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied, "{who}");
        assert_eq!(reason(&error), "PERMISSION_DENIED_SCOPE", "{who}");
        let info = error.get_details_error_info().expect("error info");
        assert_eq!(info.metadata.get("scope").map(String::as_str), Some("person.register"), "{who}");
    }
    assert_eq!(stack.count_identity_rows("persons").await, 0);

    for (who, key) in [("face provider", &stack.keys.face_provider), ("mini program", &stack.keys.mini_program)] {
        let error = stack.accounts(Some(key)).open_account(open(&person)).await.unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied, "{who}");
        assert_eq!(reason(&error), "PERMISSION_DENIED_SCOPE", "{who}");
        let info = error.get_details_error_info().expect("error info");
        assert_eq!(info.metadata.get("scope").map(String::as_str), Some("account.open"), "{who}");
    }
    assert_eq!(stack.count_insurance_rows("accounts").await, 0);
    assert_eq!(stack.count_identity_rows("persons").await, 0, "insurance-svc did not resolve the person either");

    // The same calls with keys holding the scopes succeed.
    stack.persons(Some(&stack.keys.bank)).register_person(register(&person)).await.expect("bank registers");
    stack.accounts(Some(&stack.keys.bank)).open_account(open(&person)).await.expect("bank opens");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_after_reload() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let bank = stack.keys.bank.clone();
    let person_id = stack
        .persons(Some(&bank))
        .register_person(register(&person))
        .await
        .expect("register before revocation")
        .into_inner()
        .person
        .unwrap()
        .person_id;
    stack.accounts(Some(&bank)).open_account(open(&person)).await.expect("open before revocation");

    let mut file = PartnersFile::load(&stack.partners_file).expect("load partners");
    assert_eq!(file.revoke_partner("bank", "2026-11-24T00:00:00Z").expect("revoke"), 1);
    file.save(&stack.partners_file).expect("save partners");

    // Until the reload the key still works.
    let again = stack.persons(Some(&bank)).register_person(register(&person)).await.expect("live until reload");
    assert_eq!(again.into_inner().person.unwrap().person_id, person_id);

    stack.identity_partners.reload().expect("reload identity partners");
    stack.insurance_partners.reload().expect("reload insurance partners");

    assert_unauthenticated(stack.persons(Some(&bank)).register_person(register(&person)).await, "identity after");
    assert_unauthenticated(
        stack.accounts(Some(&bank)).get_account(get_account_of(&person_id)).await,
        "insurance after",
    );
    // Other partners are untouched, including insurance-svc's own key at identity-svc.
    stack.persons(Some(&stack.keys.ops)).get_person(get_person(&person_id)).await.expect("ops still works");
    stack.accounts(Some(&stack.keys.ops)).get_account(get_account_of(&person_id)).await.expect("ops still works");
    stack.accounts(Some(&stack.keys.ops)).open_account(open(&SeedPerson::adult())).await.expect("resolve works");
    stack.shutdown().await;
}

#[tokio::test]
async fn health_and_reflection_need_no_key() {
    let stack = Stack::start().await;
    for (addr, service) in [
        (stack.identity_addr, "medins.identity.v1.PersonService"),
        (stack.insurance_addr, "medins.insurance.v1.AccountService"),
    ] {
        let status = HealthClient::new(channel(addr))
            .check(HealthCheckRequest { service: String::new() })
            .await
            .expect("health without a key")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new(channel(addr))
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection without a key")
            .into_inner();
        let response = responses.message().await.expect("reflection answer").expect("one answer");
        let Some(server_reflection_response::MessageResponse::ListServicesResponse(list)) = response.message_response
        else {
            panic!("expected a service list, got {:?}", response.message_response);
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == service), "{names:?}");
        assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_partner_over_its_rate_limit_is_resource_exhausted_with_retry_info() {
    let burst = 3;
    let stack = Stack::start_with(StackOptions {
        extra_partner: Some(("slow-ops".into(), PartnerKind::Ops, RateLimit { per_second: 2.0, burst })),
        ..StackOptions::default()
    })
    .await;
    let person = SeedPerson::adult();
    let person_id = stack
        .persons(Some(&stack.keys.ops))
        .register_person(register(&person))
        .await
        .expect("register")
        .into_inner()
        .person
        .unwrap()
        .person_id;

    let mut slow = stack.persons(stack.extra_key.as_deref());
    for call in 0..burst {
        slow.get_person(get_person(&person_id)).await.unwrap_or_else(|e| panic!("call {call} within the burst: {e:?}"));
    }
    let error = slow.get_person(get_person(&person_id)).await.expect_err("burst + 1 is over the limit");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(reason(&error), "PARTNER_RATE_LIMITED");
    let delay = error.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo with a delay");
    assert!(delay > Duration::ZERO && delay <= Duration::from_millis(500), "delay {delay:?}");

    // Other partners are not limited by it.
    stack.persons(Some(&stack.keys.ops)).get_person(get_person(&person_id)).await.expect("ops is not limited");
    // After the advised delay the partner is admitted again.
    tokio::time::sleep(delay + Duration::from_millis(20)).await;
    slow.get_person(get_person(&person_id)).await.expect("admitted after RetryInfo delay");
    stack.shutdown().await;
}
