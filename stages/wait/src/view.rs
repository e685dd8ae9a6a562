//! One shared view of the cluster for every job in flight: one watch per resource kind, kept as
//! compact tables, and a registry that wakes exactly the jobs whose objects changed.
//!
//! kube-runtime's `watcher` lists, watches, resumes from the last resourceVersion, re-lists on
//! 410 Gone and (with `default_backoff`) retries API errors; a job never talks to the API itself
//! to learn about its pod, profile or VEX.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use vexxy_kubescape::keys::kinds;
use vexxy_kubescape::names::{STORAGE_GROUP, STORAGE_VERSION};

use crate::config::WaitConfig;
use crate::summary::{self, DeploymentSummary, PodSummary, ProfileSummary, Receipt, VexSummary};

/// The label every vexxy sandbox (Deployment and pod) carries.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=vexxy";

/// What a job can wait on; the watch tasks wake the jobs registered under a changed key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchKey {
    /// Pods labelled `vexxy.io/job-id=<job>`.
    JobPods(String),
    Deployment(String),
    Profile(String),
    Vex(String),
}

/// A table of summaries that follows kube-runtime's watcher protocol: a re-list (`Init` …
/// `InitDone`) replaces the contents atomically, so objects deleted while the watch was down
/// disappear too.
#[derive(Debug)]
pub struct Table<K, V> {
    live: BTreeMap<K, V>,
    relisting: Option<BTreeMap<K, V>>,
    /// True once the first complete list arrived: absence means something only after that.
    pub synced: bool,
    /// Receipt position at which the current (re)list began: every watch event after it is a
    /// write made after the list's snapshot.
    pub list_began: Option<u64>,
    /// The last watch error, cleared by the next event; shown when a job times out.
    pub last_error: Option<String>,
}

impl<K: Ord, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            live: BTreeMap::new(),
            relisting: None,
            synced: false,
            list_began: None,
            last_error: None,
        }
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.live.get(key)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// The four tables.
#[derive(Default)]
pub struct Tables {
    /// Hands out receipt positions: one order for what all four watches deliver.
    clock: AtomicU64,
    /// Keyed by (job id, pod name).
    pub pods: RwLock<Table<(String, String), PodSummary>>,
    pub deployments: RwLock<Table<String, DeploymentSummary>>,
    pub profiles: RwLock<Table<String, ProfileSummary>>,
    pub vex: RwLock<Table<String, VexSummary>>,
}

impl Tables {
    fn next_receipt_position(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// All pods of one job.
    pub fn job_pods(&self, job_id: &str) -> Vec<PodSummary> {
        let pods = self.pods.read().expect("pods table lock");
        let start = (job_id.to_string(), String::new());
        pods.live
            .range(start..)
            .take_while(|((job, _), _)| job == job_id)
            .map(|(_, pod)| pod.clone())
            .collect()
    }
}

/// Who waits on which key. Each job has one `Notify`; `notify_one` stores a permit, so a change
/// that lands while the job is evaluating is not lost.
#[derive(Default)]
pub struct Waiters {
    by_key: Mutex<HashMap<WatchKey, HashMap<u64, Arc<Notify>>>>,
    next_token: AtomicU64,
}

impl Waiters {
    pub fn wake(&self, key: &WatchKey) {
        let by_key = self.by_key.lock().expect("waiters lock");
        if let Some(waiters) = by_key.get(key) {
            waiters.values().for_each(|n| n.notify_one());
        }
    }

    pub fn wake_all(&self) {
        let by_key = self.by_key.lock().expect("waiters lock");
        by_key
            .values()
            .flat_map(|w| w.values())
            .for_each(|n| n.notify_one());
    }

