//! Card fees, applications and cards at rest. Every step runs in one write transaction and
//! changes an application or card only from the state it was read in (compare-and-set), so
//! concurrent steps on one application cannot both pass; the schema's unique indexes back the
//! one-open-application, one-current-card and use-once rules.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    crypto::{FieldAad, FieldCipher},
    db::{Db, DbConnection, DbUuid, is_unique_violation, retry_conflicts, write_transaction},
};
use uuid::Uuid;

use super::schema::{
    card_application_events, card_application_evidence, card_applications, card_fees, card_lookup_failures,
    card_mailing_addresses, card_pins, cards,
};
use crate::domain::{
    card::{
        self, ActivationChannel, ApplicationAction, ApplicationCursor, ApplicationEvent, ApplicationStatus, Card,
        CardAction, CardApplication, CardChannel, CardFee, CardStatus, Delivery, FeeCheck, MailingAddress,
        NewApplication, StateConflict, check_fee, next_application_status, next_card_status, random_card_number,
    },
    card_pin::{PIN_TRIES, PinTry, StoredPin, decide_try, pin_not_set},
    face::FaceCheck,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = card_fees)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct FeeRow {
    id: DbUuid,
    person_id: DbUuid,
    bank_partner_id: String,
    reference: String,
    amount_cents: i64,
    application_id: Option<DbUuid>,
    recorded_at: NaiveDateTime,
}

