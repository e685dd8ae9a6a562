//! Reading Kubescape's storage objects (full spec, by name) and removing the sandbox.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::ApiResource;
use serde_json::Value;
use vexxy_events::FailureReason;
use vexxy_kubescape::names::{STORAGE_GROUP, STORAGE_VERSION};
use vexxy_runtime::StageError;

/// The storage group resource for `kind`/`plural` (aggregated API, not CRDs).
pub fn storage_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: STORAGE_GROUP.to_string(),
        version: STORAGE_VERSION.to_string(),
        api_version: format!("{STORAGE_GROUP}/{STORAGE_VERSION}"),
        kind: kind.to_string(),
        plural: plural.to_string(),
    }
}

/// GETs one storage object with its full spec (a GET, never the metadata-only LIST).
/// `Ok(None)` when it does not exist.
pub async fn get_storage_object(
    client: &Client,
    namespace: &str,
    kind: &str,
    plural: &str,
    name: &str,
) -> Result<Option<Value>, StageError> {
    let resource = storage_resource(kind, plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let what = format!("GET {plural} {namespace}/{name}");
    match api.get_opt(name).await {
        Ok(None) => Ok(None),
        Ok(Some(object)) => serde_json::to_value(&object).map(Some).map_err(|e| {
            StageError::Permanent {
                reason: FailureReason::Internal,
                message: format!(
                    "{what}: the object cannot be re-serialised ({e}); report this with the object"
                ),
                retryable: false,
            }
        }),
        // The storage API answers 404 for an unknown name, and also when the kind is not served
        // (storage not installed) — both mean "nothing there" here; install-check vouches for the API.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(api_error(&what, &e)),
    }
}

/// Deletes the sandbox Deployment and the job's NetworkPolicy, both requests at once (neither
/// waits for the pod to stop, so their order never kept the pod under the policy); already gone
/// is fine.
pub async fn delete_sandbox(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), StageError> {
    let params = DeleteParams::background();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let deployment = async {
        match deployments.delete(name, &params).await {
            Ok(_) => tracing::info!(namespace, deployment = name, "sandbox deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(api_error(
                    &format!("DELETE deployments {namespace}/{name}"),
                    &e,
                ));
            }
        }
        Ok(())
    };
    let policy = async {
        match policies.delete(name, &params).await {
            Ok(_) => tracing::info!(
                namespace,
                network_policy = name,
                "sandbox network policy deleted"
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(api_error(
                    &format!("DELETE networkpolicies {namespace}/{name}"),
                    &e,
                ));
            }
        }
        Ok(())
    };
    tokio::try_join!(deployment, policy).map(|_| ())
}

/// Kubernetes API failures as stage errors: refusals are permanent (RBAC), the rest may pass.
pub fn api_error(what: &str, err: &kube::Error) -> StageError {
    match err {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            StageError::Permanent {
                reason: FailureReason::KubernetesUnavailable,
                message: format!(
                    "{what} was refused by the Kubernetes API ({} {}: {}); grant the extract service account get on \
                 the spdx.softwarecomposition.kubescape.io resources (openvulnerabilityexchangecontainers, \
                 sbomsyftfiltereds, sbomsyfts, vulnerabilitymanifests, vulnerabilitymanifestsummaries, \
                 containerprofiles) and list/delete on deployments and networkpolicies in the sandbox namespace, \
                 then submit again",
                    status.code, status.reason, status.message
                ),
                retryable: true,
            }
        }
        kube::Error::Api(status)
            if status.code == 429
                || status.code == 408
                || status.code == 409
                || status.code >= 500 =>
        {
            StageError::Transient {
                reason: FailureReason::KubernetesUnavailable,
                message: format!(
                    "{what} failed with {} {} ({}); the API server is overloaded or failing, the request will be retried",
                    status.code, status.reason, status.message
                ),
            }
        }
        kube::Error::Api(status) => StageError::Permanent {
            reason: FailureReason::KubernetesUnavailable,
            message: format!(
                "{what} was rejected by the Kubernetes API ({} {}: {}); check that Kubescape's storage API \
                 (APIService v1beta1.spdx.softwarecomposition.kubescape.io) is available, then submit again",
                status.code, status.reason, status.message
            ),
            retryable: true,
        },
        other => StageError::Transient {
            reason: FailureReason::KubernetesUnavailable,
            message: format!(
                "{what} could not reach the Kubernetes API ({other}); check that the API server is reachable \
                 (KUBECONFIG / K8S_IN_CLUSTER), the request will be retried"
            ),
        },
    }
}
