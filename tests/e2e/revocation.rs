//! Tokens die with their link: after an unlink, a revocation by the person or a suspension by an
//! operator, the partner's earlier tokens are refused by every replica of both services within
//! 5 seconds (no call to identity-svc per token), while new tokens after a re-link work.

use std::time::{Duration, Instant};

use medins_proto::{
    identity::v1::{
        GetPersonRequest, IssuePersonTokenRequest, ListPartnerLinksRequest, ListTokenRevocationsRequest,
        ResumePersonRequest, RevokePartnerLinkRequest, SuspendPersonRequest, UnlinkPartnerAccountRequest,
    },
    insurance::v1::ListAccountEntriesRequest,
};
use tonic::Code;

use crate::support::{Stack, reason, vouchers::FrontDoorPerson, with_person_token};

/// The promise: refused everywhere within this.
const WITHIN: Duration = Duration::from_secs(5);

fn code_and_reason<T>(result: &Result<T, tonic::Status>) -> Option<(Code, String)> {
    result.as_ref().err().map(|status| (status.code(), reason(status)))
}

fn revoked() -> Option<(Code, String)> {
    Some((Code::Unauthenticated, "PERSON_TOKEN_REVOKED".to_owned()))
}

async fn get_person_at(
    stack: &Stack,
    addr: std::net::SocketAddr,
    key: &str,
    person: &FrontDoorPerson,
    token: &str,
) -> Result<(), tonic::Status> {
    stack
        .persons_at(addr, Some(key))
        .get_person(with_person_token(GetPersonRequest { person_id: person.person_id.clone() }, token))
        .await
        .map(|_| ())
}

async fn list_entries(stack: &Stack, key: &str, account_id: &str, token: &str) -> Result<(), tonic::Status> {
    stack
        .accounts(Some(key))
        .list_account_entries(with_person_token(
            ListAccountEntriesRequest { account_id: account_id.to_owned(), page_size: 10, page_token: String::new() },
            token,
        ))
        .await
        .map(|_| ())
}

