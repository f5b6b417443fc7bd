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

    #[cfg(feature = "s3")]
    /// An S3-compatible bucket, `bucket[/prefix]`. Endpoint, region and credentials come from
    /// the standard environment: `AWS_ENDPOINT` (e.g. `http://127.0.0.1:9000` for MinIO),
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for a
    /// plain-HTTP endpoint, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`.
    fn s3(bucket_and_prefix: &str) -> anyhow::Result<Self> {
        let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
        anyhow::ensure!(!bucket.is_empty(), "s3:// needs a bucket name");
        let s3 = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).build()?;
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