impl From<FeeRow> for CardFee {
    fn from(row: FeeRow) -> Self {
        CardFee {
            id: row.id.into(),
            person_id: row.person_id.into(),
            bank_partner_id: row.bank_partner_id,
            reference: row.reference,
            amount_cents: row.amount_cents,
            application_id: row.application_id.map(Uuid::from),
            recorded_at: row.recorded_at,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = card_applications)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct ApplicationRow {
    id: DbUuid,
    person_id: DbUuid,
    channel: CardChannel,
    delivery: Delivery,
    status: ApplicationStatus,
    partner_id: String,
    guardian_person_id: Option<DbUuid>,
    agent_person_id: Option<DbUuid>,
    employer_code: Option<String>,
    replaces_card_number: Option<String>,
    rejection_reason: Option<String>,
    ready_by: Option<NaiveDate>,
    tracking_number: Option<String>,
    card_number: Option<String>,
    submitted_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

fn bad(what: &str) -> ApiError {
    ApiError::internal(format_args!("card store: bad {what}"))
}

impl From<ApplicationRow> for CardApplication {
    fn from(row: ApplicationRow) -> Self {
        CardApplication {
            id: row.id.into(),
            person_id: row.person_id.into(),
            channel: row.channel,
            delivery: row.delivery,
            status: row.status,
            partner_id: row.partner_id,
            guardian_person_id: row.guardian_person_id.map(Uuid::from),
            agent_person_id: row.agent_person_id.map(Uuid::from),
            employer_code: row.employer_code,
            replaces_card_number: row.replaces_card_number,
            rejection_reason: row.rejection_reason,
            ready_by: row.ready_by,
            tracking_number: row.tracking_number,
            card_number: row.card_number,
            submitted_at: row.submitted_at,
            updated_at: row.updated_at,
            mailing_address: None,
            fee_id: None,
            history: Vec::new(),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = cards)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct CardRow {
    card_number: String,
    person_id: DbUuid,
    application_id: DbUuid,
    status: CardStatus,
    medical_activated_at: Option<NaiveDateTime>,
    financial_activated_at: Option<NaiveDateTime>,
    replaced_by_application_id: Option<DbUuid>,
    issued_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// A listing filter.
#[derive(Debug, Clone, Default)]
pub struct ApplicationFilter {
    /// Only this status.
    pub status: Option<ApplicationStatus>,
    /// Only this person.
    pub person_id: Option<Uuid>,
    /// Submitted at or after.
    pub from: Option<NaiveDateTime>,
    /// Submitted before.
    pub before: Option<NaiveDateTime>,
}

/// The card tables.
#[derive(Clone, Debug)]
pub struct CardStore {
    db: Db,
    /// Encrypts the personal fields of mailing addresses (street, recipient, phone).
    cipher: FieldCipher,
}

fn application_not_found() -> ApiError {
    ApiError::not_found(Reason::CardApplicationNotFound, "no card application with this id")
}

fn card_not_found() -> ApiError {
    ApiError::not_found(Reason::CardNotFound, "no card with this number")
}

impl CardStore {
    /// A store over `db`; mailing addresses are encrypted with `cipher` (insurance-svc's own
    /// data keys).
    pub fn new(db: Db, cipher: FieldCipher) -> Self {
        Self { db, cipher }
    }

    /// Records a fee; idempotent by (bank, reference). Returns it and whether it is new.
    pub async fn record_fee(
        &self,
        person_id: Uuid,
        bank_partner_id: String,
        reference: String,
        amount_cents: i64,
        now: NaiveDateTime,
    ) -> ApiResult<(CardFee, bool)> {
        self.db
            .write(move |conn| {
                let id = Uuid::now_v7();
                // One autocommit statement: the shared retry runs it again after a conflict.
                let inserted = retry_conflicts(|| {
                    diesel::insert_into(card_fees::table)
                        .values((
                            card_fees::id.eq(DbUuid(id)),
                            card_fees::person_id.eq(DbUuid(person_id)),
                            card_fees::bank_partner_id.eq(&bank_partner_id),
                            card_fees::reference.eq(&reference),
                            card_fees::amount_cents.eq(amount_cents),
                            card_fees::recorded_at.eq(now),
                        ))
                        .execute(conn)
                });
                let created = match inserted {
                    Ok(_) => true,
                    Err(error) if is_unique_violation(&error) => false,
                    Err(error) => return Err(error.into()),
                };
                let fee: CardFee = card_fees::table
                    .filter(card_fees::bank_partner_id.eq(&bank_partner_id))
                    .filter(card_fees::reference.eq(&reference))
                    .select(FeeRow::as_select())
                    .first::<FeeRow>(conn)?
                    .into();
                if !created && (fee.person_id != person_id || fee.amount_cents != amount_cents) {
                    return Err(ApiError::failed_precondition(
                        Reason::IdempotencyKeyMismatch,
                        "this fee reference was recorded with another person or amount",
                    ));
                }
                Ok((fee, created))
            })
            .await
    }

    /// A fee by id.
    pub async fn find_fee(&self, id: Uuid) -> ApiResult<Option<CardFee>> {
        self.db.read(move |conn| find_fee_in(conn, id)).await
    }

    /// Whether `person_id` may apply now ([`card::require_may_apply`]).
    pub async fn check_may_apply(&self, person_id: Uuid) -> ApiResult<()> {
        self.db.run(move |conn| check_may_apply_in(conn, person_id)).await
    }

    /// Whether a face session already proved an application.
    pub async fn face_session_used(&self, face_session_id: Uuid) -> ApiResult<bool> {
        self.db
            .run(move |conn| {
                let count: i64 = card_application_evidence::table
                    .filter(card_application_evidence::face_session_id.eq(DbUuid(face_session_id)))
                    .count()
                    .get_result(conn)?;
                Ok(count > 0)
            })
            .await
    }

    /// Records a SUBMITTED application (with its proof, address and fee) in one transaction;
    /// with `issue_on_spot` it is approved, produced and delivered in the same transaction and
    /// its card returned. CARD_STATE_CONFLICT if the person has an open application or a
    /// current card, FACE_VERIFICATION_REQUIRED (`reused`), CARD_FEE_INVALID.
    pub async fn submit(
        &self,
        new: NewApplication,
        issue_on_spot: bool,
        now: NaiveDateTime,
    ) -> ApiResult<(CardApplication, Option<Card>)> {
        let cipher = self.cipher.clone();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    check_may_apply_in(conn, new.person_id)?;
                    let id = insert_application(conn, &cipher, &new, None, now)?;
                    if !issue_on_spot {
                        return Ok((load_application(conn, &cipher, id)?, None));
                    }
                    let partner = new.partner_id.as_str();
                    step(
                        conn,
                        id,
                        ApplicationAction::Approve,
                        partner,
                        now,
                        Change::Review { rejection: None, today: None },
                    )?;
                    let number = produce_in(conn, id, partner, now)?;
                    step(conn, id, ApplicationAction::ConfirmDelivery, partner, now, Change::Plain)?;
                    let card = load_card(conn, &number)?.ok_or_else(card_not_found)?;
                    Ok((load_application(conn, &cipher, id)?, Some(card)))
                })
            })
            .await
    }

    /// Approves (setting a pick-up card's ready-by date from `today`) or rejects.
    pub async fn review(
        &self,
        id: Uuid,
        rejection: Option<String>,
        today: NaiveDate,
        partner: String,
        now: NaiveDateTime,
    ) -> ApiResult<CardApplication> {
        let cipher = self.cipher.clone();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let action =
                        if rejection.is_some() { ApplicationAction::Reject } else { ApplicationAction::Approve };
                    step(
                        conn,
                        id,
                        action,
                        &partner,
                        now,
                        Change::Review { rejection: rejection.clone(), today: Some(today) },
                    )?;
                    load_application(conn, &cipher, id)
                })
            })
            .await
    }

    /// Produces the card of an APPROVED application: a new number from the sequence.
    pub async fn produce(&self, id: Uuid, partner: String, now: NaiveDateTime) -> ApiResult<(CardApplication, Card)> {
        let cipher = self.cipher.clone();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let number = produce_in(conn, id, &partner, now)?;
                    let card = load_card(conn, &number)?.ok_or_else(card_not_found)?;
                    Ok((load_application(conn, &cipher, id)?, card))
                })
            })
            .await
    }

    /// Dispatches a PRODUCED card: mailed with `tracking` (mail delivery) or ready for pick-up
    /// (pick-up delivery, no tracking number): INVALID_ARGUMENT when they do not fit.
    pub async fn dispatch(
        &self,
        id: Uuid,
        tracking: Option<String>,
        partner: String,
        now: NaiveDateTime,
    ) -> ApiResult<CardApplication> {
        let cipher = self.cipher.clone();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let current = find_application_row(conn, id)?.ok_or_else(application_not_found)?;
                    card::check_dispatch(current.delivery, tracking.is_some())?;
                    step(
                        conn,
                        id,
                        ApplicationAction::Dispatch,
                        &partner,
                        now,
                        Change::Dispatch { tracking: tracking.clone() },
                    )?;
                    load_application(conn, &cipher, id)
                })
            })
            .await
    }

    /// Confirms delivery of a MAILED or READY_FOR_PICKUP card.
    pub async fn confirm_delivery(
        &self,
        id: Uuid,
        partner: String,
        now: NaiveDateTime,
    ) -> ApiResult<(CardApplication, Card)> {
        let cipher = self.cipher.clone();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    step(conn, id, ApplicationAction::ConfirmDelivery, &partner, now, Change::Plain)?;
                    let application = load_application(conn, &cipher, id)?;
                    let number = application.card_number.clone().ok_or_else(|| bad("delivered without card"))?;
                    let card = load_card(conn, &number)?.ok_or_else(card_not_found)?;
                    Ok((application, card))
                })
            })
            .await
    }

    /// An application with its history, address and fee.
    pub async fn find_application(&self, id: Uuid) -> ApiResult<Option<CardApplication>> {
        let cipher = self.cipher.clone();
        self.db
            .run(move |conn| match find_application_row(conn, id)? {
                Some(_) => load_application(conn, &cipher, id).map(Some),
                None => Ok(None),
            })
            .await
    }

    /// A page of applications, newest first, and the cursor of the next page.
    pub async fn list_applications(
        &self,
        filter: ApplicationFilter,
        cursor: Option<ApplicationCursor>,
        page_size: usize,
    ) -> ApiResult<(Vec<CardApplication>, Option<ApplicationCursor>)> {
        self.db
            .run(move |conn| {
                let mut query = card_applications::table.select(ApplicationRow::as_select()).into_boxed();
                if let Some(status) = filter.status {
                    query = query.filter(card_applications::status.eq(status));
                }
                if let Some(person) = filter.person_id {
                    query = query.filter(card_applications::person_id.eq(DbUuid(person)));
                }
                if let Some(from) = filter.from {
                    query = query.filter(card_applications::submitted_at.ge(from));
                }
                if let Some(before) = filter.before {
                    query = query.filter(card_applications::submitted_at.lt(before));
                }
                if let Some(cursor) = cursor {
                    let id = DbUuid(cursor.application_id);
                    query =
                        query.filter(card_applications::submitted_at.lt(cursor.submitted_at).or(
                            card_applications::submitted_at.eq(cursor.submitted_at).and(card_applications::id.lt(id)),
                        ));
                }
                let rows: Vec<ApplicationRow> = query
                    .order((card_applications::submitted_at.desc(), card_applications::id.desc()))
                    .limit(page_size as i64 + 1)
                    .load(conn)?;
                let more = rows.len() > page_size;
                let applications: Vec<CardApplication> =
                    rows.into_iter().take(page_size).map(CardApplication::from).collect();
                let next = more.then(|| {
                    let last = applications.last().expect("a full page");
                    ApplicationCursor { submitted_at: last.submitted_at, application_id: last.id }
                });
                Ok((applications, next))
            })
            .await
    }

    /// Reserves one of `partner_id`'s failed card lookups of `day` (China Standard Time) if
    /// fewer than `limit` are used; false once the limit is reached. One conditional update on
    /// the partner's row, which both backends apply atomically (PostgreSQL re-checks the
    /// condition on the row it waited for), so concurrent lookups never pass the limit.
    pub async fn reserve_lookup(&self, partner_id: &str, day: NaiveDate, limit: u32) -> ApiResult<bool> {
        let partner_id = partner_id.to_owned();
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let row = (
                        card_lookup_failures::partner_id.eq(&partner_id),
                        card_lookup_failures::day.eq(day),
                        card_lookup_failures::failures.eq(0),
                    );
                    match conn {
                        DbConnection::Postgres(pg) => {
                            diesel::insert_into(card_lookup_failures::table)
                                .values(row)
                                .on_conflict_do_nothing()
                                .execute(pg)?;
                        }
                        DbConnection::Sqlite(sqlite) => {
                            diesel::insert_or_ignore_into(card_lookup_failures::table).values(row).execute(sqlite)?;
                        }
                    }
                    let reserved = diesel::update(
                        card_lookup_failures::table
                            .find((&partner_id, day))
                            .filter(card_lookup_failures::failures.lt(limit)),
                    )
                    .set(card_lookup_failures::failures.eq(card_lookup_failures::failures + 1))
                    .execute(conn)?;
                    Ok(reserved == 1)
                })
            })
            .await
    }

    /// Gives back a unit [`CardStore::reserve_lookup`] took on `day`: the lookup found a card
    /// the caller may act on.
    pub async fn release_lookup(&self, partner_id: &str, day: NaiveDate) -> ApiResult<()> {
        let partner_id = partner_id.to_owned();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    diesel::update(
                        card_lookup_failures::table
                            .find((&partner_id, day))
                            .filter(card_lookup_failures::failures.gt(0)),
                    )
                    .set(card_lookup_failures::failures.eq(card_lookup_failures::failures - 1))
                    .execute(conn)?;
                    Ok(())
                })
            })
            .await
    }

    /// A card by number.
    pub async fn find_card(&self, number: String) -> ApiResult<Option<Card>> {
        self.db.read(move |conn| load_card(conn, &number)).await
    }

    /// A person's current card: the one not replaced.
    pub async fn current_card_of(&self, person_id: Uuid) -> ApiResult<Option<Card>> {
        self.db
            .run(move |conn| {
                let number: Option<String> = cards::table
                    .filter(cards::person_id.eq(DbUuid(person_id)))
                    .filter(cards::status.ne(CardStatus::Replaced))
                    .select(cards::card_number)
                    .first(conn)
                    .optional()?;
                match number {
                    Some(number) => load_card(conn, &number),
                    None => Ok(None),
                }
            })
            .await
    }

    /// Activates (or uses) a card through `channel`: a VALID, delivered card; the medical
    /// function at first use at a hospital or pharmacy, the financial one at a bank, which sets
    /// the PIN (`pin_hash`, required for the bank channel) in the same transaction. Returns it
    /// as it is afterwards.
    pub async fn activate(
        &self,
        number: String,
        channel: ActivationChannel,
        partner: String,
        pin_hash: Option<String>,
        now: NaiveDateTime,
    ) -> ApiResult<Card> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let card = load_card(conn, &number)?.ok_or_else(card_not_found)?;
                    let activation = card::decide_activation(&card, channel)?;
                    if activation.financial {
                        let hash =
                            pin_hash.as_deref().ok_or_else(|| ApiError::internal("bank activation without a PIN"))?;
                        // One PIN row per card: the primary key refuses a second (a bank
                        // activates the financial function once).
                        diesel::insert_into(card_pins::table)
                            .values((
                                card_pins::card_number.eq(&number),
                                card_pins::pin_hash.eq(hash),
                                card_pins::failures.eq(0),
                                card_pins::set_by.eq(&partner),
                                card_pins::set_at.eq(now),
                            ))
                            .execute(conn)?;
                    }
                    let by = format!("{}:{partner}", channel.as_str());
                    let target = cards::table.find(&number).filter(cards::status.eq(CardStatus::Valid));
                    if activation.medical {
                        diesel::update(target)
                            .set((
                                cards::medical_activated_at.eq(Some(now)),
                                cards::medical_activated_by.eq(Some(&by)),
                                cards::updated_at.eq(now),
                            ))
                            .execute(conn)?;
                    }
                    if activation.financial {
                        diesel::update(target)
                            .set((
                                cards::financial_activated_at.eq(Some(now)),
                                cards::financial_activated_by.eq(Some(&by)),
                                cards::updated_at.eq(now),
                            ))
                            .execute(conn)?;
                    }
                    load_card(conn, &number)?.ok_or_else(card_not_found)
                })
            })
            .await
    }

    /// Takes one try at `number`'s PIN ([`decide_try`] on the row read, then one conditional
    /// update `failures < PIN_TRIES` that both backends apply atomically per row: PostgreSQL
    /// re-checks the condition on the row it waited for, SQLite's writer runs one at a time),
    /// so concurrent guesses never take more than [`PIN_TRIES`] tries. Returns the card and the
    /// try (none: no such card). A try lost to concurrent ones reads as locked.
    pub async fn take_pin_try(&self, number: String) -> ApiResult<Option<(Card, PinTry)>> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let Some(card) = load_card(conn, &number)? else {
                        return Ok(None);
                    };
                    let stored: Option<(String, i32)> = card_pins::table
                        .find(&number)
                        .select((card_pins::pin_hash, card_pins::failures))
                        .first(conn)
                        .optional()?;
                    let decided = decide_try(stored.map(|(hash, failures)| StoredPin { hash, failures }));
                    if let PinTry::Taken(_) = &decided {
                        let taken =
                            diesel::update(card_pins::table.find(&number).filter(card_pins::failures.lt(PIN_TRIES)))
                                .set(card_pins::failures.eq(card_pins::failures + 1))
                                .execute(conn)?;
                        if taken != 1 {
                            return Ok(Some((card, PinTry::Locked)));
                        }
                    }
                    Ok(Some((card, decided)))
                })
            })
            .await
    }

    /// Gives back the try a right PIN took: the count of wrong tries in a row goes back to 0,
    /// unless the PIN changed meanwhile (`verified_hash` is the one the PIN was verified against).
    pub async fn give_back_pin_try(&self, number: String, verified_hash: String) -> ApiResult<()> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    diesel::update(card_pins::table.find(&number).filter(card_pins::pin_hash.eq(&verified_hash)))
                        .set(card_pins::failures.eq(0))
                        .execute(conn)?;
                    Ok(())
                })
            })
            .await
    }

    /// Replaces `number`'s PIN by `new_hash` and clears its wrong tries. With `verified_hash`
    /// (a change: the old PIN was verified against it) only if the PIN is still that one
    /// (false otherwise: changed or reset meanwhile); without (a reset) whatever it is.
    /// CARD_PIN_NOT_SET for a card without a PIN.
    pub async fn replace_pin(
        &self,
        number: String,
        verified_hash: Option<String>,
        new_hash: String,
        partner: String,
        now: NaiveDateTime,
    ) -> ApiResult<bool> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let exists: i64 = card_pins::table.find(&number).count().get_result(conn)?;
                    if exists == 0 {
                        return Err(pin_not_set());
                    }
                    let target = card_pins::table.find(&number);
                    let values = (
                        card_pins::pin_hash.eq(&new_hash),
                        card_pins::failures.eq(0),
                        card_pins::set_by.eq(&partner),
                        card_pins::set_at.eq(now),
                    );
                    let changed = match &verified_hash {
                        Some(old) => {
                            diesel::update(target.filter(card_pins::pin_hash.eq(old))).set(values).execute(conn)?
                        }
                        None => diesel::update(target).set(values).execute(conn)?,
                    };
                    Ok(changed == 1)
                })
            })
            .await
    }

    /// Reports a loss or lifts a temporary report (`action` is one of those).
    pub async fn change_card(&self, number: String, action: CardAction, now: NaiveDateTime) -> ApiResult<Card> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let card = load_card(conn, &number)?.ok_or_else(card_not_found)?;
                    let next = next_card_status(card.status, action)?;
                    set_card_status(conn, &number, card.status, next, None, now)?;
                    load_card(conn, &number)?.ok_or_else(card_not_found)
                })
            })
            .await
    }

    /// Applies for the replacement of a LOST card: a new SUBMITTED application paid by `fee_id`,
    /// and the old card REPLACED, in one transaction.
    pub async fn replace(
        &self,
        number: String,
        fee_id: Uuid,
        mailing_address: Option<MailingAddress>,
        partner: String,
        now: NaiveDateTime,
    ) -> ApiResult<(CardApplication, Card)> {
        let cipher = self.cipher.clone();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let card = load_card(conn, &number)?.ok_or_else(card_not_found)?;
                    let open_application = open_application_of(conn, card.person_id)?;
                    let fee = find_fee_in(conn, fee_id)?.map(|f| (f.person_id, f.application_id.is_some()));
                    let (next, new) = card::decide_replacement(
                        &card,
                        open_application,
                        fee,
                        fee_id,
                        mailing_address.clone(),
                        &partner,
                    )?;
                    let id = insert_application(conn, &cipher, &new, Some(&number), now)?;
                    set_card_status(conn, &number, card.status, next, Some(id), now)?;
                    let old = load_card(conn, &number)?.ok_or_else(card_not_found)?;
                    Ok((load_application(conn, &cipher, id)?, old))
                })
            })
            .await
    }
}

