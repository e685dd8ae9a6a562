//! One shared view of the cluster for every job in flight: one watch per resource kind, kept as
//! compact tables, and a registry that wakes exactly the jobs whose objects changed.
//!
//! Pods and Deployments: kube-runtime's `watcher` lists, watches, resumes from the last
//! resourceVersion, re-lists on 410 Gone and (with `default_backoff`) retries API errors.
//!
//! ContainerProfiles and VEX documents live in Kubescape's storage server, whose LIST carries no
//! resourceVersion (kube-runtime's watcher then fails with `NoResourceVersion` on every retry)
//! and whose watch has no initial events, no replay, no bookmarks and no 410: it streams the
//! writes made while it is open, and an object written while it is being re-opened is seen only
//! by a read. So for these two kinds the cluster-wide watch is re-opened whenever it ends (with
//! backoff after errors) and followed by one LIST of the namespace with
//! `resourceVersion=metadata` (metadata only, past storage's request queue); from then on the
//! table holds every write. When that LIST fails or a watch is down, each job GETs its own
//! profile and VEX instead ([`ClusterView::read_storage`], [`StorageCoverage`]). A read's answer
//! never overwrites what the watch delivered for that object after the read was sent; a version
//! only a read found counts as listed (order unknown) until the watch delivers it too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    ApiResource, DynamicObject, GetParams, GroupVersionKind, ListParams, WatchEvent, WatchParams,
};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use vexxy_kubescape::keys::kinds;
use vexxy_kubescape::names::{STORAGE_GROUP, STORAGE_VERSION};

use crate::config::WaitConfig;
use crate::summary::{
    self, DeploymentSummary, PodSummary, ProfileSummary, Receipt, StorageSummary, VexSummary,
};

/// The label every vexxy sandbox (Deployment and pod) carries.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=vexxy";

/// How long one GET of a storage object may take before the job treats it as failed.
pub const STORAGE_GET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a delete the storage watch delivered is remembered, so that a GET sent before it
/// cannot bring the object back: longer than any GET may take.
const DELETE_MEMORY: Duration = Duration::from_secs(60);
/// Shortest time between two openings of a storage watch that the server ended normally.
const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// GETs of storage objects in flight at once, for all jobs: a re-opened watch wakes every job
/// and each reads its objects again.
const CONCURRENT_STORAGE_GETS: usize = 32;

/// What a job can wait on; the watch tasks wake the jobs registered under a changed key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchKey {
    /// Pods labelled `vexxy.io/job-id=<job>`.
    JobPods(String),
    Deployment(String),
    Profile(String),
    Vex(String),
}

/// A table of summaries. Pods and Deployments follow kube-runtime's watcher protocol: a re-list
/// (`Init` … `InitDone`) replaces the contents atomically, so objects deleted while the watch was
/// down disappear too. Storage tables hold what the hint watch delivered and the jobs' GETs
/// found.
#[derive(Debug)]
pub struct Table<K, V> {
    live: BTreeMap<K, V>,
    relisting: Option<BTreeMap<K, V>>,
    /// Pods and Deployments: true once the first complete list arrived (absence means something
    /// only after that). Storage: true once the watch has opened (its events are hints; what a
    /// job concludes from rests on its own reads, see [`ClusterView::read_storage`]).
    pub synced: bool,
    /// Receipt position at which the current watch began (the start of kube-runtime's current
    /// list; when the storage watch's current request was sent): every watch event after it is
    /// a write made after that position.
    pub watch_began: Option<u64>,
    /// The last watch error, cleared by the next event; shown when a job times out.
    pub last_error: Option<String>,
    /// Storage: deletes the watch delivered in the last [`DELETE_MEMORY`] (position, local time,
    /// key), oldest first.
    recent_deletes: VecDeque<(u64, DateTime<Utc>, K)>,
    /// Storage: whether the table holds every write of its kind (see [`StorageCoverage`]).
    pub coverage: KindCoverage,
}

/// Whether a storage table can be trusted without a job's own read. The watch streams every
/// write made while it is open (storage's watcher applies back-pressure, it never drops), so the
/// table is complete while the watch stays open if a LIST answered after it opened, and for one
/// job if that job's own read was sent after it opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCoverage {
    /// Increases whenever the watch opens or ends.
    pub epoch: u64,
    pub open: bool,
    /// A LIST of the namespace was applied since the watch opened.
    pub listed: bool,
}

