//! # wait: until Kubescape has finished learning what the sandbox loads
//!
//! **Consumes** `vexxy.pipeline.wait` (a ticket whose `sandbox` deploy filled in).
//! **Decides**, from shared watches (one per resource kind per process, for all jobs in flight)
//! and, for Kubescape's objects, the job's own reads: the job's pod (label `vexxy.io/job-id`),
//! its owning ReplicaSet and hence Kubescape's instance slug; then waits until the
//! ContainerProfile `<slug>` in the sandbox namespace has `kubescape.io/status: completed` +
//! `kubescape.io/completion: complete`, and then until the VEX `<slug>` in the Kubescape
//! namespace is final (see `assess::evidence_final_at`).
//!
//! Pods and Deployments come from kube-runtime watchers. Kubescape's storage server cannot feed
//! one (its LIST has no resourceVersion; its watch has no initial events, no replay, no
//! bookmarks, and misses what is written while it re-opens), so for ContainerProfiles and VEX
//! documents the cluster-wide watch is a *hint* (re-opened whenever it ends, with backoff after
//! errors) that becomes complete once a read follows its opening: after every (re)open the view
//! LISTs the kind's namespace with `resourceVersion=metadata` (one request for all jobs), and from
//! then on every write arrives as an event. A job GETs its own profile and VEX (also metadata
//! only) only when that cannot be relied on: a watch is down, or its LIST failed and the job has
//! not read since the watch opened. A read's answer never replaces a version the watch
//! delivered while the read was in flight; an object missing from the answer is removed. See
//! `view`.
//! * kubevuln scans only `ready` (learning-time) and `completed` profiles, and learns of them
//!   through the same watch API. If the storage watch delivered the profile's creation and every
//!   version since (no re-open in between, the version held not one only a GET found) and no
//!   version was `ready` — a window shorter than node-agent's first save — every VEX under the
//!   slug is a scan of the completed profile: a VEX version received as a watch event is final
//!   at once (**rule A**).
//! * Otherwise a learning-time scan may still be running and could write after completion
//!   (**rule B**): the job needs a VEX version received as a watch event after the profile
//!   version that first showed completion (receive order across the watches, see
//!   `assess::vex_written_after_completion`), or `VEXXY_VEX_SETTLE` without such a write; and
//!   it goes on no earlier than `VEXXY_LEARNING_SCAN_BOUND` after the last `ready` version was
//!   received (after the job first saw completion if the history is unknown, e.g. after a
//!   re-opened watch or a restart). Unless a VEX version arrives after that bound (then it is the
//!   completed profile's scan), the job waits the bound from its first look at completion,
//!   when the completed profile's scan is over too. A VEX version only a GET found is never
//!   proof of order.
//!
//! **Emits** the ticket with `observation` filled to `extract`; or fails fast with
//! `image_pull_failed`, `container_crash_looping`, `unschedulable`, `sandbox_disappeared`;
//! at the deadline (`sandbox.created_at` + analysis window + `VEXXY_WAIT_GRACE`) it goes on
//! with `observation.partial = true` if some evidence exists and `VEXXY_ON_TIMEOUT=partial`,
//! else fails with `analysis_timeout`. A profile `completed` with completion `partial` (the
//! container exited non-zero, node-agent restarted or dropped events, or the container is older
//! than node-agent) is not final: the restarted container may still complete it, so the job
//! waits for that until the deadline, and then says why the profile stayed partial. A profile
//! that ended `failed`/`too-large`/`missing-runtime` never yields a relevancy VEX: the job goes
//! on partial at once (or fails with `no_vex_produced` under `VEXXY_ON_TIMEOUT=fail`).
//!
//! Nothing is kept in process memory that a restart would need: the deadline comes from the
//! ticket and the state from the watches and the reads, so a redelivered message resumes (a
//! restart does lose the profiles' learning history, so its jobs take rule B).
//! Per job the API requests are none while the storage watches and their LISTs work (the watches
//! and one LIST per kind per re-open, about every 290 s, are shared by all jobs), the GETs of its
//! profile and VEX when they do not, and at most one GET of the Deployment when the watch has not
//! shown it (to tell "not delivered yet" from "deleted").
//!
//! ## Environment
//! | variable | default | meaning |
//! |---|---|---|
//! | `K8S_IN_CLUSTER`, `KUBECONFIG` | | how to reach the cluster |
//! | `K8S_SANDBOX_NAMESPACE` | `vexxy-sandbox` | where sandboxes run (must match deploy) |
//! | `VEXXY_KUBESCAPE_NAMESPACE` | `kubescape` | where kubevuln writes VEX documents |
//! | `VEXXY_VEX_SETTLE` | `60s` | after profile completion, how long to wait for a VEX write |
//! | `VEXXY_LEARNING_SCAN_BOUND` | `315s` | how long a scan of a `ready` profile may still write its VEX: the operator's cooldown (15 s) + kubevuln's `scanTimeout` (5 m); set your cluster's values; `0` accepts a learning-time VEX written after completion as final |
//! | `VEXXY_WAIT_GRACE` | `10m` | added to the analysis window to form the deadline |
//! | `VEXXY_ON_TIMEOUT` | `partial` | `partial`: go on with partial evidence; `fail`: `analysis_timeout` |
//! | `VEXXY_IMAGE_PULL_GRACE` | `30s` | how long `ErrImagePull` may last (`ImagePullBackOff` fails at once) |
//! | `VEXXY_CRASHLOOP_RESTARTS` | `1` | restarts at which `CrashLoopBackOff` fails the job |
//! | `VEXXY_UNSCHEDULABLE_GRACE` | `0s` | how long a pod may stay `Unschedulable` (e.g. for an autoscaler) |
//! | `VEXXY_MAX_IN_FLIGHT` (runtime) | `5000` for wait | jobs waited on at once (a waiting job is a parked future) |
//!
//! The runtime keeps each message alive while its job waits (in-progress acks every
//! `VEXXY_ACK_WAIT`/3), so a window of hours needs no special ack settings.
//!
//! Durations are seconds (`60`) or humantime (`90s`, `10m`).

