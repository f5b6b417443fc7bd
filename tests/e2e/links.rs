//! Partner links: linking after an SMS code to the person's phone, idempotent relinks, the
//! uniqueness rules, the person's own list, unlinking; and the whole front door: register, SMS,
//! real name, link, token, read.

use medins_proto::identity::v1::{
    CompleteRealNameRequest, GetPersonRequest, IssuePersonTokenRequest, LinkPartnerAccountRequest,
    ListPartnerLinksRequest, RegisterPersonRequest, SendSmsCodeRequest, SmsPurpose, UnlinkPartnerAccountRequest,
    VerifySmsCodeRequest,
};
use tonic::Code;

use crate::{
    support::{SeedPerson, Stack, privacy, reason, with_person_token},
    tokens::issue,
};

/// Sends a code for `purpose` to the phone on record of `person_id` (which is `phone`) as the
/// partner holding `key`, and verifies it; returns the challenge id. Moves the clock past the
/// 60-second resend interval first.
async fn verified_challenge(stack: &Stack, key: &str, person_id: &str, phone: &str, purpose: SmsPurpose) -> String {
    stack.clock.advance(chrono::Duration::seconds(61));
    let mut sms = stack.sms_codes(Some(key));
    let sent = sms
        .send_sms_code(SendSmsCodeRequest {
            person_id: person_id.to_owned(),
            purpose: purpose as i32,
            ..Default::default()
        })
        .await
        .expect("send code")
        .into_inner();
    let code = stack.sms.last_code(phone);
    sms.verify_sms_code(VerifySmsCodeRequest { challenge_id: sent.challenge_id.clone(), code })
        .await
        .expect("verify code");
    sent.challenge_id
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
        .expect("person")
        .person_id
}

fn link(person_id: &str, user_ref: &str, challenge_id: &str) -> LinkPartnerAccountRequest {
    LinkPartnerAccountRequest {
        person_id: person_id.to_owned(),
        partner_user_ref: user_ref.to_owned(),
        challenge_id: challenge_id.to_owned(),
    }
}

fn user_ref(label: &str) -> String {
    let user_ref = format!("{label}-{}", uuid::Uuid::new_v4().simple());
    privacy::sensitive(&user_ref);
    user_ref
}

