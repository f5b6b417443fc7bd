//! The audit log (docs/architecture.md#who-may-call-what, README "Audit trail"): calls about a
//! person are recorded at the service that served them, under the partner that acted (also when
//! insurance-svc relays the call to identity-svc), in partitioned logs sealed by per-row MACs and
//! signed checkpoints that `medins audit verify` checks; the person reads both services' records in
//! one history.

use std::collections::{BTreeMap, BTreeSet};

use diesel::{BoolExpressionMethods, ExpressionMethods, QueryDsl, RunQueryDsl};
use medins_common::{
    audit::{
        AuditStore, FaultKind, LogReport, load_checkpoints,
        schema::{audit_checkpoint, audit_log},
        verify_log,
    },
    db::DbError,
};
use medins_proto::{
    identity::v1::{GetPersonRequest, ListMyAccessHistoryRequest},
    insurance::v1::Scheme,
};
use tonic::{Code, Request};
use uuid::Uuid;

use crate::{
    support::{SeedPerson, Stack, StackOptions, TestDatabases, reason, with_person_token},
    tokens::{issue, register, verify_and_link},
};

const MEDINS: &str = env!("CARGO_BIN_EXE_medins");

const GET_PERSON: &str = "/medins.identity.v1.PersonService/GetPerson";
const RESOLVE_PERSON: &str = "/medins.identity.v1.PersonService/ResolvePerson";
const LIST_MY_ACCESS_HISTORY: &str = "/medins.identity.v1.AccessHistoryService/ListMyAccessHistory";

fn history(person_id: &str, page_size: i32, page_token: &str) -> ListMyAccessHistoryRequest {
    ListMyAccessHistoryRequest { person_id: person_id.to_owned(), page_size, page_token: page_token.to_owned() }
}

fn sqlite_urls(stack: &Stack) -> Option<(String, String)> {
    match &stack.databases {
        TestDatabases::Sqlite { identity, insurance } => {
            Some((format!("sqlite://{}", identity.display()), format!("sqlite://{}", insurance.display())))
        }
        TestDatabases::Postgres { .. } => None,
    }
}

/// Runs `medins audit ARGS` against the stack's databases and key file.
fn medins_audit(stack: &Stack, args: &[&str]) -> std::process::Output {
    let (identity, insurance) = sqlite_urls(stack).expect("the CLI runs against SQLite files");
    let keys = stack.audit_keys_file();
    std::process::Command::new(MEDINS)
        .arg("audit")
        .args(args)
        .args(["--identity-database-url", &identity, "--insurance-database-url", &insurance])
        .args(["--audit-keys-file", &keys.display().to_string()])
        .output()
        .expect("run medins audit")
}

async fn identity_report(stack: &Stack) -> LogReport {
    verify_log(&stack.identity_db, "identity-svc", &stack.audit_keys()).await.expect("verify identity-svc")
}

