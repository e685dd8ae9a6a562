//! install-check's Kubescape auto-install with the real helm (built from the Go module proxy)
//! and the real Kubescape operator chart 1.40.3 (`../shared/fixtures/charts`, packaged here with
//! its local dependencies the way the chart repository serves it), against the real control
//! plane (see `real_control_plane.rs` for the tier).
//!
//! The install-check binary consumes a request while Kubescape is absent and runs its helm
//! command: the release must install, and the ConfigMaps the chart renders must carry the
//! capabilities and learning period vexxy's values ask for. Every key of
//! `deploy/kubescape-values.yaml` must be one the chart's own values define: Helm ignores an
//! unknown key silently, and then Kubescape never writes a VEX.
//!
//! What cannot happen here: the chart's images cannot be pulled, so kwok runs its pods as fakes
//! and nothing serves the storage API the chart registers (APIService
//! `v1beta1.spdx.softwarecomposition.kubescape.io`). install-check therefore ends the job with
//! `kubescape_unavailable` once its install timeout passes, saying it installed Kubescape and
//! what was last seen; the test checks exactly that.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use serde_json::Value;
use vexxy_events::subjects;
use vexxy_harness::realcluster::RealCluster;
use vexxy_harness::stack;
use vexxy_harness::{ChildProcess, NatsServer, find_binary, workspace_root};

const CHART_VERSION: &str = "1.40.3";
const NAMESPACE: &str = "kubescape";
const INSTALL_TIMEOUT: &str = "20s";

