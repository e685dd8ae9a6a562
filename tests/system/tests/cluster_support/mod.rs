//! Which Kubernetes a cross-process test runs against, and what the stages need on the real one.
//! Shared by the end-to-end scenario (`e2e_support`), the fault-injection scenarios
//! (`chaos_support`) and the real tier's bad-input cases (`real_bad_input.rs`).
//!
//! On the real control plane each stage authenticates as its own ServiceAccount with a token,
//! and the Namespaces, ServiceAccounts and RBAC of `deploy/base` (applied with kubectl) are all it
//! is granted: the real authorizer decides every request, and the sandbox namespace's Pod
//! Security labels are enforced by the real admission.

#![allow(dead_code)] // each test crate uses a different part

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
pub use vexxy_harness::identities::StageIdentities;
use vexxy_harness::realcluster::{RealCluster, STORAGE_APISERVICE};

/// Which Kubernetes a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// kubesim is the whole cluster.
    Sim,
    /// A real kube-apiserver, etcd, controller-manager, scheduler and kwok; kubesim is only
    /// Kubescape (storage API behind the real aggregator, node-agent and kubevuln).
    Real,
}

/// A client of the cluster a kubeconfig names (as the stages build theirs).
pub async fn kube_client(kubeconfig: &Path) -> Result<kube::Client> {
    let yaml = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let parsed = kube::config::Kubeconfig::from_yaml(&yaml)?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default()).await?;
    kube::Client::try_from(config).context("cannot build a client for the cluster")
}

/// Waits until the real aggregator reports Kubescape's storage APIService Available (kubesim
/// registered it and answers), so install-check's first look finds Kubescape installed.
pub fn wait_storage_available(real: &RealCluster, timeout: Duration) -> Result<()> {
    real.wait_api_service_available(STORAGE_APISERVICE, timeout)
}
