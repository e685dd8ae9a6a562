//! The Kubescape emulator: installation objects (namespace, APIService, components, the
//! `ks-cloud-config` ConfigMap) and, for the pods in the store, what node-agent, storage, the
//! operator and kubevuln do about them. Every write goes through the store, the path the
//! storage API serves (and through which the emulator also learns of its own writes), so the
//! emulator acts on the same objects any client of the API sees, and storage's rules (the
//! refusal of a save for a completed profile) apply to other clients' writes too.
//!
//! One container (t0: it runs; learning L: the pod label `kubescape.io/max-sniffing-time` or
//! the default; first save F: node-agent's `initialDelay`, chart
//! `nodeAgent.config.learningPeriod`, 2 m by default; C: storage's consolidation period):
//! - [`node_agent`]: a run per container start. At t0 + F, only if L > F: a save with status
//!   `ready`; at t0 + L: a save `completed`; when the container stops first: a save `completed`
//!   (exit 0) or `failed`. Each save is a new object `<slug>-<32 hex>` with the run's
//!   `kubescape.io/report-series-id`; completion is `partial` for a container already running
//!   when node-agent started, else `complete`. A restart is a new run and a new series.
//! - [`consolidation`]: storage merges the saves into `<slug>` at its next tick (every C) and
//!   deletes them. `<slug>` first appears at the first save plus up to C — never
//!   `initializing` — and shows `ready`, or `completed`/`complete` or `completed`/`partial` (a
//!   `failed` series); a restarted container that finishes learning turns
//!   `completed`/`partial` into `completed`/`complete`.
//! - [`kubevuln`]: every version of `<slug>` that is `ready` or `completed` is sent on by the
//!   operator; kubevuln scans those that are `complete`, scan delay later: filtered SBOM,
//!   filtered manifest, summary, then VEX.
//!
//! Read from node-agent `de4676bb` (`pkg/containerprofilemanager/v1`, `pkg/containerwatcher/v2/
//! containercallback.go`, `pkg/objectcache/helpers.go`), kubescape/storage `b35788b6`
//! (`pkg/registry/file/containerprofile_processor.go`, `storage.go`, `pkg/apis/
//! softwarecomposition/types.go`) and kubevuln v0.3.159 (`core/services/scan.go`,
//! `adapters/v1/container_profile.go`); each module says what it models and what not.

pub mod consolidation;
pub mod kubevuln;
pub mod node_agent;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::app::App;
use crate::change_feed::Timers;
use crate::config::{Capabilities, Config, Generation, KubescapeConfig};
use crate::errors::ApiError;
use crate::resources::{self, KUBESCAPE_GROUP, Resource};
use crate::store::namespace_of;
use crate::store::{EventType, Propagation, Store, StoreEvent, name_of};

/// The storage queue manager's cap for OpenVulnerabilityExchangeContainer writes.
pub const MAX_VEX_BYTES: usize = 500_000;
pub const NAMESPACE: &str = "kubescape";
/// The chart's `global.cloudConfig`.
pub const CLOUD_CONFIG: &str = "ks-cloud-config";
pub const APISERVICE: &str = "v1beta1.spdx.softwarecomposition.kubescape.io";
pub const SNIFFING_LABEL: &str = "kubescape.io/max-sniffing-time";

/// The `clusterData` JSON as the chart's `cloudapi-configmap.yaml` renders it.
pub fn cluster_data(cluster_name: &str, caps: &Capabilities) -> Value {
    json!({
        "serviceDiscovery": false,
        "vulnScanURL": "kubevuln:8080",
        "kubevulnURL": "kubevuln:8080",
        "kubescapeURL": "kubescape:8080",
        "clusterName": cluster_name,
        "storage": caps.storage,
        "relevantImageVulnerabilitiesEnabled": caps.relevancy,
        "namespace": NAMESPACE,
        "imageVulnerabilitiesScanningEnabled": true,
        "postureScanEnabled": true,
        "otelCollector": false,
        "nodeAgent": "true",
        "maxImageSize": 5_368_709_120u64,
        "keepLocal": true,
        "scanTimeout": "5m",
        "vexGeneration": caps.vex_generation,
        "storeFilteredSbom": caps.store_filtered_sbom,
        "continuousPostureScan": false,
        "relevantImageVulnerabilitiesConfiguration": if caps.relevancy { "enable" } else { "disable" },
    })
}

