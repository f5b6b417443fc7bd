//! The social security card at the counter (issue 17 item 5): the PIN chosen at the bank with
//! the financial function, changed by the holder, reset by the bank; a hospital or pharmacy
//! opening a visit with the card and its PIN (the first use activating the medical function),
//! settled like a code's; wrong PINs answered as an unknown card is, five of them locking the
//! card (also when sent at once); strangers and other partner kinds refused; every attempt in
//! the holder's access history.

use std::time::Duration;

use chrono::NaiveDate;
use diesel::prelude::*;
use insurance_svc::store::schema::{card_pins, visits};
use medins_common::{audit::AuditEntry, db::DbError};
use medins_proto::insurance::v1::{
    ActivateCardRequest, ApplyForCardRequest, Card, CardActivationChannel, CardChannel, CardFunctionStatus,
    CardLossKind, Category, ChangeCardPinRequest, GetCardRequest, OpenVisitWithCardRequest, OpenVisitWithCardResponse,
    PayFrom, PersonIdentity, Relationship, ReportCardLossRequest, ResetCardPinRequest, SettleRequest, get_card_request,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{
    family_aid::bind_adult,
    support::{SeedPerson, Stack, family::Member, privacy, reason, vouchers::FrontDoorPerson, with_person_token},
};

/// The PIN the holders of these tests choose at the bank.
const PIN: &str = "305917";
/// A PIN that is not theirs.
const WRONG: &str = "305918";

fn identity(seed: &SeedPerson) -> PersonIdentity {
    PersonIdentity { name: seed.name.clone(), id_number: seed.id_number.clone() }
}

fn answer<T>(result: &Result<T, Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), reason(status)),
    }
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, expected: &str) -> Status {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), reason(&status).as_str()), (code, expected), "{}", status.message());
    status
}

/// A Luhn-valid card number of the issuer that was (almost surely) never issued.
fn unissued_number(serial: u32) -> String {
    use insurance_svc::domain::card::{ISSUER_PREFIX, luhn_check_digit};
    let payload = format!("{ISSUER_PREFIX}{:09}", 800_000_000 + serial);
    format!("{payload}{}", luhn_check_digit(&payload))
}

/// A person from the mini program's front door (with its token), insured, with a card issued
/// on the spot by operators (DELIVERED, both functions INACTIVE, no PIN).
async fn holder_with_card(stack: &Stack) -> (FrontDoorPerson, Card) {
    holder_with_card_and_account(stack).await.0
}

/// [`holder_with_card`], with the holder's account id.
async fn holder_with_card_and_account(stack: &Stack) -> ((FrontDoorPerson, Card), String) {
    let person = stack.front_door_person(&stack.keys.mini_program).await;
    let account = stack.open_account_for(&person.person_id).await;
    let card = stack.card_issued_on_the_spot(&person.person_id).await;
    for pin in [PIN, WRONG] {
        privacy::sensitive_token(pin);
    }
    ((person, card), account.account_id)
}

async fn activate_at_bank(stack: &Stack, number: &str, holder: &SeedPerson, pin: &str) -> Result<Card, Status> {
    stack
        .cards(Some(&stack.keys.bank))
        .activate_card(ActivateCardRequest {
            card_number: number.to_owned(),
            channel: CardActivationChannel::Bank as i32,
            holder: Some(identity(holder)),
            pin: pin.to_owned(),
        })
        .await
        .map(|r| r.into_inner().card.unwrap())
}

/// A holder whose card's financial function the bank activated with [`PIN`].
async fn holder_with_pin(stack: &Stack) -> (FrontDoorPerson, Card) {
    let (person, card) = holder_with_card(stack).await;
    let card = activate_at_bank(stack, &card.card_number, &person.seed, PIN).await.expect("the bank sets the PIN");
    (person, card)
}

async fn open_with_card(
    stack: &Stack,
    key: &str,
    number: &str,
    pin: &str,
) -> Result<OpenVisitWithCardResponse, Status> {
    stack
        .codes(Some(key))
        .open_visit_with_card(OpenVisitWithCardRequest { card_number: number.to_owned(), pin: pin.to_owned() })
        .await
        .map(|r| r.into_inner())
}

