//! deploy/ applied to a real kube-apiserver (see `real_control_plane.rs` for the tier): the
//! base and both overlays with `kubectl apply -k`, twice, nothing skipped. The real API server
//! validates every field (kubectl's default server-side field validation is strict), serves
//! every kind the manifests use (Jobs and PodDisruptionBudgets included), enforces RBAC and
//! admits the sandbox namespace's Pod Security labels.

mod deploy_manifests_support;

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use deploy_manifests_support::{
    KUSTOMIZATIONS, check_applied, describe, kind, name, namespace, render, root,
};
use vexxy_harness::realcluster::RealCluster;

/// `kubectl apply -k DIR -o name`, twice; every rendered object reported each time and
/// readable afterwards.
fn applies_twice(cluster: &RealCluster, dir: &str) -> Result<()> {
    let objects = render(dir)?;
    let expected: BTreeSet<String> = objects
        .iter()
        .map(|o| format!("{}/{}", kind(o).to_ascii_lowercase(), name(o)))
        .collect();
    let path = root().join(dir);
    let path = path.display().to_string();
    for round in ["first", "second"] {
        let output = cluster
            .kubectl_ok(&["apply", "-k", &path, "-o", "name"])
            .with_context(|| format!("{dir}: the {round} apply"))?;
        check_applied(dir, round, &expected, &output)?;
    }
    for object in &objects {
        let mut args = vec!["get", kind(object), name(object), "-o", "name"];
        if let Some(ns) = namespace(object) {
            args.extend(["-n", ns]);
        }
        cluster.kubectl_ok(&args).with_context(|| {
            format!(
                "{dir}: {} was applied but cannot be read back",
                describe(object)
            )
        })?;
    }
    eprintln!(
        "{dir}: {} objects applied twice to the real API server and read back",
        objects.len()
    );
    Ok(())
}

/// The order a cluster meets them in: the dev overlay on an empty cluster (its
/// kubescape-auto-install component creates the `kubescape` namespace that install-check's and
/// extract's Roles live in), then the base and the production overlay, which both require
/// Kubescape to be installed already (deploy/README.md, the production kustomization's header).
const IN_ORDER: [&str; 3] = [
    "deploy/overlays/dev",
    "deploy/base",
    "deploy/overlays/production",
];

#[test]
fn the_base_and_both_overlays_apply_cleanly_to_a_real_api_server() -> Result<()> {
    let mut listed = KUSTOMIZATIONS.to_vec();
    let mut ordered = IN_ORDER.to_vec();
    listed.sort_unstable();
    ordered.sort_unstable();
    ensure!(
        listed == ordered,
        "IN_ORDER must name every kustomization the other deploy tests check: {KUSTOMIZATIONS:?}"
    );
    let cluster = RealCluster::start()?;
    for dir in IN_ORDER {
        applies_twice(&cluster, dir)
            .map_err(|error| anyhow::anyhow!("{error:#}{}", cluster.tails()))?;
    }
    Ok(())
}
