//! What the controllers and the Kubescape emulator keep so they can work from the store's change
//! feed instead of listing everything on every tick: who owns whom, and when an object with a
//! pending delay must be looked at again.
//!
//! Both are only hints about what to reconcile: the objects themselves are always read from the
//! store, and a lagging feed ends in a full resync, so a stale entry costs a lookup, never a
//! wrong write.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use tokio::time::Instant;

use crate::store::{name_of, namespace_of};

/// (namespace, name), ordered like the store lists objects.
pub type ObjectKey = (String, String);

pub fn key_of(obj: &Value) -> ObjectKey {
    (namespace_of(obj).to_string(), name_of(obj).to_string())
}

/// (uid, name) of each ownerReference of an object.
fn owner_refs(obj: &Value) -> Vec<(String, String)> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r.get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                r.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

/// Keys of the objects named in an object's ownerReferences (owners live in its namespace).
pub fn owner_keys(obj: &Value) -> Vec<ObjectKey> {
    owner_refs(obj)
        .into_iter()
        .map(|(_, name)| (namespace_of(obj).to_string(), name))
        .collect()
}

/// Children of one kind by their owners' uids (from ownerReferences, as the store holds them).
#[derive(Default)]
pub struct OwnerIndex {
    children: HashMap<String, BTreeSet<ObjectKey>>,
    owners: HashMap<ObjectKey, Vec<(String, String)>>,
}

impl OwnerIndex {
    /// Records the object's current owners (`None`: it was deleted).
    pub fn set(&mut self, key: ObjectKey, obj: Option<&Value>) {
        if let Some(old) = self.owners.remove(&key) {
            for (uid, _) in old {
                if let Some(set) = self.children.get_mut(&uid) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.children.remove(&uid);
                    }
                }
            }
        }
        let Some(obj) = obj else { return };
        let refs = owner_refs(obj);
        if refs.is_empty() {
            return;
        }
        for (uid, _) in &refs {
            self.children
                .entry(uid.clone())
                .or_default()
                .insert(key.clone());
        }
        self.owners.insert(key, refs);
    }

    /// Keys of the objects that name `owner_uid` as an owner, in (namespace, name) order.
    pub fn children_of(&self, owner_uid: &str) -> Vec<ObjectKey> {
        self.children
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Keys of the owners of `key` (owners live in the child's namespace).
    pub fn owners_of(&self, key: &ObjectKey) -> Vec<ObjectKey> {
        self.owners
            .get(key)
            .into_iter()
            .flatten()
            .map(|(_, name)| (key.0.clone(), name.clone()))
            .collect()
    }

    pub fn clear(&mut self) {
        self.children.clear();
        self.owners.clear();
    }
}

/// Things to look at again at a given instant. Firing an entry only marks it for work, so an
/// entry made stale by a later change is harmless.
pub struct Timers<T: Ord + Clone> {
    due: BTreeSet<(Instant, T)>,
}

impl<T: Ord + Clone> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            due: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Clone> Timers<T> {
    pub fn at(&mut self, when: Instant, what: T) {
        self.due.insert((when, what));
    }

    /// The earliest instant anything is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Removes and returns everything due at or before `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        while let Some((t, _)) = self.due.first() {
            if *t > now {
                break;
            }
            if let Some((_, what)) = self.due.pop_first() {
                out.push(what);
            }
        }
        out
    }

    pub fn clear(&mut self) {
        self.due.clear();
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn pod(name: &str, owner_uid: &str, owner: &str) -> Value {
        json!({"metadata": {"namespace": "ns", "name": name,
            "ownerReferences": [{"uid": owner_uid, "name": owner, "kind": "ReplicaSet"}]}})
    }

    #[test]
    fn owner_index_follows_changes_and_deletions() {
        let mut idx = OwnerIndex::default();
        idx.set(key_of(&pod("b", "u1", "rs1")), Some(&pod("b", "u1", "rs1")));
        idx.set(key_of(&pod("a", "u1", "rs1")), Some(&pod("a", "u1", "rs1")));
        assert_eq!(
            idx.children_of("u1"),
            vec![
                ("ns".to_string(), "a".to_string()),
                ("ns".to_string(), "b".to_string())
            ]
        );
        assert_eq!(
            idx.owners_of(&("ns".into(), "a".into())),
            vec![("ns".to_string(), "rs1".to_string())]
        );
        // Re-owned: moves to the new owner.
        idx.set(key_of(&pod("a", "u2", "rs2")), Some(&pod("a", "u2", "rs2")));
        assert_eq!(idx.children_of("u1"), vec![("ns".into(), "b".into())]);
        assert_eq!(idx.children_of("u2"), vec![("ns".into(), "a".into())]);
        idx.set(("ns".into(), "b".into()), None);
        assert!(idx.children_of("u1").is_empty());
        assert!(idx.owners_of(&("ns".into(), "b".into())).is_empty());
    }

    #[test]
    fn timers_fire_in_order_and_only_when_due() {
        let mut timers = Timers::default();
        let now = Instant::now();
        timers.at(now + Duration::from_secs(2), "late");
        timers.at(now, "now");
        timers.at(now + Duration::from_millis(1), "soon");
        assert_eq!(timers.next(), Some(now));
        assert_eq!(timers.take_due(now), vec!["now"]);
        assert_eq!(timers.take_due(now + Duration::from_secs(1)), vec!["soon"]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.take_due(now + Duration::from_secs(2)), vec!["late"]);
        assert!(timers.is_empty() && timers.next().is_none());
    }
}