    pub fn registered_keys(&self) -> usize {
        self.by_key.lock().expect("waiters lock").len()
    }
}

/// One job's registration; unregisters on drop (also when the handler future is cancelled).
pub struct Interest {
    waiters: Arc<Waiters>,
    token: u64,
    keys: Vec<WatchKey>,
    pub notify: Arc<Notify>,
}

impl Interest {
    pub fn new(waiters: Arc<Waiters>) -> Self {
        let token = waiters.next_token.fetch_add(1, Ordering::Relaxed);
        Interest {
            waiters,
            token,
            keys: Vec::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    pub fn add(&mut self, key: WatchKey) {
        if self.keys.contains(&key) {
            return;
        }
        let mut by_key = self.waiters.by_key.lock().expect("waiters lock");
        by_key
            .entry(key.clone())
            .or_default()
            .insert(self.token, self.notify.clone());
        self.keys.push(key);
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut by_key = self.waiters.by_key.lock().expect("waiters lock");
        for key in &self.keys {
            if let Some(waiters) = by_key.get_mut(key) {
                waiters.remove(&self.token);
                if waiters.is_empty() {
                    by_key.remove(key);
                }
            }
        }
    }
}

/// The shared view: tables, waiters and the watch tasks (aborted when the view is dropped).
pub struct ClusterView {
    pub tables: Arc<Tables>,
    pub waiters: Arc<Waiters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ClusterView {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

pub fn storage_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(STORAGE_GROUP, STORAGE_VERSION, kind),
        plural,
    )
}

impl ClusterView {
    /// Starts the four watches. Must run inside a tokio runtime.
    pub fn start(client: Client, config: &WaitConfig) -> Self {
        let tables = Arc::new(Tables::default());
        let waiters = Arc::new(Waiters::default());
        let selector = watcher::Config::default().labels(MANAGED_BY_SELECTOR);

        let pods = watcher(
            Api::<Pod>::namespaced(client.clone(), &config.sandbox_namespace),
            selector.clone(),
        );
        let deployments = watcher(
            Api::<Deployment>::namespaced(client.clone(), &config.sandbox_namespace),
            selector,
        );
        // The storage group rejects namespaced watches (they stay idle) and ignores selectors.
        let profile_api = Api::<DynamicObject>::all_with(
            client.clone(),
            &storage_resource(kinds::CONTAINER_PROFILE, kinds::CONTAINER_PROFILE_PLURAL),
        );
        let vex_api = Api::<DynamicObject>::all_with(
            client,
            &storage_resource(kinds::VEX, kinds::VEX_PLURAL),
        );
        let profiles = watcher(profile_api, watcher::Config::default());
        let vex = watcher(vex_api, watcher::Config::default());

        let sandbox_ns = config.sandbox_namespace.clone();
        let kubescape_ns = config.kubescape_namespace.clone();
        let tasks = vec![
            tokio::spawn(follow(
                pods,
                tables.clone(),
                waiters.clone(),
                |t| &t.pods,
                |p, _| summary::pod(p).map(|(job, pod)| ((job, pod.name.clone()), pod)),
                |_, _| {},
                |(job, _)| WatchKey::JobPods(job.clone()),
            )),
            tokio::spawn(follow(
                deployments,
                tables.clone(),
                waiters.clone(),
                |t| &t.deployments,
                |d, _| summary::deployment(d),
                |_, _| {},
                |name| WatchKey::Deployment(name.clone()),
            )),
            tokio::spawn(follow(
                profiles,
                tables.clone(),
                waiters.clone(),
                |t| &t.profiles,
                move |o, received| summary::profile(o, &sandbox_ns, received),
                summary::carry_profile,
                |name| WatchKey::Profile(name.clone()),
            )),
            tokio::spawn(follow(
                vex,
                tables.clone(),
                waiters.clone(),
                |t| &t.vex,
                move |o, received| summary::vex(o, &kubescape_ns, received),
                summary::carry_vex,
                |name| WatchKey::Vex(name.clone()),
            )),
        ];
        ClusterView {
            tables,
            waiters,
            tasks,
        }
    }
}

/// Applies one watch stream to its table for as long as the view lives.
async fn follow<O, K, V>(
    stream: impl Stream<Item = Result<watcher::Event<O>, watcher::Error>> + Send + 'static,
    tables: Arc<Tables>,
    waiters: Arc<Waiters>,
    table: fn(&Tables) -> &RwLock<Table<K, V>>,
    summarize: impl Fn(&O, Receipt) -> Option<(K, V)> + Send + 'static,
    carry: fn(&V, &mut V),
    wake_key: fn(&K) -> WatchKey,
) where
    O: Debug + Send + 'static,
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut stream = std::pin::pin!(stream.default_backoff());
    while let Some(event) = stream.next().await {
        let table = table(&tables);
        match event {
            Ok(event) => {
                let changed = {
                    let mut table = table.write().expect("table lock");
                    table.last_error = None;
                    let position = tables.next_receipt_position();
                    apply(&mut table, event, position, Utc::now(), &summarize, carry)
                };
                match changed {
                    Changed::Key(key) => waiters.wake(&wake_key(&key)),
                    Changed::Everything => waiters.wake_all(),
                    Changed::Nothing => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "watch failed; kube-runtime retries with backoff");
                table.write().expect("table lock").last_error = Some(error.to_string());
            }
        }
    }
}

enum Changed<K> {
    Key(K),
    Everything,
    Nothing,
}

/// Applies one watcher event received at `position` and local time `at`. A version that is
/// already held (same object, same resourceVersion, e.g. seen again in a relist) keeps its
/// first receipt.
fn apply<O, K: Ord + Clone, V>(
    table: &mut Table<K, V>,
    event: watcher::Event<O>,
    position: u64,
    at: DateTime<Utc>,
    summarize: &impl Fn(&O, Receipt) -> Option<(K, V)>,
    carry: fn(&V, &mut V),
) -> Changed<K> {
    let event_receipt = Receipt {
        seq: position,
        listed: false,
        at,
    };
    match event {
        watcher::Event::Apply(object) => match summarize(&object, event_receipt) {
            Some((key, mut value)) => {
                if let Some(previous) = table.live.get(&key) {
                    carry(previous, &mut value);
                }
                table.live.insert(key.clone(), value);
                Changed::Key(key)
            }
            None => Changed::Nothing,
        },
        watcher::Event::Delete(object) => match summarize(&object, event_receipt) {
            Some((key, _)) => {
                table.live.remove(&key);
                Changed::Key(key)
            }
            None => Changed::Nothing,
        },
        watcher::Event::Init => {
            table.relisting = Some(BTreeMap::new());
            table.list_began = Some(position);
            Changed::Nothing
        }
        watcher::Event::InitApply(object) => {
            let listed = Receipt {
                seq: position,
                listed: true,
                at,
            };
            if let (Some(buffer), Some((key, mut value))) =
                (table.relisting.as_mut(), summarize(&object, listed))
            {
                if let Some(previous) = table.live.get(&key) {
                    carry(previous, &mut value);
                }
                buffer.insert(key, value);
            }
            Changed::Nothing
        }
        watcher::Event::InitDone => {
            if let Some(buffer) = table.relisting.take() {
                table.live = buffer;
            }
            table.synced = true;
            Changed::Everything
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The local receive time of receipt position `position`, in these tests.
    fn clock(position: u64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + position as i64, 0).unwrap()
    }

    fn live(seq: u64) -> Receipt {
        Receipt {
            seq,
            listed: false,
            at: clock(seq),
        }
    }

    fn listed(seq: u64) -> Receipt {
        Receipt {
            seq,
            listed: true,
            at: clock(seq),
        }
    }

    fn summarize(o: &(String, u32), _: Receipt) -> Option<(String, u32)> {
        Some(o.clone())
    }

    fn keep(_: &u32, _: &mut u32) {}

    #[test]
    fn relist_replaces_contents_and_marks_synced() {
        let mut table = Table::<String, u32>::default();
        let step = |table: &mut Table<String, u32>, event, position| {
            apply(table, event, position, clock(position), &summarize, keep);
        };
        step(&mut table, watcher::Event::Apply(("gone".into(), 1)), 0);
        assert!(!table.synced);
        step(&mut table, watcher::Event::Init, 1);
        assert_eq!(table.list_began, Some(1));
        step(&mut table, watcher::Event::InitApply(("kept".into(), 2)), 2);
        assert!(
            table.get(&"gone".to_string()).is_some(),
            "old contents stay until InitDone"
        );
        step(&mut table, watcher::Event::InitDone, 3);
        assert!(table.synced);
        assert_eq!(table.get(&"kept".to_string()), Some(&2));
        assert!(table.get(&"gone".to_string()).is_none());
        step(&mut table, watcher::Event::Delete(("kept".into(), 2)), 4);
        assert!(table.is_empty());
    }

    fn storage_object(namespace: &str, version: &str, status: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
            "kind": "Any",
            "metadata": {
                "name": "replicaset-x-app-0000-ffff",
                "namespace": namespace,
                "resourceVersion": version,
                "annotations": {"kubescape.io/status": status, "kubescape.io/completion": "complete"},
            },
        }))
        .unwrap()
    }

