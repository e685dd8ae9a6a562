//! Bad input, end to end, against the real control plane: a real kube-apiserver, etcd,
//! controller-manager, scheduler and kwok, with kubesim only as Kubescape; each stage
//! authenticates as its own ServiceAccount with the RBAC of `deploy/base`, and the sandbox
//! namespace's Pod Security labels are enforced by the real admission. Same scenario and checks
//! as `bad_input.rs` (`bad_input_support`), plus a job whose container crash-loops.

mod bad_input_support;
mod security_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_fails_cleanly_against_a_real_api_server() -> anyhow::Result<()> {
    bad_input_support::run_scenario("vexxy-real-bad-input-", true).await
}
