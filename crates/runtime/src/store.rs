//! Object storage for job artifacts: a local directory or any S3-compatible service.
//!
//! Keys are deterministic per job (`analyses/<job_id>/<name>`), so a stage that runs twice for the
//! same job (after a crash or a redelivery) overwrites its own earlier output instead of leaving
//! a second copy: every write is idempotent.
//!
//! `VEXXY_STORE` selects the backend:
//! * `file:///abs/path`: a directory (created if missing). The default for a laptop demo.
//! * `s3://bucket[/prefix]`: endpoint, region and credentials from the standard `AWS_*`
//!   variables, so the same configuration works for AWS, MinIO, Garage or s3s-fs (set
//!   `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for a plain-HTTP local server).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use vexxy_events::FailureReason;

use crate::StageError;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("VEXXY_STORE={url:?} is not valid: {problem}")]
    InvalidUrl { url: String, problem: String },
    #[error("cannot open the object store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object {url} does not exist")]
    NotFound { url: String },
    #[error("object store operation on {url} failed: {source}")]
    Operation {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot serialise the document for {url}: {source}")]
    Serialise {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl From<StoreError> for StageError {
    /// Storage trouble is transient by default: the service may come back. A missing object or
    /// a bad key is not.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Operation { .. } | StoreError::Open { .. } => StageError::Transient {
                reason: FailureReason::StorageUnavailable,
                message: format!(
                    "{error}; check that the object store is reachable and the credentials are valid"
                ),
            },
            other => StageError::Permanent {
                reason: FailureReason::Internal,
                message: other.to_string(),
                retryable: false,
            },
        }
    }
}

