//! # deploy: run the image under observation
//!
//! **Consumes** `vexxy.pipeline.deploy` (a [`PipelineTicket`] that passed install-check).
//! **Creates** Deployment `vexxy-<job_id>` (1 replica, container `target`) in the sandbox
//! namespace, running `repository@digest` (always pinned) with the request's env, command, args
//! and ports, hardened by default ([`manifest`]), and, when enabled, a deny-all-egress
//! NetworkPolicy of the same name. The pod label `kubescape.io/max-sniffing-time:
//! <analysis_duration>s` makes Kubescape finish learning when the analysis window ends.
//! **Emits** the ticket with `sandbox` filled (namespace, Deployment, container, and
//! `created_at` = the Deployment's `creationTimestamp`) to `vexxy.pipeline.wait`.
//!
//! Idempotent: a redelivered message finds the Deployment it made (409 AlreadyExists, then GET;
//! same `vexxy.io/job-id` label and image) and goes on with the original `created_at`, so the
//! analysis window does not restart. A Deployment of the same name made for another job or
//! image is a `Permanent` `job_id_conflict`.
//!
//! Failures: API 5xx/429/unreachable are `Transient` `kubernetes_unavailable`; a missing sandbox
//! namespace is created when `VEXXY_CREATE_SANDBOX_NAMESPACE=true` and is otherwise a
//! `Permanent` `kubernetes_unavailable` saying how to create it. With creation on, the first job
//! of the process makes sure the namespace exists before creating its objects, and one job at a
//! time re-creates it if it disappears later: a burst of jobs sends one namespace POST, not one
//! per job plus a failed Deployment POST each.
//!
//! ## Sandbox hardening
//! No service-account token, no service links, `allowPrivilegeEscalation: false`,
//! `privileged: false`, all capabilities dropped, seccomp `RuntimeDefault`, CPU, memory and
//! ephemeral-storage limits always set, short termination grace, `Recreate` strategy. Not
//! enforced by default, because many real images need it: running as root (set
//! `VEXXY_SANDBOX_RUN_AS_NON_ROOT=true` for images that support it) and a writable root
//! filesystem. Some images need capabilities (e.g. `NET_BIND_SERVICE` to bind port 80 as root):
//! `VEXXY_SANDBOX_DROP_CAPABILITIES=false` keeps the runtime's defaults for those.
//!
//! ## Environment
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `K8S_IN_CLUSTER` / `KUBECONFIG` | kubeconfig | which cluster |
//! | `K8S_SANDBOX_NAMESPACE` | `vexxy-sandbox` | where sandboxes run |
//! | `SANDBOX_CPU_REQUEST` / `SANDBOX_CPU_LIMIT` | `1000m` / `2000m` | container CPU |
//! | `SANDBOX_MEMORY_REQUEST` / `SANDBOX_MEMORY_LIMIT` | `2Gi` / `4Gi` | container memory |
//! | `VEXXY_SANDBOX_EPHEMERAL_STORAGE_LIMIT` | `2Gi` | container ephemeral-storage limit (request defaults to it) |
//! | `VEXXY_SANDBOX_DROP_CAPABILITIES` | `true` | `capabilities.drop: [ALL]` |
//! | `VEXXY_SANDBOX_RUN_AS_NON_ROOT` | `false` | `runAsNonRoot: true` (images running as root then fail to start) |
//! | `VEXXY_SANDBOX_DENY_EGRESS` | `false` | a deny-all-egress NetworkPolicy per analysis (DNS included) |
//! | `VEXXY_SANDBOX_TERMINATION_GRACE_SECONDS` | `5` | pod termination grace |
//! | `VEXXY_CREATE_SANDBOX_NAMESPACE` | `false` | create the namespace (with Pod Security labels) when missing |
//!
//! Quantities are validated at start (and requests must not exceed limits).

pub mod config;
pub mod manifest;
pub mod quantity;

use std::time::Instant;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::PostParams;
use kube::{Api, Client};
use vexxy_events::pipeline::SandboxRef;
use vexxy_events::{FailureReason, PipelineTicket, ValidatedRequest};
use vexxy_runtime::kubernetes::{self, ApiAdvice};
use vexxy_runtime::{Handler, JobContext, Outcome, StageDefaults, StageError};

/// Seconds of API work per job: a few dozen in flight keep the API server busy enough.
pub const RUNTIME_DEFAULTS: StageDefaults = StageDefaults { max_in_flight: 32 };

/// What the deploy service account needs, for refused and rejected API requests.
const API_ADVICE: ApiAdvice = ApiAdvice {
    grant: "grant the deploy service account the rights listed in deploy/ (create and get on \
            deployments and networkpolicies in the sandbox namespace; get and create on \
            namespaces when VEXXY_CREATE_SANDBOX_NAMESPACE=true), or raise the sandbox \
            namespace's ResourceQuota,",
    on_rejection: "the cluster's Kubernetes version and admission policies for the sandbox \
                   namespace",
};

