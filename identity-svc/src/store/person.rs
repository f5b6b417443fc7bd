//! Persons at rest: every personal field encrypted, found by blind index.
//!
//! A row is a live claim or a superseded one. Only live rows are persons to the outside: a
//! superseded claim is found by nothing here (the same as a missing id). Which live row a
//! name and ID number pair is, and what a phone change needs, are the domain's decisions
//! (`domain::person`); this module reads their facts and writes their outcome.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::db::DbUuid;
use medins_common::{
    ApiError, ApiResult, Reason,
    crypto::{BlindIndex, FieldAad, FieldCipher},
    db::{Db, DbConnection, TxError, is_unique_violation, write_retrying, write_transaction},
};
use uuid::Uuid;

use super::schema::{face_sessions, partner_links, person_supersessions, persons, phone_changes};
use crate::domain::{
    face::{FacePurpose, FaceStatus},
    id_number::{IdNumber, Sex},
    person::{
        ClaimDecision, ClaimFacts, Person, PhoneChangeFaceFacts, PhoneChangeMethod, PhoneChangeProof,
        PhoneChangeRefusal, RealName, claims_to_supersede, decide_claim, decide_confirmation_refused,
        decide_duplicate_change_record, decide_match, decide_phone_change, decide_phone_swap, name_mismatch,
    },
    phone::Phone,
    sms::SmsPurpose,
};

const TABLE: &str = "persons";
const ID_NUMBER_DOMAIN: &str = "id_number";
const PHONE_DOMAIN: &str = "phone";
const NAME_DOMAIN: &str = "name";
/// `persons.claim_status` of a row that is a person.
pub(crate) const LIVE: &str = "LIVE";
/// `persons.claim_status` of a claim an authority-confirmed registration of its ID number ended.
const SUPERSEDED: &str = "SUPERSEDED";

#[derive(Queryable, Selectable)]
#[diesel(table_name = persons)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct PersonRow {
    id: DbUuid,
    id_number_enc: Vec<u8>,
    name_enc: Vec<u8>,
    phone_index: Option<Vec<u8>>,
    phone_enc: Option<Vec<u8>>,
    birth_date: NaiveDate,
    sex: Sex,
    region_code: String,
    real_name_status: String,
    real_name_method: Option<String>,
    real_name_verified_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
}

/// What a new registration or resolution brings.
pub struct NewPerson {
    /// Normalised name.
    pub name: String,
    /// Parsed ID number.
    pub id_number: IdNumber,
    /// Phone, when registering.
    pub phone: Option<Phone>,
}

/// The person table, with the keys to read and write it.
#[derive(Clone)]
pub struct PersonStore {
    db: Db,
    cipher: FieldCipher,
    index: BlindIndex,
}

impl PersonStore {
    /// A store over `db` with the data and index keys.
    pub fn new(db: Db, cipher: FieldCipher, index: BlindIndex) -> Self {
        Self { db, cipher, index }
    }

    /// A person by id.
    pub async fn find(&self, id: Uuid) -> ApiResult<Option<Person>> {
        let store = self.clone();
        self.db
            .read(move |conn| {
                let row = persons::table
                    .find(DbUuid(id))
                    .filter(persons::claim_status.eq(LIVE))
                    .select(PersonRow::as_select())
                    .first(conn)
                    .optional()?;
                row.map(|row| store.decrypt(row)).transpose()
            })
            .await
    }

    /// The person a name + ID number pair is ([`decide_claim`]): an existing live person of
    /// this name, else a new claim, unless the authority confirmed the number under another name
    /// (NAME_MISMATCH). The phone of an existing person is never set or changed here (only
    /// [`change_phone`](Self::change_phone) does, on proof): `new.phone` is recorded only on a
    /// person this call creates. Returns the person and whether it was created.
    pub async fn find_or_create(&self, new: NewPerson, now: NaiveDateTime) -> ApiResult<(Person, bool)> {
        let store = self.clone();
        self.db
            .write(move |conn| {
                // SQLite serialises writers with BEGIN IMMEDIATE; on PostgreSQL two first
                // registrations of one number can race, and the loser finds the winner's row.
                write_retrying(
                    conn,
                    |conn| store.find_or_create_once(conn, &new, now),
                    || ApiError::internal("person insert raced three times"),
                )
            })
            .await
    }