/// A handle to the configured object store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// `file:///abs/dir` or `s3://bucket`, without a trailing slash.
    base_url: String,
    /// Key prefix inside the bucket (from `s3://bucket/prefix`), without slashes at the ends.
    prefix: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("base_url", &self.base_url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Checks the shape of a `VEXXY_STORE` URL without opening anything.
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

enum Location {
    Directory(PathBuf),
    Bucket { bucket: String, prefix: String },
}

fn parse_url(url: &str) -> Result<Location, String> {
    if let Some(rest) = url.strip_prefix("file://") {
        // `file://./dir` is accepted as a convenience for the demo default (relative to the
        // working directory); otherwise the path must be absolute.
        let path = if let Some(relative) = rest.strip_prefix("./") {
            std::env::current_dir()
                .map_err(|e| format!("cannot resolve the working directory: {e}"))?
                .join(relative)
        } else if rest.starts_with('/') {
            PathBuf::from(rest)
        } else {
            return Err("a file store needs an absolute path: file:///var/lib/vexxy (three slashes) or file://./relative".to_string());
        };
        return Ok(Location::Directory(path));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("missing bucket name: write s3://bucket or s3://bucket/prefix".to_string());
        }
        return Ok(Location::Bucket {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    Err("expected file:///absolute/path or s3://bucket[/prefix]".to_string())
}

/// The key of artifact `name` of job `job_id`: `analyses/<job_id>/<name>`.
pub fn job_key(job_id: &str, name: &str) -> String {
    format!("analyses/{job_id}/{name}")
}

/// Installs rustls's ring crypto provider as the process default.
///
/// object_store and reqwest are built without a bundled provider (to avoid compiling aws-lc), so
/// some provider must be installed before the first HTTPS connection; calling this twice is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Store {
    /// Opens the store named by `url`, taking S3 settings from the process's `AWS_*` variables.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let options: Vec<(String, Secret)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .map(|(name, value)| (name.to_ascii_lowercase(), Secret::new(value)))
            .collect();
        Self::open(url, &options)
    }

    /// Opens the store named by `url` with explicit S3 settings (object_store config keys such
    /// as `aws_endpoint_url`, `aws_access_key_id`; unknown keys are ignored).
    pub fn open(url: &str, s3_options: &[(String, Secret)]) -> Result<Self, StoreError> {
        install_crypto_provider();
        let invalid = |problem: String| StoreError::InvalidUrl {
            url: url.to_string(),
            problem,
        };
        match parse_url(url).map_err(invalid)? {
            Location::Directory(path) => {
                std::fs::create_dir_all(&path).map_err(|e| {
                    invalid(format!(
                        "cannot create the directory {}: {e}",
                        path.display()
                    ))
                })?;
                let local =
                    LocalFileSystem::new_with_prefix(&path).map_err(|source| StoreError::Open {
                        url: url.to_string(),
                        source,
                    })?;
                let absolute = path.canonicalize().unwrap_or(path);
                Ok(Store {
                    inner: Arc::new(local),
                    base_url: format!("file://{}", absolute.display()),
                    prefix: String::new(),
                })
            }
            Location::Bucket { bucket, prefix } => {
                let mut builder = AmazonS3Builder::new();
                for (name, value) in s3_options {
                    if let Ok(key) = name.parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(key, value.expose());
                    }
                }
                let s3 = builder
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(|source| StoreError::Open {
                        url: url.to_string(),
                        source,
                    })?;
                Ok(Store {
                    inner: Arc::new(s3),
                    base_url: format!("s3://{bucket}"),
                    prefix,
                })
            }
        }
    }

    /// The URL a reader uses to find `key`: `file:///dir/key` or `s3://bucket/prefix/key`.
    pub fn url(&self, key: &str) -> String {
        format!("{}/{}", self.base_url, self.full_key(key))
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from(self.full_key(key))
    }

    /// Writes `bytes` at `key`, replacing what was there. Retried on failure (bounded).
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<String, StoreError> {
        let path = self.path(key);
        let url = self.url(key);
        (|| async {
            self.inner
                .put(&path, PutPayload::from_bytes(bytes.clone()))
                .await
        })
        .retry(retry_policy())
        .when(is_transient)
        .notify(|error, delay| {
            tracing::warn!(%url, %error, ?delay, "object store write failed; retrying");
        })
        .await
        .map_err(|source| StoreError::Operation {
            url: url.clone(),
            source,
        })?;
        Ok(url)
    }

    /// Writes `value` as pretty JSON (with a trailing newline) at `key`; returns its URL.
    pub async fn put_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<String, StoreError> {
        let mut text =
            serde_json::to_vec_pretty(value).map_err(|source| StoreError::Serialise {
                url: self.url(key),
                source,
            })?;
        text.push(b'\n');
        self.put_bytes(key, Bytes::from(text)).await
    }

    /// Reads the object at `key`.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key);
        let url = self.url(key);
        let result = (|| async { self.inner.get(&path).await?.bytes().await })
            .retry(retry_policy())
            .when(is_transient)
            .await;
        match result {
            Ok(bytes) => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound { url }),
            Err(source) => Err(StoreError::Operation { url, source }),
        }
    }

    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path(key);
        let result = (|| async { self.inner.head(&path).await })
            .retry(retry_policy())
            .when(is_transient)
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StoreError::Operation {
                url: self.url(key),
                source,
            }),
        }
    }
}

/// A few quick retries for a blip; a longer outage becomes a transient stage error and is
/// retried across deliveries by JetStream instead of blocking a worker here.
fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(4)
        .with_jitter()
}

fn is_transient(error: &object_store::Error) -> bool {
    !matches!(
        error,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("file:///var/lib/vexxy").is_ok());
        assert!(check_url("file://./.vexxy/store").is_ok());
        assert!(check_url("s3://bucket").is_ok());
        assert!(check_url("s3://bucket/some/prefix/").is_ok());
        assert!(check_url("s3://").is_err());
        assert!(check_url("file://relative").is_err());
        assert!(check_url("http://bucket").is_err());
    }

    #[test]
    fn job_keys_are_deterministic() {
        assert_eq!(job_key("j1", "vex.json"), "analyses/j1/vex.json");
    }
}