pub use crate::config::DeployConfig;
use crate::manifest::{CONTAINER_NAME, JOB_ID_LABEL, sandbox_name};

/// The deploy stage.
pub struct Deploy {
    client: Client,
    config: DeployConfig,
    /// With namespace creation on: when this process last made sure the namespace exists
    /// (`None`: not yet). Held while creating it, so concurrent jobs wait for one POST.
    namespace_ensured: tokio::sync::Mutex<Option<Instant>>,
}

/// Why creating the sandbox objects stopped.
enum CreateError {
    /// The sandbox namespace does not exist.
    NamespaceMissing,
    Stage(StageError),
}

impl From<StageError> for CreateError {
    fn from(e: StageError) -> Self {
        CreateError::Stage(e)
    }
}

impl Deploy {
    pub fn new(client: Client, config: DeployConfig) -> Self {
        Deploy {
            client,
            config,
            namespace_ensured: tokio::sync::Mutex::new(None),
        }
    }

    /// Built from the environment (see the crate documentation).
    pub async fn from_env() -> anyhow::Result<Self> {
        let env = vexxy_runtime::Env::process();
        let config = DeployConfig::load(&env)?;
        let client = kubernetes::client(&env).await?;
        Ok(Deploy::new(client, config))
    }

    pub fn config(&self) -> &DeployConfig {
        &self.config
    }

    /// Creates the job's sandbox, or finds the one an earlier delivery created.
    pub async fn ensure_sandbox(
        &self,
        request: &ValidatedRequest,
    ) -> Result<SandboxRef, StageError> {
        if self.config.create_namespace {
            self.ensure_namespace(None).await?;
        }
        let attempted_at = Instant::now();
        match self.create_objects(request).await {
            Ok(sandbox) => return Ok(sandbox),
            Err(CreateError::Stage(e)) => return Err(e),
            Err(CreateError::NamespaceMissing) if !self.config.create_namespace => {
                return Err(self.namespace_missing_error());
            }
            Err(CreateError::NamespaceMissing) => self.ensure_namespace(Some(attempted_at)).await?,
        }
        match self.create_objects(request).await {
            Ok(sandbox) => Ok(sandbox),
            Err(CreateError::Stage(e)) => Err(e),
            Err(CreateError::NamespaceMissing) => Err(StageError::Transient {
                reason: FailureReason::KubernetesUnavailable,
                message: format!(
                    "namespace {} was created but the API server still reports it missing; \
                     the request will be retried",
                    self.config.namespace
                ),
            }),
        }
    }