    fn find_or_create_once(
        &self,
        conn: &mut DbConnection,
        new: &NewPerson,
        now: NaiveDateTime,
    ) -> Result<(Person, bool), TxError> {
        let id_number_index = self.index.compute(ID_NUMBER_DOMAIN, new.id_number.as_str());
        // The caller's `write_retrying` holds the transaction.
        lock_id_number_in(conn, &id_number_index)?;
        let live = self.live_claims_in(conn, &id_number_index)?;
        let facts = claim_facts(&live, &new.name);
        match decide_claim(&facts) {
            ClaimDecision::Existing(id) => {
                let person = live
                    .into_iter()
                    .find(|p| p.id == id)
                    .ok_or_else(|| ApiError::internal("decided on an unknown claim"))?;
                return Ok((person, false));
            }
            ClaimDecision::NameMismatch => return Err(name_mismatch().into()),
            ClaimDecision::NewClaim => {}
        }
        let id = Uuid::now_v7();
        let id_text = id.to_string();
        let inserted = diesel::insert_into(persons::table)
            .values((
                persons::id.eq(DbUuid(id)),
                persons::id_number_index.eq(&id_number_index),
                persons::id_number_enc.eq(self.encrypt(&id_text, "id_number_enc", new.id_number.as_str())),
                persons::name_enc.eq(self.encrypt(&id_text, "name_enc", &new.name)),
                persons::name_index.eq(Some(self.index.compute(NAME_DOMAIN, &new.name))),
                persons::phone_index.eq(new.phone.as_ref().map(|p| self.index.compute(PHONE_DOMAIN, p.as_str()))),
                persons::phone_enc.eq(new.phone.as_ref().map(|p| self.encrypt(&id_text, "phone_enc", p.as_str()))),
                persons::birth_date.eq(new.id_number.birth_date()),
                persons::sex.eq(new.id_number.sex()),
                persons::region_code.eq(new.id_number.region_code()),
                persons::real_name_status.eq(RealName::Unverified.status_str()),
                persons::claim_status.eq(LIVE),
                persons::created_at.eq(now),
                persons::updated_at.eq(now),
            ))
            .execute(conn);
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => return Err(TxError::Raced),
            Err(error) => return Err(ApiError::from(error).into()),
        }
        let person = Person {
            id,
            name: new.name.clone(),
            id_number: new.id_number.as_str().to_owned(),
            phone: new.phone.as_ref().map(|p| p.as_str().to_owned()),
            birth_date: new.id_number.birth_date(),
            sex: new.id_number.sex(),
            region_code: new.id_number.region_code().to_owned(),
            real_name: RealName::Unverified,
            created_at: now,
        };
        Ok((person, true))
    }

    /// The live person a name + ID number pair matches ([`decide_match`]), limited to
    /// `person_id` when given. Reads only: creates nothing, and a confirmed person under
    /// another name is simply no match.
    pub async fn match_person(
        &self,
        name: String,
        id_number: IdNumber,
        person_id: Option<Uuid>,
    ) -> ApiResult<Option<Person>> {
        let store = self.clone();
        self.db
            .read(move |conn| {
                let index = store.index.compute(ID_NUMBER_DOMAIN, id_number.as_str());
                let live = store.live_claims_in(conn, &index)?;
                let matched = decide_match(&claim_facts(&live, &name), person_id);
                Ok(matched.and_then(|id| live.into_iter().find(|p| p.id == id)))
            })
            .await
    }

    /// Every live row of the ID number with blind index `id_number_index`, decrypted.
    fn live_claims_in(&self, conn: &mut DbConnection, id_number_index: &[u8]) -> ApiResult<Vec<Person>> {
        persons::table
            .filter(persons::id_number_index.eq(id_number_index))
            .filter(persons::claim_status.eq(LIVE))
            .order(persons::id.asc())
            .select(PersonRow::as_select())
            .load(conn)?
            .into_iter()
            .map(|row| self.decrypt(row))
            .collect()
    }

    /// Takes, on the caller's connection and until its transaction ends, the lock on every
    /// claim decision about the ID number of `person_id` (see `lock_id_number_in`). A
    /// confirmation takes it first, before it changes any row. NOT_FOUND if no such row.
    pub fn lock_claims_of_in(&self, conn: &mut DbConnection, person_id: Uuid) -> ApiResult<()> {
        let index: Option<Vec<u8>> =
            persons::table.find(DbUuid(person_id)).select(persons::id_number_index).first(conn).optional()?;
        let index = index.ok_or_else(|| ApiError::of(Reason::PersonNotFound, "no person with this id"))?;
        lock_id_number_in(conn, &index)
    }

    /// Supersedes (after [`lock_claims_of_in`](Self::lock_claims_of_in)), on the caller's connection (inside the transaction that confirmed
    /// `confirmed`), every other live claim of its ID number ([`claims_to_supersede`]): they stop
    /// being persons (found by nothing, the same as a missing id), their partner links end, and
    /// their tokens are revoked. Returns the superseded ids.
    pub fn supersede_other_claims_in(
        &self,
        conn: &mut DbConnection,
        confirmed: Uuid,
        now: NaiveDateTime,
    ) -> ApiResult<Vec<Uuid>> {
        let id_number_index: Vec<u8> =
            persons::table.find(DbUuid(confirmed)).select(persons::id_number_index).first(conn)?;
        let live = self.live_claims_in(conn, &id_number_index)?;
        let superseded = claims_to_supersede(confirmed, &claim_facts_by_id(&live));
        if superseded.is_empty() {
            return Ok(superseded);
        }
        let ids: Vec<DbUuid> = superseded.iter().copied().map(DbUuid).collect();
        let changed = diesel::update(
            persons::table
                .filter(persons::id.eq_any(&ids))
                .filter(persons::claim_status.eq(LIVE))
                .filter(persons::real_name_status.eq(RealName::Unverified.status_str())),
        )
        .set((persons::claim_status.eq(SUPERSEDED), persons::updated_at.eq(now)))
        .execute(conn)?;
        if changed != ids.len() {
            // Another confirmed row of the same number would have to exist: the partial unique
            // index forbids it, so this is a fault, and the whole confirmation rolls back.
            return Err(ApiError::internal("a claim to supersede was not live and unverified"));
        }
        for id in &ids {
            diesel::insert_into(person_supersessions::table)
                .values((
                    person_supersessions::person_id.eq(id),
                    person_supersessions::superseded_by.eq(DbUuid(confirmed)),
                    person_supersessions::superseded_at.eq(now),
                ))
                .execute(conn)?;
        }
        end_access_of_superseded_in(conn, &superseded, now)?;
        // insurance-svc suspends what it holds for each claim once told (at least once).
        for id in &superseded {
            super::person_outbox::record_superseded_in(conn, *id, confirmed, now)?;
        }
        Ok(superseded)
    }

    /// Binds or changes the phone of a live person, in one transaction: the second proof is
    /// read and judged ([`decide_phone_change`]), the PHONE_CHANGE challenge to the new phone is
    /// used up, the phone is compare-and-set against the one the decision saw (a concurrent
    /// change makes this one ABORTED / PHONE_CHANGE_CONFLICT, never a lost update), and the
    /// change is added to the person's history. Returns the person as it now is, and how the
    /// change was proven.
    pub async fn change_phone(
        &self,
        sms: super::sms::SmsStore,
        change: PhoneChange,
        now: NaiveDateTime,
    ) -> ApiResult<(Person, PhoneChangeMethod)> {
        let store = self.clone();
        self.db.write(move |conn| write_transaction(conn, |conn| store.change_phone_in(conn, &sms, &change, now))).await
    }

    fn change_phone_in(
        &self,
        conn: &mut DbConnection,
        sms: &super::sms::SmsStore,
        change: &PhoneChange,
        now: NaiveDateTime,
    ) -> ApiResult<(Person, PhoneChangeMethod)> {
        let id_text = change.person_id.to_string();
        let row = persons::table
            .find(DbUuid(change.person_id))
            .filter(persons::claim_status.eq(LIVE))
            .select(PersonRow::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| ApiError::of(Reason::PersonNotFound, "no person with this id"))?;
        let previous_index = row.phone_index.clone();
        let mut person = self.decrypt(row)?;
        let proof = match &change.proof {
            PhoneChangeEvidence::Face(session_id) => {
                PhoneChangeProof::Face(self.face_facts_in(conn, change.person_id, *session_id)?)
            }
            PhoneChangeEvidence::Operator { caller_is_ops, reason } => {
                PhoneChangeProof::Operator { caller_is_ops: *caller_is_ops, reason: reason.clone() }
            }
        };
        let method = decide_phone_change(person.phone.as_deref(), change.new_phone.as_str(), &proof, now)
            .map_err(|refusal| refusal.into_error())?;
        sms.consume_verified_in(
            conn,
            change.challenge_id,
            change.new_phone.as_str(),
            SmsPurpose::PhoneChange,
            &change.partner_id,
        )?;

        let new_index = self.index.compute(PHONE_DOMAIN, change.new_phone.as_str());
        let target = persons::table.find(DbUuid(change.person_id)).filter(persons::claim_status.eq(LIVE));
        let values = (
            persons::phone_index.eq(Some(new_index.clone())),
            persons::phone_enc.eq(Some(self.encrypt(&id_text, "phone_enc", change.new_phone.as_str()))),
            persons::updated_at.eq(now),
        );
        let changed = match &previous_index {
            Some(previous) => {
                diesel::update(target.filter(persons::phone_index.eq(previous))).set(values).execute(conn)?
            }
            None => diesel::update(target.filter(persons::phone_index.is_null())).set(values).execute(conn)?,
        };
        decide_phone_swap(changed).map_err(PhoneChangeRefusal::into_error)?;
        let change_id = Uuid::now_v7();
        let change_id_text = change_id.to_string();
        let (face_session_id, reason_enc) = match &change.proof {
            PhoneChangeEvidence::Face(session_id) => (Some(DbUuid(*session_id)), None),
            PhoneChangeEvidence::Operator { reason, .. } => (
                None,
                Some(self.cipher.encrypt_str(
                    &FieldAad { table: "phone_changes", column: "reason_enc", row_id: &change_id_text },
                    reason.trim(),
                )),
            ),
        };
        let recorded = diesel::insert_into(phone_changes::table)
            .values((
                phone_changes::id.eq(DbUuid(change_id)),
                phone_changes::person_id.eq(DbUuid(change.person_id)),
                phone_changes::method.eq(method),
                phone_changes::partner_id.eq(&change.partner_id),
                phone_changes::sms_challenge_id.eq(DbUuid(change.challenge_id)),
                phone_changes::face_session_id.eq(face_session_id),
                phone_changes::reason_enc.eq(reason_enc),
                phone_changes::previous_phone_index.eq(previous_index),
                phone_changes::new_phone_index.eq(new_index),
                phone_changes::changed_at.eq(now),
            ))
            .execute(conn);
        match recorded {
            Ok(_) => {}
            // Another change recorded meanwhile (PostgreSQL): the domain says which answer.
            Err(error) if is_unique_violation(&error) => {
                return Err(decide_duplicate_change_record(method).into_error());
            }
            Err(error) => return Err(error.into()),
        }
        person.phone = Some(change.new_phone.as_str().to_owned());
        Ok((person, method))
    }

    /// What a face session offered for a phone change is, or `None` if there is no such session.
    fn face_facts_in(
        &self,
        conn: &mut DbConnection,
        person_id: Uuid,
        session_id: Uuid,
    ) -> ApiResult<Option<PhoneChangeFaceFacts>> {
        let row: Option<(DbUuid, FacePurpose, FaceStatus, Option<NaiveDateTime>)> = face_sessions::table
            .find(DbUuid(session_id))
            .select((
                face_sessions::person_id,
                face_sessions::purpose,
                face_sessions::status,
                face_sessions::finished_at,
            ))
            .first(conn)
            .optional()?;
        let Some((session_person, purpose, status, finished_at)) = row else { return Ok(None) };
        let already_used = phone_changes::table
            .filter(phone_changes::face_session_id.eq(DbUuid(session_id)))
            .select(phone_changes::id)
            .first::<DbUuid>(conn)
            .optional()?
            .is_some();
        Ok(Some(PhoneChangeFaceFacts {
            same_person: Uuid::from(session_person) == person_id,
            phone_change_purpose: purpose == FacePurpose::PhoneChange,
            passed: status == FaceStatus::Passed,
            finished_at,
            already_used,
        }))
    }

    /// Computes the name blind index of rows written before names had one, in batches. Run at
    /// start; idempotent. Returns how many rows it filled in.
    pub async fn backfill_name_index(&self) -> ApiResult<usize> {
        let mut filled = 0;
        loop {
            let store = self.clone();
            let done = self
                .db
                .write(move |conn| {
                    write_transaction(conn, |conn| {
                        let rows: Vec<(String, Vec<u8>)> = persons::table
                            .filter(persons::name_index.is_null())
                            .select((persons::id, persons::name_enc))
                            .limit(500)
                            .load(conn)?;
                        for (id, name_enc) in &rows {
                            let name = store.decrypt_field(id, "name_enc", name_enc)?;
                            diesel::update(persons::table.find(id).filter(persons::name_index.is_null()))
                                .set(persons::name_index.eq(Some(store.index.compute(NAME_DOMAIN, &name))))
                                .execute(conn)?;
                        }
                        Ok::<_, ApiError>(rows.len())
                    })
                })
                .await?;
            filled += done;
            if done < 500 {
                return Ok(filled);
            }
        }
    }

    /// Marks the real name of person `id` VERIFIED by `method` at `now` unless it already is,
    /// on the caller's connection (inside its transaction, so that it commits together with
    /// whatever justified it). Returns whether this call changed it; NOT_FOUND if no such person.
    pub fn mark_real_name_verified_in(
        &self,
        conn: &mut DbConnection,
        id: Uuid,
        method: &str,
        now: NaiveDateTime,
    ) -> ApiResult<bool> {
        let changed = diesel::update(
            persons::table
                .find(DbUuid(id))
                .filter(persons::claim_status.eq(LIVE))
                .filter(persons::real_name_status.eq(RealName::Unverified.status_str())),
        )
        .set((
            persons::real_name_status.eq("VERIFIED"),
            persons::real_name_method.eq(Some(method)),
            persons::real_name_verified_at.eq(Some(now)),
            persons::updated_at.eq(now),
        ))
        .execute(conn)
        .map_err(|error| {
            if is_unique_violation(&error) {
                // Another claim of this number was confirmed first (the partial unique index).
                decide_confirmation_refused()
            } else {
                error.into()
            }
        })?;
        if changed == 0
            && persons::table
                .find(DbUuid(id))
                .filter(persons::claim_status.eq(LIVE))
                .select(persons::id)
                .first::<DbUuid>(conn)
                .optional()?
                .is_none()
        {
            return Err(ApiError::of(Reason::PersonNotFound, "no person with this id"));
        }
        Ok(changed == 1)
    }

    fn encrypt(&self, row_id: &str, column: &str, value: &str) -> Vec<u8> {
        self.cipher.encrypt_str(&FieldAad { table: TABLE, column, row_id }, value)
    }

    fn decrypt_field(&self, row_id: &str, column: &str, blob: &[u8]) -> ApiResult<String> {
        self.cipher
            .decrypt_string(&FieldAad { table: TABLE, column, row_id }, blob)
            .map_err(|error| ApiError::internal(format_args!("cannot decrypt {TABLE}.{column} of {row_id}: {error}")))
    }

    fn decrypt(&self, row: PersonRow) -> ApiResult<Person> {
        let id = Uuid::from(row.id);
        let id_text = id.to_string();
        let real_name = match (row.real_name_status.as_str(), row.real_name_method, row.real_name_verified_at) {
            ("VERIFIED", Some(method), Some(at)) => RealName::Verified { method, at },
            ("UNVERIFIED", _, _) => RealName::Unverified,
            (status, _, _) => {
                return Err(ApiError::internal(format_args!("person {id}: bad real-name state {status}")));
            }
        };
        Ok(Person {
            name: self.decrypt_field(&id_text, "name_enc", &row.name_enc)?,
            id_number: self.decrypt_field(&id_text, "id_number_enc", &row.id_number_enc)?,
            phone: row.phone_enc.map(|blob| self.decrypt_field(&id_text, "phone_enc", &blob)).transpose()?,
            birth_date: row.birth_date,
            sex: row.sex,
            region_code: row.region_code,
            real_name,
            created_at: row.created_at,
            id,
        })
    }
}

