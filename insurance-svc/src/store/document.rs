//! Document metadata at rest. The bytes live in the object store, encrypted; a row is written
//! only after every byte is stored, so a row always names a complete object. Before the bytes
//! are written an intent names their key; the row's insert removes it in the same transaction,
//! so an intent that outlives the upload names bytes without a row, which the sweeper deletes.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::db::DbUuid;
use medins_common::{
    ApiResult,
    db::{Db, DbConnection, write_transaction},
};
use uuid::Uuid;

use super::schema::{document_object_intents, documents};
use crate::domain::{
    document::{ContentType, Document, DocumentKind},
    family::Relationship,
};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = documents)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct DocumentRow {
    id: DbUuid,
    owner_person_id: DbUuid,
    kind: DocumentKind,
    content_type: ContentType,
    size_bytes: i64,
    sha256: String,
    object_key: String,
    uploaded_by: String,
    created_at: NaiveDateTime,
    subject_person_id: Option<DbUuid>,
    relationship: Option<Relationship>,
    uploaded_by_person_id: Option<DbUuid>,
    wrapped_key: Option<Vec<u8>>,
}

impl From<DocumentRow> for Document {
    fn from(row: DocumentRow) -> Self {
        Document {
            id: row.id.into(),
            owner_person_id: row.owner_person_id.into(),
            kind: row.kind,
            content_type: row.content_type,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            object_key: row.object_key,
            uploaded_by: row.uploaded_by,
            created_at: row.created_at,
            subject_person_id: row.subject_person_id.map(Uuid::from),
            relationship: row.relationship,
            uploaded_by_person_id: row.uploaded_by_person_id.map(Uuid::from),
            wrapped_key: row.wrapped_key,
        }
    }
}

impl From<&Document> for DocumentRow {
    fn from(document: &Document) -> Self {
        DocumentRow {
            id: document.id.into(),
            owner_person_id: document.owner_person_id.into(),
            kind: document.kind,
            content_type: document.content_type,
            size_bytes: document.size_bytes,
            sha256: document.sha256.clone(),
            object_key: document.object_key.clone(),
            uploaded_by: document.uploaded_by.clone(),
            created_at: document.created_at,
            subject_person_id: document.subject_person_id.map(DbUuid),
            relationship: document.relationship,
            uploaded_by_person_id: document.uploaded_by_person_id.map(DbUuid),
            wrapped_key: document.wrapped_key.clone(),
        }
    }
}

/// The documents table.
#[derive(Clone, Debug)]
pub struct DocumentStore {
    db: Db,
}

impl DocumentStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records that bytes are about to be written under `object_key` (before the write).
    pub async fn record_intent(&self, object_key: String, now: NaiveDateTime) -> ApiResult<()> {
        self.db
            .write(move |conn| {
                diesel::insert_into(document_object_intents::table)
                    .values((
                        document_object_intents::object_key.eq(object_key),
                        document_object_intents::created_at.eq(now),
                    ))
                    .execute(conn)?;
                Ok(())
            })
            .await
    }

    /// Records a document whose bytes are already in the object store, and removes their
    /// intent in the same transaction.
    pub async fn insert(&self, document: Document) -> ApiResult<Document> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    diesel::insert_into(documents::table).values(DocumentRow::from(&document)).execute(conn)?;
                    diesel::delete(document_object_intents::table.find(&document.object_key)).execute(conn)?;
                    Ok(document.clone())
                })
            })
            .await
    }

    /// Object keys of intents recorded before `before` (at most `limit`): bytes whose row never
    /// committed, unless a row names them after all (then only the intent is stale).
    pub async fn stale_intents(&self, before: NaiveDateTime, limit: i64) -> ApiResult<Vec<(String, bool)>> {
        self.db
            .read(move |conn| {
                let keys: Vec<String> = document_object_intents::table
                    .filter(document_object_intents::created_at.lt(before))
                    .order(document_object_intents::created_at.asc())
                    .limit(limit)
                    .select(document_object_intents::object_key)
                    .load(conn)?;
                let named: Vec<String> = documents::table
                    .filter(documents::object_key.eq_any(&keys))
                    .select(documents::object_key)
                    .load(conn)?;
                Ok(keys
                    .into_iter()
                    .map(|key| {
                        let has_row = named.contains(&key);
                        (key, has_row)
                    })
                    .collect())
            })
            .await
    }

    /// Documents whose bytes are still in clear (stored before documents were sealed), oldest
    /// first.
    pub async fn unsealed(&self, limit: i64) -> ApiResult<Vec<Document>> {
        self.db
            .read(move |conn| {
                Ok(documents::table
                    .filter(documents::wrapped_key.is_null())
                    .order(documents::created_at.asc())
                    .limit(limit)
                    .select(DocumentRow::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(Document::from)
                    .collect())
            })
            .await
    }

    /// Points a document still in clear at its sealed object (compare-and-set on the old key
    /// and the missing wrapped key) and removes the sealed object's intent, in one transaction.
    /// `false` if another replica sealed it first.
    pub async fn mark_sealed(
        &self,
        id: Uuid,
        old_key: String,
        new_key: String,
        wrapped_key: Vec<u8>,
    ) -> ApiResult<bool> {
        self.db
            .write(move |conn| {
                write_transaction(conn, |conn| {
                    let updated = diesel::update(
                        documents::table
                            .find(DbUuid(id))
                            .filter(documents::object_key.eq(&old_key))
                            .filter(documents::wrapped_key.is_null()),
                    )
                    .set((documents::object_key.eq(&new_key), documents::wrapped_key.eq(&wrapped_key)))
                    .execute(conn)?;
                    if updated == 1 {
                        diesel::delete(document_object_intents::table.find(&new_key)).execute(conn)?;
                    }
                    Ok(updated == 1)
                })
            })
            .await
    }

    /// Forgets an intent (its bytes were deleted, or a row names them).
    pub async fn forget_intent(&self, object_key: String) -> ApiResult<()> {
        self.db
            .write(move |conn| {
                diesel::delete(document_object_intents::table.find(object_key)).execute(conn)?;
                Ok(())
            })
            .await
    }

    /// A document by id.
    pub async fn find(&self, id: Uuid) -> ApiResult<Option<Document>> {
        self.db.read(move |conn| find_in(conn, id)).await
    }
}

/// A document by id, inside a caller's transaction.
pub fn find_in(conn: &mut DbConnection, id: Uuid) -> ApiResult<Option<Document>> {
    Ok(documents::table.find(DbUuid(id)).select(DocumentRow::as_select()).first(conn).optional()?.map(Document::from))
}
