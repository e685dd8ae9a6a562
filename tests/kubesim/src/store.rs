//! The one in-memory object store: every write (API, controllers, the Kubescape emulator) goes
//! through here, so resourceVersions, watches and size limits are the same for all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

use crate::errors::ApiError;
use crate::resources::{self, Resource};

/// RFC 3339 with seconds, as the apiserver writes timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as a watch sees it.
#[derive(Debug)]
pub struct StoreEvent {
    pub rv: u64,
    /// When it happened: history is kept for a time, like etcd before compaction.
    pub at: std::time::Instant,
    pub resource: &'static Resource,
    pub event_type: EventType,
    /// Shared with the store's copy (objects are never changed in place, only replaced).
    pub object: Arc<Value>,
}

type Key = (String, String);

struct Inner {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Arc<StoreEvent>>,
    /// Owner uid -> the objects naming it in their ownerReferences, as (position of their
    /// resource in the table, key): the garbage collector's view, so a cascading delete does not
    /// scan every object.
    dependents: HashMap<String, BTreeSet<(usize, Key)>>,
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("uid").and_then(Value::as_str))
}

impl Inner {
    /// Moves `key` in the dependents index from the owners of `old` to those of `new`.
    fn reindex(&mut self, r: &Resource, key: &Key, old: Option<&Value>, new: Option<&Value>) {
        let entry = (res_index(r), key.clone());
        for uid in old.into_iter().flat_map(owner_uids) {
            if let Some(set) = self.dependents.get_mut(uid) {
                set.remove(&entry);
                if set.is_empty() {
                    self.dependents.remove(uid);
                }
            }
        }
        for uid in new.into_iter().flat_map(owner_uids) {
            self.dependents
                .entry(uid.to_string())
                .or_default()
                .insert(entry.clone());
        }
    }
}

/// History after a resourceVersion, and the live feed from then on.
pub type WatchStart = (Vec<Arc<StoreEvent>>, broadcast::Receiver<Arc<StoreEvent>>);

/// Deletion propagation, from `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Cascade,
    Orphan,
}

pub struct Store {
    inner: Mutex<Inner>,
    history_cap: usize,
    history_retention: std::time::Duration,
    /// Size cap for OpenVulnerabilityExchangeContainer writes (the storage queue manager's).
    pub max_vex_bytes: usize,
    events: broadcast::Sender<Arc<StoreEvent>>,
    changed: watch::Sender<u64>,
    names: Mutex<crate::rng::Rng>,
}

fn res_index(r: &Resource) -> usize {
    resources::RESOURCES
        .iter()
        .position(|x| x.group == r.group && x.plural == r.plural)
        .expect("resource is in the table")
}

fn res_key(r: &Resource) -> &'static str {
    // Plural + group is unique; a static string keeps the map cheap.
    resources::RESOURCES
        .iter()
        .find(|x| x.group == r.group && x.plural == r.plural)
        .map(|x| x.plural)
        .expect("resource is in the table")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}
pub fn namespace_of(obj: &Value) -> &str {
    meta_str(obj, "namespace").unwrap_or("")
}
pub fn uid_of(obj: &Value) -> &str {
    meta_str(obj, "uid").unwrap_or("")
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The size of `obj` as compact JSON (what the storage server measures), without building it.
fn serialized_len(obj: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, obj).map_or(0, |()| count.0)
}

