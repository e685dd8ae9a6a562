//! Shared helpers for kubesim's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kubesim::{Config, Handle, Server, Timings};

/// Fast timings so every lifecycle finishes within a couple of seconds.
pub fn fast_config() -> Config {
    Config {
        seed: Some(7),
        timings: Timings {
            pod_start_delay_ms: 150,
            learning_period_ms: 600,
            // Shorter than the learning periods below, so their containers have a `ready`
            // (learning-time) profile and scan, like a real container still learning at
            // node-agent's first save.
            first_save_delay_ms: 300,
            consolidation_delay_ms: 150,
            scan_delay_ms: 100,
            bookmark_interval_ms: 200,
        },
        ..Config::default()
    }
}

pub async fn start(config: Config) -> Handle {
    Server::start(config)
        .await
        .expect("kubesim starts on a free port")
}

pub async fn client(handle: &Handle) -> kube::Client {
    let config = kube::Config::new(handle.url().parse().expect("kubesim URL parses"));
    kube::Client::try_from(config).expect("kube client for kubesim")
}

/// Polls `check` until it returns Some, at most `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    for _ in 0..10_000 {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > within {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// A kubeconfig for `handle` in a temp dir (kept alive by the returned guard).
pub fn kubeconfig(handle: &Handle) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    handle.write_kubeconfig(&path).expect("kubeconfig written");
    (dir, path)
}

/// Runs kubectl against the kubeconfig; returns (success, stdout, stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .args(args)
        .arg("--request-timeout=20s")
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl must be on PATH for these tests (v1.32 expected): {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub async fn kubectl_async(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let kc = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&kc, &refs)
    })
    .await
    .expect("kubectl task")
}

pub fn deployment_yaml(name: &str, ns: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n"
    )
}
