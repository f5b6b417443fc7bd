//! The access table (docs/architecture.md#trust-model) for AccountService, VoucherService,
//! CodeService and SettlementService: every RPC x caller, for an existing and a missing id, with
//! the answer (code + ErrorInfo reason) and the state afterwards; employers bound to their employer
//! codes; counters bound to their visits; and every call about a person in that person's access
//! history. Runs on SQLite and, with `MEDINS_TEST_POSTGRES_URL`, on PostgreSQL.

use chrono::Datelike;
use medins_proto::insurance::v1::{
    Account, AccountEntry, ApplyForCardsBatchRequest, CardBatchPerson, Category, CreditContributionRequest, EntryKind,
    GetAccountRequest, GetAnnualExpensesRequest, GetVoucherRequest, IssueCodeRequest, ListAccountEntriesRequest,
    OpenAccountRequest, PayFrom, PersonIdentity, Relationship, ResumeAccountRequest, Scheme, SettleRequest,
    SuspendAccountRequest, SuspendVoucherRequest, VerifyCodeRequest, VoucherStatus, card_batch_person,
    get_account_request, open_account_request,
};
use tonic::{Code, Request, Status};

use crate::support::{
    SeedPerson, Stack, family::Member, privacy, reason, vouchers::FrontDoorPerson, with_person_token,
};

/// How a caller calls: a partner's key, and the person token it sends, if any.
#[derive(Clone, Copy, Debug)]
struct As<'a> {
    name: &'static str,
    key: &'a str,
    token: Option<&'a str>,
}

impl As<'_> {
    fn request<T>(&self, message: T) -> Request<T> {
        match self.token {
            Some(token) => with_person_token(message, token),
            None => Request::new(message),
        }
    }
}

/// The answer of a call: OK, or code + reason.
fn answer<T>(result: &Result<T, Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), reason(status)),
    }
}

fn ok() -> (Code, String) {
    (Code::Ok, String::new())
}

fn refused(code: Code, reason: &str) -> (Code, String) {
    (code, reason.to_owned())
}

fn missing_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Everyone the matrix needs.
struct World {
    /// An employee of the stack's employer (ACME-01), insured with money and an ACTIVE voucher;
    /// token issued to the bank.
    holder: FrontDoorPerson,
    holder_account: Account,
    /// Another insured person (RESIDENT) with a token of their own from the bank.
    stranger: FrontDoorPerson,
    stranger_account: Account,
    /// An employee of another company (OTHER-CO: no partner of the stack speaks for it).
    other_employee_account: Account,
    /// A binder (token from the bank) and the child they bound (ACTIVE).
    binder_token: String,
    child: Member,
}

async fn world(stack: &Stack) -> World {
    let (holder, holder_account) = stack.insured_holder(Scheme::Employee, 10_000).await;
    let (stranger, stranger_account) = stack.insured_holder(Scheme::Resident, 2_000).await;
    let other = stack.employee_of("OTHER-CO").await;
    let other_employee_account = get_account(stack, ops(stack), &other.person_id).await.expect("other employee");
    let binder = stack.binder(0).await;
    let child = stack.member_aged(8, 0).await;
    let documents = stack.binding_documents(&binder, &child, Relationship::Child).await;
    stack.confirm_household(&binder, &child, Relationship::Child);
    stack.add_member(&binder, &child, Relationship::Child, &documents).await.expect("bind the child");
    World {
        holder,
        holder_account,
        stranger,
        stranger_account,
        other_employee_account,
        binder_token: binder.token,
        child,
    }
}

fn ops(stack: &Stack) -> As<'_> {
    As { name: "ops", key: &stack.keys.ops, token: None }
}

async fn get_account(stack: &Stack, caller: As<'_>, person_id: &str) -> Result<Account, Status> {
    stack
        .accounts(Some(caller.key))
        .get_account(
            caller.request(GetAccountRequest { key: Some(get_account_request::Key::PersonId(person_id.to_owned())) }),
        )
        .await
        .map(|r| r.into_inner().account.expect("account"))
}

async fn get_account_by_id(stack: &Stack, caller: As<'_>, account_id: &str) -> Result<Account, Status> {
    stack
        .accounts(Some(caller.key))
        .get_account(
            caller.request(GetAccountRequest { key: Some(get_account_request::Key::AccountId(account_id.to_owned())) }),
        )
        .await
        .map(|r| r.into_inner().account.expect("account"))
}

