//! SMS challenges at rest, and the one place their state changes.
//!
//! The code is stored only as `HMAC-SHA256(index key, "sms_code" domain, challenge id || code)`
//! (through [`BlindIndex`]): a database reader without the index key learns nothing, and a hash
//! is useless for any other challenge. The phone is stored as its blind index (domain `phone`,
//! the same as `persons.phone_index`) and encrypted, for the masked answer of a verification.
//!
//! Concurrency: every read-then-write runs in one [`write_transaction`], and every state change
//! is a conditional `UPDATE ... WHERE state = <what we read> AND attempts = <what we read>` whose
//! affected-row count is checked, so two tries can never both act on the same state, on either
//! backend (on PostgreSQL the loser of a race waits for the winner's row lock, re-checks the
//! condition, updates nothing, reads the new state and decides again).
//!
//! A challenge belongs to the partner that asked for it: every read is by (id, partner), so a
//! challenge of another partner is exactly as absent as an unknown id.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::db::DbUuid;
use medins_common::{
    ApiError, ApiResult, Reason,
    clock::SharedClock,
    crypto::{BlindIndex, FieldAad, FieldCipher, constant_time_eq},
    db::{Db, DbConnection, write_transaction},
};
use uuid::Uuid;

use super::schema::{sms_challenges, sms_partner_days, sms_phone_locks};
use crate::domain::{
    phone::Phone,
    sms::{
        self, ChallengeFacts, ChallengeState, ConsumeFacts, PartnerBudget, SendHistory, SmsPurpose, Transition,
        VerifyOutcome,
    },
};

const TABLE: &str = "sms_challenges";
/// Same domain as `store::person`, so a challenge's phone index equals its person's.
const PHONE_DOMAIN: &str = "phone";
/// Domain of the code HMAC: apart from every lookup index.
const CODE_DOMAIN: &str = "sms_code";
/// A try re-reads after losing a race; each lost race means the state moved on (at most a few
/// times: attempts only grow and the states end), so this bound is never reached in practice.
const MAX_RACES: usize = 16;

#[derive(Queryable, Selectable)]
#[diesel(table_name = sms_challenges)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct ChallengeRow {
    id: DbUuid,
    phone_index: Vec<u8>,
    phone_enc: Vec<u8>,
    code_hmac: Vec<u8>,
    purpose: SmsPurpose,
    state: ChallengeState,
    attempts: i32,
    expires_at: NaiveDateTime,
    verified_at: Option<NaiveDateTime>,
}

/// A challenge just created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedChallenge {
    /// Its id.
    pub id: Uuid,
    /// When the code expires.
    pub expires_at: NaiveDateTime,
    /// Earliest next send to the phone.
    pub resend_after: NaiveDateTime,
}

/// The SMS challenge table, with the keys to write and check it.
#[derive(Clone)]
pub struct SmsStore {
    db: Db,
    cipher: FieldCipher,
    index: BlindIndex,
    clock: SharedClock,
}

impl SmsStore {
    /// A store over `db` with the data and index keys; times come from `clock`.
    pub fn new(db: Db, cipher: FieldCipher, index: BlindIndex, clock: SharedClock) -> Self {
        Self { db, cipher, index, clock }
    }

