//! SMS codes (SendSmsCode, VerifySmsCode) and real-name completion (CompleteRealName).

use std::sync::Arc;

use chrono::{Duration, NaiveTime};
use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{Binary, Text},
};
use identity_svc::authority::{AuthorityError, AuthorityVerdict, IdentityAuthority};
use medins_common::{clock::Clock, db::DbError};
use medins_proto::identity::v1::{
    CompleteRealNameRequest, GetPersonRequest, RealNameStatus, RegisterPersonRequest, ResolvePersonRequest,
    SendSmsCodeRequest, SendSmsCodeResponse, SmsPurpose, VerifySmsCodeRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::support::{SeedPerson, Stack, StackOptions, bad_fields, reason};

/// A code for `purpose` to the phone on record of `person_id`.
fn send(person_id: &str, purpose: SmsPurpose) -> SendSmsCodeRequest {
    SendSmsCodeRequest { person_id: person_id.to_owned(), purpose: purpose as i32, ..Default::default() }
}

/// A person registered (by the bank) with a phone on record: (person id, phone).
async fn person_with_phone(stack: &Stack) -> (String, String) {
    let person = SeedPerson::adult();
    (register(stack, &person).await, person.phone)
}

fn verify(challenge_id: &str, code: &str) -> VerifySmsCodeRequest {
    VerifySmsCodeRequest { challenge_id: challenge_id.to_owned(), code: code.to_owned() }
}

/// A code that is surely not `code`.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// The stack's clock set to noon China time today, so a test sending codes for a while stays
/// within one calendar day.
fn set_clock_to_noon_china_time(stack: &Stack) {
    let noon_utc = stack.clock_today().and_time(NaiveTime::from_hms_opt(4, 0, 0).unwrap()).and_utc();
    stack.clock.set(noon_utc);
}

/// Sends a code (as the bank) to `person_id`'s phone on record, `phone`.
async fn send_code(stack: &Stack, person_id: &str, phone: &str, purpose: SmsPurpose) -> (SendSmsCodeResponse, String) {
    let response = stack
        .sms_codes(Some(&stack.keys.bank))
        .send_sms_code(send(person_id, purpose))
        .await
        .expect("send")
        .into_inner();
    (response, stack.sms.last_code(phone))
}

/// Sends a code (as the bank) to `person_id`'s phone on record, `phone`, and verifies it;
/// returns the challenge id.
async fn verified_challenge(stack: &Stack, person_id: &str, phone: &str, purpose: SmsPurpose) -> String {
    let (sent, code) = send_code(stack, person_id, phone, purpose).await;
    stack.sms_codes(Some(&stack.keys.bank)).verify_sms_code(verify(&sent.challenge_id, &code)).await.expect("verify");
    sent.challenge_id
}

fn assert_status(status: &Status, code: Code, expected_reason: &str) {
    assert_eq!((status.code(), reason(status).as_str()), (code, expected_reason), "{status:?}");
}

async fn challenge_state(stack: &Stack, id: &str) -> String {
    #[derive(QueryableByName)]
    struct State {
        #[diesel(sql_type = Text)]
        state: String,
    }
    let sql = format!("SELECT state FROM sms_challenges WHERE id = '{}'", uuid::Uuid::parse_str(id).unwrap());
    stack
        .identity_db
        .run(move |conn| diesel::sql_query(sql).get_result::<State>(conn).map(|s| s.state).map_err(DbError::from))
        .await
        .expect("challenge row")
}

#[tokio::test]
async fn a_sent_code_verifies_and_answers_the_masked_phone() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let (sent, code) = send_code(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;
    let now = stack.clock.now();
    let expires = medins_common::convert::from_timestamp(sent.expires_at.as_ref().unwrap()).unwrap();
    let resend = medins_common::convert::from_timestamp(sent.resend_after.as_ref().unwrap()).unwrap();
    // Times are stored to the microsecond: compare in whole seconds.
    let seconds = |d: Duration| (d.num_milliseconds() as f64 / 1000.0).round() as i64;
    assert_eq!(seconds(expires - now), 300, "valid 5 minutes");
    assert_eq!(seconds(resend - now), 60, "next code in 60 s");
    let sent_sms = stack.sms.sent();
    assert_eq!(sent_sms.len(), 1);
    assert_eq!(sent_sms[0].purpose, identity_svc::domain::sms::SmsPurpose::RealName);
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));

    let verified =
        stack.sms_codes(Some(&stack.keys.bank)).verify_sms_code(verify(&sent.challenge_id, &code)).await.unwrap();
    let verified = verified.into_inner();
    assert!(verified.verified);
    assert_eq!(verified.phone_masked, medins_common::mask::mask_phone(&person.phone));
    assert_eq!(challenge_state(&stack, &sent.challenge_id).await, "VERIFIED");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_second_code_within_60_seconds_is_rate_limited_with_retry_info() {
    let stack = Stack::start().await;
    let (person_id, _) = person_with_phone(&stack).await;
    let mut sms = stack.sms_codes(Some(&stack.keys.bank));
    sms.send_sms_code(send(&person_id, SmsPurpose::RealName)).await.unwrap();
    stack.clock.advance(Duration::seconds(45));
    // Another purpose or partner does not matter: the limit is per phone.
    let error = stack
        .sms_codes(Some(&stack.keys.mini_program))
        .send_sms_code(send(&person_id, SmsPurpose::LinkAccount))
        .await
        .unwrap_err();
    assert_status(&error, Code::ResourceExhausted, "SMS_RATE_LIMITED");
    let retry = error.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert_eq!(retry, std::time::Duration::from_secs(15));
    assert_eq!(stack.sms.sent().len(), 1, "nothing was sent");

    stack.clock.advance(Duration::seconds(15));
    sms.send_sms_code(send(&person_id, SmsPurpose::RealName)).await.expect("60 s later a new code may go");
    // Other phones were never limited.
    let (other, _) = person_with_phone(&stack).await;
    sms.send_sms_code(send(&other, SmsPurpose::RealName)).await.unwrap();
    stack.shutdown().await;
}