impl Store {
    /// History keeps the events of the last `history_retention`, at most `history_cap` of them.
    pub fn new(
        history_cap: usize,
        history_retention: std::time::Duration,
        max_vex_bytes: usize,
        seed: u64,
    ) -> Self {
        let (events, _) = broadcast::channel(65536);
        let (changed, _) = watch::channel(0);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                dependents: HashMap::new(),
            }),
            history_cap: history_cap.max(1),
            history_retention,
            max_vex_bytes,
            events,
            changed,
            names: Mutex::new(crate::rng::Rng::new(seed ^ 0x6b75_6265)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current resourceVersion (of the whole store).
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Every change from now on, in resourceVersion order (what the controllers and the Kubescape
    /// emulator work from).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.events.subscribe()
    }

    /// A receiver that changes whenever anything is written.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Five characters from the apiserver's "safe" alphabet, for generateName and pod names.
    pub fn random_suffix(&self) -> String {
        let mut rng = self.names.lock().unwrap_or_else(|p| p.into_inner());
        (0..5)
            .map(|_| {
                crate::rng::SAFE_ALPHABET
                    [rng.below(crate::rng::SAFE_ALPHABET.len() as u64) as usize]
                    as char
            })
            .collect()
    }

    fn record(
        &self,
        inner: &mut Inner,
        resource: &'static Resource,
        event_type: EventType,
        object: Arc<Value>,
    ) {
        let now = std::time::Instant::now();
        let ev = Arc::new(StoreEvent {
            rv: inner.rv,
            at: now,
            resource,
            event_type,
            object,
        });
        inner.history.push_back(ev.clone());
        while inner.history.len() > self.history_cap
            || inner
                .history
                .front()
                .is_some_and(|oldest| now.duration_since(oldest.at) > self.history_retention)
        {
            inner.history.pop_front();
        }
        let _ = self.events.send(ev);
        self.changed.send_replace(inner.rv);
    }

    fn check_namespace(inner: &Inner, resource: &Resource, ns: &str) -> Result<(), ApiError> {
        if !resource.namespaced {
            return Ok(());
        }
        let exists = inner
            .objects
            .get("namespaces")
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())));
        if exists {
            Ok(())
        } else {
            Err(ApiError::namespace_not_found(ns))
        }
    }

    fn check_size(&self, resource: &Resource, obj: &Value) -> Result<(), ApiError> {
        if resource.is_kubescape_storage()
            && resource.plural == "openvulnerabilityexchangecontainers"
        {
            let size = serialized_len(obj);
            if size > self.max_vex_bytes {
                return Err(ApiError::too_large(format!(
                    "{} \"{}\" is {size} bytes, more than the storage queue limit of {} bytes for openvulnerabilityexchangecontainers",
                    resource.qualified(),
                    name_of(obj),
                    self.max_vex_bytes
                )));
            }
        }
        Ok(())
    }

    pub fn get(
        &self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_shared(resource, ns, name)
            .map(|shared| Value::clone(&shared))
    }

    /// Like [`Store::get`], but the stored object itself (shared, never changed in place), for
    /// a reader that only serialises it.
    pub fn get_shared(
        &self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let inner = self.lock();
        let ns = if resource.namespaced { ns } else { "" };
        inner
            .objects
            .get(res_key(resource))
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))
    }

    /// All objects of a type (optionally one namespace), ordered by (namespace, name), and the
    /// store's resourceVersion at that instant.
    pub fn list(&self, resource: &'static Resource, ns: Option<&str>) -> (Vec<Value>, u64) {
        self.list_map(resource, ns, |v| Some(v.clone()))
    }

    /// Like [`Store::list`], but only what `keep` makes of each object (None: skipped), so a
    /// filtered or trimmed list does not copy every object first.
    pub fn list_map<T>(
        &self,
        resource: &'static Resource,
        ns: Option<&str>,
        mut keep: impl FnMut(&Value) -> Option<T>,
    ) -> (Vec<T>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(res_key(resource))
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| !resource.namespaced || n == want))
                    .filter_map(|(_, v)| keep(v))
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Creates an object; `ns` is the request namespace ("" for cluster-scoped).
    pub fn create(
        &self,
        resource: &'static Resource,
        ns: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let api_version = resource.api_version();
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if k != resource.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind of the object ({k}) does not match the kind of the resource ({})",
                    resource.kind
                )));
            }
            _ => {}
        }
        obj["kind"] = json!(resource.kind);
        obj["apiVersion"] = json!(api_version);
        {
            let meta = metadata_mut(&mut obj);
            if resource.namespaced {
                match meta.get("namespace").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() && n != ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    _ => {}
                }
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            let has_name = meta
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !has_name {
                match meta.get("generateName").and_then(Value::as_str) {
                    Some(prefix) if !prefix.is_empty() => {
                        let name = format!("{prefix}{}", self.random_suffix());
                        meta.insert("name".into(), json!(name));
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            resource.kind,
                            "",
                            "metadata.name: Required value: name or generateName is required",
                        ));
                    }
                }
            }
        }
        let name = name_of(&obj).to_string();
        if !is_dns_name(&name) {
            return Err(ApiError::invalid(
                resource.kind,
                &name,
                format!(
                    "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        let mut inner = self.lock();
        let key_ns = if resource.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        Self::check_namespace(&inner, resource, ns)?;
        if inner
            .objects
            .get(res_key(resource))
            .is_some_and(|m| m.contains_key(&(key_ns.clone(), name.clone())))
        {
            return Err(ApiError::already_exists(
                resource.group,
                resource.plural,
                &name,
            ));
        }
        if resource.is_kubescape_storage()
            && resource.plural == "containerprofiles"
            && crate::kubescape::consolidation::is_time_series(&obj)
        {
            // Storage's `PreSave` for node-agent's per-save profiles.
            let (consolidated, _) = crate::kubescape::consolidation::split_profile_name(&name);
            let existing = inner
                .objects
                .get(res_key(resource))
                .and_then(|m| m.get(&(key_ns.clone(), consolidated.to_string())));
            crate::kubescape::consolidation::check_time_series_create(
                &obj,
                existing.map(|e| e.as_ref()),
            )?;
        }
        inner.rv += 1;
        let rv = inner.rv;
        {
            let has_spec = obj.get("spec").is_some();
            let meta = metadata_mut(&mut obj);
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            meta.remove("deletionTimestamp");
            if has_spec {
                meta.insert("generation".into(), json!(1));
            }
        }
        if resource.plural == "namespaces" {
            obj["status"] = json!({"phase": "Active"});
            if obj.get("spec").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            let labels = metadata_mut(&mut obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        if let Err(e) = self.check_size(resource, &obj) {
            inner.rv -= 1;
            return Err(e);
        }
        let stored = Arc::new(obj);
        let key = (key_ns, name);
        inner.reindex(resource, &key, None, Some(&stored));
        inner
            .objects
            .entry(res_key(resource))
            .or_default()
            .insert(key, stored.clone());
        self.record(&mut inner, resource, EventType::Added, stored.clone());
        Ok(stored)
    }

    /// Replaces an object (PUT). With `status_only`, only `.status` is taken from `obj`; otherwise
    /// `.status` of a resource with a status subresource is kept.
    pub fn update(
        &self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
        obj: Value,
        status_only: bool,
    ) -> Result<Arc<Value>, ApiError> {
        self.update_with(resource, ns, name, status_only, |_| Ok(obj))
    }

    /// Reads the current object, lets `f` produce the new one, and stores it with PUT semantics
    /// (a resourceVersion in the result that differs from the current one is a Conflict).
    pub fn update_with(
        &self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
        status_only: bool,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let key_ns = if resource.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        let key = (key_ns, name.to_string());
        let mut inner = self.lock();
        let current_shared: Arc<Value> = inner
            .objects
            .get(res_key(resource))
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))?;
        let current: &Value = &current_shared;
        let mut new = f(current)?;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(k) = new.get("kind").and_then(Value::as_str)
            && k != resource.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match the kind of the resource ({})",
                resource.kind
            )));
        }
        if let Some(n) = meta_str(&new, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let current_rv = meta_str(current, "resourceVersion")
            .unwrap_or("")
            .to_string();
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && !rv.is_empty()
            && rv != current_rv
        {
            return Err(ApiError::conflict(resource.group, resource.plural, name));
        }
        let mut result = if status_only {
            let mut r = current.clone();
            r["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if r["status"].is_null() {
                r.as_object_mut().expect("object").remove("status");
            }
            r
        } else {
            if resource.has_status {
                match current.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            new
        };
        result["kind"] = json!(resource.kind);
        result["apiVersion"] = json!(resource.api_version());
        let spec_changed = current.get("spec") != result.get("spec");
        if result == *current {
            // A no-op write does not bump the resourceVersion, like the real apiserver.
            return Ok(current_shared);
        }
        inner.rv += 1;
        let rv = inner.rv;
        {
            let cur_meta = current.get("metadata").cloned().unwrap_or(json!({}));
            let meta = metadata_mut(&mut result);
            for keep in ["uid", "creationTimestamp", "namespace", "name"] {
                match cur_meta.get(keep) {
                    Some(v) => {
                        meta.insert(keep.into(), v.clone());
                    }
                    None => {
                        meta.remove(keep);
                    }
                }
            }
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            let generation = cur_meta.get("generation").and_then(Value::as_i64);
            match generation {
                Some(g) => {
                    meta.insert(
                        "generation".into(),
                        json!(if spec_changed { g + 1 } else { g }),
                    );
                }
                None if spec_changed => {
                    meta.insert("generation".into(), json!(1));
                }
                None => {}
            }
        }
        if let Err(e) = self.check_size(resource, &result) {
            inner.rv -= 1;
            return Err(e);
        }
        let stored = Arc::new(result);
        inner.reindex(resource, &key, Some(current), Some(&stored));
        inner
            .objects
            .entry(res_key(resource))
            .or_default()
            .insert(key, stored.clone());
        self.record(&mut inner, resource, EventType::Modified, stored.clone());
        Ok(stored)
    }

    /// Creates the object or replaces the existing one (no resourceVersion check): how the
    /// emulated Kubescape components write.
    pub fn upsert(
        &self,
        resource: &'static Resource,
        ns: &str,
        obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let name = name_of(&obj).to_string();
        let key = (
            if resource.namespaced { ns } else { "" }.to_string(),
            name.clone(),
        );
        let exists = self
            .lock()
            .objects
            .get(res_key(resource))
            .is_some_and(|m| m.contains_key(&key));
        if exists {
            self.update_with(resource, ns, &name, false, move |_| {
                let mut o = obj;
                metadata_mut(&mut o).remove("resourceVersion");
                Ok(o)
            })
        } else {
            self.create(resource, ns, obj)
        }
    }

    /// Deletes an object, then (unless orphaning) everything it owns, and for a namespace every
    /// object in it. Returns the deleted object.
    pub fn delete(
        &self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<Arc<Value>, ApiError> {
        let key_ns = if resource.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        let mut inner = self.lock();
        let key = (key_ns, name.to_string());
        let removed = inner
            .objects
            .get_mut(res_key(resource))
            .and_then(|m| m.remove(&key))
            .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))?;
        inner.reindex(resource, &key, Some(&removed), None);
        inner.rv += 1;
        let removed_uid = uid_of(&removed).to_string();
        let mut deleted = Arc::unwrap_or_clone(removed);
        metadata_mut(&mut deleted).insert("resourceVersion".into(), json!(inner.rv.to_string()));
        let deleted = Arc::new(deleted);
        self.record(&mut inner, resource, EventType::Deleted, deleted.clone());
        if resource.plural == "namespaces" && resource.group.is_empty() {
            self.delete_namespace_contents(&mut inner, name);
        }
        if propagation == Propagation::Cascade {
            self.delete_dependents(&mut inner, removed_uid);
        }
        Ok(deleted)
    }

    fn remove_where(
        &self,
        inner: &mut Inner,
        pred: impl Fn(&Resource, &Value) -> bool,
    ) -> Vec<String> {
        let mut targets = Vec::new();
        for (pos, r) in resources::RESOURCES.iter().enumerate() {
            let Some(map) = inner.objects.get(res_key(r)) else {
                continue;
            };
            targets.extend(
                map.iter()
                    .filter(|(_, v)| pred(r, v))
                    .map(|(k, _)| (pos, k.clone())),
            );
        }
        self.remove_keys(inner, targets)
    }

    /// Removes the objects (in the order given) and records their DELETED events; returns the
    /// uids of those removed.
    fn remove_keys(&self, inner: &mut Inner, targets: Vec<(usize, Key)>) -> Vec<String> {
        let mut removed = Vec::new();
        for (pos, k) in targets {
            let r = &resources::RESOURCES[pos];
            if let Some(v) = inner
                .objects
                .get_mut(res_key(r))
                .and_then(|map| map.remove(&k))
            {
                inner.reindex(r, &k, Some(&v), None);
                removed.push((r, v));
            }
        }
        removed
            .into_iter()
            .map(|(r, v)| {
                inner.rv += 1;
                let uid = uid_of(&v).to_string();
                let mut deleted = Arc::unwrap_or_clone(v);
                metadata_mut(&mut deleted)
                    .insert("resourceVersion".into(), json!(inner.rv.to_string()));
                self.record(inner, r, EventType::Deleted, Arc::new(deleted));
                uid
            })
            .collect()
    }

    fn delete_namespace_contents(&self, inner: &mut Inner, ns: &str) {
        let removed = self.remove_where(inner, |r, v| r.namespaced && namespace_of(v) == ns);
        drop(removed);
    }

    fn delete_dependents(&self, inner: &mut Inner, owner_uid: String) {
        let mut queue = vec![owner_uid];
        let mut rounds = 0;
        while let Some(uid) = queue.pop() {
            rounds += 1;
            if rounds > 100_000 {
                break;
            }
            // In table order, then (namespace, name): the order a scan of every object found them.
            let targets: Vec<(usize, Key)> = inner
                .dependents
                .get(&uid)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default();
            let removed = self.remove_keys(inner, targets);
            queue.extend(removed);
        }
    }

    /// Deletes every object of the group (used when Kubescape is uninstalled).
    pub fn delete_group(&self, group: &str) {
        let mut inner = self.lock();
        self.remove_where(&mut inner, |r, _| r.group == group);
    }

    /// Events after `rv` from the history (or none, when `rv` is None) and a live receiver.
    /// Err(Gone) when events after `rv` have already been dropped from the history.
    pub fn watch_from(&self, rv: Option<u64>) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let rx = self.events.subscribe();
        let Some(rv) = rv else {
            return Ok((Vec::new(), rx));
        };
        if rv >= inner.rv {
            return Ok((Vec::new(), rx));
        }
        let oldest = inner.history.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
        if oldest > rv + 1 {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                oldest - 1
            )));
        }
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.rv > rv)
            .cloned()
            .collect();
        Ok((backlog, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let s = Store::new(1_000, std::time::Duration::from_secs(300), 500_000, 1);
        s.create(
            resources::namespaces(),
            "",
            json!({"metadata": {"name": "ns"}}),
        )
        .expect("namespace");
        s
    }

    fn owned(name: &str, owner_uid: &str) -> Value {
        json!({"metadata": {"name": name, "ownerReferences": [{"uid": owner_uid, "name": "x", "kind": "ReplicaSet", "apiVersion": "apps/v1"}]}})
    }

    fn names(s: &Store, r: &'static Resource) -> Vec<String> {
        s.list(r, None)
            .0
            .iter()
            .map(|o| name_of(o).to_string())
            .collect()
    }

    #[test]
    fn a_cascading_delete_follows_owner_references_as_they_are_now() {
        let s = store();
        let cms = resources::find("", "configmaps").expect("configmaps");
        let owner = s
            .create(cms, "ns", json!({"metadata": {"name": "owner"}}))
            .expect("owner");
        let other = s
            .create(cms, "ns", json!({"metadata": {"name": "other"}}))
            .expect("other");
        let child = s
            .create(resources::pods(), "ns", owned("child", uid_of(&owner)))
            .expect("child");
        s.create(resources::pods(), "ns", owned("grandchild", uid_of(&child)))
            .expect("grandchild");
        s.create(resources::pods(), "ns", owned("moved", uid_of(&owner)))
            .expect("moved");
        // Re-owned after creation: no longer goes with `owner`.
        s.update_with(resources::pods(), "ns", "moved", false, |cur| {
            let mut c = cur.clone();
            c["metadata"]["ownerReferences"][0]["uid"] = json!(uid_of(&other));
            Ok(c)
        })
        .expect("re-owned");
        let before = s.resource_version();
        s.delete(cms, "ns", "owner", Propagation::Cascade)
            .expect("deleted");
        assert_eq!(names(&s, resources::pods()), vec!["moved"]);
        assert_eq!(s.resource_version(), before + 3, "owner, child, grandchild");
        s.delete(cms, "ns", "other", Propagation::Orphan)
            .expect("deleted");
        assert_eq!(names(&s, resources::pods()), vec!["moved"], "orphaned");
    }
}
