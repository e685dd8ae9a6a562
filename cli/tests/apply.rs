//! `vexxy apply` on real scanner reports: the Grype 0.73.4 report from kubevuln's test data and
//! Trivy's own integration-test golden, with VEX documents for exactly those images. Counts are
//! checked finding by finding, and statements that must NOT suppress (other image, other
//! package, affected, a qualifier the scanner lacks, superseded by a later statement) are included.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use vexxy_cli::apply::{self, Vex};

const ALPINE_DIGEST: &str =
    "sha256:e2e16842c9b54d985bf1ef9242a313f36b856181f188de21313820e177002501";
const TRIVY_DIGEST: &str =
    "sha256:b1c5a500182b21d0bfa5a584a8526b56d8be316f89e87d951be04abed2446e60";

fn grype_report() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/scanner-reports/kubevuln-alpine-cve.json");
    serde_json::from_slice(&std::fs::read(path).expect("the Grype fixture is readable")).unwrap()
}

fn trivy_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/trivy-alpine-310-registry.json")
}

fn trivy_report() -> Value {
    serde_json::from_slice(&std::fs::read(trivy_path()).unwrap()).unwrap()
}

/// vexxy's product id for the fixture image (what enrich writes for docker.io/library/alpine).
fn alpine_product() -> String {
    format!(
        "pkg:oci/alpine@{}?repository_url=index.docker.io/library/alpine",
        ALPINE_DIGEST.replace(':', "%3A")
    )
}

fn statement(cve: &str, product: &str, sub: Option<&str>, status: &str) -> Value {
    let mut product = json!({"@id": product});
    if let Some(sub) = sub {
        product["subcomponents"] = json!([{"@id": sub}]);
    }
    let mut s = json!({"vulnerability": {"name": cve}, "products": [product], "status": status});
    if status == "not_affected" {
        s["justification"] = "vulnerable_code_not_present".into();
    }
    if status == "affected" {
        s["action_statement"] = "Upgrade".into();
    }
    s
}

fn vex(statements: Vec<Value>) -> Value {
    json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://vexxy.io/analyses/test/vex",
        "author": "vexxy",
        "timestamp": "2024-01-01T00:00:00Z",
        "version": 1,
        "statements": statements,
    })
}

const LIBSSL: &str =
    "pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64&upstream=openssl&distro=alpine-3.17.2";
const LIBCRYPTO: &str =
    "pkg:apk/alpine/libcrypto3@3.0.8-r0?arch=x86_64&upstream=openssl&distro=alpine-3.17.2";

fn grype_vex() -> Value {
    let product = alpine_product();
    let mut superseded = statement("CVE-2023-1255", &product, Some(LIBSSL), "not_affected");
    superseded["timestamp"] = "2024-01-01T00:00:00Z".into();
    let mut latest = statement("CVE-2023-1255", &product, Some(LIBSSL), "affected");
    latest["timestamp"] = "2024-02-01T00:00:00Z".into();
    vex(vec![
        // Suppresses 2: CVE-2023-5363 in libssl3 and libcrypto3 (no subcomponents: whole image).
        statement("CVE-2023-5363", &product, None, "not_affected"),
        // Suppresses 1: only libssl3 (the subcomponent purl without qualifiers matches).
        statement(
            "CVE-2023-0464",
            &product,
            Some("pkg:apk/alpine/libssl3@3.0.8-r0"),
            "not_affected",
        ),
        // Suppresses 1: fixed counts as suppressing.
        statement("CVE-2023-5678", &product, Some(LIBCRYPTO), "fixed"),
        // Does not suppress: affected.
        statement("CVE-2023-3817", &product, Some(LIBSSL), "affected"),
        // Does not suppress: another image digest.
        statement(
            "CVE-2023-3446",
            &alpine_product().replace("e2e16842", "00000000"),
            None,
            "not_affected",
        ),
        // Does not suppress: a qualifier the scanner's image purl lacks.
        statement(
            "CVE-2023-2975",
            &format!("{product}&tag=3.17"),
            None,
            "not_affected",
        ),
        // Does not suppress: a later statement says affected.
        superseded,
        latest,
        // Does not suppress: another package.
        statement(
            "CVE-2023-2650",
            &product,
            Some("pkg:apk/alpine/busybox@1.36.0-r0"),
            "not_affected",
        ),
    ])
}

