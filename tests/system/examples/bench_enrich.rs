//! `cargo xtask bench` helper: enrich of a 10,000-statement VEX + 5,000-artifact SBOM against a
//! raw serde_json parse + serialize of the same bytes. One measurement per process, so the peak
//! RSS (`VmHWM` of /proc/self/status) belongs to that measurement alone.
//!
//! * `bench_enrich prepare DIR`: writes the evidence extract would have saved (Kubernetes objects
//!   as JSON) into a `file://DIR/store` object store, and `DIR/ticket.json`.
//! * `bench_enrich raw DIR RUNS`: the same bytes, already in memory, parsed into
//!   `serde_json::Value` and serialized again, RUNS times.
//! * `bench_enrich enrich DIR RUNS`: `Enrich::run` on the ticket, the production path (reads the
//!   evidence from the store, validates, transforms, writes OpenVEX, CycloneDX, SBOM, summary).
//!
//! Prints `BENCH_RESULT {json}`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};
use vexxy_enrich::{Enrich, EnrichConfig};
use vexxy_events::pipeline::{EvidenceRefs, Observation, SandboxRef};
use vexxy_events::{PipelineTicket, RunConfig, ValidatedRequest};
use vexxy_runtime::{Outcome, Store};

const JOB: &str = "bench-enrich";
const DIGEST: &str = "sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae";
const SANDBOX_NS: &str = "vexxy-sandbox";
const KS_NS: &str = "kubescape";
const CONTAINER: &str = "app";
/// 2,000 vulnerable packages × 5 CVEs = 10,000 statements; every third package loaded.
const VULNERABLE_PACKAGES: usize = 2_000;
const CVES_PER_PACKAGE: usize = 5;
const SBOM_ARTIFACTS: usize = 5_000;

fn slug() -> String {
    format!("replicaset-vexxy-{JOB}-7c5ddbdf54-{CONTAINER}-1a2b-3c4d")
}

fn purl(i: usize) -> String {
    format!("pkg:deb/debian/package{i}@1.{i}.0-1?arch=amd64&distro=debian-12")
}

fn cve(package: usize, n: usize) -> String {
    format!("CVE-2024-{:05}", package * CVES_PER_PACKAGE + n)
}

fn meta(kind: &str, name: &str, ns: &str) -> Value {
    json!({"apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1", "kind": kind,
           "metadata": {"name": name, "namespace": ns,
                        "annotations": {"kubescape.io/image-tag": format!("docker.io/library/nginx@{DIGEST}"),
                                        "kubescape.io/image-id": format!("docker.io/library/nginx@{DIGEST}"),
                                        "kubescape.io/status": "completed", "kubescape.io/completion": "complete"}}})
}

fn loaded(package: usize) -> bool {
    package.is_multiple_of(3)
}

/// kubevuln `main` shape: vulnerability `@id` = URL, `name` = CVE.
fn vex() -> Value {
    let product = format!("pkg:oci/nginx@{DIGEST}?repository_url=docker.io%2Flibrary");
    let mut statements = Vec::with_capacity(VULNERABLE_PACKAGES * CVES_PER_PACKAGE);
    for p in 0..VULNERABLE_PACKAGES {
        for n in 0..CVES_PER_PACKAGE {
            let id = cve(p, n);
            let mut s = json!({"vulnerability": {"@id": format!("https://security-tracker.debian.org/tracker/{id}"), "name": id},
                               "products": [{"@id": product, "subcomponents": [{"@id": purl(p)}]}],
                               "timestamp": "2025-06-15T15:06:40Z"});
            if loaded(p) {
                s["status"] = json!("affected");
                s["impact_statement"] = json!("Vulnerable component is loaded into the memory");
                s["action_statement"] = json!("Upgrade the package");
            } else {
                s["status"] = json!("not_affected");
                s["justification"] = json!("vulnerable_code_not_present");
                s["impact_statement"] = json!("Vulnerable component is not loaded into the memory");
            }
            statements.push(s);
        }
    }
    let mut object = meta("OpenVulnerabilityExchangeContainer", &slug(), KS_NS);
    object["spec"] = json!({"@context": "https://openvex.dev/ns/v0.2.0", "@id": "9f2c1e0d", "author": "kubescape.io",
                            "timestamp": "2025-06-15T15:06:40Z", "last_updated": "2025-06-15T15:16:40Z",
                            "version": 2, "tooling": "kubescape-vulnerability-analyzer", "statements": statements});
    object
}