#[tokio::test]
async fn the_eleventh_code_of_a_day_is_refused_until_the_next_day() {
    let stack = Stack::start().await;
    set_clock_to_noon_china_time(&stack);
    let (person_id, _) = person_with_phone(&stack).await;
    let mut sms = stack.sms_codes(Some(&stack.keys.bank));
    for n in 1..=10 {
        let sent =
            sms.send_sms_code(send(&person_id, SmsPurpose::RealName)).await.unwrap_or_else(|e| panic!("{n}: {e:?}"));
        if n == 10 {
            let resend = medins_common::convert::from_timestamp(sent.get_ref().resend_after.as_ref().unwrap()).unwrap();
            assert_eq!(resend.with_timezone(&medins_common::clock::china_standard_time()).time(), NaiveTime::MIN);
        }
        stack.clock.advance(Duration::seconds(61));
    }
    let error = sms.send_sms_code(send(&person_id, SmsPurpose::RealName)).await.unwrap_err();
    assert_status(&error, Code::ResourceExhausted, "SMS_RATE_LIMITED");
    assert_eq!(error.get_details_error_info().unwrap().metadata["limit"], "DAILY");
    let retry = error.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry > std::time::Duration::from_secs(11 * 3600), "until midnight China time: {retry:?}");
    assert_eq!(stack.sms.sent().len(), 10);

    stack.clock.advance(Duration::hours(12));
    sms.send_sms_code(send(&person_id, SmsPurpose::RealName)).await.expect("a new day, a new allowance");
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_sends_to_one_phone_send_one_code() {
    let stack = Stack::start().await;
    let (person_id, _) = person_with_phone(&stack).await;
    let sms = stack.sms_codes(Some(&stack.keys.bank));
    let calls = (0..50).map(|_| {
        let mut sms = sms.clone();
        let request = send(&person_id, SmsPurpose::RealName);
        async move { sms.send_sms_code(request).await }
    });
    let results = futures::future::join_all(calls).await;
    let sent = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(sent, 1, "{:?}", results.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>());
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_status(error, Code::ResourceExhausted, "SMS_RATE_LIMITED");
    }
    assert_eq!(stack.count_identity_rows("sms_challenges").await, 1);
    assert_eq!(stack.sms.sent().len(), 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn three_wrong_codes_lock_the_challenge_even_for_the_right_code() {
    let stack = Stack::start().await;
    let (person_id, phone) = person_with_phone(&stack).await;
    let (sent, code) = send_code(&stack, &person_id, &phone, SmsPurpose::RealName).await;
    let mut sms = stack.sms_codes(Some(&stack.keys.bank));
    for attempts_left in ["2", "1"] {
        let error = sms.verify_sms_code(verify(&sent.challenge_id, &wrong(&code))).await.unwrap_err();
        assert_status(&error, Code::FailedPrecondition, "SMS_CODE_INVALID");
        assert_eq!(error.get_details_error_info().unwrap().metadata["attempts_left"], attempts_left);
    }
    let error = sms.verify_sms_code(verify(&sent.challenge_id, &wrong(&code))).await.unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "SMS_LOCKED");
    let error = sms.verify_sms_code(verify(&sent.challenge_id, &code)).await.unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "SMS_LOCKED");
    assert_eq!(challenge_state(&stack, &sent.challenge_id).await, "LOCKED");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_code_expires_after_five_minutes() {
    let stack = Stack::start().await;
    let (person_id, phone) = person_with_phone(&stack).await;
    let (sent, code) = send_code(&stack, &person_id, &phone, SmsPurpose::RealName).await;
    stack.clock.advance(Duration::minutes(6));
    let error =
        stack.sms_codes(Some(&stack.keys.bank)).verify_sms_code(verify(&sent.challenge_id, &code)).await.unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "SMS_CODE_EXPIRED");
    assert_eq!(challenge_state(&stack, &sent.challenge_id).await, "PENDING");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_code_verifies_once() {
    let stack = Stack::start().await;
    let (person_id, phone) = person_with_phone(&stack).await;
    let (sent, code) = send_code(&stack, &person_id, &phone, SmsPurpose::RealName).await;
    let mut sms = stack.sms_codes(Some(&stack.keys.bank));
    sms.verify_sms_code(verify(&sent.challenge_id, &code)).await.unwrap();
    let error = sms.verify_sms_code(verify(&sent.challenge_id, &code)).await.unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "SMS_CODE_INVALID");
    stack.shutdown().await;
}

