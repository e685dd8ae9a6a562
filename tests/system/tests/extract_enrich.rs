//! extract and enrich in-process against an in-process kubesim and a real S3 server (s3s-fs):
//! evidence saved and the sandbox removed (idempotently), schema-valid OpenVEX for both kubevuln
//! generations, zero-vulnerability images, the 413-rejected VEX of a huge image, partial
//! evidence without a VEX, and the janitor.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use vexxy_enrich::{Enrich, EnrichConfig};
use vexxy_events::pipeline::{Observation, SandboxRef};
use vexxy_events::request::{RunConfig, ValidatedRequest};
use vexxy_events::{FailureReason, JobState, JobStatus, PipelineTicket, Stage};
use vexxy_extract::janitor::{JanitorConfig, sweep};
use vexxy_extract::{Extract, ExtractConfig};
use vexxy_harness::{NatsServer, S3Server};
use vexxy_runtime::config::Secret;
use vexxy_runtime::{Outcome, StageError, Store};

const SANDBOX_NS: &str = "vexxy-sandbox";
const KS_NS: &str = "kubescape";
const DIGEST: &str = "sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae";
const CONTAINER: &str = "target";

struct Env {
    sim: kubesim::Handle,
    client: Client,
    _s3: S3Server,
    store: Store,
}

async fn env() -> Result<Env> {
    let sim = kubesim::Server::start(kubesim::Config {
        seed: Some(11),
        ..kubesim::Config::default()
    })
    .await
    .context("start kubesim")?;
    let client = Client::try_from(kube::Config::new(sim.url().parse()?)).context("kube client")?;
    for ns in [SANDBOX_NS, KS_NS] {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        match Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context("create namespace"),
        }
    }
    let s3 = S3Server::start().context("start s3s-fs")?;
    let options: Vec<(String, Secret)> = s3
        .aws_env()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Secret::new(v)))
        .collect();
    let store = Store::open(&format!("s3://{}", s3.bucket()), &options).context("open store")?;
    Ok(Env {
        sim,
        client,
        _s3: s3,
        store,
    })
}

fn slug(job: &str) -> String {
    format!("replicaset-vexxy-{job}-7c5ddbdf54-{CONTAINER}-1a2b-3c4d")
}

fn ticket(job: &str, repository: &str, partial: bool) -> PipelineTicket {
    let now = Utc::now();
    PipelineTicket {
        request: ValidatedRequest {
            job_id: job.into(),
            image_ref: repository.into(),
            image_digest: DIGEST.into(),
            repository: repository.into(),
            registry: repository.split('/').next().unwrap().into(),
            tag: None,
            request_msg_id: None,
            analysis_duration_seconds: 60,
            config: RunConfig::default(),
            labels: [("team".to_string(), "payments".to_string())].into(),
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
            instance_slug: slug(job),
            instance_id: format!(
                "apiVersion-apps/v1/namespace-{SANDBOX_NS}/kind-ReplicaSet/name-vexxy-{job}-7c5ddbdf54/containerName-{CONTAINER}"
            ),
            learning_status: if partial { "ready" } else { "completed" }.into(),
            learning_completion: if partial { "partial" } else { "complete" }.into(),
            window_start: now - chrono::Duration::seconds(60),
            window_end: now,
            container_restarts: 0,
            partial,
        }),
        evidence: None,
    }
}

async fn sandbox(env: &Env, job: &str) -> Result<()> {
    let name = format!("vexxy-{job}");
    let labels = json!({"app.kubernetes.io/managed-by": "vexxy", "vexxy.io/job-id": job});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": SANDBOX_NS, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"vexxy.io/job-id": job}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": CONTAINER, "image": format!("docker.io/library/nginx@{DIGEST}")}]}}}
    }))?;
    Api::<Deployment>::namespaced(env.client.clone(), SANDBOX_NS)
        .create(&PostParams::default(), &deployment)
        .await?;
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": SANDBOX_NS, "labels": labels},
        "spec": {"podSelector": {"matchLabels": {"vexxy.io/job-id": job}}, "policyTypes": ["Egress"]}
    }))?;
    Api::<NetworkPolicy>::namespaced(env.client.clone(), SANDBOX_NS)
        .create(&PostParams::default(), &policy)
        .await?;
    Ok(())
}