    fn vex_table_step(
        table: &mut Table<String, VexSummary>,
        event: watcher::Event<DynamicObject>,
        position: u64,
    ) {
        apply(
            table,
            event,
            position,
            clock(position),
            &|o: &DynamicObject, r| summary::vex(o, "kubescape", r),
            summary::carry_vex,
        );
    }

    #[test]
    fn a_relist_keeps_the_receipt_of_versions_already_held_and_marks_new_ones_listed() {
        let key = "replicaset-x-app-0000-ffff".to_string();
        let mut table = Table::<String, VexSummary>::default();
        vex_table_step(&mut table, watcher::Event::Init, 0);
        vex_table_step(&mut table, watcher::Event::InitDone, 1);
        let v7 = || storage_object("kubescape", "7", "ready");
        vex_table_step(&mut table, watcher::Event::Apply(v7()), 2);
        assert_eq!(table.get(&key).unwrap().received, live(2));

        // 410 Gone, relist: the same version keeps its live receipt.
        vex_table_step(&mut table, watcher::Event::Init, 3);
        vex_table_step(&mut table, watcher::Event::InitApply(v7()), 4);
        vex_table_step(&mut table, watcher::Event::InitDone, 5);
        assert_eq!(table.get(&key).unwrap().received, live(2));
        assert_eq!(table.list_began, Some(3));

        // A version written while the watch was down arrives in the next relist: listed.
        vex_table_step(&mut table, watcher::Event::Init, 6);
        vex_table_step(
            &mut table,
            watcher::Event::InitApply(storage_object("kubescape", "8", "ready")),
            7,
        );
        vex_table_step(&mut table, watcher::Event::InitDone, 8);
        assert_eq!(table.get(&key).unwrap().received, listed(7));

        // Objects outside kubevuln's namespace are not ours.
        vex_table_step(
            &mut table,
            watcher::Event::Apply(storage_object("other", "9", "ready")),
            9,
        );
        assert_eq!(
            table.get(&key).unwrap().resource_version.as_deref(),
            Some("8")
        );
    }