/// (partner, method) of identity-svc's audit rows about `person_id`, oldest first.
async fn identity_rows(stack: &Stack, person_id: &str) -> Vec<(String, String)> {
    let person_id = person_id.to_owned();
    stack
        .identity_db
        .run(move |conn| {
            audit_log::table
                .filter(audit_log::person_id.eq(person_id))
                .order(audit_log::seq.asc())
                .select((audit_log::partner_id, audit_log::method))
                .load::<(String, String)>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
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
async fn the_merged_history_pages_across_both_services_in_time_order() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    verify_and_link(&stack, &person_id, "bank").await;
    let token = issue(&stack, &stack.keys.bank, &person_id).await.token;
    let subject: Uuid = person_id.parse().unwrap();
    // insurance-svc's records, written as one of its replicas would, interleaved in time with
    // identity-svc's (reads by OPS).
    let insurance = stack.audit_replica("insurance-svc");
    let mut expected = Vec::new();
    for i in 0..5 {
        stack.clock.advance(chrono::Duration::milliseconds(10));
        stack
            .persons(Some(&stack.keys.ops))
            .get_person(GetPersonRequest { person_id: person_id.clone() })
            .await
            .expect("ops reads");
        expected.push(("ops".to_owned(), GET_PERSON.to_owned()));
        stack.clock.advance(chrono::Duration::milliseconds(10));
        let method = format!("/medins.insurance.v1.AccountService/GetAccount{i}");
        insurance.record("bank", &method, subject, Code::Ok).await;
        expected.push(("bank".to_owned(), method));
    }
    // Two at the very same microsecond, one per service: identity-svc's is listed first.
    stack.clock.advance(chrono::Duration::milliseconds(10));
    insurance.record("pharmacy", "/medins.insurance.v1.CodeService/VerifyCode", subject, Code::Ok).await;
    stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: person_id.clone() })
        .await
        .expect("ops reads");
    expected.push(("pharmacy".to_owned(), "/medins.insurance.v1.CodeService/VerifyCode".to_owned()));
    expected.push(("ops".to_owned(), GET_PERSON.to_owned()));
    expected.reverse();
    stack.clock.advance(chrono::Duration::milliseconds(10));

    let mut access = stack.access_history(Some(&stack.keys.bank));
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = access
            .list_my_access_history(with_person_token(history(&person_id, 3, &page_token), &token))
            .await
            .expect("page")
            .into_inner();
        assert!(page.records.len() <= 3);
        paged.extend(page.records.into_iter().map(|r| (r.partner_id, r.method, r.recorded_at.unwrap())));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(paged.windows(2).all(|w| (w[0].2.seconds, w[0].2.nanos) >= (w[1].2.seconds, w[1].2.nanos)));
    // The listings themselves are recorded after they answer: later pages show earlier ones.
    let seen: Vec<(String, String)> =
        paged.into_iter().filter(|r| r.1 != LIST_MY_ACCESS_HISTORY).map(|(p, m, _)| (p, m)).collect();
    assert_eq!(seen[..expected.len()], expected[..], "{seen:#?}");

    // Hostile tokens: not base64, another list's, a cursor this list never made.
    for bad in [
        "zz".to_owned(),
        identity_svc::domain::link::encode_page_token("links", "1.i.2"),
        identity_svc::domain::link::encode_page_token("audit", "1.x.2"),
        identity_svc::domain::link::encode_page_token("audit", "12"),
        identity_svc::domain::link::encode_page_token("audit", "1.i.-5"),
    ] {
        let error =
            access.list_my_access_history(with_person_token(history(&person_id, 3, &bad), &token)).await.unwrap_err();
        assert_eq!((error.code(), reason(&error).as_str()), (Code::InvalidArgument, "INVALID_ARGUMENT"), "{bad}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn without_insurance_svc_the_history_is_unavailable_rather_than_half() {
    let mut stack = Stack::start_with(StackOptions { start_insurance: false, ..StackOptions::default() }).await;
    let person_id = register(&stack).await;
    verify_and_link(&stack, &person_id, "bank").await;
    let token = issue(&stack, &stack.keys.bank, &person_id).await.token;
    let mut access = stack.access_history(Some(&stack.keys.bank));
    let error = access.list_my_access_history(with_person_token(history(&person_id, 0, ""), &token)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::Unavailable, "DEPENDENCY_UNAVAILABLE"));
    stack.start_insurance().await;
    let records = access
        .list_my_access_history(with_person_token(history(&person_id, 0, ""), &token))
        .await
        .expect("history once insurance-svc answers")
        .into_inner()
        .records;
    // The refused listing is in the history too.
    assert!(records.iter().any(|r| r.method == LIST_MY_ACCESS_HISTORY && r.outcome == "UNAVAILABLE"));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_call_insurance_svc_relays_is_recorded_under_the_partner_that_made_it() {
    let stack = Stack::start().await;
    let person = SeedPerson::adult();
    // The bank opens an account by name and ID number: insurance-svc resolves the person at
    // identity-svc on the bank's behalf.
    let opened = stack.open_account_by_identity(&stack.keys.bank, &person, Scheme::Resident, "").await.expect("open");
    let rows = identity_rows(&stack, &opened.person_id).await;
    assert!(rows.contains(&("bank".to_owned(), RESOLVE_PERSON.to_owned())), "{rows:?}");
    assert!(rows.iter().all(|(partner, _)| partner != "insurance-svc"), "never the relaying service: {rows:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn only_services_may_name_a_partner_they_act_for() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    let with_header = |value: &str| {
        let mut request = Request::new(GetPersonRequest { person_id: person_id.clone() });
        request.metadata_mut().insert("x-on-behalf-of", value.parse().unwrap());
        request
    };
    let before = identity_rows(&stack, &person_id).await;

    // OPS (or any partner) naming another is refused before anything is read or recorded.
    let error = stack.persons(Some(&stack.keys.ops)).get_person(with_header("bank")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::PermissionDenied, "ON_BEHALF_OF_NOT_ALLOWED"));
    // A SERVICE naming something that is no partner id.
    let error = stack.persons(Some(&stack.keys.service)).get_person(with_header("bank; drop table")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error).as_str()), (Code::InvalidArgument, "ON_BEHALF_OF_INVALID"));
    let error = stack.persons(Some(&stack.keys.service)).get_person(with_header(&"b".repeat(65))).await.unwrap_err();
    assert_eq!(reason(&error), "ON_BEHALF_OF_INVALID");
    assert_eq!(identity_rows(&stack, &person_id).await, before, "refused calls read nothing");

    // A SERVICE relaying for the bank: recorded under the bank.
    stack.persons(Some(&stack.keys.service)).get_person(with_header("bank")).await.expect("service relays");
    // Without the header: recorded under the service itself.
    stack
        .persons(Some(&stack.keys.service))
        .get_person(GetPersonRequest { person_id: person_id.clone() })
        .await
        .expect("service reads");
    let after = identity_rows(&stack, &person_id).await;
    assert_eq!(
        after[before.len()..],
        [("bank".to_owned(), GET_PERSON.to_owned()), ("insurance-svc".to_owned(), GET_PERSON.to_owned())]
    );
    stack.shutdown().await;
}

