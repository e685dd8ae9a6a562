//! The whole pipeline end to end, as it runs in production: the five stage binaries as separate
//! processes against a real nats-server, a real S3 server (s3s-fs) and a Kubernetes API,
//! talking only through JetStream events, the KV job status and the object store. One scenario,
//! two clusters: kubesim (`e2e.rs`) and the real control plane with kubesim only as Kubescape
//! (`real_e2e.rs`).
//!
//! Kubescape is absent when the first request arrives, so install-check installs it with the
//! stand-in helm (`tests/system/fake-helm/helm`). The requests cover both kubevuln generations
//! (kubesim's per-image generation overrides), an image without vulnerabilities, large images
//! whose VEX fits the storage cap, one whose VEX does not (`no_vex_produced`) and one whose pull
//! fails (`image_pull_failed`: kubesim's failure pattern, or a kwok Stage on the real cluster).
//! Three fixture images (alpine, nginx on Debian 12 and on Debian 9) are also pushed to a real
//! OCI registry and analysed by their registry digest, so the real scanners can pull and scan the
//! very image vexxy analysed (`scanner_support`).
//! A downstream subscriber reads the outcomes the way a user would (a durable pull consumer on
//! the public stream, filtered to completed + failed), then the test checks each job's event,
//! artifacts, KV record and that no sandbox is left behind.
//!
//! On the real cluster each stage also authenticates as its own ServiceAccount with a token,
//! and the Namespaces, ServiceAccounts and RBAC of `deploy/base` (applied with kubectl) are all
//! it is granted: the real authorizer decides every request, and the sandbox namespace's Pod
//! Security labels are enforced by the real admission.
//!
//! Analysis windows are 3 s and kubesim's Kubescape timings short, so a run takes well under a
//! minute. On failure the message names each unfinished job's stage (from the KV bucket) and
//! prints the end of every process log; the log directory is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;
use vexxy_events::completed::Completeness;
use vexxy_events::{
    AnalysisCompleted, AnalysisFailed, AnalysisOutcome, AnalysisRequest, FailureReason, JobState,
    JobStatus, RunConfig, Stage, subjects,
};
use vexxy_harness::realcluster::{KwokLifecycles, RealCluster};
use vexxy_harness::stack::{self, KubesimProcess, Pipeline, StackEndpoints};
use vexxy_harness::{NatsServer, OciRegistry, S3Server, workspace_root};
use vexxy_runtime::Store;
use vexxy_runtime::config::Secret;

use crate::cluster_support::{ClusterKind, StageIdentities};

const SANDBOX_NAMESPACE: &str = "vexxy-sandbox";
/// Each job's analysis window: the pod label that ends Kubescape's learning.
const ANALYSIS_SECONDS: u64 = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// From the first request to the last outcome (the jobs run in parallel; about 10 s when idle).
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the subscriber keeps listening after the last expected outcome for a second one.
const QUIET_PERIOD: Duration = Duration::from_secs(1);
const SANDBOX_CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);
const DOWNSTREAM_DURABLE: &str = "e2e-downstream";
/// The job whose image pull fails.
const PULL_FAIL_JOB: &str = "e2e-pull-fail";
/// Images matching these run under kubevuln `main`; the rest under kubesim's default v0.3.159.
const MAIN_GENERATION_PATTERNS: [&str; 2] = ["docker.io/library/nginx", "ghcr.io/acme/"];

