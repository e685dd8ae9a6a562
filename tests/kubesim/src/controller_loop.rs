//! Drives the controllers from the store's change feed: a change marks the objects it affects
//! (the object, its owners, and the owners' owners), and a pass reconciles only those, in the
//! order one full reconcile would (ServiceAccounts, Deployments, ReplicaSets, pods, ReplicaSet
//! status, Deployment status, DaemonSets; each kind in (namespace, name) order). Delays (pod
//! start, image pull back-off, crash loops, progress deadlines) are timers, so an object whose
//! delay elapses is looked at again without any other change. Work per change stays constant as
//! the number of objects grows; a full resync happens only at start, when the feed lags, and when
//! the timings or failure patterns change.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::app::App;
use crate::change_feed::{ObjectKey, OwnerIndex, Timers, key_of, owner_keys};
use crate::config::Config;
use crate::controllers::{self, Memory};
use crate::resources::{self, Resource};
use crate::store::{EventType, Store, StoreEvent, name_of, namespace_of, uid_of};

/// Passes per wake-up before waiting again (the feed wakes it at once if work is left).
const MAX_PASSES: usize = 64;
/// Events taken from the feed at once before reconciling.
const MAX_DRAIN: usize = 100_000;

#[derive(Default)]
struct Dirty {
    namespaces: BTreeSet<String>,
    deployments: BTreeSet<ObjectKey>,
    replicasets: BTreeSet<ObjectKey>,
    pods: BTreeSet<ObjectKey>,
    replicaset_status: BTreeSet<ObjectKey>,
    deployment_status: BTreeSet<ObjectKey>,
    daemonsets: BTreeSet<ObjectKey>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.deployments.is_empty()
            && self.replicasets.is_empty()
            && self.pods.is_empty()
            && self.replicaset_status.is_empty()
            && self.deployment_status.is_empty()
            && self.daemonsets.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Recheck {
    Pod(ObjectKey),
    DeploymentStatus(ObjectKey),
}

pub(crate) struct Controllers {
    feed: broadcast::Receiver<Arc<StoreEvent>>,
    memory: Memory,
    dirty: Dirty,
    /// ReplicaSets by owning Deployment uid.
    replicasets: OwnerIndex,
    /// Pods by owning ReplicaSet uid.
    pods: OwnerIndex,
    timers: Timers<Recheck>,
}

fn is(resource: &Resource, other: &Resource) -> bool {
    resource == other
}

/// The objects of `resource` that `owner_uid` owns, read from the store, in (namespace, name)
/// order.
fn owned(
    store: &Store,
    index: &OwnerIndex,
    resource: &'static Resource,
    owner_uid: &str,
) -> Vec<Value> {
    index
        .children_of(owner_uid)
        .iter()
        .filter_map(|(ns, name)| store.get(resource, ns, name).ok())
        .filter(|o| controllers::is_owned_by(o, owner_uid))
        .collect()
}

impl Controllers {
    pub(crate) fn new(store: &Store) -> Self {
        let mut c = Controllers {
            feed: store.subscribe_events(),
            memory: Memory::default(),
            dirty: Dirty::default(),
            replicasets: OwnerIndex::default(),
            pods: OwnerIndex::default(),
            timers: Timers::default(),
        };
        c.resync(store);
        c
    }

    /// Marks every object for reconciling and rebuilds the owner indexes from full lists.
    fn resync(&mut self, store: &Store) {
        self.replicasets.clear();
        self.pods.clear();
        let (nss, _) = store.list(resources::namespaces(), None);
        self.dirty
            .namespaces
            .extend(nss.iter().map(|n| name_of(n).to_string()));
        let (deploys, _) = store.list(resources::deployments(), None);
        let live: BTreeSet<&str> = deploys.iter().map(uid_of).collect();
        self.memory
            .progress
            .retain(|uid, _| live.contains(uid.as_str()));
        for d in &deploys {
            self.dirty.deployments.insert(key_of(d));
            self.dirty.deployment_status.insert(key_of(d));
        }
        let (rss, _) = store.list(resources::replicasets(), None);
        for rs in &rss {
            self.replicasets.set(key_of(rs), Some(rs));
            self.dirty.replicasets.insert(key_of(rs));
            self.dirty.replicaset_status.insert(key_of(rs));
        }
        let (pods, _) = store.list(resources::pods(), None);
        let live: BTreeSet<&str> = pods.iter().map(uid_of).collect();
        self.memory
            .pods
            .retain(|uid, _| live.contains(uid.as_str()));
        for p in &pods {
            self.pods.set(key_of(p), Some(p));
            self.dirty.pods.insert(key_of(p));
        }
        let (dss, _) = store.list(resources::daemonsets(), None);
        self.dirty.daemonsets.extend(dss.iter().map(key_of));
    }

