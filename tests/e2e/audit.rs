//! The audit trail: calls about a person are recorded in a hash chain that `medins audit verify`
//! checks, and the person reads their access history (with a person token).

use std::sync::Arc;

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use medins_common::{
    audit::{ChainVerdict, schema::audit_log, verify_chain},
    db::DbError,
};
use medins_proto::identity::v1::{GetPersonRequest, ListMyAccessHistoryRequest};
use tonic::Code;

use crate::{
    support::{Stack, TestDatabases, reason, with_person_token},
    tokens::{issue, register, verify_and_link},
};

const MEDINS: &str = env!("CARGO_BIN_EXE_medins");

const GET_PERSON: &str = "/medins.identity.v1.PersonService/GetPerson";
const LIST_MY_ACCESS_HISTORY: &str = "/medins.identity.v1.AccessHistoryService/ListMyAccessHistory";

fn history(person_id: &str, page_size: i32, page_token: &str) -> ListMyAccessHistoryRequest {
    ListMyAccessHistoryRequest { person_id: person_id.to_owned(), page_size, page_token: page_token.to_owned() }
}

#[tokio::test]
async fn access_history_shows_the_calls_of_two_partners_newest_first() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    verify_and_link(&stack, &person_id, "bank").await;
    verify_and_link(&stack, &person_id, "mini-program").await;
    let bank_token = issue(&stack, &stack.keys.bank, &person_id).await.token;
    let mini_token = issue(&stack, &stack.keys.mini_program, &person_id).await.token;

    stack
        .persons(Some(&stack.keys.bank))
        .get_person(with_person_token(GetPersonRequest { person_id: person_id.clone() }, &bank_token))
        .await
        .expect("bank reads");
    stack
        .persons(Some(&stack.keys.mini_program))
        .get_person(with_person_token(GetPersonRequest { person_id: person_id.clone() }, &mini_token))
        .await
        .expect("mini program reads");
    // A refused read is recorded too, with its outcome.
    let refused = stack
        .persons(Some(&stack.keys.mini_program))
        .get_person(GetPersonRequest { person_id: person_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut access = stack.access_history(Some(&stack.keys.bank));
    let error = access.list_my_access_history(history(&person_id, 0, "")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::Unauthenticated, "PERSON_TOKEN_REQUIRED"));

    let records = access
        .list_my_access_history(with_person_token(history(&person_id, 0, ""), &bank_token))
        .await
        .expect("history")
        .into_inner()
        .records;
    let seen: Vec<(&str, &str, &str)> =
        records.iter().map(|r| (r.partner_id.as_str(), r.method.as_str(), r.outcome.as_str())).collect();
    assert_eq!(
        seen[..4],
        [
            ("bank", LIST_MY_ACCESS_HISTORY, "UNAUTHENTICATED"),
            ("mini-program", GET_PERSON, "UNAUTHENTICATED"),
            ("mini-program", GET_PERSON, "OK"),
            ("bank", GET_PERSON, "OK"),
        ],
        "newest first: {seen:?}"
    );
    let issued: Vec<&str> =
        records.iter().filter(|r| r.method.ends_with("/IssuePersonToken")).map(|r| r.partner_id.as_str()).collect();
    assert_eq!(issued, ["mini-program", "bank"]);
    assert!(records.iter().any(|r| r.partner_id == "bank" && r.method.ends_with("/RegisterPerson")));
    assert!(records.iter().all(|r| r.recorded_at.is_some()));

    // Pages of two, following the tokens, give the same records (plus the listing just made,
    // which is recorded after it answered).
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = access
            .list_my_access_history(with_person_token(history(&person_id, 2, &page_token), &bank_token))
            .await
            .expect("page")
            .into_inner();
        assert!(page.records.len() <= 2);
        paged.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(paged.len(), records.len() + 1);
    assert!(paged[0].method.ends_with("/ListMyAccessHistory"));
    assert_eq!(paged[1..], records[..]);

    let bad_token = access.list_my_access_history(with_person_token(history(&person_id, 2, "zz"), &bank_token)).await;
    assert_eq!(bad_token.unwrap_err().code(), Code::InvalidArgument);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_modified_audit_row_is_found_by_medins_audit_verify() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    for _ in 0..3 {
        stack
            .persons(Some(&stack.keys.ops))
            .get_person(GetPersonRequest { person_id: person_id.clone() })
            .await
            .unwrap();
    }
    // Register + 3 reads.
    assert_eq!(verify_chain(&stack.identity_db).await.unwrap(), ChainVerdict::Intact { rows: 4 });
    let sqlite_url = match &stack.databases {
        TestDatabases::Sqlite { identity, .. } => Some(format!("sqlite://{}", identity.display())),
        TestDatabases::Postgres { .. } => None,
    };
    if let Some(url) = &sqlite_url {
        let output = std::process::Command::new(MEDINS)
            .args(["audit", "verify", "--identity-database-url", url])
            .output()
            .expect("run medins audit verify");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "chain intact (4 rows)");
    }

    // Someone hides who read the person.
    stack
        .identity_db
        .run(|conn| {
            diesel::update(audit_log::table.filter(audit_log::seq.eq(3i64)))
                .set(audit_log::partner_id.eq("bank"))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();

    match &sqlite_url {
        Some(url) => {
            let output = std::process::Command::new(MEDINS)
                .args(["audit", "verify", "--identity-database-url", url])
                .output()
                .expect("run medins audit verify");
            assert!(!output.status.success(), "a broken chain exits non-zero");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(stdout.contains("chain broken at row 3"), "{stdout}");
        }
        None => {
            let verdict = verify_chain(&stack.identity_db).await.unwrap();
            assert!(matches!(verdict, ChainVerdict::Broken { seq: 3, .. }), "{verdict:?}");
        }
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn two_writers_appending_at_once_never_fork_the_chain() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    // A second writer on the same database stands in for a second identity-svc replica.
    let replica = medins_common::audit::AuditStore::new(stack.identity_db.clone(), Arc::new(stack.clock.clone()));
    let subject: uuid::Uuid = person_id.parse().unwrap();
    let direct = (0..100).map(|i| {
        let replica = replica.clone();
        async move { replica.record(if i % 2 == 0 { "bank" } else { "ops" }, "/test/Append", subject, Code::Ok).await }
    });
    let through_the_server = (0..20).map(|_| {
        let mut persons = stack.persons(Some(&stack.keys.ops));
        let person_id = person_id.clone();
        async move {
            persons.get_person(GetPersonRequest { person_id }).await.expect("ops read");
        }
    });
    futures::future::join(futures::future::join_all(direct), futures::future::join_all(through_the_server)).await;
    // Register + 100 direct + 20 reads, one unbroken chain.
    assert_eq!(verify_chain(&stack.identity_db).await.unwrap(), ChainVerdict::Intact { rows: 121 });
    stack.shutdown().await;
}
