//! One trace spans both services: the caller's context travels into insurance-svc, through its
//! identity-svc client span, into identity-svc.

use std::time::Duration;

use medins_proto::insurance::v1::{OpenAccountRequest, PersonIdentity, Scheme, open_account_request};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::support::{SeedPerson, Stack, privacy};

#[tokio::test]
async fn the_identity_span_of_resolve_person_is_a_child_of_the_insurance_client_span() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let root = tracing::info_span!("partner-call");
    let trace_id = root.context().span().span_context().trace_id();
    let mut accounts = stack.accounts(Some(&stack.keys.bank));
    accounts
        .open_account(OpenAccountRequest {
            person: Some(open_account_request::Person::Identity(PersonIdentity {
                name: person.name.clone(),
                id_number: person.id_number.clone(),
            })),
            scheme: Scheme::Resident as i32,
            region_code: "110105".into(),
            employer_code: String::new(),
        })
        .instrument(root.clone())
        .await
        .expect("open");
    drop(root);

    let mut found = None;
    for _ in 0..100 {
        let spans: Vec<_> =
            privacy::finished_spans().into_iter().filter(|s| s.span_context.trace_id() == trace_id).collect();
        let insurance_server = spans
            .iter()
            .find(|s| s.name == "/medins.insurance.v1.AccountService/OpenAccount" && s.span_kind == SpanKind::Server);
        let client = spans
            .iter()
            .find(|s| s.name == "medins.identity.v1.PersonService/ResolvePerson" && s.span_kind == SpanKind::Client);
        let identity_server = spans
            .iter()
            .find(|s| s.name == "/medins.identity.v1.PersonService/ResolvePerson" && s.span_kind == SpanKind::Server);
        if let (Some(insurance_server), Some(client), Some(identity_server)) =
            (insurance_server, client, identity_server)
        {
            found = Some((insurance_server.clone(), client.clone(), identity_server.clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (insurance_server, client, identity_server) = found.expect("all three spans exported in the caller's trace");
    assert_eq!(
        client.parent_span_id,
        insurance_server.span_context.span_id(),
        "client span inside the OpenAccount span"
    );
    assert_eq!(
        identity_server.parent_span_id,
        client.span_context.span_id(),
        "identity span parented on the client span"
    );
    let partner =
        identity_server.attributes.iter().find(|kv| kv.key.as_str() == "partner").map(|kv| kv.value.to_string());
    assert_eq!(partner.as_deref(), Some("insurance-svc"), "the span names the calling partner");
    stack.shutdown().await;
}