    #[test]
    fn a_profile_keeps_the_receipt_of_its_first_completed_version() {
        let key = "replicaset-x-app-0000-ffff".to_string();
        let mut table = Table::<String, ProfileSummary>::default();
        let step = profile_table_step;
        let profile = |version, status| storage_object("vexxy-sandbox", version, status);
        step(&mut table, watcher::Event::Apply(profile("1", "ready")), 1);
        assert_eq!(table.get(&key).unwrap().completed_received, None);
        step(
            &mut table,
            watcher::Event::Apply(profile("2", "completed")),
            2,
        );
        step(
            &mut table,
            watcher::Event::Apply(profile("3", "completed")),
            3,
        );
        let held = table.get(&key).unwrap();
        assert_eq!(held.received, live(3));
        assert_eq!(held.completed_received, Some(live(2)));
        // A relist of the same version changes neither receipt.
        step(&mut table, watcher::Event::Init, 4);
        step(
            &mut table,
            watcher::Event::InitApply(profile("3", "completed")),
            5,
        );
        step(&mut table, watcher::Event::InitDone, 6);
        let held = table.get(&key).unwrap();
        assert_eq!(held.received, live(3));
        assert_eq!(held.completed_received, Some(live(2)));
    }

    fn profile_table_step(
        table: &mut Table<String, ProfileSummary>,
        event: watcher::Event<DynamicObject>,
        position: u64,
    ) {
        apply(
            table,
            event,
            position,
            clock(position),
            &|o: &DynamicObject, r| summary::profile(o, "vexxy-sandbox", r),
            summary::carry_profile,
        );
    }