/// Polls `call` (every 50 ms) until it is refused as revoked; panics unless that happens within
/// [`WITHIN`] of `since`. Returns how long it took.
async fn refused_within<F, Fut>(since: Instant, what: &str, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    loop {
        let result = call().await;
        let outcome = code_and_reason(&result);
        if outcome == revoked() {
            return since.elapsed();
        }
        assert!(outcome.is_none(), "{what}: refused for another cause: {outcome:?}");
        assert!(since.elapsed() < WITHIN, "{what}: the revoked token was still accepted after {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live_links(stack: &Stack) -> i64 {
    use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
    use identity_svc::store::schema::partner_links;
    stack
        .identity_db
        .run(|conn| {
            partner_links::table
                .filter(partner_links::unlinked_at.is_null())
                .count()
                .get_result::<i64>(conn)
                .map_err(medins_common::db::DbError::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unlinked_partners_token_is_refused_within_5_s_on_another_identity_replica_and_at_insurance_svc() {
    let stack = Stack::start().await;
    let replica = stack.start_identity_replica().await;
    let bank = stack.keys.bank.clone();
    let person = stack.front_door_person(&bank).await;
    let account = stack.open_account_for(&person.person_id).await;

    // It works just before the unlink, everywhere.
    get_person_at(&stack, replica.addr, &bank, &person, &person.token).await.expect("replica reads the person");
    list_entries(&stack, &bank, &account.account_id, &person.token).await.expect("ledger readable");

    let unlinked = stack
        .links(Some(&bank))
        .unlink_partner_account(with_person_token(
            UnlinkPartnerAccountRequest { person_id: person.person_id.clone() },
            &person.token,
        ))
        .await
        .expect("unlink")
        .into_inner();
    assert!(unlinked.unlinked);
    let at = Instant::now();

    // The replica that wrote it refuses at once.
    let here = get_person_at(&stack, stack.identity_addr, &bank, &person, &person.token).await;
    assert_eq!(code_and_reason(&here), revoked());
    refused_within(at, "GetPerson on the second identity-svc", || {
        get_person_at(&stack, replica.addr, &bank, &person, &person.token)
    })
    .await;
    refused_within(at, "ListAccountEntries", || list_entries(&stack, &bank, &account.account_id, &person.token)).await;

    // And afterwards: the link is over and the bank gets no new token.
    assert_eq!(live_links(&stack).await, 0);
    assert_eq!(stack.count_identity_rows("token_revocations").await, 1);
    let refused = stack
        .person_tokens(Some(&bank))
        .issue_person_token(IssuePersonTokenRequest { person_id: person.person_id.clone() })
        .await;
    assert_eq!(code_and_reason(&refused), Some((Code::FailedPrecondition, "PARTNER_LINK_REQUIRED".into())));
    replica.stop().await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_relink_after_an_unlink_gives_a_new_token_that_works_everywhere() {
    let stack = Stack::start().await;
    let replica = stack.start_identity_replica().await;
    let bank = stack.keys.bank.clone();
    let person = stack.front_door_person(&bank).await;
    let account = stack.open_account_for(&person.person_id).await;
    stack
        .links(Some(&bank))
        .unlink_partner_account(with_person_token(
            UnlinkPartnerAccountRequest { person_id: person.person_id.clone() },
            &person.token,
        ))
        .await
        .expect("unlink");
    let at = Instant::now();
    refused_within(at, "ListAccountEntries", || list_entries(&stack, &bank, &account.account_id, &person.token)).await;

    // Linked again (a new SMS code), at the same instant of the stack's clock as the unlink.
    stack.link_with_sms(&bank, &person.person_id, &person.seed.phone).await;
    let token = stack.fresh_person_token(&bank, &person.person_id).await;
    get_person_at(&stack, stack.identity_addr, &bank, &person, &token).await.expect("new token at identity-svc");
    get_person_at(&stack, replica.addr, &bank, &person, &token).await.expect("new token at the replica");
    list_entries(&stack, &bank, &account.account_id, &token).await.expect("new token at insurance-svc");
    // The old token stays dead.
    let old = list_entries(&stack, &bank, &account.account_id, &person.token).await;
    assert_eq!(code_and_reason(&old), revoked());
    assert_eq!(live_links(&stack).await, 1);
    replica.stop().await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_person_revokes_another_partner_through_the_partner_they_use() {
    let stack = Stack::start().await;
    let (mini, bank) = (stack.keys.mini_program.clone(), stack.keys.bank.clone());
    let person = stack.front_door_person(&mini).await;
    let account = stack.open_account_for(&person.person_id).await;
    stack.link_with_sms(&bank, &person.person_id, &person.seed.phone).await;
    let bank_token = stack.fresh_person_token(&bank, &person.person_id).await;
    list_entries(&stack, &bank, &account.account_id, &bank_token).await.expect("the bank reads the ledger");

    // The person sees the bank's link (never its user ref) in the mini program.
    let links = stack
        .links(Some(&mini))
        .list_partner_links(with_person_token(
            ListPartnerLinksRequest { person_id: person.person_id.clone(), page_size: 0, page_token: String::new() },
            &person.token,
        ))
        .await
        .expect("list links")
        .into_inner()
        .links;
    let bank_link = links.iter().find(|link| link.partner_id == "bank").expect("the bank's link is listed");
    assert!(bank_link.partner_user_ref.is_empty() && bank_link.linked_at.is_some());

    // Hostile input is refused before anything is written.
    let bad = stack
        .links(Some(&mini))
        .revoke_partner_link(with_person_token(
            RevokePartnerLinkRequest { person_id: person.person_id.clone(), partner_id: "b a n k".into() },
            &person.token,
        ))
        .await;
    assert_eq!(code_and_reason(&bad), Some((Code::InvalidArgument, "INVALID_ARGUMENT".into())));
    // The bank's token cannot revoke for the person through the mini program's door.
    let foreign = stack
        .links(Some(&mini))
        .revoke_partner_link(with_person_token(
            RevokePartnerLinkRequest { person_id: person.person_id.clone(), partner_id: "bank".into() },
            &bank_token,
        ))
        .await;
    assert_eq!(code_and_reason(&foreign), Some((Code::Unauthenticated, "PERSON_TOKEN_INVALID".into())));
    assert_eq!(live_links(&stack).await, 2);

    let revoked_now = stack
        .links(Some(&mini))
        .revoke_partner_link(with_person_token(
            RevokePartnerLinkRequest { person_id: person.person_id.clone(), partner_id: "bank".into() },
            &person.token,
        ))
        .await
        .expect("revoke")
        .into_inner();
    assert!(revoked_now.revoked);
    let at = Instant::now();
    refused_within(at, "the bank at insurance-svc", || list_entries(&stack, &bank, &account.account_id, &bank_token))
        .await;
    let identity = get_person_at(&stack, stack.identity_addr, &bank, &person, &bank_token).await;
    assert_eq!(code_and_reason(&identity), revoked());
    // The mini program's own token is untouched; the bank's link is gone; a second revoke finds
    // nothing and writes nothing.
    list_entries(&stack, &mini, &account.account_id, &person.token).await.expect("the mini program still reads");
    assert_eq!(live_links(&stack).await, 1);
    let again = stack
        .links(Some(&mini))
        .revoke_partner_link(with_person_token(
            RevokePartnerLinkRequest { person_id: person.person_id.clone(), partner_id: "bank".into() },
            &person.token,
        ))
        .await
        .expect("revoke again")
        .into_inner();
    assert!(!again.revoked);
    assert_eq!(stack.count_identity_rows("token_revocations").await, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_suspended_persons_tokens_are_refused_and_no_new_token_is_issued_until_resumed() {
    let stack = Stack::start().await;
    let (mini, bank, ops) = (stack.keys.mini_program.clone(), stack.keys.bank.clone(), stack.keys.ops.clone());
    let person = stack.front_door_person(&mini).await;
    let account = stack.open_account_for(&person.person_id).await;
    stack.link_with_sms(&bank, &person.person_id, &person.seed.phone).await;
    let bank_token = stack.fresh_person_token(&bank, &person.person_id).await;
    let suspend = |key: String, reason: &str| {
        let request = SuspendPersonRequest { person_id: person.person_id.clone(), reason: reason.to_owned() };
        let stack = &stack;
        async move { stack.persons(Some(&key)).suspend_person(request).await.map(|r| r.into_inner()) }
    };

    // Only operators, and only with a reason.
    let by_bank = suspend(bank.clone(), "suspected takeover").await;
    assert_eq!(by_bank.unwrap_err().code(), Code::PermissionDenied);
    let no_reason = suspend(ops.clone(), "  ").await;
    assert_eq!(code_and_reason(&no_reason), Some((Code::InvalidArgument, "INVALID_ARGUMENT".into())));
    assert_eq!(stack.count_identity_rows("person_suspensions").await, 0);
    list_entries(&stack, &bank, &account.account_id, &bank_token).await.expect("still readable");

    let suspended = suspend(ops.clone(), "suspected takeover, ticket 4711").await.expect("suspend");
    assert!(suspended.changed && suspended.suspended_at.is_some());
    let at = Instant::now();
    // Every partner's tokens die.
    for (key, token) in [(&mini, &person.token), (&bank, &bank_token)] {
        let here = get_person_at(&stack, stack.identity_addr, key, &person, token).await;
        assert_eq!(code_and_reason(&here), revoked());
        refused_within(at, "insurance-svc", || list_entries(&stack, key, &account.account_id, token)).await;
    }
    // No new token while suspended; a second suspension keeps the first.
    let refused = stack
        .person_tokens(Some(&bank))
        .issue_person_token(IssuePersonTokenRequest { person_id: person.person_id.clone() })
        .await;
    assert_eq!(code_and_reason(&refused), Some((Code::FailedPrecondition, "PERSON_SUSPENDED".into())));
    let again = suspend(ops.clone(), "again").await.expect("suspend again");
    assert!(!again.changed);
    assert_eq!(again.suspended_at, suspended.suspended_at);
    assert_eq!(stack.count_identity_rows("person_suspensions").await, 1);
    assert_eq!(stack.count_identity_rows("token_revocations").await, 1);

    // Resumed: new tokens work, the old ones stay dead.
    let resumed = stack
        .persons(Some(&ops))
        .resume_person(ResumePersonRequest { person_id: person.person_id.clone(), reason: "owner verified".into() })
        .await
        .expect("resume")
        .into_inner();
    assert!(resumed.changed);
    let token = stack.fresh_person_token(&bank, &person.person_id).await;
    list_entries(&stack, &bank, &account.account_id, &token).await.expect("a new token works");
    let old = list_entries(&stack, &bank, &account.account_id, &bank_token).await;
    assert_eq!(code_and_reason(&old), revoked());
    stack.shutdown().await;
}

#[tokio::test]
async fn insurance_svc_refuses_tokens_when_it_cannot_refresh_revocations() {
    let mut stack = Stack::start().await;
    let bank = stack.keys.bank.clone();
    let person = stack.front_door_person(&bank).await;
    let account = stack.open_account_for(&person.person_id).await;
    list_entries(&stack, &bank, &account.account_id, &person.token).await.expect("readable");
    stack.kill_identity().await;
    let at = Instant::now();
    loop {
        let result = list_entries(&stack, &bank, &account.account_id, &person.token).await;
        match code_and_reason(&result) {
            None => assert!(at.elapsed() < WITHIN, "still accepted {WITHIN:?} after identity-svc went away"),
            Some(outcome) => {
                assert_eq!(outcome, (Code::Unavailable, "DEPENDENCY_UNAVAILABLE".to_owned()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Operators act for no person and are not affected.
    stack
        .accounts(Some(&stack.keys.ops))
        .list_account_entries(ListAccountEntriesRequest {
            account_id: account.account_id.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("operators read without a token");
    // identity-svc back: tokens work again.
    stack.restart_identity().await;
    let deadline = Instant::now() + WITHIN;
    while list_entries(&stack, &bank, &account.account_id, &person.token).await.is_err() {
        assert!(Instant::now() < deadline, "tokens never worked again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn only_medins_services_read_the_revocation_feed_and_it_names_no_personal_data() {
    let stack = Stack::start().await;
    let bank = stack.keys.bank.clone();
    let person = stack.front_door_person(&bank).await;
    stack
        .links(Some(&bank))
        .unlink_partner_account(with_person_token(
            UnlinkPartnerAccountRequest { person_id: person.person_id.clone() },
            &person.token,
        ))
        .await
        .expect("unlink");
    for key in [&bank, &stack.keys.ops, &stack.keys.hospital] {
        let refused = stack.person_tokens(Some(key)).list_token_revocations(ListTokenRevocationsRequest {}).await;
        assert_eq!(code_and_reason(&refused), Some((Code::PermissionDenied, "PERMISSION_DENIED_SCOPE".into())));
    }
    let feed = stack
        .person_tokens(Some(&stack.keys.service))
        .list_token_revocations(ListTokenRevocationsRequest {})
        .await
        .expect("a medins service reads the feed")
        .into_inner();
    assert_eq!(feed.revocations.len(), 1);
    let revocation = &feed.revocations[0];
    assert_eq!((revocation.person_id.as_str(), revocation.partner_id.as_str()), (person.person_id.as_str(), "bank"));
    assert!(revocation.revoked_at.is_some() && feed.since.is_some());
    // Older than a token lifetime: out of the feed.
    stack.clock.advance(chrono::Duration::minutes(16));
    let feed = stack
        .person_tokens(Some(&stack.keys.service))
        .list_token_revocations(ListTokenRevocationsRequest {})
        .await
        .expect("feed")
        .into_inner();
    assert!(feed.revocations.is_empty());
    stack.shutdown().await;
}