#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// Completed; `vex_shape` is the kubevuln generation whose VEX was read, `None` when the
    /// image has no vulnerabilities (no VEX document is written).
    Completed {
        vex_shape: Option<&'static str>,
        /// The image loads some vulnerable packages and not others: both statuses must appear.
        mixed: bool,
    },
    Failed {
        stage: Stage,
        reason: FailureReason,
        /// The message must name this (what happened, so the user knows what to do).
        message_names: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Job {
    id: &'static str,
    image_ref: String,
    digest: String,
    expected: Expected,
}

fn digest(prefix: &str, fill: char) -> String {
    let hex: String = prefix
        .chars()
        .chain(std::iter::repeat(fill))
        .take(64)
        .collect();
    format!("sha256:{hex}")
}

/// A fixture image pushed to the test's registry: a real image built from the files
/// `kubesim::catalogue::image_files` gives, under its own digest, which kubesim's Kubescape is
/// told holds the fixture's content. `trivy image` then scans the very image vexxy analysed.
struct InRegistry {
    job_id: &'static str,
    /// `127.0.0.1:<port>/library/alpine`
    repository: String,
    digest: String,
    /// The fixture digest whose content it holds.
    like: &'static str,
}

/// (job id, repository in the registry, fixture digest)
const IN_REGISTRY: [(&str, &str, &str); 3] = [
    (
        "e2e-alpine-oci",
        "library/alpine",
        kubesim::catalogue::ALPINE_FIXTURE_DIGEST,
    ),
    (
        "e2e-nginx-oci",
        "library/nginx",
        kubesim::catalogue::NGINX_FIXTURE_DIGESTS[0],
    ),
    (
        "e2e-nginx-debian9-oci",
        "library/nginx",
        kubesim::catalogue::NGINX_DEBIAN9_FIXTURE_DIGEST,
    ),
];

fn push_fixture_images(registry: &OciRegistry) -> Result<Vec<InRegistry>> {
    IN_REGISTRY
        .iter()
        .map(|(job_id, repository, like)| {
            let files = kubesim::catalogue::image_files(like);
            let digest = registry.push(repository, job_id, &files)?;
            // This process reads the expected content too (`image_purls`).
            kubesim::catalogue::declare_same_content(&digest, like);
            Ok(InRegistry {
                job_id,
                repository: format!("{}/{repository}", registry.host()),
                digest,
                like,
            })
        })
        .collect()
}

fn jobs(in_registry: &[InRegistry]) -> Vec<Job> {
    use kubesim::catalogue::{ALPINE_FIXTURE_DIGEST, NGINX_FIXTURE_DIGESTS};
    let completed = |vex_shape, mixed| Expected::Completed { vex_shape, mixed };
    let pushed = in_registry.iter().map(|image| Job {
        id: image.job_id,
        image_ref: image.repository.clone(),
        digest: image.digest.clone(),
        expected: completed(Some("v0.3.159"), true),
    });
    let named = vec![
        // Published first, while Kubescape is absent: install-check installs it.
        Job {
            id: "e2e-alpine",
            image_ref: "docker.io/library/alpine".into(),
            digest: ALPINE_FIXTURE_DIGEST.to_string(),
            expected: completed(Some("v0.3.159"), true),
        },
        Job {
            id: "e2e-nginx-main",
            image_ref: "docker.io/library/nginx".into(),
            digest: NGINX_FIXTURE_DIGESTS[0].to_string(),
            expected: completed(Some("main"), true),
        },
        Job {
            id: "e2e-generated-main",
            image_ref: "ghcr.io/acme/cart".into(),
            digest: digest("1c0ffee", '7'),
            expected: completed(Some("main"), false),
        },
        Job {
            id: "e2e-generated",
            image_ref: "quay.io/bigco/checkout".into(),
            digest: digest("2bad5eed", '3'),
            expected: completed(Some("v0.3.159"), false),
        },
        Job {
            id: "e2e-zero-vulns-main",
            image_ref: "ghcr.io/acme/distroless-static".into(),
            digest: digest("0000", 'a'),
            expected: completed(None, false),
        },
        Job {
            id: "e2e-zero-vulns",
            image_ref: "quay.io/bigco/static-site".into(),
            digest: digest("0000", 'b'),
            expected: completed(None, false),
        },
        Job {
            id: "e2e-large",
            image_ref: "quay.io/bigco/large-app".into(),
            digest: digest("fffe", '1'),
            expected: completed(Some("v0.3.159"), false),
        },
        Job {
            id: "e2e-large-main",
            image_ref: "ghcr.io/acme/large-app".into(),
            digest: digest("fffe", '2'),
            expected: completed(Some("main"), false),
        },
        Job {
            id: "e2e-huge",
            image_ref: "quay.io/bigco/monolith".into(),
            digest: digest("ffff", '9'),
            expected: Expected::Failed {
                stage: Stage::Extract,
                reason: FailureReason::NoVexProduced,
                message_names: "maxObjectSize",
            },
        },
        Job {
            id: PULL_FAIL_JOB,
            image_ref: "quay.io/bigco/pull-fail-app".into(),
            digest: digest("5eed", '4'),
            expected: Expected::Failed {
                stage: Stage::Wait,
                reason: FailureReason::ImagePullFailed,
                message_names: "quay.io/bigco/pull-fail-app",
            },
        },
    ];
    named.into_iter().chain(pushed).collect()
}

/// Everything the test started; processes are killed when it is dropped. The log directory is
/// kept when the test fails.
struct Stack {
    dir: tempfile::TempDir,
    nats: NatsServer,
    s3: S3Server,
    // Before the real cluster: dropped (killed) while the API it watches is still up.
    kubesim: KubesimProcess,
    real: Option<RealCluster>,
    kubeconfig: PathBuf,
    pipeline: Pipeline,
    helm_log: PathBuf,
    _registry: OciRegistry,
    in_registry: Vec<InRegistry>,
}

impl Stack {
    fn start(cluster: ClusterKind) -> Result<Stack> {
        let root = workspace_root();
        stack::build_binaries(&root)?;
        let dir = tempfile::Builder::new()
            .prefix("vexxy-e2e-")
            .tempdir()
            .context("cannot create the test directory")?;
        let nats = NatsServer::start()?;
        let s3 = S3Server::start()?;
        let registry = OciRegistry::start()?;
        let in_registry = push_fixture_images(&registry)?;
        let real = match cluster {
            ClusterKind::Sim => None,
            ClusterKind::Real => Some(RealCluster::start_with(&KwokLifecycles {
                image_pull_backoff_jobs: vec![PULL_FAIL_JOB.to_string()],
                ..KwokLifecycles::default()
            })?),
        };

        let mut kubesim_args: Vec<String> = [
            "--seed",
            "20240601",
            "--no-kubescape",
            "--pod-start-delay-ms",
            "200",
            // node-agent's first save within the 3 s window: a `ready` profile and a
            // learning-time scan (kubevuln v0.3.159's update path) precede the final one.
            "--first-save-delay-ms",
            "1000",
            "--consolidation-delay-ms",
            "300",
            "--scan-delay-ms",
            "300",
            "--kubevuln-generation",
            "v0.3.159",
        ]
        .map(String::from)
        .to_vec();
        for pattern in MAIN_GENERATION_PATTERNS {
            kubesim_args.push("--generation-override".into());
            kubesim_args.push(format!("{pattern}=main"));
        }
        for image in &in_registry {
            kubesim_args.push("--same-content".into());
            kubesim_args.push(format!("{}={}", image.digest, image.like));
        }
        if let Some(real) = &real {
            kubesim_args.push("--upstream-kubeconfig".into());
            kubesim_args.push(real.kubeconfig().display().to_string());
        }
        let kubesim = KubesimProcess::start(dir.path(), &kubesim_args)?;
        let kubeconfig = match &real {
            Some(real) => real.kubeconfig().to_path_buf(),
            None => kubesim.kubeconfig().to_path_buf(),
        };

        let helm_log = dir.path().join("helm-calls.jsonl");
        let endpoints = StackEndpoints {
            nats_url: nats.url(),
            store: format!("s3://{}", s3.bucket()),
            kubeconfig: kubeconfig.clone(),
        };
        let aws = s3.aws_env();
        let kubesim_url = kubesim.url().to_string();
        let helm_log_for_env = helm_log.clone();
        let identities = match &real {
            Some(real) => Some(StageIdentities::apply(real, dir.path())?),
            None => None,
        };
        let pipeline = Pipeline::start(dir.path(), |stage, health_file| {
            let mut env = stack::local_stage_env(&endpoints, health_file, 1);
            env.extend(aws.iter().cloned());
            env.extend(test_timings());
            if let Some(identities) = &identities {
                env.extend(identities.env_of(stage));
            }
            if stage == "vexxy-install-check" {
                env.extend(install_check_env(&root, &kubesim_url, &helm_log_for_env));
            }
            env
        })?;
        let mut stack = Stack {
            dir,
            nats,
            s3,
            kubesim,
            real,
            kubeconfig,
            pipeline,
            helm_log,
            _registry: registry,
            in_registry,
        };
        if let Err(error) = stack.pipeline.wait_ready(READY_TIMEOUT) {
            stack.keep_logs();
            return Err(error);
        }
        Ok(stack)
    }

    fn store(&self) -> Result<Store> {
        let options: Vec<(String, Secret)> = self
            .s3
            .aws_env()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), Secret::new(value)))
            .collect();
        Store::open(&format!("s3://{}", self.s3.bucket()), &options)
            .context("cannot open the test bucket")
    }

    /// A client of the cluster the stages use, from the same kubeconfig.
    async fn kube_client(&self) -> Result<kube::Client> {
        crate::cluster_support::kube_client(&self.kubeconfig).await
    }

    fn helm_calls(&self) -> Result<Vec<Vec<String>>> {
        let text = match std::fs::read_to_string(&self.helm_log) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error).context("cannot read the stand-in helm's log"),
        };
        text.lines()
            .map(|line| serde_json::from_str(line).context("a helm call is not a JSON array"))
            .collect()
    }

    /// Where to look, for failure messages: the end of every log and the directory they are in.
    fn diagnostics(&mut self) -> String {
        let exited: Vec<String> = self
            .pipeline
            .exited()
            .into_iter()
            .map(|(name, status)| format!("{name} exited ({status})"))
            .collect();
        format!(
            "{}\n{}\n----- kubesim ({}) -----\n{}\n----- nats-server ({}) -----\n{}\n{}(all logs in {})",
            if exited.is_empty() {
                "all stages still running".to_string()
            } else {
                exited.join(", ")
            },
            self.pipeline.log_tails(25),
            self.kubesim.log_path().display(),
            stack::log_tail(self.kubesim.log_path(), 15),
            self.nats.log_path().display(),
            stack::log_tail(&self.nats.log_path(), 10),
            self.real
                .as_ref()
                .map(|real| format!("----- real control plane -----{}\n", real.tails()))
                .unwrap_or_default(),
            self.dir.path().display()
        )
    }

    /// Where a job's documents go for the scanners (kept with the logs on failure).
    fn scanner_dir(&self, job_id: &str) -> PathBuf {
        self.dir.path().join("scanners").join(job_id)
    }

    /// Keeps the temporary directory (logs, kubeconfig, helm calls) for a look after a failure.
    fn keep_logs(&mut self) {
        let placeholder = tempfile::tempdir().expect("a temporary directory");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        eprintln!("e2e: logs kept in {}", dir.keep().display());
    }
}

