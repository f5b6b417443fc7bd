//! Person tokens: issued to a linked, real-name verified person's partner; required by a
//! non-operator partner to read the person; refused when expired, tampered with, issued to
//! another partner or signed with an unknown key; still valid after a key rotation while the old
//! key is listed.

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use identity_svc::store::schema::{partner_links, persons};
use medins_common::{
    clock::Clock,
    db::DbError,
    token::{PERSON_TOKEN_LIFETIME_SECS, TokenKeyRing},
};
use medins_proto::identity::v1::{
    GetPersonRequest, GetPublicKeysRequest, IssuePersonTokenRequest, IssuePersonTokenResponse, RegisterPersonRequest,
};
use tonic::Code;

use crate::support::{SeedPerson, Stack, reason, with_person_token};

const MEDINS: &str = env!("CARGO_BIN_EXE_medins");

/// Registers a fresh adult through the bank; returns the person id.
pub async fn register(stack: &Stack) -> String {
    let person = SeedPerson::adult();
    stack
        .persons(Some(&stack.keys.bank))
        .register_person(RegisterPersonRequest {
            name: person.name.clone(),
            id_number: person.id_number.clone(),
            phone: person.phone.clone(),
        })
        .await
        .expect("register")
        .into_inner()
        .person
        .expect("person")
        .person_id
}

/// Marks the person real-name VERIFIED and links `partner_id` to them, straight in the database:
/// the SMS and real-name flows have their own tests, these tests are about tokens.
pub async fn verify_and_link(stack: &Stack, person_id: &str, partner_id: &str) {
    let now = stack.clock.stored_now();
    let (person_id, partner_id) = (person_id.to_owned(), partner_id.to_owned());
    stack
        .identity_db
        .run(move |conn| {
            diesel::update(persons::table.find(&person_id))
                .set((
                    persons::real_name_status.eq("VERIFIED"),
                    persons::real_name_method.eq("TEST"),
                    persons::real_name_verified_at.eq(now),
                ))
                .execute(conn)?;
            diesel::insert_into(partner_links::table)
                .values((
                    partner_links::id.eq(medins_common::db::DbUuid(uuid::Uuid::now_v7())),
                    partner_links::partner_id.eq(&partner_id),
                    partner_links::person_id.eq(&person_id),
                    // Never decrypted by these tests (only the caller's own list would).
                    partner_links::partner_user_ref_index.eq(uuid::Uuid::new_v4().as_bytes().to_vec()),
                    partner_links::partner_user_ref_enc.eq(vec![0u8; 40]),
                    partner_links::linked_at.eq(now),
                ))
                .execute(conn)?;
            Ok::<_, DbError>(())
        })
        .await
        .expect("verify and link");
}

/// Issues a token for the person to the partner holding `key`.
pub async fn issue(stack: &Stack, key: &str, person_id: &str) -> IssuePersonTokenResponse {
    stack
        .person_tokens(Some(key))
        .issue_person_token(IssuePersonTokenRequest { person_id: person_id.to_owned() })
        .await
        .expect("issue token")
        .into_inner()
}

async fn get_person(stack: &Stack, key: &str, person_id: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let message = GetPersonRequest { person_id: person_id.to_owned() };
    let request = match token {
        Some(token) => with_person_token(message, token),
        None => tonic::Request::new(message),
    };
    stack.persons(Some(key)).get_person(request).await.map(|_| ())
}

fn assert_refused(result: Result<(), tonic::Status>, code: Code, expected_reason: &str, case: &str) {
    let status = result.expect_err(case);
    assert_eq!((status.code(), reason(&status).as_str()), (code, expected_reason), "{case}: {}", status.message());
}

/// Replaces the character at `index` with another base64url character.
fn flip(token: &str, index: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn get_person_by_a_bank_needs_a_person_token_and_operators_do_not() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    assert_refused(
        get_person(&stack, &stack.keys.bank, &person_id, None).await,
        Code::Unauthenticated,
        "PERSON_TOKEN_REQUIRED",
        "bank without a token",
    );
    get_person(&stack, &stack.keys.ops, &person_id, None).await.expect("ops are exempt");
    get_person(&stack, &stack.keys.service, &person_id, None).await.expect("medins services are exempt");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_linked_verified_person_gets_a_token_that_reads_only_that_person() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let other_id = register(&stack).await;
    verify_and_link(&stack, &person_id, "bank").await;
    let issued = issue(&stack, &stack.keys.bank, &person_id).await;
    let expires_at = issued.expires_at.expect("expiry");
    assert_eq!(expires_at.seconds, stack.clock.now().timestamp() + PERSON_TOKEN_LIFETIME_SECS);
    assert!(issued.key_id.starts_with("pt-"));

    get_person(&stack, &stack.keys.bank, &person_id, Some(&issued.token)).await.expect("token for the person");
    assert_refused(
        get_person(&stack, &stack.keys.bank, &other_id, Some(&issued.token)).await,
        Code::PermissionDenied,
        "PERSON_TOKEN_INVALID",
        "token for another person",
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_token_needs_a_live_link_and_a_verified_real_name() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let mut tokens = stack.person_tokens(Some(&stack.keys.bank));
    let request = || IssuePersonTokenRequest { person_id: person_id.clone() };

    let error = tokens.issue_person_token(request()).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "PARTNER_LINK_REQUIRED"));

    verify_and_link(&stack, &person_id, "bank").await;
    let unverify = person_id.clone();
    stack
        .identity_db
        .run(move |conn| {
            diesel::update(persons::table.find(&unverify))
                .set((
                    persons::real_name_status.eq("UNVERIFIED"),
                    persons::real_name_method.eq(None::<String>),
                    persons::real_name_verified_at.eq(None::<chrono::NaiveDateTime>),
                ))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    let error = tokens.issue_person_token(request()).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "REAL_NAME_REQUIRED"));

    // A link with the bank lets only the bank obtain tokens.
    let error = stack.person_tokens(Some(&stack.keys.mini_program)).issue_person_token(request()).await.unwrap_err();
    assert_eq!(reason(&error), "PARTNER_LINK_REQUIRED");
    // An id that is no person is one the bank has no link with: the same answer, so a partner
    // cannot tell a person it is not linked with from a missing id (identity-svc's access table).
    let missing =
        tokens.issue_person_token(IssuePersonTokenRequest { person_id: uuid::Uuid::now_v7().to_string() }).await;
    let error = missing.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "PARTNER_LINK_REQUIRED"));
    stack.shutdown().await;
}

