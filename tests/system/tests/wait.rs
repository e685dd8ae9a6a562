//! The wait stage in-process against an in-process kubesim: happy path, every fail-fast reason,
//! the deadline, partial profiles, a restarted handler, many jobs on one set of watches, and
//! dropped watch connections.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kubesim::{Config, Faults, Timings};
use serde_json::{Value, json};
use vexxy_events::pipeline::{Observation, SandboxRef};
use vexxy_events::request::{RunConfig, ValidatedRequest};
use vexxy_events::{FailureReason, PipelineTicket};
use vexxy_runtime::StageError;
use vexxy_wait::{OnTimeout, WaitConfig, WaitHandler};

const SANDBOX_NS: &str = "vexxy-sandbox";
const PROFILES: &str = "containerprofiles.spdx.softwarecomposition.kubescape.io";
const VEX: &str = "openvulnerabilityexchangecontainers.spdx.softwarecomposition.kubescape.io";
/// Upper bound for any single wait in these tests (jobs normally finish in a few seconds).
const TEST_BOUND: Duration = Duration::from_secs(60);
const DIGEST: &str = "sha256:3b1f0a9c6f5e2d4b8a7c9e0f1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4";

/// Short delays, and node-agent's first save (200 ms) shorter than these tests' learning
/// periods: their containers have a `ready` profile and a learning-time scan, so wait takes rule
/// B (see `wait_config`'s short bound). The tests of rule A set the first save back to its
/// 2-minute default.
fn fast_timings() -> Timings {
    Timings {
        pod_start_delay_ms: 100,
        learning_period_ms: 1_000,
        first_save_delay_ms: 200,
        consolidation_delay_ms: 100,
        scan_delay_ms: 100,
        bookmark_interval_ms: 1_000,
    }
}

struct Cluster {
    sim: kubesim::Handle,
    client: Client,
}

async fn cluster(faults: Faults) -> Result<Cluster> {
    cluster_with(fast_timings(), faults).await
}

async fn cluster_with(timings: Timings, faults: Faults) -> Result<Cluster> {
    let sim = kubesim::Server::start(Config {
        seed: Some(7),
        timings,
        faults,
        ..Config::default()
    })
    .await
    .context("start kubesim")?;
    let config = kube::Config::new(sim.url().parse().context("kubesim url")?);
    let client = Client::try_from(config).context("kube client for kubesim")?;
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": SANDBOX_NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .context("create sandbox ns")?;
    Ok(Cluster { sim, client })
}

/// kubesim's emulated kubevuln scans within `scan_delay_ms` (100 ms): a 1 s learning-scan bound
/// covers it.
fn wait_config() -> WaitConfig {
    WaitConfig {
        vex_settle: Duration::from_secs(30),
        learning_scan_bound: Duration::from_secs(1),
        grace: Duration::from_secs(30),
        image_pull_grace: Duration::from_secs(30),
        ..WaitConfig::default()
    }
}

/// Creates the sandbox Deployment the way the deploy stage does and returns the ticket it hands on.
async fn deploy(
    cluster: &Cluster,
    job_id: &str,
    image: &str,
    window_seconds: u64,
    sniffing: &str,
) -> Result<PipelineTicket> {
    let name = format!("vexxy-{job_id}");
    let labels = json!({"app.kubernetes.io/managed-by": "vexxy", "vexxy.io/job-id": job_id});
    let mut pod_labels = labels.clone();
    pod_labels["kubescape.io/max-sniffing-time"] = json!(sniffing);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": SANDBOX_NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"vexxy.io/job-id": job_id}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": format!("{image}@{DIGEST}")}]},
            },
        },
    }))?;
    Api::<Deployment>::namespaced(cluster.client.clone(), SANDBOX_NS)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("create deployment {name}"))?;
    Ok(PipelineTicket {
        request: ValidatedRequest {
            job_id: job_id.to_string(),
            image_ref: image.to_string(),
            image_digest: DIGEST.to_string(),
            repository: image.to_string(),
            registry: "docker.io".to_string(),
            tag: None,
            request_msg_id: None,
            analysis_duration_seconds: window_seconds,
            config: RunConfig::default(),
            labels: BTreeMap::new(),
        },
        timings: Vec::new(),
        sandbox: Some(SandboxRef {
            namespace: SANDBOX_NS.to_string(),
            deployment: name,
            container: "app".to_string(),
            created_at: Utc::now(),
        }),
        observation: None,
        evidence: None,
    })
}

