//! Partner links at rest: the partner's user ref encrypted, found by a blind index over
//! (partner, ref); one live link per (partner, person) and per (partner, ref), enforced by
//! partial unique indexes as well as by the checks here.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::db::DbUuid;
use medins_common::{
    ApiError, ApiResult,
    crypto::{BlindIndex, FieldAad, FieldCipher},
    db::{Db, DbConnection, TxError, is_unique_violation, write_retrying, write_transaction},
};
use uuid::Uuid;

use medins_common::revocation::{Revocation, RevocationReason};

use super::{revocation::revoke_tokens_in, schema::partner_links};
use crate::domain::link::{LinkDecision, PartnerLink, decide_link, link_conflict, user_ref_index_input};

const TABLE: &str = "partner_links";
const USER_REF_COLUMN: &str = "partner_user_ref_enc";
const USER_REF_DOMAIN: &str = "partner_user_ref";

/// A live link as the person's own list shows it: the user ref only on the caller's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSummary {
    /// Link id, the list's cursor.
    pub id: Uuid,
    /// The partner.
    pub partner_id: String,
    /// The partner's user ref when the partner is the caller.
    pub partner_user_ref: Option<String>,
    /// When it was made.
    pub linked_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = partner_links)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct LinkRow {
    id: DbUuid,
    partner_id: String,
    person_id: DbUuid,
    partner_user_ref_enc: Vec<u8>,
    linked_at: NaiveDateTime,
}

/// What a pre-check of a link request found (see [`LinkStore::check`]).
#[derive(Debug)]
pub enum LinkCheck {
    /// Nothing in the way.
    Free,
    /// The same link is live.
    Existing(PartnerLink),
}

/// The partner link table.
#[derive(Clone)]
pub struct LinkStore {
    db: Db,
    cipher: FieldCipher,
    index: BlindIndex,
}

impl std::fmt::Debug for LinkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkStore").finish_non_exhaustive()
    }
}

impl LinkStore {
    /// A store over `db` with the data and index keys.
    pub fn new(db: Db, cipher: FieldCipher, index: BlindIndex) -> Self {
        Self { db, cipher, index }
    }

    fn ref_index(&self, partner_id: &str, user_ref: &str) -> Vec<u8> {
        self.index.compute(USER_REF_DOMAIN, &user_ref_index_input(partner_id, user_ref))
    }

    /// The caller's live link with the person, if any.
    pub async fn live_link(&self, partner_id: &str, person_id: Uuid) -> ApiResult<Option<PartnerLink>> {
        let store = self.clone();
        let partner_id = partner_id.to_owned();
        self.db.run(move |conn| store.live_link_in(conn, &partner_id, person_id)).await
    }

    /// Whether the caller has a live link with the person (no decryption).
    pub async fn has_live_link(&self, partner_id: &str, person_id: Uuid) -> ApiResult<bool> {
        let partner_id = partner_id.to_owned();
        self.db
            .run(move |conn| {
                let count: i64 = partner_links::table
                    .filter(partner_links::partner_id.eq(&partner_id))
                    .filter(partner_links::person_id.eq(DbUuid(person_id)))
                    .filter(partner_links::unlinked_at.is_null())
                    .count()
                    .get_result(conn)?;
                Ok(count > 0)
            })
            .await
    }

    fn live_link_in(
        &self,
        conn: &mut DbConnection,
        partner_id: &str,
        person_id: Uuid,
    ) -> ApiResult<Option<PartnerLink>> {
        let row = partner_links::table
            .filter(partner_links::partner_id.eq(partner_id))
            .filter(partner_links::person_id.eq(DbUuid(person_id)))
            .filter(partner_links::unlinked_at.is_null())
            .select(LinkRow::as_select())
            .first(conn)
            .optional()?;
        row.map(|row| self.decrypt(row)).transpose()
    }

    fn ref_taken_by_other(
        &self,
        conn: &mut DbConnection,
        partner_id: &str,
        person_id: Uuid,
        index: &[u8],
    ) -> ApiResult<bool> {
        let count: i64 = partner_links::table
            .filter(partner_links::partner_id.eq(partner_id))
            .filter(partner_links::partner_user_ref_index.eq(index))
            .filter(partner_links::person_id.ne(DbUuid(person_id)))
            .filter(partner_links::unlinked_at.is_null())
            .count()
            .get_result(conn)?;
        Ok(count > 0)
    }