/// A phone change to carry out: whose, to which phone, and its two proofs.
pub struct PhoneChange {
    /// The person.
    pub person_id: Uuid,
    /// The new phone.
    pub new_phone: Phone,
    /// A verified SMS_PURPOSE_PHONE_CHANGE challenge sent to `new_phone`.
    pub challenge_id: Uuid,
    /// The second proof.
    pub proof: PhoneChangeEvidence,
    /// The calling partner.
    pub partner_id: String,
}

/// The second proof of a phone change, as the request gave it.
pub enum PhoneChangeEvidence {
    /// A face session id.
    Face(Uuid),
    /// An operator's decision.
    Operator {
        /// Whether the caller is of kind OPS.
        caller_is_ops: bool,
        /// The reason.
        reason: String,
    },
}

/// Where a superseded claim's access ends, inside the superseding transaction: its live
/// partner links end now (so no partner obtains a new token for it), and every token for it is
/// revoked on every replica of both services. A claim should never hold a token (tokens need
/// real name VERIFIED, and a confirmed person is never superseded); the revocation makes that
/// hold even if a future rule lets one through.
fn end_access_of_superseded_in(conn: &mut DbConnection, superseded: &[Uuid], now: NaiveDateTime) -> ApiResult<()> {
    let ids: Vec<DbUuid> = superseded.iter().copied().map(DbUuid).collect();
    diesel::update(
        partner_links::table.filter(partner_links::person_id.eq_any(&ids)).filter(partner_links::unlinked_at.is_null()),
    )
    .set(partner_links::unlinked_at.eq(now))
    .execute(conn)?;
    for &claim in superseded {
        super::revocation::revoke_tokens_in(
            conn,
            claim,
            None,
            now,
            medins_common::revocation::RevocationReason::ClaimSuperseded,
        )?;
    }
    Ok(())
}

