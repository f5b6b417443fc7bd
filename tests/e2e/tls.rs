//! TLS on every edge (docs/tls.md): partners over TLS, keys pinned to client certificates,
//! certificates rotated under running servers, the services' own calls over TLS, webhooks over
//! https, and plaintext refused where it would leave the machine.

use std::{sync::Arc, time::Duration};

use medins_common::{
    auth::{CertificatePin, PartnerKind, PartnersFile, RateLimit},
    tls::dev::DevCa,
    webhook::testing::{FakeResponse, FakeWebhookServer},
};
use medins_proto::{
    identity::v1::{
        FacePurpose, FaceSessionStatus, GetPublicKeysRequest, SendSmsCodeRequest, SmsPurpose as ProtoSmsPurpose,
        SubmitFaceResultRequest, person_token_service_client::PersonTokenServiceClient,
    },
    insurance::v1::Scheme,
};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

use crate::support::{CallerInterceptor, SeedPerson, Stack, StackOptions, channel, reason, tls_channel};

fn tls_stack_options() -> StackOptions {
    StackOptions { tls: true, ..StackOptions::default() }
}

/// The certificate a TLS server at `addr` presents to a new connection, and the protocol
/// version negotiated.
async fn presented_certificate(
    addr: std::net::SocketAddr,
    ca_file: &std::path::Path,
) -> (Vec<u8>, Option<rustls::ProtocolVersion>) {
    let config = medins_common::tls::client_config(Some(ca_file), &[b"h2"]).expect("client config");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.expect("handshake");
    let session = tls.get_ref().1;
    let leaf = session.peer_certificates().and_then(|chain| chain.first()).expect("a certificate").to_vec();
    (leaf, session.protocol_version())
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM").to_vec()
}

type TokenClient = PersonTokenServiceClient<InterceptedService<Channel, CallerInterceptor>>;

fn token_client(channel: Channel, key: &str) -> TokenClient {
    PersonTokenServiceClient::with_interceptor(channel, crate::support::interceptor(Some(key)))
}

