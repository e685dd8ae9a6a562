//! extract's second round: when the VulnerabilityManifestSummary names the image's unfiltered
//! manifest and SBOM after another image slug than the one the ticket implies (kubevuln recorded
//! the tag the pod reported, not the digest-pinned reference), extract reads them again by the
//! recorded name and saves those — never the objects that happen to sit under the implied slug.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};
use vexxy_events::PipelineTicket;
use vexxy_events::pipeline::{Observation, SandboxRef};
use vexxy_events::request::{RunConfig, ValidatedRequest};
use vexxy_extract::{Extract, ExtractConfig};
use vexxy_kubescape::names;
use vexxy_runtime::{Outcome, Store};

mod support;
use support::{SANDBOX_NS, client_with_sandbox_namespace};

const KS_NS: &str = "kubescape";
const REPOSITORY: &str = "docker.io/library/nginx";
const DIGEST: &str = "sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae";
const CONTAINER: &str = "target";
/// The tag the pod reported; kubevuln names the image's objects after it.
const RECORDED_IMAGE: &str = "docker.io/library/nginx:1.27.4";

fn instance_slug(job: &str) -> String {
    format!("replicaset-vexxy-{job}-7c5ddbdf54-{CONTAINER}-1a2b-3c4d")
}

/// The slug extract derives from the ticket alone (the digest-pinned reference).
fn implied_image_slug() -> String {
    names::image_slug(
        &names::normalize_image_reference(&format!("{REPOSITORY}@{DIGEST}")),
        DIGEST,
    )
}

fn recorded_image_slug() -> String {
    names::image_slug(RECORDED_IMAGE, DIGEST)
}

fn ticket(job: &str) -> PipelineTicket {
    let now = Utc::now();
    PipelineTicket {
        request: ValidatedRequest {
            job_id: job.into(),
            image_ref: REPOSITORY.into(),
            image_digest: DIGEST.into(),
            repository: REPOSITORY.into(),
            registry: "docker.io".into(),
            tag: None,
            request_msg_id: None,
            analysis_duration_seconds: 60,
            config: RunConfig::default(),
            labels: Default::default(),
        },
        timings: vec![],
        sandbox: Some(SandboxRef {
            namespace: SANDBOX_NS.into(),
            deployment: format!("vexxy-{job}"),
            container: CONTAINER.into(),
            created_at: now,
        }),
        observation: Some(Observation {
            pod: format!("vexxy-{job}-7c5ddbdf54-abcde"),
            replicaset: format!("vexxy-{job}-7c5ddbdf54"),
            instance_slug: instance_slug(job),
            instance_id: format!(
                "apiVersion-apps/v1/namespace-{SANDBOX_NS}/kind-ReplicaSet/name-vexxy-{job}-7c5ddbdf54/containerName-{CONTAINER}"
            ),
            learning_status: "completed".into(),
            learning_completion: "complete".into(),
            window_start: now - chrono::Duration::seconds(60),
            window_end: now,
            container_restarts: 0,
            partial: false,
        }),
        evidence: None,
    }
}

fn object(kind: &str, name: &str, ns: &str, spec: Value) -> Value {
    json!({"apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1", "kind": kind,
           "metadata": {"name": name, "namespace": ns,
                        "annotations": {"kubescape.io/image-tag": RECORDED_IMAGE,
                                        "kubescape.io/image-id": format!("{REPOSITORY}@{DIGEST}")}},
           "spec": spec})
}

fn manifest(name: &str, cves: &[&str]) -> Value {
    let matches: Vec<Value> = cves
        .iter()
        .map(|cve| json!({"vulnerability": {"id": cve, "severity": "High", "fix": {"versions": [], "state": "not-fixed"}},
                          "artifact": {"name": "openssl", "version": "3.0.0", "type": "deb",
                                       "purl": "pkg:deb/debian/openssl@3.0.0"}}))
        .collect();
    object(
        "VulnerabilityManifest",
        name,
        KS_NS,
        json!({"metadata": {"withRelevancy": false}, "payload": {"matches": matches}}),
    )
}

fn sbom(kind: &str, name: &str, packages: &[&str]) -> Value {
    let artifacts: Vec<Value> = packages
        .iter()
        .map(|p| json!({"id": p, "name": p, "version": "1.0", "type": "deb"}))
        .collect();
    object(kind, name, KS_NS, json!({"syft": {"artifacts": artifacts}}))
}