impl KindCoverage {
    /// Whether a job whose last read was sent at coverage `read` (`None`: never) may rely on the
    /// table now.
    pub fn covers(&self, read: Option<&KindCoverage>) -> bool {
        self.open && (self.listed || read.is_some_and(|read| read.epoch == self.epoch))
    }
}

/// The coverage of both storage tables; a job keeps the one taken before its last read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StorageCoverage {
    pub profiles: KindCoverage,
    pub vex: KindCoverage,
}

impl StorageCoverage {
    /// Whether a job whose last read was sent at `read` needs no new read of its objects.
    pub fn covers(&self, read: Option<&StorageCoverage>) -> bool {
        self.profiles.covers(read.map(|r| &r.profiles)) && self.vex.covers(read.map(|r| &r.vex))
    }
}

impl<K: Ord, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            live: BTreeMap::new(),
            relisting: None,
            synced: false,
            watch_began: None,
            last_error: None,
            recent_deletes: VecDeque::new(),
            coverage: KindCoverage::default(),
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

/// One event of the storage watch, summarised.
#[derive(Debug)]
pub enum StorageChange<K, V> {
    /// ADDED (`created`: the object was created while the watch was open) or MODIFIED.
    Put {
        key: K,
        value: V,
        created: bool,
    },
    Deleted(K),
}

/// What became of a GET answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetAnswer {
    /// It is what the table holds now (or, for a 404, nothing is held).
    Applied,
    /// The watch delivered a version or the delete of the object after the GET was sent: the
    /// table keeps that.
    Superseded,
}

impl<K: Ord + Clone + PartialEq, V: StorageSummary> Table<K, V> {
    /// The storage watch (re)opened; its request was sent when the receipt clock stood at
    /// `sent_at`. Versions written while no watch was open were missed.
    pub fn storage_watch_opened(&mut self, sent_at: u64) {
        self.synced = true;
        self.last_error = None;
        self.watch_began = Some(sent_at);
        self.live.values_mut().for_each(V::watch_reopened);
        self.coverage = KindCoverage {
            epoch: self.coverage.epoch + 1,
            open: true,
            listed: false,
        };
    }

    /// The storage watch ended: writes from now on are missed until it re-opens.
    pub fn storage_watch_ended(&mut self) {
        self.coverage = KindCoverage {
            epoch: self.coverage.epoch + 1,
            open: false,
            listed: false,
        };
    }

    /// Applies the answer of a LIST of the whole namespace sent when the receipt clock stood at
    /// `sent_at`, as a GET of every object it holds or held: objects not listed were deleted.
    pub fn apply_list_answer(&mut self, listed: impl IntoIterator<Item = (K, V)>, sent_at: u64) {
        let mut absent: std::collections::BTreeSet<K> = self.live.keys().cloned().collect();
        for (key, value) in listed {
            absent.remove(&key);
            self.apply_get_answer(key, Some(value), sent_at);
        }
        for key in absent {
            self.apply_get_answer(key, None, sent_at);
        }
        self.coverage.listed = self.coverage.open;
    }

    /// Applies one storage watch event received at `position` and local time `at` (a put's
    /// receipt is in its value); returns the key changed.
    pub fn apply_storage_change(
        &mut self,
        change: StorageChange<K, V>,
        position: u64,
        at: DateTime<Utc>,
    ) -> K {
        match change {
            StorageChange::Put {
                key,
                value,
                created,
            } => {
                self.hold(key.clone(), value, created);
                key
            }
            StorageChange::Deleted(key) => {
                self.live.remove(&key);
                let forget_before =
                    at - chrono::Duration::from_std(DELETE_MEMORY).unwrap_or_default();
                while self
                    .recent_deletes
                    .front()
                    .is_some_and(|(_, deleted_at, _)| *deleted_at < forget_before)
                {
                    self.recent_deletes.pop_front();
                }
                self.recent_deletes.push_back((position, at, key.clone()));
                key
            }
        }
    }

    /// Applies the answer of a GET of `key` sent when the receipt clock stood at `sent_at`:
    /// `Some` the version found (with a listed receipt), `None` a 404. It never replaces what
    /// the watch delivered for the object after the GET was sent.
    pub fn apply_get_answer(&mut self, key: K, answer: Option<V>, sent_at: u64) -> GetAnswer {
        let watched_since = self
            .live
            .get(&key)
            .is_some_and(|held| !held.received().listed && held.received().seq > sent_at)
            || self
                .recent_deletes
                .iter()
                .any(|(position, _, deleted)| *position > sent_at && *deleted == key);
        if watched_since {
            return GetAnswer::Superseded;
        }
        match answer {
            Some(value) => self.hold(key, value, false),
            None => {
                self.live.remove(&key);
            }
        }
        GetAnswer::Applied
    }

