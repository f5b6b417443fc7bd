//! Persons at rest: every personal field encrypted, found by blind index.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult, Reason,
    crypto::{BlindIndex, FieldAad, FieldCipher},
    db::{Db, DbConnection, is_unique_violation, write_transaction},
};
use uuid::Uuid;

use super::schema::persons;
use crate::domain::{
    id_number::{IdNumber, Sex},
    person::RealName,
    phone::Phone,
};

const TABLE: &str = "persons";
const ID_NUMBER_DOMAIN: &str = "id_number";
const PHONE_DOMAIN: &str = "phone";

/// A person, decrypted. Lives only inside identity-svc; leaves it masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Person {
    /// Person id.
    pub id: Uuid,
    /// Normalised legal name.
    pub name: String,
    /// Normalised ID number.
    pub id_number: String,
    /// Phone on record (11 digits), if any.
    pub phone: Option<String>,
    /// Derived birth date.
    pub birth_date: NaiveDate,
    /// Derived sex.
    pub sex: Sex,
    /// Derived region code.
    pub region_code: String,
    /// Real-name status.
    pub real_name: RealName,
    /// First registered or resolved.
    pub created_at: NaiveDateTime,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = persons)]
struct PersonRow {
    id: String,
    id_number_enc: Vec<u8>,
    name_enc: Vec<u8>,
    phone_enc: Option<Vec<u8>>,
    birth_date: NaiveDate,
    sex: String,
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
                let row = persons::table.find(id.to_string()).select(PersonRow::as_select()).first(conn).optional()?;
                row.map(|row| store.decrypt(row)).transpose()
            })
            .await
    }

    /// The person with this ID number, created if new. An existing person must carry the same
    /// name (NAME_MISMATCH otherwise); a phone given now is recorded if none was on record.
    /// Returns the person and whether it was created.
    pub async fn find_or_create(&self, new: NewPerson, now: NaiveDateTime) -> ApiResult<(Person, bool)> {
        let store = self.clone();
        self.db
            .write(move |conn| {
                // SQLite serialises writers with BEGIN IMMEDIATE; on PostgreSQL two first
                // registrations of one number can race, and the loser finds the winner's row.
                match store.find_or_create_once(conn, &new, now) {
                    Err(FindOrCreateError::Race) => store.find_or_create_once(conn, &new, now),
                    other => other,
                }
                .map_err(|error| match error {
                    FindOrCreateError::Api(error) => error,
                    FindOrCreateError::Race => ApiError::internal("person insert raced twice"),
                })
            })
            .await
    }

    fn find_or_create_once(
        &self,
        conn: &mut DbConnection,
        new: &NewPerson,
        now: NaiveDateTime,
    ) -> Result<(Person, bool), FindOrCreateError> {
        let id_number_index = self.index.compute(ID_NUMBER_DOMAIN, new.id_number.as_str());
        write_transaction(conn, |conn| {
            let existing = persons::table
                .filter(persons::id_number_index.eq(&id_number_index))
                .select(PersonRow::as_select())
                .first(conn)
                .optional()?;
            if let Some(row) = existing {
                let mut person = self.decrypt(row)?;
                if !medins_common::crypto::constant_time_eq(person.name.as_bytes(), new.name.as_bytes()) {
                    return Err(ApiError::failed_precondition(
                        Reason::NameMismatch,
                        "the name does not match the one on record for this ID number",
                    )
                    .into());
                }
                if let (None, Some(phone)) = (&person.phone, &new.phone) {
                    let id = person.id.to_string();
                    diesel::update(persons::table.find(&id))
                        .set((
                            persons::phone_index.eq(Some(self.index.compute(PHONE_DOMAIN, phone.as_str()))),
                            persons::phone_enc.eq(Some(self.encrypt(&id, "phone_enc", phone.as_str()))),
                            persons::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                    person.phone = Some(phone.as_str().to_owned());
                }
                return Ok((person, false));
            }
            let id = Uuid::now_v7();
            let id_text = id.to_string();
            let inserted = diesel::insert_into(persons::table)
                .values((
                    persons::id.eq(&id_text),
                    persons::id_number_index.eq(&id_number_index),
                    persons::id_number_enc.eq(self.encrypt(&id_text, "id_number_enc", new.id_number.as_str())),
                    persons::name_enc.eq(self.encrypt(&id_text, "name_enc", &new.name)),
                    persons::phone_index.eq(new.phone.as_ref().map(|p| self.index.compute(PHONE_DOMAIN, p.as_str()))),
                    persons::phone_enc.eq(new.phone.as_ref().map(|p| self.encrypt(&id_text, "phone_enc", p.as_str()))),
                    persons::birth_date.eq(new.id_number.birth_date()),
                    persons::sex.eq(new.id_number.sex().as_str()),
                    persons::region_code.eq(new.id_number.region_code()),
                    persons::real_name_status.eq(RealName::Unverified.status_str()),
                    persons::created_at.eq(now),
                    persons::updated_at.eq(now),
                ))
                .execute(conn);
            match inserted {
                Ok(_) => {}
                Err(error) if is_unique_violation(&error) => return Err(FindOrCreateError::Race),
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
        })
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
        let id = id.to_string();
        let changed = diesel::update(
            persons::table.find(&id).filter(persons::real_name_status.eq(RealName::Unverified.status_str())),
        )
        .set((
            persons::real_name_status.eq("VERIFIED"),
            persons::real_name_method.eq(Some(method)),
            persons::real_name_verified_at.eq(Some(now)),
            persons::updated_at.eq(now),
        ))
        .execute(conn)?;
        if changed == 0 && persons::table.find(&id).select(persons::id).first::<String>(conn).optional()?.is_none() {
            return Err(ApiError::not_found(Reason::PersonNotFound, "no person with this id"));
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
        let id = Uuid::parse_str(&row.id).map_err(ApiError::internal)?;
        let real_name = match (row.real_name_status.as_str(), row.real_name_method, row.real_name_verified_at) {
            ("VERIFIED", Some(method), Some(at)) => RealName::Verified { method, at },
            ("UNVERIFIED", _, _) => RealName::Unverified,
            (status, _, _) => {
                return Err(ApiError::internal(format_args!("person {id}: bad real-name state {status}")));
            }
        };
        Ok(Person {
            name: self.decrypt_field(&row.id, "name_enc", &row.name_enc)?,
            id_number: self.decrypt_field(&row.id, "id_number_enc", &row.id_number_enc)?,
            phone: row.phone_enc.map(|blob| self.decrypt_field(&row.id, "phone_enc", &blob)).transpose()?,
            birth_date: row.birth_date,
            sex: Sex::parse_str(&row.sex).ok_or_else(|| ApiError::internal(format_args!("person {id}: bad sex")))?,
            region_code: row.region_code,
            real_name,
            created_at: row.created_at,
            id,
        })
    }
}

enum FindOrCreateError {
    Api(ApiError),
    Race,
}

impl From<ApiError> for FindOrCreateError {
    fn from(error: ApiError) -> Self {
        FindOrCreateError::Api(error)
    }
}

impl From<diesel::result::Error> for FindOrCreateError {
    fn from(error: diesel::result::Error) -> Self {
        FindOrCreateError::Api(error.into())
    }
}