#[tokio::test]
async fn of_200_concurrent_verifications_with_the_right_code_exactly_one_succeeds() {
    let stack = Stack::start().await;
    let (person_id, phone) = person_with_phone(&stack).await;
    let (sent, code) = send_code(&stack, &person_id, &phone, SmsPurpose::RealName).await;
    let sms = stack.sms_codes(Some(&stack.keys.bank));
    let calls = (0..200).map(|_| {
        let mut sms = sms.clone();
        let request = verify(&sent.challenge_id, &code);
        async move { sms.verify_sms_code(request).await }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_status(error, Code::FailedPrecondition, "SMS_CODE_INVALID");
    }
    assert_eq!(challenge_state(&stack, &sent.challenge_id).await, "VERIFIED");
    stack.shutdown().await;
}

#[tokio::test]
async fn bad_requests_and_unknown_challenges() {
    let stack = Stack::start().await;
    let mut sms = stack.sms_codes(Some(&stack.keys.bank));
    let (person_id, _) = person_with_phone(&stack).await;
    let error = sms.send_sms_code(send(&person_id, SmsPurpose::Unspecified)).await.unwrap_err();
    assert_status(&error, Code::InvalidArgument, "INVALID_ENUM_VALUE");
    assert_eq!(bad_fields(&error), ["purpose"]);
    // A person purpose needs the person, as a UUID.
    let error = sms.send_sms_code(send("", SmsPurpose::RealName)).await.unwrap_err();
    assert_status(&error, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_fields(&error), ["person_id"]);
    let error = sms.send_sms_code(send("not-a-uuid", SmsPurpose::RealName)).await.unwrap_err();
    assert_eq!(bad_fields(&error), ["person_id"]);
    let error = sms.send_sms_code(send(&uuid::Uuid::now_v7().to_string(), SmsPurpose::LinkAccount)).await.unwrap_err();
    assert_status(&error, Code::NotFound, "PERSON_NOT_FOUND");

    let unknown = uuid::Uuid::now_v7().to_string();
    let error = sms.verify_sms_code(verify(&unknown, "123456")).await.unwrap_err();
    assert_status(&error, Code::NotFound, "SMS_CHALLENGE_NOT_FOUND");
    for bad_code in ["12345", "1234567", "12a456", ""] {
        let error = sms.verify_sms_code(verify(&unknown, bad_code)).await.unwrap_err();
        assert_status(&error, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(bad_fields(&error), ["code"]);
    }
    let error = sms.verify_sms_code(verify("nope", "123456")).await.unwrap_err();
    assert_eq!(bad_fields(&error), ["challenge_id"]);

    let error = stack
        .sms_codes(Some(&stack.keys.hospital))
        .send_sms_code(send(&person_id, SmsPurpose::RealName))
        .await
        .unwrap_err();
    assert_status(&error, Code::PermissionDenied, "PERMISSION_DENIED_SCOPE");
    assert_eq!(stack.count_identity_rows("sms_challenges").await, 0);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_code_the_gateway_did_not_take_leaves_no_challenge_and_no_used_slot() {
    let stack = Stack::start().await;
    let (person_id, _) = person_with_phone(&stack).await;
    let mut sms = stack.sms_codes(Some(&stack.keys.bank));
    stack.sms.fail_next(1);
    let error = sms.send_sms_code(send(&person_id, SmsPurpose::RealName)).await.unwrap_err();
    assert_status(&error, Code::Unavailable, "DEPENDENCY_UNAVAILABLE");
    assert_eq!(stack.count_identity_rows("sms_challenges").await, 0, "the undelivered challenge is gone");
    sms.send_sms_code(send(&person_id, SmsPurpose::RealName)).await.expect("the failed attempt used no slot");
    stack.shutdown().await;
}

#[derive(QueryableByName)]
struct RawChallenge {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Binary)]
    phone_index: Vec<u8>,
    #[diesel(sql_type = Binary)]
    phone_enc: Vec<u8>,
    #[diesel(sql_type = Binary)]
    code_hmac: Vec<u8>,
    #[diesel(sql_type = Text)]
    purpose: String,
    #[diesel(sql_type = Text)]
    state: String,
}

#[tokio::test]
async fn the_database_holds_neither_the_code_nor_the_phone_in_clear() {
    let stack = Stack::start().await;
    let (person_id, phone) = person_with_phone(&stack).await;
    let (sent, code) = send_code(&stack, &person_id, &phone, SmsPurpose::CardApplication).await;
    let rows = stack
        .identity_db
        .run(|conn| {
            diesel::sql_query("SELECT id, phone_index, phone_enc, code_hmac, purpose, state FROM sms_challenges")
                .load::<RawChallenge>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.id.as_str(), row.purpose.as_str(), row.state.as_str()),
        (sent.challenge_id.as_str(), "CARD_APPLICATION", "PENDING")
    );
    assert_eq!(row.code_hmac.len(), 32, "an HMAC-SHA256");
    let contains = |haystack: &[u8], needle: &str| haystack.windows(needle.len()).any(|w| w == needle.as_bytes());
    for (column, bytes) in
        [("phone_index", &row.phone_index), ("phone_enc", &row.phone_enc), ("code_hmac", &row.code_hmac)]
    {
        assert!(!contains(bytes, &code), "{column} holds the code");
        assert!(!contains(bytes, &phone), "{column} holds the phone");
    }
    stack.shutdown().await;
}

/// An identity authority that always answers the same.
#[derive(Debug)]
struct FixedAuthority(Result<AuthorityVerdict, AuthorityError>);

#[tonic::async_trait]
impl IdentityAuthority for FixedAuthority {
    async fn check(&self, _name: &str, _id_number: &str) -> Result<AuthorityVerdict, AuthorityError> {
        self.0.clone()
    }
}

async fn start_with_authority(answer: Result<AuthorityVerdict, AuthorityError>) -> Stack {
    Stack::start_with(StackOptions { identity_authority: Some(Arc::new(FixedAuthority(answer))), ..Default::default() })
        .await
}

async fn register(stack: &Stack, person: &SeedPerson) -> String {
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
        .unwrap()
        .person_id
}

fn complete(person_id: &str, challenge_id: &str) -> CompleteRealNameRequest {
    CompleteRealNameRequest { person_id: person_id.to_owned(), challenge_id: challenge_id.to_owned() }
}

async fn real_name_status(stack: &Stack, person_id: &str) -> i32 {
    stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: person_id.to_owned() })
        .await
        .expect("get person")
        .into_inner()
        .person
        .unwrap()
        .real_name_status
}