    /// Creates a PENDING challenge for `code`, owned by `partner_id`, if the partner's daily
    /// `quota` and the phone's rate limits allow one now (RESOURCE_EXHAUSTED /
    /// SMS_QUOTA_EXCEEDED or SMS_RATE_LIMITED with RetryInfo otherwise), and counts it against
    /// the partner's day.
    ///
    /// The partner's count for today is read under the lock of its `sms_partner_days` row
    /// (taken before the phone's, in every transaction, so two sends never wait on each other
    /// in opposite orders) and written back with a compare-and-set on the value read.
    ///
    /// Counting and inserting happen in one write transaction. On SQLite that transaction holds
    /// the database's write lock from its start. On PostgreSQL two transactions could both count
    /// before either inserts, so the transaction first upserts the phone's row in
    /// `sms_phone_locks`, which locks that row until commit: concurrent sends to one phone then
    /// run one after the other, sends to different phones do not wait for each other. (A lock
    /// row rather than a counter row: the counts come from the challenges themselves, so
    /// discarding an undelivered challenge frees its slot with nothing else to undo.)
    pub async fn create(
        &self,
        phone: Phone,
        purpose: SmsPurpose,
        code: String,
        partner_id: &str,
        quota: u32,
    ) -> ApiResult<CreatedChallenge> {
        let store = self.clone();
        let now = self.clock.stored_now();
        let today = self.clock.today();
        let partner_id = partner_id.to_owned();
        self.db
            .write(move |conn| {
                let phone_index = store.index.compute(PHONE_DOMAIN, phone.as_str());
                write_transaction(conn, |conn| {
                    let partner_sent = lock_partner_day(conn, &partner_id, today)?;
                    lock_phone(conn, &phone_index, now)?;
                    let sent_today: i64 = sms_challenges::table
                        .filter(sms_challenges::phone_index.eq(&phone_index))
                        .filter(sms_challenges::created_at.ge(sms::day_start(today)))
                        .count()
                        .get_result(conn)?;
                    let last_sent_at: Option<NaiveDateTime> = sms_challenges::table
                        .filter(sms_challenges::phone_index.eq(&phone_index))
                        .select(diesel::dsl::max(sms_challenges::created_at))
                        .first(conn)?;
                    let history =
                        SendHistory { sent_today: u32::try_from(sent_today).unwrap_or(u32::MAX), last_sent_at };
                    let budget = PartnerBudget { sent_today: u32::try_from(partner_sent).unwrap_or(u32::MAX), quota };
                    let allowed =
                        sms::decide_send(now, today, budget, history).map_err(sms::RateLimited::into_error)?;
                    let counted = diesel::update(
                        sms_partner_days::table
                            .find((&partner_id, today))
                            .filter(sms_partner_days::sent.eq(partner_sent)),
                    )
                    .set(sms_partner_days::sent.eq(partner_sent + 1))
                    .execute(conn)?;
                    if counted != 1 {
                        // The row is locked (or the database serialises writers): cannot happen.
                        return Err(ApiError::internal("sms partner day changed under its lock"));
                    }
                    let id = Uuid::now_v7();
                    let id_text = id.to_string();
                    diesel::insert_into(sms_challenges::table)
                        .values((
                            sms_challenges::id.eq(DbUuid(id)),
                            sms_challenges::phone_index.eq(&phone_index),
                            sms_challenges::phone_enc.eq(store.cipher.encrypt_str(
                                &FieldAad { table: TABLE, column: "phone_enc", row_id: &id_text },
                                phone.as_str(),
                            )),
                            sms_challenges::code_hmac.eq(store.code_hmac(id, &code)),
                            sms_challenges::purpose.eq(purpose),
                            sms_challenges::state.eq(ChallengeState::Pending),
                            sms_challenges::attempts.eq(0),
                            sms_challenges::created_at.eq(now),
                            sms_challenges::expires_at.eq(allowed.expires_at),
                            sms_challenges::partner_id.eq(&partner_id),
                        ))
                        .execute(conn)?;
                    Ok(CreatedChallenge { id, expires_at: allowed.expires_at, resend_after: allowed.resend_after })
                })
            })
            .await
    }