    /// Read-only pre-check of a link request, before an SMS challenge is spent on it: the same
    /// live link (idempotent relink), a conflict (ALREADY_EXISTS / PARTNER_LINK_CONFLICT), or
    /// free.
    pub async fn check(&self, partner_id: &str, person_id: Uuid, user_ref: &str) -> ApiResult<LinkCheck> {
        let store = self.clone();
        let (partner_id, user_ref) = (partner_id.to_owned(), user_ref.to_owned());
        self.db
            .run(move |conn| {
                let existing = store.live_link_in(conn, &partner_id, person_id)?;
                let index = store.ref_index(&partner_id, &user_ref);
                let taken = store.ref_taken_by_other(conn, &partner_id, person_id, &index)?;
                match decide_link(existing.as_ref().map(|l| l.partner_user_ref.as_str()), &user_ref, taken) {
                    LinkDecision::Create => Ok(LinkCheck::Free),
                    LinkDecision::Existing => Ok(LinkCheck::Existing(existing.expect("existing link"))),
                    LinkDecision::Conflict => Err(link_conflict()),
                }
            })
            .await
    }

    /// Links the partner's user ref to the person; returns the link and whether this call made
    /// it. The same live link is returned as is; a conflicting one fails ALREADY_EXISTS /
    /// PARTNER_LINK_CONFLICT.
    pub async fn link(
        &self,
        partner_id: &str,
        person_id: Uuid,
        user_ref: &str,
        now: NaiveDateTime,
    ) -> ApiResult<(PartnerLink, bool)> {
        let store = self.clone();
        let (partner_id, user_ref) = (partner_id.to_owned(), user_ref.to_owned());
        self.db
            .write(move |conn| {
                // SQLite serialises writers with BEGIN IMMEDIATE; on PostgreSQL two first links can
                // race, and the loser (unique violation) looks again and finds the winner's link.
                write_retrying(
                    conn,
                    |conn| store.link_once(conn, &partner_id, person_id, &user_ref, now),
                    link_conflict,
                )
            })
            .await
    }