#[tokio::test]
async fn register_sms_and_complete_real_name_makes_the_person_verified() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Unverified as i32);
    let challenge_id = verified_challenge(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;

    let mut persons = stack.persons(Some(&stack.keys.bank));
    let view =
        persons.complete_real_name(complete(&person_id, &challenge_id)).await.unwrap().into_inner().person.unwrap();
    assert_eq!(view.real_name_status, RealNameStatus::Verified as i32);
    let verified_at = view.real_name_verified_at.expect("verified at");
    assert_eq!(verified_at.seconds, stack.clock.now().timestamp());
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Verified as i32);
    assert_eq!(challenge_state(&stack, &challenge_id).await, "CONSUMED");

    // Already verified: the same answer, nothing changes.
    stack.clock.advance(Duration::minutes(1));
    let again = persons.complete_real_name(complete(&person_id, &challenge_id)).await.unwrap().into_inner();
    assert_eq!(again.person.unwrap().real_name_verified_at, Some(verified_at));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_deny_listed_id_number_is_rejected_and_uses_the_challenge_up() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    std::fs::write(&stack.deny_list, format!("# reported\n{}\n", person.id_number)).unwrap();
    let person_id = register(&stack, &person).await;
    let challenge_id = verified_challenge(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let error = persons.complete_real_name(complete(&person_id, &challenge_id)).await.unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "REAL_NAME_REJECTED");
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Unverified as i32);
    assert_eq!(challenge_state(&stack, &challenge_id).await, "CONSUMED");
    let error = persons.complete_real_name(complete(&person_id, &challenge_id)).await.unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "SMS_CODE_INVALID");
    stack.shutdown().await;
}

