//! Jobs that arrive together share one Kubescape check: a burst after start (or after the
//! cached answer expired) must not send the four GETs once per job.

use std::time::Duration;

use kubesim::{Config, Timings};
use vexxy_install_check::{InstallCheck, InstallCheckConfig};
use vexxy_runtime::StageError;

const CHECK_RESOURCES: [&str; 4] = [
    "apiservices.apiregistration.k8s.io",
    "daemonsets.apps",
    "deployments.apps",
    "configmaps",
];

/// kubesim's Kubescape components become ready once their pods started.
async fn wait_until_ready(check: &InstallCheck) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check.ensure_ready().await {
            Ok(()) => return,
            Err(StageError::Transient { message, .. }) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Kubescape not ready in 10 s: {message}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected failure while waiting for readiness: {other:?}"),
        }
    }
}

async fn ready_kubesim() -> kubesim::Handle {
    kubesim::Server::start(Config {
        seed: Some(11),
        timings: Timings {
            pod_start_delay_ms: 0,
            ..Timings::default()
        },
        ..Config::default()
    })
    .await
    .expect("kubesim starts")
}

#[tokio::test]
async fn a_burst_of_jobs_sends_one_check() {
    let sim = ready_kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");
    let config =
        InstallCheckConfig::load(&vexxy_runtime::Env::empty()).expect("defaults are valid");
    wait_until_ready(&InstallCheck::new(
        client.clone(),
        sim.url(),
        config.clone(),
    ))
    .await;

    // A fresh stage process: nothing cached, 32 jobs at once (the default in-flight limit).
    let check = InstallCheck::new(client, sim.url(), config);
    sim.reset_counters();
    let answers = futures::future::join_all((0..32).map(|_| check.ensure_ready())).await;
    for answer in answers {
        answer.expect("Kubescape is ready");
    }
    let counters = sim.counters();
    for resource in CHECK_RESOURCES {
        assert_eq!(counters.get("get", resource), 1, "{resource}: {counters:?}");
    }
    assert_eq!(counters.total, 4, "{counters:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_burst_shares_a_negative_answer_and_the_next_job_looks_again() {
    let sim = kubesim::Server::start(Config {
        seed: Some(12),
        kubescape: kubesim::KubescapeConfig {
            installed: false,
            ..kubesim::KubescapeConfig::default()
        },
        ..Config::default()
    })
    .await
    .expect("kubesim starts");
    let mut config =
        InstallCheckConfig::load(&vexxy_runtime::Env::empty()).expect("defaults are valid");
    config.auto_install = false;
    let check = InstallCheck::new(
        sim.client().await.expect("a kube client for kubesim"),
        sim.url(),
        config,
    );

    sim.reset_counters();
    let answers = futures::future::join_all((0..8).map(|_| check.ensure_ready())).await;
    for answer in answers {
        match answer {
            Err(StageError::Permanent { message, .. }) => {
                assert!(message.contains("not installed"), "{message}")
            }
            other => panic!("expected Kubescape absent, got {other:?}"),
        }
    }
    let gets = sim
        .counters()
        .get("get", "apiservices.apiregistration.k8s.io");
    assert_eq!(gets, 1, "one check for the burst: {:?}", sim.counters());

    // A negative answer is never cached: a later job asks again.
    check.ensure_ready().await.expect_err("still absent");
    assert_eq!(
        sim.counters()
            .get("get", "apiservices.apiregistration.k8s.io"),
        2,
        "{:?}",
        sim.counters()
    );
    sim.shutdown().await;
}
