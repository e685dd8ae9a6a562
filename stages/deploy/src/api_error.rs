//! Turning Kubernetes API failures into stage errors a user can act on.
//!
//! Overload, server errors and broken connections may pass, so they are `Transient` (the message
//! is redelivered with backoff). A refusal (401/403) will not pass by itself: the service account
//! needs more rights, so it is `Permanent` and says where the RBAC lives.

use vexxy_events::FailureReason;
use vexxy_runtime::StageError;

/// `what` names the request, e.g. "POST deployments vexxy-sandbox/vexxy-job-1".
pub fn stage_error(what: &str, err: &kube::Error) -> StageError {
    match err {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            StageError::Permanent {
                reason: FailureReason::KubernetesUnavailable,
                message: format!(
                    "{what} was refused by the Kubernetes API ({} {}: {}); grant the deploy \
                 service account the rights listed in deploy/ (create and get on deployments \
                 and networkpolicies in the sandbox namespace; get and create on namespaces when \
                 VEXXY_CREATE_SANDBOX_NAMESPACE=true) and submit again",
                    status.code, status.reason, status.message
                ),
                retryable: true,
            }
        }
        kube::Error::Api(status) if is_transient_status(status.code) => StageError::Transient {
            reason: FailureReason::KubernetesUnavailable,
            message: format!(
                "{what} failed with {} {} ({}); the API server is overloaded or failing, \
                 the request will be retried",
                status.code, status.reason, status.message
            ),
        },
        kube::Error::Api(status) => StageError::Permanent {
            reason: FailureReason::KubernetesUnavailable,
            message: format!(
                "{what} was rejected by the Kubernetes API ({} {}: {}); check the \
                 cluster's Kubernetes version and admission policies for the sandbox namespace, \
                 then submit again",
                status.code, status.reason, status.message
            ),
            retryable: true,
        },
        other => StageError::Transient {
            reason: FailureReason::KubernetesUnavailable,
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
