//! install-check against an in-process kubesim: the checks, the cache, the helm auto-install with
//! the stand-in helm (tests/system/fake-helm/helm), and API faults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubesim::{Capabilities, Config, FaultRule, Faults, KubescapeConfig, Timings};
use vexxy_events::FailureReason;
use vexxy_install_check::{InstallCheck, InstallCheckConfig};
use vexxy_runtime::StageError;

const CHECK_RESOURCES: [&str; 4] = [
    "apiservices.apiregistration.k8s.io",
    "daemonsets.apps",
    "deployments.apps",
    "configmaps",
];

async fn kubesim(installed: bool) -> kubesim::Handle {
    kubesim::Server::start(Config {
        seed: Some(7),
        timings: Timings {
            pod_start_delay_ms: 50,
            ..Timings::default()
        },
        kubescape: KubescapeConfig {
            installed,
            ..KubescapeConfig::default()
        },
        ..Config::default()
    })
    .await
    .expect("kubesim starts")
}

fn values_file() -> PathBuf {
    vexxy_harness::workspace_root().join("deploy/kubescape-values.yaml")
}

/// A per-test helm: a wrapper that sets the stand-in's environment (tests share one process, so
/// they cannot set environment variables for it).
struct FakeHelm {
    dir: tempfile::TempDir,
}

