//! Health (docs/architecture.md#server-hardening): SERVING when up, NOT_SERVING when the database
//! is unreachable and while draining before shutdown.

use std::time::{Duration, Instant};

use medins_proto::identity::v1::{GetPersonRequest, RegisterPersonRequest};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::support::{SeedPerson, Stack, StackOptions, channel, privacy, reason};

async fn check(channel: Channel, service: &str) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .map(|response| response.into_inner().status)
}

/// Polls until `service` answers `wanted` or `within` passes; returns the last answer.
async fn poll_until(channel: &Channel, service: &str, wanted: ServingStatus, within: Duration) -> Result<i32, Code> {
    let deadline = Instant::now() + within;
    loop {
        let status = check(channel.clone(), service).await.map_err(|s| s.code());
        if status == Ok(wanted as i32) || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn both_services_are_serving_overall_and_by_service_name() {
    let stack = Stack::start().await;
    for (channel, own, other) in [
        (stack.identity_channel(), "medins.identity.v1.PersonService", "medins.insurance.v1.AccountService"),
        (stack.insurance_channel(), "medins.insurance.v1.AccountService", "medins.identity.v1.PersonService"),
    ] {
        for service in ["", own] {
            let status = check(channel.clone(), service).await.expect("health");
            assert_eq!(status, ServingStatus::Serving as i32, "{own}: service {service:?}");
        }
        // A service the server does not run is unknown to its health service.
        let error = check(channel.clone(), other).await.expect_err("another server's service");
        assert_eq!(error.code(), Code::NotFound, "{own} asked about {other}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn identity_goes_not_serving_when_its_database_is_unreachable_and_calls_fail_unavailable() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let person_id = persons
        .register_person(RegisterPersonRequest {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
            phone: person.phone.clone(),
        })
        .await
        .expect("register")
        .into_inner()
        .person
        .unwrap()
        .person_id;

    stack.databases.break_identity_database();

    let identity = stack.identity_channel();
    for service in ["", "medins.identity.v1.PersonService"] {
        let status = poll_until(&identity, service, ServingStatus::NotServing, Duration::from_secs(3)).await;
        assert_eq!(status, Ok(ServingStatus::NotServing as i32), "identity service {service:?}");
    }
    assert!(privacy::logs().contains("database unreachable: NOT_SERVING"), "operators see why in the logs");
    // insurance-svc's own database is fine.
    let status = check(stack.insurance_channel(), "").await.expect("insurance health");
    assert_eq!(status, ServingStatus::Serving as i32);

    let read = stack.persons(Some(&stack.keys.ops)).get_person(GetPersonRequest { person_id: person_id.clone() }).await;
    let other = SeedPerson::adult();
    let write = persons
        .register_person(RegisterPersonRequest {
            name: other.name.clone(),
            id_number: other.id_number.clone(),
            phone: other.phone.clone(),
        })
        .await;
    for (what, result) in [("GetPerson", read.map(|_| ())), ("RegisterPerson", write.map(|_| ()))] {
        let error = result.expect_err(what);
        assert_eq!(error.code(), Code::Unavailable, "{what}: {error:?}");
        assert_eq!(reason(&error), "DATABASE_UNAVAILABLE", "{what}");
    }
    // Health stays NOT_SERVING: the failed calls did not bring the database back.
    let status = check(identity.clone(), "").await.expect("health");
    assert_eq!(status, ServingStatus::NotServing as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn identity_shows_not_serving_during_the_shutdown_grace_then_stops() {
    let grace = Duration::from_secs(1);
    let mut stack = Stack::start_with(StackOptions { shutdown_grace: grace, ..StackOptions::default() }).await;
    let identity = stack.identity_channel();
    let status = check(identity.clone(), "medins.identity.v1.PersonService").await.expect("health");
    assert_eq!(status, ServingStatus::Serving as i32);

    let asked = Instant::now();
    stack.begin_identity_shutdown();
    for service in ["", "medins.identity.v1.PersonService"] {
        let status = poll_until(&identity, service, ServingStatus::NotServing, grace / 2).await;
        assert_eq!(status, Ok(ServingStatus::NotServing as i32), "on the existing channel, service {service:?}");
    }
    assert!(asked.elapsed() < grace, "NOT_SERVING was seen within the grace period");
    // Still answering during the grace period: calls other than health go on working.
    let error = stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: uuid::Uuid::now_v7().to_string() })
        .await
        .unwrap_err();
    assert_eq!(reason(&error), "PERSON_NOT_FOUND");
    assert!(asked.elapsed() < grace, "the call was answered within the grace period");

    assert!(stack.wait_for_identity_to_stop(grace + Duration::from_secs(5)).await, "identity-svc stopped cleanly");
    assert!(asked.elapsed() >= grace, "not before the grace period ended");
    let after = check(channel(stack.identity_addr), "").await.expect_err("nothing listens any more");
    assert_eq!(after.code(), Code::Unavailable);
    // insurance-svc is unaffected.
    let status = check(stack.insurance_channel(), "").await.expect("insurance health");
    assert_eq!(status, ServingStatus::Serving as i32);
    stack.shutdown().await;
}
