//! Document bytes in an object store (`object_store` crate): a local folder by default, an
//! S3-compatible bucket by configuration (`--document-store`). Keys hold ids only
//! (`documents/<owner>/<document>`), never personal data.
//!
//! Failures of the store are the dependency's, not the caller's: UNAVAILABLE /
//! DEPENDENCY_UNAVAILABLE, retryable. An object missing under a key the database names is data
//! loss: INTERNAL (logged).
//!
//! Documents are identity documents (docs/architecture.md#trust-model): every object is sealed
//! before it leaves this process, in the local folder and in S3 alike. Each document has its own
//! random AES-256-GCM key; the object is `MDOC` `01` nonce ciphertext tag, with associated data
//! binding the document id and its owner (an object copied under another document or owner does not
//! open); the key is wrapped by insurance-svc's versioned data keys (`FieldCipher`, AAD table
//! `documents`, column `wrapped_key`, the document id) and kept in the document's row, never
//! beside the object. A stolen bucket or folder is ciphertext; bytes whose row never committed
//! cannot be opened even before the sweeper deletes them. A local folder is 0700 and its files
//! 0600.

use std::{path::PathBuf, sync::Arc};

use aes_gcm::{
    Aes256Gcm, Nonce, Tag,
    aead::{AeadInPlace, KeyInit},
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use medins_common::{
    ApiError, ApiResult, Reason,
    crypto::{FieldAad, FieldCipher, random_bytes},
};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use uuid::Uuid;

/// The first bytes of a sealed object: a magic and the format version.
pub const SEALED_MAGIC: &[u8; 5] = b"MDOC\x01";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Context label of a document's associated data (part of the storage format).
const DOCUMENT_AAD_CONTEXT: &[u8] = b"medins/document/v1";

/// Where document bytes are kept.
#[derive(Clone)]
pub struct DocumentObjects {
    store: Arc<dyn ObjectStore>,
    /// The local folder, when the store is one (its files' modes are set here).
    local_root: Option<PathBuf>,
}

/// A document's bytes as stored: the sealed object and its wrapped key (for the row).
#[derive(Debug, Clone)]
pub struct Sealed {
    /// `MDOC` `01` nonce ciphertext tag.
    pub object: Vec<u8>,
    /// The document key, wrapped by the data keys.
    pub wrapped_key: Vec<u8>,
}

fn key_aad(document_id: &str) -> FieldAad<'_> {
    FieldAad { table: "documents", column: "wrapped_key", row_id: document_id }
}

fn document_aad(document_id: Uuid, owner_person_id: Uuid) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DOCUMENT_AAD_CONTEXT.len() + 80);
    for part in [DOCUMENT_AAD_CONTEXT, document_id.as_bytes(), owner_person_id.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// Seals `plaintext` as document `document_id` of `owner_person_id` under a fresh key wrapped
/// by `cipher`.
pub fn seal(cipher: &FieldCipher, document_id: Uuid, owner_person_id: Uuid, plaintext: &[u8]) -> Sealed {
    let mut key = random_bytes::<32>();
    let nonce = random_bytes::<NONCE_LEN>();
    let mut object = Vec::with_capacity(SEALED_MAGIC.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    object.extend_from_slice(SEALED_MAGIC);
    object.extend_from_slice(&nonce);
    object.extend_from_slice(plaintext);
    let start = SEALED_MAGIC.len() + NONCE_LEN;
    let tag = Aes256Gcm::new((&key).into())
        .encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            &document_aad(document_id, owner_person_id),
            &mut object[start..],
        )
        .expect("a document is far below AES-GCM's limit");
    object.extend_from_slice(&tag);
    let wrapped_key = cipher.encrypt(&key_aad(&document_id.to_string()), &key);
    key.fill(0);
    Sealed { object, wrapped_key }
}

/// Opens a sealed object of document `document_id` of `owner_person_id`. Anything that does not
/// open (another document's object or key, an altered byte, an unknown key version) is INTERNAL:
/// the store no longer holds what the row names.
pub fn open(
    cipher: &FieldCipher,
    document_id: Uuid,
    owner_person_id: Uuid,
    wrapped_key: &[u8],
    object: &[u8],
) -> ApiResult<Vec<u8>> {
    let damaged = || ApiError::internal(format_args!("document {document_id}: the stored object does not open"));
    let mut key = cipher.decrypt(&key_aad(&document_id.to_string()), wrapped_key).map_err(|_| damaged())?;
    let key_bytes: [u8; 32] = key.as_slice().try_into().map_err(|_| damaged())?;
    key.fill(0);
    let body = object.strip_prefix(SEALED_MAGIC.as_slice()).ok_or_else(damaged)?;
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(damaged());
    }
    let (nonce, rest) = body.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plaintext = ciphertext.to_vec();
    let result = Aes256Gcm::new((&key_bytes).into()).decrypt_in_place_detached(
        Nonce::from_slice(nonce),
        &document_aad(document_id, owner_person_id),
        &mut plaintext,
        Tag::from_slice(tag),
    );
    let mut key_bytes = key_bytes;
    key_bytes.fill(0);
    result.map_err(|_| damaged())?;
    Ok(plaintext)
}