/// Where helm keeps its state (repositories, cache, config): inside `home`, for the test's
/// helm calls and install-check's alike.
fn helm_env(home: &Path) -> [(&'static str, PathBuf); 4] {
    [
        ("HOME", home.to_path_buf()),
        ("HELM_CACHE_HOME", home.join("cache")),
        ("HELM_CONFIG_HOME", home.join("config")),
        ("HELM_DATA_HOME", home.join("data")),
    ]
}

fn helm(helm: &Path, home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut command = Command::new(helm);
    command.args(args).envs(helm_env(home));
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run helm {args:?}"))?;
    ensure!(
        output.status.success(),
        "helm {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The vendored chart as the repository serves it: a `.tgz` with its `file://` dependencies
/// inside (`helm dependency build` writes into the chart folder, so a copy is packaged).
fn package_chart(helm_bin: &Path, home: &Path) -> Result<PathBuf> {
    let fixtures = workspace_root().join("../shared/fixtures/charts");
    let copy = home.join("charts");
    copy_dir(
        &fixtures.join("kubescape-operator"),
        &copy.join("kubescape-operator"),
    )?;
    copy_dir(
        &fixtures.join("dependency_chart"),
        &copy.join("dependency_chart"),
    )?;
    let chart = copy.join("kubescape-operator");
    let chart_arg = chart.display().to_string();
    helm(helm_bin, home, None, &["dependency", "build", &chart_arg])?;
    helm(helm_bin, home, None, &["lint", &chart_arg])?;
    let out = home.join("packaged");
    let out_arg = out.display().to_string();
    helm(
        helm_bin,
        home,
        None,
        &["package", &chart_arg, "-d", &out_arg],
    )?;
    let archive = out.join(format!("kubescape-operator-{CHART_VERSION}.tgz"));
    ensure!(
        archive.is_file(),
        "helm package wrote no {}",
        archive.display()
    );
    Ok(archive)
}

/// The dotted paths of every leaf of a YAML mapping (`capabilities.relevancy`, …).
fn leaf_keys(value: &serde_yaml_ng::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml_ng::Value::Mapping(map) if !map.is_empty() => {
            for (key, child) in map {
                let key = key
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{key:?}"));
                let path = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_keys(child, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// The keys of `ours` that the chart's default values do not define.
fn unknown_keys(ours: &str, chart_defaults: &str) -> Result<Vec<String>> {
    let ours: serde_yaml_ng::Value = serde_yaml_ng::from_str(ours)?;
    let chart: serde_yaml_ng::Value = serde_yaml_ng::from_str(chart_defaults)?;
    let mut keys = Vec::new();
    leaf_keys(&ours, "", &mut keys);
    Ok(keys
        .into_iter()
        .filter(|path| {
            let mut node = &chart;
            for part in path.split('.') {
                match node.get(part) {
                    Some(child) => node = child,
                    None => return true,
                }
            }
            false
        })
        .collect())
}

/// The JSON inside a ConfigMap's data key (the chart writes JSON documents as strings).
fn config_map_json(cluster: &RealCluster, name: &str, key: &str) -> Result<Value> {
    let text = cluster.kubectl_ok(&["get", "configmap", name, "-n", NAMESPACE, "-o", "json"])?;
    let object: Value = serde_json::from_str(&text)?;
    let data = object["data"][key]
        .as_str()
        .with_context(|| format!("ConfigMap {name} has no data key {key}"))?;
    serde_json::from_str(data).with_context(|| format!("ConfigMap {name} {key} is not JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_check_installs_the_real_kubescape_chart_with_vexxys_values() -> Result<()> {
    let helm_bin = find_binary("VEXXY_HELM", "helm")
        .context("helm is built from the Go module proxy by `cargo xtask setup`")?;
    let dir = tempfile::Builder::new()
        .prefix("vexxy-kubescape-chart-")
        .tempdir()?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;
    let archive = package_chart(&helm_bin, &home)?;

    // Every key vexxy sets is one the chart reads (Helm would ignore a misspelt one), and the
    // check can fail: a misspelt copy is caught.
    let values_file = workspace_root().join("deploy/kubescape-values.yaml");
    let ours = std::fs::read_to_string(&values_file)?;
    let archive_arg = archive.display().to_string();
    let defaults = helm(&helm_bin, &home, None, &["show", "values", &archive_arg])?;
    let unknown = unknown_keys(&ours, &defaults)?;
    ensure!(
        unknown.is_empty(),
        "deploy/kubescape-values.yaml sets keys the Kubescape chart {CHART_VERSION} does not define (Helm ignores them): {unknown:?}"
    );
    let misspelt = ours.replace("storeFilteredSboms", "storeFilteredSbom");
    ensure!(
        unknown_keys(&misspelt, &defaults)? == ["kubevuln.config.storeFilteredSbom"],
        "the key check must catch a misspelt key"
    );

    let cluster = RealCluster::start()?;
    let nats = NatsServer::start()?;
    let mut command = Command::new(stack::binary("vexxy-install-check")?);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(helm_env(&home))
        .env("NATS_URL", nats.url())
        .env(
            "VEXXY_STORE",
            format!("file://{}", dir.path().join("store").display()),
        )
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("VEXXY_HEALTH_ADDR", "127.0.0.1:0")
        .env("VEXXY_PULL_EXPIRES", "1s")
        .env("VEXXY_KUBESCAPE_AUTO_INSTALL", "true")
        .env("VEXXY_HELM_BIN", &helm_bin)
        .env("VEXXY_KUBESCAPE_CHART", &archive)
        .env("VEXXY_KUBESCAPE_VALUES", &values_file)
        .env("VEXXY_KUBESCAPE_INSTALL_TIMEOUT", INSTALL_TIMEOUT)
        .env("RUST_LOG", "info");
    let log = dir.path().join("install-check.log");
    let mut install_check = ChildProcess::spawn("vexxy-install-check", command, &log)?;

    let client = nats.client().await?;
    let js = async_nats::jetstream::new(client.clone());
    let mut provisioned = false;
    for _ in 0..300 {
        if js.get_stream(subjects::PUBLIC_STREAM).await.is_ok() {
            provisioned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        provisioned,
        "install-check did not provision the streams:\n{}",
        install_check.logs()
    );
    let mut failed = client.subscribe(subjects::FAILED).await?;
    let request = serde_json::json!({
        "job_id": "kubescape-chart",
        "image_ref": "docker.io/library/nginx:1.27",
        "image_digest": format!("sha256:{}", "e".repeat(64)),
        "config": {"analysis_duration": 60}
    });
    js.publish(subjects::REQUESTED, request.to_string().into())
        .await?
        .await?;

    let message = tokio::time::timeout(Duration::from_secs(180), failed.next())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no outcome from install-check within 180 s:\n{}{}",
                install_check.logs(),
                cluster.tails()
            )
        })?
        .context("subscription closed")?;
    let event: Value = serde_json::from_slice(&message.payload)?;
    let data = &event["data"];
    let text = data["message"].as_str().unwrap_or_default();
    ensure!(
        data["reason"] == "kubescape_unavailable"
            && text.contains("was installed with")
            && text.contains(&archive_arg)
            && text.contains("not ready within")
            && text.contains("storage API"),
        "install-check should have installed the chart and then timed out waiting for the \
         storage API nothing serves here; it said: {data}\n{}",
        install_check.logs()
    );
    // Waiting, it saw only what kwok cannot provide, never a capability vexxy needs but did
    // not get.
    ensure!(
        !text.contains("--set"),
        "install-check found a setting missing after installing with vexxy's values: {text}"
    );

    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let status: Value = serde_json::from_str(&helm(
        &helm_bin,
        &home,
        Some(&kubeconfig),
        &["status", "kubescape", "-n", NAMESPACE, "-o", "json"],
    )?)?;
    ensure!(
        status["info"]["status"] == "deployed",
        "the release is not deployed: {}",
        status["info"]
    );
    let cloud = config_map_json(&cluster, "ks-cloud-config", "clusterData")?;
    for (key, expected) in [
        ("vexGeneration", Value::Bool(true)),
        ("relevantImageVulnerabilitiesEnabled", Value::Bool(true)),
        ("storeFilteredSbom", Value::Bool(true)),
        ("storage", Value::Bool(true)),
    ] {
        ensure!(
            cloud[key] == expected,
            "ks-cloud-config {key} is {}, vexxy's values ask for {expected}",
            cloud[key]
        );
    }
    let node_agent = config_map_json(&cluster, "node-agent", "config.json")?;
    for (key, expected) in [
        ("applicationProfileServiceEnabled", Value::Bool(true)),
        ("initialDelay", Value::from("2m")),
        ("updateDataPeriod", Value::from("10m")),
    ] {
        ensure!(
            node_agent[key] == expected,
            "node-agent config {key} is {}, vexxy's values ask for {expected}",
            node_agent[key]
        );
    }
    let api_service = cluster.kubectl_ok(&[
        "get",
        "apiservice",
        "v1beta1.spdx.softwarecomposition.kubescape.io",
        "-o",
        "json",
    ])?;
    let api_service: Value = serde_json::from_str(&api_service)?;
    ensure!(
        api_service["spec"]["service"]["name"] == "storage",
        "the chart registered the storage API for another service: {api_service}"
    );
    install_check.kill()?;
    eprintln!(
        "kubescape chart {CHART_VERSION}: installed by install-check with the real helm; \
         ks-cloud-config and node-agent carry vexxy's values; install-check said: {text}"
    );
    Ok(())
}