    /// Deletes a challenge whose SMS could not be delivered: nobody can know its code, and it
    /// must not count against the phone's limits nor the partner's quota (its unit is given
    /// back in the same transaction).
    pub async fn discard_undelivered(&self, id: Uuid) -> ApiResult<()> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let target = || {
                        sms_challenges::table
                            .find(DbUuid(id))
                            .filter(sms_challenges::state.eq(ChallengeState::Pending))
                            .filter(sms_challenges::attempts.eq(0))
                    };
                    let Some((partner_id, created_at)) = target()
                        .select((sms_challenges::partner_id, sms_challenges::created_at))
                        .first::<(String, NaiveDateTime)>(conn)
                        .optional()?
                    else {
                        return Ok(());
                    };
                    if diesel::delete(target()).execute(conn)? == 1 {
                        diesel::update(
                            sms_partner_days::table
                                .find((&partner_id, sms::china_day(created_at)))
                                .filter(sms_partner_days::sent.gt(0)),
                        )
                        .set(sms_partner_days::sent.eq(sms_partner_days::sent - 1))
                        .execute(conn)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// One try of `code` (already checked to be 6 digits) at challenge `id` by `partner_id`.
    /// Returns the challenge's phone (11 digits) when the code is right; otherwise the
    /// outcome's error (after the wrong try was counted and committed). NOT_FOUND /
    /// SMS_CHALLENGE_NOT_FOUND for an unknown id or another partner's challenge (no try is
    /// counted then).
    pub async fn verify(&self, id: Uuid, code: String, partner_id: &str) -> ApiResult<String> {
        let store = self.clone();
        let partner_id = partner_id.to_owned();
        let now = self.clock.stored_now();
        let (outcome, row) = self
            .db
            .write(move |conn| {
                let expected = store.code_hmac(id, &code);
                write_transaction(conn, |conn| {
                    for _ in 0..MAX_RACES {
                        let row = find_row(conn, id, &partner_id)?.ok_or_else(challenge_not_found)?;
                        let facts = ChallengeFacts {
                            state: row.state,
                            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
                            expires_at: row.expires_at,
                        };
                        let outcome = sms::decide_verify(facts, now, constant_time_eq(&expected, &row.code_hmac));
                        let Some(transition) = outcome.transition() else { return Ok((outcome, row)) };
                        // Compare-and-set against exactly what was read.
                        let target = sms_challenges::table
                            .find(DbUuid(id))
                            .filter(sms_challenges::partner_id.eq(&partner_id))
                            .filter(sms_challenges::state.eq(ChallengeState::Pending))
                            .filter(sms_challenges::attempts.eq(row.attempts));
                        let changed = match transition {
                            Transition::Verify => diesel::update(target)
                                .set((
                                    sms_challenges::state.eq(ChallengeState::Verified),
                                    sms_challenges::verified_at.eq(Some(now)),
                                ))
                                .execute(conn)?,
                            Transition::CountWrongCode { attempts, state } => diesel::update(target)
                                .set((sms_challenges::state.eq(state), sms_challenges::attempts.eq(attempts as i32)))
                                .execute(conn)?,
                        };
                        if changed == 1 {
                            return Ok((outcome, row));
                        }
                    }
                    Err(ApiError::internal("sms challenge kept changing under a verification"))
                })
            })
            .await?;
        match outcome.error() {
            Some(error) => Err(error),
            None => {
                debug_assert_eq!(outcome, VerifyOutcome::Verified);
                let row_id = row.id.to_string();
                self.cipher
                    .decrypt_string(&FieldAad { table: TABLE, column: "phone_enc", row_id: &row_id }, &row.phone_enc)
                    .map_err(|e| {
                        ApiError::internal(format_args!("cannot decrypt {TABLE}.phone_enc of {}: {e}", row.id))
                    })
            }
        }
    }

    /// Uses up a VERIFIED challenge of partner `partner_id`: it must have been sent to `phone`
    /// (normalised 11 digits) for `purpose` and verified less than 10 minutes ago. Succeeds
    /// once; then the challenge is CONSUMED. Otherwise FAILED_PRECONDITION / SMS_CODE_INVALID
    /// (other phone or purpose, not verified, already used) or SMS_CODE_EXPIRED, or NOT_FOUND /
    /// SMS_CHALLENGE_NOT_FOUND (unknown, or another partner's).
    ///
    /// For LinkPartnerAccount, card applications and CompleteRealName. Inside a transaction of
    /// your own, use [`consume_verified_in`](Self::consume_verified_in).
    pub async fn consume_verified(
        &self,
        challenge_id: Uuid,
        phone: &str,
        purpose: SmsPurpose,
        partner_id: &str,
    ) -> ApiResult<()> {
        let store = self.clone();
        let (phone, partner_id) = (phone.to_owned(), partner_id.to_owned());
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    store.consume_verified_in(conn, challenge_id, &phone, purpose, &partner_id)
                })
            })
            .await
    }

    /// [`consume_verified`](Self::consume_verified) on a connection the caller holds, typically
    /// inside its own [`write_transaction`] so that the challenge is used up if and only if the
    /// caller's change commits. Safe outside a transaction too: the state change is one
    /// conditional update.
    pub fn consume_verified_in(
        &self,
        conn: &mut DbConnection,
        challenge_id: Uuid,
        phone: &str,
        purpose: SmsPurpose,
        partner_id: &str,
    ) -> ApiResult<()> {
        let now = self.clock.stored_now();
        self.check_consumable(conn, challenge_id, phone, purpose, partner_id, now)?;
        let changed = diesel::update(
            sms_challenges::table
                .find(DbUuid(challenge_id))
                .filter(sms_challenges::partner_id.eq(partner_id))
                .filter(sms_challenges::state.eq(ChallengeState::Verified)),
        )
        .set((sms_challenges::state.eq(ChallengeState::Consumed), sms_challenges::consumed_at.eq(Some(now))))
        .execute(conn)?;
        if changed == 1 { Ok(()) } else { Err(sms::ConsumeRefusal::AlreadyConsumed.into_error()) }
    }

    /// Whether [`consume_verified`](Self::consume_verified) would succeed now, without using
    /// the challenge up: lets a caller refuse early, before slow work such as an outside check.
    pub async fn check_verified(
        &self,
        challenge_id: Uuid,
        phone: &str,
        purpose: SmsPurpose,
        partner_id: &str,
    ) -> ApiResult<()> {
        let store = self.clone();
        let (phone, partner_id) = (phone.to_owned(), partner_id.to_owned());
        let now = self.clock.stored_now();
        self.db.run(move |conn| store.check_consumable(conn, challenge_id, &phone, purpose, &partner_id, now)).await
    }

    fn check_consumable(
        &self,
        conn: &mut DbConnection,
        id: Uuid,
        phone: &str,
        purpose: SmsPurpose,
        partner_id: &str,
        now: NaiveDateTime,
    ) -> ApiResult<()> {
        let row = find_row(conn, id, partner_id)?.ok_or_else(challenge_not_found)?;
        let facts = ConsumeFacts {
            state: row.state,
            purpose: row.purpose,
            phone_matches: constant_time_eq(&self.index.compute(PHONE_DOMAIN, phone), &row.phone_index),
            verified_at: row.verified_at,
        };
        sms::decide_consume(facts, purpose, now).map_err(sms::ConsumeRefusal::into_error)
    }

    fn code_hmac(&self, id: Uuid, code: &str) -> Vec<u8> {
        self.index.compute(CODE_DOMAIN, &format!("{id}:{code}"))
    }
}