impl std::fmt::Debug for DocumentObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DocumentObjects({})", self.store)
    }
}

impl DocumentObjects {
    /// The store named by `url`:
    /// - `file:///absolute/folder` (or a plain path): a local folder, created if missing; files
    ///   are written to a temporary name, synced and renamed, so a reader never sees half a
    ///   document;
    /// - `s3://bucket[/prefix]`: an S3-compatible bucket (see `DocumentObjects::s3`).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            return Self::s3(rest);
        }
        let folder = match url.strip_prefix("file://") {
            Some(path) => std::path::PathBuf::from(path),
            None if !url.contains("://") => std::path::PathBuf::from(url),
            None => anyhow::bail!("document store URL must be file:///folder or s3://bucket"),
        };
        anyhow::ensure!(!folder.as_os_str().is_empty(), "document store folder is empty");
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&folder)
                .map_err(|e| anyhow::anyhow!("creating the document folder {}: {e}", folder.display()))?;
            // An existing folder too: identity documents are for this service's user only.
            std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| anyhow::anyhow!("restricting the document folder {}: {e}", folder.display()))?;
        }
        let local = object_store::local::LocalFileSystem::new_with_prefix(&folder)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let mut objects = Self::new(Arc::new(local));
        objects.local_root = Some(folder);
        Ok(objects)
    }

    /// Wraps any object store (tests: `object_store::memory::InMemory`).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local_root: None }
    }

    /// An S3-compatible bucket, `bucket[/prefix]`. Endpoint, region and credentials come from
    /// the standard environment: `AWS_ENDPOINT` (e.g. `http://127.0.0.1:9000` for MinIO),
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for a
    /// plain-HTTP endpoint, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`.
    #[cfg(feature = "s3")]
    fn s3(bucket_and_prefix: &str) -> anyhow::Result<Self> {
        Self::s3_with(bucket_and_prefix, object_store::aws::AmazonS3Builder::from_env())
    }

    /// An S3-compatible bucket, `bucket[/prefix]`, with the client `builder` configures.
    #[cfg(feature = "s3")]
    pub fn s3_with(bucket_and_prefix: &str, builder: object_store::aws::AmazonS3Builder) -> anyhow::Result<Self> {
        let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
        anyhow::ensure!(!bucket.is_empty(), "s3:// needs a bucket name");
        let s3 = builder.with_bucket_name(bucket).build()?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)) };
        Ok(Self::new(store))
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_: &str) -> anyhow::Result<Self> {
        anyhow::bail!("s3:// document stores need insurance-svc built with the `s3` feature")
    }

    /// Stores `bytes` under `key`; in a local folder the file becomes 0600 and every folder on
    /// its way 0700 (object_store creates them with the process umask).
    pub async fn put(&self, key: &str, bytes: Bytes) -> ApiResult<()> {
        self.store.put(&path(key)?, bytes.into()).await.map(|_| ()).map_err(|e| unavailable("put", &e))?;
        if let Some(root) = &self.local_root {
            let (root, key) = (root.clone(), key.to_owned());
            let restricted =
                tokio::task::spawn_blocking(move || restrict(&root, &key)).await.map_err(ApiError::internal)?;
            restricted.map_err(|error| {
                tracing::warn!(%error, "document file modes could not be set");
                ApiError::of(Reason::DependencyUnavailable, "the document store is unavailable, retry later")
            })?;
        }
        Ok(())
    }

    /// The bytes under `key`, as the store streams them.
    pub async fn stream(&self, key: &str) -> ApiResult<BoxStream<'static, ApiResult<Bytes>>> {
        let result = self.store.get(&path(key)?).await.map_err(|e| read_error(key, &e))?;
        let key = key.to_owned();
        Ok(result.into_stream().map_err(move |e| read_error(&key, &e)).boxed())
    }

    /// All the bytes under `key`.
    pub async fn read(&self, key: &str) -> ApiResult<Bytes> {
        let result = self.store.get(&path(key)?).await.map_err(|e| read_error(key, &e))?;
        result.bytes().await.map_err(|e| read_error(key, &e))
    }

    /// Removes `key` (absent already: fine).
    pub async fn delete(&self, key: &str) -> ApiResult<()> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable("delete", &e)),
        }
    }
}