#[tokio::test]
async fn register_sms_real_name_link_token_read_and_unlink() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;

    let challenge = verified_challenge(&stack, &stack.keys.bank, &person_id, &person.phone, SmsPurpose::RealName).await;
    stack
        .persons(Some(&stack.keys.bank))
        .complete_real_name(CompleteRealNameRequest { person_id: person_id.clone(), challenge_id: challenge })
        .await
        .expect("real name");

    // A token needs a link first.
    let error = stack
        .person_tokens(Some(&stack.keys.bank))
        .issue_person_token(IssuePersonTokenRequest { person_id: person_id.clone() })
        .await
        .unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "PARTNER_LINK_REQUIRED"));

    let bank_ref = user_ref("bank-user");
    let challenge =
        verified_challenge(&stack, &stack.keys.bank, &person_id, &person.phone, SmsPurpose::LinkAccount).await;
    let mut bank_links = stack.links(Some(&stack.keys.bank));
    let linked = bank_links.link_partner_account(link(&person_id, &bank_ref, &challenge)).await.unwrap().into_inner();
    assert!(linked.created);
    let bank_link = linked.link.unwrap();
    assert_eq!((bank_link.partner_id.as_str(), bank_link.partner_user_ref.as_str()), ("bank", bank_ref.as_str()));

    // The same link again is the same answer, although the challenge is used up.
    let again = bank_links.link_partner_account(link(&person_id, &bank_ref, &challenge)).await.unwrap().into_inner();
    assert!(!again.created);
    assert_eq!(again.link.unwrap(), bank_link);

    // One live link per (partner, person): another ref of the bank is a conflict.
    let error =
        bank_links.link_partner_account(link(&person_id, &user_ref("bank-other"), &challenge)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::AlreadyExists, "PARTNER_LINK_CONFLICT"));

    // The mini program links too, with a code of its own.
    let mini_ref = user_ref("mini-user");
    let challenge =
        verified_challenge(&stack, &stack.keys.mini_program, &person_id, &person.phone, SmsPurpose::LinkAccount).await;
    stack
        .links(Some(&stack.keys.mini_program))
        .link_partner_account(link(&person_id, &mini_ref, &challenge))
        .await
        .expect("mini program links");

    let token = issue(&stack, &stack.keys.bank, &person_id).await.token;
    stack
        .persons(Some(&stack.keys.bank))
        .get_person(with_person_token(GetPersonRequest { person_id: person_id.clone() }, &token))
        .await
        .expect("the bank reads the person with its token");

    // The person's own list: every partner, the ref only of the caller's link.
    let list = |page_token: &str| {
        with_person_token(
            ListPartnerLinksRequest { person_id: person_id.clone(), page_size: 0, page_token: page_token.to_owned() },
            &token,
        )
    };
    let links = bank_links.list_partner_links(list("")).await.unwrap().into_inner();
    let seen: Vec<(&str, &str)> =
        links.links.iter().map(|l| (l.partner_id.as_str(), l.partner_user_ref.as_str())).collect();
    assert_eq!(seen, [("mini-program", ""), ("bank", bank_ref.as_str())]);
    assert!(links.next_page_token.is_empty());
    let paged = bank_links
        .list_partner_links(with_person_token(
            ListPartnerLinksRequest { person_id: person_id.clone(), page_size: 1, page_token: String::new() },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paged.links.len(), 1);
    let rest = bank_links.list_partner_links(list(&paged.next_page_token)).await.unwrap().into_inner();
    assert_eq!(rest.links.iter().map(|l| l.partner_id.as_str()).collect::<Vec<_>>(), ["bank"]);

    // Listing and unlinking act for the person: a token is needed.
    let error = bank_links
        .list_partner_links(ListPartnerLinksRequest { person_id: person_id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::Unauthenticated, "PERSON_TOKEN_REQUIRED"));
    let unlink = || with_person_token(UnlinkPartnerAccountRequest { person_id: person_id.clone() }, &token);
    let error = bank_links
        .unlink_partner_account(UnlinkPartnerAccountRequest { person_id: person_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(reason(&error), "PERSON_TOKEN_REQUIRED");

    assert!(bank_links.unlink_partner_account(unlink()).await.unwrap().into_inner().unlinked);
    // The unlink killed the token it was made with: a second unlink with it is refused.
    let again = bank_links.unlink_partner_account(unlink()).await.unwrap_err();
    assert_eq!((again.code(), reason(&again).as_str()), (Code::Unauthenticated, "PERSON_TOKEN_REVOKED"));
    let error = stack
        .person_tokens(Some(&stack.keys.bank))
        .issue_person_token(IssuePersonTokenRequest { person_id: person_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(reason(&error), "PARTNER_LINK_REQUIRED", "no link, no new token");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_link_needs_a_verified_link_code_to_the_persons_own_phone() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    let person_id = register(&stack, &person).await;
    let stranger = SeedPerson::adult();
    let stranger_id = register(&stack, &stranger).await;
    let bank = stack.keys.bank.clone();
    let mut links = stack.links(Some(&bank));

    // A code for another purpose, or to another phone, does not link.
    let real_name_code = verified_challenge(&stack, &bank, &person_id, &person.phone, SmsPurpose::RealName).await;
    let error = links.link_partner_account(link(&person_id, &user_ref("u"), &real_name_code)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::FailedPrecondition, "SMS_CODE_INVALID"));
    let strangers_code =
        verified_challenge(&stack, &bank, &stranger_id, &stranger.phone, SmsPurpose::LinkAccount).await;
    let error = links.link_partner_account(link(&person_id, &user_ref("u"), &strangers_code)).await.unwrap_err();
    assert_eq!(reason(&error), "SMS_CODE_INVALID");

    // A ref linked to one person cannot be linked to another by the same partner.
    let shared_ref = user_ref("shared");
    let code = verified_challenge(&stack, &bank, &person_id, &person.phone, SmsPurpose::LinkAccount).await;
    links.link_partner_account(link(&person_id, &shared_ref, &code)).await.expect("link");
    let code = verified_challenge(&stack, &bank, &stranger_id, &stranger.phone, SmsPurpose::LinkAccount).await;
    let error = links.link_partner_account(link(&stranger_id, &shared_ref, &code)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::AlreadyExists, "PARTNER_LINK_CONFLICT"));

    // Field errors.
    let error = links.link_partner_account(link(&person_id, "has space", &code)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = links.link_partner_account(link(&person_id, "u", "not-a-uuid")).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let missing = uuid::Uuid::now_v7().to_string();
    let error = links.link_partner_account(link(&missing, "u", &code)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::NotFound, "PERSON_NOT_FOUND"));
    stack.shutdown().await;
}
