//! A whole vexxy stack as processes for the bad-input, security and executed-docs suites:
//! nats-server (with whatever authentication the test configures), s3s-fs (with keys the test
//! chooses, so a secret scan can look for them), kubesim with Kubescape installed, and the five
//! stage binaries.
//!
//! Also the downstream view of a run: every outcome event keyed by the request's `Nats-Msg-Id`
//! (the one correlation value a rejected request always has), the dead letters, and the
//! Deployments the deploy stage created, captured by a watch as they appear (extract deletes them
//! once analysed, so reading them afterwards would find nothing).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use vexxy_events::{AnalysisOutcome, subjects};
use vexxy_harness::identities::StageIdentities;
use vexxy_harness::realcluster::{KwokLifecycles, RealCluster, STORAGE_APISERVICE};
use vexxy_harness::stack::{self, KubesimProcess, Pipeline, StackEndpoints};
use vexxy_harness::{ChildProcess, NatsServer, find_binary, free_port};

pub const SANDBOX_NAMESPACE: &str = "vexxy-sandbox";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// s3s-fs with the keys a test chose (the harness's S3 server has fixed, well-known keys).
pub struct S3 {
    process: ChildProcess,
    pub port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub root: PathBuf,
}

impl S3 {
    pub fn start(dir: &Path, access_key: &str, secret_key: &str) -> Result<S3> {
        let binary = find_binary("VEXXY_S3S_FS", "s3s-fs")?;
        let root = dir.join("s3-root");
        let bucket = "vexxy-security".to_string();
        std::fs::create_dir_all(root.join(&bucket)).context("cannot create the bucket dir")?;
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access_key, "--secret-key", secret_key])
            .arg(&root);
        let process = ChildProcess::spawn_listening(
            "s3s-fs",
            command,
            &dir.join("s3s-fs.log"),
            port,
            Duration::from_secs(15),
        )?;
        Ok(S3 {
            process,
            port,
            bucket,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            root,
        })
    }

    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }
}

/// How the stack is set up.
#[derive(Default)]
pub struct StackOptions {
    /// Extra nats-server flags (e.g. `--user u --pass p`).
    pub nats_args: Vec<String>,
    /// The authentication variables every stage gets (NATS_USER, ...).
    pub nats_auth_env: Vec<(String, String)>,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    /// Added to every stage's environment (later wins).
    pub stage_env: Vec<(String, String)>,
    /// Run on the real control plane, its pods through these lifecycles (kubesim is then only
    /// Kubescape, and each stage its own ServiceAccount under `deploy/base`'s RBAC); `None`:
    /// kubesim is the cluster.
    pub real_cluster: Option<KwokLifecycles>,
}

pub struct TestStack {
    pub dir: tempfile::TempDir,
    pub nats: NatsServer,
    pub s3: S3,
    pub kubesim: KubesimProcess,
    pub pipeline: Pipeline,
    pub client: async_nats::Client,
    /// The real control plane, when the stack runs on it. Dropped after the stages.
    pub real: Option<RealCluster>,
    /// The cluster's kubeconfig (admin on the real control plane).
    kubeconfig: PathBuf,
}

impl TestStack {
    /// Starts everything and waits until every stage is ready. `connect` opens the test's own
    /// client (with the credentials the server wants).
    pub async fn start(
        prefix: &str,
        options: StackOptions,
        connect: async_nats::ConnectOptions,
    ) -> Result<TestStack> {
        let (dir, nats, s3, kubesim, pipeline, real) =
            tokio::task::block_in_place(|| start_processes(prefix, &options))?;
        let kubeconfig = match &real {
            Some(real) => real.kubeconfig().to_path_buf(),
            None => kubesim.kubeconfig().to_path_buf(),
        };
        let client = connect
            .connect(nats.url())
            .await
            .context("the test cannot connect to its nats-server")?;
        Ok(TestStack {
            dir,
            nats,
            s3,
            kubesim,
            pipeline,
            client,
            real,
            kubeconfig,
        })
    }

    pub fn js(&self) -> jetstream::Context {
        jetstream::new(self.client.clone())
    }