async fn card_by_ops(stack: &Stack, number: &str) -> Card {
    stack
        .cards(Some(&stack.keys.ops))
        .get_card(GetCardRequest { key: Some(get_card_request::Key::CardNumber(number.to_owned())) })
        .await
        .expect("operators read any card")
        .into_inner()
        .card
        .unwrap()
}

/// The stored PIN row of a card: its hash and wrong tries in a row.
async fn stored_pin(stack: &Stack, number: &str) -> Option<(String, i32)> {
    let number = number.to_owned();
    stack
        .insurance_db
        .run(move |conn| {
            card_pins::table
                .find(&number)
                .select((card_pins::pin_hash, card_pins::failures))
                .first(conn)
                .optional()
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

/// The access history insurance-svc recorded for `person` for `method`, once `count` entries
/// of that method are there: (partner, outcome), sorted.
async fn history_of(stack: &Stack, person: &str, method: &str, count: usize) -> Vec<(String, String)> {
    let store = stack.audit_replica("insurance-svc");
    let person = Uuid::parse_str(person).unwrap();
    let pick = |entries: Vec<AuditEntry>| -> Vec<(String, String)> {
        let mut picked: Vec<_> =
            entries.into_iter().filter(|e| e.method == method).map(|e| (e.partner_id, e.outcome)).collect();
        picked.sort();
        picked
    };
    for _ in 0..200 {
        let entries = pick(store.history(person, None, 500).await.expect("read the history"));
        if entries.len() >= count {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pick(store.history(person, None, 500).await.expect("read the history"))
}

const OPEN_WITH_CARD: &str = "/medins.insurance.v1.CodeService/OpenVisitWithCard";

#[tokio::test]
async fn the_bank_sets_the_pin_with_the_financial_function_and_refuses_weak_ones() {
    let stack = Stack::start().await;
    let (person, card) = holder_with_card(&stack).await;
    let number = card.card_number.clone();

    // No PIN, a malformed one and trivially guessed ones: refused before anything changes.
    let missing = assert_refused(
        activate_at_bank(&stack, &number, &person.seed, "").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(missing.get_details_bad_request().unwrap().field_violations[0].field, "pin");
    assert_refused(
        activate_at_bank(&stack, &number, &person.seed, "30591a").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    for (weak, check) in [("888888", "same_digits"), ("123456", "ascending"), ("987654", "descending")] {
        let status = assert_refused(
            activate_at_bank(&stack, &number, &person.seed, weak).await,
            Code::InvalidArgument,
            "CARD_PIN_TOO_WEAK",
        );
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.metadata.get("pin_check").map(String::as_str), Some(check));
    }
    // Only the bank sets a PIN.
    let at_hospital = stack
        .cards(Some(&stack.keys.hospital))
        .activate_card(ActivateCardRequest {
            card_number: number.clone(),
            channel: CardActivationChannel::Hospital as i32,
            holder: Some(identity(&person.seed)),
            pin: PIN.into(),
        })
        .await;
    assert_refused(at_hospital, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(stored_pin(&stack, &number).await.is_none(), "no PIN yet");

    // The bank activates the financial function only; the medical one waits for its first use.
    let banked = activate_at_bank(&stack, &number, &person.seed, PIN).await.expect("the bank activates");
    assert_eq!(
        (banked.financial_status, banked.medical_status),
        (CardFunctionStatus::Active as i32, CardFunctionStatus::Inactive as i32)
    );
    assert_eq!((banked.person_id.as_str(), banked.application_id.as_str()), ("", ""), "the counter's view");
    // Stored as a salted, peppered Argon2id hash, never the PIN.
    let (hash, failures) = stored_pin(&stack, &number).await.expect("a PIN row");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1,keyid="), "keyed with the pepper: {hash}");
    assert!(!hash.contains(PIN));
    assert_eq!(failures, 0);
    // Once: a second bank activation does not overwrite the PIN.
    let again = assert_refused(
        activate_at_bank(&stack, &number, &person.seed, "246810").await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
    );
    let info = again.get_details_error_info().unwrap();
    assert_eq!(info.metadata.get("status").map(String::as_str), Some("FINANCIAL_ACTIVE"));
    assert_eq!(stored_pin(&stack, &number).await.unwrap().0, hash);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_card_visit_opens_with_the_right_pin_only_activates_the_medical_function_and_settles() {
    let stack = Stack::start().await;
    let (person, card) = holder_with_pin(&stack).await;
    let number = card.card_number.clone();

    // A wrong PIN and an unknown card get the same answer, word for word.
    let wrong = assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &number, WRONG).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    let unknown = assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &unissued_number(1), WRONG).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 1, "the wrong PIN used one try");
    assert_eq!(card_by_ops(&stack, &number).await.medical_status, CardFunctionStatus::Inactive as i32);

    // The right PIN opens a visit; this first use at a hospital activates the medical function.
    let opened = open_with_card(&stack, &stack.keys.hospital, &number, PIN).await.expect("the right PIN");
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 0, "a right PIN resets the count");
    let holder = opened.holder.clone().unwrap();
    assert_eq!(holder.person_id, "", "no person id to the counter");
    assert!(!holder.masked_name.is_empty() && holder.masked_name.contains('*'));
    assert!(!holder.masked_name.contains(&person.seed.name));
    assert_eq!(holder.insured_region_code.len(), 6);
    let used = opened.card.clone().unwrap();
    assert_eq!((used.person_id.as_str(), used.application_id.as_str()), ("", ""));
    assert_eq!(used.medical_status, CardFunctionStatus::Active as i32);
    let first_use = used.medical_activated_at;
    assert!(first_use.is_some());
    // The visit row names the card and no voucher or code.
    let visit_id = opened.visit_id.clone();
    let row: (Option<String>, Option<String>, Option<String>, String) = stack
        .insurance_db
        .run(move |conn| {
            visits::table
                .find(&visit_id)
                .select((visits::card_number, visits::voucher_id, visits::code_key_id, visits::person_id))
                .first(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(row, (Some(number.clone()), None, None, person.person_id.clone()));

    // A later use at a pharmacy opens another visit and changes nothing on the card.
    let later = open_with_card(&stack, &stack.keys.pharmacy, &number, PIN).await.expect("a later use");
    assert_ne!(later.visit_id, opened.visit_id);
    assert_eq!(later.card.unwrap().medical_activated_at, first_use);

    // The visit settles with Settle, unchanged, by the counter that opened it only.
    let settle = |visit_id: &str| SettleRequest {
        visit_id: visit_id.to_owned(),
        total_cents: 12_345,
        category: Category::Outpatient as i32,
        pay_from: PayFrom::Self_ as i32,
        items_summary: "挂号费 x1".into(),
        ..Default::default()
    };
    let refused = stack.settlements(Some(&stack.keys.pharmacy)).settle(settle(&opened.visit_id)).await;
    assert_eq!(answer(&refused), (Code::NotFound, "VISIT_NOT_FOUND".to_owned()));
    let settled = stack
        .settlements(Some(&stack.keys.hospital))
        .settle(settle(&opened.visit_id))
        .await
        .expect("the card visit settles")
        .into_inner()
        .settlement
        .unwrap();
    assert_eq!(settled.visit_id, opened.visit_id);
    assert_eq!(settled.person_id, "", "the counter settles the visit, not a person id");
    assert_eq!(settled.total_cents, 12_345);
    assert_eq!(settled.fund_cents + settled.account_cents + settled.self_cents, 12_345);

    // Every attempt on the card is in the holder's access history, refused or not; the unknown
    // card named nobody.
    let entries = history_of(&stack, &person.person_id, OPEN_WITH_CARD, 3).await;
    assert_eq!(
        entries,
        [
            ("hospital".to_owned(), "OK".to_owned()),
            ("hospital".to_owned(), "PERMISSION_DENIED".to_owned()),
            ("pharmacy".to_owned(), "OK".to_owned()),
        ]
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn five_wrong_pins_lock_the_card_until_the_bank_resets_it() {
    let stack = Stack::start().await;
    let (person, card) = holder_with_pin(&stack).await;
    let number = card.card_number.clone();

    // A right PIN resets the count: four wrong, one right, four wrong again is not locked.
    for _ in 0..4 {
        assert_refused(
            open_with_card(&stack, &stack.keys.hospital, &number, WRONG).await,
            Code::PermissionDenied,
            "CARD_PIN_INCORRECT",
        );
    }
    open_with_card(&stack, &stack.keys.hospital, &number, PIN).await.expect("the fifth try is right");
    for _ in 0..4 {
        assert_refused(
            open_with_card(&stack, &stack.keys.pharmacy, &number, WRONG).await,
            Code::PermissionDenied,
            "CARD_PIN_INCORRECT",
        );
    }
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 4);
    // The fifth wrong PIN in a row is answered as any wrong PIN, and locks.
    assert_refused(
        open_with_card(&stack, &stack.keys.pharmacy, &number, WRONG).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 5);
    // Locked: even the right PIN is refused, at any counter, and so is a change by the holder.
    for key in [&stack.keys.pharmacy, &stack.keys.hospital] {
        assert_refused(open_with_card(&stack, key, &number, PIN).await, Code::FailedPrecondition, "CARD_PIN_LOCKED");
    }
    let change = |old: &str, new: &str| {
        with_person_token(
            ChangeCardPinRequest {
                card_number: number.clone(),
                old_pin: old.into(),
                new_pin: new.into(),
                holder: None,
            },
            &person.token,
        )
    };
    let mut app = stack.cards(Some(&stack.keys.mini_program));
    assert_refused(app.change_card_pin(change(PIN, "246810")).await, Code::FailedPrecondition, "CARD_PIN_LOCKED");
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 5, "a locked PIN takes no more tries");

    // The bank resets it with the holder present, which unlocks; the old PIN no longer works.
    let reset = |holder: Option<&SeedPerson>, new: &str| ResetCardPinRequest {
        card_number: number.clone(),
        new_pin: new.into(),
        holder: holder.map(identity),
    };
    let stranger = SeedPerson::adult();
    assert_refused(
        stack.cards(Some(&stack.keys.bank)).reset_card_pin(reset(Some(&stranger), "246810")).await,
        Code::NotFound,
        "CARD_NOT_FOUND",
    );
    assert_refused(
        stack.cards(Some(&stack.keys.bank)).reset_card_pin(reset(None, "246810")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_refused(
        stack.cards(Some(&stack.keys.bank)).reset_card_pin(reset(Some(&person.seed), "000000")).await,
        Code::InvalidArgument,
        "CARD_PIN_TOO_WEAK",
    );
    privacy::sensitive_token("246810");
    let after = stack
        .cards(Some(&stack.keys.bank))
        .reset_card_pin(reset(Some(&person.seed), "246810"))
        .await
        .expect("the bank resets the PIN")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(after.person_id, "", "the bank's counter view");
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 0, "unlocked");
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &number, PIN).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    open_with_card(&stack, &stack.keys.hospital, &number, "246810").await.expect("the new PIN");
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_wrong_pins_never_verify_more_than_five() {
    let stack = Stack::start().await;
    let (_, card) = holder_with_pin(&stack).await;
    let number = card.card_number.clone();
    let attempts = futures::future::join_all((0..12).map(|i| {
        let number = number.clone();
        let stack = &stack;
        let key = if i % 2 == 0 { stack.keys.hospital.clone() } else { stack.keys.pharmacy.clone() };
        async move { open_with_card(stack, &key, &number, WRONG).await }
    }))
    .await;
    let answers: Vec<_> = attempts.iter().map(answer).collect();
    let wrong = answers.iter().filter(|a| a.1 == "CARD_PIN_INCORRECT").count();
    let locked = answers.iter().filter(|a| a.1 == "CARD_PIN_LOCKED").count();
    assert_eq!((wrong, locked), (5, 7), "{answers:?}");
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 5);
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &number, PIN).await,
        Code::FailedPrecondition,
        "CARD_PIN_LOCKED",
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn the_holder_changes_the_pin_with_their_token_or_at_the_bank() {
    let stack = Stack::start().await;
    let (person, card) = holder_with_pin(&stack).await;
    let number = card.card_number.clone();
    let request = |old: &str, new: &str, holder: Option<&SeedPerson>| ChangeCardPinRequest {
        card_number: number.clone(),
        old_pin: old.into(),
        new_pin: new.into(),
        holder: holder.map(identity),
    };
    for pin in ["135790", "864202"] {
        privacy::sensitive_token(pin);
    }
    let mut app = stack.cards(Some(&stack.keys.mini_program));
    // Without a token an app stands for nobody; another person's token finds no card.
    assert_refused(
        app.change_card_pin(request(PIN, "135790", None)).await,
        Code::Unauthenticated,
        "PERSON_TOKEN_REQUIRED",
    );
    let other = stack.front_door_person(&stack.keys.mini_program).await;
    assert_refused(
        app.change_card_pin(with_person_token(request(PIN, "135790", None), &other.token)).await,
        Code::NotFound,
        "CARD_NOT_FOUND",
    );
    // A weak new PIN is refused before any lookup; a wrong old PIN uses one of the five tries.
    assert_refused(
        app.change_card_pin(with_person_token(request(PIN, "111111", None), &person.token)).await,
        Code::InvalidArgument,
        "CARD_PIN_TOO_WEAK",
    );
    assert_refused(
        app.change_card_pin(with_person_token(request(WRONG, "135790", None), &person.token)).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 1);
    let changed = app
        .change_card_pin(with_person_token(request(PIN, "135790", None), &person.token))
        .await
        .expect("the holder's own token")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(changed.person_id, person.person_id, "the holder's app sees the card in full");
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 0);
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &number, PIN).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    open_with_card(&stack, &stack.keys.hospital, &number, "135790").await.expect("the changed PIN");

    // The holder present counts at a bank only: an app typing a name and ID number does not
    // stand for the holder (refused before any lookup), and hospitals hold no `card.pin`.
    assert_refused(
        app.change_card_pin(request("135790", "864202", Some(&person.seed))).await,
        Code::PermissionDenied,
        "PARTNER_KIND_NOT_ALLOWED",
    );
    assert_refused(
        stack.cards(Some(&stack.keys.hospital)).change_card_pin(request("135790", "864202", Some(&person.seed))).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED_SCOPE",
    );
    let stranger = SeedPerson::adult();
    assert_refused(
        stack.cards(Some(&stack.keys.bank)).change_card_pin(request("135790", "864202", Some(&stranger))).await,
        Code::NotFound,
        "CARD_NOT_FOUND",
    );
    let at_bank = stack
        .cards(Some(&stack.keys.bank))
        .change_card_pin(request("135790", "864202", Some(&person.seed)))
        .await
        .expect("the holder at the bank")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(at_bank.person_id, "", "the bank's counter view");
    open_with_card(&stack, &stack.keys.pharmacy, &number, "864202").await.expect("the PIN changed at the bank");
    // Operators do not know PINs; they reset them, for anyone, without the holder.
    stack
        .cards(Some(&stack.keys.ops))
        .reset_card_pin(ResetCardPinRequest { card_number: number.clone(), new_pin: PIN.into(), holder: None })
        .await
        .expect("operators reset");
    open_with_card(&stack, &stack.keys.pharmacy, &number, PIN).await.expect("the reset PIN");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_guardian_changes_a_minors_pin_and_other_binders_and_strangers_find_no_card() {
    let stack = Stack::start().await;
    // A child of ten, bound ACTIVE by a parent (the household register confirms it), with a
    // card applied for by that guardian and issued on the spot, its PIN set at the bank.
    let guardian = stack.binder(0).await;
    let child = stack.insured_member(NaiveDate::from_ymd_opt(2016, 3, 9).unwrap()).await;
    let documents = stack.binding_documents(&guardian, &child, Relationship::Child).await;
    stack.confirm_household(&guardian, &child, Relationship::Child);
    stack.add_member(&guardian, &child, Relationship::Child, &documents).await.expect("bind the child");
    let card = stack
        .cards(Some(&stack.keys.ops))
        .apply_for_card(ApplyForCardRequest {
            person_id: child.person_id.clone(),
            channel: CardChannel::ServiceCenter as i32,
            guardian_person_id: guardian.person_id.clone(),
            ..Default::default()
        })
        .await
        .expect("the child's card, issued on the spot")
        .into_inner()
        .card
        .unwrap();
    privacy::sensitive(&card.card_number);
    let number = card.card_number.clone();
    activate_at_bank(&stack, &number, &child.seed, PIN).await.expect("the bank sets the child's PIN");
    for pin in ["135790", "864202"] {
        privacy::sensitive_token(pin);
    }
    let request = |number: &str, new: &str| ChangeCardPinRequest {
        card_number: number.to_owned(),
        old_pin: PIN.into(),
        new_pin: new.into(),
        holder: None,
    };
    // The binders' tokens were issued to the bank (their front door); the stranger's to the mini
    // program.
    let mut bank = stack.cards(Some(&stack.keys.bank));
    let mut app = stack.cards(Some(&stack.keys.mini_program));

    // Someone with no binding of the child, and an ACTIVE binder who is no guardian (a spouse
    // of an adult card holder, at that holder's card): the answer a card that does not exist gets.
    let stranger = stack.front_door_person(&stack.keys.mini_program).await;
    let ((holder, adult_card), account_id) = holder_with_card_and_account(&stack).await;
    activate_at_bank(&stack, &adult_card.card_number, &holder.seed, PIN).await.expect("the adult's PIN");
    let spouse = stack.binder(0).await;
    let adult =
        Member { person_id: holder.person_id.clone(), account_id: account_id.clone(), seed: holder.seed.clone() };
    bind_adult(&stack, &spouse, &adult, Relationship::Spouse).await;
    let missing =
        bank.change_card_pin(with_person_token(request(&unissued_number(7), "135790"), &guardian.token)).await;
    let missing = assert_refused(missing, Code::NotFound, "CARD_NOT_FOUND");
    for refused in [
        app.change_card_pin(with_person_token(request(&number, "135790"), &stranger.token)).await,
        bank.change_card_pin(with_person_token(request(&adult_card.card_number, "135790"), &spouse.token)).await,
    ] {
        let refused = assert_refused(refused, Code::NotFound, "CARD_NOT_FOUND");
        assert_eq!(refused.message(), missing.message(), "the same answer as for no card");
    }
    assert_eq!(stored_pin(&stack, &adult_card.card_number).await.unwrap().1, 0, "no try taken");
    assert_eq!(stored_pin(&stack, &number).await.unwrap().1, 0, "no try taken");

    // The guardian, with the guardian's own token: the same checks of the new PIN (a weak one,
    // one made from the child's birth date 2016-03-09), then the change.
    assert_refused(
        bank.change_card_pin(with_person_token(request(&number, "111111"), &guardian.token)).await,
        Code::InvalidArgument,
        "CARD_PIN_TOO_WEAK",
    );
    let birthday = bank.change_card_pin(with_person_token(request(&number, "160309"), &guardian.token)).await;
    let birthday = assert_refused(birthday, Code::InvalidArgument, "CARD_PIN_TOO_WEAK");
    assert_eq!(pin_check(&birthday), "birth_date");
    let changed = bank
        .change_card_pin(with_person_token(request(&number, "135790"), &guardian.token))
        .await
        .expect("the guardian changes the child's PIN")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(changed.person_id, child.person_id, "the guardian sees the child's card in full");
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &number, PIN).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    open_with_card(&stack, &stack.keys.hospital, &number, "135790").await.expect("the PIN the guardian chose");
    stack.shutdown().await;
}

#[tokio::test]
async fn strangers_other_kinds_and_unusable_cards_open_no_visit() {
    let stack = Stack::start().await;
    let (person, card) = holder_with_pin(&stack).await;
    let number = card.card_number.clone();

    // Only hospitals and pharmacies open visits (the scope `code.verify` is theirs alone).
    for key in [&stack.keys.bank, &stack.keys.mini_program, &stack.keys.ops, &stack.keys.employer] {
        let refused = open_with_card(&stack, key, &number, PIN).await;
        assert_eq!(answer(&refused).0, Code::PermissionDenied, "{refused:?}");
    }
    // Hostile bytes: refused before any lookup.
    let (payload, check) = number.split_at(number.len() - 1);
    let mistyped = format!("{payload}{}", (check.parse::<u32>().unwrap() + 1) % 10);
    for (bad_number, pin) in
        [(mistyped.as_str(), PIN), ("not a card", PIN), (number.as_str(), "12345"), (number.as_str(), "12345６")]
    {
        assert_refused(
            open_with_card(&stack, &stack.keys.hospital, bad_number, pin).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
    // A card without a PIN is answered as an unknown card (and its medical function stays off).
    let (_, no_pin) = holder_with_card(&stack).await;
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &no_pin.card_number, PIN).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    assert_eq!(card_by_ops(&stack, &no_pin.card_number).await.medical_status, CardFunctionStatus::Inactive as i32);

    // The right PIN on a frozen card: the card's state is told, nothing opens.
    stack
        .cards(Some(&stack.keys.mini_program))
        .report_card_loss(with_person_token(
            ReportCardLossRequest { card_number: number.clone(), kind: CardLossKind::Temporary as i32 },
            &person.token,
        ))
        .await
        .expect("frozen by the holder");
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &number, PIN).await,
        Code::FailedPrecondition,
        "CARD_STATE_CONFLICT",
    );
    assert_eq!(card_by_ops(&stack, &number).await.medical_status, CardFunctionStatus::Frozen as i32);

    // An uninsured holder: NOT_INSURED, as for a code.
    let ((other, other_card), account_id) = holder_with_card_and_account(&stack).await;
    activate_at_bank(&stack, &other_card.card_number, &other.seed, PIN).await.expect("the bank sets the PIN");
    stack.force_account_status(&account_id, "SUSPENDED").await;
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &other_card.card_number, PIN).await,
        Code::FailedPrecondition,
        "NOT_INSURED",
    );
    stack.shutdown().await;
}

/// The pin check of a CARD_PIN_TOO_WEAK refusal.
fn pin_check(status: &Status) -> String {
    let info = status.get_details_error_info().expect("error info");
    info.metadata.get("pin_check").cloned().unwrap_or_default()
}

#[tokio::test]
async fn pins_made_from_the_holders_birth_date_or_id_number_are_refused_wherever_a_pin_is_chosen() {
    let stack = Stack::start().await;
    let (person, card) = holder_with_card(&stack).await;
    let number = card.card_number.clone();
    let id = person.seed.id_number.clone();
    let (yy, mm, dd) = (&id[8..10], &id[10..12], &id[12..14]);
    let birth_forms = [format!("{yy}{mm}{dd}"), format!("{mm}{dd}{yy}"), format!("{dd}{mm}{yy}")];
    // The last six characters; a final X is no PIN, so the check digit is then replaced by a
    // test of the other five with the birth date (that case is the unit test's).
    let id_end = id[12..].to_owned();
    for pin in birth_forms.iter().chain([&id_end]) {
        privacy::sensitive_token(pin);
    }
    let id_end_is_a_pin = id_end.bytes().all(|b| b.is_ascii_digit());

    // At the bank, with the holder's ID card: each refused, nothing set, the function still off.
    let mut weak: Vec<(String, &str)> = birth_forms.iter().map(|pin| (pin.clone(), "birth_date")).collect();
    if id_end_is_a_pin {
        weak.push((id_end.clone(), "id_number"));
    }
    for (pin, check) in &weak {
        let refused = assert_refused(
            activate_at_bank(&stack, &number, &person.seed, pin).await,
            Code::InvalidArgument,
            "CARD_PIN_TOO_WEAK",
        );
        assert_eq!(pin_check(&refused), *check);
        assert!(!refused.message().contains(pin.as_str()), "the answer never repeats the PIN");
    }
    assert!(stored_pin(&stack, &number).await.is_none(), "no PIN set");
    assert_eq!(card_by_ops(&stack, &number).await.financial_status, CardFunctionStatus::Inactive as i32);
    // A stranger at the bank naming the holder's birth date learns nothing of it: no card for them.
    let stranger = SeedPerson::adult();
    assert_refused(
        activate_at_bank(&stack, &number, &stranger, &birth_forms[0]).await,
        Code::NotFound,
        "CARD_NOT_FOUND",
    );
    activate_at_bank(&stack, &number, &person.seed, PIN).await.expect("a PIN of no personal fact");
    let set = stored_pin(&stack, &number).await.expect("set");

    // The holder's app (their token): identity-svc's birth date decides; nothing changes.
    let change = |new: &str, holder: Option<&SeedPerson>| ChangeCardPinRequest {
        card_number: number.clone(),
        old_pin: PIN.into(),
        new_pin: new.into(),
        holder: holder.map(identity),
    };
    let mut app = stack.cards(Some(&stack.keys.mini_program));
    for pin in &birth_forms {
        let refused = assert_refused(
            app.change_card_pin(with_person_token(change(pin, None), &person.token)).await,
            Code::InvalidArgument,
            "CARD_PIN_TOO_WEAK",
        );
        assert_eq!(pin_check(&refused), "birth_date");
    }
    // At the bank with the holder present, and the bank's and operators' resets.
    let mut bank = stack.cards(Some(&stack.keys.bank));
    let reset = |new: &str, holder: Option<&SeedPerson>| ResetCardPinRequest {
        card_number: number.clone(),
        new_pin: new.into(),
        holder: holder.map(identity),
    };
    for (pin, check) in &weak {
        let changed = bank.change_card_pin(change(pin, Some(&person.seed))).await;
        let by_bank = bank.reset_card_pin(reset(pin, Some(&person.seed))).await;
        let by_ops = stack.cards(Some(&stack.keys.ops)).reset_card_pin(reset(pin, None)).await;
        for refused in [changed.map(|_| ()), by_bank.map(|_| ())] {
            assert_eq!(pin_check(&assert_refused(refused, Code::InvalidArgument, "CARD_PIN_TOO_WEAK")), *check);
        }
        // Operators show no ID number: the birth date (from identity-svc) is what they are held
        // to; the ID number's end they can set (card.proto, ResetCardPin).
        if *check == "birth_date" {
            assert_eq!(pin_check(&assert_refused(by_ops, Code::InvalidArgument, "CARD_PIN_TOO_WEAK")), "birth_date");
        } else {
            by_ops.expect("operators cannot be held to an ID number they are not shown");
            let back = stack.cards(Some(&stack.keys.ops)).reset_card_pin(reset(PIN, None)).await;
            back.expect("back to the PIN of no personal fact");
        }
    }
    assert_eq!(stored_pin(&stack, &number).await.map(|(_, failures)| failures), Some(set.1), "no try was used");
    open_with_card(&stack, &stack.keys.hospital, &number, PIN).await.expect("the PIN is still the one chosen");
    stack.shutdown().await;
}

#[tokio::test]
async fn pin_hashes_are_keyed_with_the_servers_pepper_and_hashes_made_before_keep_verifying() {
    use insurance_svc::domain::card_pin::{DECOY_HASH, PinPepper, parse_pin, verify_pin};
    let stack = Stack::start().await;
    let (_, card) = holder_with_pin(&stack).await;
    let number = card.card_number.clone();
    let (hash, _) = stored_pin(&stack, &number).await.expect("the bank set a PIN");
    assert!(hash.starts_with("$argon2id$") && hash.contains(",keyid="), "the pepper's version beside the hash");
    assert!(!hash.contains(PIN));
    // The database alone does not check a PIN: without insurance-svc's data keys the right PIN
    // does not verify against the stored hash.
    let elsewhere = PinPepper::from_keys(&medins_common::crypto::DataKeys::generate());
    assert!(!verify_pin(&parse_pin("pin", PIN).unwrap(), &hash, &elsewhere).expect("a version of that key set"));

    // A hash made before the pepper (no keyid; here the decoy's, of 000000) keeps verifying.
    privacy::sensitive_token("000000");
    let (row, decoy) = (number.clone(), DECOY_HASH.clone());
    stack
        .insurance_db
        .run(move |conn| {
            diesel::update(card_pins::table.find(&row))
                .set(card_pins::pin_hash.eq(decoy))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_refused(
        open_with_card(&stack, &stack.keys.hospital, &number, PIN).await,
        Code::PermissionDenied,
        "CARD_PIN_INCORRECT",
    );
    open_with_card(&stack, &stack.keys.hospital, &number, "000000").await.expect("the hash from before the pepper");
    stack.shutdown().await;
}
