//! deploy against an in-process kubesim: the Deployment it makes (hardening, pinned image, values
//! kept literal, labels), idempotency on redelivery, job-id conflicts, the egress policy, the
//! sandbox namespace, and API faults.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::PostParams;
use kubesim::{Config, FaultRule, Faults, KubescapeConfig};
use vexxy_deploy::{Deploy, DeployConfig};
use vexxy_events::pipeline::SandboxRef;
use vexxy_events::request::parse_request;
use vexxy_events::{FailureReason, ValidatedRequest, ValidationPolicy};
use vexxy_runtime::StageError;

const NAMESPACE: &str = "vexxy-sandbox";

async fn kubesim() -> kubesim::Handle {
    kubesim::Server::start(Config {
        seed: Some(11),
        kubescape: KubescapeConfig {
            installed: false,
            ..KubescapeConfig::default()
        },
        ..Config::default()
    })
    .await
    .expect("kubesim starts")
}

async fn create_namespace(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

fn defaults() -> DeployConfig {
    DeployConfig::load(&vexxy_runtime::Env::empty()).expect("defaults are valid")
}

/// A request as a user sends it, through the real validation.
fn request(job_id: &str, digest_char: char) -> ValidatedRequest {
    let body = serde_json::json!({
        "job_id": job_id,
        "image_ref": "ghcr.io/acme/web:1.2",
        "image_digest": format!("sha256:{}", digest_char.to_string().repeat(64)),
        "config": {
            "analysis_duration": 120,
            "environment": {"PORT": "8080", "GREETING": "$(HOME) costs $5", "RAW": "$$(kept)"},
            "command": ["/bin/server"],
            "args": ["--listen=:$(PORT)", "--name", "web"],
            "ports": [8080, 9090]
        }
    });
    parse_request(
        body.to_string().as_bytes(),
        Some("msg-42"),
        &ValidationPolicy::default(),
    )
    .expect("a valid request")
}

async fn read_deployment(client: &kube::Client, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(name)
        .await
        .expect("deployment exists")
}

fn permanent(result: Result<SandboxRef, StageError>) -> (FailureReason, String, bool) {
    match result {
        Err(StageError::Permanent {
            reason,
            message,
            retryable,
        }) => (reason, message, retryable),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

fn transient(result: Result<SandboxRef, StageError>) -> (FailureReason, String) {
    match result {
        Err(StageError::Transient { reason, message }) => (reason, message),
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond() as u32)
        .expect("in range")
}

#[tokio::test]
async fn the_sandbox_is_hardened_pinned_and_carries_the_request_literally() {
    let sim = kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");
    create_namespace(&client).await;
    let deploy = Deploy::new(client.clone(), defaults());
    let req = request("job-hardened", 'a');
    let sandbox = deploy.ensure_sandbox(&req).await.expect("sandbox created");
    assert_eq!(sandbox.namespace, NAMESPACE);
    assert_eq!(sandbox.deployment, "vexxy-job-hardened");
    assert_eq!(sandbox.container, "target");

    let d = read_deployment(&client, "vexxy-job-hardened").await;
    assert_eq!(
        sandbox.created_at,
        to_chrono(d.metadata.creation_timestamp.as_ref().expect("stamped"))
    );
    let labels = d.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("vexxy")
    );
    assert_eq!(
        labels.get("vexxy.io/job-id").map(String::as_str),
        Some("job-hardened")
    );
    let annotations = d.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("vexxy.io/image-ref").map(String::as_str),
        Some("ghcr.io/acme/web:1.2")
    );
    assert_eq!(
        annotations.get("vexxy.io/image-digest"),
        Some(&req.image_digest)
    );
    assert_eq!(
        annotations
            .get("vexxy.io/request-msg-id")
            .map(String::as_str),
        Some("msg-42")
    );

    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let template_meta = spec.template.metadata.expect("template metadata");
    let pod_labels = template_meta.labels.unwrap_or_default();
    assert_eq!(
        pod_labels
            .get("kubescape.io/max-sniffing-time")
            .map(String::as_str),
        Some("120s")
    );
    assert_eq!(
        pod_labels.get("vexxy.io/job-id").map(String::as_str),
        Some("job-hardened")
    );
    assert_eq!(
        pod_labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("vexxy")
    );

    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert!(
        pod.termination_grace_period_seconds
            .is_some_and(|s| s <= 10)
    );
    assert_eq!(
        pod.security_context
            .and_then(|s| s.seccomp_profile)
            .map(|p| p.type_)
            .as_deref(),
        Some("RuntimeDefault")
    );
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "target");
    assert_eq!(
        c.image.as_deref(),
        Some(format!("ghcr.io/acme/web@sha256:{}", "a".repeat(64)).as_str())
    );
    let sc = c
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    assert_eq!(
        sc.run_as_non_root, None,
        "not forced by default: many images run as root"
    );
    let resources = c.resources.clone().expect("resources");
    let limits = resources.limits.unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();
    for (key, want) in [
        ("cpu", "2000m"),
        ("memory", "4Gi"),
        ("ephemeral-storage", "2Gi"),
    ] {
        assert_eq!(
            limits.get(key).map(|q| q.0.as_str()),
            Some(want),
            "limit {key}"
        );
    }
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("1000m"));
    assert_eq!(requests.get("memory").map(|q| q.0.as_str()), Some("2Gi"));

    // Kubernetes would expand $(VAR): every value is escaped so the container sees it as written.
    assert_eq!(c.command, Some(vec!["/bin/server".to_string()]));
    assert_eq!(
        c.args,
        Some(vec![
            "--listen=:$$(PORT)".to_string(),
            "--name".to_string(),
            "web".to_string()
        ])
    );
    let env: BTreeMap<String, String> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert_eq!(env["PORT"], "8080");
    assert_eq!(env["GREETING"], "$$(HOME) costs $5");
    assert_eq!(env["RAW"], "$$$(kept)");
    let ports: Vec<i32> = c
        .ports
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, vec![8080, 9090]);

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    assert!(
        policies
            .get_opt("vexxy-job-hardened")
            .await
            .expect("get")
            .is_none(),
        "egress policy is opt-in"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_redelivery_finds_its_deployment_and_keeps_the_window() {
    let sim = kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");
    create_namespace(&client).await;
    let deploy = Deploy::new(client.clone(), defaults());
    let req = request("job-redelivered", 'b');
    let first = deploy.ensure_sandbox(&req).await.expect("created");
    // Timestamps have whole seconds: let the clock move past the creation second, so a
    // redelivery that made a new window would show a later created_at.
    let later = first.created_at + chrono::Duration::seconds(1);
    for _ in 0..40 {
        if chrono::Utc::now() > later {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(chrono::Utc::now() > later, "the clock moved on");
    sim.reset_counters();
    let second = deploy
        .ensure_sandbox(&req)
        .await
        .expect("redelivery goes on");
    assert_eq!(first, second, "same sandbox, same created_at");
    let counters = sim.counters();
    assert_eq!(
        counters.get("create", "deployments.apps"),
        1,
        "{counters:?}"
    );
    assert_eq!(counters.get("get", "deployments.apps"), 1, "{counters:?}");
    let all = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(all.items.len(), 1, "never double-deployed");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_deployment_of_another_job_or_image_is_a_job_id_conflict() {
    let sim = kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");
    create_namespace(&client).await;
    let deploy = Deploy::new(client.clone(), defaults());

    // Same job id, other image: the job id was reused for a different request.
    deploy
        .ensure_sandbox(&request("job-reused", 'c'))
        .await
        .expect("created");
    let (reason, message, retryable) =
        permanent(deploy.ensure_sandbox(&request("job-reused", 'd')).await);
    assert_eq!(reason, FailureReason::JobIdConflict);
    assert!(!retryable);
    assert!(
        message.contains("new job_id")
            && message.contains("kubectl -n vexxy-sandbox delete deployment vexxy-job-reused"),
        "{message}"
    );

    // A Deployment under the name that some other job (or person) owns.
    let mut foreign = vexxy_deploy::manifest::deployment(&request("job-taken", 'e'), &defaults());
    foreign
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("vexxy.io/job-id".into(), "someone-else".into());
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign deployment");
    let (reason, message, _) = permanent(deploy.ensure_sandbox(&request("job-taken", 'e')).await);
    assert_eq!(reason, FailureReason::JobIdConflict);
    assert!(message.contains("\"someone-else\""), "{message}");
    sim.shutdown().await;
}

#[tokio::test]
async fn deny_egress_adds_a_policy_for_the_job_pod() {
    let sim = kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");
    create_namespace(&client).await;
    let mut config = defaults();
    config.deny_egress = true;
    let deploy = Deploy::new(client.clone(), config);
    let req = request("job-egress", 'f');
    deploy.ensure_sandbox(&req).await.expect("created");
    deploy
        .ensure_sandbox(&req)
        .await
        .expect("redelivery tolerates the existing policy");

    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), NAMESPACE)
        .get("vexxy-job-egress")
        .await
        .expect("policy exists");
    let spec = policy.spec.expect("spec");
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
    assert_eq!(
        spec.egress,
        Some(vec![]),
        "no egress rule: everything denied"
    );
    let selector = spec
        .pod_selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert_eq!(
        selector.get("vexxy.io/job-id").map(String::as_str),
        Some("job-egress")
    );
    let pod_labels = read_deployment(&client, "vexxy-job-egress")
        .await
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the policy selects the sandbox pod"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_missing_namespace_fails_or_is_created_with_pod_security_labels() {
    let sim = kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");

    let deploy = Deploy::new(client.clone(), defaults());
    let (reason, message, retryable) =
        permanent(deploy.ensure_sandbox(&request("job-nons", '1')).await);
    assert_eq!(reason, FailureReason::KubernetesUnavailable);
    assert!(retryable);
    assert!(
        message.contains("vexxy-sandbox")
            && message.contains("VEXXY_CREATE_SANDBOX_NAMESPACE=true"),
        "{message}"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces.get_opt(NAMESPACE).await.expect("get").is_none(),
        "not created unless allowed"
    );

    let mut config = defaults();
    config.create_namespace = true;
    config.deny_egress = true;
    let deploy = Deploy::new(client.clone(), config);
    deploy
        .ensure_sandbox(&request("job-nons", '1'))
        .await
        .expect("namespace created, then the sandbox");
    let ns = namespaces.get(NAMESPACE).await.expect("namespace exists");
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("baseline")
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/warn")
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/audit")
            .map(String::as_str),
        Some("restricted")
    );
    read_deployment(&client, "vexxy-job-nons").await;
    sim.shutdown().await;
}

fn fail(verb: &str, resource: &str, status: u16, max: Option<u64>) -> Faults {
    Faults {
        rules: vec![FaultRule {
            verb: verb.into(),
            resource: resource.into(),
            status,
            rate: 1.0,
            max,
        }],
        retry_after_seconds: 1,
        ..Faults::default()
    }
}

#[tokio::test]
async fn api_faults_are_transient_and_never_double_deploy() {
    let sim = kubesim().await;
    let client = sim.client().await.expect("a kube client for kubesim");
    create_namespace(&client).await;
    let deploy = Deploy::new(client.clone(), defaults());
    let req = request("job-faults", '9');

    sim.set_faults(fail("create", "deployments.apps", 500, None));
    let (reason, message) = transient(deploy.ensure_sandbox(&req).await);
    assert_eq!(reason, FailureReason::KubernetesUnavailable);
    assert!(message.contains("500"), "{message}");

    // A persistent 429, with kube's own retry layer off so the classification is visible (the
    // production client retries 429 with backoff first).
    let mut no_retry = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    no_retry.default_retry = false;
    let no_retry = Deploy::new(
        kube::Client::try_from(no_retry).expect("client"),
        defaults(),
    );
    sim.set_faults(fail("create", "deployments.apps", 429, None));
    let (reason, message) = transient(no_retry.ensure_sandbox(&req).await);
    assert_eq!(reason, FailureReason::KubernetesUnavailable);
    assert!(message.contains("429"), "{message}");

    // The create went through but its answer was lost (the GET after the 409 fails): still
    // transient, and the next delivery adopts the Deployment instead of making another.
    sim.set_faults(Faults::default());
    let first = deploy.ensure_sandbox(&req).await.expect("created");
    sim.set_faults(fail("get", "deployments.apps", 500, None));
    let (reason, _) = transient(deploy.ensure_sandbox(&req).await);
    assert_eq!(reason, FailureReason::KubernetesUnavailable);
    sim.set_faults(Faults::default());
    assert_eq!(deploy.ensure_sandbox(&req).await.expect("adopted"), first);
    let all = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(all.items.len(), 1);
    sim.shutdown().await;
}