#[test]
fn grype_report_findings_are_suppressed_exactly_as_the_vex_says() {
    let mut report = grype_report();
    let before = report["matches"].as_array().unwrap().len();
    let counts = apply::apply(&Vex::parse(&grype_vex()).unwrap(), &mut report, false).unwrap();
    assert_eq!(before, 20);
    assert_eq!(counts.findings, 20);
    assert_eq!((counts.not_affected, counts.fixed), (3, 1));
    let kept = report["matches"].as_array().unwrap();
    assert_eq!(kept.len(), 16);
    let ignored = report["ignoredMatches"].as_array().unwrap();
    let ignored_ids: Vec<(String, String)> = ignored
        .iter()
        .map(|m| {
            (
                m["vulnerability"]["id"].as_str().unwrap().to_string(),
                m["artifact"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("CVE-2023-5363", "libcrypto3"),
        ("CVE-2023-5363", "libssl3"),
        ("CVE-2023-0464", "libssl3"),
        ("CVE-2023-5678", "libcrypto3"),
    ] {
        assert!(
            ignored_ids.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} suppressed: {ignored_ids:?}"
        );
    }
    assert_eq!(
        ignored[0]["appliedIgnoreRules"][0]["vex-status"],
        "not_affected"
    );
}

#[test]
fn grype_mark_mode_keeps_every_finding_and_marks_the_suppressed_ones() {
    let mut report = grype_report();
    let counts = apply::apply(&Vex::parse(&grype_vex()).unwrap(), &mut report, true).unwrap();
    assert_eq!(counts.suppressed(), 4);
    let matches = report["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 20);
    assert_eq!(
        matches
            .iter()
            .filter(|m| m.get("vexxy_vex").is_some())
            .count(),
        4
    );
    assert!(report.get("ignoredMatches").is_none());
}

#[test]
fn kubescapes_own_product_id_matches_nothing() {
    // Kubescape's product (repository_url without the image name) is why vexxy rewrites it.
    let kubescape_product = format!(
        "pkg:oci/alpine@{}?repository_url=docker.io%2Flibrary",
        ALPINE_DIGEST.replace(':', "%3A")
    );
    let document = vex(vec![statement(
        "CVE-2023-5363",
        &kubescape_product,
        None,
        "not_affected",
    )]);
    let mut report = grype_report();
    let counts = apply::apply(&Vex::parse(&document).unwrap(), &mut report, false).unwrap();
    assert_eq!(counts.suppressed(), 0);
}

fn trivy_vex() -> Value {
    let product = format!(
        "pkg:oci/alpine@{}?repository_url=localhost:55844/alpine",
        TRIVY_DIGEST.replace(':', "%3A")
    );
    vex(vec![
        statement(
            "CVE-2019-1549",
            &product,
            Some("pkg:apk/alpine/libssl1.1@1.1.1c-r0"),
            "not_affected",
        ),
        statement("CVE-2019-1551", &product, None, "fixed"),
        statement(
            "CVE-2019-1549",
            &product,
            Some("pkg:apk/alpine/libcrypto1.1@1.1.1c-r0?arch=x86_64"),
            "not_affected",
        ),
    ])
}

#[test]
fn trivy_report_findings_are_suppressed_and_listed_as_modified_findings() {
    let mut report = trivy_report();
    let counts = apply::apply(&Vex::parse(&trivy_vex()).unwrap(), &mut report, false).unwrap();
    // libcrypto1.1 CVE-2019-1549 stays: the VEX asks for arch=x86_64, which the report's purl lacks.
    assert_eq!(counts.findings, 4);
    assert_eq!((counts.not_affected, counts.fixed), (1, 2));
    let result = &report["Results"][0];
    let kept = result["Vulnerabilities"].as_array().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["VulnerabilityID"], "CVE-2019-1549");
    assert_eq!(kept[0]["PkgName"], "libcrypto1.1");
    let modified = result["ExperimentalModifiedFindings"].as_array().unwrap();
    assert_eq!(modified.len(), 3);
    assert!(modified.iter().all(|m| m["Source"] == "OpenVEX"));
}

#[test]
fn a_trivy_sbom_report_has_no_image_identity_as_in_trivy() {
    // `trivy sbom` reports carry ArtifactType cyclonedx: Trivy's root component then has no
    // purl, so no statement about the image matches (only package-product statements would).
    let mut report = trivy_report();
    report["ArtifactType"] = json!("cyclonedx");
    let counts = apply::apply(&Vex::parse(&trivy_vex()).unwrap(), &mut report, false).unwrap();
    assert_eq!((counts.findings, counts.suppressed()), (4, 0));
    let package_product = vex(vec![statement(
        "CVE-2019-1551",
        "pkg:apk/alpine/libssl1.1@1.1.1c-r0",
        None,
        "not_affected",
    )]);
    let mut report = trivy_report();
    report["ArtifactType"] = json!("cyclonedx");
    let counts = apply::apply(&Vex::parse(&package_product).unwrap(), &mut report, false).unwrap();
    assert_eq!(counts.suppressed(), 1);
}

#[test]
fn reports_and_documents_that_are_not_what_they_claim_are_refused() {
    assert_eq!(
        apply::detect(&json!({"foo": 1})),
        Err(apply::ApplyError::UnknownReport)
    );
    assert!(Vex::parse(&json!({"matches": []})).is_err());
    let mut no_digest = json!({"matches": [], "source": {"target": {"userInput": "alpine:3"}}});
    assert_eq!(
        apply::apply(&Vex::parse(&vex(vec![])).unwrap(), &mut no_digest, false),
        Err(apply::ApplyError::NoImageDigest)
    );
}

fn vexxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vexxy"))
}

#[test]
fn the_apply_command_prints_the_filtered_report_and_counts_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let vex_path = dir.path().join("vex.openvex.json");
    std::fs::write(&vex_path, serde_json::to_vec(&trivy_vex()).unwrap()).unwrap();
    let output = vexxy()
        .args(["apply", "--vex"])
        .arg(&vex_path)
        .arg("--report")
        .arg(trivy_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is the report");
    assert_eq!(
        printed["Results"][0]["Vulnerabilities"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("3 of 4 findings suppressed"), "{stderr}");

    let bad = vexxy()
        .args(["apply", "--vex"])
        .arg(trivy_path())
        .arg("--report")
        .arg(trivy_path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no `statements`"));
}
