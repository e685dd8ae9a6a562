//! The real control plane tier: a real kube-apiserver, etcd, controller-manager, scheduler and
//! kwok (built from the Go module proxy by `cargo xtask setup`), with kubesim as Kubescape's
//! storage API behind the real aggregator and as node-agent and kubevuln for the real pods.
//!
//! These tests fail (they never skip) when the binaries are missing: `cargo xtask test` leaves
//! this binary out, loudly, where Go is not installed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use vexxy_harness::realcluster::RealCluster;
use vexxy_harness::stack::KubesimProcess;

const STORAGE_API: &str = "/apis/spdx.softwarecomposition.kubescape.io/v1beta1";
const APISERVICE: &str = "v1beta1.spdx.softwarecomposition.kubescape.io";

/// kubesim's Kubescape timings for these tests: a short learning period, fast scans.
fn kubesim_args(cluster: &RealCluster) -> Vec<String> {
    [
        "--upstream-kubeconfig",
        &cluster.kubeconfig().display().to_string(),
        "--learning-period-ms",
        "2000",
        "--consolidation-delay-ms",
        "200",
        "--scan-delay-ms",
        "200",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn json_of(cluster: &RealCluster, args: &[&str]) -> Result<Value> {
    let text = cluster.kubectl_ok(args)?;
    serde_json::from_str(&text).with_context(|| format!("kubectl {args:?} printed no JSON: {text}"))
}

/// Polls `check` every 200 ms until it returns `Some`, or fails naming `what`.
fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::new();
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = format!("{error:#}"),
        }
        if Instant::now() >= deadline {
            bail!("{what} did not happen within {timeout:?} (last error: {last_error})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn apiservice_available(cluster: &RealCluster) -> Result<Option<()>> {
    let service = json_of(cluster, &["get", "apiservice", APISERVICE, "-o", "json"])?;
    let available = service
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Available" && c["status"] == "True");
    Ok(available.then_some(()))
}

#[test]
fn kubesim_is_kubescape_for_pods_the_real_scheduler_placed() -> Result<()> {
    let cluster = RealCluster::start()?;
    let dir = tempfile::tempdir()?;
    let kubesim = KubesimProcess::start(dir.path(), &kubesim_args(&cluster))?;
    let result = (|| -> Result<()> {
        // The real aggregator registers kubesim and says it is available.
        eventually(
            Duration::from_secs(60),
            "the storage APIService becoming Available",
            || apiservice_available(&cluster),
        )?;
        // kubectl (protobuf for core kinds) creates what a person would.
        cluster.kubectl_ok(&["create", "namespace", "demo"])?;
        let digest = "sha256:".to_string() + &"ab12".repeat(16);
        let deployment = format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: demo}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web, kubescape.io/max-sniffing-time: 3s}}
    spec:
      containers:
      - name: web
        image: docker.io/library/nginx@{digest}
"
        );
        cluster.kubectl_stdin(&["apply", "-f", "-"], &deployment)?;

        // The real scheduler binds the pod to a kwok node, kwok runs it.
        let pod = eventually(
            Duration::from_secs(60),
            "the pod running on a kwok node",
            || {
                let pods = json_of(&cluster, &["get", "pods", "-n", "demo", "-o", "json"])?;
                Ok(pods["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["status"]["phase"] == "Running")
                    .cloned())
            },
        )?;
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        ensure!(node.starts_with("kwok-node-"), "pod bound to {node:?}");

        // node-agent's profile in the workload's namespace, through the real aggregator.
        let profile = eventually(
            Duration::from_secs(60),
            "a completed ContainerProfile",
            || {
                let list = json_of(
                    &cluster,
                    &[
                        "get",
                        "--raw",
                        &format!("{STORAGE_API}/namespaces/demo/containerprofiles"),
                    ],
                )?;
                Ok(list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    // node-agent's per-save profiles (`<slug>-<32 hex>`, carrying a report
                    // series) are listed too until storage consolidates them into `<slug>`,
                    // the one kubevuln scans.
                    .find(|p| {
                        let annotations = &p["metadata"]["annotations"];
                        annotations["kubescape.io/status"] == "completed"
                            && annotations["kubescape.io/report-series-id"]
                                .as_str()
                                .is_none_or(str::is_empty)
                    })
                    .cloned())
            },
        )?;
        let slug = profile["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        ensure!(
            slug.starts_with("replicaset-web-"),
            "the profile is named after the ReplicaSet the real controller-manager made: {slug}"
        );
        // kubevuln's VEX under the same slug in its own namespace, full object by GET.
        let vex = eventually(Duration::from_secs(60), "the VEX document", || {
            let output = cluster.kubectl(&[
                "get",
                "--raw",
                &format!(
                    "{STORAGE_API}/namespaces/kubescape/openvulnerabilityexchangecontainers/{slug}"
                ),
            ])?;
            if !output.status.success() {
                return Ok(None);
            }
            Ok(Some(serde_json::from_slice::<Value>(&output.stdout)?))
        })?;
        ensure!(
            vex.pointer("/spec/statements")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty()),
            "the VEX GET returns the full document: {vex}"
        );
        Ok(())
    })();
    if let Err(error) = result {
        bail!(
            "{error:#}\n--- kubesim log:\n{}\n--- control plane:{}",
            vexxy_harness::stack::log_tail(kubesim.log_path(), 40),
            cluster.tails()
        );
    }
    Ok(())
}
