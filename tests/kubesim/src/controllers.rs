//! The controllers that make objects move: Deployment -> ReplicaSet -> Pods, the emulated
//! scheduler and kubelet (pod lifecycle, failure patterns, Events), DaemonSet status, and the
//! `default` ServiceAccount of each namespace.
//!
//! pod-template-hash approximation: the real controller feeds a spew dump of the Go struct to
//! fnv32a and renders the decimal value with the "safe" alphabet; kubesim feeds the pod template
//! as canonical JSON (keys sorted) to fnv32a and renders it the same way, so names look and
//! behave like real ones (stable per template, change with it) without matching byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::app::App;
use crate::config::{Config, FailurePatterns};
use crate::errors::ApiError;
use crate::images;
use crate::resources::{self, Resource};
use crate::rng::SAFE_ALPHABET;
use crate::store::{Store, name_of, namespace_of, uid_of};

pub const NODE_NAME: &str = "kubesim-node";

/// Namespaces, the node, default ServiceAccounts.
pub fn bootstrap(app: &App) -> Result<(), ApiError> {
    let store = &app.store;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        store.create(
            resources::namespaces(),
            "",
            json!({"metadata": {"name": ns}}),
        )?;
    }
    let node = json!({
        "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {},
    });
    store.create(resources::find("", "nodes").expect("nodes"), "", node)?;
    store.update_with(resources::find("", "nodes").expect("nodes"), "", NODE_NAME, true, |cur| {
        let mut n = cur.clone();
        n["status"] = json!({
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-kubesim", "containerRuntimeVersion": "containerd://2.0.0", "architecture": "amd64", "operatingSystem": "linux"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        });
        Ok(n)
    })?;
    ensure_service_accounts(store);
    Ok(())
}

/// fnv32a, as `hash/fnv` New32a.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let mut out = serde_json::Map::new();
            for (k, v) in sorted {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The pod-template-hash of a Deployment's template (see the module comment).
pub fn pod_template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    let h = fnv32a(canonical(&t).to_string().as_bytes());
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Whether `obj` names `owner_uid` in its ownerReferences (what owns it, as the GC sees it).
pub(crate) fn is_owned_by(obj: &Value, owner_uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|r| {
            r.iter()
                .any(|x| x.get("uid").and_then(Value::as_str) == Some(owner_uid))
        })
}

fn owner_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name_of(owner), "uid": uid_of(owner), "controller": true, "blockOwnerDeletion": true})
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn write_status(store: &Store, r: &'static Resource, obj: &Value, status: Value) {
    if obj.get("status") == Some(&status) {
        return;
    }
    let res = store.update_with(r, namespace_of(obj), name_of(obj), true, |cur| {
        let mut c = cur.clone();
        c["status"] = status;
        Ok(c)
    });
    if let Err(e) = res {
        tracing::debug!(error = %e, name = name_of(obj), "status write skipped");
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Writes a core/v1 Event about `obj`.
#[allow(clippy::too_many_arguments)]
pub fn emit_event(
    store: &Store,
    obj: &Value,
    kind: &str,
    api_version: &str,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let now = crate::store::now_rfc3339();
    let ns = namespace_of(obj);
    let name = format!(
        "{}.{:016x}",
        name_of(obj),
        fnv64(
            format!(
                "{}{reason}{message}{now}{}",
                uid_of(obj),
                store.random_suffix()
            )
            .as_bytes()
        )
    );
    let ev = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": kind, "namespace": ns, "name": name_of(obj), "uid": uid_of(obj), "apiVersion": api_version,
                           "resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))},
        "reason": reason,
        "message": message,
        "source": {"component": component, "host": NODE_NAME},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": event_type,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": NODE_NAME,
    });
    if let Err(e) = store.create(resources::events(), ns, ev) {
        tracing::debug!(error = %e, "event not written");
    }
}

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn ensure_service_accounts(store: &Store) {
    let (nss, _) = store.list(resources::namespaces(), None);
    for ns in nss {
        ensure_service_account(store, name_of(&ns));
    }
}

