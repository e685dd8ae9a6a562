//! The object-store operations extract needs (the same thin wrapper enrich uses; it belongs in
//! the runtime once that exposes a store), with errors mapped to what the runtime retries.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// An object store plus the URL prefix artifacts are published under (`s3://bucket`).
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    url_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} does not exist in the object store")]
    NotFound { key: String },
    #[error("object store request for {key} failed: {source}")]
    Failed {
        key: String,
        #[source]
        source: object_store::Error,
    },
}

impl ArtifactStore {
    pub fn new(store: Arc<dyn ObjectStore>, url_prefix: impl Into<String>) -> Self {
        ArtifactStore {
            store,
            url_prefix: url_prefix.into().trim_end_matches('/').to_string(),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = Path::from(key);
        let result = self.store.get(&path).await.map_err(|e| map(key, e))?;
        result.bytes().await.map_err(|e| map(key, e))
    }

    /// Overwrites: writes are keyed deterministically, so a redelivery replaces the same object.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.store
            .put(&Path::from(key), PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| map(key, e))
    }

    pub fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.url_prefix)
    }
}

fn map(key: &str, error: object_store::Error) -> StoreError {
    match error {
        object_store::Error::NotFound { .. } => StoreError::NotFound {
            key: key.to_string(),
        },
        source => StoreError::Failed {
            key: key.to_string(),
            source,
        },
    }
}
