//! Document metadata at rest. The bytes live in the object store; a row is written only after
//! every byte is stored, so a row always names a complete object.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use medins_common::{
    ApiError, ApiResult,
    db::{Db, DbConnection, retry_conflicts},
};
use uuid::Uuid;

use super::schema::documents;
use crate::domain::document::{ContentType, DocumentKind};

/// A stored document's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Document id.
    pub id: Uuid,
    /// The person the document belongs to.
    pub owner_person_id: Uuid,
    /// What it is.
    pub kind: DocumentKind,
    /// Content type sniffed from the bytes.
    pub content_type: ContentType,
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Where the bytes are in the object store.
    pub object_key: String,
    /// The partner that uploaded it (or `medins` for rendered letters).
    pub uploaded_by: String,
    /// When it was stored.
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = documents)]
struct DocumentRow {
    id: String,
    owner_person_id: String,
    kind: String,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    object_key: String,
    uploaded_by: String,
    created_at: NaiveDateTime,
}

impl TryFrom<DocumentRow> for Document {
    type Error = ApiError;

    fn try_from(row: DocumentRow) -> ApiResult<Self> {
        let bad = |what: &str| ApiError::internal(format_args!("document {}: bad {what}", row.id));
        Ok(Document {
            id: Uuid::parse_str(&row.id).map_err(|_| bad("id"))?,
            owner_person_id: Uuid::parse_str(&row.owner_person_id).map_err(|_| bad("owner_person_id"))?,
            kind: DocumentKind::parse(&row.kind).ok_or_else(|| bad("kind"))?,
            content_type: ContentType::parse(&row.content_type).ok_or_else(|| bad("content_type"))?,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            object_key: row.object_key,
            uploaded_by: row.uploaded_by,
            created_at: row.created_at,
        })
    }
}

impl From<&Document> for DocumentRow {
    fn from(document: &Document) -> Self {
        DocumentRow {
            id: document.id.to_string(),
            owner_person_id: document.owner_person_id.to_string(),
            kind: document.kind.as_str().to_owned(),
            content_type: document.content_type.as_str().to_owned(),
            size_bytes: document.size_bytes,
            sha256: document.sha256.clone(),
            object_key: document.object_key.clone(),
            uploaded_by: document.uploaded_by.clone(),
            created_at: document.created_at,
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

    /// Records a document whose bytes are already in the object store.
    pub async fn insert(&self, document: Document) -> ApiResult<Document> {
        self.db
            .write(move |conn| {
                // One autocommit statement: the shared retry runs it again after a conflict.
                retry_conflicts(|| {
                    diesel::insert_into(documents::table).values(DocumentRow::from(&document)).execute(conn)
                })?;
                Ok(document)
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
    documents::table
        .find(id.to_string())
        .select(DocumentRow::as_select())
        .first(conn)
        .optional()?
        .map(Document::try_from)
        .transpose()
}
