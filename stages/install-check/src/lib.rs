//! # install-check: can this cluster's Kubescape produce a runtime VEX?
//!
//! **Consumes** `vexxy.analysis.requested` (through the runtime's intake, which validates the
//! request and hands this stage a [`PipelineTicket`]). **Decides** whether Kubescape is
//! installed, ready and configured for runtime VEX ([`checks`]): the storage APIService is
//! `Available`, the node-agent DaemonSet has all its pods ready, the kubevuln Deployment is
//! `Available`, and `relevantImageVulnerabilitiesEnabled`, `vexGeneration`, `storeFilteredSbom`
//! and `storage` are on in the operator's `ks-cloud-config` ConfigMap. **Emits** the ticket
//! unchanged to `vexxy.pipeline.deploy`.
//!
//! A positive answer is cached per cluster (API server URL) for `VEXXY_KUBESCAPE_CHECK_TTL`;
//! a negative one never is. The check runs only when a job needs an answer and the cached one
//! expired, and one at a time: jobs arriving together (a burst at start or when the TTL ran out)
//! wait for the check in flight and share its answer instead of each sending the same four GETs. When Kubescape is absent (no storage APIService) and
//! `VEXXY_KUBESCAPE_AUTO_INSTALL=true`, the stage installs it with helm ([`helm`]; one install at
//! a time per process), waits until every check passes, then goes on.
//!
//! Failures:
//! * absent with auto-install off, helm missing, helm failing or the install not becoming ready in
//!   time, a capability off or a component missing: `Permanent` `kubescape_unavailable`
//!   (retryable), the message naming what failed and the exact command that fixes it;
//! * components present but still starting: `Transient` `kubescape_unavailable` (retried with
//!   backoff; the last message names what is not ready);
//! * API server errors (5xx, 429, unreachable): `Transient` `kubernetes_unavailable`.
//!
//! ## Environment
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `K8S_IN_CLUSTER` / `KUBECONFIG` | kubeconfig | which cluster (see `vexxy_kubescape::cluster`) |
//! | `VEXXY_KUBESCAPE_NAMESPACE` | `kubescape` | Kubescape's namespace (helm `-n`) |
//! | `VEXXY_KUBESCAPE_CONFIGMAP` | `ks-cloud-config` | the chart's `global.cloudConfig` ConfigMap |
//! | `VEXXY_KUBESCAPE_CHECK_TTL` | `5m` | how long a positive check is trusted |
//! | `VEXXY_KUBESCAPE_AUTO_INSTALL` | `false` | install Kubescape when absent (a cluster-wide operator: a deliberate act; the local stack turns it on) |
//! | `VEXXY_KUBESCAPE_INSTALL_TIMEOUT` | `10m` | bound on helm plus waiting for readiness |
//! | `VEXXY_HELM_BIN` | `helm` | helm executable |
//! | `VEXXY_KUBESCAPE_VALUES` | `deploy/kubescape-values.yaml` | values file passed with `-f` |
//! | `VEXXY_KUBESCAPE_CHART` | `kubescape/kubescape-operator` | the chart as helm takes it: `kubescape/<name>` from the repository below, or a chart directory, archive or `oci://` reference (no repository added) |
//! | `VEXXY_KUBESCAPE_HELM_REPO` | `https://kubescape.github.io/helm-charts` | added as repo `kubescape` first when the chart is `kubescape/…`; empty = already configured |
//! | `VEXXY_KUBESCAPE_CHART_VERSION` | newest | `--version` of the chart |

pub mod cache;
pub mod checks;
pub mod config;
pub mod helm;

use std::time::Duration;

use kube::Client;
use tokio::time::Instant;
use vexxy_events::{FailureReason, PipelineTicket};
use vexxy_runtime::kubernetes::{self, ApiAdvice};
use vexxy_runtime::{Handler, JobContext, Outcome, StageDefaults, StageError};

/// A cached check per job, an API round trip at most: a few dozen in flight are plenty.
pub const RUNTIME_DEFAULTS: StageDefaults = StageDefaults { max_in_flight: 32 };

