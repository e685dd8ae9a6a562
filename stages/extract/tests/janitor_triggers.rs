//! The running janitor (not one sweep): it removes what an earlier process left once that is
//! older than the TTL, and a failed job's sandbox a TTL after the failure — with an hour-long
//! `VEXXY_JANITOR_INTERVAL`, so the fallback interval cannot be what removed them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use vexxy_extract::janitor::{self, JanitorConfig};
use vexxy_harness::NatsServer;

mod support;
use support::{SANDBOX_NS, client_with_sandbox_namespace};

/// The image of every sandbox here; its pod never needs to run.
const IMAGE: &str = "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000";

async fn create_sandbox(client: &kube::Client, job: &str) {
    support::create_sandbox(client, job, "target", IMAGE).await;
}

/// Polls until the sandbox of `job` is gone; false if it is still there after `bound`.
async fn gone_within(client: &kube::Client, job: &str, bound: Duration) -> bool {
    let api = Api::<Deployment>::namespaced(client.clone(), SANDBOX_NS);
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if api
            .get_opt(&format!("vexxy-{job}"))
            .await
            .expect("get")
            .is_none_or(|d| d.metadata.deletion_timestamp.is_some())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn leftovers_and_failed_jobs_are_swept_without_waiting_for_the_interval() {
    let sim = kubesim::Server::start(kubesim::Config {
        seed: Some(31),
        ..kubesim::Config::default()
    })
    .await
    .expect("kubesim starts");
    let client = client_with_sandbox_namespace(&sim).await;
    let nats = NatsServer::start().expect("nats-server starts");
    let nats_client = nats.client().await.expect("connect");
    let js = async_nats::jetstream::new(nats_client.clone());
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: vexxy_events::subjects::STATUS_BUCKET.into(),
        ..Default::default()
    })
    .await
    .expect("KV bucket");

    // Left by an earlier extract process: too young at this process's first sweep.
    create_sandbox(&client, "left-over").await;
    let config = JanitorConfig {
        namespace: SANDBOX_NS.into(),
        interval: Duration::from_secs(3600),
        ttl: Duration::from_secs(1),
    };
    let janitor = tokio::spawn(janitor::run(client.clone(), js.clone(), config));
    assert!(
        gone_within(&client, "left-over", Duration::from_secs(20)).await,
        "a sandbox from before the start is removed once older than the TTL"
    );

    // A job fails after this process started: its sandbox goes a TTL after the failure.
    create_sandbox(&client, "failed-job").await;
    nats_client
        .publish(vexxy_events::subjects::FAILED, "{}".into())
        .await
        .expect("publish");
    nats_client.flush().await.expect("flush");
    assert!(
        gone_within(&client, "failed-job", Duration::from_secs(20)).await,
        "a failed job's sandbox is removed a TTL after the failure"
    );
    let lists = sim.counters().get("list", "deployments.apps");
    assert!(
        (2..=4).contains(&lists),
        "a few sweeps, not a periodic LIST: {:?}",
        sim.counters()
    );
    janitor.abort();
    sim.shutdown().await;
}