    fn link_once(
        &self,
        conn: &mut DbConnection,
        partner_id: &str,
        person_id: Uuid,
        user_ref: &str,
        now: NaiveDateTime,
    ) -> Result<(PartnerLink, bool), TxError> {
        let index = self.ref_index(partner_id, user_ref);
        // The caller's `write_retrying` holds the transaction.
        let existing = self.live_link_in(conn, partner_id, person_id)?;
        let taken = self.ref_taken_by_other(conn, partner_id, person_id, &index)?;
        match decide_link(existing.as_ref().map(|l| l.partner_user_ref.as_str()), user_ref, taken) {
            LinkDecision::Existing => return Ok((existing.expect("existing link"), false)),
            LinkDecision::Conflict => return Err(link_conflict().into()),
            LinkDecision::Create => {}
        }
        let id = Uuid::now_v7();
        let id_text = id.to_string();
        let inserted = diesel::insert_into(partner_links::table)
            .values((
                partner_links::id.eq(DbUuid(id)),
                partner_links::partner_id.eq(partner_id),
                partner_links::person_id.eq(DbUuid(person_id)),
                partner_links::partner_user_ref_index.eq(&index),
                partner_links::partner_user_ref_enc.eq(self
                    .cipher
                    .encrypt_str(&FieldAad { table: TABLE, column: USER_REF_COLUMN, row_id: &id_text }, user_ref)),
                partner_links::linked_at.eq(now),
            ))
            .execute(conn);
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => return Err(TxError::Raced),
            Err(error) => return Err(ApiError::from(error).into()),
        }
        let link = PartnerLink {
            id,
            partner_id: partner_id.to_owned(),
            person_id,
            partner_user_ref: user_ref.to_owned(),
            linked_at: now,
        };
        Ok((link, true))
    }

    /// Ends the partner's live link with the person; false if none was live.
    pub async fn unlink(&self, partner_id: &str, person_id: Uuid, now: NaiveDateTime) -> ApiResult<bool> {
        Ok(self.end_link(partner_id, person_id, now, RevocationReason::Unlinked).await?.is_some())
    }

    /// Ends the partner's live link with the person and revokes the partner's tokens for the
    /// person, in one transaction; `None` (nothing written) if no link was live.
    pub async fn end_link(
        &self,
        partner_id: &str,
        person_id: Uuid,
        now: NaiveDateTime,
        reason: RevocationReason,
    ) -> ApiResult<Option<Revocation>> {
        let partner_id = partner_id.to_owned();
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let ended = diesel::update(
                        partner_links::table
                            .filter(partner_links::partner_id.eq(&partner_id))
                            .filter(partner_links::person_id.eq(DbUuid(person_id)))
                            .filter(partner_links::unlinked_at.is_null()),
                    )
                    .set(partner_links::unlinked_at.eq(now))
                    .execute(conn)?;
                    if ended == 0 {
                        return Ok(None);
                    }
                    revoke_tokens_in(conn, person_id, Some(&partner_id), now, reason).map(Some)
                })
            })
            .await
    }

    /// The person's live links with every partner, newest first: at most `limit`, with ids
    /// below `before` when given. Only `caller`'s own link carries its user ref.
    pub async fn list_live(
        &self,
        person_id: Uuid,
        caller: &str,
        before: Option<Uuid>,
        limit: i64,
    ) -> ApiResult<Vec<LinkSummary>> {
        let store = self.clone();
        let caller = caller.to_owned();
        self.db
            .run(move |conn| {
                let mut query = partner_links::table
                    .filter(partner_links::person_id.eq(DbUuid(person_id)))
                    .filter(partner_links::unlinked_at.is_null())
                    .order(partner_links::id.desc())
                    .limit(limit)
                    .select(LinkRow::as_select())
                    .into_boxed();
                if let Some(before) = before {
                    query = query.filter(partner_links::id.lt(DbUuid(before)));
                }
                let rows: Vec<LinkRow> = query.load(conn)?;
                rows.into_iter()
                    .map(|row| {
                        if row.partner_id == caller {
                            let link = store.decrypt(row)?;
                            Ok(LinkSummary {
                                id: link.id,
                                partner_id: link.partner_id,
                                partner_user_ref: Some(link.partner_user_ref),
                                linked_at: link.linked_at,
                            })
                        } else {
                            // Another partner's ref is never decrypted for this caller.
                            Ok(LinkSummary {
                                id: row.id.into(),
                                partner_id: row.partner_id,
                                partner_user_ref: None,
                                linked_at: row.linked_at,
                            })
                        }
                    })
                    .collect()
            })
            .await
    }

    fn decrypt(&self, row: LinkRow) -> ApiResult<PartnerLink> {
        let row_id = row.id.to_string();
        let partner_user_ref = self
            .cipher
            .decrypt_string(
                &FieldAad { table: TABLE, column: USER_REF_COLUMN, row_id: &row_id },
                &row.partner_user_ref_enc,
            )
            .map_err(|error| {
                ApiError::internal(format_args!("cannot decrypt {TABLE}.{USER_REF_COLUMN} of {}: {error}", row.id))
            })?;
        Ok(PartnerLink {
            id: row.id.into(),
            person_id: row.person_id.into(),
            partner_id: row.partner_id,
            partner_user_ref,
            linked_at: row.linked_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use medins_common::{crypto::DataKeys, db::PoolOptions};

    use super::*;
    use crate::{
        domain::{id_number, phone},
        store::person::{NewPerson, PersonStore},
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        links: LinkStore,
        persons: PersonStore,
        now: NaiveDateTime,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db =
            Db::connect(&format!("sqlite://{}", dir.path().join("l.db").display()), &PoolOptions::default()).unwrap();
        db.migrate(crate::store::MIGRATIONS).await.unwrap();
        let keys = DataKeys::generate();
        Fixture {
            _dir: dir,
            links: LinkStore::new(db.clone(), FieldCipher::new(&keys), BlindIndex::new(&keys)),
            persons: PersonStore::new(db, FieldCipher::new(&keys), BlindIndex::new(&keys)),
            now: chrono::Utc::now().naive_utc(),
        }
    }

    async fn person(f: &Fixture, sequence: u32) -> Uuid {
        let first17 = format!("11010519850101{sequence:03}");
        let id = format!("{first17}{}", id_number::check_character(&first17));
        let new = NewPerson {
            name: "测试".into(),
            id_number: id_number::parse(&id, f.now.date()).unwrap(),
            phone: Some(phone::parse("13900001111").unwrap()),
        };
        f.persons.find_or_create(new, f.now).await.unwrap().0.id
    }

    #[tokio::test]
    async fn one_live_link_per_partner_and_person_and_per_partner_and_ref() {
        let f = fixture().await;
        let (alice, bob) = (person(&f, 101).await, person(&f, 102).await);

        let (link, created) = f.links.link("bank", alice, "u-1", f.now).await.unwrap();
        assert!(created);
        assert_eq!((link.partner_id.as_str(), link.person_id, link.partner_user_ref.as_str()), ("bank", alice, "u-1"));
        let (again, created) = f.links.link("bank", alice, "u-1", f.now).await.unwrap();
        assert!(!created, "relinking the same pair is idempotent");
        assert_eq!(again.id, link.id);
        assert!(matches!(f.links.check("bank", alice, "u-1").await.unwrap(), LinkCheck::Existing(_)));

        for (person, user_ref) in [(alice, "u-2"), (bob, "u-1")] {
            let error = f.links.link("bank", person, user_ref, f.now).await.unwrap_err();
            assert_eq!(error.reason(), medins_common::Reason::PartnerLinkConflict);
            assert_eq!(f.links.check("bank", person, user_ref).await.unwrap_err().code(), tonic::Code::AlreadyExists);
        }
        // Another partner may use the same ref for the same or another person.
        assert!(f.links.link("mini-program", bob, "u-1", f.now).await.unwrap().1);
        assert!(f.links.link("mini-program", alice, "u-9", f.now).await.unwrap().1);

        // Unlinking frees both the person and the ref; a second unlink finds nothing.
        assert!(f.links.unlink("bank", alice, f.now).await.unwrap());
        assert!(!f.links.unlink("bank", alice, f.now).await.unwrap());
        assert!(!f.links.has_live_link("bank", alice).await.unwrap());
        assert!(f.links.link("bank", bob, "u-1", f.now).await.unwrap().1);
        assert!(f.links.has_live_link("bank", bob).await.unwrap());
    }

    #[tokio::test]
    async fn ending_a_link_revokes_the_partners_tokens_in_the_same_write() {
        let f = fixture().await;
        let alice = person(&f, 104).await;
        f.links.link("bank", alice, "u-4", f.now).await.unwrap();
        let revocation =
            f.links.end_link("bank", alice, f.now, RevocationReason::RevokedByPerson).await.unwrap().unwrap();
        assert_eq!((revocation.person_id, revocation.partner_id.as_deref()), (alice, Some("bank")));
        assert_eq!(revocation.revoked_at_ms, crate::store::revocation::millis(f.now));
        let store = crate::store::revocation::RevocationStore::new(f.links.db.clone());
        let listed = store.list_since(f.now - chrono::Duration::seconds(1)).await.unwrap();
        assert_eq!(listed, vec![revocation]);
        // Nothing live: nothing ended, nothing revoked.
        assert!(f.links.end_link("bank", alice, f.now, RevocationReason::Unlinked).await.unwrap().is_none());
        assert_eq!(store.list_since(f.now - chrono::Duration::seconds(1)).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_persons_list_shows_only_the_callers_own_ref() {
        let f = fixture().await;
        let alice = person(&f, 103).await;
        f.links.link("bank", alice, "bank-user", f.now).await.unwrap();
        f.links.link("mini-program", alice, "mini-user", f.now).await.unwrap();
        f.links.link("city-app", alice, "city-user", f.now).await.unwrap();

        let all = f.links.list_live(alice, "bank", None, 10).await.unwrap();
        assert_eq!(all.iter().map(|l| l.partner_id.as_str()).collect::<Vec<_>>(), ["city-app", "mini-program", "bank"]);
        let refs: Vec<Option<&str>> = all.iter().map(|l| l.partner_user_ref.as_deref()).collect();
        assert_eq!(refs, [None, None, Some("bank-user")]);

        let first = f.links.list_live(alice, "bank", None, 2).await.unwrap();
        let rest = f.links.list_live(alice, "bank", Some(first[1].id), 2).await.unwrap();
        assert_eq!(rest.iter().map(|l| l.partner_id.as_str()).collect::<Vec<_>>(), ["bank"]);
    }
}