/// What the install-check service account needs, for refused and rejected API requests.
const API_ADVICE: ApiAdvice = ApiAdvice {
    grant: "grant the install-check service account the rights listed in deploy/ (get on \
            apiservices, daemonsets, deployments and configmaps in the Kubescape namespace)",
    on_rejection: "the cluster's Kubernetes version and the Kubescape installation",
};

use crate::cache::ReadyCache;
use crate::checks::{Problem, Readiness, STORAGE_API_SERVICE, Target};
pub use crate::config::InstallCheckConfig;
use crate::helm::HelmError;

/// The install-check stage.
pub struct InstallCheck {
    client: Client,
    /// Cache key: the API server URL.
    cluster: String,
    config: InstallCheckConfig,
    target: Target,
    cache: ReadyCache,
    /// Held while checking; holds the last negative answer and when it was obtained, so jobs
    /// that waited for that check share it instead of asking the API server again.
    checking: tokio::sync::Mutex<Option<(Instant, StageError)>>,
}

impl InstallCheck {
    pub fn new(client: Client, cluster: impl Into<String>, config: InstallCheckConfig) -> Self {
        InstallCheck {
            client,
            cluster: cluster.into(),
            target: Target {
                namespace: config.namespace.clone(),
                config_map: config.config_map.clone(),
            },
            cache: ReadyCache::new(config.check_ttl),
            checking: tokio::sync::Mutex::new(None),
            config,
        }
    }

    /// Built from the environment (see the crate documentation).
    pub async fn from_env() -> anyhow::Result<Self> {
        let env = vexxy_runtime::Env::process();
        let config = InstallCheckConfig::load(&env)?;
        let cluster_config = kubernetes::cluster_config(&env).await?;
        // The API server URL keys the readiness cache.
        let cluster = cluster_config.cluster_url.to_string();
        let client = kubernetes::client_for(cluster_config)?;
        Ok(InstallCheck::new(client, cluster, config))
    }

    /// `Ok` when Kubescape can serve an analysis now (installing it first if allowed).
    pub async fn ensure_ready(&self) -> Result<(), StageError> {
        if self.cache.is_fresh(&self.cluster) {
            return Ok(());
        }
        let asked_at = Instant::now();
        let mut last_failure = self.checking.lock().await;
        // The check this job waited for may have answered already.
        if self.cache.is_fresh(&self.cluster) {
            return Ok(());
        }
        if let Some((_, failure)) = last_failure.as_ref().filter(|(at, _)| *at >= asked_at) {
            return Err(copy_of(failure));
        }
        let answer = self.check_or_install().await;
        match &answer {
            Ok(()) => {
                self.cache.remember_ready(&self.cluster);
                *last_failure = None;
            }
            Err(failure) => *last_failure = Some((Instant::now(), copy_of(failure))),
        }
        answer
    }

    async fn check_or_install(&self) -> Result<(), StageError> {
        match self.check().await? {
            Readiness::Ready => Ok(()),
            Readiness::Absent if self.config.auto_install => self.install_and_wait().await,
            Readiness::Absent => Err(self.absent_error()),
            Readiness::NotReady(problems) => Err(self.not_ready_error(&problems)),
        }
    }

    async fn check(&self) -> Result<Readiness, StageError> {
        checks::check(&self.client, &self.target)
            .await
            .map_err(|e| kubernetes::stage_error(&e.request, &e.source, &API_ADVICE))
    }

    /// Called with `checking` held, so one install at a time per process.
    async fn install_and_wait(&self) -> Result<(), StageError> {
        let started = Instant::now();
        let deadline = started + self.config.install_timeout;
        match self.check().await? {
            Readiness::Ready => return Ok(()),
            Readiness::Absent => {
                tracing::warn!(
                    namespace = %self.config.namespace,
                    command = %self.config.helm.command_line(),
                    "Kubescape is absent; installing it (VEXXY_KUBESCAPE_AUTO_INSTALL=true)"
                );
                self.config
                    .helm
                    .run(self.config.install_timeout)
                    .await
                    .map_err(|e| self.helm_error(e))?;
            }
            // Installed by someone else in the meantime: only wait for it.
            Readiness::NotReady(_) => {}
        }
        self.wait_until_ready(deadline).await
    }