/// The relevancy-filtered manifest: the loaded packages' matches.
fn manifest() -> Value {
    let mut matches = Vec::new();
    for p in (0..VULNERABLE_PACKAGES).filter(|p| loaded(*p)) {
        for n in 0..CVES_PER_PACKAGE {
            let id = cve(p, n);
            matches.push(json!({
                "vulnerability": {"id": id, "dataSource": format!("https://security-tracker.debian.org/tracker/{id}"), "severity": "High",
                                  "fix": {"versions": [format!("1.{p}.1-1")], "state": "fixed"}},
                "artifact": {"name": format!("package{p}"), "version": format!("1.{p}.0-1"), "type": "deb", "purl": purl(p)}}));
        }
    }
    let mut object = meta("VulnerabilityManifest", &slug(), KS_NS);
    object["spec"] = json!({"metadata": {"withRelevancy": true, "tool": {"name": "grype", "version": "v0.92.2"},
                                         "report": {"createdAt": "2025-06-15T15:06:00Z"}},
                            "payload": {"matches": matches}});
    object
}

fn sbom() -> Value {
    let artifacts: Vec<Value> = (0..SBOM_ARTIFACTS)
        .map(|i| json!({"id": format!("{i:016x}"), "name": format!("package{i}"), "version": format!("1.{i}.0-1"), "type": "deb",
                        "foundBy": "dpkg-db-cataloger", "licenses": [{"value": "GPL-2.0-only", "spdxExpression": "GPL-2.0-only", "type": "declared"}],
                        "locations": [{"path": format!("/usr/lib/x86_64-linux-gnu/package{i}.so.1"), "layerID": format!("sha256:{:064x}", i)}],
                        "cpes": [{"cpe": format!("cpe:2.3:a:package{i}:package{i}:1.{i}.0-1:*:*:*:*:*:*:*"), "source": "syft-generated"}],
                        "purl": purl(i)}))
        .collect();
    let mut object = meta("SBOMSyftFiltered", &slug(), KS_NS);
    object["spec"] = json!({"metadata": {"tool": {"name": "syft", "version": "v1.18.1"}},
                            "syft": {"artifacts": artifacts, "artifactRelationships": [], "source": {"type": "image"},
                                     "distro": {"name": "debian", "version": "12"}, "descriptor": {"name": "syft", "version": "1.18.1"},
                                     "schema": {"version": "16.0.20"}}});
    object
}

fn profile() -> Value {
    let mut object = meta("ContainerProfile", &slug(), SANDBOX_NS);
    object["spec"] = json!({"execs": [{"path": "/usr/sbin/nginx"}], "opens": []});
    object
}

fn evidence_key(name: &str) -> String {
    format!("analyses/{JOB}/evidence/{name}.json")
}

const EVIDENCE: [&str; 4] = [
    "vex",
    "filtered_sbom",
    "container_profile",
    "vulnerability_manifest",
];

fn ticket() -> PipelineTicket {
    let now = Utc::now();
    PipelineTicket {
        request: ValidatedRequest {
            job_id: JOB.into(),
            image_ref: "docker.io/library/nginx".into(),
            image_digest: DIGEST.into(),
            repository: "docker.io/library/nginx".into(),
            registry: "docker.io".into(),
            tag: None,
            request_msg_id: None,
            analysis_duration_seconds: 300,
            config: RunConfig::default(),
            labels: Default::default(),
        },
        timings: vec![],
        sandbox: Some(SandboxRef {
            namespace: SANDBOX_NS.into(),
            deployment: format!("vexxy-{JOB}"),
            container: CONTAINER.into(),
            created_at: now,
        }),
        observation: Some(Observation {
            pod: format!("vexxy-{JOB}-7c5ddbdf54-abcde"),
            replicaset: format!("vexxy-{JOB}-7c5ddbdf54"),
            instance_slug: slug(),
            instance_id: format!(
                "apiVersion-apps/v1/namespace-{SANDBOX_NS}/kind-ReplicaSet/name-vexxy-{JOB}-7c5ddbdf54/containerName-{CONTAINER}"
            ),
            learning_status: "completed".into(),
            learning_completion: "complete".into(),
            window_start: now - chrono::Duration::seconds(300),
            window_end: now,
            container_restarts: 0,
            partial: false,
        }),
        evidence: Some(EvidenceRefs {
            vex: Some(evidence_key("vex")),
            filtered_sbom: Some(evidence_key("filtered_sbom")),
            container_profile: Some(evidence_key("container_profile")),
            vulnerability_summary: None,
            vulnerability_manifest: Some(evidence_key("vulnerability_manifest")),
            other: Default::default(),
        }),
    }
}