    /// A client of the cluster the stages use (admin on the real control plane).
    pub async fn kube_client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        kube::Client::try_from(config).context("cannot build a client for the cluster")
    }

    /// Every process log of the stack: the five stages, kubesim, nats-server, s3s-fs.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .pipeline
            .stages
            .iter()
            .map(|s| s.process.log_path().to_path_buf())
            .collect();
        files.push(self.kubesim.log_path().to_path_buf());
        files.push(self.nats.log_path());
        files.push(self.s3.log_path().to_path_buf());
        files
    }

    pub fn diagnostics(&mut self) -> String {
        let exited: Vec<String> = self
            .pipeline
            .exited()
            .into_iter()
            .map(|(name, status)| format!("{name} exited ({status})"))
            .collect();
        format!(
            "{}\n{}\n(all logs in {})",
            if exited.is_empty() {
                "all stages still running".to_string()
            } else {
                exited.join(", ")
            },
            self.pipeline.log_tails(20),
            self.dir.path().display()
        )
    }

    pub fn keep_logs(&mut self) {
        let placeholder = tempfile::tempdir().expect("a temporary directory");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        eprintln!("logs kept in {}", dir.keep().display());
    }
}

type Started = (
    tempfile::TempDir,
    NatsServer,
    S3,
    KubesimProcess,
    Pipeline,
    Option<RealCluster>,
);

fn start_processes(prefix: &str, options: &StackOptions) -> Result<Started> {
    let root = vexxy_harness::workspace_root();
    stack::build_binaries(&root)?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create the test directory")?;
    let nats_args: Vec<&str> = options.nats_args.iter().map(String::as_str).collect();
    let nats = NatsServer::start_with_args(&nats_args)?;
    let (access, secret) = if options.s3_access_key.is_empty() {
        ("vexxy-sec-access", "vexxy-sec-secret")
    } else {
        (
            options.s3_access_key.as_str(),
            options.s3_secret_key.as_str(),
        )
    };
    let s3 = S3::start(dir.path(), access, secret)?;
    let kubesim_args: Vec<String> = [
        "--seed",
        "7",
        "--pod-start-delay-ms",
        "100",
        "--consolidation-delay-ms",
        "200",
        "--scan-delay-ms",
        "200",
    ]
    .map(String::from)
    .to_vec();
    let real = match &options.real_cluster {
        Some(lifecycles) => Some(RealCluster::start_with(lifecycles)?),
        None => None,
    };
    let mut kubesim_args = kubesim_args;
    if let Some(real) = &real {
        kubesim_args.push("--upstream-kubeconfig".into());
        kubesim_args.push(real.kubeconfig().display().to_string());
    }
    let kubesim = KubesimProcess::start(dir.path(), &kubesim_args)?;
    let identities = match &real {
        Some(real) => {
            real.wait_api_service_available(STORAGE_APISERVICE, READY_TIMEOUT)?;
            Some(StageIdentities::apply(real, dir.path())?)
        }
        None => None,
    };
    let endpoints = StackEndpoints {
        nats_url: nats.url(),
        store: format!("s3://{}", s3.bucket),
        kubeconfig: match &real {
            Some(real) => real.kubeconfig().to_path_buf(),
            None => kubesim.kubeconfig().to_path_buf(),
        },
    };
    let aws = s3.aws_env();
    let mut pipeline = Pipeline::start(dir.path(), |stage, health_file| {
        let mut env = stack::local_stage_env(&endpoints, health_file, 1);
        env.extend(aws.iter().cloned());
        env.extend(fast_timings());
        env.extend(options.nats_auth_env.iter().cloned());
        env.extend(options.stage_env.iter().cloned());
        if let Some(identities) = &identities {
            env.extend(identities.env_of(stage));
        }
        env
    })?;
    if let Err(error) = pipeline.wait_ready(READY_TIMEOUT) {
        let _ = dir.keep();
        return Err(error);
    }
    Ok((dir, nats, s3, kubesim, pipeline, real))
}