/// Makes sure partner `partner_id` has its row for `today`, locks it (on PostgreSQL; SQLite's
/// `BEGIN IMMEDIATE` already holds the database write lock) and returns its count.
fn lock_partner_day(conn: &mut DbConnection, partner_id: &str, today: chrono::NaiveDate) -> ApiResult<i32> {
    let row =
        (sms_partner_days::partner_id.eq(partner_id), sms_partner_days::day.eq(today), sms_partner_days::sent.eq(0));
    match conn {
        DbConnection::Postgres(pg) => {
            // The upsert takes the row lock even when the row exists; it is held until commit.
            Ok(diesel::insert_into(sms_partner_days::table)
                .values(row)
                .on_conflict((sms_partner_days::partner_id, sms_partner_days::day))
                .do_update()
                .set(sms_partner_days::sent.eq(sms_partner_days::sent))
                .returning(sms_partner_days::sent)
                .get_result(pg)?)
        }
        DbConnection::Sqlite(sqlite) => {
            diesel::insert_or_ignore_into(sms_partner_days::table).values(row).execute(sqlite)?;
            Ok(sms_partner_days::table.find((partner_id, today)).select(sms_partner_days::sent).first(sqlite)?)
        }
    }
}

/// Serialises sends to one phone on PostgreSQL (see [`SmsStore::create`]).
fn lock_phone(conn: &mut DbConnection, phone_index: &[u8], now: NaiveDateTime) -> ApiResult<()> {
    match conn {
        DbConnection::Postgres(pg) => {
            // The upsert takes the row lock even when the row exists; it is held until commit.
            diesel::insert_into(sms_phone_locks::table)
                .values((sms_phone_locks::phone_index.eq(phone_index), sms_phone_locks::locked_at.eq(now)))
                .on_conflict(sms_phone_locks::phone_index)
                .do_update()
                .set(sms_phone_locks::locked_at.eq(now))
                .execute(pg)?;
        }
        // BEGIN IMMEDIATE already holds SQLite's single write lock.
        DbConnection::Sqlite(_) => {}
    }
    Ok(())
}

/// A challenge by id, only if `partner_id` asked for it.
fn find_row(conn: &mut DbConnection, id: Uuid, partner_id: &str) -> ApiResult<Option<ChallengeRow>> {
    Ok(sms_challenges::table
        .find(DbUuid(id))
        .filter(sms_challenges::partner_id.eq(partner_id))
        .select(ChallengeRow::as_select())
        .first(conn)
        .optional()?)
}

fn challenge_not_found() -> ApiError {
    ApiError::of(Reason::SmsChallengeNotFound, "no SMS challenge with this id")
}