    async fn create_objects(&self, request: &ValidatedRequest) -> Result<SandboxRef, CreateError> {
        let ns = &self.config.namespace;
        let name = sandbox_name(&request.job_id);
        // The policy goes first so the pod never runs without it.
        if self.config.deny_egress {
            let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), ns);
            let policy = manifest::deny_egress_policy(&request.job_id, ns);
            match policies.create(&PostParams::default(), &policy).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                Err(e) => {
                    return Err(self.classify(&format!("POST networkpolicies {ns}/{name}"), e));
                }
            }
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let wanted = manifest::deployment(request, &self.config);
        let deployment = match deployments.create(&PostParams::default(), &wanted).await {
            Ok(created) => {
                tracing::info!(job_id = %request.job_id, namespace = %ns, deployment = %name, "sandbox created");
                created
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let existing = deployments
                    .get_opt(&name)
                    .await
                    .map_err(|e| self.classify(&format!("GET deployments {ns}/{name}"), e))?;
                let Some(existing) = existing else {
                    return Err(CreateError::Stage(StageError::Transient {
                        reason: FailureReason::KubernetesUnavailable,
                        message: format!(
                            "Deployment {ns}/{name} already existed but was gone when read back \
                             (deleted meanwhile); the request will be retried"
                        ),
                    }));
                };
                self.adopt(request, &existing)?;
                tracing::info!(job_id = %request.job_id, namespace = %ns, deployment = %name, "sandbox already exists (redelivery); going on");
                existing
            }
            Err(e) => return Err(self.classify(&format!("POST deployments {ns}/{name}"), e)),
        };
        Ok(SandboxRef {
            namespace: ns.clone(),
            deployment: name,
            container: CONTAINER_NAME.to_string(),
            created_at: creation_time(&deployment)?,
        })
    }

    /// Accepts an existing Deployment only if this job made it for this image.
    fn adopt(&self, request: &ValidatedRequest, existing: &Deployment) -> Result<(), StageError> {
        let ns = &self.config.namespace;
        let name = sandbox_name(&request.job_id);
        let owner = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(JOB_ID_LABEL))
            .cloned();
        let image = existing
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER_NAME))
            .and_then(|c| c.image.clone());
        let pinned = request.pinned_image();
        if owner.as_deref() != Some(request.job_id.as_str())
            || image.as_deref() != Some(pinned.as_str())
        {
            return Err(StageError::Permanent {
                reason: FailureReason::JobIdConflict,
                message: format!(
                    "Deployment {ns}/{name} already exists but was not made by this job for this \
                     image (its {JOB_ID_LABEL} label is {}, its {CONTAINER_NAME} image is {}; this \
                     job runs {pinned}). Submit with a new job_id, or delete the Deployment if it \
                     is left over: kubectl -n {ns} delete deployment {name}",
                    owner.map_or("absent".to_string(), |o| format!("{o:?}")),
                    image.map_or("absent".to_string(), |i| format!("{i:?}")),
                ),
                retryable: false,
            });
        }
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(StageError::Transient {
                reason: FailureReason::KubernetesUnavailable,
                message: format!(
                    "Deployment {ns}/{name} of this job is being deleted; the request will be \
                     retried once it is gone"
                ),
            });
        }
        Ok(())
    }

    /// Creates the namespace unless this process already did: before its first job
    /// (`missing_since: None`), or after the attempt that found it missing began.
    async fn ensure_namespace(&self, missing_since: Option<Instant>) -> Result<(), StageError> {
        let mut ensured = self.namespace_ensured.lock().await;
        let still_valid = match (*ensured, missing_since) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(at), Some(missing_since)) => at >= missing_since,
        };
        if still_valid {
            return Ok(());
        }
        self.create_namespace().await?;
        *ensured = Some(Instant::now());
        Ok(())
    }

    async fn create_namespace(&self) -> Result<(), StageError> {
        let ns = &self.config.namespace;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces
            .create(&PostParams::default(), &manifest::sandbox_namespace(ns))
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %ns, "sandbox namespace created (VEXXY_CREATE_SANDBOX_NAMESPACE=true)");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
            Err(e) => Err(kubernetes::stage_error(
                &format!("POST namespaces/{ns}"),
                &e,
                &API_ADVICE,
            )),
        }
    }

    fn namespace_missing_error(&self) -> StageError {
        let ns = &self.config.namespace;
        StageError::Permanent {
            reason: FailureReason::KubernetesUnavailable,
            message: format!(
                "the sandbox namespace {ns} (K8S_SANDBOX_NAMESPACE) does not exist. Create it with \
                 the manifests in deploy/ (or: kubectl create namespace {ns} && kubectl label \
                 namespace {ns} pod-security.kubernetes.io/enforce=baseline \
                 pod-security.kubernetes.io/warn=restricted \
                 pod-security.kubernetes.io/audit=restricted), or set \
                 VEXXY_CREATE_SANDBOX_NAMESPACE=true, then submit again"
            ),
            retryable: true,
        }
    }

    fn classify(&self, what: &str, error: kube::Error) -> CreateError {
        match &error {
            kube::Error::Api(s)
                if s.is_not_found() && names_namespace(s, &self.config.namespace) =>
            {
                CreateError::NamespaceMissing
            }
            _ => CreateError::Stage(kubernetes::stage_error(what, &error, &API_ADVICE)),
        }
    }
}

/// A 404 on a create is about the namespace (`namespaces "x" not found`, details kind
/// `namespaces`).
fn names_namespace(status: &kube::core::Status, namespace: &str) -> bool {
    let by_details = status
        .details
        .as_ref()
        .is_some_and(|d| d.kind == "namespaces" && d.name == namespace);
    by_details
        || status
            .message
            .contains(&format!("namespaces \"{namespace}\" not found"))
}

fn creation_time(deployment: &Deployment) -> Result<DateTime<Utc>, StageError> {
    let stamp = deployment.metadata.creation_timestamp.as_ref().ok_or_else(|| StageError::Permanent {
        reason: FailureReason::Internal,
        message: format!(
            "the API server returned Deployment {:?} without a creationTimestamp, so the analysis \
             window cannot be anchored; this is a bug in the API server or a proxy in between",
            deployment.metadata.name
        ),
        retryable: true,
    })?;
    let ts = stamp.0;
    DateTime::from_timestamp(ts.as_second(), ts.subsec_nanosecond().max(0) as u32).ok_or_else(
        || StageError::Permanent {
            reason: FailureReason::Internal,
            message: format!("Deployment creationTimestamp {ts} is out of range"),
            retryable: true,
        },
    )
}

impl Handler for Deploy {
    async fn handle(
        &self,
        _job: &JobContext,
        mut ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        let sandbox = self.ensure_sandbox(&ticket.request).await?;
        ticket.sandbox = Some(sandbox);
        Ok(Outcome::Next(ticket))
    }
}