async fn entries(stack: &Stack, caller: As<'_>, account_id: &str) -> Result<Vec<AccountEntry>, Status> {
    stack
        .accounts(Some(caller.key))
        .list_account_entries(caller.request(ListAccountEntriesRequest {
            account_id: account_id.to_owned(),
            page_size: 100,
            page_token: String::new(),
        }))
        .await
        .map(|r| r.into_inner().entries)
}

async fn credit(stack: &Stack, caller: As<'_>, account_id: &str, reference: &str) -> Result<AccountEntry, Status> {
    stack
        .accounts(Some(caller.key))
        .credit_contribution(caller.request(CreditContributionRequest {
            account_id: account_id.to_owned(),
            amount_cents: 500,
            reference: reference.to_owned(),
        }))
        .await
        .map(|r| r.into_inner().entry.expect("entry"))
}

/// Balance and number of ledger entries, as operators see them.
async fn ledger_state(stack: &Stack, account_id: &str) -> (i64, usize) {
    let account = get_account_by_id(stack, ops(stack), account_id).await.expect("ops reads the account");
    (account.balance_cents, stack.all_entries(account_id).await.len())
}

#[tokio::test]
async fn account_reads_follow_the_access_table_and_a_refusal_tells_nothing_about_existence() {
    let stack = Stack::start().await;
    let w = world(&stack).await;
    let keys = &stack.keys;
    let holder = As { name: "holder's own token", key: &keys.bank, token: Some(&w.holder.token) };
    let strangers_token = As { name: "another person's token", key: &keys.bank, token: Some(&w.stranger.token) };
    let binder = As { name: "active binder's token", key: &keys.bank, token: Some(&w.binder_token) };
    let mini = As { name: "mini program, no token", key: &keys.mini_program, token: None };
    let pharmacy = As { name: "pharmacy, no token", key: &keys.pharmacy, token: None };
    let hospital = As { name: "hospital, no token", key: &keys.hospital, token: None };
    let employer = As { name: "employer", key: &keys.employer, token: None };
    let bank = As { name: "bank, no token", key: &keys.bank, token: None };

    let not_found = || refused(Code::NotFound, "ACCOUNT_NOT_FOUND");
    let token_required = || refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED");
    let missing = missing_id();
    // (caller, person whose account is read, expected answer). Every refused row is asked for a
    // missing person too, and must get the same answer.
    let rows: Vec<(As, &str, (Code, String))> = vec![
        (ops(&stack), &w.holder.person_id, ok()),
        (holder, &w.holder.person_id, ok()),
        (binder, &w.child.person_id, ok()),
        (employer, &w.holder.person_id, ok()),
        (strangers_token, &w.holder.person_id, not_found()),
        (binder, &w.holder.person_id, not_found()),
        (employer, &w.stranger.person_id, not_found()),
        (employer, &w.other_employee_account.person_id, not_found()),
        (mini, &w.holder.person_id, token_required()),
        (pharmacy, &w.holder.person_id, token_required()),
        (hospital, &w.holder.person_id, token_required()),
        (bank, &w.holder.person_id, token_required()),
    ];
    for (caller, person, expected) in &rows {
        let got = get_account(&stack, *caller, person).await;
        assert_eq!(answer(&got), *expected, "GetAccount by person id as {}", caller.name);
        if expected.0 != Code::Ok {
            let got = get_account(&stack, *caller, &missing).await;
            assert_eq!(answer(&got), *expected, "GetAccount of a missing person as {}: the same answer", caller.name);
        }
    }
    // By account id: the same table.
    for (caller, account, expected) in [
        (strangers_token, &w.holder_account.account_id, not_found()),
        (employer, &w.stranger_account.account_id, not_found()),
        (employer, &w.other_employee_account.account_id, not_found()),
        (mini, &w.holder_account.account_id, token_required()),
    ] {
        assert_eq!(answer(&get_account_by_id(&stack, caller, account).await), expected, "by id as {}", caller.name);
        assert_eq!(answer(&get_account_by_id(&stack, caller, &missing).await), expected, "missing, as {}", caller.name);
    }
    // The employer sees its employee's account, but not the balance (contributions only).
    let seen = get_account(&stack, employer, &w.holder.person_id).await.unwrap();
    assert_eq!((seen.account_id.as_str(), seen.balance_cents), (w.holder_account.account_id.as_str(), 0));
    assert_eq!(get_account(&stack, holder, &w.holder.person_id).await.unwrap().balance_cents, 10_000);

    // The ledger: the person, operators, and the employer (its own contributions only); not a
    // binder, not another person, not an unrelated employer.
    let mine = credit(&stack, employer, &w.holder_account.account_id, "ACME-2026-11").await.expect("own employee");
    assert_eq!(mine.balance_after_cents, 0, "an employer is not shown the balance after its credit");
    let ledger_rows: Vec<(As, &str, (Code, String))> = vec![
        (strangers_token, &w.holder_account.account_id, not_found()),
        (binder, &w.child.account_id, not_found()),
        (employer, &w.stranger_account.account_id, not_found()),
        (employer, &w.other_employee_account.account_id, not_found()),
        (mini, &w.holder_account.account_id, token_required()),
        (pharmacy, &w.holder_account.account_id, token_required()),
    ];
    for (caller, account, expected) in &ledger_rows {
        assert_eq!(answer(&entries(&stack, *caller, account).await), *expected, "ledger as {}", caller.name);
        assert_eq!(answer(&entries(&stack, *caller, &missing).await), *expected, "missing ledger as {}", caller.name);
    }
    let full = entries(&stack, holder, &w.holder_account.account_id).await.expect("the holder's ledger");
    assert_eq!(full.len(), 2, "the operators' seed credit and the employer's");
    assert_eq!(full, entries(&stack, ops(&stack), &w.holder_account.account_id).await.unwrap());
    let employers = entries(&stack, employer, &w.holder_account.account_id).await.expect("the employer's view");
    assert_eq!(employers.len(), 1, "only what this employer credited");
    assert_eq!(
        (
            employers[0].kind,
            employers[0].reference.as_str(),
            employers[0].amount_cents,
            employers[0].balance_after_cents
        ),
        (EntryKind::Contribution as i32, "ACME-2026-11", 500, 0)
    );

    // Suspend and resume: operators only; anyone else gets the missing account's answer and
    // nothing changes.
    let mut accounts = stack.accounts(Some(&keys.ops));
    let suspend =
        |account_id: &str| SuspendAccountRequest { account_id: account_id.to_owned(), reason: "theft".into() };
    accounts.suspend_account(suspend(&w.holder_account.account_id)).await.expect("ops suspends");
    accounts
        .resume_account(ResumeAccountRequest { account_id: w.holder_account.account_id.clone() })
        .await
        .expect("ops resumes");
    let error = accounts.suspend_account(suspend(&missing)).await.unwrap_err();
    assert_eq!(answer::<()>(&Err(error)), not_found());
    stack.shutdown().await;
}