    /// Holds `value` for `key`, carrying what the version held before established, unless
    /// `created` says it is a new object under the same name.
    fn hold(&mut self, key: K, mut value: V, created: bool) {
        if let Some(previous) = self.live.get(&key)
            && (!created || previous.resource_version() == value.resource_version())
        {
            V::carry(previous, &mut value);
        }
        self.live.insert(key, value);
    }
}

/// The four tables.
#[derive(Default)]
pub struct Tables {
    /// Hands out receipt positions: one order for what all four watches and the GETs deliver.
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

    /// The storage watches' coverage now; take it *before* sending a read.
    pub fn storage_coverage(&self) -> StorageCoverage {
        StorageCoverage {
            profiles: self.profiles.read().expect("profiles table lock").coverage,
            vex: self.vex.read().expect("vex table lock").coverage,
        }
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

/// Why a job could not read its profile or VEX.
#[derive(Debug, thiserror::Error)]
pub enum StorageReadError {
    #[error("GET {plural} {namespace}/{name} failed: {source}")]
    Api {
        plural: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("GET {plural} {namespace}/{name} had no answer within {timeout:?}")]
    TimedOut {
        plural: &'static str,
        namespace: String,
        name: String,
        timeout: Duration,
    },
}

/// The shared view: tables, waiters, the watch tasks (aborted when the view is dropped) and the
/// storage APIs the jobs read their objects from.
pub struct ClusterView {
    pub tables: Arc<Tables>,
    pub waiters: Arc<Waiters>,
    tasks: Vec<JoinHandle<()>>,
    /// ContainerProfiles in the sandbox namespace and VEX documents in Kubescape's.
    profiles: Api<DynamicObject>,
    vex: Api<DynamicObject>,
    sandbox_namespace: String,
    kubescape_namespace: String,
    storage_gets: Semaphore,
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
        let profile_resource =
            storage_resource(kinds::CONTAINER_PROFILE, kinds::CONTAINER_PROFILE_PLURAL);
        let vex_resource = storage_resource(kinds::VEX, kinds::VEX_PLURAL);
        // The storage group's namespaced watches stay idle, so the hint watches are
        // cluster-wide (and selectors are ignored): the namespace filter is ours.
        let profile_hints = Api::<DynamicObject>::all_with(client.clone(), &profile_resource);
        let vex_hints = Api::<DynamicObject>::all_with(client.clone(), &vex_resource);

        let profiles =
            Api::namespaced_with(client.clone(), &config.sandbox_namespace, &profile_resource);
        let vex = Api::namespaced_with(client, &config.kubescape_namespace, &vex_resource);
        let sandbox_ns = config.sandbox_namespace.clone();
        let kubescape_ns = config.kubescape_namespace.clone();
        let tasks = vec![
            tokio::spawn(follow(
                pods,
                tables.clone(),
                waiters.clone(),
                |t| &t.pods,
                |p| summary::pod(p).map(|(job, pod)| ((job, pod.name.clone()), pod)),
                |(job, _)| WatchKey::JobPods(job.clone()),
            )),
            tokio::spawn(follow(
                deployments,
                tables.clone(),
                waiters.clone(),
                |t| &t.deployments,
                summary::deployment,
                |name| WatchKey::Deployment(name.clone()),
            )),
            tokio::spawn(follow_storage(
                profile_hints,
                profiles.clone(),
                tables.clone(),
                waiters.clone(),
                |t| &t.profiles,
                move |o, received, created| summary::profile(o, &sandbox_ns, received, created),
                |name| WatchKey::Profile(name.clone()),
            )),
            tokio::spawn(follow_storage(
                vex_hints,
                vex.clone(),
                tables.clone(),
                waiters.clone(),
                |t| &t.vex,
                move |o, received, _| summary::vex(o, &kubescape_ns, received),
                |name| WatchKey::Vex(name.clone()),
            )),
        ];
        ClusterView {
            tables,
            waiters,
            tasks,
            profiles,
            vex,
            sandbox_namespace: config.sandbox_namespace.clone(),
            kubescape_namespace: config.kubescape_namespace.clone(),
            storage_gets: Semaphore::new(CONCURRENT_STORAGE_GETS),
        }
    }

    /// Reads the ContainerProfile `slug` (sandbox namespace) and the VEX `slug` (Kubescape
    /// namespace) with `resourceVersion=metadata` and puts what was found into the tables (a
    /// 404 removes what was held), unless the watch delivered something newer for the object
    /// while the GET was in flight.
    pub async fn read_storage(&self, slug: &str) -> Result<(), StorageReadError> {
        let _permit = self
            .storage_gets
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let sent_at = self.tables.next_receipt_position();
        let (profile, vex) = tokio::join!(
            get_metadata_view(&self.profiles, kinds::CONTAINER_PROFILE_PLURAL, slug),
            get_metadata_view(&self.vex, kinds::VEX_PLURAL, slug),
        );
        let (profile, vex) = (profile?, vex?);
        let found = || found(&self.tables);
        let profile = profile
            .and_then(|o| summary::profile(&o, &self.sandbox_namespace, found(), false))
            .map(|(_, summary)| summary);
        self.tables
            .profiles
            .write()
            .expect("profiles table lock")
            .apply_get_answer(slug.to_string(), profile, sent_at);
        let vex = vex
            .and_then(|o| summary::vex(&o, &self.kubescape_namespace, found()))
            .map(|(_, summary)| summary);
        self.tables
            .vex
            .write()
            .expect("vex table lock")
            .apply_get_answer(slug.to_string(), vex, sent_at);
        Ok(())
    }
}

/// The receipt of a version a read (GET or LIST) found: its order among the watch events is
/// unknown.
fn found(tables: &Tables) -> Receipt {
    Receipt {
        seq: tables.next_receipt_position(),
        listed: true,
        at: Utc::now(),
    }
}

/// Every object of the API's namespace, metadata only (`resourceVersion=metadata` also skips
/// storage's request queue), following `continue` through storage's pages of 500.
async fn list_metadata(api: &Api<DynamicObject>) -> Result<Vec<DynamicObject>, kube::Error> {
    let mut objects = Vec::new();
    let mut params = ListParams::default().at("metadata");
    loop {
        let page = api.list(&params).await?;
        objects.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(objects),
        }
    }
}

