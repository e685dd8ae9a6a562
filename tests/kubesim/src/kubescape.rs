//! The Kubescape emulator: installation objects (namespace, APIService, components, the
//! `ks-cloud-config` ConfigMap) and, per running container, node-agent's ContainerProfile and
//! kubevuln's ScanCP outputs, written through the same store path as API writes.
//!
//! Timeline of one container (t0 = container running, or install time for a container that was
//! already running, which then gets completion `partial`):
//! - t0: ContainerProfile `initializing`
//! - only if learning > first save (node-agent's `initialDelay`, chart
//!   `nodeAgent.config.learningPeriod`, 2m by default): t0 + first save + consolidation: `ready`
//!   (learning) -> scan at + scan_delay (complete profiles only)
//! - max(t0 + learning, ready) + consolidation: `completed` -> scan at + scan_delay
//!
//! A container whose learning ends before node-agent's first save goes from `initializing`
//! straight to `completed` and is scanned once, as with real node-agent. Each scan writes the
//! filtered SBOM before the VEX, right after the profile version it follows.
//!
//! learning = pod label `kubescape.io/max-sniffing-time` (Go duration) or the configured default.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

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
    app.mark_preexisting_containers(running_containers(store));
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

/// (pod uid, container name) of every container currently running.
pub fn running_containers(store: &Store) -> HashSet<(String, String)> {
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

/// What the emulator remembers across changes.
#[derive(Default)]
pub struct EmulatorState {
    /// Containers that were running when Kubescape was installed: their profiles are partial.
    pub preexisting: HashSet<(String, String)>,
}

/// Events taken from the feed at once before the emulator advances.
const MAX_DRAIN: usize = 100_000;

/// Runs the emulator from the store's change feed: a pod change starts or stops the emulation of
/// its containers, and each container's next step (profile stage, scan) is a timer, so the work
/// per change does not grow with the number of containers. A full resync (list of pods) happens
/// at start, when the feed lags and when the configuration changes (install, capabilities).
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut feed = app.store.subscribe_events();
    let mut config_changes = app.config_changes();
    let mut cfg = app.config();
    let mut emulator = emulator::Emulator::default();
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProfileStage {
    Initializing,
    Ready,
    Completed,
}

impl ProfileStage {
    pub fn status(self) -> &'static str {
        match self {
            ProfileStage::Initializing => "initializing",
            ProfileStage::Ready => "ready",
            ProfileStage::Completed => "completed",
        }
    }
}

/// When each step of a container's timeline happens, relative to t0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// The `ready` (learning-time) profile, which exists only when learning outlasts
    /// node-agent's first save.
    pub ready: Option<Duration>,
    pub completed: Duration,
    pub scan_after_ready: Option<Duration>,
    pub scan_after_completed: Duration,
}

impl Timeline {
    pub fn new(cfg: &Config, learning: Duration) -> Self {
        let consolidation = cfg.timings.consolidation_delay();
        let first_save = cfg.timings.first_save_delay();
        let ready = (learning > first_save).then_some(first_save + consolidation);
        let completed = learning.max(ready.unwrap_or_default()) + consolidation;
        let scan = cfg.timings.scan_delay();
        Timeline {
            ready,
            completed,
            scan_after_ready: ready.map(|ready| ready + scan),
            scan_after_completed: completed + scan,
        }
    }

    pub fn stage(&self, elapsed: Duration) -> ProfileStage {
        if elapsed >= self.completed {
            ProfileStage::Completed
        } else if self.ready.is_some_and(|ready| elapsed >= ready) {
            ProfileStage::Ready
        } else {
            ProfileStage::Initializing
        }
    }

    /// When kubevuln's scan number `done` (0-based: the learning-time one first, if any) is due.
    pub fn scan_at(&self, done: u8) -> Option<Duration> {
        self.scan_after_ready
            .into_iter()
            .chain([self.scan_after_completed])
            .nth(usize::from(done))
    }
}

mod emulator {
    use super::*;
    use crate::catalogue::{self, ContainerInstance, KubevulnGeneration};

    struct Tracked {
        t0: Instant,
        instance: ContainerInstance,
        complete: bool,
        timeline: Timeline,
        stage: Option<ProfileStage>,
        scans: u8,
    }

    impl Tracked {
        /// When this container's next step (profile stage or scan) is due, if any is left.
        fn next_due(&self) -> Option<Instant> {
            let next_stage = match self.stage {
                None | Some(ProfileStage::Initializing) => {
                    Some(self.timeline.ready.unwrap_or(self.timeline.completed))
                }
                Some(ProfileStage::Ready) => Some(self.timeline.completed),
                Some(ProfileStage::Completed) => None,
            };
            let next_scan = self.timeline.scan_at(self.scans);
            [next_stage, next_scan]
                .into_iter()
                .flatten()
                .min()
                .map(|d| self.t0 + d)
        }
    }