/// What Kubescape wrote for `job`, plus decoys under the implied image slug (an earlier scan of
/// the same digest by its pinned reference) that must not be taken for this image's objects.
fn kubescape_objects(sim: &kubesim::Handle, job: &str) {
    let store = sim.store();
    let put = |plural: &str, ns: &str, obj: Value| {
        store
            .upsert(kubesim::resources::kubescape(plural), ns, obj)
            .expect("object stored");
    };
    let slug = instance_slug(job);
    put(
        "vulnerabilitymanifests",
        KS_NS,
        manifest(&slug, &["CVE-2024-0001"]),
    );
    put(
        "vulnerabilitymanifests",
        KS_NS,
        manifest(&recorded_image_slug(), &["CVE-2024-0001", "CVE-2024-0002"]),
    );
    put(
        "vulnerabilitymanifests",
        KS_NS,
        manifest(&implied_image_slug(), &["CVE-1999-9999"]),
    );
    put(
        "sbomsyftfiltereds",
        KS_NS,
        sbom("SBOMSyftFiltered", &slug, &["openssl"]),
    );
    put(
        "sbomsyfts",
        KS_NS,
        sbom("SBOMSyft", &recorded_image_slug(), &["openssl", "zlib"]),
    );
    put(
        "sbomsyfts",
        KS_NS,
        sbom("SBOMSyft", &implied_image_slug(), &["decoy"]),
    );
    put(
        "containerprofiles",
        SANDBOX_NS,
        object(
            "ContainerProfile",
            &slug,
            SANDBOX_NS,
            json!({"execs": [{"path": "/usr/sbin/nginx"}]}),
        ),
    );
    put(
        "vulnerabilitymanifestsummaries",
        SANDBOX_NS,
        object(
            "VulnerabilityManifestSummary",
            &names::summary_name("deployment", &format!("vexxy-{job}"), CONTAINER),
            SANDBOX_NS,
            json!({"severities": {"high": {"all": 2, "relevant": 1}},
                   "vulnerabilitiesRef": {"all": {"name": recorded_image_slug(), "namespace": SANDBOX_NS},
                                          "relevant": {"name": slug, "namespace": SANDBOX_NS}}}),
        ),
    );
    let mut vex = object(
        "OpenVulnerabilityExchangeContainer",
        &slug,
        KS_NS,
        json!({"@context": "https://openvex.dev/ns/v0.2.0", "@id": "1", "author": "kubescape.io",
               "timestamp": "2025-06-15T15:06:40Z", "version": 1, "statements": []}),
    );
    vex["metadata"]["namespace"] = json!(KS_NS);
    put("openvulnerabilityexchangecontainers", KS_NS, vex);
}

async fn create_sandbox(client: &kube::Client, job: &str) {
    support::create_sandbox(client, job, CONTAINER, &format!("{REPOSITORY}@{DIGEST}")).await;
}

fn store_dir() -> std::path::PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vexxy-extract-reread-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("store directory");
    dir
}

async fn saved(store: &Store, key: &str) -> Value {
    let bytes = store.get_bytes(key).await.expect("evidence saved");
    serde_json::from_slice(&bytes).expect("evidence is JSON")
}

fn names_in(doc: &Value, array: &str, field: &str) -> Vec<String> {
    doc.pointer(array)
        .and_then(Value::as_array)
        .expect("array present")
        .iter()
        .map(|e| {
            e.pointer(field)
                .and_then(Value::as_str)
                .expect("field present")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn the_image_objects_are_read_again_by_the_slug_the_summary_records() {
    assert_ne!(
        implied_image_slug(),
        recorded_image_slug(),
        "the test needs two different slugs"
    );
    // The sandbox's pod never starts, so the Kubescape emulator writes nothing of its own over
    // the objects this test stores.
    let sim = kubesim::Server::start(kubesim::Config {
        seed: Some(41),
        timings: kubesim::Timings {
            pod_start_delay_ms: 3_600_000,
            ..kubesim::Timings::default()
        },
        ..kubesim::Config::default()
    })
    .await
    .expect("kubesim starts");
    let client = client_with_sandbox_namespace(&sim).await;
    let job = "reread";
    create_sandbox(&client, job).await;
    kubescape_objects(&sim, job);
    let dir = store_dir();
    let store = Store::open(&format!("file://{}", dir.display()), &[]).expect("file store");
    sim.reset_counters();

    let outcome = Extract::new(client.clone(), ExtractConfig::default())
        .run(&store, ticket(job))
        .await
        .expect("extract succeeds");

    let Outcome::Next(next) = outcome else {
        panic!("extract hands the job on to enrich");
    };
    let evidence = next.evidence.expect("evidence recorded");
    let manifest_key = evidence
        .other
        .vulnerability_manifest_image
        .as_ref()
        .expect("the image's manifest is saved");
    let sbom_key = evidence
        .other
        .sbom_image
        .as_ref()
        .expect("the image's SBOM is saved");
    let manifest = saved(&store, manifest_key).await;
    assert_eq!(
        manifest.pointer("/metadata/name").and_then(Value::as_str),
        Some(recorded_image_slug().as_str())
    );
    assert_eq!(
        names_in(&manifest, "/spec/payload/matches", "/vulnerability/id"),
        ["CVE-2024-0001", "CVE-2024-0002"]
    );
    let sbom = saved(&store, sbom_key).await;
    assert_eq!(
        sbom.pointer("/metadata/name").and_then(Value::as_str),
        Some(recorded_image_slug().as_str())
    );
    assert_eq!(
        names_in(&sbom, "/spec/syft/artifacts", "/name"),
        ["openssl", "zlib"]
    );

    // One GET by the implied slug (the first round) and one by the recorded slug, per kind.
    let counters = serde_json::to_value(sim.counters()).expect("counters");
    let gets = |resource: &str| {
        counters
            .pointer(&format!(
                "/requests/{resource}.spdx.softwarecomposition.kubescape.io/get"
            ))
            .and_then(Value::as_u64)
    };
    assert_eq!(
        gets("vulnerabilitymanifests"),
        Some(3),
        "instance, implied and recorded: {counters}"
    );
    assert_eq!(
        gets("sbomsyfts"),
        Some(2),
        "implied and recorded: {counters}"
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), SANDBOX_NS)
            .get_opt(&format!("vexxy-{job}"))
            .await
            .expect("get")
            .is_none(),
        "the sandbox is removed after the evidence is saved"
    );
    std::fs::remove_dir_all(&dir).ok();
}
