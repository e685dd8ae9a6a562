//! Golden outputs of `Enrich::run`, the production path (evidence read from a `file://` store,
//! documents written back to it), recorded from the implementation before enrich was rewritten to
//! parse evidence from bytes: any change in what enrich concludes or writes shows up here as a
//! JSON difference. Compared as JSON values (key order and whitespace may change, meaning may
//! not). The bench-sized document (10,000 statements, 5,000 artifacts) is compared through the
//! SHA-256 of its canonical JSON, too large to keep as a file.
//!
//! `VEXXY_BLESS_GOLDEN=1 cargo test -p vexxy-enrich --test golden` rewrites the files and then
//! fails, so a blessing run can never be mistaken for a passing one.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vexxy_enrich::{Enrich, EnrichConfig};
use vexxy_events::PipelineTicket;
use vexxy_events::pipeline::{EvidenceRefs, Observation, SandboxRef};
use vexxy_runtime::{Outcome, StageError, Store};

const DIGEST: &str = "sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae";
const SLUG: &str = "replicaset-vexxy-golden-7c5ddbdf54-app-1a2b-3c4d";
const CVES_PER_PACKAGE: usize = 5;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var("VEXXY_BLESS_GOLDEN").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------------
// Evidence: the bench's generator (tests/system/examples/bench_enrich.rs), sized by a parameter.

fn purl(i: usize) -> String {
    format!("pkg:deb/debian/package{i}@1.{i}.0-1?arch=amd64&distro=debian-12")
}

fn cve(package: usize, n: usize) -> String {
    format!("CVE-2024-{:05}", package * CVES_PER_PACKAGE + n)
}

fn loaded(package: usize) -> bool {
    package.is_multiple_of(3)
}

fn meta(kind: &str, name: &str, ns: &str) -> Value {
    json!({"apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1", "kind": kind,
           "metadata": {"name": name, "namespace": ns,
                        "annotations": {"kubescape.io/image-tag": format!("docker.io/library/nginx@{DIGEST}"),
                                        "kubescape.io/image-id": format!("docker.io/library/nginx@{DIGEST}"),
                                        "kubescape.io/status": "completed", "kubescape.io/completion": "complete"}}})
}