    type ContainerKey = (String, String);

    #[derive(Default)]
    pub struct Emulator {
        /// (pod uid, container name) -> its emulation; ordered so a pod's containers are a range.
        tracked: BTreeMap<ContainerKey, Tracked>,
        due: Timers<ContainerKey>,
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

    fn target_ns(obj: &Value, default: &str) -> String {
        let ns = namespace_of(obj);
        if ns.is_empty() {
            default.to_string()
        } else {
            ns.to_string()
        }
    }

    fn write(store: &Store, plural: &str, obj: Value, default_ns: &str) {
        let ns = target_ns(&obj, default_ns);
        let name = name_of(&obj).to_string();
        if let Err(e) = store.upsert(resources::kubescape(plural), &ns, obj) {
            // kubevuln only logs a failed write (e.g. 413 for a too-large VEX).
            tracing::warn!(error = %e, kind = plural, name, "emulated Kubescape write failed");
        }
    }

    impl Emulator {
        /// Rebuilds the emulated containers from a full list of pods.
        pub fn resync(&mut self, app: &App, cfg: &Config) {
            if !cfg.kubescape.installed {
                self.tracked.clear();
                self.due.clear();
                return;
            }
            let (pods, _) = app.store.list(resources::pods(), None);
            let mut live = HashSet::new();
            for pod in &pods {
                live.extend(self.observe_pod(app, cfg, pod));
            }
            // A deleted (or no longer running) pod stops its emulation.
            self.tracked.retain(|k, _| live.contains(k));
        }

        /// Follows one change: a pod's containers start or stop being emulated.
        pub fn observe(&mut self, app: &App, cfg: &Config, ev: &StoreEvent) {
            if !cfg.kubescape.installed || ev.resource != resources::pods() {
                return;
            }
            let pod_uid = crate::store::uid_of(&ev.object).to_string();
            let live = if ev.event_type == EventType::Deleted {
                HashSet::new()
            } else {
                self.observe_pod(app, cfg, &ev.object)
            };
            let gone: Vec<ContainerKey> = self
                .tracked
                .range((pod_uid.clone(), String::new())..)
                .take_while(|(k, _)| k.0 == pod_uid)
                .filter(|(k, _)| !live.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                self.tracked.remove(&k);
            }
        }

        /// Starts tracking the pod's newly running containers; returns all its running ones.
        fn observe_pod(&mut self, app: &App, cfg: &Config, pod: &Value) -> HashSet<ContainerKey> {
            let store = &app.store;
            let caps = &cfg.kubescape.capabilities;
            let mut live = HashSet::new();
            let ns = namespace_of(pod);
            if cfg.kubescape.excluded_namespaces.iter().any(|x| x == ns) {
                return live;
            }
            let pod_uid = crate::store::uid_of(pod).to_string();
            for cs in pod
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if cs.pointer("/state/running").is_none() || cs["ready"] != json!(true) {
                    continue;
                }
                let cname = cs["name"].as_str().unwrap_or("").to_string();
                let key = (pod_uid.clone(), cname.clone());
                live.insert(key.clone());
                if self.tracked.contains_key(&key) || !caps.relevancy {
                    continue;
                }
                let image = cs["image"].as_str().unwrap_or("").to_string();
                let (learning, learning_label) =
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
                    started_at: chrono::Utc::now(),
                };
                let t0 = Instant::now();
                let complete = !app.preexisting_containers().contains(&key);
                self.due.at(t0, key.clone());
                self.tracked.insert(
                    key.clone(),
                    Tracked {
                        t0,
                        instance,
                        complete,
                        timeline: Timeline::new(cfg, learning),
                        stage: None,
                        scans: 0,
                    },
                );
            }
            live
        }

        /// Takes every container whose next step is due through it: the profile stage write,
        /// then the scan (kubevuln's writes), as one tick of the node agent and kubevuln would.
        pub fn advance(&mut self, app: &App, cfg: &Config) {
            if !cfg.kubescape.installed {
                return;
            }
            let store = &app.store;
            let caps = &cfg.kubescape.capabilities;
            for key in self.due.take_due(Instant::now()) {
                let Some(t) = self.tracked.get_mut(&key) else {
                    continue;
                };
                let elapsed = t.t0.elapsed();
                let stage = t.timeline.stage(elapsed);
                let completion = if t.complete { "complete" } else { "partial" };
                if t.stage != Some(stage) {
                    let cp = catalogue::container_profile(&t.instance, stage.status(), completion);
                    write(
                        store,
                        "containerprofiles",
                        cp,
                        &t.instance.workload_namespace,
                    );
                    t.stage = Some(stage);
                }
                let due = t.timeline.scan_at(t.scans).is_some_and(|at| elapsed >= at);
                if due {
                    t.scans += 1;
                    // kubevuln skips partial profiles (no partialRelevancy in the chart).
                    if t.complete && caps.storage {
                        scan(store, cfg, &t.instance);
                    }
                }
                if let Some(at) = t.next_due() {
                    self.due.at(at, key);
                }
            }
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
            [self.due.next(), cleanup].into_iter().flatten().min()
        }

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
                .tracked
                .values()
                .map(|t| t.instance.instance_id())
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

