//! # wait: until Kubescape has finished learning what the sandbox loads
//!
//! **Consumes** `vexxy.pipeline.wait` (a ticket whose `sandbox` deploy filled in).
//! **Decides**, from shared watches only (one per resource kind per process, for all jobs in
//! flight): the job's pod (label `vexxy.io/job-id`), its owning ReplicaSet and hence Kubescape's
//! instance slug; then waits until the ContainerProfile `<slug>` in the sandbox namespace has
//! `kubescape.io/status: completed` + `kubescape.io/completion: complete`, and then until the
//! VEX `<slug>` in the Kubescape namespace is final (see `assess::evidence_final_at`):
//! * kubevuln scans only `ready` (learning-time) and `completed` profiles, and learns of them
//!   through the same watch API. If this process saw the profile from its creation (its first
//!   version as a watch event, no relist since) and no version was `ready` — a window shorter
//!   than node-agent's first save — every VEX under the slug is a scan of the completed
//!   profile: a VEX version received as a watch event is final at once (**rule A**).
//! * Otherwise a learning-time scan may still be running and could write after completion
//!   (**rule B**): the job needs a VEX version received as a watch event after the profile
//!   version that first showed completion (receive order across the watches, see
//!   `assess::vex_written_after_completion`), or `VEXXY_VEX_SETTLE` without such a write; and
//!   it goes on no earlier than `VEXXY_LEARNING_SCAN_BOUND` after the last `ready` version was
//!   received (after the job first saw completion if the history is unknown, e.g. after a
//!   relist or a restart). Unless a VEX version arrives after that bound (then it is the
//!   completed profile's scan), the job waits the bound from its first look at completion,
//!   when the completed profile's scan is over too. A VEX from a list is never proof of order.
//!
//! **Emits** the ticket with `observation` filled to `extract`; or fails fast with
//! `image_pull_failed`, `container_crash_looping`, `unschedulable`, `sandbox_disappeared`;
//! at the deadline (`sandbox.created_at` + analysis window + `VEXXY_WAIT_GRACE`) it goes on
//! with `observation.partial = true` if some evidence exists and `VEXXY_ON_TIMEOUT=partial`,
//! else fails with `analysis_timeout`. A profile that completed `partial` (container older than
//! node-agent) or ended `failed`/`too-large`/`missing-runtime` never yields a relevancy VEX: the
//! job goes on partial (or fails with `no_vex_produced` under `VEXXY_ON_TIMEOUT=fail`).
//!
//! Nothing is kept in process memory that a restart would need: the deadline comes from the
//! ticket and the state from the watches' initial lists, so a redelivered message resumes (a
//! restart does lose the profiles' learning history, so its jobs take rule B).
//! Per job the only API request is at most one GET of the Deployment when the watch has not
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
use vexxy_events::{FailureReason, PipelineTicket};
use vexxy_runtime::{Handler, JobContext, Outcome, StageError};

use crate::assess::{JobMemory, Snapshot, Step, assess, deadline, target};
pub use crate::config::{ConfigError, OnTimeout, WaitConfig};
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
    pub synced: bool,
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
        let config = WaitConfig::from_env()?;
        let client = vexxy_kubescape::cluster::client_from_env().await?;
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
        ViewStats {
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
        let sandbox = ticket.sandbox.clone().ok_or_else(|| StageError::Permanent {
            reason: FailureReason::Internal,
            message: format!(
                "job {job_id} reached wait without a sandbox reference: the deploy stage must fill `sandbox` before handing on. Report this as a vexxy bug"
            ),
            retryable: true,
        })?;
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

        loop {
            let snapshot = self.snapshot(&job_id, &sandbox, &memory);
            if let Some(target) = &snapshot.target {
                interest.add(WatchKey::Profile(target.slug.clone()));
                interest.add(WatchKey::Vex(target.slug.clone()));
            }
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

    fn snapshot(&self, job_id: &str, sandbox: &SandboxRef, memory: &JobMemory) -> Snapshot {
        let tables = &self.inner.view.tables;
        let mut snapshot = Snapshot::default();
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
        snapshot.target = target(&tables.job_pods(job_id), &sandbox.container);
        let slug = snapshot
            .target
            .as_ref()
            .or(memory.last_target.as_ref())
            .map(|t| t.slug.clone());
        {
            let profiles = tables.profiles.read().expect("profiles table lock");
            snapshot.profiles_synced = profiles.synced;
            snapshot.profile = slug.as_ref().and_then(|s| profiles.get(s).cloned());
            errors.extend(
                profiles
                    .last_error
                    .clone()
                    .map(|e| format!("containerprofiles: {e}")),
            );
        }
        {
            let vex = tables.vex.read().expect("vex table lock");
            snapshot.vex_synced = vex.synced;
            snapshot.vex_list_began = vex.list_began;
            snapshot.vex = slug.as_ref().and_then(|s| vex.get(s).cloned());
            errors.extend(
                vex.last_error
                    .clone()
                    .map(|e| format!("openvulnerabilityexchangecontainers: {e}")),
            );
        }
        snapshot.watch_errors = errors;
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