fn bench_vex(packages: usize) -> Value {
    let product = format!("pkg:oci/nginx@{DIGEST}?repository_url=docker.io%2Flibrary");
    let mut statements = Vec::new();
    for p in 0..packages {
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
    let mut object = meta("OpenVulnerabilityExchangeContainer", SLUG, "kubescape");
    object["spec"] = json!({"@context": "https://openvex.dev/ns/v0.2.0", "@id": "9f2c1e0d", "author": "kubescape.io",
                            "timestamp": "2025-06-15T15:06:40Z", "last_updated": "2025-06-15T15:16:40Z",
                            "version": 2, "tooling": "kubescape-vulnerability-analyzer", "statements": statements});
    object
}

fn bench_manifest(packages: usize) -> Value {
    let mut matches = Vec::new();
    for p in (0..packages).filter(|p| loaded(*p)) {
        for n in 0..CVES_PER_PACKAGE {
            let id = cve(p, n);
            // Every other package has no fix, so both action wordings are covered.
            let fix = if p % 2 == 0 {
                json!({"versions": [format!("1.{p}.1-1")], "state": "fixed"})
            } else {
                json!({"versions": [], "state": "not-fixed"})
            };
            matches.push(json!({
                "vulnerability": {"id": id, "dataSource": format!("https://security-tracker.debian.org/tracker/{id}"), "severity": "High",
                                  "fix": fix},
                "artifact": {"name": format!("package{p}"), "version": format!("1.{p}.0-1"), "type": "deb", "purl": purl(p)}}));
        }
    }
    let mut object = meta("VulnerabilityManifest", SLUG, "kubescape");
    object["spec"] = json!({"metadata": {"withRelevancy": true, "tool": {"name": "grype", "version": "v0.92.2"},
                                         "report": {"createdAt": "2025-06-15T15:06:00Z"}},
                            "payload": {"matches": matches}});
    object
}

fn bench_sbom(artifacts: usize) -> Value {
    let artifacts: Vec<Value> = (0..artifacts)
        .map(|i| json!({"id": format!("{i:016x}"), "name": format!("package{i}"), "version": format!("1.{i}.0-1"), "type": "deb",
                        "foundBy": "dpkg-db-cataloger", "licenses": [{"value": "GPL-2.0-only", "spdxExpression": "GPL-2.0-only", "type": "declared"}],
                        "locations": [{"path": format!("/usr/lib/x86_64-linux-gnu/package{i}.so.1"), "layerID": format!("sha256:{:064x}", i)}],
                        "cpes": [{"cpe": format!("cpe:2.3:a:package{i}:package{i}:1.{i}.0-1:*:*:*:*:*:*:*"), "source": "syft-generated"}],
                        "purl": purl(i)}))
        .collect();
    let mut object = meta("SBOMSyftFiltered", SLUG, "kubescape");
    object["spec"] = json!({"metadata": {"tool": {"name": "syft", "version": "v1.18.1"}},
                            "syft": {"artifacts": artifacts, "artifactRelationships": [], "source": {"type": "image"},
                                     "distro": {"name": "debian", "version": "12"}, "descriptor": {"name": "syft", "version": "1.18.1"},
                                     "schema": {"version": "16.0.20"}}});
    object
}

fn bench_profile(status: &str, completion: &str) -> Value {
    let mut object = meta("ContainerProfile", SLUG, "vexxy-sandbox");
    object["metadata"]["annotations"]["kubescape.io/status"] = json!(status);
    object["metadata"]["annotations"]["kubescape.io/completion"] = json!(completion);
    object["spec"] = json!({"execs": [{"path": "/usr/sbin/nginx"}], "opens": []});
    object
}

fn fixture(name: &str) -> Value {
    let path = common::shared().join("fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if name.ends_with(".yaml") {
        serde_yaml_ng::from_str(&text).expect("fixture is YAML")
    } else {
        serde_json::from_str(&text).expect("fixture is JSON")
    }
}

/// A bare Syft or Grype report from `scanner-reports/` wrapped the way storage serves it.
fn wrapped(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1", "kind": kind,
           "metadata": {"name": name, "namespace": "kubescape"}, "spec": spec})
}

// ---------------------------------------------------------------------------------------------
// Running enrich on a case.