fn fast_timings() -> Vec<(String, String)> {
    [
        ("VEXXY_MAX_IN_FLIGHT", "16"),
        ("VEXXY_ACK_WAIT", "5s"),
        ("VEXXY_RETRY_BASE_DELAY", "200ms"),
        ("VEXXY_RETRY_MAX_DELAY", "1s"),
        ("VEXXY_PULL_EXPIRES", "1s"),
        ("VEXXY_SHUTDOWN_GRACE", "3s"),
        ("VEXXY_VEX_SETTLE", "1s"),
        ("VEXXY_WAIT_GRACE", "45s"),
        ("VEXXY_ON_TIMEOUT", "fail"),
        ("VEXXY_JANITOR_INTERVAL", "1s"),
        ("K8S_JOB_TTL_SECONDS", "1"),
        ("SANDBOX_CPU_REQUEST", "100m"),
        ("SANDBOX_MEMORY_REQUEST", "128Mi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Publishes raw bytes on `vexxy.analysis.requested` with `Nats-Msg-Id`, as a user would;
/// returns the stream sequence.
pub async fn publish_raw(js: &jetstream::Context, msg_id: &str, body: Vec<u8>) -> Result<u64> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let ack = js
        .publish_with_headers(subjects::REQUESTED, headers, body.into())
        .await
        .with_context(|| format!("cannot publish {msg_id}"))?
        .await
        .with_context(|| format!("JetStream did not acknowledge {msg_id}"))?;
    anyhow::ensure!(!ack.duplicate, "{msg_id} was taken for a duplicate");
    Ok(ack.sequence)
}

/// AnalysisOutcome events as a downstream subscriber sees them, keyed by request `Nats-Msg-Id`.
pub struct Outcomes {
    messages: jetstream::consumer::pull::Stream,
    pub by_msg_id: BTreeMap<String, Vec<AnalysisOutcome>>,
}

impl Outcomes {
    pub async fn subscribe(js: &jetstream::Context, durable: &str) -> Result<Outcomes> {
        let consumer = js
            .get_stream(subjects::PUBLIC_STREAM)
            .await
            .context("the stages provision the public stream at start")?
            .create_consumer(pull::Config {
                durable_name: Some(durable.to_string()),
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
        let messages = consumer.messages().await?;
        Ok(Outcomes {
            messages,
            by_msg_id: BTreeMap::new(),
        })
    }

    fn record(&mut self, payload: &[u8]) -> Result<()> {
        let outcome = AnalysisOutcome::from_slice(payload)?.outcome;
        let msg_id = outcome
            .request_msg_id()
            .unwrap_or("<no request msg id>")
            .to_string();
        self.by_msg_id.entry(msg_id).or_default().push(outcome);
        Ok(())
    }

    /// Reads outcomes until every id in `expected` has one (or `timeout` passes), then keeps
    /// listening for `quiet` so a second outcome for any job would be seen.
    pub async fn collect(
        &mut self,
        expected: &[String],
        timeout: Duration,
        quiet: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing = expected
                .iter()
                .filter(|id| !self.by_msg_id.contains_key(*id))
                .count();
            if missing == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, self.messages.next()).await {
                Ok(Some(Ok(message))) => {
                    self.record(&message.payload)?;
                    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                Ok(Some(Err(error))) => bail!("the downstream consumer failed: {error}"),
                Ok(None) => bail!("the downstream consumer ended"),
                Err(_) => break,
            }
        }
        while let Ok(next) = tokio::time::timeout(quiet, self.messages.next()).await {
            match next {
                Some(Ok(message)) => {
                    self.record(&message.payload)?;
                    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                Some(Err(error)) => bail!("the downstream consumer failed: {error}"),
                None => bail!("the downstream consumer ended"),
            }
        }
        Ok(())
    }
}

/// A dead letter: the payload and headers as stored on `vexxy.dlq.<stage>`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Every message on the dead-letter stream, read with an ephemeral ordered consumer.
pub async fn dead_letters(js: &jetstream::Context) -> Result<Vec<DeadLetter>> {
    all_messages(js, subjects::DEAD_LETTER_STREAM).await
}

/// Every message currently in `stream` (bounded: at most 100,000, 30 s).
pub async fn all_messages(js: &jetstream::Context, stream: &str) -> Result<Vec<DeadLetter>> {
    let mut stream_handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("no stream {stream}"))?;
    let count = stream_handle.info().await?.state.messages;
    let mut out = Vec::new();
    if count == 0 {
        return Ok(out);
    }
    let consumer = stream_handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as u64) < count && out.len() < 100_000 {
        let Ok(next) = tokio::time::timeout_at(deadline, messages.next()).await else {
            bail!("read {} of {count} messages of {stream} in 30 s", out.len());
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => bail!("reading {stream}: {error}"),
            None => break,
        };
        let headers = message
            .headers
            .as_ref()
            .map(|headers| {
                headers
                    .iter()
                    .map(|(name, values)| {
                        let value = values.iter().map(|v| v.as_str()).collect::<Vec<_>>();
                        (name.to_string(), value.join(","))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(DeadLetter {
            subject: message.subject.to_string(),
            payload: message.payload.to_vec(),
            headers,
        });
    }
    Ok(out)
}

/// The objects the deploy stage created in the sandbox namespace, as first seen by a watch.
///
/// The watches stop when the last clone of the capture is dropped: a watch must not outlive the
/// kubesim it follows (see [`spawn_watch`]).
#[derive(Clone, Default)]
pub struct SandboxCapture {
    pub deployments: Arc<Mutex<BTreeMap<String, Deployment>>>,
    pub policies: Arc<Mutex<BTreeMap<String, NetworkPolicy>>>,
    pub pods: Arc<Mutex<BTreeMap<String, Pod>>>,
    watches: Arc<WatchTasks>,
}

/// The watch tasks of a capture, aborted when it is dropped.
#[derive(Default)]
struct WatchTasks(Mutex<Vec<tokio::task::AbortHandle>>);

impl Drop for WatchTasks {
    fn drop(&mut self) {
        let tasks = self
            .0
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

impl SandboxCapture {
    /// Starts watching; returns once both watches have listed (so nothing created later is
    /// missed).
    pub async fn start(client: kube::Client) -> Result<SandboxCapture> {
        let capture = SandboxCapture::default();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(3);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), SANDBOX_NAMESPACE);
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), SANDBOX_NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(client, SANDBOX_NAMESPACE);
        let tasks = vec![
            spawn_watch(deployments, capture.deployments.clone(), ready_tx.clone()),
            spawn_watch(policies, capture.policies.clone(), ready_tx.clone()),
            spawn_watch(pods, capture.pods.clone(), ready_tx),
        ];
        *capture.watches.0.lock().unwrap() = tasks;
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
                .await
                .context("the sandbox watch did not start within 10 s")?;
        }
        Ok(capture)
    }

    pub fn deployment(&self, name: &str) -> Option<Deployment> {
        self.deployments.lock().unwrap().get(name).cloned()
    }

    pub fn policy(&self, name: &str) -> Option<NetworkPolicy> {
        self.policies.lock().unwrap().get(name).cloned()
    }
}

/// Records every object of `api` as first seen; signals `ready` once the initial list is in.
///
/// The watch backs off after an error. Without that, kube's watcher retries at once on the next
/// poll, and once kubesim is gone (the stack is dropped at the end of a test) a connect to its
/// closed loopback port is refused without ever blocking: the task spins without yielding, and
/// the tokio runtime's shutdown waits for it forever — the test passed, then its process never
/// exited.
fn spawn_watch<K>(
    api: Api<K>,
    seen: Arc<Mutex<BTreeMap<String, K>>>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> tokio::task::AbortHandle
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    let _ = ready.send(()).await;
                }
                Ok(watcher::Event::Apply(object)) | Ok(watcher::Event::InitApply(object)) => {
                    let name = object.meta().name.clone().unwrap_or_default();
                    seen.lock().unwrap().entry(name).or_insert(object);
                }
                _ => {}
            }
        }
    });
    task.abort_handle()
}