async fn wait(
    handler: &WaitHandler,
    ticket: PipelineTicket,
) -> Result<Result<Observation, StageError>> {
    match tokio::time::timeout(TEST_BOUND, handler.wait(ticket))
        .await
        .context("wait did not decide in time")?
    {
        Ok(ticket) => Ok(Ok(ticket
            .observation
            .context("wait handed on without an observation")?)),
        Err(error) => Ok(Err(error)),
    }
}

fn permanent_reason(result: Result<Observation, StageError>) -> Result<(FailureReason, String)> {
    match result {
        Err(StageError::Permanent {
            reason, message, ..
        }) => Ok((reason, message)),
        other => bail!("expected a permanent failure, got {other:?}"),
    }
}

/// The job's pod as kubesim stores it.
fn job_pod(cluster: &Cluster, job_id: &str) -> Option<Value> {
    let pods = kubesim::resources::find("", "pods").expect("pods resource");
    let (pods, _) = cluster.sim.store().list(pods, Some(SANDBOX_NS));
    pods.into_iter().find(|p| {
        p.pointer("/metadata/labels/vexxy.io~1job-id")
            .and_then(Value::as_str)
            == Some(job_id)
    })
}

fn started_at(pod: &Value) -> Option<DateTime<Utc>> {
    pod.pointer("/status/containerStatuses/0/state/running/startedAt")?
        .as_str()?
        .parse()
        .ok()
}