/// The evidence of one job, by `EvidenceRefs` name (`vex`, `filtered_sbom`, ..., or an `other` key).
#[derive(Default)]
struct Case {
    evidence: Vec<(&'static str, Vec<u8>)>,
    partial_observation: bool,
    repository: &'static str,
}

impl Case {
    fn with(mut self, name: &'static str, object: &Value) -> Self {
        self.evidence.push((
            name,
            serde_json::to_vec(object).expect("evidence serialises"),
        ));
        self
    }
    fn with_bytes(mut self, name: &'static str, bytes: &[u8]) -> Self {
        self.evidence.push((name, bytes.to_vec()));
        self
    }
}

fn case(repository: &'static str) -> Case {
    Case {
        repository,
        ..Case::default()
    }
}

fn ticket(job: &str, case: &Case) -> PipelineTicket {
    let at = |secs: i64| Utc.timestamp_opt(1_750_000_000 + secs, 0).unwrap();
    let key = |name: &str| format!("analyses/{job}/evidence/{name}.json");
    let mut refs = EvidenceRefs::default();
    for (name, _) in &case.evidence {
        let slot = match *name {
            "vex" => &mut refs.vex,
            "filtered_sbom" => &mut refs.filtered_sbom,
            "container_profile" => &mut refs.container_profile,
            "vulnerability_summary" => &mut refs.vulnerability_summary,
            "vulnerability_manifest" => &mut refs.vulnerability_manifest,
            "vulnerability_manifest_image" => &mut refs.other.vulnerability_manifest_image,
            "sbom_image" => &mut refs.other.sbom_image,
            other => {
                refs.other.more.insert(other.to_string(), key(other));
                continue;
            }
        };
        *slot = Some(key(name));
    }
    let mut request = common::request(case.repository, job);
    request.request_msg_id = None;
    PipelineTicket {
        request,
        timings: vec![],
        sandbox: Some(SandboxRef {
            namespace: "vexxy-sandbox".into(),
            deployment: format!("vexxy-{job}"),
            container: "app".into(),
            created_at: at(0),
        }),
        observation: Some(Observation {
            pod: format!("vexxy-{job}-7c5ddbdf54-abcde"),
            replicaset: format!("vexxy-{job}-7c5ddbdf54"),
            instance_slug: SLUG.into(),
            instance_id: format!(
                "apiVersion-apps/v1/namespace-vexxy-sandbox/kind-ReplicaSet/name-vexxy-{job}-7c5ddbdf54/containerName-app"
            ),
            learning_status: if case.partial_observation {
                "ready"
            } else {
                "completed"
            }
            .into(),
            learning_completion: if case.partial_observation {
                "partial"
            } else {
                "complete"
            }
            .into(),
            window_start: at(0),
            window_end: at(300),
            container_restarts: 0,
            partial: case.partial_observation,
        }),
        evidence: Some(refs),
    }
}

/// What one run wrote, by output file name, plus the completed event's figures.
struct Written {
    documents: BTreeMap<&'static str, Value>,
}

async fn enrich(job: &str, case: &Case) -> Result<Written, StageError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!("file://{}", dir.path().display()), &[]).expect("store");
    for (name, bytes) in &case.evidence {
        store
            .put_bytes(
                &format!("analyses/{job}/evidence/{name}.json"),
                Bytes::from(bytes.clone()),
            )
            .await
            .expect("evidence stored");
    }
    let outcome = Enrich::new(EnrichConfig {
        issuer: vexxy_enrich::Issuer::new(
            "ACME Product Security",
            "https://security.acme.example/vex",
        )
        .unwrap(),
    })
    .run(&store, ticket(job, case))
    .await?;
    let Outcome::Completed(completed) = outcome else {
        panic!("enrich must complete, got {outcome:?}");
    };
    let mut documents = BTreeMap::new();
    for (file, key) in [
        ("vex.openvex.json", vexxy_enrich::vex_key(job)),
        ("vex.cdx.json", vexxy_enrich::cyclonedx_key(job)),
        ("sbom.cdx.json", vexxy_enrich::sbom_cyclonedx_key(job)),
        ("sbom.filtered.json", vexxy_enrich::sbom_key(job)),
        ("summary.json", vexxy_enrich::summary_key(job)),
    ] {
        if store.exists(&key).await.expect("store answers") {
            let bytes = store.get_bytes(&key).await.expect("output readable");
            documents.insert(
                file,
                serde_json::from_slice(&bytes).expect("output is JSON"),
            );
        }
    }
    let artifacts = &completed.artifacts;
    documents.insert(
        "completed.json",
        json!({
            "summary": completed.summary,
            "evidence": completed.evidence,
            "openvex_written": artifacts.openvex.is_some(),
            "extra": artifacts.extra.by_name().into_keys().collect::<Vec<_>>(),
            "evidence_objects": artifacts.evidence.len(),
        }),
    );
    Ok(Written { documents })
}

fn check_against_golden(name: &str, written: &Written) {
    let dir = golden_dir().join(name);
    if blessing() {
        std::fs::create_dir_all(&dir).expect("golden dir");
        for entry in std::fs::read_dir(&dir).expect("golden dir readable") {
            std::fs::remove_file(entry.expect("entry").path()).expect("old golden removed");
        }
        for (file, value) in &written.documents {
            let mut text = serde_json::to_vec_pretty(value).expect("serialises");
            text.push(b'\n');
            std::fs::write(dir.join(file), text).expect("golden written");
        }
        panic!(
            "golden files of {name} rewritten; run again without VEXXY_BLESS_GOLDEN to check them"
        );
    }
    let mut expected_files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "no golden files in {} ({e}); bless them with VEXXY_BLESS_GOLDEN=1",
                dir.display()
            )
        })
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    expected_files.sort();
    let written_files: Vec<String> = written.documents.keys().map(|f| f.to_string()).collect();
    assert_eq!(
        written_files, expected_files,
        "case {name}: the set of written documents changed"
    );
    for (file, value) in &written.documents {
        let expected = read_json(&dir.join(file));
        if *value != expected {
            panic!(
                "case {name}: {file} differs from the golden file; first difference: {}",
                first_difference(&expected, value, "")
            );
        }
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("golden readable")).expect("golden is JSON")
}

