//! Reading Kubescape's storage objects (full spec, by name) and removing the sandbox.

use bytes::Bytes;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, GetParams};
use kube::core::ApiResource;
use serde::Deserialize;
use vexxy_events::FailureReason;
use vexxy_kubescape::names::{STORAGE_GROUP, STORAGE_VERSION};
use vexxy_runtime::StageError;
use vexxy_runtime::kubernetes::{self, ApiAdvice};

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

/// One storage object as the API server sent it. The bytes are what is saved as evidence, so
/// the object is not decoded and encoded again (a Kubescape SBOM or manifest is large); only the
/// metadata is decoded, which also checks that the answer is one JSON object.
#[derive(Debug, Clone)]
pub struct StorageObject {
    pub bytes: Bytes,
    pub metadata: ObjectMeta,
}

impl StorageObject {
    /// Checks `bytes` the way decoding them as a Kubernetes object would (valid JSON, one object,
    /// a well-formed `metadata` if any) and keeps the metadata.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, serde_json::Error> {
        /// The rest of the object is skipped, but still checked to be valid JSON.
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        // A derived struct would also accept a JSON array; a Kubernetes object is a JSON object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(serde::de::Error::custom("expected a JSON object"));
        }
        let head: Head = serde_json::from_slice(&bytes)?;
        Ok(StorageObject {
            bytes,
            metadata: head.metadata,
        })
    }

    /// The value of one annotation, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
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
) -> Result<Option<StorageObject>, StageError> {
    let resource = storage_resource(kind, plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let what = format!("GET {plural} {namespace}/{name}");
    let request = kube::core::Request::new(api.resource_url())
        .get(name, &GetParams::default())
        .map_err(|e| StageError::Permanent {
            reason: FailureReason::Internal,
            message: format!(
                "{what}: the request cannot be built ({e}); report this with the object name"
            ),
            retryable: false,
        })?;
    match client.request_text(request).await {
        Ok(text) => StorageObject::from_bytes(Bytes::from(text.into_bytes()))
            .map(Some)
            .map_err(|e| StageError::Transient {
                reason: FailureReason::KubernetesUnavailable,
                message: format!(
                    "{what}: the answer is not a Kubernetes object ({e}); the API server or a proxy in front of it sent something else, the request will be retried"
                ),
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

/// Kubernetes API failures as stage errors, with what the extract service account needs.
pub fn api_error(what: &str, err: &kube::Error) -> StageError {
    kubernetes::stage_error(what, err, &API_ADVICE)
}

const API_ADVICE: ApiAdvice = ApiAdvice {
    grant: "grant the extract service account get on the \
            spdx.softwarecomposition.kubescape.io resources (openvulnerabilityexchangecontainers, \
            sbomsyftfiltereds, sbomsyfts, vulnerabilitymanifests, \
            vulnerabilitymanifestsummaries, containerprofiles) and list/delete on deployments and \
            networkpolicies in the sandbox namespace",
    on_rejection: "that Kubescape's storage API (APIService \
                   v1beta1.spdx.softwarecomposition.kubescape.io) is available",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_object_keeps_the_bytes_it_was_sent_and_decodes_only_the_metadata() {
        let text = r#"{"apiVersion":"spdx.softwarecomposition.kubescape.io/v1beta1","kind":"SBOMSyft","metadata":{"name":"n","namespace":"kubescape","annotations":{"kubescape.io/image-tag":"nginx:1","kubescape.io/image-id":""}},"spec":{"syft":{"artifacts":[{"name":"a\u00e9"}]}}}"#;
        let object = StorageObject::from_bytes(Bytes::from(text)).expect("an object");
        assert_eq!(object.bytes, text.as_bytes());
        assert_eq!(object.metadata.name.as_deref(), Some("n"));
        assert_eq!(object.annotation("kubescape.io/image-tag"), Some("nginx:1"));
        assert_eq!(object.annotation("kubescape.io/image-id"), Some(""));
        assert_eq!(object.annotation("kubescape.io/absent"), None);
    }

    #[test]
    fn what_is_not_a_kubernetes_object_is_refused() {
        for text in [
            "",
            "[]",
            "[{}]",
            r#"{"metadata":{"name":"n"},"spec":{"x":[1,2}}"#,
            r#"{"metadata":{"name":"n"}} trailing"#,
            r#"{"metadata":{"annotations":{"a":1}}}"#,
        ] {
            assert!(
                StorageObject::from_bytes(Bytes::from(text)).is_err(),
                "{text:?} must be refused"
            );
        }
    }
}