/// Short settings so a job takes seconds: fast retries, short AckWait (in-progress signals every
/// third of it), VEX settle and learning-scan bound with room for a lagging kubesim, a grace
/// that still leaves the
/// deadline far from the happy path, and a janitor that removes the sandbox of a job that
/// failed before extract.
fn test_timings() -> Vec<(String, String)> {
    [
        ("VEXXY_MAX_IN_FLIGHT", "16"),
        ("VEXXY_ACK_WAIT", "5s"),
        ("VEXXY_RETRY_BASE_DELAY", "200ms"),
        ("VEXXY_RETRY_MAX_DELAY", "1s"),
        ("VEXXY_PULL_EXPIRES", "1s"),
        ("VEXXY_SHUTDOWN_GRACE", "3s"),
        // kubesim's kubevuln scans within 300 ms of a consolidation, but on a loaded machine
        // its emulator falls behind (the chaos scenarios saw seconds): with 1 s, wait could go
        // on before the VEX existed.
        ("VEXXY_VEX_SETTLE", "10s"),
        ("VEXXY_LEARNING_SCAN_BOUND", "3s"),
        ("VEXXY_WAIT_GRACE", "45s"),
        ("VEXXY_ON_TIMEOUT", "fail"),
        ("VEXXY_JANITOR_INTERVAL", "1s"),
        ("K8S_JOB_TTL_SECONDS", "1"),
        ("SANDBOX_CPU_REQUEST", "100m"),
        ("SANDBOX_MEMORY_REQUEST", "128Mi"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

fn install_check_env(root: &Path, kubesim_url: &str, helm_log: &Path) -> Vec<(String, String)> {
    vec![
        ("VEXXY_KUBESCAPE_AUTO_INSTALL".into(), "true".into()),
        ("VEXXY_KUBESCAPE_INSTALL_TIMEOUT".into(), "30s".into()),
        (
            "VEXXY_HELM_BIN".into(),
            root.join("tests/system/fake-helm/helm")
                .display()
                .to_string(),
        ),
        ("VEXXY_KUBESCAPE_VALUES".into(), values_file(root)),
        // The stand-in helm reads these from the environment it inherits from install-check.
        ("FAKE_HELM_LOG".into(), helm_log.display().to_string()),
        ("KUBESIM_URL".into(), kubesim_url.to_string()),
    ]
}

fn values_file(root: &Path) -> String {
    root.join("deploy/kubescape-values.yaml")
        .display()
        .to_string()
}

fn request(job: &Job) -> AnalysisRequest {
    AnalysisRequest {
        job_id: Some(job.id.to_string()),
        image_ref: job.image_ref.to_string(),
        image_digest: Some(job.digest.clone()),
        config: Some(RunConfig {
            analysis_duration: Some(ANALYSIS_SECONDS),
            ..RunConfig::default()
        }),
        labels: [("suite".to_string(), "e2e".to_string())].into(),
    }
}

async fn publish(js: &jetstream::Context, job: &Job) -> Result<bool> {
    let body = serde_json::to_vec(&request(job))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{}.request", job.id).as_str());
    let ack = js
        .publish_with_headers(subjects::REQUESTED, headers, body.into())
        .await
        .with_context(|| format!("cannot publish the request of {}", job.id))?
        .await
        .with_context(|| format!("JetStream did not acknowledge the request of {}", job.id))?;
    Ok(ack.duplicate)
}

/// The downstream subscriber's view: outcome events per job, in arrival order.
#[derive(Default)]
struct Outcomes {
    by_job: BTreeMap<String, Vec<AnalysisOutcome>>,
}

impl Outcomes {
    fn record(&mut self, payload: &[u8]) -> Result<()> {
        let received = AnalysisOutcome::from_slice(payload)?;
        let job = received
            .job_id
            .context("an outcome event has no subject (job id)")?;
        self.by_job.entry(job).or_default().push(received.outcome);
        Ok(())
    }

    fn missing<'a>(&self, jobs: &'a [Job]) -> Vec<&'a Job> {
        jobs.iter()
            .filter(|job| !self.by_job.contains_key(job.id))
            .collect()
    }
}

/// What the KV bucket says about each job, for "which job is stuck where" messages.
async fn job_states(kv: &jetstream::kv::Store, jobs: &[&Job]) -> String {
    let mut lines = Vec::new();
    for job in jobs {
        let line = match kv.get(job.id).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<JobStatus>(&bytes) {
                Ok(status) => format!(
                    "{}: in stage {} ({:?}){} — see {}",
                    job.id,
                    status.stage,
                    status.state,
                    status
                        .error
                        .map(|e| format!(", last error {}: {}", e.reason.as_str(), e.message))
                        .unwrap_or_default(),
                    format_args!("vexxy-{}.log", status.stage.as_str())
                ),
                Err(error) => format!("{}: unreadable job record: {error}", job.id),
            },
            Ok(None) => format!(
                "{}: no job record: install-check never accepted the request (see vexxy-install-check.log)",
                job.id
            ),
            Err(error) => format!("{}: cannot read the job record: {error}", job.id),
        };
        lines.push(line);
    }
    lines.join("\n")
}

