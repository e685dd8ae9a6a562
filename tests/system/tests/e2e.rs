//! The pipeline end to end against kubesim (see `e2e_support` for the scenario).

mod cluster_support;
mod e2e_support;
mod scanner_support;

use cluster_support::ClusterKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_turns_requests_into_one_outcome_each_with_valid_vex() -> anyhow::Result<()> {
    e2e_support::requests_become_one_outcome_each_with_valid_vex(ClusterKind::Sim).await
}
