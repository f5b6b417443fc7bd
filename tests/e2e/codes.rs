//! Payment codes: activate -> issue -> verify at the counter -> a visit with the holder's masked
//! details; expired, tampered, unknown-key, suspended and replayed codes refused with their
//! reasons; key rotation; person-token keys fetched again after identity-svc rotates; and 500
//! concurrent verifications of one code through two insurance-svc replicas open one visit.

use std::time::Duration;

use diesel::{QueryDsl, RunQueryDsl};
use insurance_svc::{
    domain::code::{CODE_KEY_RING, CODE_TEXT_LEN, CodePayload, sign_code},
    store::schema::visits,
};
use medins_common::{db::DbError, keyring::SigningKeyRing, token::TokenKeyRing};
use medins_proto::{
    identity::v1::{FacePurpose, GetPersonRequest},
    insurance::v1::{
        AccountStatus, ActivateVoucherRequest, ActivationChannel, GetCodeKeysRequest, GetVoucherRequest,
        IssueCodeRequest, IssueCodeResponse, Scheme, SuspendVoucherRequest, VerifyCodeRequest,
    },
};
use tonic::Code;

use crate::support::{Stack, privacy, reason, vouchers::FrontDoorPerson, with_idempotency_key, with_person_token};

/// An insured front-door person of the bank with an ACTIVE voucher.
async fn holder(stack: &Stack) -> FrontDoorPerson {
    let person = stack.front_door_person(&stack.keys.bank).await;
    stack.open_account_for(&person.person_id).await;
    let face = stack.passed_face_session(&stack.keys.bank, &person, FacePurpose::VoucherActivation).await;
    stack
        .vouchers(Some(&stack.keys.bank))
        .activate_voucher(with_person_token(
            ActivateVoucherRequest {
                person_id: person.person_id.clone(),
                channel: ActivationChannel::BankApp as i32,
                face_session_id: face,
            },
            &person.token,
        ))
        .await
        .expect("activate");
    person
}

async fn issue(stack: &Stack, person: &FrontDoorPerson, include_png: bool) -> IssueCodeResponse {
    let issued = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(with_person_token(
            IssueCodeRequest { holder_person_id: person.person_id.clone(), include_png },
            &person.token,
        ))
        .await
        .expect("issue code")
        .into_inner();
    privacy::sensitive_token(&issued.code);
    issued
}

async fn verify(
    stack: &Stack,
    key: &str,
    code: &str,
) -> Result<medins_proto::insurance::v1::VerifyCodeResponse, tonic::Status> {
    stack
        .codes(Some(key))
        .verify_code(VerifyCodeRequest { code: code.to_owned() })
        .await
        .map(tonic::Response::into_inner)
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, expected_reason: &str, case: &str) {
    let status = result.expect_err(case);
    assert_eq!((status.code(), reason(&status).as_str()), (code, expected_reason), "{case}: {}", status.message());
}

async fn visit_count(stack: &Stack) -> i64 {
    stack.count_insurance_rows("visits").await
}