/// The `default` ServiceAccount of a namespace (the serviceaccount controller's job).
pub(crate) fn ensure_service_account(store: &Store, ns: &str) {
    let sa = resources::find("", "serviceaccounts").expect("serviceaccounts");
    if store.get(resources::namespaces(), "", ns).is_ok() && store.get(sa, ns, "default").is_err() {
        let _ = store.create(sa, ns, json!({"metadata": {"name": "default"}}));
    }
}

/// How a pod's containers fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Runs,
    PullFails,
    CrashLoops,
    /// Exits 1 once, after running one start delay; restarts one start delay later and runs.
    CrashesOnce,
}

fn matches_any(patterns: &[String], image: &str) -> bool {
    patterns
        .iter()
        .any(|p| !p.is_empty() && image.contains(p.as_str()))
}

fn fate(f: &FailurePatterns, image: &str) -> Fate {
    if matches_any(&f.pull_fail, image) {
        Fate::PullFails
    } else if matches_any(&f.crashloop, image) {
        Fate::CrashLoops
    } else if matches_any(&f.crash_once, image) {
        Fate::CrashesOnce
    } else {
        Fate::Runs
    }
}

/// What the controller remembers about a pod between passes.
pub(crate) struct PodMemory {
    seen: Instant,
    seen_wall: DateTime<Utc>,
    events: HashSet<String>,
}

/// What the controllers remember between passes.
#[derive(Default)]
pub(crate) struct Memory {
    /// Pod uid -> when the kubelet first saw it and which Events it wrote.
    pub pods: HashMap<String, PodMemory>,
    /// Deployment uid -> (generation, when progress for it started).
    pub progress: HashMap<String, (i64, Instant)>,
}

/// The deployment controller's scaling for one Deployment: its ReplicaSets (`owned`, in
/// (namespace, name) order) scaled to the template's, a new one created for a new template.
pub(crate) fn reconcile_deployment(store: &Store, d: &Value, owned: &[Value]) {
    let ns = namespace_of(d);
    let Some(template) = d.pointer("/spec/template") else {
        return;
    };
    let hash = pod_template_hash(template);
    let rs_name = format!("{}-{hash}", name_of(d));
    let want = replicas(d);
    let revision = owned.len() + usize::from(!owned.iter().any(|r| name_of(r) == rs_name));
    for rs in owned {
        let target = if name_of(rs) == rs_name { want } else { 0 };
        if replicas(rs) != target {
            let from = replicas(rs);
            let res = store.update_with(resources::replicasets(), ns, name_of(rs), false, |cur| {
                let mut c = cur.clone();
                c["spec"]["replicas"] = json!(target);
                c["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                    json!(want.to_string());
                Ok(c)
            });
            if res.is_ok() {
                let verb = if target > from { "up" } else { "down" };
                emit_event(
                    store,
                    d,
                    "Deployment",
                    "apps/v1",
                    "Normal",
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled {verb} replica set {} from {from} to {target}",
                        name_of(rs)
                    ),
                    "deployment-controller",
                );
            }
        }
    }
    if owned.iter().any(|r| name_of(r) == rs_name) {
        return;
    }
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    labels["pod-template-hash"] = json!(hash);
    let mut tmpl = template.clone();
    tmpl["metadata"]["labels"] = labels.clone();
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector.get("matchLabels").is_some_and(Value::is_object) {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let rs = json!({
        "metadata": {
            "name": rs_name,
            "namespace": ns,
            "labels": labels,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": want.to_string(),
                "deployment.kubernetes.io/max-replicas": (want + (want + 3) / 4).to_string(),
                "deployment.kubernetes.io/revision": revision.to_string(),
            },
            "ownerReferences": [owner_ref(d, "apps/v1", "Deployment")],
        },
        "spec": {"replicas": want, "selector": selector, "template": tmpl},
    });
    match store.create(resources::replicasets(), ns, rs) {
        Ok(_) => emit_event(
            store,
            d,
            "Deployment",
            "apps/v1",
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled up replica set {rs_name} from 0 to {want}"),
            "deployment-controller",
        ),
        Err(e) => tracing::debug!(error = %e, "replicaset not created"),
    }
}

