//! The fault-injection scenario runner, shared by `chaos.rs` (kubesim is the whole cluster) and
//! `real_chaos.rs` (a real kube-apiserver, etcd, controller-manager, scheduler and kwok, with
//! kubesim only as Kubescape: the storage API behind the real aggregator, node-agent and
//! kubevuln for the real pods).
//!
//! [`run_scenario`] starts the stack, a downstream subscriber and a Deployment watch, publishes
//! the requests (one in twenty is an image whose pull fails, so some jobs must end in a correct
//! `failed` event: kubesim's pull-fail pattern, or a kwok Stage on the real cluster), runs the
//! scenario's fault driver while the jobs move, and then checks what a downstream subscriber
//! saw:
//!
//! * every job has exactly one outcome event (distinct stream messages; a redelivery to the
//!   subscriber itself is not counted twice), of the expected kind;
//! * every artifact URL of every completed event resolves and parses as JSON, the OpenVEX document
//!   is valid against the official schema, and every key is under `analyses/<job>/`;
//! * the KV job record is final and agrees with the event;
//! * no sandbox Deployment is left, and (watched from the start) no job's Deployment was ever
//!   created twice;
//! * no stage process exited that the scenario did not stop itself (nor, on the real tier, a
//!   control plane component);
//! * the faults happened as the scenario claims ([`Injected::faults`]): each one landed (its
//!   premise held, e.g. the stage held work when killed) before the last outcome arrived; where
//!   landing depends on timing, at least the majority the scenario names did.
//!
//! Every run appends its figures to `$VEXXY_CHAOS_REPORT` (see `vexxy_harness::chaos::Figures`).

#![allow(dead_code)] // each test crate runs a different set of scenarios

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use vexxy_events::{
    AnalysisOutcome, AnalysisRequest, FailureReason, JobState, JobStatus, RunConfig, Stage,
    subjects,
};
use vexxy_harness::chaos::{Figures, NatsCluster, Scale, StageFleet, in_flight};
use vexxy_harness::realcluster::{KwokLifecycles, RealCluster};
use vexxy_harness::stack::{self, KubesimProcess, STAGES, StackEndpoints};
use vexxy_harness::{NatsServer, S3Server, workspace_root};
use vexxy_runtime::config::{Env, Secret};
use vexxy_runtime::{RuntimeConfig, Store};

use crate::cluster_support::{self, ClusterKind, StageIdentities};

const SANDBOX_NAMESPACE: &str = "vexxy-sandbox";
/// Each job's analysis window (the pod label that ends Kubescape's learning).
const ANALYSIS_SECONDS: u64 = 2;
/// One job in this many runs an image whose pull fails: it must end `failed` in wait.
const PULL_FAIL_EVERY: usize = 20;
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
const SANDBOX_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fault driver waits for a stage to have work in hand before killing it anyway.
pub const MID_WORK_TIMEOUT: Duration = Duration::from_secs(20);
/// Of the five stage kills meant to strike mid-work, how many must find the stage holding work:
/// a stage can finish its messages between the metrics read and the kill, so not all five, but a
/// majority, or the scenario did not test what it claims.
pub const MID_WORK_KILLS_MUST_LAND: usize = 3;
const DOWNSTREAM_DURABLE: &str = "chaos-downstream";
/// How long the real aggregator may take to find kubesim's storage API available.
const STORAGE_AVAILABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// From the first request to the last outcome: generous, because the faults themselves add
/// redelivery delays (AckWait after a kill, backoff through an outage) and the machine is shared.
fn outcome_timeout(jobs: usize, scale: &Scale) -> Duration {
    Duration::from_secs(90) + Duration::from_millis(400) * jobs as u32 + scale.s3_outage
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    image_ref: String,
    digest: String,
    /// The image's pull fails: the only correct outcome is `failed` in wait, `image_pull_failed`.
    pull_fails: bool,
}

fn jobs(prefix: &str, count: usize) -> Vec<Job> {
    (0..count)
        .map(|index| {
            let pull_fails = index % PULL_FAIL_EVERY == PULL_FAIL_EVERY - 1;
            // Digests outside kubesim's special prefixes (0000 zero-vuln, fffe/ffff large/huge):
            // ordinary generated content with a few vulnerabilities.
            let digest = format!(
                "sha256:{:08x}{}",
                0xc4a0_0000u32 + index as u32,
                "5".repeat(56)
            );
            Job {
                id: format!("{prefix}-{index:04}"),
                image_ref: if pull_fails {
                    "quay.io/chaos/pull-fail-app".to_string()
                } else {
                    format!("quay.io/chaos/app-{}", index % 7)
                },
                digest,
                pull_fails,
            }
        })
        .collect()
}

/// The broker: one server, or a cluster with replicated streams.
pub enum Broker {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Broker {
    fn url(&self) -> String {
        match self {
            Broker::Single(server) => server.url(),
            Broker::Cluster(cluster) => cluster.urls(),
        }
    }

    async fn client(&self) -> Result<async_nats::Client> {
        match self {
            Broker::Single(server) => {
                let urls: async_nats::ServerAddr = server.url().parse()?;
                async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .max_reconnects(None)
                    .connect(urls)
                    .await
                    .context("cannot connect to the test nats-server")
            }
            Broker::Cluster(cluster) => cluster.client().await,
        }
    }