/// Path and both values of the first place where `expected` and `actual` differ.
fn first_difference(expected: &Value, actual: &Value, path: &str) -> String {
    match (expected, actual) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    None => return format!("{path}/{key} missing"),
                    Some(other) if other != value => {
                        return first_difference(value, other, &format!("{path}/{key}"));
                    }
                    Some(_) => {}
                }
            }
            let extra: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
            format!("{path}: unexpected keys {extra:?}")
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    return first_difference(x, y, &format!("{path}/{i}"));
                }
            }
            format!("{path}: equal")
        }
        _ => format!("{path}: expected {expected}, got {actual}"),
    }
}

/// JSON with object keys sorted at every level: equal values give equal bytes.
fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(key).expect("key serialises"));
                out.push(b':');
                canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend(serde_json::to_vec(other).expect("scalar serialises")),
    }
}

fn digest(value: &Value) -> String {
    let mut bytes = Vec::new();
    canonical(value, &mut bytes);
    hex::encode(Sha256::digest(&bytes))
}

// ---------------------------------------------------------------------------------------------
// Cases.

#[tokio::test]
async fn kubescape_fixtures_give_the_golden_documents() {
    let case = case("gcr.io/google-samples/microservices-demo/adservice")
        .with(
            "vex",
            &fixture("kubescape/vex-container.storage-example-01.yaml"),
        )
        .with(
            "vulnerability_manifest",
            &fixture("kubescape/vulnerabilitymanifest.storage-01-example.yaml"),
        )
        .with(
            "filtered_sbom",
            &fixture("kubescape/sbomsyftfiltered.node-agent-nginx-syft-filtered.json"),
        )
        .with(
            "container_profile",
            &fixture("kubescape/containerprofile.kubevuln-nginx-ap.json"),
        )
        .with(
            "vulnerability_manifest_image",
            &wrapped(
                "VulnerabilityManifest",
                "alpine",
                json!({"metadata": {"tool": {"name": "grype", "version": "v0.74.0"}}, "payload": fixture("scanner-reports/kubevuln-alpine-cve.json")}),
            ),
        )
        .with(
            "sbom_image",
            &wrapped(
                "SBOMSyft",
                "alpine",
                json!({"metadata": {"tool": {"name": "syft", "version": "v1.0.0"}}, "syft": fixture("scanner-reports/kubevuln-alpine-sbom.json")}),
            ),
        );
    let written = enrich("golden-fixtures", &case)
        .await
        .expect("enrich completes");
    check_against_golden("fixtures", &written);
}

#[tokio::test]
async fn manifest_only_fixture_with_partial_evidence_gives_the_golden_documents() {
    let case = case("docker.io/library/nginx")
        .with(
            "vulnerability_manifest",
            &wrapped(
                "VulnerabilityManifest",
                SLUG,
                json!({"metadata": {"withRelevancy": true}, "payload": fixture("scanner-reports/kubevuln-nginx-filtered-cve.json")}),
            ),
        )
        .with(
            "vulnerability_manifest_image",
            &fixture("kubescape/vulnerabilitymanifest.storage-01-example.yaml"),
        )
        .with("container_profile", &bench_profile("ready", "partial"));
    let mut case = case;
    case.partial_observation = true;
    let written = enrich("golden-no-vex", &case)
        .await
        .expect("enrich completes");
    check_against_golden("no-vex-partial", &written);
}

fn bench_small(partial_observation: bool) -> Case {
    let mut case = case("docker.io/library/nginx")
        .with("vex", &bench_vex(40))
        .with("vulnerability_manifest", &bench_manifest(40))
        .with("filtered_sbom", &bench_sbom(60))
        .with("container_profile", &bench_profile("completed", "complete"))
        .with("sbom_image", &bench_sbom(120));
    case.partial_observation = partial_observation;
    case
}

#[tokio::test]
async fn bench_shaped_evidence_gives_the_golden_documents() {
    let written = enrich("golden-bench", &bench_small(false))
        .await
        .expect("enrich completes");
    check_against_golden("bench-small", &written);
}

#[tokio::test]
async fn bench_shaped_partial_evidence_gives_the_golden_documents() {
    let written = enrich("golden-bench", &bench_small(true))
        .await
        .expect("enrich completes");
    check_against_golden("bench-small-partial", &written);
}