#[tokio::test]
async fn an_authority_mismatch_is_rejected() {
    let stack = start_with_authority(Ok(AuthorityVerdict::Mismatch)).await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let challenge_id = verified_challenge(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;
    let error = stack
        .persons(Some(&stack.keys.bank))
        .complete_real_name(complete(&person_id, &challenge_id))
        .await
        .unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "REAL_NAME_REJECTED");
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Unverified as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_authority_is_unavailable_and_leaves_the_challenge_usable() {
    let stack = start_with_authority(Err(AuthorityError::Unavailable("connection refused".into()))).await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let challenge_id = verified_challenge(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;
    let error = stack
        .persons(Some(&stack.keys.bank))
        .complete_real_name(complete(&person_id, &challenge_id))
        .await
        .unwrap_err();
    assert_status(&error, Code::Unavailable, "DEPENDENCY_UNAVAILABLE");
    assert_eq!(challenge_state(&stack, &challenge_id).await, "VERIFIED");
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Unverified as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn only_a_recent_verified_challenge_for_the_persons_phone_and_real_name_counts() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let mut persons = stack.persons(Some(&stack.keys.bank));
    let refused = |status: Status, expected: &str| assert_status(&status, Code::FailedPrecondition, expected);

    // Another purpose.
    let link = verified_challenge(&stack, &person_id, &person.phone, SmsPurpose::LinkAccount).await;
    refused(persons.complete_real_name(complete(&person_id, &link)).await.unwrap_err(), "SMS_CODE_INVALID");
    stack.clock.advance(Duration::seconds(61));
    // Another phone (another person's).
    let (other_id, other_phone) = person_with_phone(&stack).await;
    let other = verified_challenge(&stack, &other_id, &other_phone, SmsPurpose::RealName).await;
    refused(persons.complete_real_name(complete(&person_id, &other)).await.unwrap_err(), "SMS_CODE_INVALID");
    // Sent but not verified.
    let (pending, _) = send_code(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;
    refused(
        persons.complete_real_name(complete(&person_id, &pending.challenge_id)).await.unwrap_err(),
        "SMS_CODE_INVALID",
    );
    // Verified more than 10 minutes ago.
    stack.clock.advance(Duration::seconds(61));
    let old = verified_challenge(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;
    stack.clock.advance(Duration::minutes(11));
    refused(persons.complete_real_name(complete(&person_id, &old)).await.unwrap_err(), "SMS_CODE_EXPIRED");
    // Unknown challenge, unknown person.
    let unknown = uuid::Uuid::now_v7().to_string();
    let error = persons.complete_real_name(complete(&person_id, &unknown)).await.unwrap_err();
    assert_status(&error, Code::NotFound, "SMS_CHALLENGE_NOT_FOUND");
    let error = persons.complete_real_name(complete(&unknown, &old)).await.unwrap_err();
    assert_status(&error, Code::NotFound, "PERSON_NOT_FOUND");
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Unverified as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_person_without_a_phone_cannot_complete_real_name() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = stack
        .persons(Some(&stack.keys.service))
        .resolve_person(ResolvePersonRequest { name: person.name.clone(), id_number: person.id_number.clone() })
        .await
        .unwrap()
        .into_inner()
        .person
        .unwrap()
        .person_id;
    // No code can even be sent: there is no phone on record to send it to.
    let error = stack
        .sms_codes(Some(&stack.keys.bank))
        .send_sms_code(send(&person_id, SmsPurpose::RealName))
        .await
        .unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "PHONE_REQUIRED");
    assert!(stack.sms.sent().is_empty(), "nothing was sent");
    // Nor does a challenge of someone else's phone complete it.
    let (other_id, other_phone) = person_with_phone(&stack).await;
    let challenge_id = verified_challenge(&stack, &other_id, &other_phone, SmsPurpose::RealName).await;
    let error = stack
        .persons(Some(&stack.keys.bank))
        .complete_real_name(complete(&person_id, &challenge_id))
        .await
        .unwrap_err();
    assert_status(&error, Code::FailedPrecondition, "PHONE_REQUIRED");
    stack.shutdown().await;
}

/// Sets partner `id`'s daily SMS quota in the stack's partners file and reloads identity-svc's
/// partners.
fn set_sms_quota(stack: &Stack, id: &str, quota: u32) {
    let mut file = medins_common::auth::PartnersFile::load(&stack.partners_file).expect("partners file");
    file.set_sms_daily_quota(id, Some(quota)).expect("set quota");
    file.save(&stack.partners_file).expect("save partners");
    stack.identity_partners.reload().expect("reload partners");
}

/// Codes partner `id` had sent today by the database's count.
async fn partner_sent_today(stack: &Stack, id: &str) -> i32 {
    #[derive(QueryableByName)]
    struct Sent {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        sent: i32,
    }
    let sql = format!("SELECT sent FROM sms_partner_days WHERE partner_id = '{id}'");
    stack
        .identity_db
        .run(move |conn| diesel::sql_query(sql).load::<Sent>(conn).map_err(DbError::from))
        .await
        .expect("partner days")
        .iter()
        .map(|row| row.sent)
        .sum()
}

#[tokio::test]
async fn a_real_name_code_goes_to_the_phone_on_record_and_says_which_masked() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let sent = stack
        .sms_codes(Some(&stack.keys.mini_program))
        .send_sms_code(send(&person_id, SmsPurpose::RealName))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(sent.phone_masked, medins_common::mask::mask_phone(&person.phone));
    let delivered = stack.sms.sent();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].phone, person.phone, "the gateway got the phone on record");
    assert_eq!(delivered[0].purpose, identity_svc::domain::sms::SmsPurpose::RealName);
    // The code to their phone is in the person's own access history.
    let audited = {
        use diesel::{ExpressionMethods, QueryDsl};
        use medins_common::audit::schema::audit_log;
        stack
            .identity_db
            .run(|conn| {
                audit_log::table
                    .filter(audit_log::method.eq("/medins.identity.v1.SmsService/SendSmsCode"))
                    .select((audit_log::partner_id, audit_log::person_id, audit_log::outcome))
                    .load::<(String, String, String)>(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap()
    };
    assert_eq!(audited, [("mini-program".to_owned(), person_id.clone(), "OK".to_owned())]);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_phone_with_a_person_purpose_is_refused_and_nothing_is_sent() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let mut sms = stack.sms_codes(Some(&stack.keys.mini_program));
    // Whatever phone is given, the on-record one or any other: refused the same way.
    for phone in [person.phone.clone(), SeedPerson::adult().phone, "12345".to_owned()] {
        for purpose in [SmsPurpose::RealName, SmsPurpose::LinkAccount, SmsPurpose::CardApplication] {
            let request = SendSmsCodeRequest { phone: phone.clone(), ..send(&person_id, purpose) };
            let error = sms.send_sms_code(request).await.unwrap_err();
            assert_status(&error, Code::InvalidArgument, "INVALID_ARGUMENT");
            assert_eq!(bad_fields(&error), ["phone"]);
        }
        let stranger = SendSmsCodeRequest { phone: phone.clone(), ..send("", SmsPurpose::RealName) };
        assert_eq!(sms.send_sms_code(stranger).await.unwrap_err().code(), Code::InvalidArgument);
    }
    assert!(stack.sms.sent().is_empty(), "nothing was sent");
    assert_eq!(stack.count_identity_rows("sms_challenges").await, 0);
    assert_eq!(partner_sent_today(&stack, "mini-program").await, 0);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_partner_over_its_daily_sms_quota_is_refused_until_midnight_china_time() {
    let stack = Stack::start().await;
    set_clock_to_noon_china_time(&stack);
    set_sms_quota(&stack, "mini-program", 3);
    let mut persons = Vec::new();
    for _ in 0..5 {
        persons.push(person_with_phone(&stack).await.0);
    }
    let mut mini = stack.sms_codes(Some(&stack.keys.mini_program));
    // An undelivered code gives its unit back.
    stack.sms.fail_next(1);
    let error = mini.send_sms_code(send(&persons[0], SmsPurpose::RealName)).await.unwrap_err();
    assert_status(&error, Code::Unavailable, "DEPENDENCY_UNAVAILABLE");
    assert_eq!(partner_sent_today(&stack, "mini-program").await, 0);
    for person_id in &persons[..3] {
        mini.send_sms_code(send(person_id, SmsPurpose::RealName)).await.expect("within the quota");
    }
    let error = mini.send_sms_code(send(&persons[3], SmsPurpose::RealName)).await.unwrap_err();
    assert_status(&error, Code::ResourceExhausted, "SMS_QUOTA_EXCEEDED");
    let retry = error.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    // Noon China time: twelve hours to midnight.
    assert!(retry > std::time::Duration::from_secs(11 * 3600) && retry <= std::time::Duration::from_secs(12 * 3600));
    assert_eq!(stack.sms.sent().len(), 3, "the fourth was not sent");
    assert_eq!(stack.count_identity_rows("sms_challenges").await, 3);
    assert_eq!(partner_sent_today(&stack, "mini-program").await, 3);
    // Other partners have quotas of their own.
    stack.sms_codes(Some(&stack.keys.bank)).send_sms_code(send(&persons[4], SmsPurpose::RealName)).await.unwrap();
    // The next China-time day the quota is fresh.
    stack.clock.advance(Duration::hours(12));
    mini.send_sms_code(send(&persons[3], SmsPurpose::RealName)).await.expect("a new day, a new quota");
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_sends_by_one_partner_never_exceed_its_quota() {
    let stack = Stack::start().await;
    set_clock_to_noon_china_time(&stack);
    const QUOTA: usize = 5;
    set_sms_quota(&stack, "mini-program", QUOTA as u32);
    let mut persons = Vec::new();
    for _ in 0..QUOTA + 7 {
        persons.push(person_with_phone(&stack).await.0);
    }
    let sms = stack.sms_codes(Some(&stack.keys.mini_program));
    let calls = persons.iter().map(|person_id| {
        let mut sms = sms.clone();
        let request = send(person_id, SmsPurpose::LinkAccount);
        async move { sms.send_sms_code(request).await }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), QUOTA);
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_status(error, Code::ResourceExhausted, "SMS_QUOTA_EXCEEDED");
    }
    assert_eq!(stack.count_identity_rows("sms_challenges").await, QUOTA as i64);
    assert_eq!(stack.sms.sent().len(), QUOTA);
    assert_eq!(partner_sent_today(&stack, "mini-program").await, QUOTA as i32);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_challenge_answers_only_the_partner_that_asked_for_it() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let (sent, code) = send_code(&stack, &person_id, &person.phone, SmsPurpose::RealName).await;
    let not_found = |status: Status| assert_status(&status, Code::NotFound, "SMS_CHALLENGE_NOT_FOUND");

    // Another partner, even with the right code, finds nothing, and no try is counted.
    let mut mini_sms = stack.sms_codes(Some(&stack.keys.mini_program));
    not_found(mini_sms.verify_sms_code(verify(&sent.challenge_id, &code)).await.unwrap_err());
    not_found(mini_sms.verify_sms_code(verify(&sent.challenge_id, &wrong(&code))).await.unwrap_err());
    assert_eq!(challenge_state(&stack, &sent.challenge_id).await, "PENDING");

    let mut bank_sms = stack.sms_codes(Some(&stack.keys.bank));
    bank_sms.verify_sms_code(verify(&sent.challenge_id, &code)).await.expect("its own partner verifies");

    // Verified, it still is another partner's nothing: real name, link, consume on its behalf.
    not_found(
        stack
            .persons(Some(&stack.keys.mini_program))
            .complete_real_name(complete(&person_id, &sent.challenge_id))
            .await
            .unwrap_err(),
    );
    not_found(
        stack
            .links(Some(&stack.keys.mini_program))
            .link_partner_account(medins_proto::identity::v1::LinkPartnerAccountRequest {
                person_id: person_id.clone(),
                partner_user_ref: "mini-user-1".into(),
                challenge_id: sent.challenge_id.clone(),
            })
            .await
            .unwrap_err(),
    );
    let consume = |on_behalf_of: &str| medins_proto::identity::v1::ConsumeSmsChallengeRequest {
        person_id: person_id.clone(),
        challenge_id: sent.challenge_id.clone(),
        purpose: SmsPurpose::RealName as i32,
        on_behalf_of_partner_id: on_behalf_of.to_owned(),
    };
    let mut service = stack.persons(Some(&stack.keys.service));
    not_found(service.consume_sms_challenge(consume("mini-program")).await.unwrap_err());
    not_found(service.consume_sms_challenge(consume("")).await.unwrap_err());
    assert_eq!(challenge_state(&stack, &sent.challenge_id).await, "VERIFIED");
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Unverified as i32);
    assert_eq!(stack.count_identity_rows("partner_links").await, 0);

    // Its own partner still uses it.
    stack
        .persons(Some(&stack.keys.bank))
        .complete_real_name(complete(&person_id, &sent.challenge_id))
        .await
        .expect("the bank completes real name with its own challenge");
    assert_eq!(real_name_status(&stack, &person_id).await, RealNameStatus::Verified as i32);
    assert_eq!(challenge_state(&stack, &sent.challenge_id).await, "CONSUMED");
    stack.shutdown().await;
}