fn find_fee_in(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<CardFee>> {
    Ok(card_fees::table.find(DbUuid(id)).select(FeeRow::as_select()).first(conn).optional()?.map(CardFee::from))
}

fn open_application_of(conn: &mut DbConnection, person_id: Uuid) -> ApiResult<bool> {
    let open: Vec<&str> = ApplicationStatus::ALL.iter().filter(|s| s.is_open()).map(|s| s.as_str()).collect();
    let count: i64 = card_applications::table
        .filter(card_applications::person_id.eq(DbUuid(person_id)))
        .filter(card_applications::status.eq_any(open))
        .count()
        .get_result(conn)?;
    Ok(count > 0)
}

fn check_may_apply_in(conn: &mut DbConnection, person_id: Uuid) -> ApiResult<()> {
    let open_application = open_application_of(conn, person_id)?;
    let current_cards: i64 = cards::table
        .filter(cards::person_id.eq(DbUuid(person_id)))
        .filter(cards::status.ne(CardStatus::Replaced))
        .count()
        .get_result(conn)?;
    card::require_may_apply(open_application, current_cards > 0)
}

/// The encrypted columns of `card_mailing_addresses`; table and column are part of each field's
/// AAD, so a blob moved to another column or row does not decrypt.
const ADDRESS_TABLE: &str = "card_mailing_addresses";
const STREET: &str = "street_enc";
const RECIPIENT: &str = "recipient_enc";
const PHONE: &str = "phone_enc";

/// A mailing address as stored: the personal fields are blobs of [`seal`].
#[derive(Queryable, Selectable)]
#[diesel(table_name = card_mailing_addresses)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct AddressRow {
    region_code: String,
    street_enc: Vec<u8>,
    recipient_enc: Vec<u8>,
    phone_enc: Vec<u8>,
}