/// `s3://<bucket>/<key>` → `<key>`.
fn key_of<'a>(url: &'a str, bucket: &str) -> Result<&'a str> {
    url.strip_prefix(&format!("s3://{bucket}/"))
        .with_context(|| format!("artifact URL {url} is not in the test bucket {bucket}"))
}

fn openvex_validator() -> Result<jsonschema::Validator> {
    let path = workspace_root().join("../shared/reference/openvex_json_schema.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the OpenVEX schema at {}", path.display()))?;
    let schema: Value = serde_json::from_str(&text)?;
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|error| anyhow::anyhow!("the OpenVEX schema does not compile: {error}"))
}

/// The purls of the image's packages and of those kubesim's node-agent reports loaded (the
/// ground truth the VEX statuses must follow).
fn image_purls(digest: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    // As vexxy's OpenVEX names packages: without the qualifiers scanners spell differently.
    let neutral = vexxy_enrich::purl::scanner_neutral;
    let content = kubesim::catalogue::content::content_for(digest);
    let all = content.packages.iter().map(|p| neutral(&p.purl)).collect();
    let loaded = content
        .loaded
        .iter()
        .map(|index| neutral(&content.packages[*index].purl))
        .collect();
    (all, loaded)
}

/// Checks one completed job: event, VEX (schema, counts, statuses against what was loaded),
/// summary.json, artifact URLs.
async fn check_completed(
    job: &Job,
    completed: &AnalysisCompleted,
    expected_shape: Option<&str>,
    mixed: bool,
    store: &Store,
    bucket: &str,
    validator: &jsonschema::Validator,
) -> Result<()> {
    let id = job.id;
    ensure!(
        completed.job_id == id,
        "{id}: event names job {}",
        completed.job_id
    );
    ensure!(
        completed.image_digest == job.digest,
        "{id}: event digest {} is not the requested {}",
        completed.image_digest,
        job.digest
    );
    ensure!(
        completed.evidence.completeness == Completeness::Complete,
        "{id}: evidence is {:?}, expected complete (learning {} / {})",
        completed.evidence.completeness,
        completed.evidence.learning_status,
        completed.evidence.learning_completion
    );
    let stages: Vec<Stage> = completed.timings.iter().map(|t| t.stage).collect();
    let pipeline = [
        Stage::InstallCheck,
        Stage::Deploy,
        Stage::Wait,
        Stage::Extract,
        Stage::Enrich,
    ];
    ensure!(
        stages == pipeline,
        "{id}: timings must list each stage once, in pipeline order: {stages:?}"
    );

    let summary = &completed.summary;
    let mut counted: HashMap<String, u64> = HashMap::new();
    match (&completed.artifacts.openvex, expected_shape) {
        (Some(url), Some(shape)) => {
            let vex: Value = serde_json::from_slice(&store.get_bytes(key_of(url, bucket)?).await?)
                .with_context(|| format!("{id}: the VEX at {url} is not JSON"))?;
            let errors: Vec<String> = validator
                .iter_errors(&vex)
                .take(10)
                .map(|error| format!("{} at {}", error, error.instance_path()))
                .collect();
            ensure!(
                errors.is_empty(),
                "{id}: the VEX at {url} violates the OpenVEX schema: {errors:#?}"
            );
            let statements = vex["statements"]
                .as_array()
                .with_context(|| format!("{id}: VEX without statements"))?;
            let (packages, loaded) = image_purls(&job.digest);
            for statement in statements {
                let status = statement["status"].as_str().unwrap_or("?").to_string();
                *counted.entry(status.clone()).or_default() += 1;
                let subcomponents: Vec<&str> = statement["products"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|product| product["subcomponents"].as_array().into_iter().flatten())
                    .filter_map(|sub| sub["@id"].as_str())
                    .collect();
                ensure!(
                    !subcomponents.is_empty(),
                    "{id}: a statement names no package: {statement}"
                );
                for purl in subcomponents {
                    ensure!(
                        packages.contains(purl),
                        "{id}: {purl} is not a package of the image: {statement}"
                    );
                    let is_loaded = loaded.contains(purl);
                    match status.as_str() {
                        "affected" => ensure!(
                            is_loaded,
                            "{id}: {purl} is affected but was never loaded: {statement}"
                        ),
                        "not_affected" => ensure!(
                            !is_loaded,
                            "{id}: {purl} is not_affected but was loaded (a hidden vulnerability): {statement}"
                        ),
                        other => bail!("{id}: status {other} with complete evidence: {statement}"),
                    }
                }
            }
            ensure!(
                statements.len() as u64 == summary.total_cves_analyzed,
                "{id}: {} statements, event says {}",
                statements.len(),
                summary.total_cves_analyzed
            );
            ensure!(
                completed.evidence.kubescape_shape == shape,
                "{id}: Kubescape shape {} read, kubesim emulated {shape}",
                completed.evidence.kubescape_shape
            );
        }
        (None, None) => {}
        (found, expected) => bail!(
            "{id}: OpenVEX artifact {found:?}, expected one from kubevuln {expected:?} (None = no vulnerabilities)"
        ),
    }
    let count = |status: &str| counted.get(status).copied().unwrap_or(0);
    let by_status = [
        ("affected", summary.affected),
        ("not_affected", summary.not_affected),
        ("fixed", summary.fixed),
        ("under_investigation", summary.under_investigation),
    ];
    for (status, in_event) in by_status {
        ensure!(
            count(status) == in_event,
            "{id}: {} {status} statements in the VEX, the event says {in_event}",
            count(status)
        );
    }
    ensure!(
        summary.total_cves_analyzed
            == summary.affected
                + summary.not_affected
                + summary.fixed
                + summary.under_investigation,
        "{id}: counts do not add up: {summary:?}"
    );
    if mixed {
        ensure!(
            summary.affected > 0 && summary.not_affected > 0,
            "{id}: expected both affected and not_affected statements: {summary:?}"
        );
    }

    let summary_url = &completed.artifacts.summary;
    let summary_doc: Value =
        serde_json::from_slice(&store.get_bytes(key_of(summary_url, bucket)?).await?)
            .with_context(|| format!("{id}: summary.json at {summary_url} is not JSON"))?;
    ensure!(
        summary_doc["job_id"] == id,
        "{id}: summary.json names {}",
        summary_doc["job_id"]
    );
    ensure!(
        summary_doc["counts"] == serde_json::to_value(summary)?,
        "{id}: summary.json counts {} differ from the event's {summary:?}",
        summary_doc["counts"]
    );
    if let Some(shape) = expected_shape {
        ensure!(
            summary_doc["kubescape"]["vex_shape"] == shape,
            "{id}: summary.json says shape {}, expected {shape}",
            summary_doc["kubescape"]["vex_shape"]
        );
    }

    let artifacts = &completed.artifacts;
    let urls = artifacts
        .openvex
        .iter()
        .chain([&artifacts.filtered_sbom, &artifacts.summary])
        .chain(artifacts.evidence.iter())
        .map(String::as_str)
        .chain(artifacts.extra.by_name().into_values());
    for url in urls {
        let key = key_of(url, bucket)?;
        ensure!(
            key.starts_with(&format!("analyses/{id}/")),
            "{id}: artifact {url} is outside analyses/{id}/"
        );
        ensure!(
            store.exists(key).await?,
            "{id}: artifact {url} does not resolve in the store"
        );
    }
    ensure!(
        !artifacts.evidence.is_empty(),
        "{id}: no raw Kubescape evidence kept"
    );
    Ok(())
}