    /// Bounded polling with backoff; API errors while Kubescape comes up are expected and only
    /// logged.
    async fn wait_until_ready(&self, deadline: Instant) -> Result<(), StageError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let last_seen = match self.check().await {
                Ok(Readiness::Ready) => return Ok(()),
                Ok(Readiness::Absent) => {
                    format!("APIService {STORAGE_API_SERVICE} does not exist yet")
                }
                Ok(Readiness::NotReady(problems)) => checks::describe(&problems),
                Err(e) => {
                    tracing::debug!(error = %e, "API error while waiting for Kubescape");
                    e.to_string()
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(StageError::Permanent {
                    reason: FailureReason::KubescapeUnavailable,
                    message: format!(
                        "Kubescape was installed with `{}` but was not ready within {} \
                         (VEXXY_KUBESCAPE_INSTALL_TIMEOUT); last seen: {last_seen}. Check \
                         `kubectl -n {} get pods`, fix what is failing, and submit again",
                        self.config.helm.command_line(),
                        humantime::format_duration(self.config.install_timeout),
                        self.config.namespace
                    ),
                    retryable: true,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn absent_error(&self) -> StageError {
        StageError::Permanent {
            reason: FailureReason::KubescapeUnavailable,
            message: format!(
                "Kubescape is not installed in this cluster (APIService {STORAGE_API_SERVICE} \
                 does not exist) and automatic installation is off. Install it with `{}` (or set \
                 VEXXY_KUBESCAPE_AUTO_INSTALL=true to let vexxy do it), then submit again",
                self.config.helm.command_line()
            ),
            retryable: true,
        }
    }

    fn helm_error(&self, error: HelmError) -> StageError {
        let what = match &error {
            HelmError::NotFound(_) => {
                format!("{error}: install helm 3 or set VEXXY_HELM_BIN to its path")
            }
            HelmError::ValuesMissing(_) => format!(
                "{error}: set VEXXY_KUBESCAPE_VALUES to the vexxy values file (deploy/kubescape-values.yaml in the vexxy repository)"
            ),
            _ => format!("{error}: fix the cause shown by helm"),
        };
        StageError::Permanent {
            reason: FailureReason::KubescapeUnavailable,
            message: format!(
                "Kubescape is not installed and installing it failed: {what}. Then run `{}` \
                 yourself, or submit again to let vexxy retry",
                self.config.helm.command_line()
            ),
            retryable: true,
        }
    }

    fn not_ready_error(&self, problems: &[Problem]) -> StageError {
        let described = checks::describe(problems);
        match checks::fix_command(&self.config.namespace, &self.config.helm.chart, problems) {
            Some(fix) => StageError::Permanent {
                reason: FailureReason::KubescapeUnavailable,
                message: format!(
                    "Kubescape is installed but cannot produce a runtime VEX: {described}. Fix it \
                     with `{fix}`, wait for the pods in namespace {} to be ready, then submit again",
                    self.config.namespace
                ),
                retryable: true,
            },
            None => StageError::Transient {
                reason: FailureReason::KubescapeUnavailable,
                message: format!("Kubescape is installed but not ready yet: {described}"),
            },
        }
    }
}

impl Handler for InstallCheck {
    async fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        self.ensure_ready().await?;
        tracing::debug!(job_id = %job.job_id, "Kubescape is ready");
        Ok(Outcome::Next(ticket))
    }
}

/// The same failure for another job that waited for the same check.
fn copy_of(failure: &StageError) -> StageError {
    match failure {
        StageError::Transient { reason, message } => StageError::Transient {
            reason: *reason,
            message: message.clone(),
        },
        StageError::Permanent {
            reason,
            message,
            retryable,
        } => StageError::Permanent {
            reason: *reason,
            message: message.clone(),
            retryable: *retryable,
        },
    }
}
