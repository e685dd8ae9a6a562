//! kubesim driven by the real kubectl (v1.32 on PATH).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_watch_describe_delete() {
    let sim = start(fast_config()).await;
    let (_dir, kc) = kubeconfig(&sim);
    let manifest = _dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        deployment_yaml("web", "default", "nginx:1.14.2", 1),
    )
    .unwrap();

    // `get --watch` started before the apply sees the pod appear.
    let mut watch = Command::new("kubectl")
        .args(["get", "pods", "--watch", "-o", "name"])
        .env("KUBECONFIG", &kc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl must be on PATH");
    let stdout = watch.stdout.take().unwrap();
    let watcher = std::thread::spawn(move || {
        let start = Instant::now();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().take(50) {
            let line = line.unwrap_or_default();
            let done = line.starts_with("pod/web-");
            lines.push(line);
            if done || start.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        lines
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (ok, out, err) = kubectl_async(&kc, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "kubectl apply failed: {out}{err}");
    assert!(out.contains("deployment.apps/web created"), "{out}");

    let lines = watcher.join().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        lines.iter().any(|l| l.starts_with("pod/web-")),
        "watch never showed the pod: {lines:?}"
    );

    let pod: Value = eventually("the pod to be Running", Duration::from_secs(10), || {
        let kc = kc.clone();
        async move {
            let (ok, out, _) =
                kubectl_async(&kc, &["get", "pods", "-l", "app=web", "-o", "json"]).await;
            let list: Value = serde_json::from_str(&out).ok()?;
            let pod = list["items"].get(0)?.clone();
            (ok && pod["status"]["phase"] == "Running").then_some(pod)
        }
    })
    .await;
    let rs_name = pod["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rs_name.starts_with("web-"), "{rs_name}");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");

    // Re-applying a changed manifest goes through kubectl's strategic merge patch.
    std::fs::write(
        &manifest,
        deployment_yaml("web", "default", "nginx:1.16.0", 1),
    )
    .unwrap();
    let (ok, out, err) = kubectl_async(&kc, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok && out.contains("configured"), "{out}{err}");
    let (ok, out, _) = kubectl_async(&kc, &["get", "deploy", "web", "-o", "yaml"]).await;
    assert!(
        ok && out.contains("image: nginx:1.16.0") && out.contains("name: app"),
        "{out}"
    );

    let (ok, out, err) = kubectl_async(&kc, &["describe", "deployment", "web"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("ScalingReplicaSet") && out.contains("NewReplicaSet:"),
        "{out}"
    );
    let (ok, out, err) = kubectl_async(&kc, &["describe", "pods", "-l", "app=web"]).await;
    // kubectl pads labels to the widest one shown, which depends on whether the rollout's new
    // pod is still pending: match the label and the value, not the spaces between them.
    let controlled_by_replicaset = out.lines().any(|line| {
        line.strip_prefix("Controlled By:")
            .is_some_and(|value| value.trim_start().starts_with("ReplicaSet/"))
    });
    assert!(ok && controlled_by_replicaset, "{out}{err}");

    let (ok, out, _) = kubectl_async(&kc, &["api-resources"]).await;
    assert!(ok);
    for short in ["deploy", "po", "ns", "cm", "rs", "ds", "sa", "netpol"] {
        assert!(
            out.split_whitespace().any(|w| w == short),
            "short name {short} missing from:\n{out}"
        );
    }

    let (ok, out, err) = kubectl_async(&kc, &["delete", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok && out.contains("deleted"), "{out}{err}");
    let (ok, out, _) = kubectl_async(&kc, &["get", "rs,pods", "-o", "name"]).await;
    assert!(ok && out.trim().is_empty(), "cascade left: {out}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_patterns_show_where_kubectl_shows_them() {
    let sim = start(fast_config()).await;
    let (dir, kc) = kubeconfig(&sim);
    let manifest = dir.path().join("bad.yaml");
    let docs = [
        deployment_yaml("pull", "default", "registry.example/pull-fail:1", 1),
        deployment_yaml("crash", "default", "busybox-crashloop:1", 1),
        deployment_yaml("nosched", "default", "unschedulable/app:1", 1),
    ]
    .join("---\n");
    std::fs::write(&manifest, docs).unwrap();
    let (ok, out, err) = kubectl_async(&kc, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");

    let out = eventually("all three failure states", Duration::from_secs(10), || {
        let kc = kc.clone();
        async move {
            let (_, out, _) = kubectl_async(&kc, &["get", "pods"]).await;
            let line = |p: &str| {
                out.lines()
                    .find(|l| l.starts_with(p))
                    .unwrap_or("")
                    .to_string()
            };
            (line("pull-").contains("ImagePullBackOff")
                && line("crash-").contains("CrashLoopBackOff")
                && line("nosched-").contains("Pending"))
            .then_some(out)
        }
    })
    .await;
    assert!(!out.contains("Running "), "{out}");

    let (_, json, _) = kubectl_async(&kc, &["get", "pods", "-l", "app=crash", "-o", "json"]).await;
    let pods: Value = serde_json::from_str(&json).unwrap();
    let cs = &pods["items"][0]["status"]["containerStatuses"][0];
    assert!(cs["restartCount"].as_i64().unwrap() >= 1, "{cs}");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);

    let (_, desc, _) = kubectl_async(&kc, &["describe", "pods", "-l", "app=nosched"]).await;
    assert!(
        desc.contains("FailedScheduling") && desc.contains("0/1 nodes are available"),
        "{desc}"
    );
    let (_, desc, _) = kubectl_async(&kc, &["describe", "pods", "-l", "app=pull"]).await;
    assert!(
        desc.contains("ErrImagePull") && desc.contains("Failed to pull image"),
        "{desc}"
    );
    let (_, desc, _) = kubectl_async(&kc, &["describe", "deploy", "nosched"]).await;
    assert!(desc.contains("MinimumReplicasUnavailable"), "{desc}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_storage_group_only_when_installed() {
    let mut cfg = fast_config();
    cfg.kubescape.installed = false;
    let sim = start(cfg).await;
    let (_dir, kc) = kubeconfig(&sim);
    let (ok, _, err) =
        kubectl_async(&kc, &["get", "openvulnerabilityexchangecontainers", "-A"]).await;
    assert!(
        !ok && err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    let (ok, _, _) = kubectl_async(&kc, &["get", "ns", "kubescape"]).await;
    assert!(!ok);

    sim.set_kubescape_installed(true).unwrap();
    let (ok, out, err) =
        kubectl_async(&kc, &["get", "openvulnerabilityexchangecontainers", "-A"]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kubectl_async(
        &kc,
        &[
            "get",
            "apiservice",
            "v1beta1.spdx.softwarecomposition.kubescape.io",
            "-o",
            "json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let svc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(svc["status"]["conditions"][0]["type"], "Available");
    assert_eq!(svc["status"]["conditions"][0]["status"], "True");
    assert_eq!(svc["spec"]["service"]["name"], "storage");
    sim.shutdown().await;
}