fn check_failed(
    job: &Job,
    failed: &AnalysisFailed,
    stage: Stage,
    reason: FailureReason,
    message_names: &str,
) -> Result<()> {
    let id = job.id;
    ensure!(
        failed.job_id.as_deref() == Some(id),
        "{id}: failed event names job {:?}",
        failed.job_id
    );
    ensure!(
        failed.stage == stage && failed.reason == reason,
        "{id}: failed in {} with {}, expected {stage} with {}: {}",
        failed.stage,
        failed.reason.as_str(),
        reason.as_str(),
        failed.message
    );
    ensure!(
        failed.request_msg_id.as_deref() == Some(format!("{id}.request").as_str()),
        "{id}: failed event carries request msg id {:?}",
        failed.request_msg_id
    );
    ensure!(
        failed.message.contains(message_names),
        "{id}: the failure message does not name {message_names:?}: {}",
        failed.message
    );
    Ok(())
}

async fn check_final_status(
    kv: &jetstream::kv::Store,
    job: &Job,
    outcome: &AnalysisOutcome,
) -> Result<()> {
    let id = job.id;
    let bytes = kv
        .get(id)
        .await?
        .with_context(|| format!("{id}: no record in the {} bucket", subjects::STATUS_BUCKET))?;
    let status: JobStatus = serde_json::from_slice(&bytes)
        .with_context(|| format!("{id}: the job record is not a JobStatus"))?;
    match outcome {
        AnalysisOutcome::Completed(completed) => ensure!(
            status.state == JobState::Completed && status.result == completed.artifacts.openvex,
            "{id}: KV record {:?} with result {:?} after a completed event",
            status.state,
            status.result
        ),
        AnalysisOutcome::Failed(failed) => ensure!(
            status.state == JobState::Failed
                && status.error.as_ref().map(|e| e.reason) == Some(failed.reason),
            "{id}: KV record {:?} with error {:?} after a failed event ({})",
            status.state,
            status.error,
            failed.reason.as_str()
        ),
    }
    Ok(())
}