#[tokio::test]
async fn an_employer_acts_only_for_its_own_codes_and_employees() {
    let stack = Stack::start().await;
    let w = world(&stack).await;
    let employer = As { name: "employer", key: &stack.keys.employer, token: None };
    let not_found = refused(Code::NotFound, "ACCOUNT_NOT_FOUND");

    // Crediting into a RESIDENT account it does not employ, or another company's employee, or a
    // missing account: the same NOT_FOUND, and nothing credited.
    for account in [&w.stranger_account, &w.other_employee_account] {
        let before = ledger_state(&stack, &account.account_id).await;
        let got = credit(&stack, employer, &account.account_id, "PAYROLL-X").await;
        assert_eq!(answer(&got), not_found);
        assert_eq!(ledger_state(&stack, &account.account_id).await, before, "nothing credited");
    }
    assert_eq!(answer(&credit(&stack, employer, &missing_id(), "PAYROLL-X").await), not_found);
    // Its own employee: credited.
    let before = ledger_state(&stack, &w.holder_account.account_id).await;
    credit(&stack, employer, &w.holder_account.account_id, "PAYROLL-Y").await.expect("own employee");
    assert_eq!(ledger_state(&stack, &w.holder_account.account_id).await, (before.0 + 500, before.1 + 1));

    // Opening an EMPLOYEE account under another company's code, or a RESIDENT account: refused
    // before any person is looked up (a registered and an unknown person get the same answer),
    // and no account opened.
    let accounts_before = stack.count_insurance_rows("accounts").await;
    let registered = SeedPerson::adult();
    stack.register_as_ops(&registered).await;
    let unknown = SeedPerson::adult();
    privacy::sensitive(&unknown.name);
    privacy::sensitive(&unknown.id_number);
    let open = |seed: &SeedPerson, scheme: Scheme, code: &str| OpenAccountRequest {
        person: Some(open_account_request::Person::Identity(PersonIdentity {
            name: seed.name.clone(),
            id_number: seed.id_number.clone(),
        })),
        scheme: scheme as i32,
        region_code: "110105".into(),
        employer_code: code.into(),
    };
    let not_held = refused(Code::PermissionDenied, "EMPLOYER_CODE_NOT_HELD");
    for seed in [&registered, &unknown] {
        for (scheme, code) in [(Scheme::Employee, "OTHER-CO"), (Scheme::Resident, "")] {
            let got = stack.accounts(Some(&stack.keys.employer)).open_account(open(seed, scheme, code)).await;
            assert_eq!(answer(&got), not_held, "{scheme:?} {code}");
        }
    }
    assert_eq!(stack.count_insurance_rows("accounts").await, accounts_before, "no account opened");
    // Under its own code: opened.
    let opened = stack
        .accounts(Some(&stack.keys.employer))
        .open_account(open(&registered, Scheme::Employee, "ACME-01"))
        .await
        .expect("own code")
        .into_inner()
        .account
        .unwrap();
    assert_eq!((opened.employer_code.as_str(), opened.balance_cents), ("ACME-01", 0));

    // A bank names a person by id only with that person's token: none is PERSON_TOKEN_REQUIRED,
    // another's PERSON_TOKEN_INVALID, the same for a registered and a missing id; nothing opened.
    let accounts_before = stack.count_insurance_rows("accounts").await;
    let registered_id = stack.register_as_ops(&SeedPerson::adult()).await;
    let by_id = |person_id: &str| OpenAccountRequest {
        person: Some(open_account_request::Person::PersonId(person_id.to_owned())),
        scheme: Scheme::Resident as i32,
        region_code: "110105".into(),
        employer_code: String::new(),
    };
    let missing = missing_id();
    for person_id in [registered_id.as_str(), missing.as_str()] {
        let got = stack.accounts(Some(&stack.keys.bank)).open_account(by_id(person_id)).await;
        assert_eq!(answer(&got), refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED"));
        let got = stack
            .accounts(Some(&stack.keys.bank))
            .open_account(with_person_token(by_id(person_id), &w.stranger.token))
            .await;
        assert_eq!(answer(&got), refused(Code::PermissionDenied, "PERSON_TOKEN_INVALID"));
    }
    assert_eq!(stack.count_insurance_rows("accounts").await, accounts_before, "no account opened");

    // Cards in a batch naming another company: refused whole, nothing applied for.
    let applications_before = stack.count_insurance_rows("card_applications").await;
    let got = stack
        .cards(Some(&stack.keys.employer))
        .apply_for_cards_batch(ApplyForCardsBatchRequest {
            employer_code: "OTHER-CO".into(),
            persons: vec![CardBatchPerson {
                person: Some(card_batch_person::Person::PersonId(w.other_employee_account.person_id.clone())),
            }],
        })
        .await;
    assert_eq!(answer(&got), not_held);
    assert_eq!(stack.count_insurance_rows("card_applications").await, applications_before);
    stack.shutdown().await;
}

#[tokio::test]
async fn vouchers_codes_and_expenses_answer_the_person_and_their_binders_only() {
    let stack = Stack::start().await;
    let w = world(&stack).await;
    let keys = &stack.keys;
    let holder = As { name: "holder", key: &keys.bank, token: Some(&w.holder.token) };
    let strangers_token = As { name: "another person's token", key: &keys.bank, token: Some(&w.stranger.token) };
    let binder = As { name: "binder", key: &keys.bank, token: Some(&w.binder_token) };
    let mini = As { name: "mini program, no token", key: &keys.mini_program, token: None };
    let missing = missing_id();

    // GetVoucher.
    let get_voucher = |caller: As<'_>, person: &str| {
        let request = caller.request(GetVoucherRequest { person_id: person.to_owned() });
        let mut client = stack.vouchers(Some(caller.key));
        async move { client.get_voucher(request).await }
    };
    let no_voucher = refused(Code::NotFound, "VOUCHER_NOT_FOUND");
    for (caller, person, expected) in [
        (holder, w.holder.person_id.as_str(), ok()),
        (ops(&stack), &w.holder.person_id, ok()),
        (binder, &w.child.person_id, ok()),
        (strangers_token, &w.holder.person_id, no_voucher.clone()),
        (binder, &w.holder.person_id, no_voucher.clone()),
        (mini, &w.holder.person_id, refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED")),
    ] {
        assert_eq!(answer(&get_voucher(caller, person).await), expected, "GetVoucher as {}", caller.name);
        if expected.0 != Code::Ok {
            assert_eq!(answer(&get_voucher(caller, &missing).await), expected, "missing, as {}", caller.name);
        }
    }
    // SuspendVoucher with someone else's token: the missing voucher's answer, still ACTIVE.
    let suspend = |person: &str| {
        strangers_token.request(SuspendVoucherRequest { person_id: person.to_owned(), reason: "lost phone".into() })
    };
    let got = stack.vouchers(Some(&keys.bank)).suspend_voucher(suspend(&w.holder.person_id)).await;
    assert_eq!(answer(&got), no_voucher);
    let got = stack.vouchers(Some(&keys.bank)).suspend_voucher(suspend(&missing)).await;
    assert_eq!(answer(&got), no_voucher);
    let voucher = get_voucher(holder, &w.holder.person_id).await.unwrap().into_inner().voucher.unwrap();
    assert_eq!(voucher.status, VoucherStatus::Active as i32, "nothing suspended");

    // IssueCode and GetAnnualExpenses: the person or an ACTIVE binder (and operators read
    // expenses); another person's token is refused whatever the id.
    let token_invalid = refused(Code::PermissionDenied, "PERSON_TOKEN_INVALID");
    let issue = |caller: As<'_>, person: &str| {
        let request = caller.request(IssueCodeRequest { holder_person_id: person.to_owned(), include_png: false });
        let mut client = stack.codes(Some(caller.key));
        async move { client.issue_code(request).await }
    };
    for (caller, person, expected) in [
        (holder, w.holder.person_id.as_str(), ok()),
        (binder, &w.child.person_id, ok()),
        (strangers_token, &w.holder.person_id, token_invalid.clone()),
        (strangers_token, &missing, token_invalid.clone()),
        (binder, &w.holder.person_id, token_invalid.clone()),
        (mini, &w.holder.person_id, refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED")),
    ] {
        let got = issue(caller, person).await;
        if let Ok(response) = &got {
            privacy::sensitive_token(&response.get_ref().code);
        }
        assert_eq!(answer(&got), expected, "IssueCode as {}", caller.name);
    }
    let year = stack.clock_today().year();
    let expenses = |caller: As<'_>, person: &str| {
        let request = caller.request(GetAnnualExpensesRequest { person_id: person.to_owned(), year });
        let mut client = stack.settlements(Some(caller.key));
        async move { client.get_annual_expenses(request).await }
    };
    for (caller, person, expected) in [
        (holder, w.holder.person_id.as_str(), ok()),
        (binder, &w.child.person_id, ok()),
        (ops(&stack), &w.holder.person_id, ok()),
        (strangers_token, &w.holder.person_id, token_invalid.clone()),
        (strangers_token, &missing, token_invalid.clone()),
        (mini, &w.holder.person_id, refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED")),
    ] {
        assert_eq!(answer(&expenses(caller, person).await), expected, "GetAnnualExpenses as {}", caller.name);
    }
    stack.shutdown().await;
}

fn settle_request(visit_id: &str) -> SettleRequest {
    SettleRequest {
        visit_id: visit_id.to_owned(),
        total_cents: 1_000,
        category: Category::Pharmacy as i32,
        pay_from: PayFrom::HolderAccount as i32,
        items_summary: "1 item".into(),
        binder_person_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn only_the_counter_of_a_visit_settles_it_and_only_for_a_bounded_time() {
    let stack = Stack::start().await;
    let (_, account) = stack.insured_holder(Scheme::Resident, 10_000).await;
    let visit = stack.open_visit(&account, &stack.keys.pharmacy).await;
    let not_found = refused(Code::NotFound, "VISIT_NOT_FOUND");

    // Another counter (no visit of this person) learns nothing: the missing visit's answer,
    // and nothing settled or debited.
    let settlements_before = stack.count_insurance_rows("settlements").await;
    for visit_id in [visit.clone(), missing_id()] {
        let got = stack.settlements(Some(&stack.keys.hospital)).settle(settle_request(&visit_id)).await;
        assert_eq!(answer(&got), not_found, "a hospital settling a pharmacy's visit");
    }
    assert_eq!(stack.count_insurance_rows("settlements").await, settlements_before);
    assert_eq!(ledger_state(&stack, &account.account_id).await.0, 10_000, "nothing debited");
    // Its own counter settles; the visit's facts are all it gets: not the account itself.
    stack.settlements(Some(&stack.keys.pharmacy)).settle(settle_request(&visit)).await.expect("own visit");
    let read = get_account(&stack, As { name: "pharmacy", key: &stack.keys.pharmacy, token: None }, &account.person_id);
    assert_eq!(answer(&read.await), refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED"));

    // A visit older than the counter's window is no longer the counter's.
    let late = stack.open_visit(&account, &stack.keys.pharmacy).await;
    stack.clock.advance(chrono::Duration::days(31));
    let got = stack.settlements(Some(&stack.keys.pharmacy)).settle(settle_request(&late)).await;
    assert_eq!(answer(&got), not_found);
    stack.shutdown().await;
}

#[tokio::test]
async fn the_access_history_shows_each_partner_and_method_that_touched_the_person() {
    let stack = Stack::start().await;
    let (holder, account) = stack.insured_holder(Scheme::Employee, 10_000).await;
    let (stranger, _) = stack.insured_holder(Scheme::Resident, 0).await;
    let audit = stack.audit_replica("insurance-svc");
    let person = uuid::Uuid::parse_str(&holder.person_id).unwrap();
    let before = audit.history(person, None, 1000).await.unwrap().len();

    // The bank reads the account with the person's token; a pharmacy verifies the person's code
    // and settles; the employer credits a contribution; another person's token is refused.
    let bank = As { name: "bank", key: &stack.keys.bank, token: Some(&holder.token) };
    get_account(&stack, bank, &holder.person_id).await.expect("read with the person's token");
    let code = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(with_person_token(
            IssueCodeRequest { holder_person_id: holder.person_id.clone(), include_png: false },
            &holder.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .code;
    privacy::sensitive_token(&code);
    let visit =
        stack.codes(Some(&stack.keys.pharmacy)).verify_code(VerifyCodeRequest { code }).await.unwrap().into_inner();
    stack.settlements(Some(&stack.keys.pharmacy)).settle(settle_request(&visit.visit_id)).await.expect("settle");
    let employer = As { name: "employer", key: &stack.keys.employer, token: None };
    credit(&stack, employer, &account.account_id, "PAYROLL-H").await.expect("credit");
    let refused_read = get_account(
        &stack,
        As { name: "another person's token", key: &stack.keys.bank, token: Some(&stranger.token) },
        &holder.person_id,
    )
    .await;
    assert_eq!(answer(&refused_read), refused(Code::NotFound, "ACCOUNT_NOT_FOUND"));

    let history = audit.history(person, None, 1000).await.unwrap();
    let mut recorded: Vec<(String, String, String)> = history[..history.len() - before]
        .iter()
        .map(|entry| (entry.partner_id.clone(), entry.method.clone(), entry.outcome.clone()))
        .collect();
    recorded.reverse();
    let row = |partner: &str, method: &str, outcome: &str| {
        (partner.to_owned(), format!("/medins.insurance.v1.{method}"), outcome.to_owned())
    };
    assert_eq!(
        recorded,
        vec![
            row("bank", "AccountService/GetAccount", "OK"),
            row("bank", "CodeService/IssueCode", "OK"),
            row("pharmacy", "CodeService/VerifyCode", "OK"),
            row("pharmacy", "SettlementService/Settle", "OK"),
            row("employer", "AccountService/CreditContribution", "OK"),
            row("bank", "AccountService/GetAccount", "NOT_FOUND"),
        ],
        "each call, in order, under the partner that made it"
    );
    // A call about a missing person records nothing.
    let rows = stack.count_insurance_rows("audit_log").await;
    get_account(&stack, ops(&stack), &missing_id()).await.unwrap_err();
    assert_eq!(stack.count_insurance_rows("audit_log").await, rows);
    stack.shutdown().await;
}

#[tokio::test]
async fn hostile_bytes_are_refused_on_their_field_before_anything_is_read_or_recorded() {
    let stack = Stack::start().await;
    let (holder, account) = stack.insured_holder(Scheme::Employee, 1_000).await;
    let audit_rows = stack.count_insurance_rows("audit_log").await;
    let ops = ops(&stack);
    let bank = As { name: "bank", key: &stack.keys.bank, token: Some(&holder.token) };
    let invalid = |got: (Code, String)| assert_eq!(got.0, Code::InvalidArgument, "{got:?}");

    invalid(answer(&get_account(&stack, ops, "../../etc/passwd").await));
    invalid(answer(&get_account_by_id(&stack, ops, &"9".repeat(4096)).await));
    invalid(answer(&stack.accounts(Some(ops.key)).get_account(GetAccountRequest { key: None }).await));
    invalid(answer(&entries(&stack, bank, "' OR 1=1 --").await));
    let forged_page = stack
        .accounts(Some(bank.key))
        .list_account_entries(bank.request(ListAccountEntriesRequest {
            account_id: account.account_id.clone(),
            page_size: 10,
            page_token: "\u{0}\u{202e}not-a-cursor".into(),
        }))
        .await;
    invalid(answer(&forged_page));
    let employer = As { name: "employer", key: &stack.keys.employer, token: None };
    invalid(answer(&credit(&stack, employer, &account.account_id, "bad reference with spaces").await));
    let opened = stack
        .accounts(Some(&stack.keys.employer))
        .open_account(OpenAccountRequest {
            person: Some(open_account_request::Person::PersonId(holder.person_id.clone())),
            scheme: Scheme::Employee as i32,
            region_code: "110105".into(),
            employer_code: "ACME 01; DROP TABLE accounts".into(),
        })
        .await;
    invalid(answer(&opened));
    let code =
        stack.codes(Some(&stack.keys.pharmacy)).verify_code(VerifyCodeRequest { code: "M".repeat(10_000) }).await;
    assert_eq!(answer(&code), refused(Code::InvalidArgument, "CODE_INVALID"));
    let issue = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(bank.request(IssueCodeRequest { holder_person_id: "\u{0}".into(), include_png: true }))
        .await;
    invalid(answer(&issue));
    let expenses = stack
        .settlements(Some(&stack.keys.ops))
        .get_annual_expenses(GetAnnualExpensesRequest { person_id: holder.person_id.clone(), year: 99_999 })
        .await;
    invalid(answer(&expenses));
    let settle = stack.settlements(Some(&stack.keys.pharmacy)).settle(settle_request("not-a-visit")).await;
    invalid(answer(&settle));

    assert_eq!(stack.count_insurance_rows("audit_log").await, audit_rows, "nothing about anyone was recorded");
    assert_eq!(ledger_state(&stack, &account.account_id).await.0, 1_000, "nothing credited");
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_credits_from_an_employer_land_once_in_its_employee_and_never_elsewhere() {
    let stack = Stack::start().await;
    let (_, own) = stack.insured_holder(Scheme::Employee, 0).await;
    let (_, resident) = stack.insured_holder(Scheme::Resident, 0).await;
    let client = stack.accounts(Some(&stack.keys.employer));
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let mut client = client.clone();
            let account_id = if i % 2 == 0 { own.account_id.clone() } else { resident.account_id.clone() };
            tokio::spawn(async move {
                let request =
                    CreditContributionRequest { account_id, amount_cents: 700, reference: "PAYROLL-C".into() };
                client.credit_contribution(request).await.map(|r| r.into_inner())
            })
        })
        .collect();
    let (mut credited, mut refused_calls) = (std::collections::HashSet::new(), 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(response) => {
                credited.insert(response.entry.unwrap().entry_id);
            }
            Err(status) => {
                assert_eq!((status.code(), reason(&status).as_str()), (Code::NotFound, "ACCOUNT_NOT_FOUND"));
                refused_calls += 1;
            }
        }
    }
    assert_eq!((credited.len(), refused_calls), (1, 16), "one entry for every own call, every other call refused");
    assert_eq!(ledger_state(&stack, &own.account_id).await, (700, 1));
    assert_eq!(ledger_state(&stack, &resident.account_id).await, (0, 0), "nothing reached the stranger's account");
    stack.shutdown().await;
}