    fn log_tails(&mut self) -> String {
        match self {
            Broker::Single(server) => format!(
                "----- nats-server ({}) -----\n{}",
                server.log_path().display(),
                stack::log_tail(&server.log_path(), 15)
            ),
            Broker::Cluster(cluster) => cluster.log_tails(15),
        }
    }
}

pub struct Options {
    /// Which Kubernetes: kubesim, or the real control plane with kubesim as Kubescape.
    pub kube: ClusterKind,
    pub replicas: usize,
    /// A three-node nats-server cluster with every stream replicated three times.
    pub nats_cluster: bool,
    /// Added to kubesim's command line (fault rules, latency, watch drops).
    pub kubesim_args: Vec<String>,
}

impl Options {
    pub fn new(kube: ClusterKind) -> Self {
        Options {
            kube,
            replicas: 1,
            nats_cluster: false,
            kubesim_args: Vec::new(),
        }
    }
}

/// Everything a scenario started; processes are killed when it is dropped, in field order:
/// the stages first, then kubesim while the API it watches is still up, then the control plane.
pub struct ChaosStack {
    pub fleet: StageFleet,
    pub kubesim: KubesimProcess,
    pub real: Option<RealCluster>,
    pub broker: Broker,
    pub s3: S3Server,
    /// The admin kubeconfig of the cluster (kubesim's, or the real API server's).
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl ChaosStack {
    fn start(options: Options, jobs: &[Job]) -> Result<ChaosStack> {
        stack::build_binaries(&workspace_root())?;
        let dir = tempfile::Builder::new()
            .prefix("vexxy-chaos-")
            .tempdir()
            .context("cannot create the test directory")?;
        let broker = if options.nats_cluster {
            Broker::Cluster(NatsCluster::start(3)?)
        } else {
            Broker::Single(NatsServer::start()?)
        };
        let s3 = S3Server::start()?;
        let (real, identities) = match options.kube {
            ClusterKind::Sim => (None, None),
            ClusterKind::Real => {
                // kubesim's pull-fail pattern does not reach real pods: kwok takes those jobs'
                // pods to ImagePullBackOff instead.
                let lifecycles = KwokLifecycles {
                    image_pull_backoff_jobs: jobs
                        .iter()
                        .filter(|job| job.pull_fails)
                        .map(|job| job.id.clone())
                        .collect(),
                    ..KwokLifecycles::default()
                };
                let real = RealCluster::start_with(&lifecycles)?;
                let identities = StageIdentities::apply(&real, dir.path())?;
                (Some(real), Some(identities))
            }
        };
        let mut kubesim_args: Vec<String> = [
            "--seed",
            "7",
            "--pod-start-delay-ms",
            "200",
            // node-agent's first save within the 2 s window: a `ready` profile and a
            // learning-time scan, so restarted wait processes meet both kinds of VEX write.
            "--first-save-delay-ms",
            "1000",
            "--consolidation-delay-ms",
            "300",
            "--scan-delay-ms",
            "300",
            "--watch-history",
            "100000",
        ]
        .map(String::from)
        .to_vec();
        if let Some(real) = &real {
            kubesim_args.push("--upstream-kubeconfig".into());
            kubesim_args.push(real.kubeconfig().display().to_string());
        }
        kubesim_args.extend(options.kubesim_args);
        let kubesim = KubesimProcess::start(dir.path(), &kubesim_args)?;
        let kubeconfig = match &real {
            Some(real) => {
                cluster_support::wait_storage_available(real, STORAGE_AVAILABLE_TIMEOUT)?;
                real.kubeconfig().to_path_buf()
            }
            None => kubesim.kubeconfig().to_path_buf(),
        };

        let endpoints = StackEndpoints {
            nats_url: broker.url(),
            store: format!("s3://{}", s3.bucket()),
            kubeconfig: kubeconfig.clone(),
        };
        let aws = s3.aws_env();
        let replicated = options.nats_cluster;
        let fleet = StageFleet::start(dir.path(), options.replicas, move |stage, health_file| {
            let mut env = stack::local_stage_env(&endpoints, health_file, 1);
            env.extend(aws.iter().cloned());
            env.extend(stage_timings(stage));
            if replicated {
                env.push(("VEXXY_STREAM_REPLICAS".into(), "3".into()));
            }
            if let Some(identities) = &identities {
                env.extend(identities.env_of(stage));
            }
            env
        })?;
        let mut stack = ChaosStack {
            fleet,
            kubesim,
            real,
            broker,
            s3,
            kubeconfig,
            dir,
        };
        if let Err(error) = stack.fleet.wait_ready(READY_TIMEOUT) {
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

    /// A NATS client of the scenario's broker (every node of a cluster).
    pub async fn broker_client(&self) -> Result<async_nats::Client> {
        self.broker.client().await
    }

    async fn kube_client(&self) -> Result<kube::Client> {
        cluster_support::kube_client(&self.kubeconfig).await
    }

    /// A GET of one of kubesim's `/kubesim/...` control endpoints, as JSON (over HTTPS with its
    /// self-signed certificate when it is Kubescape for the real cluster).
    async fn kubesim_control(&self, path: &str) -> Result<Value> {
        let mut config = kube::Config::new(self.kubesim.url().parse()?);
        config.accept_invalid_certs = true;
        let client = kube::Client::try_from(config).context("cannot build a client for kubesim")?;
        let request = http::Request::get(path).body(Vec::new())?;
        let body = client
            .request_text(request)
            .await
            .with_context(|| format!("kubesim GET {path}"))?;
        serde_json::from_str(&body).with_context(|| format!("kubesim {path} is not JSON: {body}"))
    }

    fn diagnostics(&mut self) -> String {
        let exited = self.fleet.exited();
        let real = match &mut self.real {
            Some(real) => format!(
                "----- real control plane (exited: {:?}) -----{}\n",
                real.exited(),
                real.tails()
            ),
            None => String::new(),
        };
        format!(
            "exited stages: {exited:?}\n{}\n----- kubesim ({}) -----\n{}\n{}\n{real}(all logs in {})",
            self.fleet.log_tails(20),
            self.kubesim.log_path().display(),
            stack::log_tail(self.kubesim.log_path(), 10),
            self.broker.log_tails(),
            self.dir.path().display()
        )
    }

    fn keep_logs(&mut self) {
        let placeholder = tempfile::tempdir().expect("a temporary directory");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        eprintln!("chaos: logs kept in {}", dir.keep().display());
        if let Some(real) = &self.real {
            eprintln!(
                "chaos: the control plane's logs are in {} (removed when the test ends)",
                real.dir().display()
            );
        }
    }
}

/// Short timings so a job takes seconds, and a retry budget that outlasts the outages: ten
/// deliveries with backoff from 500 ms to 4 s cover about 30 s of broken storage or API before
/// a job would be failed as `storage_unavailable` / `kubernetes_unavailable`.
fn stage_timings(stage: &str) -> Vec<(String, String)> {
    let in_flight = if stage == "vexxy-wait" { "400" } else { "24" };
    [
        ("VEXXY_MAX_IN_FLIGHT", in_flight),
        ("VEXXY_ACK_WAIT", "5s"),
        ("VEXXY_MAX_DELIVER", "12"),
        ("VEXXY_RETRY_BASE_DELAY", "500ms"),
        ("VEXXY_RETRY_MAX_DELAY", "4s"),
        ("VEXXY_PULL_EXPIRES", "1s"),
        ("VEXXY_SHUTDOWN_GRACE", "3s"),
        // kubesim's storage consolidates a save within 300 ms and its kubevuln scans 300 ms
        // later, but with 200 jobs on a loaded 2-core machine its emulator falls seconds
        // behind: with 1 s here, CI's slower machine saw wait go on without a VEX that came
        // later (extract then failed the job with `no_vex_produced`, as it must), and a
        // locally loaded one 85 of 190 jobs. Production waits 60 s for the VEX.
        ("VEXXY_VEX_SETTLE", "15s"),
        // A restarted wait (history unknown) waits this long after it first sees a completion
        // for a learning-time scan to end; the same lag applies.
        ("VEXXY_LEARNING_SCAN_BOUND", "5s"),
        ("VEXXY_WAIT_GRACE", "60s"),
        ("VEXXY_ON_TIMEOUT", "fail"),
        ("VEXXY_JANITOR_INTERVAL", "1s"),
        ("K8S_JOB_TTL_SECONDS", "1"),
        ("SANDBOX_CPU_REQUEST", "10m"),
        ("SANDBOX_MEMORY_REQUEST", "16Mi"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// How long to keep listening after every job has an outcome, for a second one to show up. A
/// second outcome comes from a redelivery, which arrives at the latest AckWait after the delivery
/// it repeats (a killed process acks nothing) plus the longest Nak backoff: so this is the
/// stages' own AckWait + `VEXXY_RETRY_MAX_DELAY`, read from the environment the fleet gets, and a
/// second for the subscriber's fetch.
fn quiet_period() -> Result<Duration> {
    let mut pairs = stage_timings("vexxy-deploy");
    pairs.push(("VEXXY_STORE".into(), "file:///nonexistent".into()));
    let config = RuntimeConfig::load(&Env::from_pairs(&pairs))
        .context("the chaos stage timings are not a valid stage configuration")?;
    Ok(config.consumer.ack_wait + config.consumer.retry_max_delay + Duration::from_secs(1))
}

fn request(job: &Job) -> AnalysisRequest {
    AnalysisRequest {
        job_id: Some(job.id.clone()),
        image_ref: job.image_ref.clone(),
        image_digest: Some(job.digest.clone()),
        config: Some(RunConfig {
            analysis_duration: Some(ANALYSIS_SECONDS),
            ..RunConfig::default()
        }),
        labels: [("suite".to_string(), "chaos".to_string())].into(),
    }
}

/// Publishes every request (with a deterministic `Nats-Msg-Id`, retrying a few times if the
/// broker is briefly unavailable, as a real publisher would).
async fn publish_all(js: &jetstream::Context, jobs: &[Job]) -> Result<()> {
    for job in jobs {
        let body = serde_json::to_vec(&request(job))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{}.request", job.id).as_str());
            let published = async {
                js.publish_with_headers(subjects::REQUESTED, headers, body.clone().into())
                    .await?
                    .await
                    .map_err(anyhow::Error::from)
            }
            .await;
            match published {
                Ok(_) => break,
                Err(error) if attempt < 20 => {
                    eprintln!("chaos: publishing {} failed ({error}); retrying", job.id);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => bail!("cannot publish the request of {}: {error}", job.id),
            }
        }
    }
    Ok(())
}

/// What the downstream subscriber saw: distinct outcome messages (by stream sequence) per job.
#[derive(Default)]
pub struct Outcomes {
    by_job: BTreeMap<String, BTreeMap<u64, AnalysisOutcome>>,
    unreadable: Vec<String>,
    /// When the subscriber last received a job's first outcome: the run's last outcome, once
    /// every job has one.
    last_first_outcome: Option<Instant>,
}

impl Outcomes {
    fn record(&mut self, sequence: u64, payload: &[u8]) {
        match parse_outcome(payload) {
            Ok((job, outcome)) => {
                let events = self.by_job.entry(job).or_default();
                if events.is_empty() {
                    self.last_first_outcome = Some(Instant::now());
                }
                events.entry(sequence).or_insert(outcome);
            }
            Err(error) => self.unreadable.push(format!("{error:#}")),
        }
    }

    fn finished(&self) -> usize {
        self.by_job.len()
    }
}

fn parse_outcome(payload: &[u8]) -> Result<(String, AnalysisOutcome)> {
    let received = AnalysisOutcome::from_slice(payload)?;
    let job = received
        .job_id
        .context("an outcome event has no subject (job id)")?;
    Ok((job, received.outcome))
}

pub type SharedOutcomes = Arc<Mutex<Outcomes>>;

pub fn finished(outcomes: &SharedOutcomes) -> usize {
    outcomes.lock().expect("outcomes lock").finished()
}

/// The downstream subscriber: a durable pull consumer on the public stream, filtered to
/// completed + failed, acking what it read. It keeps going through broker restarts (fetch errors
/// are retried, the consumer looked up again) until `stop` is set.
async fn subscribe(
    js: jetstream::Context,
    outcomes: SharedOutcomes,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let config = pull::Config {
        durable_name: Some(DOWNSTREAM_DURABLE.to_string()),
        filter_subjects: vec![
            subjects::COMPLETED.to_string(),
            subjects::FAILED.to_string(),
        ],
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    while !stop.load(Ordering::SeqCst) {
        let consumer = async {
            js.get_stream(subjects::PUBLIC_STREAM)
                .await?
                .get_or_create_consumer(DOWNSTREAM_DURABLE, config.clone())
                .await
                .map_err(anyhow::Error::from)
        }
        .await;
        let consumer: jetstream::consumer::PullConsumer = match consumer {
            Ok(consumer) => consumer,
            Err(error) => {
                eprintln!("chaos: downstream consumer unavailable ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            let batch = consumer
                .fetch()
                .max_messages(200)
                .expires(Duration::from_millis(500))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    eprintln!("chaos: downstream fetch failed ({error}); retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    break;
                }
            };
            let mut broken = false;
            while let Some(message) = batch.next().await {
                match message {
                    Ok(message) => {
                        let sequence = message.info().map(|info| info.stream_sequence);
                        match sequence {
                            Ok(sequence) => outcomes
                                .lock()
                                .expect("outcomes lock")
                                .record(sequence, &message.payload),
                            Err(error) => {
                                eprintln!("chaos: outcome without stream info ({error})")
                            }
                        }
                        // A lost ack only means the subscriber sees the message again; it is
                        // counted once by its stream sequence.
                        let _ = message.ack().await;
                    }
                    Err(error) => {
                        eprintln!("chaos: downstream message error ({error}); refetching");
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                tokio::time::sleep(Duration::from_millis(250)).await;
                break;
            }
        }
    }
}

/// Every Deployment UID ever seen per name in the sandbox namespace (from a watch started before
/// the first request): two UIDs for one name means a job's sandbox was created twice.
type SeenDeployments = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

async fn watch_deployments(client: kube::Client, seen: SeenDeployments) {
    let api: Api<Deployment> = Api::namespaced(client, SANDBOX_NAMESPACE);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // The stream retries on its own (with backoff); errors are only logged.
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Apply(deployment) | watcher::Event::InitApply(deployment))) => {
                if let (Some(name), Some(uid)) = (deployment.metadata.name, deployment.metadata.uid)
                {
                    seen.lock()
                        .expect("deployments lock")
                        .entry(name)
                        .or_default()
                        .insert(uid);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(error) => eprintln!("chaos: deployment watch error ({error}); it retries"),
        }
    }
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

/// Waits (bounded) until no sandbox Deployment is left; returns those still there.
async fn leftover_sandboxes(client: &kube::Client) -> Vec<String> {
    let deadline = Instant::now() + SANDBOX_CLEANUP_TIMEOUT;
    let mut left = vec!["(never listed)".to_string()];
    while Instant::now() < deadline {
        // Listing goes through kubesim's fault injection too: an error is just another try.
        if let Ok(now) = sandbox_deployments(client).await {
            left = now;
            if left.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    left
}

/// Waits until `count` jobs have an outcome or `deadline` passes.
pub async fn wait_for_outcomes(outcomes: &SharedOutcomes, count: usize, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if finished(outcomes) >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    finished(outcomes) >= count
}

/// Waits until the stage replica holds work (`vexxy_in_flight` > 0), at most `MID_WORK_TIMEOUT`.
/// Returns whether it did.
pub fn wait_mid_work(fleet: &StageFleet, stage: &str, replica: usize) -> bool {
    let Ok(process) = fleet.get(stage, replica) else {
        return false;
    };
    let Some(port) = process.health_port() else {
        return false;
    };
    vexxy_harness::wait_until(MID_WORK_TIMEOUT, || {
        in_flight(port).is_some_and(|count| count > 0)
    })
}

/// What a scenario's fault driver did: for the figures, and for the checks that its faults
/// really happened.
#[derive(Default)]
pub struct Injected {
    pub description: String,
    pub extra: BTreeMap<String, String>,
    /// The scenario restarted no stage: every stage process must be the same one at the end.
    pub pids_must_stay: bool,
    /// Every fault, as it happened. A scenario without one fails: it would prove nothing.
    pub faults: Vec<Fault>,
    /// Of the faults whose landing depends on timing ([`Fault::timing_dependent`]), how many
    /// must have landed; every other fault must land.
    pub timing_dependent_must_land: usize,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub what: String,
    pub at: Instant,
    /// Its premise held: e.g. the stage held work when killed, kubesim answered with an injected
    /// error. A fault counts only if it also came before the last outcome.
    pub landed: bool,
    /// Whether it lands depends on timing the driver cannot force (a stage holding work at the
    /// instant of a kill); see [`Injected::timing_dependent_must_land`].
    pub timing_dependent: bool,
}

impl Fault {
    /// A fault that happens whenever it is injected (a server stopped, a node killed).
    pub fn certain(what: impl Into<String>, at: Instant) -> Self {
        Fault {
            what: what.into(),
            at,
            landed: true,
            timing_dependent: false,
        }
    }

    /// A kill that is meant to strike while the stage holds `held` messages.
    pub fn mid_work(what: impl Into<String>, at: Instant, held: u64) -> Self {
        Fault {
            what: format!("{} (holding {held} message(s))", what.into()),
            at,
            landed: held > 0,
            timing_dependent: true,
        }
    }
}

/// The problems with `injected`'s faults given the time of the last outcome: a fault that did
/// not land, or landed after everything was over, proves nothing about the run.
fn fault_problems(injected: &Injected, last_outcome: Option<Instant>) -> Vec<String> {
    if injected.faults.is_empty() {
        return vec!["the fault driver reported no fault: the run proves nothing".to_string()];
    }
    let counts = |fault: &Fault| fault.landed && last_outcome.is_some_and(|last| fault.at < last);
    let mut problems: Vec<String> = injected
        .faults
        .iter()
        .filter(|fault| !fault.timing_dependent && !counts(fault))
        .map(|fault| {
            if fault.landed {
                format!("fault \"{}\" came after the last outcome", fault.what)
            } else {
                format!("fault \"{}\" did not land", fault.what)
            }
        })
        .collect();
    let timed: Vec<&Fault> = injected
        .faults
        .iter()
        .filter(|fault| fault.timing_dependent)
        .collect();
    let landed = timed.iter().filter(|fault| counts(fault)).count();
    if landed < injected.timing_dependent_must_land {
        problems.push(format!(
            "only {landed} of {} timing-dependent faults landed before the last outcome; the \
             scenario needs at least {} (a majority: the timing cannot be forced): {:?}",
            timed.len(),
            injected.timing_dependent_must_land,
            timed
                .iter()
                .map(|fault| format!(
                    "{}: {}",
                    fault.what,
                    if counts(fault) {
                        "landed"
                    } else {
                        "did not land in time"
                    }
                ))
                .collect::<Vec<_>>()
        ));
    }
    problems
}

/// Waits (bounded) until kubesim has answered with at least one injected fault: the moment its
/// fault rules are known to be in effect.
pub async fn kubesim_fault_fired(
    stack: &Arc<tokio::sync::Mutex<ChaosStack>>,
    what: &str,
) -> Result<Fault> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let injected = {
            let stack = stack.lock().await;
            stack.kubesim_control("/kubesim/faults").await
        }
        .ok()
        .and_then(|faults| faults["injected"].as_u64())
        .unwrap_or(0);
        if injected > 0 || Instant::now() >= deadline {
            return Ok(Fault {
                what: format!("{what} ({injected} fault(s) injected when checked)"),
                at: Instant::now(),
                landed: injected > 0,
                timing_dependent: false,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kubesim's flags for the Kubernetes-fault scenarios: every call 15 ms slower, Retry-After 1 s
/// on 429s, every watch dropped after 25 events or 3 s, and `rules` (kubesim `--fault` JSON).
pub fn kubesim_fault_args(rules: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--latency-ms",
        "15",
        "--retry-after-seconds",
        "1",
        "--watch-drop-after-events",
        "25",
        "--watch-drop-after-ms",
        "3000",
    ]
    .map(String::from)
    .to_vec();
    for rule in rules {
        args.push("--fault".into());
        args.push(rule.to_string());
    }
    args
}

/// Held by a scenario on the real control plane for its whole run.
static REAL_CLUSTER_SCENARIOS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one scenario: subscriber and deployment watch first, then the requests, the faults
/// (`drive`, concurrently with the jobs) and every check. Reports the figures either way.
pub async fn run_scenario<F, Fut>(scenario: &str, options: Options, drive: F) -> Result<()>
where
    F: FnOnce(Arc<tokio::sync::Mutex<ChaosStack>>, SharedOutcomes, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Injected>>,
{
    // One real control plane at a time: two (with two stage fleets) on 2 cores starved the
    // scheduler and kwok enough that a pod stayed Pending past its job's deadline.
    let _one_real_cluster = match options.kube {
        ClusterKind::Real => Some(REAL_CLUSTER_SCENARIOS.lock().await),
        ClusterKind::Sim => None,
    };
    let scale = Scale::from_env()?;
    let count = match options.kube {
        ClusterKind::Sim => scale.jobs,
        ClusterKind::Real => scale.real_jobs,
    };
    let jobs = jobs(scenario, count);
    let stack = tokio::task::block_in_place(|| ChaosStack::start(options, &jobs))?;
    let client = stack.broker.client().await?;
    let js = jetstream::new(client);
    let kube = stack.kube_client().await?;

    let outcomes = SharedOutcomes::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let subscriber = tokio::spawn(subscribe(js.clone(), outcomes.clone(), stop.clone()));
    let seen = SeenDeployments::default();
    let deployment_watch = tokio::spawn(watch_deployments(kube.clone(), seen.clone()));
    let processes_before = stack.fleet.identities();
    let quiet_period = quiet_period()?;

    let started = Instant::now();
    let stack = Arc::new(tokio::sync::Mutex::new(stack));
    publish_all(&js, &jobs).await?;
    let deadline = started + outcome_timeout(jobs.len(), &scale);
    let (injected, all_arrived) = tokio::join!(
        drive(stack.clone(), outcomes.clone(), jobs.len()),
        wait_for_outcomes(&outcomes, jobs.len(), deadline)
    );
    let outcome_seconds = started.elapsed().as_secs_f64();
    if all_arrived {
        // A second outcome for any job would show up now.
        tokio::time::sleep(quiet_period).await;
    }
    let mut stack = Arc::try_unwrap(stack)
        .map_err(|_| anyhow::anyhow!("the fault driver kept the stack"))?
        .into_inner();

    let mut problems = Vec::new();
    let injected = match injected {
        Ok(injected) => injected,
        Err(error) => {
            problems.push(format!("the fault driver failed: {error:#}"));
            Injected::default()
        }
    };
    let last_outcome = outcomes.lock().expect("outcomes lock").last_first_outcome;
    problems.extend(fault_problems(&injected, last_outcome));
    let leftover = leftover_sandboxes(&kube).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(5), subscriber).await;
    deployment_watch.abort();

    let kv = js
        .get_key_value(subjects::STATUS_BUCKET)
        .await
        .context("the job status bucket")?;
    let store = stack.store()?;
    let bucket = stack.s3.bucket().to_string();
    let validator = openvex_validator()?;
    let outcomes = Arc::try_unwrap(outcomes)
        .map_err(|_| anyhow::anyhow!("the subscriber kept the outcomes"))?
        .into_inner()
        .expect("outcomes lock");

    let mut figures = Figures {
        scenario: scenario.to_string(),
        jobs: jobs.len(),
        faults: injected.description.clone(),
        leaked_sandboxes: leftover.len(),
        wall_seconds: (outcome_seconds * 10.0).round() / 10.0,
        extra: injected.extra.clone(),
        ..Figures::default()
    };
    for problem in &outcomes.unreadable {
        problems.push(format!("unreadable outcome event: {problem}"));
    }
    for job in &jobs {
        let events = outcomes.by_job.get(&job.id);
        let Some(events) = events.filter(|events| !events.is_empty()) else {
            figures.missing += 1;
            problems.push(format!(
                "{}: no outcome: {}",
                job.id,
                job_state(&kv, &job.id).await
            ));
            continue;
        };
        if events.len() > 1 {
            figures.duplicates += 1;
            problems.push(format!(
                "{}: {} distinct outcome events (stream sequences {:?}), expected one",
                job.id,
                events.len(),
                events.keys().collect::<Vec<_>>()
            ));
        }
        let (_, outcome) = events.iter().next().expect("not empty");
        match outcome {
            AnalysisOutcome::Completed(_) => figures.completed += 1,
            AnalysisOutcome::Failed(failed) => {
                figures.failed += 1;
                *figures
                    .failed_reasons
                    .entry(failed.reason.as_str().to_string())
                    .or_default() += 1;
                if job.pull_fails
                    && failed.stage == Stage::Wait
                    && failed.reason == FailureReason::ImagePullFailed
                {
                    figures.failed_as_expected += 1;
                }
            }
        }
        let checked = check_outcome(job, outcome, &store, &bucket, &validator).await;
        let checked = match checked {
            Ok(()) => check_final_status(&kv, job, outcome).await,
            Err(error) => Err(error),
        };
        if let Err(error) = checked {
            problems.push(format!("{error:#}"));
        }
    }
    let unknown: Vec<&String> = outcomes
        .by_job
        .keys()
        .filter(|id| !jobs.iter().any(|job| &job.id == *id))
        .collect();
    if !unknown.is_empty() {
        problems.push(format!("outcomes for jobs never requested: {unknown:?}"));
    }
    if !leftover.is_empty() {
        problems.push(format!(
            "{} sandbox Deployment(s) left {SANDBOX_CLEANUP_TIMEOUT:?} after the run: {leftover:?}",
            leftover.len()
        ));
    }

    // No job's sandbox was created twice; every job reached deploy exactly once.
    let seen = seen.lock().expect("deployments lock").clone();
    let created_twice: Vec<_> = seen.iter().filter(|(_, uids)| uids.len() > 1).collect();
    figures.extra.insert(
        "sandboxes_created".into(),
        seen.values().map(BTreeSet::len).sum::<usize>().to_string(),
    );
    if !created_twice.is_empty() {
        problems.push(format!(
            "Deployments created more than once: {created_twice:?}"
        ));
    }
    let never_deployed: Vec<&str> = jobs
        .iter()
        .filter(|job| !seen.contains_key(&format!("vexxy-{}", job.id)))
        .map(|job| job.id.as_str())
        .collect();
    if !never_deployed.is_empty() {
        problems.push(format!(
            "{} job(s) never got a sandbox Deployment (the watch missed it or deploy never ran): {:?}",
            never_deployed.len(),
            &never_deployed[..never_deployed.len().min(10)]
        ));
    }
    // On the real tier kubesim serves only the storage API: the API server counts Deployment
    // POSTs, and its counters start again with every restart.
    if let (None, Ok(counters)) = (
        &stack.real,
        stack.kubesim_control("/kubesim/counters").await,
    ) {
        let creates = counters["requests"]["deployments.apps"]["create"]
            .as_u64()
            .unwrap_or(0);
        figures
            .extra
            .insert("deployment_create_requests".into(), creates.to_string());
    }
    if let Ok(faults) = stack.kubesim_control("/kubesim/faults").await {
        let injected = faults["injected"].as_u64().unwrap_or(0);
        if injected > 0 {
            figures
                .extra
                .insert("kubesim_faults_injected".into(), injected.to_string());
        }
    }

    let expected_failures = jobs.iter().filter(|job| job.pull_fails).count();
    if figures.failed_as_expected != expected_failures || figures.failed != expected_failures {
        problems.push(format!(
            "{} job(s) failed ({:?}); exactly the {expected_failures} pull-fail jobs should have",
            figures.failed, figures.failed_reasons
        ));
    }
    let exited = stack.fleet.exited();
    if !exited.is_empty() {
        problems.push(format!("stage processes exited on their own: {exited:?}"));
    }
    if let Some(real) = &mut stack.real {
        let exited = real.exited();
        if !exited.is_empty() {
            problems.push(format!(
                "control plane components are not running at the end: {exited:?}"
            ));
        }
    }
    if injected.pids_must_stay {
        // (pid, kernel start time) per replica: equal only for the very same processes.
        let processes_after = stack.fleet.identities();
        if processes_after != processes_before
            || processes_after
                .iter()
                .any(|(_, _, started)| started.is_none())
        {
            problems.push(format!(
                "stage processes were replaced or are gone: (slot, pid, start ticks) before {processes_before:?}, after {processes_after:?}"
            ));
        }
    }

    figures.passed = problems.is_empty();
    figures.report()?;
    if !problems.is_empty() {
        let diagnostics = stack.diagnostics();
        stack.keep_logs();
        let shown: Vec<&String> = problems.iter().take(30).collect();
        bail!(
            "{scenario}: {} problem(s) (first {}):\n{}\n\n{diagnostics}",
            problems.len(),
            shown.len(),
            shown
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    eprintln!(
        "chaos {scenario}: {} jobs, {} completed, {} failed as expected, outcomes in {outcome_seconds:.1}s",
        jobs.len(),
        figures.completed,
        figures.failed_as_expected
    );
    Ok(())
}

async fn job_state(kv: &jetstream::kv::Store, job_id: &str) -> String {
    match kv.get(job_id).await {
        Ok(Some(bytes)) => match serde_json::from_slice::<JobStatus>(&bytes) {
            Ok(status) => format!(
                "KV says stage {} ({:?}){}",
                status.stage,
                status.state,
                status
                    .error
                    .map(|e| format!(", last error {}: {}", e.reason.as_str(), e.message))
                    .unwrap_or_default()
            ),
            Err(error) => format!("unreadable job record: {error}"),
        },
        Ok(None) => "no job record (install-check never accepted the request)".to_string(),
        Err(error) => format!("cannot read the job record: {error}"),
    }
}

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

/// The outcome is the right kind for the job, and a completed job's every artifact resolves,
/// parses, and (OpenVEX) is schema-valid: nothing half-written is reported as done.
async fn check_outcome(
    job: &Job,
    outcome: &AnalysisOutcome,
    store: &Store,
    bucket: &str,
    validator: &jsonschema::Validator,
) -> Result<()> {
    let id = &job.id;
    let completed = match (job.pull_fails, outcome) {
        (false, AnalysisOutcome::Completed(completed)) => completed,
        (true, AnalysisOutcome::Failed(failed)) => {
            ensure!(
                failed.stage == Stage::Wait && failed.reason == FailureReason::ImagePullFailed,
                "{id}: failed in {} with {}, expected wait with image_pull_failed: {}",
                failed.stage,
                failed.reason.as_str(),
                failed.message
            );
            return Ok(());
        }
        (_, AnalysisOutcome::Failed(failed)) => bail!(
            "{id}: failed in {} with {}: {}",
            failed.stage,
            failed.reason.as_str(),
            failed.message
        ),
        (_, AnalysisOutcome::Completed(_)) => {
            bail!("{id}: completed, but its image pull must fail")
        }
    };
    ensure!(
        completed.job_id == *id,
        "{id}: event names job {}",
        completed.job_id
    );
    ensure!(
        completed.image_digest == job.digest,
        "{id}: event digest {} is not the requested {}",
        completed.image_digest,
        job.digest
    );
    let artifacts = &completed.artifacts;
    let vex_url = artifacts
        .openvex
        .as_ref()
        .with_context(|| format!("{id}: no OpenVEX artifact for an image with vulnerabilities"))?;
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
        let bytes = store
            .get_bytes(key)
            .await
            .with_context(|| format!("{id}: artifact {url} does not resolve"))?;
        let document: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{id}: artifact {url} is not complete JSON"))?;
        if url == vex_url {
            let errors: Vec<String> = validator
                .iter_errors(&document)
                .take(5)
                .map(|error| format!("{} at {}", error, error.instance_path()))
                .collect();
            ensure!(
                errors.is_empty(),
                "{id}: the VEX at {url} violates the OpenVEX schema: {errors:?}"
            );
            let statements = document["statements"].as_array().map_or(0, Vec::len) as u64;
            ensure!(
                statements == completed.summary.total_cves_analyzed,
                "{id}: {statements} statements in the VEX, the event says {}",
                completed.summary.total_cves_analyzed
            );
        }
    }
    Ok(())
}

async fn check_final_status(
    kv: &jetstream::kv::Store,
    job: &Job,
    outcome: &AnalysisOutcome,
) -> Result<()> {
    let id = &job.id;
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

/// SIGTERM to replica 0 of `stage`, `kill -9` 100 ms later, then a restart. The fault landed
/// when the replica held work at the SIGTERM (so its graceful shutdown had messages to finish)
/// and was still shutting down (had not exited) when killed.
pub fn kill_during_shutdown(fleet: &mut StageFleet, stage: &str) -> Result<Fault> {
    let replica = fleet.get_mut(stage, 0)?;
    let held = replica.health_port().and_then(in_flight).unwrap_or(0);
    replica.process.signal(libc::SIGTERM)?;
    let exited =
        vexxy_harness::wait_until(Duration::from_millis(100), || !replica.process.is_running());
    fleet.kill(stage, 0)?;
    let at = Instant::now();
    fleet.start_again(stage, 0, READY_TIMEOUT)?;
    let state = if exited {
        "had already exited"
    } else {
        "still shutting down"
    };
    Ok(Fault {
        what: format!(
            "SIGTERM to {stage}-0 holding {held} message(s), kill -9 100 ms later ({state})"
        ),
        at,
        landed: held > 0 && !exited,
        timing_dependent: true,
    })
}

/// Holds the stack lock only for a blocking step (killing or starting a process).
pub async fn with_stack<T>(
    stack: &Arc<tokio::sync::Mutex<ChaosStack>>,
    step: impl FnOnce(&mut ChaosStack) -> Result<T>,
) -> Result<T> {
    let mut guard = stack.lock().await;
    tokio::task::block_in_place(|| step(&mut guard))
}

/// `kill -9` of each stage process in turn while it holds work (`vexxy_in_flight` > 0, waiting
/// at most `MID_WORK_TIMEOUT` for that), each restarted before the next is struck: the fault
/// driver of the kill -9 scenarios on both tiers.
pub async fn kill_each_stage_mid_work(
    stack: Arc<tokio::sync::Mutex<ChaosStack>>,
) -> Result<Injected> {
    let mut faults = Vec::new();
    for stage in STAGES {
        let fault = with_stack(&stack, |s| {
            wait_mid_work(&s.fleet, stage, 0);
            // Read right before the kill: what the process holds when it dies.
            let held = s
                .fleet
                .get(stage, 0)?
                .health_port()
                .and_then(in_flight)
                .unwrap_or(0);
            s.fleet.kill(stage, 0)?;
            let fault = Fault::mid_work(format!("kill -9 of {stage}-0"), Instant::now(), held);
            s.fleet.start_again(stage, 0, READY_TIMEOUT)?;
            Ok(fault)
        })
        .await?;
        faults.push(fault);
    }
    let mid_work = faults.iter().filter(|fault| fault.landed).count();
    Ok(Injected {
        description: format!(
            "kill -9 + restart of each of the 5 stages in turn ({mid_work} of 5 killed while holding work)"
        ),
        extra: [("kills".to_string(), "5".to_string())].into(),
        pids_must_stay: false,
        faults,
        timing_dependent_must_land: MID_WORK_KILLS_MUST_LAND,
    })
}

#[cfg(test)]
mod fault_checks {
    use super::*;

    fn injected(faults: Vec<Fault>, must_land: usize) -> Injected {
        Injected {
            faults,
            timing_dependent_must_land: must_land,
            ..Injected::default()
        }
    }

    #[test]
    fn a_fault_that_did_not_land_or_came_too_late_fails_the_scenario() {
        let start = Instant::now();
        let last = start + Duration::from_secs(10);
        let early = start + Duration::from_secs(1);
        let late = start + Duration::from_secs(11);

        assert!(fault_problems(&injected(vec![], 0), Some(last)).len() == 1);
        assert!(
            fault_problems(
                &injected(vec![Fault::certain("stop", early)], 0),
                Some(last)
            )
            .is_empty()
        );
        assert_eq!(
            fault_problems(&injected(vec![Fault::certain("stop", late)], 0), Some(last)).len(),
            1,
            "after the last outcome"
        );
        assert_eq!(
            fault_problems(&injected(vec![Fault::certain("stop", early)], 0), None).len(),
            1,
            "no outcome at all"
        );

        let kills = |held: [u64; 5]| {
            held.iter()
                .map(|&held| Fault::mid_work("kill", early, held))
                .collect::<Vec<_>>()
        };
        assert!(fault_problems(&injected(kills([1, 1, 1, 0, 0]), 3), Some(last)).is_empty());
        assert_eq!(
            fault_problems(&injected(kills([1, 1, 0, 0, 0]), 3), Some(last)).len(),
            1,
            "only 2 of 5 kills held work"
        );
        assert_eq!(
            fault_problems(&injected(kills([0; 5]), 3), Some(last)).len(),
            1,
            "every stage killed idle"
        );
    }
}