#[tokio::test]
async fn a_verified_code_opens_a_visit_showing_the_holder_masked() {
    let stack = Stack::start().await;
    let person = holder(&stack).await;
    let before = (
        stack.count_insurance_rows("vouchers").await,
        stack.count_insurance_rows("voucher_activations").await,
        stack.count_insurance_rows("idempotency_records").await,
        visit_count(&stack).await,
    );
    let issued = issue(&stack, &person, true).await;
    let after = (
        stack.count_insurance_rows("vouchers").await,
        stack.count_insurance_rows("voucher_activations").await,
        stack.count_insurance_rows("idempotency_records").await,
        visit_count(&stack).await,
    );
    assert_eq!(before, after, "issuing a code writes nothing");
    assert_eq!(issued.code.len(), CODE_TEXT_LEN);
    assert!(issued.code.starts_with("MI1"));
    assert!(issued.png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG when asked");
    assert!(issue(&stack, &person, false).await.png.is_empty(), "no PNG unless asked");
    let keys = stack.codes(Some(&stack.keys.hospital)).get_code_keys(GetCodeKeysRequest {}).await.unwrap().into_inner();
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].key_id, issued.key_id);

    let visit = verify(&stack, &stack.keys.hospital, &issued.code).await.expect("verify");
    let holder = visit.holder.unwrap();
    let shown = stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: person.person_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .person
        .unwrap();
    assert_eq!(holder.person_id, "", "the counter serves the visit: no person id");
    assert_eq!(holder.masked_name, shown.masked_name);
    assert_ne!(holder.masked_name, person.seed.name);
    assert_eq!(holder.sex, if shown.sex == 1 { "MALE" } else { "FEMALE" });
    assert_eq!(holder.age, shown.age);
    assert_eq!(holder.insured_region_code, "110105");
    assert_eq!((holder.scheme, holder.account_status), (Scheme::Resident as i32, AccountStatus::Active as i32));
    let voucher = stack
        .vouchers(Some(&stack.keys.ops))
        .get_voucher(GetVoucherRequest { person_id: person.person_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .voucher
        .unwrap();
    assert_eq!(visit.voucher_id, voucher.voucher_id);

    // The row a settlement refers to.
    let visit_id = visit.visit_id.clone();
    let (partner, key_id): (String, Option<String>) = stack
        .insurance_db
        .run(move |conn| {
            visits::table
                .find(&visit_id)
                .select((visits::partner_id, visits::code_key_id))
                .first(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!((partner.as_str(), key_id.as_deref()), ("hospital", Some(issued.key_id.as_str())));

    // Used once, at any counter.
    assert_refused(
        verify(&stack, &stack.keys.hospital, &issued.code).await,
        Code::FailedPrecondition,
        "CODE_ALREADY_USED",
        "replay",
    );
    assert_refused(
        verify(&stack, &stack.keys.pharmacy, &issued.code).await,
        Code::FailedPrecondition,
        "CODE_ALREADY_USED",
        "replay elsewhere",
    );
    assert_eq!(visit_count(&stack).await, 1);

    // A retry with the same idempotency key gets the first visit back.
    let code = issue(&stack, &person, false).await.code;
    let mut pharmacy = stack.codes(Some(&stack.keys.pharmacy));
    let first =
        pharmacy.verify_code(with_idempotency_key(VerifyCodeRequest { code: code.clone() }, "scan-1")).await.unwrap();
    let retry = pharmacy.verify_code(with_idempotency_key(VerifyCodeRequest { code }, "scan-1")).await.unwrap();
    assert_eq!(first.into_inner(), retry.into_inner());
    assert_eq!(visit_count(&stack).await, 2);
    stack.shutdown().await;
}

#[tokio::test]
async fn expired_tampered_unknown_key_suspended_and_replayed_codes_are_refused() {
    let stack = Stack::start().await;
    let person = holder(&stack).await;
    let hospital = stack.keys.hospital.clone();

    // Expired: 60 s lifetime + 5 s skew.
    let code = issue(&stack, &person, false).await.code;
    stack.clock.advance(chrono::Duration::seconds(66));
    assert_refused(verify(&stack, &hospital, &code).await, Code::FailedPrecondition, "CODE_EXPIRED", "expired");

    // Tampered: any changed character.
    let code = issue(&stack, &person, false).await.code;
    for index in [3, 10, 60, 120, CODE_TEXT_LEN - 1] {
        let mut bytes = code.clone().into_bytes();
        bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_refused(verify(&stack, &hospital, &tampered).await, Code::InvalidArgument, "CODE_INVALID", "tampered");
    }
    assert_refused(verify(&stack, &hospital, "MI1NOTACODE").await, Code::InvalidArgument, "CODE_INVALID", "garbage");

    // Signed by a key insurance-svc does not list (well formed, real voucher).
    let genuine = verify_payload(&code);
    let stranger = SigningKeyRing::generate(CODE_KEY_RING, chrono::Utc::now());
    let (stranger_kid, stranger_key) = stranger.current_signer();
    let foreign_key = CodePayload {
        key_id: medins_common::keyring::kid_random_part(&CODE_KEY_RING, stranger_kid).unwrap(),
        ..genuine
    };
    assert_refused(
        verify(&stack, &hospital, &sign_code(stranger_key, &foreign_key)).await,
        Code::InvalidArgument,
        "CODE_INVALID",
        "unknown key",
    );
    // The right key id with another key.
    assert_refused(
        verify(&stack, &hospital, &sign_code(stranger_key, &genuine)).await,
        Code::InvalidArgument,
        "CODE_INVALID",
        "wrong key",
    );
    assert_eq!(visit_count(&stack).await, 0);

    // The original still verifies; then it is used.
    verify(&stack, &hospital, &code).await.expect("untouched code verifies");
    assert_refused(verify(&stack, &hospital, &code).await, Code::FailedPrecondition, "CODE_ALREADY_USED", "replay");

    // A suspended voucher: issued before the suspension, refused after; no new codes.
    let code = issue(&stack, &person, false).await.code;
    stack
        .vouchers(Some(&stack.keys.bank))
        .suspend_voucher(with_person_token(
            SuspendVoucherRequest { person_id: person.person_id.clone(), reason: "lost phone".into() },
            &person.token,
        ))
        .await
        .expect("suspend");
    assert_refused(verify(&stack, &hospital, &code).await, Code::FailedPrecondition, "VOUCHER_NOT_ACTIVE", "suspended");
    assert_refused(
        stack
            .codes(Some(&stack.keys.bank))
            .issue_code(with_person_token(
                IssueCodeRequest { holder_person_id: person.person_id.clone(), include_png: false },
                &person.token,
            ))
            .await,
        Code::FailedPrecondition,
        "VOUCHER_NOT_ACTIVE",
        "issue while suspended",
    );
    assert_eq!(visit_count(&stack).await, 1);

    // Only points of care verify; only the holder has codes issued.
    assert_refused(
        verify(&stack, &stack.keys.bank, &code).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
        "bank",
    );
    let other = holder(&stack).await;
    assert_refused(
        stack
            .codes(Some(&stack.keys.bank))
            .issue_code(with_person_token(
                IssueCodeRequest { holder_person_id: person.person_id.clone(), include_png: false },
                &other.token,
            ))
            .await,
        Code::PermissionDenied,
        "PERSON_TOKEN_INVALID",
        "another person's token",
    );
    stack.shutdown().await;
}

/// The payload of a genuine code (decoded without verifying: tests forge from it).
fn verify_payload(code: &str) -> CodePayload {
    let mut signed = [0u8; insurance_svc::domain::code::SIGNED_LEN];
    insurance_svc::domain::code::base32_decode_exact(&code[3..], &mut signed).unwrap();
    CodePayload::from_bytes(signed[..insurance_svc::domain::code::PAYLOAD_LEN].try_into().unwrap()).unwrap()
}

#[tokio::test]
async fn a_rotated_code_key_keeps_verifying_its_live_codes() {
    let stack = Stack::start().await;
    let person = holder(&stack).await;
    let old = issue(&stack, &person, false).await;

    // `medins keys rotate-codes` on the file the running server reads.
    let path = stack.code_keys_file();
    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_medins"))
        .args(["keys", "rotate-codes", "--code-keys-file"])
        .arg(&path)
        .output()
        .expect("run medins keys rotate-codes");
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let new_kid = SigningKeyRing::load(CODE_KEY_RING, &path).unwrap().current_kid().to_owned();
    assert!(String::from_utf8_lossy(&rotated.stdout).contains(&new_kid));
    assert_ne!(new_kid, old.key_id);
    let mut codes = stack.codes(Some(&stack.keys.hospital));
    for attempt in 0.. {
        let keys = codes.get_code_keys(GetCodeKeysRequest {}).await.unwrap().into_inner().keys;
        if keys.len() == 2 {
            assert!(keys.iter().any(|k| k.key_id == old.key_id && k.not_after.is_some()));
            assert!(keys.iter().any(|k| k.key_id == new_kid && k.not_after.is_none()));
            break;
        }
        assert!(attempt < 100, "the rotation was never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = issue(&stack, &person, false).await;
    assert_eq!(new.key_id, new_kid);
    verify(&stack, &stack.keys.hospital, &old.code).await.expect("the retired key still verifies its codes");
    verify(&stack, &stack.keys.hospital, &new.code).await.expect("the new key verifies");

    // `medins code show` draws a code as a terminal QR, from an argument or standard input.
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_medins"))
        .args(["code", "show", "--code", &new.code])
        .output()
        .expect("run medins code show");
    assert!(shown.status.success());
    let drawing = String::from_utf8(shown.stdout).unwrap();
    assert!(drawing.lines().count() > 20 && drawing.contains('▀'), "{drawing}");
    assert!(!drawing.contains(&new.code), "the drawing is not the code text");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medins"))
        .args(["code", "show"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{}\n", new.code).as_bytes()).unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(from_stdin.stdout).unwrap(), drawing);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_medins"))
        .args(["code", "show", "--code", "hello"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    stack.shutdown().await;
}

#[tokio::test]
async fn a_token_signed_with_a_newly_rotated_identity_key_is_accepted_after_one_refresh() {
    let stack = Stack::start().await;
    let person = holder(&stack).await;
    // identity-svc rotates; its new key signs the next token; insurance-svc has not seen it.
    let mut ring = TokenKeyRing::load(&stack.token_keys_file).unwrap();
    let new_kid = ring.rotate(chrono::Utc::now());
    ring.save(&stack.token_keys_file).unwrap();
    let token = loop {
        let token = stack.fresh_person_token(&stack.keys.bank, &person.person_id).await;
        if token_kid(&token) == new_kid {
            break token;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(150)).await; // past the on-demand refresh bound
    stack
        .vouchers(Some(&stack.keys.bank))
        .get_voucher(with_person_token(GetVoucherRequest { person_id: person.person_id.clone() }, &token))
        .await
        .expect("the unknown key is fetched once and the token accepted");
    stack.shutdown().await;
}

fn token_kid(token: &str) -> String {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(medins_common::token::PERSON_TOKEN_METADATA, token.parse().unwrap());
    medins_common::token::unverified_key_id(&metadata).expect("a token names its key")
}

#[tokio::test]
async fn five_hundred_concurrent_verifications_of_one_code_through_two_replicas_open_one_visit() {
    let stack = Stack::start().await;
    let replica = stack.start_insurance_replica().await;
    let person = holder(&stack).await;
    let code = issue(&stack, &person, false).await.code;

    // Several connections per replica, so no connection's concurrency limit sheds load.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = if i % 2 == 0 { stack.insurance_addr } else { replica.addr };
            let key = if i % 4 < 2 { &stack.keys.hospital } else { &stack.keys.pharmacy };
            stack.codes_at(addr, Some(key))
        })
        .collect();
    let calls = (0..500).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        let code = code.clone();
        tokio::spawn(async move { client.verify_code(VerifyCodeRequest { code }).await })
    });
    let results = futures::future::join_all(calls).await;
    let mut opened = 0;
    for result in results {
        match result.expect("task") {
            Ok(_) => opened += 1,
            Err(status) => assert_eq!(
                (status.code(), reason(&status).as_str()),
                (Code::FailedPrecondition, "CODE_ALREADY_USED"),
                "{}",
                status.message()
            ),
        }
    }
    assert_eq!(opened, 1, "exactly one call opens a visit");
    assert_eq!(visit_count(&stack).await, 1);
    let count: i64 =
        stack.insurance_db.run(|conn| visits::table.count().get_result(conn).map_err(DbError::from)).await.unwrap();
    assert_eq!(count, 1);
    replica.stop().await;
    stack.shutdown().await;
}