/// The replicaset controller for one ReplicaSet: pods (`owned`, in (namespace, name) order)
/// created or deleted to match its replicas.
pub(crate) fn reconcile_replicaset(store: &Store, rs: &Value, owned: &[Value]) {
    let ns = namespace_of(rs);
    let want = replicas(rs).max(0) as usize;
    if owned.len() < want {
        for _ in owned.len()..want {
            let name = format!("{}-{}", name_of(rs), store.random_suffix());
            let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
            meta["name"] = json!(name);
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = json!([owner_ref(rs, "apps/v1", "ReplicaSet")]);
            if let Some(m) = meta.as_object_mut() {
                m.remove("creationTimestamp");
            }
            let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
            default_pod_spec(&mut spec);
            let pod = json!({"metadata": meta, "spec": spec, "status": {"phase": "Pending", "qosClass": "BestEffort"}});
            match store.create(resources::pods(), ns, pod) {
                Ok(p) => emit_event(
                    store,
                    rs,
                    "ReplicaSet",
                    "apps/v1",
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", name_of(&p)),
                    "replicaset-controller",
                ),
                Err(e) => tracing::debug!(error = %e, "pod not created"),
            }
        }
    } else if owned.len() > want {
        let mut victims: Vec<&Value> = owned.iter().collect();
        victims.sort_by_key(|p| {
            std::cmp::Reverse(
                p.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        });
        for p in victims.into_iter().take(owned.len() - want) {
            if store
                .delete(
                    resources::pods(),
                    ns,
                    name_of(p),
                    crate::store::Propagation::Cascade,
                )
                .is_ok()
            {
                emit_event(
                    store,
                    rs,
                    "ReplicaSet",
                    "apps/v1",
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", name_of(p)),
                    "replicaset-controller",
                );
            }
        }
    }
}

/// The defaults the apiserver fills into a pod spec.
fn default_pod_spec(spec: &mut Value) {
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
    ];
    for (k, v) in defaults {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in cs {
            if c.get("imagePullPolicy").is_none() {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let latest = !image.contains('@')
                    && (image.ends_with(":latest")
                        || !image.rsplit('/').next().unwrap_or("").contains(':'));
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            if c.get("terminationMessagePath").is_none() {
                c["terminationMessagePath"] = json!("/dev/termination-log");
                c["terminationMessagePolicy"] = json!("File");
            }
            if c.get("resources").is_none() {
                c["resources"] = json!({});
            }
        }
    }
}

fn condition(
    kind: &str,
    status: bool,
    at: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let mut c = json!({"type": kind, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": at});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

fn pod_ip(uid: &str) -> String {
    let h = fnv32a(uid.as_bytes());
    format!("10.244.{}.{}", (h >> 8) % 250, h % 250 + 2)
}

/// The kubelet's two events for a container it has just created and started.
fn container_started_events(cname: &str) -> [(&'static str, String, String, &'static str); 2] {
    [
        (
            "Normal",
            format!("Created/{cname}"),
            format!("Created container: {cname}"),
            "kubelet",
        ),
        (
            "Normal",
            format!("Started/{cname}"),
            format!("Started container {cname}"),
            "kubelet",
        ),
    ]
}

fn container_id(pod_uid: &str, name: &str, restart: i64) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "containerd://{}",
        hex::encode(Sha256::digest(
            format!("{pod_uid}/{name}/{restart}").as_bytes()
        ))
    )
}

/// The scheduler and kubelet for one pod: node assignment, container states after the start
/// delay, failure patterns, Events. Returns when the pod's state will next change by itself
/// (start, image pull back-off, the next crash), if it will.
pub(crate) fn reconcile_pod(
    store: &Store,
    cfg: &Config,
    memory: &mut Memory,
    pod: &Value,
) -> Option<Instant> {
    let start_delay = cfg.timings.pod_start_delay();
    let uid = uid_of(pod).to_string();
    let mem = memory.pods.entry(uid.clone()).or_insert_with(|| PodMemory {
        seen: Instant::now(),
        seen_wall: Utc::now(),
        events: HashSet::new(),
    });
    let elapsed = mem.seen.elapsed();
    let ns = namespace_of(pod).to_string();
    let name = name_of(pod).to_string();
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let images: Vec<String> = containers
        .iter()
        .map(|c| {
            c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let unschedulable = images
        .iter()
        .any(|i| matches_any(&cfg.failures.unschedulable, i));
    let created = ts(mem.seen_wall);
    let mut new_events: Vec<(&str, String, String, &str)> = Vec::new();

    if unschedulable {
        let msg = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
        let status = json!({
            "phase": "Pending",
            "conditions": [condition("PodScheduled", false, &created, Some("Unschedulable"), Some(msg))],
            "qosClass": "BestEffort",
        });
        new_events.push((
            "Warning",
            "FailedScheduling".into(),
            msg.to_string(),
            "default-scheduler",
        ));
        write_status(store, resources::pods(), pod, status);
        flush_events(store, pod, mem, new_events);
        return None;
    }
    if pod.pointer("/spec/nodeName").is_none() {
        let _ = store.update_with(resources::pods(), &ns, &name, false, |cur| {
            let mut c = cur.clone();
            c["spec"]["nodeName"] = json!(NODE_NAME);
            Ok(c)
        });
        new_events.push((
            "Normal",
            "Scheduled".into(),
            format!("Successfully assigned {ns}/{name} to {NODE_NAME}"),
            "default-scheduler",
        ));
    }
    let started = elapsed >= start_delay;
    let mut recheck: Option<Instant> = None;
    let mut recheck_at = |at: Instant| recheck = Some(recheck.map_or(at, |r| r.min(at)));
    if !started {
        recheck_at(mem.seen + start_delay);
    }
    let start_wall = mem.seen_wall + chrono::Duration::from_std(start_delay).unwrap_or_default();
    let started_ts = ts(start_wall);
    let mut statuses = Vec::new();
    let mut all_ready = true;
    for (c, image) in containers.iter().zip(&images) {
        let cname = c.get("name").and_then(Value::as_str).unwrap_or("");
        let normalized = images::normalize(image);
        let mut cs = json!({"name": cname, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false});
        if !started {
            cs["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
            all_ready = false;
            statuses.push(cs);
            continue;
        }
        match fate(&cfg.failures, image) {
            Fate::Runs => {
                cs["state"] = json!({"running": {"startedAt": started_ts}});
                cs["ready"] = json!(true);
                cs["started"] = json!(true);
                cs["imageID"] = json!(images::image_id(image));
                cs["containerID"] = json!(container_id(&uid, cname, 0));
                new_events.push((
                    "Normal",
                    format!("Pulling/{cname}"),
                    format!("Pulling image \"{image}\""),
                    "kubelet",
                ));
                new_events.push(("Normal", format!("Pulled/{cname}"), format!("Successfully pulled image \"{image}\" in 412ms (412ms including waiting). Image size: 67345123 bytes."), "kubelet"));
                new_events.extend(container_started_events(cname));
            }
            Fate::PullFails => {
                all_ready = false;
                let backoff = elapsed >= start_delay * 2;
                if !backoff {
                    recheck_at(mem.seen + start_delay * 2);
                }
                let pull_msg = format!(
                    "failed to pull and unpack image \"{normalized}\": failed to resolve reference \"{normalized}\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"
                );
                cs["state"] = if backoff {
                    json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\": ErrImagePull: {pull_msg}")}})
                } else {
                    json!({"waiting": {"reason": "ErrImagePull", "message": pull_msg}})
                };
                new_events.push((
                    "Normal",
                    format!("Pulling/{cname}"),
                    format!("Pulling image \"{image}\""),
                    "kubelet",
                ));
                new_events.push((
                    "Warning",
                    format!("Failed/{cname}/pull"),
                    format!("Failed to pull image \"{image}\": {pull_msg}"),
                    "kubelet",
                ));
                new_events.push((
                    "Warning",
                    format!("Failed/{cname}/err"),
                    "Error: ErrImagePull".into(),
                    "kubelet",
                ));
                if backoff {
                    new_events.push((
                        "Normal",
                        format!("BackOff/{cname}"),
                        format!("Back-off pulling image \"{image}\""),
                        "kubelet",
                    ));
                    new_events.push((
                        "Warning",
                        format!("Failed/{cname}/backoff"),
                        "Error: ImagePullBackOff".into(),
                        "kubelet",
                    ));
                }
            }
            Fate::CrashLoops => {
                all_ready = false;
                let cycle = start_delay * 2;
                let since = elapsed - start_delay;
                let restarts = if cycle.is_zero() {
                    1
                } else {
                    (since.as_millis() / cycle.as_millis().max(1)) as i64
                };
                if !cycle.is_zero() {
                    recheck_at(mem.seen + start_delay + cycle * (restarts as u32 + 1));
                }
                cs["imageID"] = json!(images::image_id(image));
                cs["containerID"] = json!(container_id(&uid, cname, restarts));
                if restarts == 0 {
                    cs["state"] = json!({"running": {"startedAt": started_ts}});
                    cs["started"] = json!(true);
                } else {
                    let run_start = start_wall
                        + chrono::Duration::from_std(cycle * (restarts as u32 - 1))
                            .unwrap_or_default();
                    let finished =
                        run_start + chrono::Duration::from_std(start_delay).unwrap_or_default();
                    cs["restartCount"] = json!(restarts);
                    cs["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                            "message": format!("back-off {}s restarting failed container={cname} pod={name}_{ns}({uid})", (10i64 << (restarts - 1).min(5)).min(300))}});
                    cs["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": ts(run_start), "finishedAt": ts(finished),
                            "containerID": container_id(&uid, cname, restarts - 1)}});
                    new_events.push((
                        "Warning",
                        format!("BackOff/{cname}"),
                        format!(
                            "Back-off restarting failed container {cname} in pod {name}_{ns}({uid})"
                        ),
                        "kubelet",
                    ));
                }
                new_events.push((
                    "Normal",
                    format!("Pulled/{cname}"),
                    format!("Container image \"{image}\" already present on machine"),
                    "kubelet",
                ));
                new_events.extend(container_started_events(cname));
            }
            Fate::CrashesOnce => {
                // First run [d, 2d), back-off [2d, 3d), second run from 3d on (d = start delay).
                let since = elapsed - start_delay;
                let at = |n: u32| {
                    start_wall + chrono::Duration::from_std(start_delay * n).unwrap_or_default()
                };
                cs["imageID"] = json!(images::image_id(image));
                let first_exit = json!({"terminated": {"exitCode": 1, "reason": "Error",
                        "startedAt": ts(at(0)), "finishedAt": ts(at(1)),
                        "containerID": container_id(&uid, cname, 0)}});
                if since < start_delay {
                    recheck_at(mem.seen + start_delay * 2);
                    cs["state"] = json!({"running": {"startedAt": started_ts}});
                    cs["ready"] = json!(true);
                    cs["started"] = json!(true);
                    cs["containerID"] = json!(container_id(&uid, cname, 0));
                } else if since < start_delay * 2 {
                    recheck_at(mem.seen + start_delay * 3);
                    all_ready = false;
                    cs["restartCount"] = json!(1);
                    cs["containerID"] = json!(container_id(&uid, cname, 0));
                    cs["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                            "message": format!("back-off 10s restarting failed container={cname} pod={name}_{ns}({uid})")}});
                    cs["lastState"] = first_exit;
                    new_events.push((
                        "Warning",
                        format!("BackOff/{cname}"),
                        format!(
                            "Back-off restarting failed container {cname} in pod {name}_{ns}({uid})"
                        ),
                        "kubelet",
                    ));
                } else {
                    cs["restartCount"] = json!(1);
                    cs["state"] = json!({"running": {"startedAt": ts(at(2))}});
                    cs["ready"] = json!(true);
                    cs["started"] = json!(true);
                    cs["containerID"] = json!(container_id(&uid, cname, 1));
                    cs["lastState"] = first_exit;
                }
                new_events.push((
                    "Normal",
                    format!("Pulled/{cname}"),
                    format!("Container image \"{image}\" already present on machine"),
                    "kubelet",
                ));
                new_events.extend(container_started_events(cname));
            }
        }
        statuses.push(cs);
    }
    let any_running = started
        && statuses.iter().any(|s| {
            s.pointer("/state/running").is_some()
                || s.get("restartCount").and_then(Value::as_i64).unwrap_or(0) > 0
        });
    let phase = if started && (all_ready || any_running) {
        "Running"
    } else {
        "Pending"
    };
    let ready_at = if all_ready { &started_ts } else { &created };
    let not_ready_msg = format!(
        "containers with unready status: [{}]",
        statuses
            .iter()
            .filter(|s| s["ready"] != json!(true))
            .filter_map(|s| s["name"].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let ready_cond = |kind: &str| {
        if all_ready {
            condition(kind, true, ready_at, None, None)
        } else {
            condition(
                kind,
                false,
                &created,
                Some("ContainersNotReady"),
                Some(&not_ready_msg),
            )
        }
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", started, if started { &started_ts } else { &created }, None, None),
            condition("Initialized", true, &created, None, None),
            ready_cond("Ready"),
            ready_cond("ContainersReady"),
            condition("PodScheduled", true, &created, None, None),
        ],
        "hostIP": "10.0.0.10",
        "hostIPs": [{"ip": "10.0.0.10"}],
        "startTime": created,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
    if started {
        status["podIP"] = json!(pod_ip(&uid));
        status["podIPs"] = json!([{"ip": pod_ip(&uid)}]);
    }
    write_status(store, resources::pods(), pod, status);
    flush_events(store, pod, mem, new_events);
    recheck
}

fn flush_events(
    store: &Store,
    pod: &Value,
    mem: &mut PodMemory,
    events: Vec<(&str, String, String, &str)>,
) {
    for (event_type, key, message, component) in events {
        if mem.events.insert(key.clone()) {
            let reason = key.split('/').next().unwrap_or(&key);
            emit_event(
                store, pod, "Pod", "v1", event_type, reason, &message, component,
            );
        }
    }
}

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn put_nonzero(status: &mut Value, key: &str, n: i64) {
    if n > 0 {
        status[key] = json!(n);
    }
}

/// A ReplicaSet's status from its pods (`owned`).
pub(crate) fn reconcile_replicaset_status(store: &Store, rs: &Value, owned: &[Value]) {
    let ready = owned.iter().filter(|p| pod_ready(p)).count() as i64;
    let mut status = json!({"replicas": owned.len(), "observedGeneration": generation(rs)});
    put_nonzero(&mut status, "fullyLabeledReplicas", owned.len() as i64);
    put_nonzero(&mut status, "readyReplicas", ready);
    put_nonzero(&mut status, "availableReplicas", ready);
    write_status(store, resources::replicasets(), rs, status);
}

fn keep_times(
    old: Option<&Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let prev = old
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned());
    let (transition, update) = match &prev {
        Some(p) if p["status"] == status => {
            let t = p["lastTransitionTime"].as_str().unwrap_or(now).to_string();
            let u = if p["reason"] == reason {
                p["lastUpdateTime"].as_str().unwrap_or(now).to_string()
            } else {
                now.to_string()
            };
            (t, u)
        }
        _ => (now.to_string(), now.to_string()),
    };
    json!({"type": kind, "status": status, "lastUpdateTime": update, "lastTransitionTime": transition, "reason": reason, "message": message})
}

/// A Deployment's status from its ReplicaSets and their pods (`owned`: each ReplicaSet with its
/// pods). Returns when the progress deadline will pass, if the rollout is still progressing.
pub(crate) fn reconcile_deployment_status(
    store: &Store,
    memory: &mut Memory,
    d: &Value,
    owned: &[(Value, Vec<Value>)],
) -> Option<Instant> {
    let now = crate::store::now_rfc3339();
    let template = d.pointer("/spec/template")?;
    let new_rs_name = format!("{}-{}", name_of(d), pod_template_hash(template));
    let want = replicas(d);
    let mut total = 0i64;
    let mut updated = 0i64;
    let mut ready = 0i64;
    for (rs, rs_pods) in owned {
        total += rs_pods.len() as i64;
        ready += rs_pods.iter().filter(|p| pod_ready(p)).count() as i64;
        if name_of(rs) == new_rs_name {
            updated += rs_pods.len() as i64;
        }
    }
    let new_ready = owned
        .iter()
        .find(|(r, _)| name_of(r) == new_rs_name)
        .map(|(_, rs_pods)| rs_pods.iter().filter(|p| pod_ready(p)).count() as i64)
        .unwrap_or(0);
    let complete = updated == want && total == want && new_ready == want;
    let gen_ = generation(d);
    let entry = memory
        .progress
        .entry(uid_of(d).to_string())
        .or_insert((gen_, Instant::now()));
    if entry.0 != gen_ {
        *entry = (gen_, Instant::now());
    }
    let deadline = Duration::from_secs(
        d.pointer("/spec/progressDeadlineSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(600),
    );
    let old = d.get("status");
    let available = ready >= want;
    let available_cond = if available {
        keep_times(
            old,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &now,
        )
    } else {
        keep_times(
            old,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &now,
        )
    };
    let progress_deadline = entry.1 + deadline;
    let progressing_cond = if complete {
        keep_times(
            old,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_rs_name}\" has successfully progressed."),
            &now,
        )
    } else if entry.1.elapsed() > deadline {
        keep_times(
            old,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{new_rs_name}\" has timed out progressing."),
            &now,
        )
    } else {
        keep_times(
            old,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{new_rs_name}\" is progressing."),
            &now,
        )
    };
    let mut status =
        json!({"observedGeneration": gen_, "conditions": [available_cond, progressing_cond]});
    put_nonzero(&mut status, "replicas", total);
    put_nonzero(&mut status, "updatedReplicas", updated);
    put_nonzero(&mut status, "readyReplicas", ready);
    put_nonzero(&mut status, "availableReplicas", ready);
    put_nonzero(&mut status, "unavailableReplicas", (want - ready).max(0));
    write_status(store, resources::deployments(), d, status);
    // Just past the deadline, so `elapsed() > deadline` holds when it fires.
    (!complete && Instant::now() <= progress_deadline)
        .then(|| progress_deadline + Duration::from_millis(1))
}

/// A DaemonSet's status: scheduled and ready on the one node.
pub(crate) fn reconcile_daemonset(store: &Store, ds: &Value) {
    let status = json!({
        "currentNumberScheduled": 1,
        "desiredNumberScheduled": 1,
        "numberAvailable": 1,
        "numberMisscheduled": 0,
        "numberReady": 1,
        "updatedNumberScheduled": 1,
        "observedGeneration": generation(ds),
    });
    write_status(store, resources::daemonsets(), ds, status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv32a_matches_go() {
        // hash/fnv New32a of "" and "a".
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
    }

    #[test]
    fn template_hash_is_stable_and_safe() {
        let t1 = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let t2 = json!({"spec": {"containers": [{"image": "nginx", "name": "c"}]}, "metadata": {"labels": {"app": "x", "pod-template-hash": "zzz"}}});
        assert_eq!(pod_template_hash(&t1), pod_template_hash(&t2));
        let h = pod_template_hash(&t1);
        assert!(
            !h.is_empty() && h.len() <= 10 && h.bytes().all(|b| SAFE_ALPHABET.contains(&b)),
            "{h}"
        );
        let t3 = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        assert_ne!(pod_template_hash(&t1), pod_template_hash(&t3));
    }
}