#[tokio::test]
async fn expired_tampered_foreign_and_unknown_key_tokens_are_unauthenticated() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    verify_and_link(&stack, &person_id, "bank").await;
    let token = issue(&stack, &stack.keys.bank, &person_id).await.token;
    get_person(&stack, &stack.keys.bank, &person_id, Some(&token)).await.expect("valid token");

    let dots: Vec<usize> = token.match_indices('.').map(|(i, _)| i).collect();
    let cases = [
        ("a character of the signature flipped", flip(&token, dots[1] + 10)),
        ("a character of the claims flipped", flip(&token, dots[0] + 5)),
        ("a character of the header flipped", flip(&token, 3)),
        ("not a token at all", "not-a-token".to_owned()),
    ];
    for (case, tampered) in &cases {
        assert_refused(
            get_person(&stack, &stack.keys.bank, &person_id, Some(tampered)).await,
            Code::Unauthenticated,
            "PERSON_TOKEN_INVALID",
            case,
        );
    }

    // Issued to the bank, presented by the mini program.
    assert_refused(
        get_person(&stack, &stack.keys.mini_program, &person_id, Some(&token)).await,
        Code::Unauthenticated,
        "PERSON_TOKEN_INVALID",
        "token of another partner",
    );

    // Well formed and signed, but by a key identity-svc never listed.
    let stranger = TokenKeyRing::generate(stack.clock.now());
    let forged = stranger.sign(person_id.parse().unwrap(), "bank", stack.clock.now()).token;
    assert_refused(
        get_person(&stack, &stack.keys.bank, &person_id, Some(&forged)).await,
        Code::Unauthenticated,
        "PERSON_TOKEN_INVALID",
        "unknown key",
    );

    // 16 minutes later the (cached) token has expired.
    stack.clock.advance(chrono::Duration::minutes(16));
    assert_refused(
        get_person(&stack, &stack.keys.bank, &person_id, Some(&token)).await,
        Code::Unauthenticated,
        "PERSON_TOKEN_INVALID",
        "expired",
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_token_of_a_rotated_out_but_listed_key_still_verifies() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    verify_and_link(&stack, &person_id, "bank").await;
    let old = issue(&stack, &stack.keys.bank, &person_id).await;

    let mut keys = stack.person_tokens(Some(&stack.keys.hospital));
    let listed = keys.get_public_keys(GetPublicKeysRequest {}).await.expect("keys.read for hospitals").into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert_eq!(listed.keys[0].key_id, old.key_id);
    assert_eq!(listed.keys[0].algorithm, "EdDSA");
    assert!(listed.keys[0].not_after.is_none(), "the current key has no end");
    assert!(
        medins_common::token::ListedKey::from_base64url(&listed.keys[0].key_id, &listed.keys[0].public_key, None)
            .is_some(),
        "a raw 32-byte Ed25519 key, base64url"
    );

    let output = std::process::Command::new(MEDINS)
        .args(["keys", "rotate", "--token-keys-file"])
        .arg(&stack.token_keys_file)
        .output()
        .expect("run medins keys rotate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("{} retired", old.key_id)));

    // The running server picks the rotated file up by itself.
    let mut rotated = None;
    for _ in 0..100 {
        let listed = keys.get_public_keys(GetPublicKeysRequest {}).await.unwrap().into_inner();
        if listed.keys.len() == 2 {
            rotated = Some(listed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = rotated.expect("the server reloads the rotated key file");
    let retired = rotated.keys.iter().find(|k| k.key_id == old.key_id).expect("old key still listed");
    assert!(retired.not_after.is_some(), "a retired key is listed until its tokens expire");
    let current = rotated.keys.iter().find(|k| k.key_id != old.key_id).unwrap();

    let new = issue(&stack, &stack.keys.bank, &person_id).await;
    assert_eq!(new.key_id, current.key_id, "new tokens are signed with the new key");
    get_person(&stack, &stack.keys.bank, &person_id, Some(&old.token)).await.expect("old token, listed key");
    get_person(&stack, &stack.keys.bank, &person_id, Some(&new.token)).await.expect("new token");

    // Once every token of the old key has expired, the key is no longer listed.
    stack.clock.advance(chrono::Duration::minutes(16));
    let listed = keys.get_public_keys(GetPublicKeysRequest {}).await.unwrap().into_inner();
    assert_eq!(listed.keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), vec![current.key_id.as_str()]);
    stack.shutdown().await;
}