    #[test]
    fn a_profile_created_under_the_watch_has_a_known_history_and_keeps_its_last_ready_time() {
        let key = "replicaset-x-app-0000-ffff".to_string();
        let mut table = Table::<String, ProfileSummary>::default();
        let profile = |version, status| storage_object("vexxy-sandbox", version, status);
        profile_table_step(&mut table, watcher::Event::Init, 0);
        profile_table_step(&mut table, watcher::Event::InitDone, 1);
        profile_table_step(
            &mut table,
            watcher::Event::Apply(profile("1", "initializing")),
            2,
        );
        let held = table.get(&key).unwrap();
        assert!(held.history_from_creation);
        assert!(held.never_ready_since_creation());

        // A window shorter than node-agent's first save: straight to completed.
        profile_table_step(
            &mut table,
            watcher::Event::Apply(profile("2", "completed")),
            3,
        );
        assert!(table.get(&key).unwrap().never_ready_since_creation());

        // A longer window: each `ready` save moves the time; completion keeps the last one.
        let mut learning = Table::<String, ProfileSummary>::default();
        profile_table_step(&mut learning, watcher::Event::InitDone, 0);
        for (version, status, position) in [
            ("1", "initializing", 1),
            ("2", "ready", 2),
            ("3", "ready", 5),
            ("4", "completed", 9),
        ] {
            profile_table_step(
                &mut learning,
                watcher::Event::Apply(profile(version, status)),
                position,
            );
        }
        let held = learning.get(&key).unwrap();
        assert!(held.history_from_creation);
        assert_eq!(held.last_ready_received, Some(clock(5)));
        assert!(!held.never_ready_since_creation());
    }

    #[test]
    fn a_relist_makes_the_learning_history_unknown_for_good() {
        let key = "replicaset-x-app-0000-ffff".to_string();
        let mut table = Table::<String, ProfileSummary>::default();
        let profile = |version, status| storage_object("vexxy-sandbox", version, status);
        profile_table_step(&mut table, watcher::Event::InitDone, 0);
        profile_table_step(
            &mut table,
            watcher::Event::Apply(profile("1", "initializing")),
            1,
        );
        // 410 Gone: the relist shows the same version, but a `ready` one may have come and gone
        // if it had changed, and this table cannot tell.
        profile_table_step(&mut table, watcher::Event::Init, 2);
        profile_table_step(
            &mut table,
            watcher::Event::InitApply(profile("1", "initializing")),
            3,
        );
        profile_table_step(&mut table, watcher::Event::InitDone, 4);
        assert!(!table.get(&key).unwrap().history_from_creation);
        profile_table_step(
            &mut table,
            watcher::Event::Apply(profile("2", "completed")),
            5,
        );
        let held = table.get(&key).unwrap();
        assert!(!held.history_from_creation);
        assert!(!held.never_ready_since_creation());
        assert_eq!(held.received, live(5));

        // A profile first seen in a list (e.g. at start-up) has an unknown history too.
        let mut started = Table::<String, ProfileSummary>::default();
        profile_table_step(&mut started, watcher::Event::Init, 0);
        profile_table_step(
            &mut started,
            watcher::Event::InitApply(profile("7", "completed")),
            1,
        );
        profile_table_step(&mut started, watcher::Event::InitDone, 2);
        let held = started.get(&key).unwrap();
        assert_eq!(held.received, listed(1));
        assert!(!held.never_ready_since_creation());
    }

    #[tokio::test]
    async fn interest_wakes_once_per_change_and_unregisters_on_drop() {
        let waiters = Arc::new(Waiters::default());
        let mut interest = Interest::new(waiters.clone());
        interest.add(WatchKey::Profile("p".into()));
        interest.add(WatchKey::Profile("p".into()));
        waiters.wake(&WatchKey::Vex("other".into()));
        waiters.wake(&WatchKey::Profile("p".into()));
        // The permit stored by the wake is consumed here without blocking.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            interest.notify.notified(),
        )
        .await
        .unwrap();
        assert_eq!(waiters.registered_keys(), 1);
        drop(interest);
        assert_eq!(waiters.registered_keys(), 0);
    }
}