async fn apiservice_exists(client: &kube::Client) -> Result<bool> {
    let resource = ApiResource {
        group: "apiregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiregistration.k8s.io/v1".into(),
        kind: "APIService".into(),
        plural: "apiservices".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    Ok(api
        .get_opt("v1beta1.spdx.softwarecomposition.kubescape.io")
        .await
        .context("cannot read APIServices")?
        .is_some())
}

async fn sandbox_deployments(client: &kube::Client) -> Result<Vec<String>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), SANDBOX_NAMESPACE);
    Ok(api
        .list(&ListParams::default())
        .await
        .context("cannot list sandbox Deployments")?
        .items
        .into_iter()
        .filter_map(|deployment| deployment.metadata.name)
        .collect())
}

/// The scenario against `cluster`; the test functions of `e2e.rs` and `real_e2e.rs` call it.
pub async fn requests_become_one_outcome_each_with_valid_vex(cluster: ClusterKind) -> Result<()> {
    let test_started = Instant::now();
    let mut stack = tokio::task::block_in_place(|| Stack::start(cluster))?;
    let stack_ready = test_started.elapsed();
    eprintln!("e2e: stack ready in {:.1}s", stack_ready.as_secs_f64());

    let result = run_scenario(&mut stack, test_started).await;
    if let Err(error) = &result {
        let diagnostics = stack.diagnostics();
        stack.keep_logs();
        bail!("{error:#}\n\n{diagnostics}");
    }

    // Every stage shuts down cleanly on SIGTERM.
    let stopped = tokio::task::block_in_place(|| stack.pipeline.terminate(Duration::from_secs(15)));
    let mut unclean = Vec::new();
    for (name, status) in stopped {
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => unclean.push(format!("{name} exited with {status}")),
            Err(error) => unclean.push(format!("{name}: {error:#}")),
        }
    }
    if !unclean.is_empty() {
        let diagnostics = stack.diagnostics();
        stack.keep_logs();
        bail!("stages did not stop cleanly: {unclean:?}\n\n{diagnostics}");
    }
    eprintln!(
        "e2e: whole test {:.1}s",
        test_started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run_scenario(stack: &mut Stack, test_started: Instant) -> Result<()> {
    let jobs = jobs(&stack.in_registry);
    let client = stack.nats.client().await?;
    let js = jetstream::new(client);
    let kube = stack.kube_client().await?;
    let store = stack.store()?;
    let bucket = stack.s3.bucket().to_string();

    ensure!(
        !apiservice_exists(&kube).await?,
        "Kubescape must be absent before the first request (kubesim --no-kubescape)"
    );

    // The downstream subscriber, created before any request so nothing is missed.
    let consumer = js
        .get_stream(subjects::PUBLIC_STREAM)
        .await
        .context("the stages provision the public stream at start")?
        .create_consumer(pull::Config {
            durable_name: Some(DOWNSTREAM_DURABLE.to_string()),
            filter_subjects: vec![
                subjects::COMPLETED.to_string(),
                subjects::FAILED.to_string(),
            ],
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("cannot create the downstream consumer")?;
    let mut messages = consumer
        .messages()
        .await
        .context("cannot pull from the downstream consumer")?;
    let kv = js
        .get_key_value(subjects::STATUS_BUCKET)
        .await
        .context("the stages provision the job status bucket at start")?;

    let published_at = Instant::now();
    for job in &jobs {
        ensure!(
            !publish(&js, job).await?,
            "{}: the first publish was taken for a duplicate",
            job.id
        );
    }
    // A publisher retrying after a lost ack: JetStream drops the copy (same Nats-Msg-Id).
    ensure!(
        publish(&js, &jobs[0]).await?,
        "a republished request with the same Nats-Msg-Id must be de-duplicated"
    );

    let mut outcomes = Outcomes::default();
    let deadline = tokio::time::Instant::now() + OUTCOME_TIMEOUT;
    while !outcomes.missing(&jobs).is_empty() {
        let next = tokio::time::timeout_at(deadline, messages.next()).await;
        match next {
            Ok(Some(Ok(message))) => {
                outcomes.record(&message.payload)?;
                message
                    .ack()
                    .await
                    .map_err(|error| anyhow::anyhow!("cannot ack an outcome: {error}"))?;
            }
            Ok(Some(Err(error))) => bail!("the downstream consumer failed: {error}"),
            Ok(None) => bail!("the downstream consumer's message stream ended"),
            Err(_) => {
                let missing = outcomes.missing(&jobs);
                bail!(
                    "no outcome within {OUTCOME_TIMEOUT:?} for {} of {} jobs:\n{}",
                    missing.len(),
                    jobs.len(),
                    job_states(&kv, &missing).await
                );
            }
        }
    }
    let all_outcomes = published_at.elapsed();
    // No second outcome for any job: listen a little longer.
    loop {
        match tokio::time::timeout(QUIET_PERIOD, messages.next()).await {
            Err(_) => break,
            Ok(Some(Ok(message))) => {
                outcomes.record(&message.payload)?;
                message
                    .ack()
                    .await
                    .map_err(|error| anyhow::anyhow!("cannot ack an outcome: {error}"))?;
            }
            Ok(Some(Err(error))) => bail!("the downstream consumer failed: {error}"),
            Ok(None) => bail!("the downstream consumer's message stream ended"),
        }
    }
    let unknown: Vec<&String> = outcomes
        .by_job
        .keys()
        .filter(|job| !jobs.iter().any(|j| j.id == job.as_str()))
        .collect();
    ensure!(
        unknown.is_empty(),
        "outcomes for jobs never requested: {unknown:?}"
    );

    let validator = openvex_validator()?;
    let mut problems = Vec::new();
    for job in &jobs {
        let events = &outcomes.by_job[job.id];
        if events.len() != 1 {
            problems.push(format!(
                "{}: {} outcome events, expected exactly one: {events:#?}",
                job.id,
                events.len()
            ));
            continue;
        }
        let outcome = &events[0];
        let checked = match (&job.expected, outcome) {
            (Expected::Completed { vex_shape, mixed }, AnalysisOutcome::Completed(completed)) => {
                check_completed(
                    job, completed, *vex_shape, *mixed, &store, &bucket, &validator,
                )
                .await
            }
            (
                Expected::Failed {
                    stage,
                    reason,
                    message_names,
                },
                AnalysisOutcome::Failed(failed),
            ) => check_failed(job, failed, *stage, *reason, message_names),
            (expected, AnalysisOutcome::Failed(failed)) => Err(anyhow::anyhow!(
                "{}: expected {expected:?}, got failed in {} with {}: {}",
                job.id,
                failed.stage,
                failed.reason.as_str(),
                failed.message
            )),
            (expected, AnalysisOutcome::Completed(completed)) => Err(anyhow::anyhow!(
                "{}: expected {expected:?}, got completed with {:?}",
                job.id,
                completed.summary
            )),
        };
        let checked = match checked {
            Ok(()) => check_final_status(&kv, job, outcome).await,
            Err(error) => Err(error),
        };
        if let Err(error) = checked {
            problems.push(format!("{error:#}"));
        }
    }
    ensure!(
        problems.is_empty(),
        "{} job(s) wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The fixture images' documents where they are used: the real Grype and Trivy.
    let scanners = tokio::task::block_in_place(crate::scanner_support::Scanners::ensure)?;
    let pushed: Vec<&str> = stack.in_registry.iter().map(|image| image.job_id).collect();
    for job in jobs
        .iter()
        .filter(|j| matches!(j.id, "e2e-alpine" | "e2e-nginx-main") || pushed.contains(&j.id))
    {
        let dir = stack.scanner_dir(job.id);
        let mut analysis = crate::scanner_support::Analysis::download(
            &store,
            job.id,
            &format!("analyses/{}/evidence/sbom-image.json", job.id),
            &dir,
        )
        .await?;
        if pushed.contains(&job.id) {
            analysis = analysis.in_registry(format!("{}@{}", job.image_ref, job.digest));
        }
        let counts =
            tokio::task::block_in_place(|| scanners.round_trip(&analysis)).with_context(|| {
                format!(
                    "{}: the scanners disagree with vexxy's VEX (documents in {})",
                    job.id,
                    dir.display()
                )
            })?;
        eprintln!("e2e: {} with the real scanners: {counts:?}", job.id);
    }

    // Kubescape was installed once, by install-check, with the documented command.
    ensure!(
        apiservice_exists(&kube).await?,
        "the stand-in helm should have installed Kubescape"
    );
    let values = values_file(&workspace_root());
    let expected_calls: Vec<Vec<String>> = vec![
        vec![
            "repo",
            "add",
            "kubescape",
            "https://kubescape.github.io/helm-charts",
            "--force-update",
        ],
        vec![
            "upgrade",
            "--install",
            "kubescape",
            "kubescape/kubescape-operator",
            "-n",
            "kubescape",
            "--create-namespace",
            "-f",
            values.as_str(),
        ],
    ]
    .into_iter()
    .map(|call| call.into_iter().map(String::from).collect())
    .collect();
    ensure!(
        stack.helm_calls()? == expected_calls,
        "helm calls {:?}, expected one install: {expected_calls:?}",
        stack.helm_calls()?
    );

    // No sandbox left: extract deletes what it analysed, the janitor what failed before it.
    let cleanup_deadline = Instant::now() + SANDBOX_CLEANUP_TIMEOUT;
    loop {
        let left = sandbox_deployments(&kube).await?;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= cleanup_deadline {
            bail!(
                "sandbox Deployments still in {SANDBOX_NAMESPACE} {SANDBOX_CLEANUP_TIMEOUT:?} after the last outcome: {left:?} \
                 (extract deletes analysed sandboxes; the janitor in vexxy-extract the rest)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let exited = stack.pipeline.exited();
    ensure!(
        exited.is_empty(),
        "stages exited during the run: {exited:?}"
    );
    eprintln!(
        "e2e: {} jobs, all outcomes {:.1}s after publishing; checks done at {:.1}s",
        jobs.len(),
        all_outcomes.as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );
    Ok(())
}