#[tokio::test]
async fn v0_3_159_duplicates_give_the_golden_documents() {
    use common::Match;
    let matches: Vec<(Match, bool)> = vec![
        (
            Match::new("CVE-2023-4911", "libc6", "2.36-9").fixed_in("2.36-9+deb12u3"),
            true,
        ),
        (Match::new("CVE-2023-4806", "libc6", "2.36-9"), false),
        (Match::new("CVE-2024-2961", "libc-bin", "2.36-9"), true),
        (
            Match::new("GHSA-xxxx-yyyy-zzzz", "pkg with space", "1.0"),
            false,
        ),
    ];
    let appended = vec![
        matches[0].0.clone(),
        matches[2].0.clone(),
        Match::new("CVE-2025-0001", "zlib1g", "1.2.13"),
    ];
    let relevant: Vec<Match> = matches
        .iter()
        .filter(|(_, l)| *l)
        .map(|(m, _)| m.clone())
        .collect();
    let all: Vec<Match> = matches.iter().map(|(m, _)| m.clone()).collect();
    let case = case("ghcr.io/Owner/Repo")
        .with("vex", &common::v0_3_159_vex(&matches, &appended))
        .with(
            "vulnerability_manifest",
            &common::manifest("replicaset-x", &relevant),
        )
        .with(
            "vulnerability_manifest_image",
            &common::manifest("image", &all),
        )
        .with("filtered_sbom", &common::sbom("SBOMSyftFiltered", SLUG, 3))
        .with("sbom_image", &common::sbom("SBOMSyft", "image", 9))
        .with(
            "container_profile",
            &common::container_profile("completed", "complete"),
        );
    let written = enrich("golden-v0-3-159", &case)
        .await
        .expect("enrich completes");
    check_against_golden("v0_3_159", &written);
}

#[tokio::test]
async fn main_shape_gives_the_golden_documents() {
    use common::Match;
    let matches = vec![
        (
            Match::new("CVE-2023-4911", "libc6", "2.36-9").fixed_in("2.36-9+deb12u3"),
            true,
        ),
        (Match::new("CVE-2023-4806", "libc6", "2.36-9"), false),
    ];
    let main = case("registry.local:5000/team/app")
        .with("vex", &common::main_vex(&matches))
        .with(
            "vulnerability_manifest",
            &common::manifest("replicaset-x", &[matches[0].0.clone()]),
        )
        .with("filtered_sbom", &common::sbom("SBOMSyftFiltered", SLUG, 2))
        .with(
            "container_profile",
            &common::container_profile("completed", "complete"),
        );
    let written = enrich("golden-main", &main)
        .await
        .expect("enrich completes");
    check_against_golden("main", &written);
}

#[tokio::test]
async fn an_image_without_vulnerabilities_gives_the_golden_documents() {
    let empty = case("docker.io/library/busybox")
        .with("vex", &common::main_vex(&[]))
        .with("filtered_sbom", &common::sbom("SBOMSyftFiltered", SLUG, 0))
        .with(
            "container_profile",
            &common::container_profile("completed", "complete"),
        );
    let written = enrich("golden-empty", &empty)
        .await
        .expect("enrich completes");
    check_against_golden("no-vulnerabilities", &written);
}

/// The bench's document at full size: 10,000 statements, 5,000 SBOM artifacts.
#[tokio::test]
async fn bench_sized_evidence_gives_the_golden_digests() {
    let case = case("docker.io/library/nginx")
        .with("vex", &bench_vex(2_000))
        .with("vulnerability_manifest", &bench_manifest(2_000))
        .with("filtered_sbom", &bench_sbom(5_000))
        .with("container_profile", &bench_profile("completed", "complete"));
    let written = enrich("bench-enrich", &case)
        .await
        .expect("enrich completes");
    let digests: BTreeMap<&str, String> = written
        .documents
        .iter()
        .map(|(file, value)| (*file, digest(value)))
        .collect();
    let digests = serde_json::to_value(&digests).expect("digests serialise");
    let path = golden_dir().join("bench-full.sha256.json");
    if blessing() {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&digests).expect("serialises"),
        )
        .expect("golden written");
        panic!("golden files rewritten; run again without VEXXY_BLESS_GOLDEN to check them");
    }
    assert_eq!(
        written.documents["completed.json"]["summary"]["total_cves_analyzed"],
        json!(10_000)
    );
    assert_eq!(
        digests,
        read_json(&path),
        "canonical SHA-256 of each bench-sized output"
    );
}