    /// Marks what one change affects.
    fn observe(&mut self, ev: &StoreEvent) {
        let obj: &Value = &ev.object;
        let deleted = ev.event_type == EventType::Deleted;
        let current = (!deleted).then_some(obj);
        let r = ev.resource;
        if is(r, resources::pods()) {
            self.pods.set(key_of(obj), current);
            for rs in owner_keys(obj) {
                for d in self.replicasets.owners_of(&rs) {
                    self.dirty.deployment_status.insert(d);
                }
                self.dirty.replicasets.insert(rs.clone());
                self.dirty.replicaset_status.insert(rs);
            }
            if deleted {
                self.memory.pods.remove(uid_of(obj));
            } else {
                self.dirty.pods.insert(key_of(obj));
            }
        } else if is(r, resources::replicasets()) {
            self.replicasets.set(key_of(obj), current);
            for d in owner_keys(obj) {
                self.dirty.deployments.insert(d.clone());
                self.dirty.deployment_status.insert(d);
            }
            if !deleted {
                self.dirty.replicasets.insert(key_of(obj));
                self.dirty.replicaset_status.insert(key_of(obj));
            }
        } else if is(r, resources::deployments()) {
            if deleted {
                self.memory.progress.remove(uid_of(obj));
            } else {
                self.dirty.deployments.insert(key_of(obj));
                self.dirty.deployment_status.insert(key_of(obj));
            }
        } else if is(r, resources::daemonsets()) {
            if !deleted {
                self.dirty.daemonsets.insert(key_of(obj));
            }
        } else if is(r, resources::namespaces()) {
            if !deleted {
                self.dirty.namespaces.insert(name_of(obj).to_string());
            }
        } else if r.group.is_empty()
            && r.plural == "serviceaccounts"
            && deleted
            && name_of(obj) == "default"
        {
            self.dirty.namespaces.insert(namespace_of(obj).to_string());
        }
    }

    /// Takes every change already in the feed.
    fn drain(&mut self, store: &Store) {
        for _ in 0..MAX_DRAIN {
            match self.feed.try_recv() {
                Ok(ev) => self.observe(&ev),
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync(store),
                Err(_) => return,
            }
        }
    }

    fn fire_due_timers(&mut self) {
        for r in self.timers.take_due(Instant::now()) {
            match r {
                Recheck::Pod(k) => self.dirty.pods.insert(k),
                Recheck::DeploymentStatus(k) => self.dirty.deployment_status.insert(k),
            };
        }
    }

    /// Reconciles until nothing is left to do (or `MAX_PASSES` passes).
    pub(crate) fn settle(&mut self, store: &Store, cfg: &Config) {
        for _ in 0..MAX_PASSES {
            self.drain(store);
            self.fire_due_timers();
            if self.dirty.is_empty() {
                return;
            }
            self.pass(store, cfg);
        }
    }