/// One GET with `resourceVersion=metadata`: the object's metadata-only view, `None` for a 404.
async fn get_metadata_view(
    api: &Api<DynamicObject>,
    plural: &'static str,
    name: &str,
) -> Result<Option<DynamicObject>, StorageReadError> {
    let namespace = || api.namespace().unwrap_or_default().to_string();
    let params = GetParams::at("metadata");
    match tokio::time::timeout(STORAGE_GET_TIMEOUT, api.get_with(name, &params)).await {
        Ok(Ok(object)) => Ok(Some(object)),
        Ok(Err(kube::Error::Api(status))) if status.is_not_found() => Ok(None),
        Ok(Err(source)) => Err(StorageReadError::Api {
            plural,
            namespace: namespace(),
            name: name.to_string(),
            source,
        }),
        Err(_) => Err(StorageReadError::TimedOut {
            plural,
            namespace: namespace(),
            name: name.to_string(),
            timeout: STORAGE_GET_TIMEOUT,
        }),
    }
}

/// Applies one kube-runtime watch stream to its table for as long as the view lives.
async fn follow<O, K, V>(
    stream: impl Stream<Item = Result<watcher::Event<O>, watcher::Error>> + Send + 'static,
    tables: Arc<Tables>,
    waiters: Arc<Waiters>,
    table: fn(&Tables) -> &RwLock<Table<K, V>>,
    summarize: impl Fn(&O) -> Option<(K, V)> + Send + 'static,
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
                    apply(&mut table, event, position, &summarize)
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

/// Applies one kube-runtime watcher event received at `position`.
fn apply<O, K: Ord + Clone, V>(
    table: &mut Table<K, V>,
    event: watcher::Event<O>,
    position: u64,
    summarize: &impl Fn(&O) -> Option<(K, V)>,
) -> Changed<K> {
    match event {
        watcher::Event::Apply(object) => match summarize(&object) {
            Some((key, value)) => {
                table.live.insert(key.clone(), value);
                Changed::Key(key)
            }
            None => Changed::Nothing,
        },
        watcher::Event::Delete(object) => match summarize(&object) {
            Some((key, _)) => {
                table.live.remove(&key);
                Changed::Key(key)
            }
            None => Changed::Nothing,
        },
        watcher::Event::Init => {
            table.relisting = Some(BTreeMap::new());
            table.watch_began = Some(position);
            Changed::Nothing
        }
        watcher::Event::InitApply(object) => {
            if let (Some(buffer), Some((key, value))) =
                (table.relisting.as_mut(), summarize(&object))
            {
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

/// Follows one storage kind's cluster-wide watch for as long as the view lives: every (re)open
/// changes the [`StorageCoverage`] epoch and wakes every job (each then reads its objects again,
/// since writes made while no watch was open were missed), every event wakes the jobs of its
/// object. A watch the server ends (its
/// `timeoutSeconds`) is re-opened at once; after an error, with kube-runtime's backoff.
async fn follow_storage<V>(
    api: Api<DynamicObject>,
    list_api: Api<DynamicObject>,
    tables: Arc<Tables>,
    waiters: Arc<Waiters>,
    table: fn(&Tables) -> &RwLock<Table<String, V>>,
    summarize: impl Fn(&DynamicObject, Receipt, bool) -> Option<(String, V)> + Send + 'static,
    wake_key: fn(&String) -> WatchKey,
) where
    V: StorageSummary + Send + Sync + 'static,
{
    let mut backoff = watcher::DefaultBackoff::default();
    loop {
        let sent_at = tables.next_receipt_position();
        // Any resourceVersion but `fullSpec` gives metadata-only events; storage ignores it
        // otherwise.
        let opened = tokio::time::Instant::now();
        let error = match api.watch(&WatchParams::default(), "0").await {
            Ok(stream) => {
                table(&tables)
                    .write()
                    .expect("table lock")
                    .storage_watch_opened(sent_at);
                // Writes made while no watch was open were missed: one LIST of the namespace
                // brings every job's objects up to date at once (else each job reads its own).
                let relist_sent_at = tables.next_receipt_position();
                match list_metadata(&list_api).await {
                    Ok(objects) => table(&tables)
                        .write()
                        .expect("table lock")
                        .apply_list_answer(
                            objects
                                .iter()
                                .filter_map(|o| summarize(o, found(&tables), false)),
                            relist_sent_at,
                        ),
                    Err(error) => tracing::warn!(
                        %error,
                        "cannot list storage objects after (re)opening their watch; each job reads its own"
                    ),
                }
                waiters.wake_all();
                let ended =
                    follow_storage_stream(stream, &tables, &waiters, table, &summarize, wake_key)
                        .await;
                table(&tables)
                    .write()
                    .expect("table lock")
                    .storage_watch_ended();
                ended
            }
            Err(error) => Some(error.to_string()),
        };
        match error {
            None => {
                backoff.reset();
                // A server that ends every watch at once must not get a re-open (and every
                // job's reads) in a tight loop.
                tokio::time::sleep_until(opened + MIN_WATCH_INTERVAL).await;
            }
            Some(error) => {
                tracing::warn!(%error, "storage watch failed; re-opening it after a backoff");
                table(&tables).write().expect("table lock").last_error = Some(error);
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Applies one open storage watch until it ends: `None` when the server ended it, the error
/// otherwise.
async fn follow_storage_stream<V: StorageSummary>(
    stream: impl Stream<Item = Result<WatchEvent<DynamicObject>, kube::Error>>,
    tables: &Tables,
    waiters: &Waiters,
    table: fn(&Tables) -> &RwLock<Table<String, V>>,
    summarize: &impl Fn(&DynamicObject, Receipt, bool) -> Option<(String, V)>,
    wake_key: fn(&String) -> WatchKey,
) -> Option<String> {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let position = tables.next_receipt_position();
        let at = Utc::now();
        let received = Receipt {
            seq: position,
            listed: false,
            at,
        };
        let change = match event {
            Ok(WatchEvent::Added(object)) => {
                summarize(&object, received, true).map(|(key, value)| StorageChange::Put {
                    key,
                    value,
                    created: true,
                })
            }
            Ok(WatchEvent::Modified(object)) => {
                summarize(&object, received, false).map(|(key, value)| StorageChange::Put {
                    key,
                    value,
                    created: false,
                })
            }
            Ok(WatchEvent::Deleted(object)) => {
                summarize(&object, received, false).map(|(key, _)| StorageChange::Deleted(key))
            }
            Ok(WatchEvent::Bookmark(_)) => None,
            Ok(WatchEvent::Error(status)) => {
                return Some(format!("{} ({})", status.message, status.code));
            }
            Err(error) => return Some(error.to_string()),
        };
        if let Some(change) = change {
            let key = table(tables)
                .write()
                .expect("table lock")
                .apply_storage_change(change, position, at);
            waiters.wake(&wake_key(&key));
        }
    }
    None
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

    #[test]
    fn relist_replaces_contents_and_marks_synced() {
        let mut table = Table::<String, u32>::default();
        let summarize = |o: &(String, u32)| Some(o.clone());
        let step = |table: &mut Table<String, u32>, event, position| {
            apply(table, event, position, &summarize);
        };
        step(&mut table, watcher::Event::Apply(("gone".into(), 1)), 0);
        assert!(!table.synced);
        step(&mut table, watcher::Event::Init, 1);
        assert_eq!(table.watch_began, Some(1));
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

    const SLUG: &str = "replicaset-x-app-0000-ffff";

    fn storage_object(namespace: &str, version: &str, status: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
            "kind": "Any",
            "metadata": {
                "name": SLUG,
                "namespace": namespace,
                "resourceVersion": version,
                "annotations": {"kubescape.io/status": status, "kubescape.io/completion": "complete"},
            },
        }))
        .unwrap()
    }

    fn profile(version: &str, status: &str, received: Receipt, created: bool) -> ProfileSummary {
        summary::profile(
            &storage_object("vexxy-sandbox", version, status),
            "vexxy-sandbox",
            received,
            created,
        )
        .unwrap()
        .1
    }

    fn vex(version: &str, received: Receipt) -> VexSummary {
        summary::vex(
            &storage_object("kubescape", version, ""),
            "kubescape",
            received,
        )
        .unwrap()
        .1
    }

    /// A watch event at `position`: ADDED when `created`, else MODIFIED.
    fn event(
        table: &mut Table<String, ProfileSummary>,
        version: &str,
        status: &str,
        position: u64,
        created: bool,
    ) {
        let value = profile(version, status, live(position), created);
        let change = StorageChange::Put {
            key: SLUG.to_string(),
            value,
            created,
        };
        table.apply_storage_change(change, position, clock(position));
    }

    /// A GET sent at `sent_at` whose answer (`version`, or a 404) is applied at `position`.
    fn get(
        table: &mut Table<String, ProfileSummary>,
        answer: Option<(&str, &str)>,
        sent_at: u64,
        position: u64,
    ) -> GetAnswer {
        let answer =
            answer.map(|(version, status)| profile(version, status, listed(position), false));
        table.apply_get_answer(SLUG.to_string(), answer, sent_at)
    }

    fn held(table: &Table<String, ProfileSummary>) -> &ProfileSummary {
        table.get(&SLUG.to_string()).expect("a profile is held")
    }

    #[test]
    fn a_get_answer_never_replaces_what_the_watch_delivered_while_it_was_in_flight() {
        let mut table = Table::<String, ProfileSummary>::default();
        table.storage_watch_opened(0);
        event(&mut table, "1", "initializing", 1, true);
        // GET sent at 2; the watch delivers version 3 at 3; the GET's answer (version 2, read
        // before version 3 was written) comes at 4.
        event(&mut table, "3", "completed", 3, false);
        assert_eq!(
            get(&mut table, Some(("2", "ready")), 2, 4),
            GetAnswer::Superseded
        );
        assert_eq!(held(&table).resource_version.as_deref(), Some("3"));
        assert_eq!(held(&table).received, live(3));
        // A GET sent after that event is applied: the same version keeps its watch receipt.
        assert_eq!(
            get(&mut table, Some(("3", "completed")), 5, 6),
            GetAnswer::Applied
        );
        assert_eq!(held(&table).received, live(3));
        assert!(held(&table).never_ready_since_creation());
    }

    #[test]
    fn a_list_answer_is_a_get_of_every_object_held_or_listed() {
        let mut table = Table::<String, ProfileSummary>::default();
        table.storage_watch_opened(0);
        event(&mut table, "1", "ready", 1, true);
        let other = || {
            let mut value = profile("2", "ready", listed(3), false);
            value.resource_version = Some("2".into());
            ("other".to_string(), value)
        };
        // LIST sent at 2; the watch delivers version 4 of SLUG at 4 (written after the LIST
        // read it); the answer (SLUG at version 3, "other" at version 2) comes at 5.
        event(&mut table, "4", "completed", 4, false);
        table.apply_list_answer(
            [
                (SLUG.to_string(), profile("3", "ready", listed(5), false)),
                other(),
            ],
            2,
        );
        assert_eq!(held(&table).resource_version.as_deref(), Some("4"));
        assert!(table.get(&"other".to_string()).is_some());
        assert!(table.coverage.listed);
        // A later LIST that no longer holds "other": it was deleted while unwatched.
        table.apply_list_answer(
            [(
                SLUG.to_string(),
                profile("4", "completed", listed(7), false),
            )],
            6,
        );
        assert!(table.get(&"other".to_string()).is_none());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_job_reads_again_only_when_the_watches_may_have_missed_a_write() {
        let mut tables = Tables::default();
        let coverage = |tables: &Tables| tables.storage_coverage();
        // No watch open yet: every look reads.
        assert!(!coverage(&tables).covers(None));
        tables.profiles.get_mut().unwrap().storage_watch_opened(0);
        tables.vex.get_mut().unwrap().storage_watch_opened(0);
        // Open, but neither listed nor read by the job.
        assert!(!coverage(&tables).covers(None));
        let read = coverage(&tables);
        assert!(
            coverage(&tables).covers(Some(&read)),
            "a read since the open"
        );
        // The profile watch ends: the job's read no longer covers it, until a LIST after the
        // re-open (or a new read).
        tables.profiles.get_mut().unwrap().storage_watch_ended();
        assert!(!coverage(&tables).covers(Some(&read)));
        tables.profiles.get_mut().unwrap().storage_watch_opened(5);
        assert!(!coverage(&tables).covers(Some(&read)));
        tables
            .profiles
            .get_mut()
            .unwrap()
            .apply_list_answer(std::iter::empty(), 6);
        assert!(
            !coverage(&tables).covers(None),
            "the VEX table is not listed"
        );
        assert!(coverage(&tables).covers(Some(&read)));
        tables
            .vex
            .get_mut()
            .unwrap()
            .apply_list_answer(std::iter::empty(), 7);
        assert!(
            coverage(&tables).covers(None),
            "both listed: no read at all"
        );
        // A LIST answered after its watch ended covers nothing.
        tables.vex.get_mut().unwrap().storage_watch_ended();
        tables
            .vex
            .get_mut()
            .unwrap()
            .apply_list_answer(std::iter::empty(), 8);
        assert!(!coverage(&tables).covers(None));
    }

    #[test]
    fn a_404_removes_the_object_and_a_get_cannot_bring_back_a_deleted_one() {
        let mut table = Table::<String, ProfileSummary>::default();
        table.storage_watch_opened(0);
        event(&mut table, "1", "ready", 1, true);
        assert_eq!(get(&mut table, None, 2, 3), GetAnswer::Applied);
        assert!(table.is_empty());

        event(&mut table, "4", "ready", 4, true);
        // GET sent at 5; the watch delivers the delete at 6; the answer found version 4.
        let deleted = StorageChange::Deleted(SLUG.to_string());
        table.apply_storage_change(deleted, 6, clock(6));
        assert_eq!(
            get(&mut table, Some(("4", "ready")), 5, 7),
            GetAnswer::Superseded
        );
        assert!(table.is_empty());
        // A GET sent after the delete is the truth again.
        assert_eq!(
            get(&mut table, Some(("8", "ready")), 7, 8),
            GetAnswer::Applied
        );
        assert_eq!(held(&table).received, listed(8));
        // Deletes are forgotten once no GET can still be in flight from before them.
        let later = clock(6) + chrono::Duration::from_std(DELETE_MEMORY).unwrap();
        let other = StorageChange::Deleted("other".to_string());
        table.apply_storage_change(other, 9, later + chrono::Duration::seconds(1));
        assert_eq!(table.recent_deletes.len(), 1);
    }

    #[test]
    fn a_version_only_a_get_found_is_listed_until_the_watch_delivers_it() {
        let mut table = Table::<String, ProfileSummary>::default();
        table.storage_watch_opened(0);
        event(&mut table, "1", "initializing", 1, true);
        assert!(held(&table).history_known());
        // The GET overtakes the watch: `ready` (2) and `completed` (3) were written, the GET
        // finds 3 before the watch delivered either. A `ready` version may be missing from the
        // history, so it is not known.
        get(&mut table, Some(("3", "completed")), 2, 3);
        let found = held(&table);
        assert_eq!(found.received, listed(3));
        assert_eq!(found.completed_received, Some(listed(3)));
        assert!(!found.history_known());
        assert!(!found.never_ready_since_creation());
        // The watch delivers both, in order: the history is known again and complete.
        event(&mut table, "2", "ready", 4, false);
        event(&mut table, "3", "completed", 5, false);
        let delivered = held(&table);
        assert_eq!(delivered.received, live(5));
        assert_eq!(
            delivered.completed_received,
            Some(live(5)),
            "the completion as the watch delivered it"
        );
        assert!(delivered.history_known());
        assert_eq!(delivered.last_ready_received, Some(clock(4)));
    }

    #[test]
    fn a_profile_keeps_the_receipt_of_its_first_completed_version() {
        let mut table = Table::<String, ProfileSummary>::default();
        table.storage_watch_opened(0);
        event(&mut table, "1", "ready", 1, true);
        assert_eq!(held(&table).completed_received, None);
        event(&mut table, "2", "completed", 2, false);
        event(&mut table, "3", "completed", 3, false);
        assert_eq!(held(&table).received, live(3));
        assert_eq!(held(&table).completed_received, Some(live(2)));
        // A GET of the same version changes neither receipt.
        get(&mut table, Some(("3", "completed")), 4, 5);
        assert_eq!(held(&table).received, live(3));
        assert_eq!(held(&table).completed_received, Some(live(2)));
        assert_eq!(held(&table).last_ready_received, Some(clock(1)));
    }

    #[test]
    fn a_reopened_watch_makes_the_learning_history_unknown_for_good() {
        let mut table = Table::<String, ProfileSummary>::default();
        table.storage_watch_opened(0);
        event(&mut table, "1", "initializing", 1, true);
        assert!(held(&table).never_ready_since_creation());
        // The watch ended and was re-opened: a `ready` version may have come and gone.
        table.storage_watch_opened(2);
        assert_eq!(table.watch_began, Some(2));
        assert!(!held(&table).history_known());
        event(&mut table, "5", "completed", 3, false);
        assert!(!held(&table).history_known());
        assert!(!held(&table).never_ready_since_creation());
        assert_eq!(held(&table).received, live(3));

        // A profile first seen by a GET (e.g. at start-up) has an unknown history too.
        let mut started = Table::<String, ProfileSummary>::default();
        started.storage_watch_opened(0);
        get(&mut started, Some(("7", "completed")), 1, 2);
        assert_eq!(held(&started).received, listed(2));
        assert!(!held(&started).history_known());
        // So has one the watch delivers as MODIFIED: it was created before the watch opened.
        event(&mut started, "8", "completed", 3, false);
        assert!(!held(&started).history_known());
    }

    #[test]
    fn a_profile_recreated_under_the_same_name_starts_a_fresh_history() {
        let mut table = Table::<String, ProfileSummary>::default();
        table.storage_watch_opened(0);
        event(&mut table, "1", "ready", 1, false);
        assert!(!held(&table).history_known());
        // Deleted and created again while the watch was down: the ADDED of a new object.
        event(&mut table, "9", "initializing", 2, true);
        let fresh = held(&table);
        assert!(fresh.history_known());
        assert_eq!(fresh.last_ready_received, None);
        // The ADDED of a version a GET found first is the same object: it keeps what it had.
        let mut found_first = Table::<String, ProfileSummary>::default();
        found_first.storage_watch_opened(0);
        get(&mut found_first, Some(("1", "ready")), 1, 2);
        event(&mut found_first, "1", "ready", 3, true);
        assert!(held(&found_first).history_known());
        assert_eq!(held(&found_first).last_ready_received, Some(clock(2)));
    }

    #[test]
    fn a_vex_version_keeps_its_first_receipt_unless_the_watch_delivers_it_after_a_get() {
        let mut table = Table::<String, VexSummary>::default();
        table.storage_watch_opened(0);
        let put = |table: &mut Table<String, VexSummary>, version: &str, position: u64| {
            let value = vex(version, live(position));
            let change = StorageChange::Put {
                key: SLUG.to_string(),
                value,
                created: false,
            };
            table.apply_storage_change(change, position, clock(position));
        };
        let key = SLUG.to_string();
        put(&mut table, "7", 1);
        table.apply_get_answer(key.clone(), Some(vex("7", listed(3))), 2);
        assert_eq!(table.get(&key).unwrap().received, live(1));
        table.apply_get_answer(key.clone(), Some(vex("8", listed(5))), 4);
        assert_eq!(table.get(&key).unwrap().received, listed(5));
        put(&mut table, "8", 6);
        assert_eq!(table.get(&key).unwrap().received, live(6));
        // Objects outside kubevuln's namespace are not ours.
        let other = summary::vex(&storage_object("other", "9", ""), "kubescape", live(7));
        assert!(other.is_none());
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