/// (CVE, package, loaded?, fixed version)
type M = (&'static str, &'static str, bool, Option<&'static str>);

fn purl(package: &str) -> String {
    format!("pkg:deb/debian/{package}@1.0?arch=amd64&distro=debian-12")
}

fn url(cve: &str) -> String {
    format!("https://security-tracker.debian.org/tracker/{cve}")
}

fn meta(kind: &str, name: &str, ns: &str) -> Value {
    json!({"apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1", "kind": kind,
           "metadata": {"name": name, "namespace": ns,
                        "annotations": {"kubescape.io/image-tag": format!("docker.io/library/nginx@{DIGEST}"),
                                        "kubescape.io/image-id": format!("docker.io/library/nginx@{DIGEST}")}}})
}

/// `swapped`: v0.3.159 (vulnerability `@id` = CVE, `name` = URL, version 0, re-appended duplicates).
fn vex(job: &str, matches: &[M], swapped: bool, filler: usize) -> Value {
    let product = format!("pkg:oci/nginx@{DIGEST}?repository_url=docker.io%2Flibrary");
    let mut statements: Vec<Value> = matches
        .iter()
        .map(|(cve, pkg, loaded, _)| {
            let vulnerability = if swapped { json!({"@id": cve, "name": url(cve)}) } else { json!({"@id": url(cve), "name": cve}) };
            let mut s = json!({"vulnerability": vulnerability,
                               "products": [{"@id": product, "subcomponents": [{"@id": purl(pkg)}]}]});
            if *loaded {
                s["status"] = json!("affected");
                s["impact_statement"] = json!("Vulnerable component is loaded into the memory");
            } else {
                s["status"] = json!("not_affected");
                s["justification"] = json!("vulnerable_code_not_present");
                s["impact_statement"] = json!("Vulnerable component is not loaded into the memory");
            }
            s
        })
        .collect();
    if swapped {
        // updateVEX appended the other mapping for every match, never promoting it.
        for (cve, pkg, _, _) in matches {
            statements.push(json!({"vulnerability": {"@id": url(cve), "name": cve},
                                   "products": [{"@id": product, "subcomponents": [{"@id": purl(pkg)}]}],
                                   "status": "not_affected", "justification": "vulnerable_code_not_present"}));
        }
    }
    for i in 0..filler {
        statements.push(json!({"vulnerability": {"@id": url(&format!("CVE-2000-{i:05}")), "name": format!("CVE-2000-{i:05}"),
                                                 "description": "x".repeat(400)},
                               "products": [{"@id": product, "subcomponents": [{"@id": purl(&format!("filler{i}"))}]}],
                               "status": "not_affected", "justification": "vulnerable_code_not_present"}));
    }
    let mut object = meta("OpenVulnerabilityExchangeContainer", &slug(job), KS_NS);
    object["spec"] = json!({"@context": "https://openvex.dev/ns/v0.2.0", "@id": "9f2c1e0d", "author": "kubescape.io",
                            "timestamp": "2025-06-15T15:06:40Z", "last_updated": "2025-06-15T15:16:40Z",
                            "version": if swapped { 0 } else { 2 }, "tooling": "kubescape-vulnerability-analyzer",
                            "statements": statements});
    object
}

fn manifest(name: &str, matches: &[M]) -> Value {
    let matches: Vec<Value> = matches
        .iter()
        .map(|(cve, pkg, _, fix)| json!({
            "vulnerability": {"id": cve, "dataSource": url(cve), "severity": "High",
                              "fix": match fix { Some(v) => json!({"versions": [v], "state": "fixed"}), None => json!({"versions": [], "state": "not-fixed"}) }},
            "artifact": {"name": pkg, "version": "1.0", "type": "deb", "purl": purl(pkg)}}))
        .collect();
    let mut object = meta("VulnerabilityManifest", name, KS_NS);
    object["spec"] = json!({"metadata": {"withRelevancy": true, "tool": {"name": "grype", "version": "v0.92.2"},
                                         "report": {"createdAt": "2025-06-15T15:06:00Z"}},
                            "payload": {"matches": matches}});
    object
}

fn sbom(kind: &str, name: &str, packages: usize) -> Value {
    let artifacts: Vec<Value> = (0..packages)
        .map(|i| json!({"id": format!("id{i}"), "name": format!("p{i}"), "version": "1.0", "type": "deb",
                        "locations": [{"path": format!("/usr/lib/p{i}.so")}], "purl": format!("pkg:deb/debian/p{i}@1.0")}))
        .collect();
    let mut object = meta(kind, name, KS_NS);
    object["spec"] = json!({"metadata": {"tool": {"name": "syft", "version": "v1.18.1"}},
                            "syft": {"artifacts": artifacts, "artifactRelationships": [], "source": {"type": "image"},
                                     "distro": {"name": "debian"}, "descriptor": {"name": "syft"}, "schema": {"version": "16.0.20"}}});
    object
}

fn image_slug() -> String {
    vexxy_kubescape::names::image_slug(&format!("docker.io/library/nginx@{DIGEST}"), DIGEST)
}

/// Writes what kubevuln and node-agent would have written for `job`. Returns whether the VEX
/// write was accepted (kubesim rejects more than 500,000 bytes with 413, like the storage server).
fn kubescape_objects(
    env: &Env,
    job: &str,
    matches: &[M],
    vex_doc: Option<Value>,
    profile: (&str, &str),
) -> bool {
    let store = env.sim.store();
    // Boxed: kubesim's API error is large, and only a test failure reads it.
    let put = |plural: &str, ns: &str, obj: Value| {
        store
            .upsert(kubesim::resources::kubescape(plural), ns, obj)
            .map_err(Box::new)
    };
    let relevant: Vec<M> = matches.iter().copied().filter(|m| m.2).collect();
    put(
        "vulnerabilitymanifests",
        KS_NS,
        manifest(&slug(job), &relevant),
    )
    .unwrap();
    put(
        "vulnerabilitymanifests",
        KS_NS,
        manifest(&image_slug(), matches),
    )
    .unwrap();
    put(
        "sbomsyftfiltereds",
        KS_NS,
        sbom("SBOMSyftFiltered", &slug(job), 3),
    )
    .unwrap();
    put("sbomsyfts", KS_NS, sbom("SBOMSyft", &image_slug(), 12)).unwrap();
    let mut cp = meta("ContainerProfile", &slug(job), SANDBOX_NS);
    cp["metadata"]["annotations"]["kubescape.io/status"] = json!(profile.0);
    cp["metadata"]["annotations"]["kubescape.io/completion"] = json!(profile.1);
    cp["spec"] = json!({"execs": [{"path": "/usr/sbin/nginx"}], "opens": []});
    put("containerprofiles", SANDBOX_NS, cp).unwrap();
    let mut summary = meta(
        "VulnerabilityManifestSummary",
        &format!("deployment-vexxy-{job}-{CONTAINER}"),
        SANDBOX_NS,
    );
    summary["spec"] = json!({"severities": {"high": {"all": matches.len(), "relevant": relevant.len()}},
                             "vulnerabilitiesRef": {"all": {"name": image_slug(), "namespace": SANDBOX_NS},
                                                    "relevant": {"name": slug(job), "namespace": SANDBOX_NS}}});
    put("vulnerabilitymanifestsummaries", SANDBOX_NS, summary).unwrap();
    match vex_doc {
        Some(v) => match put("openvulnerabilityexchangecontainers", KS_NS, v) {
            Ok(_) => true,
            Err(e) => {
                assert_eq!(e.code, 413, "only the size cap may reject the VEX: {e:?}");
                false
            }
        },
        None => false,
    }
}

fn extract(env: &Env) -> Extract {
    Extract::new(env.client.clone(), ExtractConfig::default())
}

async fn sandbox_gone(env: &Env, job: &str) -> Result<bool> {
    let name = format!("vexxy-{job}");
    let d = Api::<Deployment>::namespaced(env.client.clone(), SANDBOX_NS)
        .get_opt(&name)
        .await?;
    let p = Api::<NetworkPolicy>::namespaced(env.client.clone(), SANDBOX_NS)
        .get_opt(&name)
        .await?;
    Ok(d.is_none() && p.is_none())
}

fn openvex_validator() -> jsonschema::Validator {
    let path = vexxy_harness::workspace_root().join("../shared/reference/openvex_json_schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

async fn json_at(store: &Store, key: &str) -> Result<Value> {
    Ok(serde_json::from_slice(&store.get_bytes(key).await?)?)
}

/// extract then enrich; returns the completed event and the VEX document (if written).
async fn pipeline(
    env: &Env,
    ticket: PipelineTicket,
) -> Result<(vexxy_events::AnalysisCompleted, Option<Value>)> {
    let job = ticket.request.job_id.clone();
    let next = match extract(env).run(&env.store, ticket).await? {
        Outcome::Next(t) => t,
        other => anyhow::bail!("extract must hand on the ticket, got {other:?}"),
    };
    let evidence = next.evidence.clone().context("extract fills evidence")?;
    assert!(
        evidence
            .vex
            .iter()
            .chain(evidence.filtered_sbom.iter())
            .all(|k| k.starts_with(&format!("analyses/{job}/evidence/")))
    );
    let completed = match Enrich::new(EnrichConfig {
        issuer: vexxy_enrich::Issuer::new(
            "ACME Product Security",
            "https://security.acme.example/vex",
        )
        .unwrap(),
    })
    .run(&env.store, next)
    .await?
    {
        Outcome::Completed(c) => *c,
        other => anyhow::bail!("enrich must complete, got {other:?}"),
    };
    let vex = match &completed.artifacts.openvex {
        Some(url) => {
            assert!(url.ends_with(&format!("analyses/{job}/vex.openvex.json")));
            let vex = json_at(&env.store, &vexxy_enrich::vex_key(&job)).await?;
            let errors: Vec<String> = openvex_validator()
                .iter_errors(&vex)
                .take(10)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "schema violations: {errors:?}");
            assert_eq!(
                vex["statements"].as_array().unwrap().len() as u64,
                completed.summary.total_cves_analyzed
            );
            Some(vex)
        }
        None => None,
    };
    let s = &completed.summary;
    assert_eq!(
        s.total_cves_analyzed,
        s.affected + s.not_affected + s.fixed + s.under_investigation
    );
    let summary = json_at(&env.store, &vexxy_enrich::summary_key(&job)).await?;
    assert_eq!(
        summary["counts"]["total_cves_analyzed"],
        s.total_cves_analyzed
    );
    Ok((completed, vex))
}

const SAMPLE: &[M] = &[
    ("CVE-2024-0001", "openssl", true, Some("3.0.15-1")),
    ("CVE-2024-0002", "libxml2", false, None),
    ("CVE-2024-0003", "zlib1g", true, None),
];

#[tokio::test]
async fn main_shape_end_to_end_and_extract_is_idempotent() -> Result<()> {
    let env = env().await?;
    sandbox(&env, "job-main").await?;
    assert!(kubescape_objects(
        &env,
        "job-main",
        SAMPLE,
        Some(vex("job-main", SAMPLE, false, 0)),
        ("completed", "complete")
    ));
    let t = ticket("job-main", "docker.io/library/nginx", false);

    let first = extract(&env).run(&env.store, t.clone()).await?;
    assert!(
        sandbox_gone(&env, "job-main").await?,
        "extract deletes the Deployment and NetworkPolicy"
    );
    // A redelivery finds the sandbox gone and the evidence already there: same result.
    let second = extract(&env).run(&env.store, t.clone()).await?;
    let (Outcome::Next(a), Outcome::Next(b)) = (first, second) else {
        anyhow::bail!("extract hands on")
    };
    assert_eq!(a.evidence, b.evidence);
    let refs = a.evidence.unwrap();
    assert!(refs.vex.is_some() && refs.filtered_sbom.is_some() && refs.container_profile.is_some());
    assert!(refs.vulnerability_summary.is_some() && refs.vulnerability_manifest.is_some());
    assert!(
        refs.other.vulnerability_manifest_image.is_some()
            && refs.other.sbom_image.is_some()
            && refs.other.more.is_empty(),
        "image manifest and image SBOM: {:?}",
        refs.other
    );
    let saved = json_at(&env.store, refs.vex.as_ref().unwrap()).await?;
    assert_eq!(
        saved["spec"]["statements"].as_array().unwrap().len(),
        3,
        "the full spec was fetched"
    );

    let (completed, vex) = pipeline(&env, t).await?;
    let vex = vex.unwrap();
    assert_eq!(
        (completed.summary.affected, completed.summary.not_affected),
        (2, 1)
    );
    assert_eq!(completed.summary.total_components_in_image, Some(12));
    assert_eq!(completed.summary.relevant_components, 3);
    assert_eq!(completed.evidence.kubescape_shape, "main");
    assert_eq!(
        vex["statements"][0]["action_statement"],
        "Upgrade openssl to 3.0.15-1 or later."
    );
    assert_eq!(
        completed.labels.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(completed.timings.last().unwrap().stage, Stage::Enrich);
    let written_sbom = json_at(&env.store, &vexxy_enrich::sbom_key("job-main")).await?;
    assert_eq!(written_sbom["artifacts"].as_array().unwrap().len(), 3);
    Ok(())
}

#[tokio::test]
async fn v0_3_159_shape_with_duplicates_becomes_valid_deduplicated_openvex() -> Result<()> {
    let env = env().await?;
    sandbox(&env, "job-old").await?;
    assert!(kubescape_objects(
        &env,
        "job-old",
        SAMPLE,
        Some(vex("job-old", SAMPLE, true, 0)),
        ("completed", "complete")
    ));
    let (completed, vex) = pipeline(&env, ticket("job-old", "ghcr.io/acme/web", false)).await?;
    let vex = vex.unwrap();
    assert_eq!(
        completed.summary.total_cves_analyzed, 3,
        "6 Kubescape statements, 3 after de-duplication"
    );
    assert_eq!(
        completed.summary.affected, 2,
        "a stale appended not_affected never hides a loaded package"
    );
    assert_eq!(completed.evidence.kubescape_shape, "v0.3.159");
    assert_eq!(
        vex["statements"][0]["vulnerability"]["name"],
        "CVE-2024-0001"
    );
    assert_eq!(
        vex["statements"][0]["products"][0]["@id"],
        format!(
            "pkg:oci/web@sha256%3A{}?repository_url=ghcr.io/acme/web",
            &DIGEST[7..]
        )
    );
    Ok(())
}

#[tokio::test]
async fn an_image_without_vulnerabilities_completes_with_zero_counts_and_no_vex() -> Result<()> {
    let env = env().await?;
    sandbox(&env, "job-zero").await?;
    kubescape_objects(&env, "job-zero", &[], None, ("completed", "complete"));
    let (completed, vex) =
        pipeline(&env, ticket("job-zero", "docker.io/library/busybox", false)).await?;
    assert!(vex.is_none());
    assert!(completed.artifacts.openvex.is_none());
    assert_eq!(completed.summary.total_cves_analyzed, 0);
    assert!(!env.store.exists(&vexxy_enrich::vex_key("job-zero")).await?);
    assert!(sandbox_gone(&env, "job-zero").await?);
    Ok(())
}

#[tokio::test]
async fn a_vex_rejected_by_the_size_cap_fails_with_no_vex_produced() -> Result<()> {
    let env = env().await?;
    sandbox(&env, "job-huge").await?;
    let accepted = kubescape_objects(
        &env,
        "job-huge",
        SAMPLE,
        Some(vex("job-huge", SAMPLE, false, 1_500)),
        ("completed", "complete"),
    );
    assert!(!accepted, "kubesim must reject a VEX over 500,000 bytes");
    let err = extract(&env)
        .run(
            &env.store,
            ticket("job-huge", "docker.io/library/nginx", false),
        )
        .await
        .unwrap_err();
    let StageError::Permanent {
        reason,
        message,
        retryable,
    } = err
    else {
        anyhow::bail!("must be permanent: {err:?}")
    };
    assert_eq!(reason, FailureReason::NoVexProduced);
    assert!(retryable);
    assert!(
        message.contains("storage.kindQueues.openvulnerabilityexchangecontainers.maxObjectSize"),
        "{message}"
    );
    assert!(message.contains("500,000"), "{message}");
    assert!(
        sandbox_gone(&env, "job-huge").await?,
        "a failed job does not leave its sandbox"
    );
    Ok(())
}

#[tokio::test]
async fn partial_evidence_without_a_vex_goes_on_and_never_claims_not_affected() -> Result<()> {
    let env = env().await?;
    sandbox(&env, "job-partial").await?;
    kubescape_objects(&env, "job-partial", SAMPLE, None, ("ready", "partial"));
    let (completed, vex) = pipeline(
        &env,
        ticket("job-partial", "registry.local:5000/team/api", true),
    )
    .await?;
    let vex = vex.unwrap();
    assert_eq!(completed.summary.not_affected, 0);
    assert_eq!(completed.summary.affected, 2);
    assert_eq!(completed.summary.under_investigation, 1);
    assert_eq!(
        completed.evidence.completeness,
        vexxy_events::completed::Completeness::Partial
    );
    assert!(
        vex["statements"][0]["products"][0]["@id"]
            .as_str()
            .unwrap()
            .ends_with("repository_url=registry.local:5000/team/api")
    );
    let summary = json_at(&env.store, &vexxy_enrich::summary_key("job-partial")).await?;
    assert_eq!(summary["confidence"], "low");
    Ok(())
}

#[tokio::test]
async fn partial_evidence_with_a_vex_turns_not_affected_into_under_investigation() -> Result<()> {
    let env = env().await?;
    sandbox(&env, "job-pvex").await?;
    kubescape_objects(
        &env,
        "job-pvex",
        SAMPLE,
        Some(vex("job-pvex", SAMPLE, false, 0)),
        ("ready", "partial"),
    );
    let (completed, vex) =
        pipeline(&env, ticket("job-pvex", "docker.io/library/nginx", true)).await?;
    let vex = vex.unwrap();
    assert_eq!(
        (
            completed.summary.affected,
            completed.summary.under_investigation,
            completed.summary.not_affected
        ),
        (2, 1, 0)
    );
    assert!(
        vex["statements"][1]["status_notes"]
            .as_str()
            .unwrap()
            .contains("did not complete")
    );
    Ok(())
}

#[tokio::test]
async fn janitor_deletes_orphaned_old_sandboxes_and_spares_live_ones() -> Result<()> {
    let env = env().await?;
    let nats = NatsServer::start()?;
    let js = async_nats::jetstream::new(nats.client().await?);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: vexxy_events::subjects::STATUS_BUCKET.into(),
            ..Default::default()
        })
        .await?;
    let status = |job: &str, state: JobState| JobStatus {
        job_id: job.into(),
        state,
        stage: Stage::Wait,
        image_ref: "nginx".into(),
        image_digest: DIGEST.into(),
        request_fingerprint: "f".into(),
        request_sequence: 1,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        error: None,
        result: None,
    };
    kv.put(
        "job-done",
        serde_json::to_vec(&status("job-done", JobState::Completed))?.into(),
    )
    .await?;
    kv.put(
        "job-live",
        serde_json::to_vec(&status("job-live", JobState::Running))?.into(),
    )
    .await?;
    for job in ["job-done", "job-live", "job-unknown"] {
        sandbox(&env, job).await?;
    }
    let config = JanitorConfig {
        namespace: SANDBOX_NS.into(),
        interval: Duration::from_secs(60),
        ttl: Duration::from_secs(600),
    };

    // Now: everything is younger than the TTL, nothing goes.
    let young = sweep(&env.client, &kv, &config, Utc::now()).await?;
    assert!(young.deleted.is_empty(), "{young:?}");
    assert_eq!(young.spared.len(), 3);

    // An hour later: the finished job's and the unknown job's sandboxes are orphans.
    let later = sweep(
        &env.client,
        &kv,
        &config,
        Utc::now() + chrono::Duration::hours(1),
    )
    .await?;
    let mut deleted = later.deleted.clone();
    deleted.sort();
    assert_eq!(
        deleted,
        vec![
            "vexxy-job-done".to_string(),
            "vexxy-job-unknown".to_string()
        ]
    );
    assert_eq!(later.spared, vec!["vexxy-job-live".to_string()]);
    assert!(sandbox_gone(&env, "job-done").await? && sandbox_gone(&env, "job-unknown").await?);
    assert!(!sandbox_gone(&env, "job-live").await?);
    Ok(())
}