pub mod assess;
pub mod config;
pub mod summary;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use vexxy_events::pipeline::SandboxRef;
use vexxy_events::{FailureReason, PipelineTicket, Stage};
use vexxy_runtime::{Handler, JobContext, Outcome, StageDefaults, StageError};

/// A waiting job holds its message for the whole analysis window, but it is only a parked
/// future (no thread, no API traffic: the watches are shared), so one replica holds thousands.
pub const RUNTIME_DEFAULTS: StageDefaults = StageDefaults {
    max_in_flight: 5_000,
};

use crate::assess::{JobMemory, Snapshot, Step, Target, assess, deadline, target};
pub use crate::config::{OnTimeout, WaitConfig};
use crate::view::{ClusterView, Interest, WatchKey};

/// A failed GET of the Deployment is retried this often before the job stops asking and relies
/// on the watch alone.
const DEPLOYMENT_GET_ATTEMPTS: u32 = 3;
const DEPLOYMENT_GET_RETRY: Duration = Duration::from_secs(2);
/// Longest single sleep; the loop re-evaluates after it (keeps timer arithmetic finite).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The wait stage. Cheap to clone; the watches stop when the last clone is dropped.
#[derive(Clone)]
pub struct WaitHandler {
    inner: Arc<Inner>,
}

struct Inner {
    config: WaitConfig,
    client: Client,
    view: ClusterView,
}

/// Counts of what the shared watches hold, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewStats {
    pub pods: usize,
    pub deployments: usize,
    pub profiles: usize,
    pub vex: usize,
    /// The Pod and Deployment watchers have listed and both storage watches have opened.
    pub synced: bool,
    /// Both storage watches are open and were LISTed since: jobs need no reads of their own.
    pub storage_covered: bool,
    pub registered_keys: usize,
}

impl WaitHandler {
    /// Starts the shared watches (inside the current tokio runtime) and returns the handler.
    pub fn start(client: Client, config: WaitConfig) -> Self {
        let view = ClusterView::start(client.clone(), &config);
        WaitHandler {
            inner: Arc::new(Inner {
                config,
                client,
                view,
            }),
        }
    }

    /// Reads [`WaitConfig`] and the cluster connection from the environment, then starts.
    pub async fn from_env() -> anyhow::Result<Self> {
        let env = vexxy_runtime::Env::process();
        let config = WaitConfig::load(&env)?;
        let client = vexxy_runtime::kubernetes::client(&env).await?;
        Ok(Self::start(client, config))
    }

