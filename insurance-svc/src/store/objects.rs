//! Document bytes in an object store (`object_store` crate): a local folder by default, an
//! S3-compatible bucket by configuration (`--document-store`). Keys hold ids only
//! (`documents/<owner>/<document>`), never personal data.
//!
//! Failures of the store are the dependency's, not the caller's: UNAVAILABLE /
//! DEPENDENCY_UNAVAILABLE, retryable. An object missing under a key the database names is data
//! loss: INTERNAL (logged).

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use medins_common::{ApiError, ApiResult, Reason};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};

/// Where document bytes are kept.
#[derive(Clone)]
pub struct DocumentObjects {
    store: Arc<dyn ObjectStore>,
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
    /// - `s3://bucket[/prefix]`: an S3-compatible bucket (see [`DocumentObjects::s3`]).
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
        std::fs::create_dir_all(&folder)
            .map_err(|e| anyhow::anyhow!("creating the document folder {}: {e}", folder.display()))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(&folder)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Self::new(Arc::new(local)))
    }

    /// Wraps any object store (tests: `object_store::memory::InMemory`).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
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

    /// Stores `bytes` under `key`.
    pub async fn put(&self, key: &str, bytes: Bytes) -> ApiResult<()> {
        self.store.put(&path(key)?, bytes.into()).await.map(|_| ()).map_err(|e| unavailable("put", &e))
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

fn path(key: &str) -> ApiResult<Path> {
    Path::parse(key).map_err(|_| ApiError::internal("invalid object key"))
}

fn unavailable(operation: &str, error: &object_store::Error) -> ApiError {
    // Object store errors name the key (ids only) and the backend; no personal data.
    tracing::warn!(operation, %error, "document store failed");
    ApiError::unavailable(Reason::DependencyUnavailable, "the document store is unavailable, retry later")
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