fn cloud_config_map(cluster_name: &str, caps: &Capabilities) -> Value {
    let data = serde_json::to_string_pretty(&cluster_data(cluster_name, caps)).unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CLOUD_CONFIG,
            "namespace": NAMESPACE,
            "labels": {"app": CLOUD_CONFIG, "tier": "ks-control-plane", "kubescape.io/ignore": "true", "kubescape.io/tier": "core", "kubescape.io/infra": "config"},
        },
        "data": {"clusterData": format!("{data}\n")},
    })
}

fn component_template(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "kubescape", "app": name, "tier": "ks-control-plane"}},
        "spec": {"containers": [{"name": name, "image": image}], "serviceAccountName": name},
    })
}

fn component_deployment(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/component": name, "app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "kubescape"}},
            "template": component_template(name, image),
        },
    })
}

/// Kubescape's installation objects as the chart creates them (namespace first), each with the
/// resource it is stored under.
pub fn installation_objects(
    cluster_name: &str,
    caps: &Capabilities,
) -> Vec<(&'static Resource, Value)> {
    let service_accounts = resources::find("", "serviceaccounts").expect("serviceaccounts");
    let mut objects = vec![
        (
            resources::namespaces(),
            json!({"metadata": {"name": NAMESPACE}}),
        ),
        (
            resources::find("", "configmaps").expect("configmaps"),
            cloud_config_map(cluster_name, caps),
        ),
    ];
    for (name, image) in [
        ("kubevuln", "quay.io/kubescape/kubevuln:v0.3.159"),
        ("operator", "quay.io/kubescape/operator:v0.2.162"),
        ("storage", "quay.io/kubescape/storage:v0.0.298"),
    ] {
        objects.push((
            service_accounts,
            json!({"metadata": {"name": name, "namespace": NAMESPACE}}),
        ));
        objects.push((resources::deployments(), component_deployment(name, image)));
    }
    objects.push((
        service_accounts,
        json!({"metadata": {"name": "node-agent", "namespace": NAMESPACE}}),
    ));
    objects.push((
        resources::daemonsets(),
        json!({
            "metadata": {"name": "node-agent", "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": "node-agent", "app": "node-agent"}},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "node-agent", "app.kubernetes.io/instance": "kubescape"}},
                "template": component_template("node-agent", "quay.io/kubescape/node-agent:v0.3.158"),
            },
        }),
    ));
    let services = resources::find("", "services").expect("services");
    for (name, port) in [("storage", 443), ("kubevuln", 8080), ("operator", 4002)] {
        objects.push((
            services,
            json!({
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
                "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name}, "ports": [{"name": "https", "port": port, "protocol": "TCP", "targetPort": port}]},
            }),
        ));
    }
    objects.push((
        resources::find("apiregistration.k8s.io", "apiservices").expect("apiservices"),
        json!({
            "metadata": {"name": APISERVICE, "labels": {"app.kubernetes.io/name": "storage", "app.kubernetes.io/component": "apiserver", "app.kubernetes.io/part-of": "kubescape-storage"}},
            "spec": {"group": KUBESCAPE_GROUP, "version": "v1beta1", "groupPriorityMinimum": 1000, "versionPriority": 15, "insecureSkipTLSVerify": true,
                     "service": {"name": "storage", "namespace": NAMESPACE, "port": 443}},
        }),
    ));
    objects
}