/// Evidence enrich must refuse, with the message a user sees.
#[tokio::test]
async fn bad_evidence_gives_the_golden_error_messages() {
    let mut vex_bad_status = bench_vex(1);
    vex_bad_status["spec"]["statements"][0]["status"] = json!("exploitable");
    let mut vex_no_vulnerability = bench_vex(1);
    vex_no_vulnerability["spec"]["statements"][1]["vulnerability"] = json!({});
    let mut vex_bad_time = bench_vex(1);
    vex_bad_time["spec"]["statements"][2]["timestamp"] = json!("yesterday");
    let mut vex_bad_type = bench_vex(1);
    vex_bad_type["spec"]["statements"][0]["products"][0]["subcomponents"] = json!("pkg:deb/x");
    let mut vex_no_spec = bench_vex(1);
    vex_no_spec["spec"] = json!({});
    let mut vex_no_products = bench_vex(1);
    vex_no_products["spec"]["statements"][3]["products"] = json!([]);
    let mut sbom_no_syft = bench_sbom(2);
    sbom_no_syft["spec"]["syft"] = json!(null);
    let mut sbom_bad_artifact = bench_sbom(2);
    sbom_bad_artifact["spec"]["syft"]["artifacts"][1]["locations"] = json!([{"path": 7}]);
    let mut manifest_bad = bench_manifest(3);
    manifest_bad["spec"]["payload"]["matches"][2]["artifact"] = json!({"version": "1"});
    let mut profile_wrong_kind = bench_profile("completed", "complete");
    profile_wrong_kind["kind"] = json!("NetworkNeighborhood");

    let valid = || {
        case("docker.io/library/nginx")
            .with("filtered_sbom", &bench_sbom(2))
            .with("container_profile", &bench_profile("completed", "complete"))
            .with("vulnerability_manifest", &bench_manifest(3))
    };
    let cases: Vec<(&str, Case)> = vec![
        ("vex_bad_status", valid().with("vex", &vex_bad_status)),
        (
            "vex_no_vulnerability",
            valid().with("vex", &vex_no_vulnerability),
        ),
        ("vex_bad_time", valid().with("vex", &vex_bad_time)),
        ("vex_bad_type", valid().with("vex", &vex_bad_type)),
        ("vex_no_spec", valid().with("vex", &vex_no_spec)),
        ("vex_no_products", valid().with("vex", &vex_no_products)),
        (
            "vex_not_json",
            valid().with_bytes(
                "vex",
                b"{\"kind\": \"OpenVulnerabilityExchangeContainer\", ",
            ),
        ),
        ("vex_not_an_object", valid().with_bytes("vex", b"[1, 2]")),
        (
            "sbom_no_syft",
            case("docker.io/library/nginx")
                .with("vex", &bench_vex(1))
                .with("filtered_sbom", &sbom_no_syft),
        ),
        (
            "sbom_bad_artifact",
            case("docker.io/library/nginx")
                .with("vex", &bench_vex(1))
                .with("filtered_sbom", &sbom_bad_artifact),
        ),
        (
            "manifest_bad",
            case("docker.io/library/nginx")
                .with("vex", &bench_vex(1))
                .with("vulnerability_manifest", &manifest_bad),
        ),
        (
            "profile_wrong_kind",
            case("docker.io/library/nginx")
                .with("vex", &bench_vex(1))
                .with("container_profile", &profile_wrong_kind),
        ),
    ];
    let mut messages = BTreeMap::new();
    for (name, case) in &cases {
        let error = match enrich("golden-bad", case).await {
            Ok(_) => panic!("case {name}: enrich must refuse this evidence"),
            Err(error) => error,
        };
        let (message, retryable) = match error {
            StageError::Permanent {
                message, retryable, ..
            } => (message, Some(retryable)),
            StageError::Transient { message, .. } => (message, None),
        };
        messages.insert(
            name.to_string(),
            json!({"message": message, "retryable": retryable}),
        );
    }
    let written = Written {
        documents: BTreeMap::from([(
            "errors.json",
            serde_json::to_value(&messages).expect("serialises"),
        )]),
    };
    check_against_golden("errors", &written);
}
