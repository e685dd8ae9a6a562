//! The RBAC in deploy/base equals what the stages use.
//!
//! Each stage's handler runs in-process against one kubesim, with the configuration its
//! Deployment in deploy/base gives it (ConfigMap, Secret and env, rendered by `kubectl
//! kustomize`), through a kube client whose every request is recorded (a tower layer). The
//! scenarios take every path that calls the API in production: install-check's readiness checks;
//! deploy's create and a redelivery (409, then GET); wait's watches until a real analysis
//! finishes, and the GET for a sandbox the watch has never shown; extract's reads, the sandbox
//! deletion and a janitor sweep. kubesim's own request counters must match the recording, so no
//! request escaped it.
//!
//! Each request becomes a permission (verb, API group, resource, namespace or cluster-wide,
//! object name); the ServiceAccount's grants are expanded the same way from the rendered Roles,
//! ClusterRoles and bindings. The test fails when a request is not granted (the stage would get
//! 403 in a real cluster), when a grant is never used, or when a grant is cluster-wide but only
//! used in some namespaces; the message lists each difference.

mod deploy_manifests_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use deploy_manifests_support::{container_env, kind, name, namespace, render, vexxy_deployment};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use vexxy_events::pipeline::SandboxRef;
use vexxy_events::request::parse_request;
use vexxy_events::{PipelineTicket, ValidatedRequest, ValidationPolicy};
use vexxy_harness::NatsServer;
use vexxy_runtime::{StageError, Store};

const BASE: &str = "deploy/base";
/// Bound for each stage's scenario (an analysis on kubesim's fast timings takes a few seconds).
const SCENARIO_BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Recording every request a kube client sends.

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(http::Method, http::Uri)>>>);

impl Recorder {
    fn requests(&self) -> Vec<(http::Method, http::Uri)> {
        self.0.lock().expect("recorder lock").clone()
    }
}

struct RecordingLayer(Recorder);

impl<S> tower::Layer<S> for RecordingLayer {
    type Service = Recording<S>;
    fn layer(&self, inner: S) -> Recording<S> {
        Recording {
            inner,
            recorder: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Recording<S> {
    inner: S,
    recorder: Recorder,
}

impl<S, B> tower::Service<http::Request<B>> for Recording<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.recorder
            .0
            .lock()
            .expect("recorder lock")
            .push((request.method().clone(), request.uri().clone()));
        self.inner.call(request)
    }
}

fn recording_client(sim: &kubesim::Handle) -> Result<(kube::Client, Recorder)> {
    let recorder = Recorder::default();
    let config = kube::Config::new(sim.url().parse().context("kubesim url")?);
    let client = kube::client::ClientBuilder::try_from(config)
        .context("kube client builder")?
        .with_layer(&RecordingLayer(recorder.clone()))
        .build();
    Ok((client, recorder))
}

// ---------------------------------------------------------------------------------------------
// Permissions: what a request needs, what a rule grants.

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Cluster,
    Namespace(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Permission {
    verb: String,
    group: String,
    resource: String,
    scope: Scope,
    /// The object's name for requests on one object; for grants, `resourceNames` (None = any).
    name: Option<String>,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        let scope = match &self.scope {
            Scope::Cluster => "cluster-wide".to_string(),
            Scope::Namespace(ns) => format!("in namespace {ns}"),
        };
        write!(f, "{} {}/{} {scope}", self.verb, group, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " (name {name})")?;
        }
        Ok(())
    }
}

/// The permission an API request needs; None for discovery, which every identity may call.
fn needed(method: &http::Method, uri: &http::Uri) -> Result<Option<Permission>> {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let (scope, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => {
            (Scope::Namespace(ns.to_string()), rest)
        }
        _ => (Scope::Cluster, rest),
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        [resource, name, subresource] => {
            (format!("{resource}/{subresource}"), Some(name.to_string()))
        }
        _ => bail!("cannot read {method} {uri} as an API request"),
    };
    let watching = uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watching => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => bail!("unexpected method {other} in {uri}"),
    };
    // A create names no object in its path; the object's name is in the body.
    let name = if verb == "create" { None } else { name };
    Ok(Some(Permission {
        verb: verb.to_string(),
        group: group.to_string(),
        resource,
        scope,
        name,
    }))
}