    fn pass(&mut self, store: &Store, cfg: &Config) {
        for ns in std::mem::take(&mut self.dirty.namespaces) {
            controllers::ensure_service_account(store, &ns);
        }
        self.drain(store);
        for (ns, name) in std::mem::take(&mut self.dirty.deployments) {
            if let Ok(d) = store.get(resources::deployments(), &ns, &name) {
                let rss = owned(
                    store,
                    &self.replicasets,
                    resources::replicasets(),
                    uid_of(&d),
                );
                controllers::reconcile_deployment(store, &d, &rss);
            }
        }
        self.drain(store);
        for (ns, name) in std::mem::take(&mut self.dirty.replicasets) {
            if let Ok(rs) = store.get(resources::replicasets(), &ns, &name) {
                let pods = owned(store, &self.pods, resources::pods(), uid_of(&rs));
                controllers::reconcile_replicaset(store, &rs, &pods);
            }
        }
        self.drain(store);
        for key in std::mem::take(&mut self.dirty.pods) {
            if let Ok(pod) = store.get(resources::pods(), &key.0, &key.1)
                && let Some(at) = controllers::reconcile_pod(store, cfg, &mut self.memory, &pod)
            {
                self.timers.at(at, Recheck::Pod(key));
            }
        }
        self.drain(store);
        for (ns, name) in std::mem::take(&mut self.dirty.replicaset_status) {
            if let Ok(rs) = store.get(resources::replicasets(), &ns, &name) {
                let pods = owned(store, &self.pods, resources::pods(), uid_of(&rs));
                controllers::reconcile_replicaset_status(store, &rs, &pods);
            }
        }
        self.drain(store);
        for key in std::mem::take(&mut self.dirty.deployment_status) {
            if let Ok(d) = store.get(resources::deployments(), &key.0, &key.1) {
                let rss: Vec<(Value, Vec<Value>)> = owned(
                    store,
                    &self.replicasets,
                    resources::replicasets(),
                    uid_of(&d),
                )
                .into_iter()
                .map(|rs| {
                    let pods = owned(store, &self.pods, resources::pods(), uid_of(&rs));
                    (rs, pods)
                })
                .collect();
                if let Some(at) =
                    controllers::reconcile_deployment_status(store, &mut self.memory, &d, &rss)
                {
                    self.timers.at(at, Recheck::DeploymentStatus(key));
                }
            }
        }
        self.drain(store);
        for (ns, name) in std::mem::take(&mut self.dirty.daemonsets) {
            if let Ok(ds) = store.get(resources::daemonsets(), &ns, &name) {
                controllers::reconcile_daemonset(store, &ds);
            }
        }
    }
}

pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut controllers = Controllers::new(&app.store);
    let mut config_changes = app.config_changes();
    let mut cfg = app.config();
    loop {
        controllers.settle(&app.store, &cfg);
        let next_timer = controllers.timers.next();
        tokio::select! {
            _ = crate::app::stopped(&mut shutdown) => return,
            r = controllers.feed.recv() => match r {
                Ok(ev) => controllers.observe(&ev),
                Err(broadcast::error::RecvError::Lagged(_)) => controllers.resync(&app.store),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {}
            // Objects wake this loop through the feed, delays through timers, and a
            // configuration change (install, capabilities, timings) through this.
            _ = config_changes.changed() => {}
        }
        let latest = app.config();
        if latest.timings != cfg.timings || latest.failures != cfg.failures {
            controllers.resync(&app.store);
        }
        cfg = latest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn store_with_namespace() -> Store {
        let store = Store::new(1_000_000, Duration::from_secs(300), 500_000, 1);
        store
            .create(
                resources::namespaces(),
                "",
                json!({"metadata": {"name": "default"}}),
            )
            .expect("namespace");
        store
    }

    fn deployment(name: &str, image: &str) -> Value {
        json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "progressDeadlineSeconds": 5,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": image}]},
                },
            },
        })
    }

    fn config(pod_start_delay_ms: u64) -> Config {
        let mut cfg = Config::default();
        cfg.timings.pod_start_delay_ms = pod_start_delay_ms;
        cfg
    }

    fn only_pod(store: &Store) -> Value {
        let (pods, _) = store.list(resources::pods(), None);
        assert_eq!(pods.len(), 1, "{pods:#?}");
        pods.into_iter().next().expect("one pod")
    }

    fn available(store: &Store, name: &str) -> i64 {
        store
            .get(resources::deployments(), "default", name)
            .expect("deployment")
            .pointer("/status/availableReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_starts_when_its_delay_elapses_without_any_other_change() {
        let store = store_with_namespace();
        let cfg = config(1_000);
        let mut controllers = Controllers::new(&store);
        store
            .create(
                resources::deployments(),
                "default",
                deployment("web", "nginx:1.27"),
            )
            .expect("deployment");
        controllers.settle(&store, &cfg);
        let pod = only_pod(&store);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        let quiet = store.resource_version();
        controllers.settle(&store, &cfg);
        assert_eq!(
            store.resource_version(),
            quiet,
            "nothing to write before the delay elapses"
        );

        tokio::time::advance(Duration::from_millis(1_000)).await;
        controllers.settle(&store, &cfg);
        let pod = only_pod(&store);
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(available(&store, "web"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_loop_keeps_restarting_on_its_own_timers() {
        let store = store_with_namespace();
        let mut cfg = config(100);
        cfg.failures.crashloop = vec!["crashy".into()];
        let mut controllers = Controllers::new(&store);
        store
            .create(
                resources::deployments(),
                "default",
                deployment("loop", "example.com/crashy:1"),
            )
            .expect("deployment");
        controllers.settle(&store, &cfg);
        let restarts = |store: &Store| {
            only_pod(store)["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .expect("restartCount")
        };
        tokio::time::advance(Duration::from_millis(100)).await;
        controllers.settle(&store, &cfg);
        assert_eq!(restarts(&store), 0);
        for expected in 1..=3 {
            tokio::time::advance(Duration::from_millis(200)).await;
            controllers.settle(&store, &cfg);
            assert_eq!(restarts(&store), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_progress_deadline_passes_without_any_other_change() {
        let store = store_with_namespace();
        let mut cfg = config(100);
        cfg.failures.pull_fail = vec!["missing".into()];
        let mut controllers = Controllers::new(&store);
        store
            .create(
                resources::deployments(),
                "default",
                deployment("stuck", "example.com/missing:1"),
            )
            .expect("deployment");
        let progressing = |store: &Store| {
            let d = store
                .get(resources::deployments(), "default", "stuck")
                .expect("deployment");
            d["status"]["conditions"]
                .as_array()
                .expect("conditions")
                .iter()
                .find(|c| c["type"] == "Progressing")
                .map(|c| c["reason"].as_str().unwrap_or("").to_string())
                .expect("Progressing condition")
        };
        controllers.settle(&store, &cfg);
        tokio::time::advance(Duration::from_millis(300)).await;
        controllers.settle(&store, &cfg);
        assert_eq!(progressing(&store), "ReplicaSetUpdated");
        tokio::time::advance(Duration::from_secs(5)).await;
        controllers.settle(&store, &cfg);
        assert_eq!(progressing(&store), "ProgressDeadlineExceeded");
    }

    #[tokio::test]
    async fn no_object_of_a_burst_is_missed() {
        let store = store_with_namespace();
        let cfg = config(0);
        // Created before the controllers exist: found by the first resync.
        for i in 0..50 {
            store
                .create(
                    resources::deployments(),
                    "default",
                    deployment(&format!("before-{i}"), "nginx:1.27"),
                )
                .expect("deployment");
        }
        let mut controllers = Controllers::new(&store);
        // A burst between two passes: found through the feed.
        for i in 0..200 {
            store
                .create(
                    resources::deployments(),
                    "default",
                    deployment(&format!("burst-{i}"), "nginx:1.27"),
                )
                .expect("deployment");
        }
        controllers.settle(&store, &cfg);
        let (deploys, _) = store.list(resources::deployments(), None);
        assert_eq!(deploys.len(), 250);
        for d in &deploys {
            assert_eq!(available(&store, name_of(d)), 1, "{}", name_of(d));
        }
        let (pods, _) = store.list(resources::pods(), None);
        assert_eq!(pods.len(), 250, "exactly one pod per deployment");
    }

    #[tokio::test]
    async fn a_change_lost_to_a_lagging_feed_is_found_by_the_resync() {
        let store = store_with_namespace();
        let cfg = config(0);
        let mut controllers = Controllers::new(&store);
        store
            .create(
                resources::deployments(),
                "default",
                deployment("early", "nginx:1.27"),
            )
            .expect("deployment");
        // More changes than the feed holds: the Deployment's ADDED is overwritten.
        let configmaps = resources::find("", "configmaps").expect("configmaps");
        for i in 0..66_000 {
            store
                .create(
                    configmaps,
                    "default",
                    json!({"metadata": {"name": format!("filler-{i}")}}),
                )
                .expect("configmap");
        }
        controllers.settle(&store, &cfg);
        assert_eq!(available(&store, "early"), 1);
    }
}