/// Creates Kubescape's objects and marks it installed.
pub fn install(app: &App) -> Result<(), ApiError> {
    let store = &app.store;
    let cfg = app.config();
    for (resource, object) in installation_objects(&cfg.cluster_name, &cfg.kubescape.capabilities) {
        let namespace = namespace_of(&object).to_string();
        if resource == resources::namespaces() {
            if store.get(resource, "", NAMESPACE).is_err() {
                store.create(resource, "", object)?;
            }
            continue;
        }
        store.upsert(resource, &namespace, object)?;
    }
    let apiservices =
        resources::find("apiregistration.k8s.io", "apiservices").expect("apiservices");
    let now = crate::store::now_rfc3339();
    store.update_with(apiservices, "", APISERVICE, true, |cur| {
        let mut c = cur.clone();
        c["status"] = json!({"conditions": [{"type": "Available", "status": "True", "lastTransitionTime": now, "reason": "Passed", "message": "all checks passed"}]});
        Ok(c)
    })?;
    app.start_node_agent(running_containers(store));
    app.update_config(|c| c.kubescape.installed = true);
    Ok(())
}

/// Removes Kubescape: the storage group stops being served, its objects and namespace go.
pub fn uninstall(app: &App) {
    app.update_config(|c| c.kubescape.installed = false);
    let store = &app.store;
    let _ = store.delete(
        resources::find("apiregistration.k8s.io", "apiservices").expect("apiservices"),
        "",
        APISERVICE,
        Propagation::Cascade,
    );
    let _ = store.delete(resources::namespaces(), "", NAMESPACE, Propagation::Cascade);
    store.delete_group(KUBESCAPE_GROUP);
}

/// Applies a new Kubescape configuration: installs, uninstalls or rewrites the ConfigMap.
pub fn reconfigure(app: &App, new: KubescapeConfig) -> Result<(), ApiError> {
    let old = app.config().kubescape;
    let want_installed = new.installed;
    app.update_config(|c| {
        c.kubescape = new.clone();
        c.kubescape.installed = old.installed;
    });
    match (old.installed, want_installed) {
        (false, true) => install(app),
        (true, false) => {
            uninstall(app);
            Ok(())
        }
        (true, true) if old.capabilities != new.capabilities => {
            let cfg = app.config();
            app.store
                .upsert(
                    resources::find("", "configmaps").expect("configmaps"),
                    NAMESPACE,
                    cloud_config_map(&cfg.cluster_name, &cfg.kubescape.capabilities),
                )
                .map(|_| ())
        }
        _ => Ok(()),
    }
}

/// (pod uid, container name, run) of every container currently running: what node-agent finds
/// running when it starts (its `PreRunningContainer`s).
pub fn running_containers(store: &Store) -> HashSet<(String, String, String)> {
    let (pods, _) = store.list(resources::pods(), None);
    let mut out = HashSet::new();
    for p in &pods {
        for cs in p
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if cs.pointer("/state/running").is_some() {
                out.insert((
                    crate::store::uid_of(p).to_string(),
                    cs["name"].as_str().unwrap_or("").to_string(),
                    node_agent::run_id(cs),
                ));
            }
        }
    }
    out
}