    pub fn config(&self) -> &WaitConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> ViewStats {
        let tables = &self.inner.view.tables;
        let pods = tables.pods.read().expect("pods table lock");
        let deployments = tables.deployments.read().expect("deployments table lock");
        let profiles = tables.profiles.read().expect("profiles table lock");
        let vex = tables.vex.read().expect("vex table lock");
        let storage_covered = profiles.coverage.covers(None) && vex.coverage.covers(None);
        ViewStats {
            storage_covered,
            pods: pods.len(),
            deployments: deployments.len(),
            profiles: profiles.len(),
            vex: vex.len(),
            synced: pods.synced && deployments.synced && profiles.synced && vex.synced,
            registered_keys: self.inner.view.waiters.registered_keys(),
        }
    }

    /// Waits for one job and returns its ticket with `observation` filled.
    pub async fn wait(&self, mut ticket: PipelineTicket) -> Result<PipelineTicket, StageError> {
        let config = &self.inner.config;
        let job_id = ticket.request.job_id.clone();
        let sandbox = ticket.sandbox_for(Stage::Wait)?.clone();
        if sandbox.namespace != config.sandbox_namespace {
            return Err(StageError::Permanent {
                reason: FailureReason::Internal,
                message: format!(
                    "the sandbox of job {job_id} is in namespace {} but this wait stage watches K8S_SANDBOX_NAMESPACE={}; give deploy and wait the same K8S_SANDBOX_NAMESPACE",
                    sandbox.namespace, config.sandbox_namespace
                ),
                retryable: true,
            });
        }
        let deadline = deadline(config, &sandbox, ticket.request.analysis_duration_seconds);

        let mut interest = Interest::new(self.inner.view.waiters.clone());
        interest.add(WatchKey::JobPods(job_id.clone()));
        interest.add(WatchKey::Deployment(sandbox.deployment.clone()));
        let mut memory = JobMemory::default();
        let mut deployment_get_failures = 0;
        // The slug and storage coverage at the job's last successful read of its profile and VEX.
        let mut last_read: Option<(String, view::StorageCoverage)> = None;

        loop {
            let tables = &self.inner.view.tables;
            let target = target(&tables.job_pods(&job_id), &sandbox.container);
            let slug = target
                .as_ref()
                .or(memory.last_target.as_ref())
                .map(|t| t.slug.clone());
            // The storage watch misses what is written while it re-opens, so the job reads its
            // profile and VEX itself whenever the tables cannot be trusted for them: no LIST
            // answered since the watch last opened and no read of its own since then, or a watch
            // is down (see `view::StorageCoverage`).
            let storage_error = match &slug {
                Some(slug) => {
                    // Registered before the GET is sent, so a watch event that lands while it is
                    // in flight wakes this job again.
                    interest.add(WatchKey::Profile(slug.clone()));
                    interest.add(WatchKey::Vex(slug.clone()));
                    let coverage = self.inner.view.tables.storage_coverage();
                    let read_at = last_read
                        .as_ref()
                        .filter(|(read, _)| read == slug)
                        .map(|(_, at)| at);
                    if coverage.covers(read_at) {
                        None
                    } else {
                        // Boxed: the GETs' future is large and a waiting job parks this one.
                        match Box::pin(self.inner.view.read_storage(slug)).await {
                            Ok(()) => {
                                last_read = Some((slug.clone(), coverage));
                                None
                            }
                            Err(error) => {
                                last_read = None;
                                Some(error.to_string())
                            }
                        }
                    }
                }
                None => None,
            };
            if let Some(error) = &storage_error {
                // Debug only: an outage fails every job's reads; the storage watches warn once
                // per retry, and the error is in the message if the deadline comes first.
                tracing::debug!(job_id, %error, "cannot read the job's profile or VEX; retrying");
            }
            let snapshot = self.snapshot(&sandbox, target, slug.as_deref(), storage_error);
            let mut until = match assess(
                config,
                &sandbox,
                deadline,
                &snapshot,
                &mut memory,
                Utc::now(),
            ) {
                Step::Done(observation) => {
                    tracing::info!(job_id, slug = %observation.instance_slug, partial = observation.partial, "analysis observed");
                    ticket.observation = Some(*observation);
                    return Ok(ticket);
                }
                Step::Fail {
                    reason,
                    message,
                    retryable,
                } => {
                    tracing::info!(job_id, reason = reason.as_str(), "wait failed the job");
                    return Err(StageError::Permanent {
                        reason,
                        message,
                        retryable,
                    });
                }
                Step::ConfirmDeploymentGone => {
                    // Boxed: the GET's future is most of this one's size, and a waiting job
                    // parks this future for its whole window (see the runtime's `handle`).
                    match Box::pin(self.deployment_exists(&sandbox)).await {
                        Ok(true) => memory.deployment_confirmed = true,
                        Ok(false) => {
                            memory.deployment_seen = true; // it existed when deploy handed on
                            continue;
                        }
                        Err(error) => {
                            deployment_get_failures += 1;
                            tracing::warn!(job_id, %error, "cannot read the sandbox Deployment; relying on the watch");
                            if deployment_get_failures >= DEPLOYMENT_GET_ATTEMPTS {
                                memory.deployment_confirmed = true;
                            }
                        }
                    }
                    Utc::now() + DEPLOYMENT_GET_RETRY
                }
                Step::Wait { until } => until,
            };
            until = until.min(deadline.max(Utc::now()));
            let sleep = (until - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = interest.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// What the tables hold for the job now, with the result of its last read of the storage
    /// objects (`storage_error`).
    fn snapshot(
        &self,
        sandbox: &SandboxRef,
        target: Option<Target>,
        slug: Option<&str>,
        storage_error: Option<String>,
    ) -> Snapshot {
        let tables = &self.inner.view.tables;
        let mut snapshot = Snapshot {
            target,
            storage_read_failed: storage_error.is_some(),
            ..Snapshot::default()
        };
        let mut errors = Vec::new();
        {
            let deployments = tables.deployments.read().expect("deployments table lock");
            snapshot.deployments_synced = deployments.synced;
            snapshot.deployment = deployments.get(&sandbox.deployment).cloned();
            errors.extend(
                deployments
                    .last_error
                    .clone()
                    .map(|e| format!("deployments: {e}")),
            );
        }
        {
            let pods = tables.pods.read().expect("pods table lock");
            snapshot.pods_synced = pods.synced;
            errors.extend(pods.last_error.clone().map(|e| format!("pods: {e}")));
        }
        let slug = slug.map(str::to_string);
        {
            let profiles = tables.profiles.read().expect("profiles table lock");
            snapshot.profiles_synced = profiles.synced;
            snapshot.profile = slug.as_ref().and_then(|s| profiles.get(s).cloned());
            errors.extend(
                profiles
                    .last_error
                    .clone()
                    .map(|e| format!("containerprofiles watch: {e}")),
            );
        }
        {
            let vex = tables.vex.read().expect("vex table lock");
            snapshot.vex_synced = vex.synced;
            snapshot.vex_watch_began = vex.watch_began;
            snapshot.vex = slug.as_ref().and_then(|s| vex.get(s).cloned());
            errors.extend(
                vex.last_error
                    .clone()
                    .map(|e| format!("openvulnerabilityexchangecontainers watch: {e}")),
            );
        }
        errors.extend(storage_error);
        snapshot.api_errors = errors;
        snapshot
    }

    /// One GET, for when the watch has not shown the Deployment (yet).
    async fn deployment_exists(&self, sandbox: &SandboxRef) -> Result<bool, kube::Error> {
        let api = Api::<Deployment>::namespaced(self.inner.client.clone(), &sandbox.namespace);
        Ok(api
            .get_opt(&sandbox.deployment)
            .await?
            .is_some_and(|d| d.metadata.deletion_timestamp.is_none()))
    }
}

impl Handler for WaitHandler {
    async fn handle(
        &self,
        _job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        self.wait(ticket).await.map(Outcome::Next)
    }
}

/// When the job's deadline is, for callers that want to show it.
pub fn job_deadline(
    config: &WaitConfig,
    sandbox: &SandboxRef,
    window_seconds: u64,
) -> DateTime<Utc> {
    deadline(config, sandbox, window_seconds)
}