/// Everything the rendered bindings grant ServiceAccount `vexxy/<account>`.
fn granted(objects: &[Value], account: &str) -> Result<BTreeSet<Permission>> {
    let binds_account = |binding: &Value| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == "vexxy"
            })
    };
    let mut grants = BTreeSet::new();
    for binding in objects.iter().filter(|o| binds_account(o)) {
        let (scope, role_kind) = match kind(binding) {
            "RoleBinding" => (
                Scope::Namespace(
                    namespace(binding)
                        .context("RoleBinding without namespace")?
                        .to_string(),
                ),
                binding["roleRef"]["kind"].as_str().unwrap_or(""),
            ),
            "ClusterRoleBinding" => (Scope::Cluster, "ClusterRole"),
            other => bail!(
                "{other} {} has subjects but is not a binding",
                name(binding)
            ),
        };
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or("");
        let role = objects
            .iter()
            .find(|o| {
                kind(o) == role_kind
                    && name(o) == role_name
                    && (role_kind == "ClusterRole" || namespace(o) == namespace(binding))
            })
            .with_context(|| {
                format!(
                    "{} {} refers to {role_kind} {role_name}, which is not in {BASE}",
                    kind(binding),
                    name(binding)
                )
            })?;
        for rule in role["rules"].as_array().into_iter().flatten() {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            let names: Vec<Option<String>> = match strings("resourceNames") {
                names if names.is_empty() => vec![None],
                names => names.into_iter().map(Some).collect(),
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        if [&group, &resource, &verb].iter().any(|s| s.contains('*')) {
                            bail!(
                                "{role_kind} {role_name} grants a wildcard ({verb} {group}/{resource}): least privilege lists what is used"
                            );
                        }
                        for name in &names {
                            grants.insert(Permission {
                                verb: verb.clone(),
                                group: group.clone(),
                                resource: resource.clone(),
                                scope: scope.clone(),
                                name: name.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(grants)
}

fn covers(grant: &Permission, used: &Permission) -> bool {
    grant.verb == used.verb
        && grant.group == used.group
        && grant.resource == used.resource
        && (grant.scope == Scope::Cluster || grant.scope == used.scope)
        && (grant.name.is_none() || grant.name == used.name)
}

/// The differences between what was used and what is granted, one line each.
fn differences(used: &BTreeSet<Permission>, grants: &BTreeSet<Permission>) -> Vec<String> {
    let mut lines = Vec::new();
    for request in used {
        if !grants.iter().any(|g| covers(g, request)) {
            lines.push(format!(
                "  used but NOT granted (403 in a real cluster): {request}"
            ));
        }
    }
    for grant in grants {
        let users: Vec<&Permission> = used.iter().filter(|u| covers(grant, u)).collect();
        if users.is_empty() {
            lines.push(format!("  granted but never used: {grant}"));
        } else if grant.scope == Scope::Cluster && users.iter().all(|u| u.scope != Scope::Cluster) {
            let namespaces: BTreeSet<String> = users
                .iter()
                .filter_map(|u| match &u.scope {
                    Scope::Namespace(ns) => Some(ns.clone()),
                    Scope::Cluster => None,
                })
                .collect();
            lines.push(format!(
                "  granted cluster-wide but only used in {namespaces:?} (use a Role there): {grant}"
            ));
        }
    }
    lines
}

#[test]
fn the_comparison_reports_missing_unused_and_too_broad_grants() {
    let permission = |verb: &str, scope: Scope, name: Option<&str>| Permission {
        verb: verb.into(),
        group: "apps".into(),
        resource: "deployments".into(),
        scope,
        name: name.map(str::to_string),
    };
    let sandbox = || Scope::Namespace("vexxy-sandbox".into());
    let used: BTreeSet<_> = [
        permission("get", sandbox(), Some("a")),
        permission("create", sandbox(), None),
    ]
    .into();
    let exact: BTreeSet<_> = [
        permission("get", sandbox(), None),
        permission("create", sandbox(), None),
    ]
    .into();
    assert!(differences(&used, &exact).is_empty());
    let wrong: BTreeSet<_> = [
        permission("get", Scope::Cluster, None),
        permission("delete", sandbox(), None),
        permission("create", sandbox(), Some("b")),
    ]
    .into();
    let lines = differences(&used, &wrong).join("\n");
    assert!(
        lines.contains("used but NOT granted (403 in a real cluster): create apps/deployments"),
        "{lines}"
    );
    assert!(
        lines.contains("granted but never used: delete apps/deployments"),
        "{lines}"
    );
    assert!(
        lines.contains("granted cluster-wide but only used in {\"vexxy-sandbox\"}"),
        "{lines}"
    );
}

#[test]
fn requests_map_to_the_permissions_rbac_checks() -> Result<()> {
    let cases = [
        (
            "GET",
            "/apis/apps/v1/namespaces/ns/deployments/x",
            "get apps/deployments in namespace ns (name x)",
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/ns/deployments?labelSelector=a",
            "list apps/deployments in namespace ns",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=5",
            "watch core/pods in namespace ns",
        ),
        (
            "GET",
            "/apis/spdx.softwarecomposition.kubescape.io/v1beta1/containerprofiles?watch=1",
            "watch spdx.softwarecomposition.kubescape.io/containerprofiles cluster-wide",
        ),
        (
            "POST",
            "/api/v1/namespaces",
            "create core/namespaces cluster-wide",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns",
            "get core/namespaces cluster-wide (name ns)",
        ),
        (
            "DELETE",
            "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/p",
            "delete networking.k8s.io/networkpolicies in namespace ns (name p)",
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/ns/deployments/x/scale",
            "patch apps/deployments/scale in namespace ns (name x)",
        ),
    ];
    for (method, uri, expected) in cases {
        let permission = needed(&method.parse()?, &uri.parse()?)?.context("not discovery")?;
        assert_eq!(permission.to_string(), expected, "{method} {uri}");
    }
    assert!(needed(&http::Method::GET, &"/apis/apps/v1".parse()?)?.is_none());
    assert!(needed(&http::Method::GET, &"/api".parse()?)?.is_none());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The stages, configured as deploy/base configures them.

/// The environment deploy/base gives `process`, plus test-only timing overrides (they change
/// how long the stage waits, never which API calls it makes).
fn lookup_for(
    objects: &[Value],
    process: &str,
    overrides: &[(&str, &str)],
) -> Result<impl Fn(&str) -> Option<String> + use<>> {
    let mut env = container_env(objects, vexxy_deployment(objects, process)?)?;
    for (key, value) in overrides {
        env.insert(key.to_string(), value.to_string());
    }
    Ok(move |name: &str| env.get(name).cloned())
}

fn request(job_id: &str) -> Result<ValidatedRequest> {
    let body = json!({
        "job_id": job_id,
        "image_ref": "docker.io/library/alpine",
        "image_digest": kubesim::catalogue::ALPINE_FIXTURE_DIGEST,
        "config": {"analysis_duration": 60}
    });
    let mut request = parse_request(
        body.to_string().as_bytes(),
        Some("rbac-test"),
        &ValidationPolicy::default(),
    )
    .map_err(|e| anyhow::anyhow!("the test request is refused: {e:?}"))?;
    // Short window on kubesim's clock; the request policy's minimum is for users.
    request.analysis_duration_seconds = 2;
    Ok(request)
}

fn ticket(request: ValidatedRequest, sandbox: Option<SandboxRef>) -> PipelineTicket {
    PipelineTicket {
        request,
        timings: Vec::new(),
        sandbox,
        observation: None,
        evidence: None,
    }
}

async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(SCENARIO_BOUND, future)
        .await
        .with_context(|| format!("{what} did not finish within {SCENARIO_BOUND:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_account_is_granted_exactly_what_its_stage_calls() -> Result<()> {
    let objects = render(BASE)?;
    let sim = kubesim::Server::start(kubesim::Config {
        seed: Some(5),
        timings: kubesim::Timings {
            pod_start_delay_ms: 100,
            learning_period_ms: 1_000,
            consolidation_delay_ms: 100,
            scan_delay_ms: 100,
            bookmark_interval_ms: 1_000,
            ..kubesim::Timings::default()
        },
        ..kubesim::Config::default()
    })
    .await?;
    // The operator's part, as deploy/base does it: the sandbox namespace exists.
    let admin = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    let sandbox_namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "vexxy-sandbox"}}))?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &sandbox_namespace)
        .await
        .context("create the sandbox namespace")?;
    sim.reset_counters();

    let mut used: BTreeMap<&str, Recorder> = BTreeMap::new();

    // install-check: the readiness checks (auto-install is off in the base).
    let (client, recorder) = recording_client(&sim)?;
    used.insert("vexxy-install-check", recorder);
    let config = vexxy_install_check::InstallCheckConfig::load(&vexxy_runtime::Env::from_fn(
        lookup_for(&objects, "vexxy-install-check", &[])?,
    ))?;
    ensure!(
        !config.auto_install,
        "deploy/base must not turn on VEXXY_KUBESCAPE_AUTO_INSTALL"
    );
    let check = vexxy_install_check::InstallCheck::new(client, sim.url(), config);
    bounded("install-check", async {
        loop {
            match check.ensure_ready().await {
                Ok(()) => return Ok(()),
                Err(StageError::Transient { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(other) => return Err(anyhow::anyhow!("install-check failed: {other:?}")),
            }
        }
    })
    .await??;

    // deploy: create, then the same message again (409, read back, adopt).
    let (client, recorder) = recording_client(&sim)?;
    used.insert("vexxy-deploy", recorder);
    let config = vexxy_deploy::DeployConfig::load(&vexxy_runtime::Env::from_fn(lookup_for(
        &objects,
        "vexxy-deploy",
        &[],
    )?))?;
    let deploy = vexxy_deploy::Deploy::new(client, config);
    let job = request("rbac-alpine")?;
    let sandbox = bounded("deploy", deploy.ensure_sandbox(&job)).await??;
    let again = bounded("deploy (redelivery)", deploy.ensure_sandbox(&job)).await??;
    ensure!(
        again.created_at == sandbox.created_at,
        "a redelivery must find the same sandbox"
    );

    // wait: the analysis until Kubescape is done, and a sandbox the watch never showed.
    let (client, recorder) = recording_client(&sim)?;
    used.insert("vexxy-wait", recorder);
    let config = vexxy_wait::WaitConfig::load(&vexxy_runtime::Env::from_fn(lookup_for(
        &objects,
        "vexxy-wait",
        &[("VEXXY_VEX_SETTLE", "5s"), ("VEXXY_WAIT_GRACE", "30s")],
    )?))?;
    // Storage's first LIST of each kind fails, so the job also takes the fallback: it GETs its
    // own profile and VEX. Both paths must be granted.
    let first_list_fails = |resource: &str| kubesim::FaultRule {
        verb: "list".into(),
        resource: format!("{resource}.spdx.softwarecomposition.kubescape.io"),
        status: 500,
        rate: 1.0,
        max: Some(1),
    };
    sim.set_faults(kubesim::Faults {
        rules: vec![
            first_list_fails("containerprofiles"),
            first_list_fails("openvulnerabilityexchangecontainers"),
        ],
        ..kubesim::Faults::default()
    });
    let wait = vexxy_wait::WaitHandler::start(client, config);
    let waited = bounded(
        "wait",
        wait.wait(ticket(job.clone(), Some(sandbox.clone()))),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("wait failed the analysis: {e:?}"))?;
    ensure!(
        sim.faults_injected() == 2,
        "wait must LIST both storage kinds once after opening their watches (injected {})",
        sim.faults_injected()
    );
    sim.set_faults(kubesim::Faults::default());
    let missing = SandboxRef {
        deployment: "vexxy-never-created".into(),
        ..sandbox.clone()
    };
    match bounded(
        "wait (missing sandbox)",
        wait.wait(ticket(request("rbac-missing")?, Some(missing))),
    )
    .await?
    {
        Err(StageError::Permanent { .. }) => {}
        other => bail!("a sandbox that never existed must fail the job, got {other:?}"),
    }

    // extract: evidence, sandbox removal, then a janitor sweep.
    let (client, recorder) = recording_client(&sim)?;
    used.insert("vexxy-extract", recorder);
    let config = vexxy_extract::ExtractConfig::load(&vexxy_runtime::Env::from_fn(lookup_for(
        &objects,
        "vexxy-extract",
        &[],
    )?))?;
    let janitor_config = config.janitor();
    let extract = vexxy_extract::Extract::new(client.clone(), config);
    let store_dir = tempfile::tempdir()?;
    let store = Store::open(&format!("file://{}", store_dir.path().display()), &[])?;
    bounded("extract", extract.run(&store, waited))
        .await?
        .map_err(|e| anyhow::anyhow!("extract failed: {e:?}"))?;
    let nats = NatsServer::start()?;
    let jobs = async_nats::jetstream::new(nats.client().await?)
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: vexxy_events::subjects::STATUS_BUCKET.into(),
            ..Default::default()
        })
        .await?;
    bounded(
        "janitor sweep",
        vexxy_extract::janitor::sweep(&client, &jobs, &janitor_config, Utc::now()),
    )
    .await??;

    // No request bypassed the recorders: kubesim counted exactly the recorded ones.
    let mut recorded_counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut needed_by: BTreeMap<&str, BTreeSet<Permission>> = BTreeMap::new();
    for (process, recorder) in &used {
        let entry = needed_by.entry(process).or_default();
        for (method, uri) in recorder.requests() {
            match needed(&method, &uri)? {
                Some(permission) => {
                    let resource = if permission.group.is_empty() {
                        permission.resource.clone()
                    } else {
                        format!("{}.{}", permission.resource, permission.group)
                    };
                    *recorded_counts
                        .entry((resource, permission.verb.clone()))
                        .or_default() += 1;
                    entry.insert(permission);
                }
                None => {
                    *recorded_counts
                        .entry(("discovery".into(), "get".into()))
                        .or_default() += 1
                }
            }
        }
    }
    let counted: BTreeMap<(String, String), u64> = sim
        .counters()
        .requests
        .into_iter()
        .flat_map(|(resource, verbs)| {
            verbs
                .into_iter()
                .map(move |(verb, n)| ((resource.clone(), verb), n))
        })
        .collect();
    ensure!(
        counted == recorded_counts,
        "kubesim counted other requests than the recording clients sent (a client escaped the recorder?)\nkubesim: {counted:?}\nrecorded: {recorded_counts:?}"
    );

    // enrich and the gateway never call the API: nothing granted, no token mounted.
    let mut report = Vec::new();
    for process in ["vexxy-enrich", "vexxy-gateway"] {
        needed_by.insert(process, BTreeSet::new());
    }
    for (process, used) in &needed_by {
        let grants = granted(&objects, process)?;
        let lines = differences(used, &grants);
        if !lines.is_empty() {
            report.push(format!(
                "ServiceAccount vexxy/{process} ({} requests recorded):\n{}",
                used.len(),
                lines.join("\n")
            ));
        }
    }
    sim.shutdown().await;
    ensure!(
        report.is_empty(),
        "the RBAC in {BASE} differs from what the stages call:\n{}\n(used = what the stage's code requested from kubesim; fix the Role/ClusterRole, or the code)",
        report.join("\n")
    );
    for (process, used) in &needed_by {
        eprintln!(
            "{process}: {}",
            used.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}
