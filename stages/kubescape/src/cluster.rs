//! Connecting to the cluster the way the previous service did: `K8S_IN_CLUSTER=true` uses the
//! pod's service account, anything else the kubeconfig (`KUBECONFIG` or `~/.kube/config`).

use kube::{Client, Config};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
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
    #[error("K8S_IN_CLUSTER must be true or false, got {0:?}")]
    BadFlag(String),
}

/// A client for the cluster named by the environment.
pub async fn client_from_env() -> Result<Client, ClusterError> {
    let in_cluster = match std::env::var("K8S_IN_CLUSTER")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => return Err(ClusterError::BadFlag(other.to_string())),
    };
    let config = if in_cluster {
        Config::incluster().map_err(ClusterError::InCluster)?
    } else {
        Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
            .await
            .map_err(ClusterError::Kubeconfig)?
    };
    Client::try_from(config).map_err(ClusterError::Client)
}
