//! The install-check and deploy binaries as real processes: they start from the environment,
//! connect to a real nats-server, provision their consumers, consume a request, install
//! Kubescape with the stand-in helm (auto-install on), create the sandbox in kubesim and hand
//! the ticket to wait; SIGTERM stops them cleanly.
//!
//! The binaries come from `target/<profile>/`; `cargo xtask test` builds them first
//! (`cargo build --workspace --bins`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kubesim::{Config, KubescapeConfig, Timings};
use vexxy_events::subjects;
use vexxy_harness::{ChildProcess, NatsServer, wait_until, workspace_root};

fn stage_binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("test binary path");
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: build the stage binaries first (`cargo build --workspace --bins`; `cargo xtask test` does it)",
        binary.display()
    );
    binary
}

fn spawn_stage(
    name: &str,
    envs: &[(&str, String)],
    dir: &std::path::Path,
) -> (ChildProcess, PathBuf) {
    let addr_file = dir.join(format!("{name}.addr"));
    let mut command = Command::new(stage_binary(name));
    command.env_clear();
    // The stand-in helm is a python3 script found through PATH (`#!/usr/bin/env python3`).
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    command.env("VEXXY_HEALTH_ADDR", "127.0.0.1:0");
    command.env("VEXXY_HEALTH_ADDR_FILE", &addr_file);
    command.env("VEXXY_PULL_EXPIRES", "1s");
    command.env("RUST_LOG", "info");
    for (k, v) in envs {
        command.env(k, v);
    }
    let process =
        ChildProcess::spawn(name, command, &dir.join(format!("{name}.log"))).expect("stage starts");
    (process, addr_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_install_kubescape_and_deploy_the_sandbox() {
    let nats = NatsServer::start().expect("nats-server");
    let sim = kubesim::Server::start(Config {
        timings: Timings {
            pod_start_delay_ms: 50,
            ..Timings::default()
        },
        kubescape: KubescapeConfig {
            installed: false,
            ..KubescapeConfig::default()
        },
        ..Config::default()
    })
    .await
    .expect("kubesim");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let helm_log = dir.path().join("helm-calls.jsonl");

    let common = vec![
        ("NATS_URL", nats.url()),
        (
            "VEXXY_STORE",
            format!("file://{}", dir.path().join("store").display()),
        ),
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("VEXXY_MIN_ANALYSIS_DURATION", "2".to_string()),
    ];
    let mut install_env = common.clone();
    install_env.extend([
        ("VEXXY_KUBESCAPE_AUTO_INSTALL", "true".to_string()),
        (
            "VEXXY_HELM_BIN",
            workspace_root()
                .join("tests/system/fake-helm/helm")
                .display()
                .to_string(),
        ),
        (
            "VEXXY_KUBESCAPE_VALUES",
            workspace_root()
                .join("deploy/kubescape-values.yaml")
                .display()
                .to_string(),
        ),
        ("VEXXY_KUBESCAPE_INSTALL_TIMEOUT", "30s".to_string()),
        ("FAKE_HELM_LOG", helm_log.display().to_string()),
        ("KUBESIM_URL", sim.url()),
    ]);
    let mut deploy_env = common.clone();
    deploy_env.extend([
        ("VEXXY_CREATE_SANDBOX_NAMESPACE", "true".to_string()),
        ("VEXXY_SANDBOX_DENY_EGRESS", "true".to_string()),
        ("K8S_SANDBOX_NAMESPACE", "vexxy-process-test".to_string()),
    ]);
    let (mut install_check, install_addr) =
        spawn_stage("vexxy-install-check", &install_env, dir.path());
    let (mut deploy, deploy_addr) = spawn_stage("vexxy-deploy", &deploy_env, dir.path());

    // Both report their health address once their HTTP endpoint is up.
    let started = wait_until(Duration::from_secs(30), || {
        install_addr.is_file() && deploy_addr.is_file()
    });
    assert!(
        started,
        "stages did not start:\n{}\n{}",
        install_check.logs(),
        deploy.logs()
    );

    let client = nats.client().await.expect("test client");
    let js = async_nats::jetstream::new(client.clone());
    // Wait until the runtime provisioned the public stream, then subscribe to deploy's output.
    let mut provisioned = false;
    for _ in 0..300 {
        if js.get_stream(subjects::PUBLIC_STREAM).await.is_ok()
            && js.get_stream(subjects::PIPELINE_STREAM).await.is_ok()
        {
            provisioned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        provisioned,
        "streams not provisioned:\n{}\n{}",
        install_check.logs(),
        deploy.logs()
    );
    let mut to_wait = client
        .subscribe(subjects::input_of(vexxy_events::Stage::Wait))
        .await
        .expect("subscribe");

    let jobs = ["proc-job-1", "proc-job-2"];
    for job in jobs {
        let body = serde_json::json!({
            "job_id": job,
            "image_ref": "docker.io/library/nginx:1.27",
            "image_digest": format!("sha256:{}", "e".repeat(64)),
            "config": {"analysis_duration": 30, "environment": {"MODE": "$(literal)"}}
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("msg-{job}").as_str());
        js.publish_with_headers(subjects::REQUESTED, headers, body.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < jobs.len() {
        let message = tokio::time::timeout_at(deadline, to_wait.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "tickets for wait did not arrive:\n{}\n{}",
                    install_check.logs(),
                    deploy.logs()
                )
            })
            .expect("subscription open");
        let event: serde_json::Value =
            serde_json::from_slice(&message.payload).expect("JSON event");
        let ticket = &event["data"];
        let job = ticket["request"]["job_id"]
            .as_str()
            .expect("job id")
            .to_string();
        seen.insert(job, ticket["sandbox"].clone());
    }
    for job in jobs {
        let sandbox = &seen[job];
        assert_eq!(sandbox["namespace"], "vexxy-process-test", "{sandbox}");
        assert_eq!(sandbox["deployment"], format!("vexxy-{job}"), "{sandbox}");
        assert_eq!(sandbox["container"], "target", "{sandbox}");
    }

    let calls: Vec<Vec<String>> = std::fs::read_to_string(&helm_log)
        .expect("helm was called")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let installs = calls
        .iter()
        .filter(|c| c.first().map(String::as_str) == Some("upgrade"))
        .count();
    assert_eq!(installs, 1, "one install for both jobs: {calls:?}");
    assert!(sim.config().kubescape.installed);

    let kube_client = sim.client().await.expect("a kube client for kubesim");
    for job in jobs {
        let d = Api::<Deployment>::namespaced(kube_client.clone(), "vexxy-process-test")
            .get(&format!("vexxy-{job}"))
            .await
            .expect("sandbox Deployment exists");
        let env = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].env.clone().unwrap_or_default());
        assert_eq!(env.unwrap()[0].value.as_deref(), Some("$$(literal)"));
        Api::<NetworkPolicy>::namespaced(kube_client.clone(), "vexxy-process-test")
            .get(&format!("vexxy-{job}"))
            .await
            .expect("egress policy exists");
    }

    let (install_status, deploy_status) = tokio::task::spawn_blocking(move || {
        let a = install_check
            .terminate(Duration::from_secs(20))
            .map(|s| (s, install_check.logs()));
        let b = deploy
            .terminate(Duration::from_secs(20))
            .map(|s| (s, deploy.logs()));
        (a, b)
    })
    .await
    .expect("join");
    let (status, logs) = install_status.expect("install-check stops");
    assert_eq!(status.code(), Some(0), "{logs}");
    let (status, logs) = deploy_status.expect("deploy stops");
    assert_eq!(status.code(), Some(0), "{logs}");
    sim.shutdown().await;
}
