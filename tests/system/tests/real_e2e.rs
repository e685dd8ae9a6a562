//! The pipeline end to end against the real control plane: a real kube-apiserver, etcd,
//! controller-manager, scheduler and kwok, with kubesim only as Kubescape (storage API behind the
//! real aggregator, node-agent and kubevuln for the real pods). Same scenario as `e2e.rs`.

mod cluster_support;
mod e2e_support;
mod scanner_support;

use cluster_support::ClusterKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_turns_requests_into_one_outcome_each_against_a_real_api_server()
-> anyhow::Result<()> {
    e2e_support::requests_become_one_outcome_each_with_valid_vex(ClusterKind::Real).await
}
