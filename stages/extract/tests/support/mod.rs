//! What extract's integration tests share: a kube client on kubesim with the sandbox namespace,
//! and a sandbox Deployment labelled the way deploy labels it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

pub const SANDBOX_NS: &str = "vexxy-sandbox";

/// A client of `sim` with the sandbox namespace created (kubesim installs Kubescape, and with it
/// the kubescape namespace).
pub async fn client_with_sandbox_namespace(sim: &kubesim::Handle) -> kube::Client {
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().expect("url")))
        .expect("kube client");
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": SANDBOX_NS}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace created");
    client
}

/// The sandbox Deployment `vexxy-<job>` with one container running `image`.
pub async fn create_sandbox(client: &kube::Client, job: &str, container: &str, image: &str) {
    let labels = json!({"app.kubernetes.io/managed-by": "vexxy", "vexxy.io/job-id": job});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": format!("vexxy-{job}"), "namespace": SANDBOX_NS, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"vexxy.io/job-id": job}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": container, "image": image}]}}}
    }))
    .expect("a Deployment");
    Api::<Deployment>::namespaced(client.clone(), SANDBOX_NS)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("sandbox created");
}