/// Serialises, until the end of the transaction, every decision about the claims of one ID
/// number: a new claim cannot slip in beside a confirmation that is superseding the others.
/// SQLite's write transactions already run one at a time; PostgreSQL takes a transaction-scoped
/// advisory lock keyed by the number's blind index (an HMAC: the key reveals nothing).
fn lock_id_number_in(conn: &mut DbConnection, id_number_index: &[u8]) -> ApiResult<()> {
    let mut key = [0u8; 8];
    let len = id_number_index.len().min(8);
    key[..len].copy_from_slice(&id_number_index[..len]);
    Ok(medins_common::db::lock_key(conn, i64::from_be_bytes(key))?)
}

/// The claim facts of `live` for `name`.
fn claim_facts(live: &[Person], name: &str) -> Vec<ClaimFacts> {
    live.iter()
        .map(|p| ClaimFacts {
            id: p.id,
            same_name: medins_common::crypto::constant_time_eq(p.name.as_bytes(), name.as_bytes()),
            confirmed: matches!(p.real_name, RealName::Verified { .. }),
        })
        .collect()
}

/// The claim facts of `live` where only identity matters.
fn claim_facts_by_id(live: &[Person]) -> Vec<ClaimFacts> {
    live.iter()
        .map(|p| ClaimFacts { id: p.id, same_name: false, confirmed: matches!(p.real_name, RealName::Verified { .. }) })
        .collect()
}