/// Encrypts one address field of the application `application_id` (the row id).
fn seal(cipher: &FieldCipher, column: &str, application_id: &str, value: &str) -> Vec<u8> {
    cipher.encrypt_str(&FieldAad { table: ADDRESS_TABLE, column, row_id: application_id }, value)
}

/// Decrypts one address field. A failure (unknown key version, wrong key file, altered blob) is
/// INTERNAL: the message names the column and application id only, never data.
fn open(cipher: &FieldCipher, column: &str, application_id: &str, blob: &[u8]) -> ApiResult<String> {
    cipher.decrypt_string(&FieldAad { table: ADDRESS_TABLE, column, row_id: application_id }, blob).map_err(|error| {
        ApiError::internal(format_args!(
            "cannot decrypt {ADDRESS_TABLE}.{column} of application {application_id}: {error}"
        ))
    })
}

/// Inserts a SUBMITTED application with its event, proof, address and fee.
fn insert_application(
    conn: &mut DbConnection,
    cipher: &FieldCipher,
    new: &NewApplication,
    replaces: Option<&str>,
    now: NaiveDateTime,
) -> ApiResult<Uuid> {
    let id = Uuid::now_v7();
    let id_text = id.to_string();
    let inserted = diesel::insert_into(card_applications::table)
        .values((
            card_applications::id.eq(DbUuid(id)),
            card_applications::person_id.eq(DbUuid(new.person_id)),
            card_applications::channel.eq(new.channel),
            card_applications::delivery.eq(new.delivery),
            card_applications::status.eq(ApplicationStatus::Submitted),
            card_applications::partner_id.eq(&new.partner_id),
            card_applications::guardian_person_id.eq(new.guardian_person_id.map(DbUuid)),
            card_applications::agent_person_id.eq(new.agent_person_id.map(DbUuid)),
            card_applications::employer_code.eq(new.employer_code.as_deref()),
            card_applications::replaces_card_number.eq(replaces),
            card_applications::submitted_at.eq(now),
            card_applications::updated_at.eq(now),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => {}
        // A concurrent application of the same person won (one open application per person).
        Err(error) if is_unique_violation(&error) => return Err(card::open_application_conflict()),
        Err(error) => return Err(error.into()),
    }
    insert_event(conn, &id_text, ApplicationStatus::Submitted, &new.partner_id, now)?;
    if let Some(evidence) = &new.evidence {
        let inserted = diesel::insert_into(card_application_evidence::table)
            .values((
                card_application_evidence::application_id.eq(DbUuid(id)),
                card_application_evidence::id_card_front_document_id.eq(DbUuid(evidence.id_card_front)),
                card_application_evidence::id_card_back_document_id.eq(DbUuid(evidence.id_card_back)),
                card_application_evidence::photo_document_id.eq(evidence.photo.map(DbUuid)),
                card_application_evidence::face_session_id.eq(DbUuid(evidence.face_session_id)),
                card_application_evidence::sms_challenge_id.eq(DbUuid(evidence.sms_challenge_id)),
            ))
            .execute(conn);
        match inserted {
            Ok(_) => {}
            // The SMS challenge was consumed once at identity-svc just before: only the face
            // session can have been used by a concurrent application.
            Err(error) if is_unique_violation(&error) => return Err(FaceCheck::Reused.into_error()),
            Err(error) => return Err(error.into()),
        }
    }
    if let Some(address) = &new.mailing_address {
        diesel::insert_into(card_mailing_addresses::table)
            .values((
                card_mailing_addresses::application_id.eq(DbUuid(id)),
                card_mailing_addresses::region_code.eq(&address.region_code),
                card_mailing_addresses::street_enc.eq(seal(cipher, STREET, &id_text, &address.street)),
                card_mailing_addresses::recipient_enc.eq(seal(cipher, RECIPIENT, &id_text, &address.recipient)),
                card_mailing_addresses::phone_enc.eq(seal(cipher, PHONE, &id_text, &address.phone)),
            ))
            .execute(conn)?;
    }
    if let Some(fee_id) = new.fee_id {
        // Compare-and-set: the fee pays once, for its own person.
        let paid = diesel::update(
            card_fees::table
                .find(DbUuid(fee_id))
                .filter(card_fees::person_id.eq(DbUuid(new.person_id)))
                .filter(card_fees::application_id.is_null()),
        )
        .set(card_fees::application_id.eq(Some(DbUuid(id))))
        .execute(conn)?;
        if paid != 1 {
            let fee = find_fee_in(conn, fee_id)?;
            let check = check_fee(fee.map(|f| (f.person_id, f.application_id.is_some())), new.person_id)
                .err()
                .unwrap_or(FeeCheck::Used);
            return Err(check.into_error());
        }
    }
    Ok(id)
}

fn insert_event(
    conn: &mut DbConnection,
    application_id: &str,
    status: ApplicationStatus,
    partner: &str,
    now: NaiveDateTime,
) -> ApiResult<()> {
    diesel::insert_into(card_application_events::table)
        .values((
            card_application_events::id.eq(DbUuid(Uuid::now_v7())),
            card_application_events::application_id.eq(application_id),
            card_application_events::status.eq(status),
            card_application_events::partner_id.eq(partner),
            card_application_events::at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// What a step writes besides the status.
enum Change {
    /// Nothing else.
    Plain,
    /// A review: the rejection reason, or the approval day for the ready-by date.
    Review { rejection: Option<String>, today: Option<NaiveDate> },
    /// A dispatch: the tracking number of a mailed card.
    Dispatch { tracking: Option<String> },
    /// Production: the card number.
    Produce { card_number: String },
}

/// One step of the application table, compare-and-set on the status it was read in.
fn step(
    conn: &mut DbConnection,
    id: Uuid,
    action: ApplicationAction,
    partner: &str,
    now: NaiveDateTime,
    change: Change,
) -> ApiResult<ApplicationStatus> {
    let current = find_application_row(conn, id)?.ok_or_else(application_not_found)?;
    let next = next_application_status(current.status, action, current.delivery)?;
    let id_text = id.to_string();
    let target = card_applications::table.find(DbUuid(id)).filter(card_applications::status.eq(current.status));
    let status = card_applications::status.eq(next);
    let updated = card_applications::updated_at.eq(now);
    let changed = match change {
        Change::Plain => diesel::update(target).set((status, updated)).execute(conn)?,
        Change::Review { rejection, today } => {
            let ready = today.and_then(|today| card::ready_by_after(next, current.delivery, today));
            diesel::update(target)
                .set((
                    status,
                    updated,
                    card_applications::rejection_reason.eq(rejection),
                    card_applications::ready_by.eq(ready),
                ))
                .execute(conn)?
        }
        Change::Dispatch { tracking } => diesel::update(target)
            .set((status, updated, card_applications::tracking_number.eq(tracking)))
            .execute(conn)?,
        Change::Produce { card_number } => diesel::update(target)
            .set((status, updated, card_applications::card_number.eq(Some(card_number))))
            .execute(conn)?,
    };
    if changed != 1 {
        // Changed by a concurrent step between our read and write (PostgreSQL).
        let now_status = find_application_row(conn, id)?.map(|r| r.status).unwrap_or(current.status);
        return Err(StateConflict { status: now_status.as_str(), action: action.as_str() }.into_error());
    }
    insert_event(conn, &id_text, next, partner, now)?;
    Ok(next)
}

/// Produces an APPROVED application's card: a drawn card number not yet taken (by a card or an
/// application; the unique keys on both stop a concurrent draw of the same number), the card row
/// (VALID, functions inactive). Returns the number.
fn produce_in(conn: &mut DbConnection, id: Uuid, partner: &str, now: NaiveDateTime) -> ApiResult<String> {
    let current = find_application_row(conn, id)?.ok_or_else(application_not_found)?;
    // Refuse before taking a number (a rolled back transaction gives it back anyway).
    next_application_status(current.status, ApplicationAction::Produce, current.delivery)?;
    let number = unused_card_number_in(conn)?;
    step(conn, id, ApplicationAction::Produce, partner, now, Change::Produce { card_number: number.clone() })?;
    diesel::insert_into(cards::table)
        .values((
            cards::card_number.eq(&number),
            cards::person_id.eq(DbUuid(current.person_id)),
            cards::application_id.eq(DbUuid(id)),
            cards::status.eq(CardStatus::Valid),
            cards::issued_at.eq(now),
            cards::updated_at.eq(now),
        ))
        .execute(conn)
        .map_err(|error| {
            if is_unique_violation(&error) {
                // A current card of this person exists (made after the application was
                // submitted, e.g. through another channel): this one cannot be produced.
                card::existing_card_conflict()
            } else {
                error.into()
            }
        })?;
    Ok(number)
}

/// A drawn card number no card and no application holds yet. With 10^9 numbers a draw is taken
/// only once a sizeable share is issued; a few draws in a row all taken means the space is
/// nearly used up, which is a fault to report, not to loop on.
fn unused_card_number_in(conn: &mut DbConnection) -> ApiResult<String> {
    const DRAWS: usize = 8;
    for _ in 0..DRAWS {
        let number = random_card_number(&mut rand::rngs::OsRng);
        let card: i64 = cards::table.filter(cards::card_number.eq(&number)).count().get_result(conn)?;
        let application: i64 = card_applications::table
            .filter(card_applications::card_number.eq(Some(&number)))
            .count()
            .get_result(conn)?;
        if card == 0 && application == 0 {
            return Ok(number);
        }
    }
    Err(ApiError::internal("no unused card number in 8 draws: the card number space is nearly used up"))
}

fn set_card_status(
    conn: &mut DbConnection,
    number: &str,
    from: CardStatus,
    to: CardStatus,
    replaced_by: Option<Uuid>,
    now: NaiveDateTime,
) -> ApiResult<()> {
    let changed = diesel::update(cards::table.find(number).filter(cards::status.eq(from)))
        .set((
            cards::status.eq(to),
            cards::replaced_by_application_id.eq(replaced_by.map(DbUuid)),
            cards::updated_at.eq(now),
        ))
        .execute(conn)?;
    if changed != 1 {
        return Err(StateConflict { status: from.as_str(), action: "CHANGE" }.into_error());
    }
    Ok(())
}

fn find_application_row(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<CardApplication>> {
    Ok(card_applications::table
        .find(DbUuid(id))
        .select(ApplicationRow::as_select())
        .first(conn)
        .optional()?
        .map(CardApplication::from))
}

fn load_application(conn: &mut DbConnection, cipher: &FieldCipher, id: Uuid) -> ApiResult<CardApplication> {
    let mut application = find_application_row(conn, id)?.ok_or_else(application_not_found)?;
    let id_text = id.to_string();
    let events: Vec<(ApplicationStatus, String, NaiveDateTime)> = card_application_events::table
        .filter(card_application_events::application_id.eq(DbUuid(id)))
        .order((card_application_events::at.asc(), card_application_events::id.asc()))
        .select((card_application_events::status, card_application_events::partner_id, card_application_events::at))
        .load(conn)?;
    application.history =
        events.into_iter().map(|(status, partner_id, at)| ApplicationEvent { status, partner_id, at }).collect();
    let address =
        card_mailing_addresses::table.find(DbUuid(id)).select(AddressRow::as_select()).first(conn).optional()?;
    application.mailing_address = address
        .map(|row| -> ApiResult<MailingAddress> {
            Ok(MailingAddress {
                region_code: row.region_code,
                street: open(cipher, STREET, &id_text, &row.street_enc)?,
                recipient: open(cipher, RECIPIENT, &id_text, &row.recipient_enc)?,
                phone: open(cipher, PHONE, &id_text, &row.phone_enc)?,
            })
        })
        .transpose()?;
    let fee: Option<DbUuid> = card_fees::table
        .filter(card_fees::application_id.eq(DbUuid(id)))
        .select(card_fees::id)
        .first(conn)
        .optional()?;
    application.fee_id = fee.map(Uuid::from);
    Ok(application)
}

/// A card by number, with whether its application was delivered (also read by the card visit,
/// `store::visit`).
pub(super) fn load_card(conn: &mut DbConnection, number: &str) -> ApiResult<Option<Card>> {
    let Some(row) = cards::table.find(number).select(CardRow::as_select()).first(conn).optional()? else {
        return Ok(None);
    };
    let delivered: Option<String> =
        card_applications::table.find(row.application_id).select(card_applications::status).first(conn).optional()?;
    Ok(Some(Card {
        person_id: row.person_id.into(),
        application_id: row.application_id.into(),
        status: row.status,
        medical_activated_at: row.medical_activated_at,
        financial_activated_at: row.financial_activated_at,
        replaced_by_application_id: row.replaced_by_application_id.map(Uuid::from),
        issued_at: row.issued_at,
        updated_at: row.updated_at,
        delivered: delivered.as_deref() == Some(ApplicationStatus::Delivered.as_str()),
        card_number: row.card_number,
    }))
}