fn storage_names(cluster: &Cluster, plural: &str, namespace: &str) -> Vec<String> {
    let resource = kubesim::resources::find("spdx.softwarecomposition.kubescape.io", plural)
        .expect("storage resource");
    let (objects, _) = cluster.sim.store().list(resource, Some(namespace));
    objects
        .iter()
        .filter_map(|o| {
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

fn profile_annotation(cluster: &Cluster, slug: &str, key: &str) -> Option<String> {
    let resource =
        kubesim::resources::find("spdx.softwarecomposition.kubescape.io", "containerprofiles")?;
    let profile = cluster.sim.store().get(resource, SANDBOX_NS, slug).ok()?;
    profile
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// Polls a condition on kubesim's store, bounded in count and time.
async fn until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
    for _ in 0..600 {
        if let Some(value) = probe() {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}

/// Waits until the handler's four watches have listed (the storage kinds: opened and LISTed), so
/// objects created afterwards reach it as watch events (as in production, where wait runs long
/// before the jobs it waits for).
async fn synced(handler: &WaitHandler) -> Result<()> {
    until("the wait handler's watches to list", || {
        let stats = handler.stats();
        (stats.synced && stats.storage_covered).then_some(())
    })
    .await
}

fn storage_object(cluster: &Cluster, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let resource = kubesim::resources::find("spdx.softwarecomposition.kubescape.io", plural)?;
    cluster.sim.store().get(resource, namespace, name).ok()
}

/// kubevuln v0.3.159 counts its writes of one VEX document in `spec.version` (0 = first scan).
fn vex_scans_before(vex: &Value) -> i64 {
    vex.pointer("/spec/version")
        .and_then(Value::as_i64)
        .expect("the VEX has a version")
}

#[tokio::test]
async fn a_short_window_without_a_ready_save_finishes_on_the_vex_in_any_order() -> Result<()> {
    // Zero delays: kubesim writes the completed profile, the filtered SBOM and the VEX back to
    // back, and the separate watch streams often deliver the VEX first. node-agent's first save
    // is the chart's 2 minutes, longer than the 1 s windows: no `ready` profile, no learning-time
    // scan. Settle, bound and deadline far beyond TEST_BOUND: every job can only finish by
    // rule A.
    let cluster = cluster_with(
        Timings {
            pod_start_delay_ms: 0,
            consolidation_delay_ms: 0,
            scan_delay_ms: 0,
            first_save_delay_ms: 120_000,
            ..fast_timings()
        },
        Faults::default(),
    )
    .await?;
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            vex_settle: Duration::from_secs(3600),
            learning_scan_bound: Duration::from_secs(3600),
            grace: Duration::from_secs(3600),
            ..wait_config()
        },
    );
    synced(&handler).await?;
    let names: Vec<String> = (0..30).map(|i| format!("brief-{i}")).collect();
    let tickets: Vec<PipelineTicket> = futures::future::try_join_all(
        names
            .iter()
            .map(|job| deploy(&cluster, job, "docker.io/library/nginx", 1, "1s")),
    )
    .await?;
    let results = futures::future::join_all(tickets.into_iter().map(|t| wait(&handler, t))).await;
    for result in results {
        let observation = result?.map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(!observation.partial, "{observation:?}");
        assert_eq!(observation.learning_status, "completed");
        let vex = storage_object(
            &cluster,
            "openvulnerabilityexchangecontainers",
            "kubescape",
            &observation.instance_slug,
        )
        .context("the VEX the job finished on")?;
        assert_eq!(
            vex_scans_before(&vex),
            0,
            "one scan, of the completed profile"
        );
    }
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_learning_time_vex_written_after_completion_is_not_taken_before_the_bound() -> Result<()>
{
    // node-agent saves `ready` at 200 ms, in the profile within 100 ms (storage's consolidation);
    // learning ends at 2 s, `completed` by 2.1 s.
    // kubevuln's scan of the `ready` profile takes 2.5 s: it writes at 2.8 s, after the
    // completion, and the scan of the completed profile only at 4.6 s. The old receive-order
    // rule took the learning-time write for final; rule B must not before the bound (an hour
    // here, so nothing but the bound can hold the job).
    let cluster = cluster_with(
        Timings {
            scan_delay_ms: 2_500,
            ..fast_timings()
        },
        Faults::default(),
    )
    .await?;
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            vex_settle: Duration::from_secs(5),
            learning_scan_bound: Duration::from_secs(3600),
            grace: Duration::from_secs(3600),
            ..wait_config()
        },
    );
    synced(&handler).await?;
    // Every store change in resourceVersion order, to see the writes as they happen.
    let mut changes = cluster.sim.store().subscribe_events();
    let ticket = deploy(&cluster, "gap", "docker.io/library/nginx", 2, "2s").await?;
    let waiting = tokio::spawn({
        let handler = handler.clone();
        async move { wait(&handler, ticket).await }
    });
    let mut statuses: Vec<String> = Vec::new();
    let mut vex_versions: Vec<(i64, Option<String>)> = Vec::new();
    while vex_versions.len() < 2 {
        let change = tokio::time::timeout(TEST_BOUND, changes.recv())
            .await
            .context("kubesim stopped writing")?
            .context("the store's change feed")?;
        let object = &change.object;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !name.starts_with("replicaset-vexxy-gap-") {
            continue;
        }
        match change.resource.plural {
            // node-agent's per-save objects `<slug>-<32 hex>` are not the profile.
            "containerprofiles"
                if object
                    .pointer("/metadata/annotations/kubescape.io~1report-series-id")
                    .is_some() => {}
            "containerprofiles" => {
                let status = object
                    .pointer("/metadata/annotations/kubescape.io~1status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if statuses.last() != Some(&status) {
                    statuses.push(status);
                }
            }
            "openvulnerabilityexchangecontainers" => {
                vex_versions.push((vex_scans_before(object), statuses.last().cloned()));
            }
            _ => {}
        }
    }
    // The scenario: the learning-time scan's VEX (version 0) was written after the profile
    // completed, then the completed profile's scan rewrote it.
    // No profile before node-agent's first save: it starts `ready`.
    assert_eq!(statuses, ["ready", "completed"]);
    assert_eq!(
        vex_versions,
        [(0, Some("completed".into())), (1, Some("completed".into()))]
    );
    assert!(
        !waiting.is_finished(),
        "the job was handed on before VEXXY_LEARNING_SCAN_BOUND: {:?}",
        waiting.await
    );
    waiting.abort();
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn happy_path_observes_the_completed_profile_and_the_vex_write() -> Result<()> {
    let cluster = cluster(Faults::default()).await?;
    // VEXXY_VEX_SETTLE far beyond TEST_BOUND: the job (which had a `ready` save, so rule B) can
    // only end because kubevuln's write following completion was seen, not by waiting it out.
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            vex_settle: Duration::from_secs(3600),
            ..wait_config()
        },
    );
    let ticket = deploy(&cluster, "happy", "docker.io/library/nginx", 1, "1s").await?;
    let observation = wait(&handler, ticket)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let pod = job_pod(&cluster, "happy").context("pod")?;
    assert_eq!(observation.pod, pod["metadata"]["name"].as_str().unwrap());
    assert_eq!(
        observation.replicaset,
        pod["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap()
    );
    assert!(observation.replicaset.starts_with("vexxy-happy-"));
    assert!(
        storage_names(&cluster, "containerprofiles", SANDBOX_NS)
            .contains(&observation.instance_slug)
    );
    assert!(
        storage_names(&cluster, "openvulnerabilityexchangecontainers", "kubescape")
            .contains(&observation.instance_slug)
    );
    assert_eq!(
        observation.instance_id,
        format!(
            "apiVersion-apps/v1/namespace-{SANDBOX_NS}/kind-ReplicaSet/name-{}/containerName-app",
            observation.replicaset
        )
    );
    assert_eq!(
        profile_annotation(
            &cluster,
            &observation.instance_slug,
            "kubescape.io/instance-id"
        )
        .as_deref(),
        Some(observation.instance_id.as_str())
    );
    assert_eq!(
        (
            observation.learning_status.as_str(),
            observation.learning_completion.as_str()
        ),
        ("completed", "complete")
    );
    assert_eq!(Some(observation.window_start), started_at(&pod));
    assert!(observation.window_end > observation.window_start);
    assert_eq!(observation.container_restarts, 0);
    assert!(!observation.partial);
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn pull_failure_crashloop_and_unschedulable_fail_fast_with_their_reasons() -> Result<()> {
    let cluster = cluster(Faults::default()).await?;
    let handler = WaitHandler::start(cluster.client.clone(), wait_config());
    let pull = deploy(&cluster, "pull", "registry.example/pull-fail", 300, "5m").await?;
    let crash = deploy(&cluster, "crash", "registry.example/crashloop", 300, "5m").await?;
    let unsched = deploy(
        &cluster,
        "unsched",
        "registry.example/unschedulable",
        300,
        "5m",
    )
    .await?;
    let (pull, crash, unsched) = tokio::join!(
        wait(&handler, pull),
        wait(&handler, crash),
        wait(&handler, unsched)
    );

    let (reason, message) = permanent_reason(pull?)?;
    assert_eq!(reason, FailureReason::ImagePullFailed);
    assert!(
        message.contains("registry.example/pull-fail") && message.contains("digest exists"),
        "{message}"
    );
    let (reason, message) = permanent_reason(crash?)?;
    assert_eq!(reason, FailureReason::ContainerCrashLooping);
    assert!(
        message.contains("last exit code 1") && message.contains("without a TTY"),
        "{message}"
    );
    let (reason, message) = permanent_reason(unsched?)?;
    assert_eq!(reason, FailureReason::Unschedulable);
    assert!(message.contains("SANDBOX_CPU_REQUEST"), "{message}");
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_sandbox_deleted_mid_wait_fails_with_sandbox_disappeared() -> Result<()> {
    let cluster = cluster(Faults::default()).await?;
    let handler = WaitHandler::start(cluster.client.clone(), wait_config());
    let ticket = deploy(&cluster, "deleted", "docker.io/library/nginx", 300, "5m").await?;
    let name = ticket.sandbox.as_ref().unwrap().deployment.clone();
    let waiting = tokio::spawn({
        let handler = handler.clone();
        async move { wait(&handler, ticket).await }
    });
    until("the pod to run", || {
        job_pod(&cluster, "deleted").and_then(|p| started_at(&p))
    })
    .await?;
    Api::<Deployment>::namespaced(cluster.client.clone(), SANDBOX_NS)
        .delete(&name, &DeleteParams::default())
        .await?;
    let (reason, message) = permanent_reason(waiting.await??)?;
    assert_eq!(reason, FailureReason::SandboxDisappeared);
    assert!(message.contains(&name), "{message}");
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_deadline_goes_on_partial_with_evidence_or_fails_with_analysis_timeout() -> Result<()> {
    let cluster = cluster(Faults::default()).await?;
    let short = WaitConfig {
        grace: Duration::from_secs(2),
        ..wait_config()
    };
    let partial = WaitHandler::start(cluster.client.clone(), short.clone());
    let strict = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            on_timeout: OnTimeout::Fail,
            ..short.clone()
        },
    );
    // Kubescape learns for an hour, far beyond the 1 s window + 2 s grace.
    let a = deploy(&cluster, "late-a", "docker.io/library/nginx", 1, "1h").await?;
    let b = deploy(&cluster, "late-b", "docker.io/library/nginx", 1, "1h").await?;
    let (a, b) = tokio::join!(wait(&partial, a), wait(&strict, b));

    let observation = a?.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(observation.partial);
    assert_eq!(observation.learning_status, "ready");
    assert_eq!(
        profile_annotation(&cluster, &observation.instance_slug, "kubescape.io/status").as_deref(),
        Some("ready")
    );
    let (reason, message) = permanent_reason(b?)?;
    assert_eq!(reason, FailureReason::AnalysisTimeout);
    assert!(
        message.contains("status `ready`") && message.contains("node-agent"),
        "{message}"
    );

    // No profile at all (relevancy off): nothing to go on with, even under `partial`.
    let mut kubescape = cluster.sim.config().kubescape;
    kubescape.capabilities.relevancy = false;
    cluster.sim.set_kubescape(kubescape)?;
    let c = deploy(&cluster, "late-c", "docker.io/library/nginx", 1, "1s").await?;
    let (reason, message) = permanent_reason(wait(&partial, c).await?)?;
    assert_eq!(reason, FailureReason::AnalysisTimeout);
    assert!(message.contains("no ContainerProfile"), "{message}");
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn kubescape_installed_after_the_pod_started_yields_partial_evidence() -> Result<()> {
    let cluster = cluster(Faults::default()).await?;
    cluster.sim.set_kubescape_installed(false)?;
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            grace: Duration::from_secs(3),
            ..wait_config()
        },
    );
    let ticket = deploy(&cluster, "early", "docker.io/library/nginx", 1, "1s").await?;
    // A partial profile is not final (a restarted container could still complete it): the
    // job goes on partial only at its deadline.
    let deadline =
        ticket.sandbox.as_ref().context("sandbox")?.created_at + chrono::Duration::seconds(1 + 3);
    let waiting = tokio::spawn({
        let handler = handler.clone();
        async move { wait(&handler, ticket).await }
    });
    until("the pod to run", || {
        job_pod(&cluster, "early").and_then(|p| started_at(&p))
    })
    .await?;
    cluster.sim.set_kubescape_installed(true)?;
    let observation = waiting.await??.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(observation.partial);
    assert_eq!(
        (
            observation.learning_status.as_str(),
            observation.learning_completion.as_str()
        ),
        ("completed", "partial")
    );
    assert!(
        observation.window_end >= deadline,
        "went on at {} before the deadline {deadline}",
        observation.window_end
    );
    cluster.sim.shutdown().await;
    Ok(())
}

/// A storage object written through the API, as node-agent and kubevuln write theirs.
fn storage_write(
    kind: &str,
    namespace: &str,
    name: &str,
    annotations: Value,
    spec: Value,
) -> Value {
    json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    })
}

