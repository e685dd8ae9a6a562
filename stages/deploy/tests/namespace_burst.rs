//! With `VEXXY_CREATE_SANDBOX_NAMESPACE=true`, a burst of jobs sends one namespace POST: at the
//! first job of the process, and again only once when the namespace disappears later.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kubesim::{Config, KubescapeConfig};
use vexxy_deploy::{Deploy, DeployConfig};
use vexxy_events::request::parse_request;
use vexxy_events::{ValidatedRequest, ValidationPolicy};

const NAMESPACE: &str = "vexxy-sandbox";

async fn kubesim() -> kubesim::Handle {
    kubesim::Server::start(Config {
        seed: Some(21),
        kubescape: KubescapeConfig {
            installed: false,
            ..KubescapeConfig::default()
        },
        ..Config::default()
    })
    .await
    .expect("kubesim starts")
}

fn request(job_id: &str) -> ValidatedRequest {
    let body = serde_json::json!({
        "job_id": job_id,
        "image_ref": "ghcr.io/acme/web:1.2",
        "image_digest": format!("sha256:{}", "a".repeat(64)),
        "config": {"analysis_duration": 60}
    });
    parse_request(
        body.to_string().as_bytes(),
        None,
        &ValidationPolicy::default(),
    )
    .expect("a valid request")
}

async fn burst(deploy: &Deploy, prefix: &str, jobs: usize) {
    let requests: Vec<ValidatedRequest> = (0..jobs)
        .map(|i| request(&format!("{prefix}-{i}")))
        .collect();
    let results =
        futures::future::join_all(requests.iter().map(|r| deploy.ensure_sandbox(r))).await;
    for result in results {
        result.expect("sandbox created");
    }
}

#[tokio::test]
async fn a_burst_of_jobs_creates_the_namespace_once() {
    let sim = kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");
    let mut config = DeployConfig::load(&vexxy_runtime::Env::empty()).expect("defaults are valid");
    config.create_namespace = true;
    let deploy = Deploy::new(client.clone(), config);

    sim.reset_counters();
    burst(&deploy, "first", 16).await;
    let counters = sim.counters();
    assert_eq!(counters.get("create", "namespaces"), 1, "{counters:?}");
    assert_eq!(
        counters.get("create", "deployments.apps"),
        16,
        "no Deployment POST failed on a missing namespace: {counters:?}"
    );

    // Later jobs find the namespace made sure of: no namespace request at all.
    sim.reset_counters();
    burst(&deploy, "second", 4).await;
    assert_eq!(sim.counters().get("create", "namespaces"), 0);

    // Someone deletes the namespace: the next burst re-creates it once.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(NAMESPACE, &Default::default())
        .await
        .expect("namespace deleted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while namespaces.get_opt(NAMESPACE).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace not gone in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.reset_counters();
    burst(&deploy, "third", 8).await;
    let counters = sim.counters();
    assert_eq!(counters.get("create", "namespaces"), 1, "{counters:?}");
    assert!(
        namespaces.get_opt(NAMESPACE).await.expect("get").is_some(),
        "namespace re-created"
    );
    sim.shutdown().await;
}