    fn scan(store: &Store, cfg: &Config, inst: &ContainerInstance) {
        let generation = match generation_for(&cfg.kubescape, &inst.image) {
            Generation::V0_3_159 => KubevulnGeneration::V0_3_159,
            Generation::Main => KubevulnGeneration::Main,
        };
        let vex = resources::kubescape("openvulnerabilityexchangecontainers");
        let previous = store.get_shared(vex, NAMESPACE, &inst.slug()).ok();
        let rescan = previous.is_some();
        let out = catalogue::scan(inst, generation, previous.as_deref());
        let caps = &cfg.kubescape.capabilities;
        // kubevuln keeps the image's SBOM and unfiltered manifest per image slug and builds them
        // only when storage has none (`getOrCreateSBOM`, `GetCVE`); a rescan stands for a
        // vulnerability-database update, which makes the cached manifest stale.
        let stored = |plural: &str| {
            store
                .get_shared(resources::kubescape(plural), NAMESPACE, &inst.image_slug())
                .is_ok()
        };
        if !stored("sbomsyfts") {
            write(store, "sbomsyfts", catalogue::image_sbom(inst), NAMESPACE);
        }
        if rescan || !stored("vulnerabilitymanifests") {
            write(
                store,
                "vulnerabilitymanifests",
                catalogue::image_manifest(inst, rescan),
                NAMESPACE,
            );
        }
        write(
            store,
            "vulnerabilitymanifests",
            out.manifest_filtered,
            NAMESPACE,
        );
        if caps.store_filtered_sbom {
            write(store, "sbomsyftfiltereds", out.sbom_filtered, NAMESPACE);
        }
        if caps.vex_generation {
            write(
                store,
                "openvulnerabilityexchangecontainers",
                out.vex,
                NAMESPACE,
            );
        }
        write(
            store,
            "vulnerabilitymanifestsummaries",
            out.summary,
            &inst.workload_namespace,
        );
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

    fn timeline(first_save_ms: u64, learning: Duration) -> Timeline {
        let mut cfg = Config::default();
        cfg.timings.first_save_delay_ms = first_save_ms;
        cfg.timings.consolidation_delay_ms = 100;
        cfg.timings.scan_delay_ms = 10;
        Timeline::new(&cfg, learning)
    }

    #[test]
    fn learning_that_ends_before_the_first_save_has_no_ready_stage_and_one_scan() {
        let t = timeline(120_000, Duration::from_secs(1));
        assert_eq!(t.ready, None);
        assert_eq!(t.completed, Duration::from_millis(1_100));
        assert_eq!(t.scan_at(0), Some(Duration::from_millis(1_110)));
        assert_eq!(t.scan_at(1), None);
        assert_eq!(
            t.stage(Duration::from_millis(1_099)),
            ProfileStage::Initializing
        );
        assert_eq!(
            t.stage(Duration::from_millis(1_100)),
            ProfileStage::Completed
        );
        // Learning exactly as long as the first save: the save finds learning over.
        assert_eq!(timeline(1_000, Duration::from_secs(1)).ready, None);
    }

    #[test]
    fn learning_past_the_first_save_is_ready_at_first_save_plus_consolidation() {
        let t = timeline(2_000, Duration::from_secs(5));
        assert_eq!(t.ready, Some(Duration::from_millis(2_100)));
        assert_eq!(t.completed, Duration::from_millis(5_100));
        assert_eq!(t.scan_at(0), Some(Duration::from_millis(2_110)));
        assert_eq!(t.scan_at(1), Some(Duration::from_millis(5_110)));
        assert_eq!(t.scan_at(2), None);
        assert_eq!(
            t.stage(Duration::from_millis(2_099)),
            ProfileStage::Initializing
        );
        assert_eq!(t.stage(Duration::from_millis(2_100)), ProfileStage::Ready);
        // Learning that ends during the first save's consolidation completes after it.
        assert_eq!(
            timeline(2_000, Duration::from_millis(2_050)).completed,
            Duration::from_millis(2_200)
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
