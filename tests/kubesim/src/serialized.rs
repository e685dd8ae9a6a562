//! The JSON bytes of stored objects that GETs served, kept while the object is unchanged.
//!
//! Every analysis's extract GETs the image's SBOMSyft and unfiltered VulnerabilityManifest, and
//! kubevuln writes those once per image: the same stored object (50 and 75 KB for the alpine
//! fixture) was serialised again for every job, the largest part of kubesim's response work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use serde_json::Value;

/// Entries kept before the cache starts over: a bound on the memory it holds (each entry keeps
/// its object alive), far above the objects a burst of analyses shares.
const MAX_ENTRIES: usize = 256;

#[derive(Default)]
pub struct SerializedObjects {
    /// Keyed by the stored object's address. The entry holds the object itself, so the address
    /// cannot be reused by another object while the entry lives; a replaced object is a new
    /// allocation (the store never changes one in place), so a hit is always the same version.
    by_address: Mutex<HashMap<usize, (Arc<Value>, Bytes)>>,
}

impl SerializedObjects {
    /// `object` serialised, from the cache when this very version was serialised before.
    pub fn bytes_of(&self, object: &Arc<Value>) -> Bytes {
        let address = Arc::as_ptr(object) as usize;
        if let Some((_, bytes)) = self.lock().get(&address) {
            return bytes.clone();
        }
        let bytes = Bytes::from(serde_json::to_vec(&**object).unwrap_or_default());
        let mut cache = self.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(address, (object.clone(), bytes.clone()));
        bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, (Arc<Value>, Bytes)>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_object_is_served_from_the_cache_and_a_new_version_is_not() {
        let cache = SerializedObjects::default();
        let first = Arc::new(json!({"metadata": {"resourceVersion": "1"}}));
        let bytes = cache.bytes_of(&first);
        assert_eq!(bytes, serde_json::to_vec(&*first).unwrap());
        assert_eq!(
            cache.bytes_of(&first).as_ptr(),
            bytes.as_ptr(),
            "served from the cache"
        );
        let second = Arc::new(json!({"metadata": {"resourceVersion": "2"}}));
        assert_eq!(
            cache.bytes_of(&second),
            serde_json::to_vec(&*second).unwrap()
        );
    }

    #[test]
    fn the_cache_starts_over_at_its_bound() {
        let cache = SerializedObjects::default();
        let objects: Vec<_> = (0..=MAX_ENTRIES)
            .map(|i| Arc::new(json!({"i": i})))
            .collect();
        for object in &objects {
            cache.bytes_of(object);
        }
        assert_eq!(cache.lock().len(), 1);
    }
}