/// `n` person ids whose rows `audit` spreads over as many partitions as it can (on PostgreSQL
/// `n` different partitions, none of them `avoid`'s; on SQLite, one partition: all of them).
fn persons_in_distinct_partitions(audit: &AuditStore, n: usize, avoid: &[&str]) -> Vec<Uuid> {
    let partitions = audit.partitions() as usize;
    let mut parts: BTreeSet<i32> = avoid.iter().map(|person| audit.partition_of(person)).collect();
    let mut persons = Vec::new();
    while persons.len() < n {
        let id = Uuid::now_v7();
        if parts.insert(audit.partition_of(&id.to_string())) || parts.len() >= partitions {
            persons.push(id);
        }
    }
    persons
}

/// (part, idx) of identity-svc's audit rows about `person_id`, in position order.
async fn identity_positions(stack: &Stack, person_id: &str) -> Vec<(i32, i64)> {
    let person_id = person_id.to_owned();
    stack
        .identity_db
        .run(move |conn| {
            audit_log::table
                .filter(audit_log::person_id.eq(person_id))
                .order((audit_log::part.asc(), audit_log::idx.asc()))
                .select((audit_log::part, audit_log::idx))
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

/// The next position of identity-svc's partition `part`.
async fn partition_end(stack: &Stack, part: i32) -> i64 {
    stack
        .identity_db
        .run(move |conn| {
            audit_log::table
                .filter(audit_log::part.eq(part))
                .select(diesel::dsl::max(audit_log::idx))
                .first::<Option<i64>>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
        .map_or(0, |last| last + 1)
}

/// The rows of identity-svc's audit log as stored, every column: what a tampering test removes
/// and puts back.
type StoredAuditRow = (i64, i32, i64, String, String, String, String, chrono::NaiveDateTime, String, Vec<u8>);

/// One direct edit of identity-svc's audit log, as someone with write access to the database
/// would make it, and how to undo it.
#[derive(Debug, Clone)]
enum Tampering {
    /// The partner of the row at (part, idx) changed to `ops`.
    Change { part: i32, idx: i64 },
    /// The row at (part, idx) deleted.
    Delete { part: i32, idx: i64 },
    /// A read of `person` that never happened, at (part, idx) (the partition's end), with the MAC
    /// of the person's first row.
    Insert { person: String, part: i32, idx: i64 },
}

/// Applies `tampering`; returns what undoes it (the deleted row, the original partner).
async fn tamper(stack: &Stack, tampering: Tampering) -> Option<StoredAuditRow> {
    stack
        .identity_db
        .run(move |conn| {
            let at = |part: i32, idx: i64| audit_log::part.eq(part).and(audit_log::idx.eq(idx));
            Ok::<_, DbError>(match tampering {
                Tampering::Change { part, idx } => {
                    let row: StoredAuditRow = audit_log::table.filter(at(part, idx)).first(conn)?;
                    diesel::update(audit_log::table.filter(at(part, idx)))
                        .set(audit_log::partner_id.eq("ops"))
                        .execute(conn)?;
                    Some(row)
                }
                Tampering::Delete { part, idx } => {
                    let row: StoredAuditRow = audit_log::table.filter(at(part, idx)).first(conn)?;
                    diesel::delete(audit_log::table.filter(at(part, idx))).execute(conn)?;
                    Some(row)
                }
                Tampering::Insert { person, part, idx } => {
                    let (mac, key_id, recorded_at): (Vec<u8>, String, chrono::NaiveDateTime) = audit_log::table
                        .filter(audit_log::person_id.eq(&person))
                        .order((audit_log::part.asc(), audit_log::idx.asc()))
                        .select((audit_log::mac, audit_log::key_id, audit_log::recorded_at))
                        .first(conn)?;
                    diesel::insert_into(audit_log::table)
                        .values((
                            audit_log::part.eq(part),
                            audit_log::idx.eq(idx),
                            audit_log::partner_id.eq("hospital"),
                            audit_log::method.eq(GET_PERSON),
                            audit_log::person_id.eq(&person),
                            audit_log::outcome.eq("OK"),
                            audit_log::recorded_at.eq(recorded_at),
                            audit_log::key_id.eq(key_id),
                            audit_log::mac.eq(mac),
                        ))
                        .execute(conn)?;
                    None
                }
            })
        })
        .await
        .unwrap()
}

/// Undoes `tampering` with what [`tamper`] returned.
async fn undo(stack: &Stack, tampering: Tampering, saved: Option<StoredAuditRow>) {
    stack
        .identity_db
        .run(move |conn| {
            let at = |part: i32, idx: i64| audit_log::part.eq(part).and(audit_log::idx.eq(idx));
            match (tampering, saved) {
                (Tampering::Change { part, idx }, Some(row)) => {
                    diesel::update(audit_log::table.filter(at(part, idx)))
                        .set(audit_log::partner_id.eq(row.3))
                        .execute(conn)?;
                }
                (Tampering::Delete { .. }, Some(row)) => {
                    let (seq, part, idx, partner_id, method, person_id, outcome, recorded_at, key_id, mac) = row;
                    diesel::insert_into(audit_log::table)
                        .values((
                            audit_log::seq.eq(seq),
                            audit_log::part.eq(part),
                            audit_log::idx.eq(idx),
                            audit_log::partner_id.eq(partner_id),
                            audit_log::method.eq(method),
                            audit_log::person_id.eq(person_id),
                            audit_log::outcome.eq(outcome),
                            audit_log::recorded_at.eq(recorded_at),
                            audit_log::key_id.eq(key_id),
                            audit_log::mac.eq(mac),
                        ))
                        .execute(conn)?;
                }
                (Tampering::Insert { part, idx, .. }, None) => {
                    diesel::delete(audit_log::table.filter(at(part, idx))).execute(conn)?;
                }
                (tampering, saved) => panic!("nothing to undo {tampering:?} with {saved:?}"),
            }
            Ok::<_, DbError>(())
        })
        .await
        .unwrap()
}

/// What `medins audit verify` prints for the fault `kind` at (part, idx).
fn verify_line(part: i32, idx: i64, kind: &FaultKind) -> String {
    match kind {
        FaultKind::Deleted => format!("identity-svc: partition {part} row {idx}: deleted"),
        FaultKind::Changed => format!("identity-svc: partition {part} row {idx} (seq"),
        FaultKind::Inserted => format!("identity-svc: partition {part} row {idx} (seq"),
        other => panic!("not made by this test: {other:?}"),
    }
}

#[tokio::test]
async fn changed_deleted_and_inserted_rows_are_named_by_medins_audit_verify() {
    let stack = Stack::start().await;
    // Rows through the server (register + reads) and through a second writer, for three persons
    // in three partitions on PostgreSQL (in the one partition on SQLite).
    let person_id = register(&stack).await;
    for _ in 0..3 {
        stack
            .persons(Some(&stack.keys.ops))
            .get_person(GetPersonRequest { person_id: person_id.clone() })
            .await
            .unwrap();
    }
    let replica = stack.audit_replica("identity-svc");
    let [changed, deleted, inserted]: [Uuid; 3] =
        persons_in_distinct_partitions(&replica, 3, &[&person_id]).try_into().unwrap();
    for subject in [changed, deleted, inserted] {
        for _ in 0..4 {
            replica.record("bank", GET_PERSON, subject, Code::Ok).await;
        }
    }
    // Sealed: the first rows of each partition, then one more unsealed row per person.
    let checkpoints = replica.checkpoint_now().await.unwrap();
    assert!(checkpoints >= 1);
    for subject in [changed, deleted, inserted] {
        replica.record("ops", GET_PERSON, subject, Code::NotFound).await;
    }
    let report = identity_report(&stack).await;
    assert_eq!(report.faults, vec![]);
    assert_eq!(report.rows, 1 + 3 + 3 * 5 + count_other_rows(&stack, &[changed, deleted, inserted], &person_id).await);
    assert_eq!(report.unsealed_rows, 3);
    if sqlite_urls(&stack).is_some() {
        let output = medins_audit(&stack, &["verify"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("identity-svc: ") && stdout.contains(": intact"), "{stdout}");
        assert!(stdout.contains("insurance-svc: "), "{stdout}");
    }

    // Someone hides who read the first person: a sealed row's partner changed (its second row).
    // Someone removes the second person's third row. Someone adds a read of the third person
    // that never happened, at the end of its partition, with a MAC copied from a real row.
    let (c, d, i) = (changed.to_string(), deleted.to_string(), inserted.to_string());
    let (c_part, c_idx) = identity_positions(&stack, &c).await[1];
    let (d_part, d_idx) = identity_positions(&stack, &d).await[2];
    let i_part = replica.partition_of(&i);
    let i_idx = partition_end(&stack, i_part).await;
    let tamperings = [
        (Tampering::Change { part: c_part, idx: c_idx }, FaultKind::Changed),
        (Tampering::Delete { part: d_part, idx: d_idx }, FaultKind::Deleted),
        (Tampering::Insert { person: i.clone(), part: i_part, idx: i_idx }, FaultKind::Inserted),
    ];
    let expected = |tampering: &Tampering, kind: &FaultKind| match tampering {
        Tampering::Change { part, idx } | Tampering::Delete { part, idx } | Tampering::Insert { part, idx, .. } => {
            (*part, (*idx, kind.clone()))
        }
    };
    let parts: BTreeSet<i32> = [c_part, d_part, i_part].into();
    if parts.len() == 3 {
        // PostgreSQL: three partitions, each named at its first wrong row, all in one report.
        for (tampering, _) in &tamperings {
            tamper(&stack, tampering.clone()).await;
        }
        let report = identity_report(&stack).await;
        let found: BTreeMap<i32, (i64, FaultKind)> =
            report.faults.iter().map(|f| (f.part, (f.idx, f.kind.clone()))).collect();
        let wanted: BTreeMap<i32, (i64, FaultKind)> =
            tamperings.iter().map(|(tampering, kind)| expected(tampering, kind)).collect();
        assert_eq!(found, wanted, "{:#?}", report.faults);
    } else {
        // SQLite: one partition, named at its first wrong row: each edit alone, then undone.
        assert_eq!(parts.len(), 1);
        for (tampering, kind) in &tamperings {
            let saved = tamper(&stack, tampering.clone()).await;
            let report = identity_report(&stack).await;
            let found: Vec<(i32, (i64, FaultKind))> =
                report.faults.iter().map(|f| (f.part, (f.idx, f.kind.clone()))).collect();
            assert_eq!(found, vec![expected(tampering, kind)], "{tampering:?}");
            let output = medins_audit(&stack, &["verify"]);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(output.status.code(), Some(1), "a damaged log exits 1: {stdout}");
            let (part, (idx, kind)) = expected(tampering, kind);
            assert!(stdout.contains(&verify_line(part, idx, &kind)), "{stdout}");
            undo(&stack, tampering.clone(), saved).await;
            assert_eq!(identity_report(&stack).await.faults, vec![], "undone: {tampering:?}");
        }
        // All three at once: the first of them in the partition is the one named.
        for (tampering, _) in &tamperings {
            tamper(&stack, tampering.clone()).await;
        }
    }
    if sqlite_urls(&stack).is_some() {
        let output = medins_audit(&stack, &["verify"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "a damaged log exits 1: {stdout}");
        let first = tamperings
            .iter()
            .map(|(tampering, kind)| expected(tampering, kind))
            .min_by_key(|(_, (idx, _))| *idx)
            .expect("three");
        assert!(stdout.contains(&verify_line(first.0, first.1.0, &first.1.1)), "{stdout}");
    }
    stack.shutdown().await;
}

/// identity-svc rows of the test's persons beyond those it counts (token issues, links...):
/// none but what the registered person's calls wrote.
async fn count_other_rows(stack: &Stack, replica_persons: &[Uuid], registered: &str) -> i64 {
    let known: Vec<String> = replica_persons.iter().map(Uuid::to_string).chain([registered.to_owned()]).collect();
    stack
        .identity_db
        .run(move |conn| {
            audit_log::table
                .filter(audit_log::person_id.ne_all(known))
                .count()
                .get_result::<i64>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn checkpoints_are_exported_for_a_witness_who_checks_each_new_export_against_the_last() {
    let stack = Stack::start().await;
    let replica = stack.audit_replica("insurance-svc");
    // Four persons: in four partitions on PostgreSQL, in the one partition on SQLite.
    let persons = persons_in_distinct_partitions(&replica, 4, &[]);
    let parts = persons.iter().map(|p| replica.partition_of(&p.to_string())).collect::<BTreeSet<i32>>().len();
    assert_eq!(parts, if replica.partitions() == 1 { 1 } else { 4 });
    let per_part = (persons.len() / parts) as i64;
    for subject in &persons {
        replica.record("bank", "/medins.insurance.v1.AccountService/GetAccount", *subject, Code::Ok).await;
    }
    replica.checkpoint_now().await.unwrap();
    let first = load_checkpoints(&stack.insurance_db, "insurance-svc").await.unwrap();
    assert_eq!(first.len(), parts);
    // Signed, and each consistent with the one before (the witness's own check).
    let export = medins_common::audit::witness::CheckpointExport {
        format: medins_common::audit::witness::EXPORT_FORMAT.into(),
        exported_at: "now".into(),
        keys: stack.audit_keys().public_keys(),
        checkpoints: first.clone(),
    };
    let summary = medins_common::audit::witness::check_consistency(&export, &export).expect("signed and consistent");
    assert_eq!((summary.partitions, summary.checkpoints), (parts, parts));
    // Concurrent checkpointers (two replicas) write one checkpoint per partition per size.
    for subject in &persons {
        replica.record("bank", "/medins.insurance.v1.AccountService/GetAccount", *subject, Code::Ok).await;
    }
    let other = stack.audit_replica("insurance-svc");
    let (a, b) = futures::future::join(replica.checkpoint_now(), other.checkpoint_now()).await;
    assert_eq!(a.unwrap() + b.unwrap(), parts, "each partition sealed once");
    let sizes: Vec<(i32, i64, i64)> = stack
        .insurance_db
        .run(|conn| {
            audit_checkpoint::table
                .order((audit_checkpoint::part.asc(), audit_checkpoint::tree_size.asc()))
                .select((audit_checkpoint::part, audit_checkpoint::prev_size, audit_checkpoint::tree_size))
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(sizes.len(), 2 * parts);
    assert!(
        sizes
            .chunks(2)
            .all(|pair| pair[0].1 == 0 && pair[0].2 == per_part && pair[1].1 == per_part && pair[1].2 == 2 * per_part)
    );

    if sqlite_urls(&stack).is_some() {
        let dir = tempfile::tempdir().unwrap();
        let older = dir.path().join("older.json");
        let newer = dir.path().join("newer.json");
        // The witness's copy from before the new checkpoints: the first four.
        let mut export: serde_json::Value = serde_json::from_slice(
            &medins_audit(&stack, &["export-checkpoints", "--out", &newer.display().to_string()])
                .status
                .success()
                .then(|| std::fs::read(&newer).unwrap())
                .expect("export"),
        )
        .unwrap();
        assert_eq!(export["format"], "medins-audit-checkpoints/v1");
        let all = export["checkpoints"].as_array().unwrap().clone();
        assert_eq!(all.len(), 2 * parts);
        export["checkpoints"] = all.iter().filter(|c| c["prev_size"] == 0).cloned().collect();
        std::fs::write(&older, serde_json::to_vec(&export).unwrap()).unwrap();
        let check = |older: &std::path::Path, newer: &std::path::Path| {
            std::process::Command::new(MEDINS)
                .args(["audit", "check-consistency"])
                .args([older, newer])
                .output()
                .expect("run check-consistency")
        };
        let output = check(&older, &newer);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
        let consistent = format!("consistent: {parts} partitions, {} checkpoints, {parts} new", 2 * parts);
        assert!(String::from_utf8_lossy(&output.stdout).contains(&consistent), "{consistent}");

        // The operator rewrites a sealed checkpoint (and re-signs nothing): the witness sees it.
        let mut rewritten: serde_json::Value = serde_json::from_slice(&std::fs::read(&newer).unwrap()).unwrap();
        rewritten["checkpoints"][0]["root"] = serde_json::json!(hex::encode([7u8; 32]));
        std::fs::write(&newer, serde_json::to_vec(&rewritten).unwrap()).unwrap();
        let output = check(&older, &newer);
        assert_eq!(output.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&output.stdout).contains("NOT consistent"));
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn sixty_four_concurrent_audited_calls_for_different_persons_spread_over_partitions() {
    let stack = Stack::start().await;
    let mut persons = Vec::new();
    for _ in 0..64 {
        persons.push(register(&stack).await);
    }
    let reads = persons.iter().map(|person_id| {
        let mut client = stack.persons(Some(&stack.keys.ops));
        let person_id = person_id.clone();
        async move { client.get_person(GetPersonRequest { person_id }).await.expect("ops read") }
    });
    futures::future::join_all(reads).await;
    let replica = stack.audit_replica("identity-svc");
    // Each read went to its person's partition: on PostgreSQL many partitions, each with its own
    // positions.
    let rows: Vec<(i32, i64, String)> = stack
        .identity_db
        .run(|conn| {
            audit_log::table
                .filter(audit_log::method.eq(GET_PERSON))
                .select((audit_log::part, audit_log::idx, audit_log::person_id))
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 64);
    let parts: BTreeSet<i32> = rows.iter().map(|r| r.0).collect();
    assert!(rows.iter().all(|(part, _, person)| *part == replica.partition_of(person)));
    let spread = replica.partitions() > 1;
    if spread {
        assert!(parts.len() >= 24, "64 persons over 64 partitions: {} partitions", parts.len());
    } else {
        // SQLite: its one writer serialises every append whatever the partition, so the log has
        // one (`partitions_for`): every row there, each at its own position.
        assert_eq!(parts, BTreeSet::from([0]));
        assert_eq!(rows.iter().map(|r| r.1).collect::<BTreeSet<i64>>().len(), 64);
    }

    // A replica's 64 concurrent appends for 64 persons: group-committed (fewer transactions than
    // rows) and, on PostgreSQL, spread (each transaction touches several partitions, none of
    // them a global head).
    let subjects: Vec<Uuid> = (0..64).map(|_| Uuid::now_v7()).collect();
    futures::future::join_all(subjects.iter().map(|s| replica.record("ops", "/test/Append", *s, Code::Ok))).await;
    let stats = replica.stats();
    let transactions = stats.transactions.load(std::sync::atomic::Ordering::Relaxed);
    let touched = stats.partitions_touched.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stats.rows.load(std::sync::atomic::Ordering::Relaxed), 64);
    assert!(transactions <= 32, "group commit: {transactions} transactions for 64 rows");
    if spread {
        assert!(touched > transactions, "transactions span partitions: {touched} partitions in {transactions}");
    } else {
        assert_eq!(touched, transactions, "one partition per transaction");
    }
    let report = identity_report(&stack).await;
    assert_eq!(report.faults, vec![]);
    if !spread {
        assert_eq!(report.partitions, 1, "every row of the log, the chain verifying");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn two_writers_appending_at_once_never_fork_a_partition() {
    let stack = Stack::start().await;
    let person_id = register(&stack).await;
    // A second writer on the same database stands in for a second identity-svc replica.
    let replica = stack.audit_replica("identity-svc");
    let subject: Uuid = person_id.parse().unwrap();
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
    // Register + 100 direct + 20 reads, in one partition at positions 0..121 without a gap.
    let positions: Vec<i64> = stack
        .identity_db
        .run(move |conn| {
            audit_log::table
                .filter(audit_log::person_id.eq(medins_common::db::DbUuid(subject)))
                .order(audit_log::idx.asc())
                .select(audit_log::idx)
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(positions, (0..121).collect::<Vec<i64>>());
    assert_eq!(identity_report(&stack).await.faults, vec![]);
    stack.shutdown().await;
}