/// Go's `time.Duration.String()` for whole milliseconds: `2m0s`, `30s`, `1h2m0s`, `500ms`.
pub fn go_duration_string(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let s_ms = ms % 60_000;
    let secs = if s_ms.is_multiple_of(1000) {
        format!("{}s", s_ms / 1000)
    } else {
        format!("{}s", s_ms as f64 / 1000.0)
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// The learning period of a pod: its `kubescape.io/max-sniffing-time` label, else the default.
pub fn learning_period(pod: &Value, default: Duration) -> (Duration, String) {
    match pod
        .pointer("/metadata/labels")
        .and_then(|l| l.get(SNIFFING_LABEL))
        .and_then(Value::as_str)
    {
        Some(label) => match crate::godur::parse(label) {
            Ok(d) => (d, label.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, pod = name_of(pod), "ignoring the pod's max-sniffing-time label, using the default learning period");
                (default, go_duration_string(default))
            }
        },
        None => (default, go_duration_string(default)),
    }
}

pub fn generation_for(k: &KubescapeConfig, image: &str) -> Generation {
    k.generation_overrides
        .iter()
        .find(|o| !o.pattern.is_empty() && image.contains(o.pattern.as_str()))
        .map(|o| o.generation)
        .unwrap_or(k.generation)
}

/// What the installation leaves for the emulator: when node-agent started and what was running
/// then.
#[derive(Default)]
pub struct EmulatorState {
    /// (pod uid, container name, run) of the containers running when Kubescape was installed.
    pub preexisting: HashSet<(String, String, String)>,
    /// When node-agent started (Kubescape was installed).
    pub node_agent_started: Option<DateTime<Utc>>,
}

impl EmulatorState {
    /// node-agent's `PreRunningContainer` (`containercallback.go`: the container started before
    /// node-agent): the run was running at install time, or its `startedAt` (whole seconds, as
    /// pod statuses have it) is in an earlier second than node-agent's start. The second rule is
    /// what finds them in upstream mode, where pods reach kubesim's store only after the
    /// install.
    pub fn pre_running(
        &self,
        pod_uid: &str,
        container: &str,
        run: &str,
        started_at: Option<DateTime<Utc>>,
    ) -> bool {
        self.preexisting
            .contains(&(pod_uid.to_string(), container.to_string(), run.to_string()))
            || started_at
                .zip(self.node_agent_started)
                .is_some_and(|(started, agent)| started.timestamp() < agent.timestamp())
    }
}

/// Events taken from the feed at once before the emulator advances.
const MAX_DRAIN: usize = 100_000;

/// Runs the emulator from the store's change feed: a pod change starts or ends node-agent's
/// runs of its containers, a created per-save profile is recorded for storage's consolidation,
/// a written consolidated profile is sent to kubevuln; each pending step (a save, a
/// consolidation tick, a scan) is a timer, so the work per change does not grow with the number
/// of containers. A full resync (list of pods and profiles) happens at start, when the feed lags
/// and when the configuration changes (install, capabilities).
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut feed = app.store.subscribe_events();
    let mut config_changes = app.config_changes();
    let mut cfg = app.config();
    let mut emulator = emulator::Emulator::new(&app);
    emulator.resync(&app, &cfg);
    loop {
        emulator.advance(&app, &cfg);
        let next = emulator.next_due(&cfg);
        tokio::select! {
            _ = crate::app::stopped(&mut shutdown) => return,
            r = feed.recv() => match r {
                Ok(ev) => {
                    emulator.observe(&app, &cfg, &ev);
                    for _ in 0..MAX_DRAIN {
                        match feed.try_recv() {
                            Ok(ev) => emulator.observe(&app, &cfg, &ev),
                            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                                emulator.resync(&app, &cfg)
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => emulator.resync(&app, &cfg),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            // Objects wake this loop through the feed, delays through timers, and a
            // configuration change (install, capabilities, timings) through this.
            _ = config_changes.changed() => {}
        }
        let latest = app.config();
        let changed = latest.kubescape != cfg.kubescape
            || latest.cluster_name != cfg.cluster_name
            || latest.timings != cfg.timings;
        cfg = latest;
        if changed {
            emulator.resync(&app, &cfg);
        }
    }
}

mod emulator {
    use std::collections::HashMap;

    use super::consolidation::{Consolidator, is_time_series};
    use super::kubevuln::Kubevuln;
    use super::node_agent::{self, Run};
    use super::*;
    use crate::catalogue::ContainerInstance;
    use crate::change_feed::{ObjectKey, key_of};

    /// (pod uid, container name).
    type ContainerKey = (String, String);

    pub struct Emulator {
        /// node-agent: each container's current run; ordered so a pod's containers are a range.
        runs: BTreeMap<ContainerKey, Run>,
        due: Timers<ContainerKey>,
        /// Kubescape storage's time series and consolidation.
        storage: Consolidator,
        /// The operator and kubevuln.
        kubevuln: Kubevuln,
        /// The container instance behind each profile node-agent wrote, (namespace, slug): what
        /// kubevuln learns from the profile and the pod to scan the image.
        instances: HashMap<ObjectKey, ContainerInstance>,
        /// When node-agent and storage started: storage's consolidation ticks and node-agent's
        /// monotonic clock count from here.
        epoch: Instant,
        /// The store's resourceVersion up to which changes were taken into account (by a feed
        /// event or a resync).
        seen_rv: u64,
        last_cleanup: Option<Instant>,
    }

    fn owner_of(store: &Store, pod: &Value) -> (String, String, String, String, String) {
        let ns = namespace_of(pod);
        let owner = pod.pointer("/metadata/ownerReferences/0");
        let (av, kind, name) = match owner {
            Some(o) => (
                o["apiVersion"].as_str().unwrap_or("").to_string(),
                o["kind"].as_str().unwrap_or("").to_string(),
                o["name"].as_str().unwrap_or("").to_string(),
            ),
            None => (
                "v1".to_string(),
                "Pod".to_string(),
                name_of(pod).to_string(),
            ),
        };
        let (wk, wn) = if kind == "ReplicaSet" {
            store
                .get(resources::replicasets(), ns, &name)
                .ok()
                .and_then(|rs| rs.pointer("/metadata/ownerReferences/0").cloned())
                .map(|o| {
                    (
                        o["kind"].as_str().unwrap_or("").to_string(),
                        o["name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .unwrap_or((kind.clone(), name.clone()))
        } else {
            (kind.clone(), name.clone())
        };
        (av, kind, name, wk, wn)
    }

    fn resource_version(obj: &Value) -> u64 {
        obj.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0)
    }

    fn is_running(container_status: &Value) -> bool {
        container_status.pointer("/state/running").is_some()
    }

    impl Emulator {
        pub fn new(app: &App) -> Self {
            let (_, rv) = app
                .store
                .list_map(resources::namespaces(), None, |_| None::<()>);
            Emulator {
                runs: BTreeMap::new(),
                due: Timers::default(),
                storage: Consolidator::default(),
                kubevuln: Kubevuln::default(),
                instances: HashMap::new(),
                epoch: Instant::now(),
                seen_rv: rv,
                last_cleanup: None,
            }
        }

        /// Rebuilds what the emulator follows from a full list of pods and profiles.
        pub fn resync(&mut self, app: &App, cfg: &Config) {
            if !cfg.kubescape.installed {
                self.runs.clear();
                self.due.clear();
                self.storage.clear();
                self.kubevuln.clear();
                self.instances.clear();
                return;
            }
            let store = &app.store;
            let (pods, cut) = store.list(resources::pods(), None);
            let mut listed = HashSet::new();
            for pod in &pods {
                listed.insert(crate::store::uid_of(pod).to_string());
                self.observe_pod(app, cfg, pod);
            }
            // A deleted pod ends its containers' runs.
            let gone: Vec<ContainerKey> = self
                .runs
                .keys()
                .filter(|(uid, _)| !listed.contains(uid))
                .cloned()
                .collect();
            for key in gone {
                self.end_run(store, &key, -1);
            }
            // What the feed may not have brought: per-save profiles to consolidate, and
            // consolidated versions written since the last change taken into account (later
            // ones still come through the feed).
            let now = Instant::now();
            let (profiles, _) = store.list(resources::kubescape("containerprofiles"), None);
            for profile in &profiles {
                if is_time_series(profile) {
                    self.storage.record(profile);
                } else if (self.seen_rv + 1..=cut).contains(&resource_version(profile)) {
                    self.kubevuln
                        .profile_written(profile, cfg.timings.scan_delay(), now);
                }
            }
            self.storage
                .schedule(self.epoch, cfg.timings.consolidation_delay(), now);
            self.seen_rv = self.seen_rv.max(cut);
        }

        /// Follows one change of the store.
        pub fn observe(&mut self, app: &App, cfg: &Config, ev: &StoreEvent) {
            if ev.rv <= self.seen_rv {
                // A resync already took it into account.
                return;
            }
            self.seen_rv = ev.rv;
            if !cfg.kubescape.installed {
                return;
            }
            let now = Instant::now();
            if ev.resource == resources::pods() {
                if ev.event_type == EventType::Deleted {
                    let uid = crate::store::uid_of(&ev.object).to_string();
                    let keys: Vec<ContainerKey> = self
                        .runs
                        .range((uid.clone(), String::new())..)
                        .take_while(|(k, _)| k.0 == uid)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in keys {
                        // `GetTerminationExitCode` finds no pod: -1.
                        self.end_run(&app.store, &key, -1);
                    }
                } else {
                    self.observe_pod(app, cfg, &ev.object);
                }
            } else if ev.resource == resources::kubescape("containerprofiles") {
                let profile = &ev.object;
                match ev.event_type {
                    EventType::Added if is_time_series(profile) => {
                        self.storage.record(profile);
                        self.storage
                            .schedule(self.epoch, cfg.timings.consolidation_delay(), now);
                    }
                    EventType::Added | EventType::Modified if !is_time_series(profile) => {
                        self.kubevuln
                            .profile_written(profile, cfg.timings.scan_delay(), now);
                    }
                    EventType::Deleted if !is_time_series(profile) => {
                        let key = key_of(profile);
                        let live = self.runs.values().any(|r| {
                            r.instance.workload_namespace == key.0 && r.instance.slug() == key.1
                        });
                        if !live {
                            self.instances.remove(&key);
                        }
                    }
                    _ => {}
                }
            }
        }

        /// Ends the runs of the pod's containers that stopped or restarted, and starts runs for
        /// its running containers that have none.
        fn observe_pod(&mut self, app: &App, cfg: &Config, pod: &Value) {
            let store = &app.store;
            let pod_uid = crate::store::uid_of(pod).to_string();
            let statuses: Vec<&Value> = pod
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let status_of = |name: &str| statuses.iter().copied().find(|cs| cs["name"] == name);
            let stopped: Vec<(ContainerKey, i64)> = self
                .runs
                .range((pod_uid.clone(), String::new())..)
                .take_while(|(k, _)| k.0 == pod_uid)
                .filter_map(|(key, run)| {
                    let cs = status_of(&key.1);
                    let same_run =
                        cs.is_some_and(|cs| is_running(cs) && node_agent::run_id(cs) == run.run_id);
                    (!same_run).then(|| (key.clone(), node_agent::exit_code(cs, &run.run_id)))
                })
                .collect();
            for (key, exit_code) in stopped {
                self.end_run(store, &key, exit_code);
            }

            let ns = namespace_of(pod);
            if !cfg.kubescape.capabilities.relevancy
                || cfg.kubescape.excluded_namespaces.iter().any(|x| x == ns)
            {
                return;
            }
            for cs in statuses.iter().copied().filter(|cs| is_running(cs)) {
                let cname = cs["name"].as_str().unwrap_or("").to_string();
                let key = (pod_uid.clone(), cname.clone());
                if self.runs.contains_key(&key) {
                    continue;
                }
                let image = cs["image"].as_str().unwrap_or("").to_string();
                let (sniffing, learning_label) =
                    learning_period(pod, cfg.timings.learning_period());
                let (av, kind, oname, wk, wn) = owner_of(store, pod);
                let instance = ContainerInstance {
                    cluster: cfg.cluster_name.clone(),
                    workload_namespace: ns.to_string(),
                    workload_kind: wk,
                    workload_name: wn,
                    owner_api_version: av,
                    owner_kind: kind,
                    owner_name: oname,
                    template_hash: pod
                        .pointer("/metadata/labels/pod-template-hash")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    pod_name: name_of(pod).to_string(),
                    pod_uid: pod_uid.clone(),
                    container_name: cname.clone(),
                    image: image.clone(),
                    image_digest: crate::images::digest(&image),
                    learning_period: learning_label,
                    started_at: Utc::now(),
                };
                let run_id = node_agent::run_id(cs);
                let started_at = cs
                    .pointer("/state/running/startedAt")
                    .and_then(Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc));
                let pre_running = app.pre_running(&pod_uid, &cname, &run_id, started_at);
                self.instances
                    .insert((ns.to_string(), instance.slug()), instance.clone());
                let run = Run::new(
                    instance,
                    run_id,
                    Instant::now(),
                    cfg.timings.first_save_delay(),
                    sniffing,
                    pre_running,
                );
                if let Some(at) = run.next_due() {
                    self.due.at(at, key.clone());
                }
                self.runs.insert(key, run);
            }
        }

        fn end_run(&mut self, store: &Store, key: &ContainerKey, exit_code: i64) {
            if let Some(mut run) = self.runs.remove(key) {
                run.terminate(store, self.epoch, exit_code);
            }
        }

        /// Takes every step that is due: node-agent's saves, storage's consolidation tick,
        /// kubevuln's scans, storage's VEX cleanup.
        pub fn advance(&mut self, app: &App, cfg: &Config) {
            if !cfg.kubescape.installed {
                return;
            }
            let store = &app.store;
            let now = Instant::now();
            for key in self.due.take_due(now) {
                let Some(run) = self.runs.get_mut(&key) else {
                    continue;
                };
                run.tick(store, self.epoch, now);
                if let Some(at) = run.next_due() {
                    self.due.at(at, key);
                }
            }
            self.storage.advance(store, now);
            self.kubevuln.advance(store, cfg, &self.instances, now);
            self.cleanup(app, cfg);
        }

        /// The earliest instant the emulator has something to do by itself.
        pub fn next_due(&self, cfg: &Config) -> Option<Instant> {
            let cleanup = cfg
                .kubescape
                .vex_cleanup_interval_ms
                .filter(|_| cfg.kubescape.installed)
                .map(|ms| {
                    self.last_cleanup
                        .map_or_else(Instant::now, |t| t + Duration::from_millis(ms))
                });
            [
                self.due.next(),
                self.storage.next_tick(),
                self.kubevuln.next_due(),
                cleanup,
            ]
            .into_iter()
            .flatten()
            .min()
        }

        /// Storage's cleanup of VEX documents whose instance no longer runs.
        fn cleanup(&mut self, app: &App, cfg: &Config) {
            let Some(every) = cfg
                .kubescape
                .vex_cleanup_interval_ms
                .map(Duration::from_millis)
            else {
                return;
            };
            if self.last_cleanup.is_some_and(|t| t.elapsed() < every) {
                return;
            }
            self.last_cleanup = Some(Instant::now());
            let running: HashSet<String> = self
                .runs
                .values()
                .map(|r| r.instance.instance_id())
                .collect();
            let vex = resources::kubescape("openvulnerabilityexchangecontainers");
            let (items, _) = app.store.list(vex, Some(NAMESPACE));
            for item in items {
                let id = item
                    .pointer("/metadata/annotations/kubescape.io~1instance-id")
                    .and_then(Value::as_str);
                if id.is_none_or(|id| !running.contains(id)) {
                    let _ = app
                        .store
                        .delete(vex, NAMESPACE, name_of(&item), Propagation::Cascade);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration_string(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration_string(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration_string(Duration::from_secs(3720)), "1h2m0s");
        assert_eq!(go_duration_string(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn label_overrides_learning_period() {
        let pod = json!({"metadata": {"name": "p", "labels": {SNIFFING_LABEL: "1h2m"}}});
        assert_eq!(
            learning_period(&pod, Duration::from_secs(5)),
            (Duration::from_secs(3720), "1h2m".to_string())
        );
        let bad = json!({"metadata": {"name": "p", "labels": {SNIFFING_LABEL: "soon"}}});
        assert_eq!(
            learning_period(&bad, Duration::from_secs(5)).0,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn capabilities_render_like_the_chart() {
        let caps = Capabilities {
            vex_generation: false,
            ..Capabilities::default()
        };
        let d = cluster_data("c", &caps);
        assert_eq!(d["vexGeneration"], json!(false));
        assert_eq!(d["storeFilteredSbom"], json!(true));
        assert_eq!(d["relevantImageVulnerabilitiesEnabled"], json!(true));
        assert_eq!(d["namespace"], json!("kubescape"));
    }
}