/// `sha256:` + `prefix` padded to 64 hex digits with `fill`: distinct, valid digests per case.
pub fn digest(prefix: &str, fill: char) -> String {
    let hex: String = prefix
        .chars()
        .chain(std::iter::repeat(fill))
        .take(64)
        .collect();
    format!("sha256:{hex}")
}

/// Named checks of one run: each is printed PASS/FAIL, and the run fails listing every failed one
/// (not just the first), so one report says all that is wrong.
pub struct CheckReport {
    suite: &'static str,
    noun: &'static str,
    rows: Vec<(String, Result<()>)>,
}

impl CheckReport {
    pub fn new(suite: &'static str, noun: &'static str) -> Self {
        Self {
            suite,
            noun,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, name: &str, result: Result<()>) {
        self.rows.push((name.to_string(), result));
    }

    pub fn finish(self) -> Result<()> {
        let mut failures = Vec::new();
        for (name, result) in &self.rows {
            match result {
                Ok(()) => eprintln!("  PASS  {name}"),
                Err(error) => {
                    eprintln!("  FAIL  {name}: {error:#}");
                    failures.push(format!("{name}: {error:#}"));
                }
            }
        }
        eprintln!(
            "{}: {} passed, {} failed",
            self.suite,
            self.rows.len() - failures.len(),
            failures.len()
        );
        anyhow::ensure!(
            failures.is_empty(),
            "{} of {} {} failed:\n{}",
            failures.len(),
            self.rows.len(),
            self.noun,
            failures.join("\n")
        );
        Ok(())
    }
}