impl FakeHelm {
    fn new(sim: &kubesim::Handle, extra_env: &[(&str, &str)]) -> FakeHelm {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = vexxy_harness::workspace_root().join("tests/system/fake-helm/helm");
        let mut script = String::from("#!/bin/sh\n");
        script += &format!(
            "export FAKE_HELM_LOG='{}'\n",
            dir.path().join("calls.jsonl").display()
        );
        script += &format!("export KUBESIM_URL='{}'\n", sim.url());
        for (k, v) in extra_env {
            script += &format!("export {k}='{v}'\n");
        }
        script += &format!("exec '{}' \"$@\"\n", real.display());
        let wrapper = dir.path().join("helm");
        std::fs::write(&wrapper, script).expect("write wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        FakeHelm { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("helm")
    }

    fn calls(&self) -> Vec<Vec<String>> {
        match std::fs::read_to_string(self.dir.path().join("calls.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("one JSON array per line"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn config(helm_bin: &Path, auto_install: bool) -> InstallCheckConfig {
    let mut config =
        InstallCheckConfig::load(&vexxy_runtime::Env::empty()).expect("defaults are valid");
    config.auto_install = auto_install;
    config.helm.helm_bin = helm_bin.to_path_buf();
    config.helm.values_file = values_file();
    config.install_timeout = Duration::from_secs(20);
    config
}

fn permanent(result: Result<(), StageError>) -> (FailureReason, String, bool) {
    match result {
        Err(StageError::Permanent {
            reason,
            message,
            retryable,
        }) => (reason, message, retryable),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

fn transient(result: Result<(), StageError>) -> (FailureReason, String) {
    match result {
        Err(StageError::Transient { reason, message }) => (reason, message),
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

/// kubesim's components become ready a moment after start (pods start after a delay); until
/// then the answer is a transient "not ready yet".
async fn ready_within(check: &InstallCheck, bound: Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match check.ensure_ready().await {
            Ok(()) => return,
            Err(StageError::Transient {
                reason: FailureReason::KubescapeUnavailable,
                message,
            }) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Kubescape not ready in {bound:?}: {message}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("unexpected failure while waiting for readiness: {other:?}"),
        }
    }
}

#[tokio::test]
async fn installed_kubescape_passes_and_the_answer_is_cached_per_cluster() {
    let sim = kubesim(true).await;
    let helm = FakeHelm::new(&sim, &[]);
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(&helm.bin(), false),
    );
    ready_within(&check, Duration::from_secs(10)).await;

    sim.reset_counters();
    check.ensure_ready().await.expect("cached positive answer");
    check.ensure_ready().await.expect("cached positive answer");
    assert_eq!(
        sim.counters().total,
        0,
        "no API request within the TTL: {:?}",
        sim.counters()
    );

    // Without a TTL every job looks again, one GET per object checked.
    let mut uncached = config(&helm.bin(), false);
    uncached.check_ttl = Duration::ZERO;
    let uncached = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        uncached,
    );
    sim.reset_counters();
    uncached.ensure_ready().await.expect("ready");
    uncached.ensure_ready().await.expect("ready");
    for resource in CHECK_RESOURCES {
        assert_eq!(
            sim.counters().get("get", resource),
            2,
            "{resource}: {:?}",
            sim.counters()
        );
    }
    assert!(
        helm.calls().is_empty(),
        "nothing installed when Kubescape is there"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn vex_generation_off_names_the_fix_and_is_not_cached() {
    let sim = kubesim(true).await;
    let helm = FakeHelm::new(&sim, &[]);
    sim.set_capabilities(Capabilities {
        vex_generation: false,
        ..Capabilities::default()
    })
    .expect("reconfigure");
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(&helm.bin(), true),
    );

    let (reason, message, retryable) = permanent(check.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubescapeUnavailable);
    assert!(retryable);
    assert!(
        message.contains("vexGeneration is false in ConfigMap kubescape/ks-cloud-config"),
        "{message}"
    );
    assert!(
        message.contains(
            "helm upgrade --install kubescape kubescape/kubescape-operator -n kubescape --reuse-values --set capabilities.vexGeneration=enable"
        ),
        "{message}"
    );
    assert!(
        helm.calls().is_empty(),
        "an installed Kubescape is never reinstalled or reconfigured by vexxy"
    );

    // The negative answer was not remembered: fixing the cluster is enough.
    sim.set_capabilities(Capabilities::default())
        .expect("reconfigure");
    ready_within(&check, Duration::from_secs(10)).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn filtered_sbom_off_names_its_own_setting() {
    let sim = kubesim(true).await;
    sim.set_capabilities(Capabilities {
        store_filtered_sbom: false,
        ..Capabilities::default()
    })
    .expect("reconfigure");
    let helm = FakeHelm::new(&sim, &[]);
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(&helm.bin(), false),
    );
    let (_, message, _) = permanent(check.ensure_ready().await);
    assert!(
        message.contains("--set kubevuln.config.storeFilteredSboms=true"),
        "{message}"
    );
    assert!(
        !message.contains("capabilities.vexGeneration"),
        "only what is off is named: {message}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn absent_with_auto_install_runs_helm_once_then_passes() {
    let sim = kubesim(false).await;
    let helm = FakeHelm::new(&sim, &[]);
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(&helm.bin(), true),
    );

    // Three jobs arrive together: one install, the others wait for it.
    let (a, b, c) = tokio::join!(
        check.ensure_ready(),
        check.ensure_ready(),
        check.ensure_ready()
    );
    a.expect("installed and ready");
    b.expect("installed and ready");
    c.expect("installed and ready");

    let values = values_file().display().to_string();
    let expected: Vec<Vec<String>> = vec![
        vec![
            "repo",
            "add",
            "kubescape",
            "https://kubescape.github.io/helm-charts",
            "--force-update",
        ],
        vec![
            "upgrade",
            "--install",
            "kubescape",
            "kubescape/kubescape-operator",
            "-n",
            "kubescape",
            "--create-namespace",
            "-f",
            values.as_str(),
        ],
    ]
    .into_iter()
    .map(|call| call.into_iter().map(String::from).collect())
    .collect();
    assert_eq!(helm.calls(), expected);
    assert!(
        sim.config().kubescape.installed,
        "the stand-in switched kubesim to installed"
    );

    check.ensure_ready().await.expect("cached");
    assert_eq!(helm.calls().len(), 2, "no second install");
    sim.shutdown().await;
}

#[tokio::test]
async fn absent_without_auto_install_fails_with_the_install_command() {
    let sim = kubesim(false).await;
    let helm = FakeHelm::new(&sim, &[]);
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(&helm.bin(), false),
    );
    let (reason, message, retryable) = permanent(check.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubescapeUnavailable);
    assert!(retryable, "installing Kubescape and submitting again helps");
    assert!(message.contains("not installed"), "{message}");
    assert!(
        message.contains("upgrade --install kubescape kubescape/kubescape-operator -n kubescape --create-namespace -f"),
        "{message}"
    );
    assert!(
        message.contains("VEXXY_KUBESCAPE_AUTO_INSTALL=true"),
        "{message}"
    );
    assert!(helm.calls().is_empty());

    // Not cached: once someone installs it, the next job passes.
    sim.set_kubescape_installed(true).expect("install");
    ready_within(&check, Duration::from_secs(10)).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn failing_or_missing_helm_is_kubescape_unavailable() {
    let sim = kubesim(false).await;
    let helm = FakeHelm::new(&sim, &[("FAKE_HELM_FAIL", "1")]);
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(&helm.bin(), true),
    );
    let (reason, message, _) = permanent(check.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubescapeUnavailable);
    assert!(
        message.contains("INSTALLATION FAILED: injected failure"),
        "helm's own words: {message}"
    );
    assert!(
        message.contains("helm upgrade --install")
            || message.contains("upgrade --install kubescape"),
        "{message}"
    );
    assert_eq!(helm.calls().len(), 1, "stops at the first failing call");
    assert!(!sim.config().kubescape.installed);

    let missing = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(Path::new("/nonexistent/vexxy-test/helm"), true),
    );
    let (reason, message, _) = permanent(missing.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubescapeUnavailable);
    assert!(
        message.contains("was not found") && message.contains("VEXXY_HELM_BIN"),
        "{message}"
    );
    sim.shutdown().await;
}

/// The stand-in helm reads the values file like helm would: one without a value vexxy relies on
/// fails the install, so the tests that install through `deploy/kubescape-values.yaml` prove
/// that file still carries them.
#[tokio::test]
async fn a_values_file_without_vex_generation_fails_the_install() {
    let sim = kubesim(false).await;
    let helm = FakeHelm::new(&sim, &[]);
    let drifted = helm.dir.path().join("values-without-vex.yaml");
    let values = std::fs::read_to_string(values_file()).expect("the values file is readable");
    let kept: Vec<&str> = values
        .lines()
        .filter(|line| !line.trim_start().starts_with("vexGeneration:"))
        .collect();
    assert!(
        kept.len() < values.lines().count(),
        "the values file sets vexGeneration"
    );
    std::fs::write(&drifted, kept.join("\n")).expect("write the drifted values");
    let mut config = config(&helm.bin(), true);
    config.helm.values_file = drifted;
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config,
    );
    let (reason, message, _) = permanent(check.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubescapeUnavailable);
    assert!(
        message.contains("capabilities.vexGeneration is not set"),
        "the stand-in names the missing value: {message}"
    );
    assert!(!sim.config().kubescape.installed);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_hanging_helm_is_stopped_at_the_install_timeout() {
    let sim = kubesim(false).await;
    let helm = FakeHelm::new(&sim, &[("FAKE_HELM_SLEEP", "30")]);
    let mut cfg = config(&helm.bin(), true);
    cfg.install_timeout = Duration::from_millis(500);
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        cfg,
    );
    let started = std::time::Instant::now();
    let (reason, message, _) = permanent(check.ensure_ready().await);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
    assert_eq!(reason, FailureReason::KubescapeUnavailable);
    assert!(message.contains("did not finish within"), "{message}");
    sim.shutdown().await;
}

fn fail_apiservice_gets(status: u16, max: Option<u64>) -> Faults {
    Faults {
        rules: vec![FaultRule {
            verb: "get".into(),
            resource: "apiservices.apiregistration.k8s.io".into(),
            status,
            rate: 1.0,
            max,
        }],
        retry_after_seconds: 1,
        ..Faults::default()
    }
}

#[tokio::test]
async fn api_server_errors_are_transient() {
    let sim = kubesim(true).await;
    let helm = FakeHelm::new(&sim, &[]);
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config(&helm.bin(), true),
    );
    sim.set_faults(fail_apiservice_gets(500, None));
    let (reason, message) = transient(check.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubernetesUnavailable, "{message}");
    assert!(message.contains("500"), "{message}");
    assert!(
        helm.calls().is_empty(),
        "an API error is never mistaken for an absent Kubescape"
    );

    // A persistent 429: the production client (kube's default policy) retries it with backoff
    // for minutes, so the classification is shown with that retry layer off.
    let mut no_retry = sim.kube_config().await.expect("kube config for kubesim");
    no_retry.default_retry = false;
    let no_retry = InstallCheck::new(
        kube::Client::try_from(no_retry).expect("client"),
        sim.url(),
        config(&helm.bin(), true),
    );
    sim.set_faults(fail_apiservice_gets(429, None));
    let (reason, message) = transient(no_retry.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubernetesUnavailable, "{message}");
    assert!(message.contains("429"), "{message}");

    // A short 429 burst with Retry-After is absorbed by the client and the check passes.
    sim.set_faults(fail_apiservice_gets(429, Some(1)));
    ready_within(&check, Duration::from_secs(10)).await;
    assert_eq!(sim.faults_injected(), 1);
    assert!(helm.calls().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn unreachable_api_server_is_transient() {
    let sim = kubesim(true).await;
    let client = sim.client().await.expect("a kube client for kubesim");
    let url = sim.url();
    sim.shutdown().await;
    let check = InstallCheck::new(client, url, config(Path::new("helm"), false));
    let (reason, _) = transient(check.ensure_ready().await);
    assert_eq!(reason, FailureReason::KubernetesUnavailable);
}