#[tokio::test]
async fn partners_call_over_tls_and_the_services_call_each_other_over_it() {
    let stack = Stack::start_with(tls_stack_options()).await;
    let tls = stack.tls.as_ref().expect("tls stack");

    // TLS 1.3 is what a current client gets; the certificate is the configured one.
    let (leaf, version) = presented_certificate(stack.identity_addr, &tls.ca_file).await;
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(leaf, pem_der(&std::fs::read_to_string(&tls.server_cert).unwrap()));

    // A plaintext client gets nowhere.
    let plain = token_client(channel(stack.identity_addr), &stack.keys.bank)
        .get_public_keys(GetPublicKeysRequest {})
        .await
        .expect_err("plaintext to a TLS port");
    assert_ne!(plain.code(), Code::Ok);

    // A partner over TLS (no client certificate: mutual TLS is optional for unpinned keys).
    let person = SeedPerson::adult();
    let person_id = stack.register_at(&stack.keys.bank, &person).await;

    // insurance-svc -> identity-svc over TLS, with insurance-svc's client certificate: opening
    // an account by name and ID number resolves the person at identity-svc.
    let opened = stack
        .open_account_by_identity(&stack.keys.bank, &person, Scheme::Employee, "ACME-01")
        .await
        .expect("open account: insurance-svc reached identity-svc over TLS");
    assert_eq!(opened.person_id, person_id);

    // identity-svc's outbox -> insurance-svc over TLS: a passed face session arrives there.
    let session_id = stack.start_face_session(&stack.keys.ops, None, &person_id, FacePurpose::VoucherActivation).await;
    let submitted = stack
        .faces(Some(&stack.keys.face_provider))
        .submit_face_result(SubmitFaceResultRequest {
            session_id: session_id.clone(),
            liveness_passed: true,
            similarity: 0.93,
            provider_reference: "p-tls".into(),
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(submitted.session.expect("session").status, FaceSessionStatus::Passed as i32);
    let mut delivered = false;
    for _ in 0..400 {
        if crate::outbox::received(&stack).await.contains(&session_id) {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(delivered, "the outbox delivered the outcome to insurance-svc over TLS");
    stack.shutdown().await;
}

/// Binds the extra partner's keys to `pin` and reloads both services.
fn pin_extra_partner(stack: &Stack, pin: CertificatePin) {
    let mut file = PartnersFile::load(&stack.partners_file).expect("partners");
    file.set_client_certificate("pinned-bank", Some(pin)).expect("pin");
    file.save(&stack.partners_file).expect("save");
    stack.identity_partners.reload().expect("reload identity");
    stack.insurance_partners.reload().expect("reload insurance");
}

#[tokio::test]
async fn a_pinned_key_is_accepted_only_over_its_client_certificate() {
    let stack = Stack::start_with(StackOptions {
        extra_partner: Some(("pinned-bank".into(), PartnerKind::Bank, RateLimit::default())),
        ..tls_stack_options()
    })
    .await;
    let tls = stack.tls.as_ref().expect("tls stack");
    let key = stack.extra_key.clone().expect("extra key");
    let ca = tls.ca.cert_pem().to_owned();
    let own = tls.ca.issue_client("pinned-bank").expect("certificate");
    // Same CA, same name, another key.
    let another = tls.ca.issue_client("pinned-bank").expect("certificate");
    let stranger = tls.ca.issue_client("someone-else").expect("certificate");

    let call = |identity: Option<&medins_common::tls::dev::Issued>| {
        let channel = tls_channel(
            stack.identity_addr,
            &ca,
            identity.map(|issued| (issued.cert_pem.as_str(), issued.key_pem.as_str())),
        );
        let mut client = token_client(channel, &key);
        async move { client.get_public_keys(GetPublicKeysRequest {}).await.map(|_| ()) }
    };

    // Unpinned, the key works with or without a certificate.
    call(None).await.expect("unpinned key without a certificate");
    call(Some(&another)).await.expect("unpinned key with any certificate of the CA");

    pin_extra_partner(
        &stack,
        CertificatePin { spki_sha256: Some(hex::encode(own.spki_sha256())), subject: Some("pinned-bank".into()) },
    );
    call(Some(&own)).await.expect("the pinned certificate");
    for (what, identity) in [("another certificate", Some(&another)), ("no certificate", None)] {
        let status = call(identity).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        assert_eq!(reason(&status), "CLIENT_CERTIFICATE_MISMATCH", "{what}");
    }
    // The same at insurance-svc, which reads the same partners file.
    let mut accounts = medins_proto::insurance::v1::account_service_client::AccountServiceClient::with_interceptor(
        tls_channel(stack.insurance_addr, &ca, Some((&another.cert_pem, &another.key_pem))),
        crate::support::interceptor(Some(&key)),
    );
    let status = accounts
        .get_account(medins_proto::insurance::v1::GetAccountRequest {
            key: Some(medins_proto::insurance::v1::get_account_request::Key::PersonId(
                uuid::Uuid::now_v7().to_string(),
            )),
        })
        .await
        .expect_err("another certificate at insurance-svc");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::Unauthenticated, "CLIENT_CERTIFICATE_MISMATCH"));
    // Other partners are unaffected.
    let mut bank = token_client(stack.identity_channel(), &stack.keys.bank);
    bank.get_public_keys(GetPublicKeysRequest {}).await.expect("an unpinned partner without a certificate");

    // Pinned by name only: any certificate of the client CA carrying the name.
    pin_extra_partner(&stack, CertificatePin { spki_sha256: None, subject: Some("pinned-bank".into()) });
    call(Some(&own)).await.expect("the name, first key");
    call(Some(&another)).await.expect("the name, second key");
    let status = call(Some(&stranger)).await.expect_err("another name");
    assert_eq!(reason(&status), "CLIENT_CERTIFICATE_MISMATCH");

    // A certificate of another CA does not even complete the handshake.
    let outsider = DevCa::generate().expect("ca").issue_client("pinned-bank").expect("certificate");
    let status = call(Some(&outsider)).await.expect_err("a certificate the client CA did not issue");
    assert_ne!(status.code(), Code::Ok);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_certificate_rotated_under_running_servers_is_served_to_new_connections() {
    let stack = Stack::start_with(tls_stack_options()).await;
    let tls = stack.tls.as_ref().expect("tls stack");
    let (before, _) = presented_certificate(stack.insurance_addr, &tls.ca_file).await;
    let open = token_client(stack.identity_channel(), &stack.keys.bank);
    let mut open_client = open.clone();
    open_client.get_public_keys(GetPublicKeysRequest {}).await.expect("before rotation");

    let rotated = tls.issue_server();
    rotated.write(&tls.server_cert, &tls.server_key).expect("rotate");
    let expected = pem_der(&rotated.cert_pem);
    assert_ne!(before, expected);
    // Both servers watch the files; poll new connections (bounded) until each shows the new one.
    for addr in [stack.identity_addr, stack.insurance_addr] {
        let mut seen = false;
        for _ in 0..400 {
            if presented_certificate(addr, &tls.ca_file).await.0 == expected {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(seen, "{addr} serves the rotated certificate to new connections");
    }
    // A new gRPC connection works with it, and so does the one opened before the rotation.
    token_client(stack.identity_channel(), &stack.keys.bank)
        .get_public_keys(GetPublicKeysRequest {})
        .await
        .expect("new connection after rotation");
    open_client.get_public_keys(GetPublicKeysRequest {}).await.expect("connection opened before rotation");
    stack.shutdown().await;
}

#[tokio::test]
async fn sms_codes_reach_an_https_gateway_with_its_own_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let gateway_ca = DevCa::generate().expect("gateway CA");
    let gateway_cert = gateway_ca.issue_server(&["localhost".into()]).expect("gateway certificate");
    let gateway =
        FakeWebhookServer::start_tls(vec![FakeResponse::new(200, "{}")], &gateway_cert.cert_pem, &gateway_cert.key_pem)
            .await;
    let ca_file = dir.path().join("gateway-ca.pem");
    std::fs::write(&ca_file, gateway_ca.cert_pem()).expect("write CA");
    assert!(gateway.url().starts_with("https://"));
    let stack =
        Stack::start_with(StackOptions { sms_webhook: Some((gateway.url(), ca_file)), ..tls_stack_options() }).await;

    let person = SeedPerson::adult();
    let person_id = stack.register_at(&stack.keys.bank, &person).await;
    stack
        .sms_codes(Some(&stack.keys.bank))
        .send_sms_code(SendSmsCodeRequest {
            phone: String::new(),
            purpose: ProtoSmsPurpose::RealName as i32,
            person_id,
        })
        .await
        .expect("send a code through the https gateway");
    let requests = gateway.requests();
    assert_eq!(requests.len(), 1, "the gateway got the code over https");
    let body = requests[0].json();
    assert!(body["phone"].as_str().is_some_and(|phone| phone.ends_with(&person.phone)), "the person's phone");
    assert!(body["code"].as_str().is_some_and(|code| code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())));
    stack.shutdown().await;
}

#[tokio::test]
async fn plaintext_beyond_loopback_is_refused_at_start() {
    let stack = Stack::start().await;
    let (config, dependencies) = stack.identity_setup();

    // An http:// SMS gateway elsewhere.
    let mut plaintext_sms = config.clone();
    plaintext_sms.verification.sms_webhook_url = Some("http://sms.example.com/send".into());
    let error = identity_svc::IdentityService::build(
        plaintext_sms,
        identity_svc::Dependencies { sms_sender: None, ..dependencies.clone() },
    )
    .await
    .err()
    .expect("an http:// webhook beyond loopback is refused");
    let text = format!("{error:#}");
    assert!(text.contains("--sms-webhook-url") && text.contains("loopback"), "{text}");

    // An http:// identity authority elsewhere.
    let mut plaintext_authority = config.clone();
    plaintext_authority.verification.identity_authority_url = Some("http://10.20.30.40/check".into());
    let error = identity_svc::IdentityService::build(
        plaintext_authority,
        identity_svc::Dependencies { identity_authority: None, ..dependencies.clone() },
    )
    .await
    .err()
    .expect("an http:// authority beyond loopback is refused");
    assert!(format!("{error:#}").contains("--identity-authority-url"), "{error:#}");

    // insurance-svc: the relationship authority, and identity-svc itself, over http:// elsewhere.
    let mut relationship = stack.insurance_setup();
    relationship.relationship_authority_url = Some("http://authority.example.org/verify".into());
    let error = insurance_svc::InsuranceService::build(relationship, Default::default())
        .await
        .err()
        .expect("an http:// relationship authority beyond loopback is refused");
    assert!(format!("{error:#}").contains("--relationship-authority-url"), "{error:#}");
    let mut peer = stack.insurance_setup();
    peer.identity_url = "http://identity.example.org:50051".into();
    let error = insurance_svc::InsuranceService::build(peer, Default::default())
        .await
        .err()
        .expect("identity-svc over http:// beyond loopback is refused");
    assert!(format!("{error:#}").contains("plaintext"), "{error:#}");

    // Serving plaintext on an address that is not loopback, unless asked for.
    let service = insurance_svc::InsuranceService::build(stack.insurance_setup(), Default::default())
        .await
        .expect("build another replica");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let error = service.serve(listener, async {}).await.expect_err("plaintext on 0.0.0.0 is refused");
    assert!(format!("{error:#}").contains("--insecure-plaintext"), "{error:#}");
    stack.shutdown().await;
}
