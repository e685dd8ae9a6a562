//! What every stage that talks to the Kubernetes API shares (compiled with the `kubernetes`
//! feature): the client the environment names, and API failures as stage errors a user can act
//! on.
//!
//! The client: `K8S_IN_CLUSTER=true` uses the pod's service account, anything else the
//! kubeconfig (`KUBECONFIG` or `~/.kube/config`), as the previous service did.
//!
//! Overload, server errors and broken connections may pass, so they are `Transient` (the message
//! is redelivered with backoff). A refusal (401/403) usually means the service account needs more
//! rights, but it is `Transient` too: a kube-apiserver that is starting (after a crash, an
//! upgrade) answers 401/403 to every request until its authenticator and RBAC authorizer have
//! loaded ServiceAccounts, Roles and bindings — it listens before it is ready — and a quota that
//! is used up (403 `exceeded quota`) frees up as other sandboxes end. A refusal that persists
//! fails the job when the retries run out (`VEXXY_MAX_DELIVER`), with the message saying which
//! rights to grant. Any other rejection (4xx) is `Permanent`: the same request will be rejected
//! again.

use kube::{Client, Config};
use vexxy_events::FailureReason;

use crate::StageError;
use crate::config::{ConfigError, Env};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "K8S_IN_CLUSTER=true but the in-cluster configuration is unusable ({0}); run inside a pod with a service account, or set K8S_IN_CLUSTER=false and KUBECONFIG"
    )]
    InCluster(#[source] kube::config::InClusterError),
    #[error(
        "cannot read the kubeconfig ({0}); set KUBECONFIG to a readable kubeconfig file, or K8S_IN_CLUSTER=true inside a cluster"
    )]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// The connection settings of the cluster `env` names (`K8S_IN_CLUSTER`, `KUBECONFIG`).
pub async fn cluster_config(env: &Env<'_>) -> Result<Config, ClusterError> {
    if env.flag("K8S_IN_CLUSTER", false)? {
        Config::incluster().map_err(ClusterError::InCluster)
    } else {
        Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
            .await
            .map_err(ClusterError::Kubeconfig)
    }
}

/// A client for the cluster `env` names.
pub async fn client(env: &Env<'_>) -> Result<Client, ClusterError> {
    Client::try_from(cluster_config(env).await?).map_err(ClusterError::Client)
}

/// What a stage tells the user to fix when the API refuses or rejects its requests; the rights
/// differ per stage, so each stage supplies its own text.
#[derive(Debug, Clone, Copy)]
pub struct ApiAdvice {
    /// Completes "if it persists …", e.g. "grant the deploy service account the rights listed
    /// in deploy/ (create and get on deployments …)".
    pub grant: &'static str,
    /// Completes "check …" for a rejected request, e.g. "the cluster's Kubernetes version and
    /// the Kubescape installation".
    pub on_rejection: &'static str,
}

/// `what` names the request, e.g. "POST deployments vexxy-sandbox/vexxy-job-1".
pub fn stage_error(what: &str, error: &kube::Error, advice: &ApiAdvice) -> StageError {
    let reason = FailureReason::KubernetesUnavailable;
    match error {
        kube::Error::Api(status) if is_refusal(status.code) => StageError::Transient {
            reason,
            message: format!(
                "{what} was refused by the Kubernetes API ({} {}: {}); it is retried (an API \
                 server refuses requests while it starts, and a used-up quota frees up), but if \
                 it persists {} and submit again",
                status.code, status.reason, status.message, advice.grant
            ),
        },
        kube::Error::Api(status) if is_transient_status(status.code) => StageError::Transient {
            reason,
            message: format!(
                "{what} failed with {} {} ({}); the API server is overloaded or failing, \
                 the request will be retried",
                status.code, status.reason, status.message
            ),
        },
        kube::Error::Api(status) => StageError::Permanent {
            reason,
            message: format!(
                "{what} was rejected by the Kubernetes API ({} {}: {}); check {}, then submit \
                 again",
                status.code, status.reason, status.message, advice.on_rejection
            ),
            retryable: true,
        },
        other => StageError::Transient {
            reason,
            message: format!(
                "{what} could not reach the Kubernetes API ({other}); check that the API server \
                 is reachable from this process (KUBECONFIG / K8S_IN_CLUSTER), the request will \
                 be retried"
            ),
        },
    }
}

/// 429 (throttled), 5xx, and 408/409 timeouts or races are worth another try.
pub fn is_transient_status(code: u16) -> bool {
    code == 429 || code == 408 || code == 409 || code >= 500
}

/// 401/403: not authenticated or not allowed (yet).
pub fn is_refusal(code: u16) -> bool {
    code == 401 || code == 403
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: ApiAdvice = ApiAdvice {
        grant: "grant the deploy service account the rights listed in deploy/",
        on_rejection: "the admission policies for the sandbox namespace",
    };

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_refusal_is_retried_and_says_which_rights_to_grant() {
        // What a restarting kube-apiserver answered on the real tier before its RBAC cache
        // had loaded the Role.
        let error = api(
            403,
            "deployments.apps is forbidden: User \"system:serviceaccount:vexxy:vexxy-deploy\" \
             cannot create resource \"deployments\" in API group \"apps\" in the namespace \
             \"vexxy-sandbox\": RBAC: role.rbac.authorization.k8s.io \"vexxy-deploy\" not found",
        );
        match stage_error("POST deployments vexxy-sandbox/vexxy-j", &error, &DEPLOY) {
            StageError::Transient { reason, message } => {
                assert_eq!(reason, FailureReason::KubernetesUnavailable);
                assert!(message.contains("403"), "{message}");
                assert!(message.contains("it is retried"), "{message}");
                assert!(message.contains("rights listed in deploy/"), "{message}");
            }
            other => panic!("a 403 must be retried: {other:?}"),
        }
        assert!(matches!(
            stage_error("GET x", &api(401, "Unauthorized"), &DEPLOY),
            StageError::Transient { .. }
        ));
    }

    #[test]
    fn overload_is_retried_and_a_rejection_is_not() {
        for code in [408, 409, 429, 500, 503, 504] {
            assert!(
                matches!(
                    stage_error("GET x", &api(code, "busy"), &DEPLOY),
                    StageError::Transient { .. }
                ),
                "{code}"
            );
        }
        match stage_error("POST x", &api(422, "invalid"), &DEPLOY) {
            StageError::Permanent {
                message, retryable, ..
            } => {
                assert!(retryable);
                assert!(message.contains(DEPLOY.on_rejection), "{message}");
            }
            other => panic!("a 422 is not retried: {other:?}"),
        }
    }
}