#[tokio::test]
async fn a_partial_profile_is_waited_on_until_the_restarted_container_completes_it() -> Result<()> {
    // This test plays node-agent and kubevuln itself, to control each write (relevancy off:
    // kubesim's emulated node-agent writes nothing; kubesim's own lifecycle of an exit and a
    // restart is tested in tests/kubesim/tests/kubescape.rs): the container exits non-zero
    // while learning (`completed`/`partial`), restarts and finishes learning
    // (`completed`/`complete`), and kubevuln scans the complete profile.
    let cluster = cluster(Faults::default()).await?;
    let mut kubescape = cluster.sim.config().kubescape;
    kubescape.capabilities.relevancy = false;
    cluster.sim.set_kubescape(kubescape)?;
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            vex_settle: Duration::from_secs(3600),
            ..wait_config()
        },
    );
    synced(&handler).await?;
    let ticket = deploy(&cluster, "restart", "docker.io/library/nginx", 5, "5s").await?;
    let waiting = tokio::spawn({
        let handler = handler.clone();
        async move { wait(&handler, ticket).await }
    });
    let pod = until("the pod to run", || {
        job_pod(&cluster, "restart").filter(|p| started_at(p).is_some())
    })
    .await?;
    let replicaset = pod
        .pointer("/metadata/ownerReferences/0/name")
        .and_then(Value::as_str)
        .context("the pod's ReplicaSet")?;
    let owner = vexxy_kubescape::names::InstanceOwner {
        api_version: "apps/v1",
        namespace: SANDBOX_NS,
        kind: "ReplicaSet",
        name: replicaset,
    };
    let container = vexxy_kubescape::names::ContainerType::Container;
    let slug = vexxy_kubescape::names::slug_for(&owner, container, "app");
    let storage = |plural: &str, kind: &str, namespace: &str| {
        let resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "spdx.softwarecomposition.kubescape.io",
                "v1beta1",
                kind,
            ),
            plural,
        );
        Api::<kube::api::DynamicObject>::namespaced_with(
            cluster.client.clone(),
            namespace,
            &resource,
        )
    };
    let profiles = storage("containerprofiles", "ContainerProfile", SANDBOX_NS);
    let learning = |status: &str, completion: &str| {
        serde_json::from_value::<kube::api::DynamicObject>(storage_write(
            "ContainerProfile",
            SANDBOX_NS,
            &slug,
            json!({"kubescape.io/status": status, "kubescape.io/completion": completion}),
            json!({"architectures": ["amd64"], "execs": [{"path": "/usr/sbin/nginx"}]}),
        ))
    };
    profiles
        .create(&PostParams::default(), &learning("completed", "partial")?)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !waiting.is_finished(),
        "the job ended on a partial profile: {:?}",
        waiting.await
    );
    let mut complete = learning("completed", "complete")?;
    complete.metadata.resource_version = profiles.get(&slug).await?.metadata.resource_version;
    profiles
        .replace(&slug, &PostParams::default(), &complete)
        .await?;
    storage("openvulnerabilityexchangecontainers", "OpenVulnerabilityExchangeContainer", "kubescape")
        .create(
            &PostParams::default(),
            &serde_json::from_value(storage_write(
                "OpenVulnerabilityExchangeContainer",
                "kubescape",
                &slug,
                json!({}),
                json!({"@context": "https://openvex.dev/ns/v0.2.0", "@id": "x", "author": "kubescape.io",
                       "timestamp": "2026-01-01T00:00:00Z", "version": 1, "statements": []}),
            ))?,
        )
        .await?;
    let observation = waiting.await??.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(observation.instance_slug, slug);
    assert!(!observation.partial, "{observation:?}");
    assert_eq!(
        (
            observation.learning_status.as_str(),
            observation.learning_completion.as_str()
        ),
        ("completed", "complete")
    );
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_new_handler_resumes_a_wait_with_the_original_window() -> Result<()> {
    let cluster = cluster(Faults::default()).await?;
    let first = WaitHandler::start(cluster.client.clone(), wait_config());
    let ticket = deploy(&cluster, "resume", "docker.io/library/nginx", 3, "3s").await?;
    let redelivered = ticket.clone();
    let waiting = tokio::spawn({
        let handler = first.clone();
        async move { wait(&handler, ticket).await }
    });
    // Drop the first handler while Kubescape is still learning.
    let slug = until("a learning profile", || {
        storage_names(&cluster, "containerprofiles", SANDBOX_NS)
            .into_iter()
            .find(|slug| {
                slug.contains("vexxy-resume-")
                    && profile_annotation(&cluster, slug, "kubescape.io/status").as_deref()
                        == Some("ready")
                    // The profile, not one of node-agent's per-save objects `<slug>-<32 hex>`.
                    && profile_annotation(&cluster, slug, "kubescape.io/report-series-id")
                        .is_none()
            })
    })
    .await?;
    waiting.abort();
    assert!(waiting.await.is_err_and(|e| e.is_cancelled()));
    drop(first);

    let second = WaitHandler::start(cluster.client.clone(), wait_config());
    let observation = wait(&second, redelivered)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(observation.instance_slug, slug);
    assert!(!observation.partial);
    let pod = job_pod(&cluster, "resume").context("pod")?;
    assert_eq!(
        Some(observation.window_start),
        started_at(&pod),
        "the window is the cluster's, not the handler's"
    );
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn many_jobs_share_one_watch_per_kind_and_cost_almost_no_requests() -> Result<()> {
    const JOBS: usize = 200;
    let cluster = cluster(Faults::default()).await?;
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            vex_settle: Duration::from_secs(5),
            ..wait_config()
        },
    );
    // Jobs that look before the storage LISTs answered read their own objects (correctly);
    // this test counts what the steady state costs.
    synced(&handler).await?;
    let names: Vec<String> = (0..JOBS).map(|i| format!("many-{i}")).collect();
    let tickets: Vec<PipelineTicket> = futures::future::try_join_all(
        names
            .iter()
            .map(|job| deploy(&cluster, job, "docker.io/library/nginx", 2, "2s")),
    )
    .await?;
    let results = futures::future::join_all(tickets.into_iter().map(|t| wait(&handler, t))).await;
    let mut slugs = std::collections::HashSet::new();
    for result in results {
        let observation = result?.map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(!observation.partial, "{observation:?}");
        slugs.insert(observation.instance_slug);
    }
    assert_eq!(slugs.len(), JOBS);

    let counters = cluster.sim.counters();
    for resource in ["pods", "deployments.apps", PROFILES, VEX] {
        assert_eq!(
            counters.get("watch", resource),
            1,
            "watches of {resource}: {counters:?}"
        );
    }
    for resource in ["pods", "deployments.apps"] {
        assert_eq!(
            counters.get("list", resource),
            1,
            "lists of {resource}: {counters:?}"
        );
    }
    // The storage kinds are listed once after their watch opened (namespaced, metadata only),
    // and from then on the watch delivers every write: no job needs a read of its own.
    for resource in [PROFILES, VEX] {
        assert_eq!(counters.get("list", resource), 1, "{counters:?}");
        assert_eq!(counters.get("get", resource), 0, "{counters:?}");
    }
    // Besides that, at most one GET of its Deployment per job.
    let gets = counters.get("get", "deployments.apps");
    assert!(
        gets <= JOBS as u64,
        "{gets} deployment GETs for {JOBS} jobs"
    );
    let other_reads: u64 = counters
        .requests
        .iter()
        .filter(|(resource, _)| {
            !["deployments.apps", "namespaces", PROFILES, VEX].contains(&resource.as_str())
        })
        .flat_map(|(_, verbs)| verbs.iter())
        .filter(|(verb, _)| !["watch", "list"].contains(&verb.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        other_reads, 0,
        "per-job requests beyond the watches and reads: {counters:?}"
    );
    assert_eq!(
        handler.stats().registered_keys,
        0,
        "finished jobs unregister"
    );
    eprintln!("kubesim requests during {JOBS} waits: {counters:?}");
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn dropped_watch_connections_lose_no_job() -> Result<()> {
    // Every watch is cut after a few events: kube-runtime resumes the Pod and Deployment watches
    // from the last resourceVersion; the storage watches re-open (no replay) and are followed by
    // a LIST of their namespace, so what was written meanwhile is not lost.
    let faults = Faults {
        watch_drop_after_events: Some(3),
        ..Faults::default()
    };
    let cluster = cluster(faults).await?;
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            vex_settle: Duration::from_secs(5),
            ..wait_config()
        },
    );
    let mut tickets = Vec::new();
    for i in 0..10 {
        tickets.push(
            deploy(
                &cluster,
                &format!("drop-{i}"),
                "docker.io/library/nginx",
                2,
                "2s",
            )
            .await?,
        );
    }
    let results = futures::future::join_all(tickets.into_iter().map(|t| wait(&handler, t))).await;
    for result in results {
        let observation = result?.map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(!observation.partial);
        assert_eq!(observation.learning_status, "completed");
    }
    let counters = cluster.sim.counters();
    assert!(
        counters.get("watch", PROFILES) > 1,
        "the fault was not exercised: {counters:?}"
    );
    for resource in [PROFILES, VEX] {
        let (watches, lists) = (
            counters.get("watch", resource),
            counters.get("list", resource),
        );
        assert!(
            (watches.saturating_sub(1)..=watches).contains(&lists),
            "every opening of the {resource} watch is followed by one LIST (the last may still be on its way): {counters:?}"
        );
    }
    cluster.sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn api_errors_during_the_wait_are_retried_not_job_failures() -> Result<()> {
    let rule = |verb: &str, resource: &str| kubesim::FaultRule {
        verb: verb.to_string(),
        resource: resource.to_string(),
        status: 500,
        rate: 1.0,
        max: Some(3),
    };
    let faults = Faults {
        rules: vec![
            rule("list", "pods"),
            rule("watch", PROFILES),
            rule("get", VEX),
            rule("watch", "deployments.apps"),
        ],
        ..Faults::default()
    };
    let cluster = cluster(faults).await?;
    let handler = WaitHandler::start(
        cluster.client.clone(),
        WaitConfig {
            vex_settle: Duration::from_secs(5),
            ..wait_config()
        },
    );
    let ticket = deploy(&cluster, "flaky", "docker.io/library/nginx", 1, "1s").await?;
    let observation = wait(&handler, ticket)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(!observation.partial);
    assert_eq!(observation.learning_status, "completed");
    assert_eq!(
        cluster.sim.faults_injected(),
        12,
        "every injected failure was met and retried"
    );
    cluster.sim.shutdown().await;
    Ok(())
}