/// 0600 for the file under `root` at `key`, 0700 for each folder between.
fn restrict(root: &std::path::Path, key: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = key.split('/').collect();
    for (index, part) in parts.iter().enumerate() {
        at.push(part);
        let mode = if index + 1 == parts.len() { 0o600 } else { 0o700 };
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn path(key: &str) -> ApiResult<Path> {
    Path::parse(key).map_err(|_| ApiError::internal("invalid object key"))
}

fn unavailable(operation: &str, error: &object_store::Error) -> ApiError {
    // Object store errors name the key (ids only) and the backend; no personal data.
    tracing::warn!(operation, %error, "document store failed");
    ApiError::of(Reason::DependencyUnavailable, "the document store is unavailable, retry later")
}

fn read_error(key: &str, error: &object_store::Error) -> ApiError {
    match error {
        object_store::Error::NotFound { .. } => {
            ApiError::internal(format_args!("document bytes missing from the store at {key}"))
        }
        other => unavailable("get", other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_document_opens_only_as_itself() {
        let cipher = FieldCipher::new(&medins_common::crypto::DataKeys::generate());
        let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let plaintext = b"%PDF-1.7 household register of a person".to_vec();
        let sealed = seal(&cipher, id, owner, &plaintext);
        assert!(sealed.object.starts_with(SEALED_MAGIC));
        assert!(!sealed.object.windows(16).any(|w| plaintext.windows(16).any(|p| p == w)), "no plaintext run");
        assert_eq!(open(&cipher, id, owner, &sealed.wrapped_key, &sealed.object).unwrap(), plaintext);
        // Another document's id or owner, another key, a flipped byte: nothing opens.
        assert!(open(&cipher, Uuid::now_v7(), owner, &sealed.wrapped_key, &sealed.object).is_err());
        assert!(open(&cipher, id, Uuid::now_v7(), &sealed.wrapped_key, &sealed.object).is_err());
        let other = seal(&cipher, Uuid::now_v7(), owner, &plaintext);
        assert!(open(&cipher, id, owner, &other.wrapped_key, &sealed.object).is_err());
        let mut flipped = sealed.object.clone();
        flipped[20] ^= 1;
        assert!(open(&cipher, id, owner, &sealed.wrapped_key, &flipped).is_err());
        let stranger = FieldCipher::new(&medins_common::crypto::DataKeys::generate());
        assert!(open(&stranger, id, owner, &sealed.wrapped_key, &sealed.object).is_err());
    }

    #[tokio::test]
    async fn local_files_are_0600_in_0700_folders() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        let objects = DocumentObjects::from_url(&format!("file://{}", root.display())).unwrap();
        objects.put("documents/a/b", Bytes::from_static(b"x")).await.unwrap();
        let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(root.clone()), 0o700);
        assert_eq!(mode(root.join("documents")), 0o700);
        assert_eq!(mode(root.join("documents/a")), 0o700);
        assert_eq!(mode(root.join("documents/a/b")), 0o600);
    }

    #[tokio::test]
    async fn a_local_folder_stores_reads_streams_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let objects = DocumentObjects::from_url(&format!("file://{}", dir.path().join("docs").display())).unwrap();
        objects.put("documents/a/b", Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("docs/documents/a/b")).unwrap(), b"hello");
        assert_eq!(objects.read("documents/a/b").await.unwrap(), Bytes::from_static(b"hello"));
        let streamed: Vec<Bytes> = objects.stream("documents/a/b").await.unwrap().try_collect().await.unwrap();
        assert_eq!(streamed.concat(), b"hello");
        objects.delete("documents/a/b").await.unwrap();
        objects.delete("documents/a/b").await.unwrap();
        let missing = objects.read("documents/a/b").await.unwrap_err();
        assert_eq!(missing.reason(), Reason::Internal, "a row without bytes is data loss");
        assert!(DocumentObjects::from_url("ftp://x").is_err());
        assert!(DocumentObjects::from_url("s3://").is_err());
    }

    /// A stand-in for an S3-compatible server on 127.0.0.1: PUT, GET, HEAD and DELETE of whole
    /// objects in memory (no signature check), with the headers object_store reads, and the
    /// bulk delete (`POST /bucket?delete`) object_store sends for a delete.
    #[cfg(feature = "s3")]
    mod fake_s3 {
        use std::{
            collections::HashMap,
            convert::Infallible,
            sync::{Arc, Mutex},
        };

        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper::{Method, Request, Response, StatusCode, body::Incoming};

        pub type Objects = Arc<Mutex<HashMap<String, Bytes>>>;

        pub async fn start() -> (std::net::SocketAddr, Objects) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let objects = Objects::default();
            let served = objects.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { return };
                    let objects = served.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| handle(objects.clone(), request));
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    });
                }
            });
            (addr, objects)
        }

        async fn handle(objects: Objects, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
            let key = request.uri().path().to_owned();
            let bulk_delete = request.uri().query() == Some("delete");
            let method = request.method().clone();
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let response = |status: StatusCode, body: Bytes| {
                let etag = format!("\"{}\"", crate::domain::document::sha256_hex(&body));
                Response::builder()
                    .status(status)
                    .header("etag", etag)
                    .header("last-modified", "Mon, 23 Nov 2026 16:00:00 GMT")
                    .header("content-length", body.len())
                    .body(Full::new(body))
                    .unwrap()
            };
            let mut objects = objects.lock().unwrap();
            Ok(match method {
                Method::POST if bulk_delete => {
                    // <Delete><Object><Key>k</Key></Object>...</Delete>; keys are plain ids here.
                    let text = String::from_utf8_lossy(&body);
                    let mut deleted = String::new();
                    for part in text.split("<Key>").skip(1) {
                        let name = part.split("</Key>").next().unwrap_or_default();
                        objects.remove(&format!("{key}/{name}"));
                        deleted.push_str(&format!("<Deleted><Key>{name}</Key></Deleted>"));
                    }
                    let xml =
                        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult>{deleted}</DeleteResult>");
                    response(StatusCode::OK, Bytes::from(xml))
                }
                Method::PUT => {
                    let etag_source = body.clone();
                    objects.insert(key, body);
                    let mut ok = response(StatusCode::OK, Bytes::new());
                    let etag = format!("\"{}\"", crate::domain::document::sha256_hex(&etag_source));
                    ok.headers_mut().insert("etag", etag.parse().unwrap());
                    ok
                }
                Method::GET | Method::HEAD => match objects.get(&key) {
                    Some(bytes) if method == Method::GET => response(StatusCode::OK, bytes.clone()),
                    Some(bytes) => {
                        let mut head = response(StatusCode::OK, bytes.clone());
                        *head.body_mut() = Full::new(Bytes::new());
                        head
                    }
                    None => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(
                            b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>",
                        )))
                        .unwrap(),
                },
                Method::DELETE => {
                    objects.remove(&key);
                    response(StatusCode::NO_CONTENT, Bytes::new())
                }
                _ => response(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
            })
        }
    }

    #[cfg(feature = "s3")]
    fn s3_builder(endpoint: &str) -> object_store::aws::AmazonS3Builder {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test-access-key")
            .with_secret_access_key("test-secret-key")
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                retry_timeout: std::time::Duration::from_secs(1),
                ..Default::default()
            })
    }

    #[cfg(feature = "s3")]
    #[tokio::test]
    async fn an_s3_compatible_store_puts_gets_streams_and_deletes_under_bucket_and_prefix() {
        let (addr, served) = fake_s3::start().await;
        let objects = DocumentObjects::s3_with("medins-docs/prod", s3_builder(&format!("http://{addr}"))).unwrap();
        let bytes = Bytes::from(vec![7u8; 100_000]);
        objects.put("documents/owner/doc", bytes.clone()).await.unwrap();
        assert_eq!(
            served.lock().unwrap().keys().cloned().collect::<Vec<_>>(),
            vec!["/medins-docs/prod/documents/owner/doc".to_owned()],
            "path-style: bucket, prefix, key"
        );
        assert_eq!(objects.read("documents/owner/doc").await.unwrap(), bytes);
        let streamed: Vec<Bytes> = objects.stream("documents/owner/doc").await.unwrap().try_collect().await.unwrap();
        assert_eq!(streamed.concat(), bytes.to_vec());
        objects.delete("documents/owner/doc").await.unwrap();
        assert!(served.lock().unwrap().is_empty());
        assert_eq!(objects.read("documents/owner/doc").await.unwrap_err().reason(), Reason::Internal);
    }

    #[cfg(feature = "s3")]
    #[tokio::test]
    async fn an_unreachable_s3_store_is_unavailable() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let objects = DocumentObjects::s3_with("bucket", s3_builder(&format!("http://{closed}"))).unwrap();
        let error = objects.put("documents/a/b", Bytes::from_static(b"x")).await.unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::Unavailable, Reason::DependencyUnavailable));
    }
}