fn store(dir: &Path) -> Result<Store> {
    Ok(Store::open(
        &format!("file://{}", dir.join("store").display()),
        &[],
    )?)
}

/// Peak resident set size of this process so far, in bytes.
fn peak_rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kb * 1024)
}

async fn prepare(dir: &Path) -> Result<()> {
    let store = store(dir)?;
    let mut sizes = serde_json::Map::new();
    for (name, object) in [
        ("vex", vex()),
        ("filtered_sbom", sbom()),
        ("container_profile", profile()),
        ("vulnerability_manifest", manifest()),
    ] {
        let bytes = serde_json::to_vec(&object)?;
        sizes.insert(name.into(), json!(bytes.len()));
        store
            .put_bytes(&evidence_key(name), Bytes::from(bytes))
            .await?;
    }
    std::fs::write(dir.join("ticket.json"), serde_json::to_vec(&ticket())?)?;
    println!(
        "BENCH_RESULT {}",
        json!({"mode": "prepare", "bytes": sizes})
    );
    Ok(())
}

async fn measure(mode: &str, dir: &Path, runs: usize) -> Result<()> {
    let store = store(dir)?;
    let ticket: PipelineTicket = serde_json::from_slice(&std::fs::read(dir.join("ticket.json"))?)?;
    let mut input = Vec::new();
    for name in EVIDENCE {
        input.push(store.get_bytes(&evidence_key(name)).await?);
    }
    let input_bytes: usize = input.iter().map(|b| b.len()).sum();
    if mode == "enrich" {
        // Enrich reads the evidence itself; holding a copy here would inflate its peak RSS.
        input.clear();
        input.shrink_to_fit();
    }
    // Only the enrich measurement runs with the stage's process settings (`Enrich::new` fixes
    // glibc's mmap threshold, as in the vexxy-enrich binary); the floor keeps glibc's defaults.
    let enrich = (mode == "enrich").then(|| {
        Enrich::new(EnrichConfig {
            issuer: vexxy_enrich::Issuer::new(
                "ACME Product Security",
                "https://security.acme.example/vex",
            )
            .unwrap(),
        })
    });
    let mut samples = Vec::with_capacity(runs);
    let mut output_bytes = 0;
    for _ in 0..runs {
        let started = Instant::now();
        match mode {
            "raw" => {
                output_bytes = 0;
                for bytes in &input {
                    let value: Value = serde_json::from_slice(bytes)?;
                    output_bytes += std::hint::black_box(serde_json::to_vec(&value)?).len();
                }
            }
            "enrich" => match enrich
                .as_ref()
                .context("the enrich stage is built for the enrich mode")?
                .run(&store, ticket.clone())
                .await?
            {
                Outcome::Completed(completed) => {
                    anyhow::ensure!(
                        completed.summary.total_cves_analyzed
                            == (VULNERABLE_PACKAGES * CVES_PER_PACKAGE) as u64,
                        "enrich produced {} statements, expected {}",
                        completed.summary.total_cves_analyzed,
                        VULNERABLE_PACKAGES * CVES_PER_PACKAGE
                    );
                }
                other => bail!("enrich must complete, got {other:?}"),
            },
            other => bail!("unknown mode {other}; use prepare, raw or enrich"),
        }
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    if mode == "enrich" {
        for key in [
            vexxy_enrich::vex_key(JOB),
            vexxy_enrich::cyclonedx_key(JOB),
            vexxy_enrich::sbom_key(JOB),
            vexxy_enrich::summary_key(JOB),
        ] {
            output_bytes += store.get_bytes(&key).await.map(|b| b.len()).unwrap_or(0);
        }
    }
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    println!(
        "BENCH_RESULT {}",
        json!({"mode": mode, "runs_ms": samples, "median_ms": sorted[sorted.len() / 2], "min_ms": sorted[0],
               "input_bytes": input_bytes, "output_bytes": output_bytes, "peak_rss_bytes": peak_rss()?})
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(dir)) = (args.first(), args.get(1)) else {
        bail!("usage: bench_enrich prepare|raw|enrich DIR [RUNS]");
    };
    let dir = PathBuf::from(dir);
    let runs: usize = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(5);
    match mode.as_str() {
        "prepare" => prepare(&dir).await,
        mode => measure(mode, &dir, runs).await,
    }
}
