//! Every real Kubescape object and scanner report in `shared/fixtures` goes through the readers.

use std::path::PathBuf;

use serde_json::{Value, json};
use vexxy_kubescape::from_bytes::{
    ReadError, read_manifest_bytes, read_sbom_bytes, read_vex_bytes,
};
use vexxy_kubescape::keys::kinds;
use vexxy_kubescape::{
    Completion, Justification, KubevulnShape, ParseError, ProfileStatus, SbomKind, VexStatus,
    metadata_only, read_container_profile, read_grype_document, read_manifest, read_sbom,
    read_summary, read_syft_document, read_vex,
};

fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(rel)
}

fn json_fixture(rel: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture_path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {rel}: {e}"))
}

fn yaml_fixture(rel: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture_path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parse {rel}: {e}"))
}

#[test]
fn legacy_storage_vex_sample_reads_as_legacy_shape() {
    let vex = read_vex(&yaml_fixture(
        "kubescape/vex-container.storage-example-01.yaml",
    ))
    .unwrap();
    assert_eq!(vex.shape, KubevulnShape::Legacy);
    assert_eq!(vex.object.name, "test1");
    assert_eq!(vex.document.version, 1);
    assert_eq!(vex.document.author, "Kubescape vulnerability scanner");
    assert_eq!(
        vex.document.timestamp.unwrap().to_rfc3339(),
        "2023-10-11T09:44:05.299994172+00:00",
        "the +03:00 offset is converted to UTC"
    );
    assert_eq!(vex.statement_count, 2);
    assert_eq!(vex.findings.len(), 2, "two packages, so no duplicates");
    let purls: Vec<_> = vex
        .findings
        .iter()
        .map(|f| f.subcomponent_purl.clone().unwrap())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:maven/com.google.guava/guava@31.1-android",
            "pkg:maven/com.google.guava/guava@31.1-jre"
        ]
    );
    for f in &vex.findings {
        assert_eq!(f.vulnerability_id, "CVE-2020-8908");
        assert_eq!(
            f.data_source_url.as_deref(),
            Some("https://nvd.nist.gov/vuln/detail/CVE-2020-8908")
        );
        assert_eq!(
            f.product_id,
            "gcr.io/google-samples/microservices-demo/adservice@sha256:45fb8ed886902c0c49e044b1f8870fad61c1022fa23c4943098302a8f1c5b75f"
        );
        assert_eq!(f.status, VexStatus::Affected);
        assert_eq!(
            f.impact_statement.as_deref(),
            Some("Vulnerable component is loaded into the memory")
        );
        assert!(
            f.description
                .as_deref()
                .unwrap()
                .starts_with("A temp directory creation vulnerability")
        );
    }
}

#[test]
fn node_agent_filtered_sbom_reads_and_reserialises_losslessly() {
    let object = json_fixture("kubescape/sbomsyftfiltered.node-agent-nginx-syft-filtered.json");
    let sbom = read_sbom(&object).unwrap();
    assert_eq!(
        sbom.kind,
        SbomKind::Filtered,
        "no kind in the file; the instance-id annotation says filtered"
    );
    assert_eq!(sbom.object.name, "pod-pod-cont-cb3a-a929");
    assert_eq!(sbom.metadata.tool.name, "syft");
    assert_eq!(sbom.metadata.tool.version, "v1.2.0-hotfix");
    assert_eq!(
        sbom.metadata.report.created_at.as_deref(),
        Some("2024-04-29T06:47:04Z")
    );
    assert_eq!(sbom.syft.artifacts.len(), 10);
    let libc = sbom
        .syft
        .artifacts
        .iter()
        .find(|a| a.name == "libc6")
        .unwrap();
    assert_eq!(libc.version, "2.36-9+deb12u6");
    assert_eq!(libc.package_type, "deb");
    assert_eq!(
        libc.purl.as_deref(),
        Some("pkg:deb/debian/libc6@2.36-9+deb12u6?arch=amd64&upstream=glibc&distro=debian-12")
    );
    assert!(libc.file_paths().contains(&"/var/lib/dpkg/status"));
    assert!(
        libc.file_paths().len() > 200,
        "metadata.files are package files too"
    );
    assert_eq!(
        serde_json::to_value(&sbom.syft).unwrap(),
        object["spec"]["syft"]
    );
    assert_eq!(
        serde_json::to_value(&sbom.metadata).unwrap(),
        object["spec"]["metadata"]
    );
}

#[test]
fn storage_vulnerability_manifest_sample_reads_and_reserialises_losslessly() {
    let object = yaml_fixture("kubescape/vulnerabilitymanifest.storage-01-example.yaml");
    let manifest = read_manifest(&object).unwrap();
    assert!(manifest.metadata.with_relevancy);
    assert_eq!(manifest.metadata.tool.name, "grype");
    assert_eq!(manifest.metadata.tool.version, "0.39.0");
    assert_eq!(
        manifest.metadata.tool.database_version.as_deref(),
        Some("9d584f305593cbe71b2f2a912bfbd618fbf96edfb64f6496e1cfb4ec932325a6")
    );
    let first = &manifest.payload.matches[0];
    assert_eq!(first.vulnerability.id, "CVE-2004-0971");
    assert_eq!(first.vulnerability.severity.as_deref(), Some("Negligible"));
    assert_eq!(first.artifact.name, "libgssapi-krb5-2");
    assert_eq!(first.fix_versions(), None, "not-fixed");
    assert_eq!(
        manifest.payload.matches.len(),
        object["spec"]["payload"]["matches"]
            .as_array()
            .unwrap()
            .len()
    );
    assert_eq!(
        serde_json::to_value(&manifest.payload).unwrap(),
        object["spec"]["payload"]
    );
}

#[test]
fn kubevuln_container_profile_reads_status_completion_and_loaded_files() {
    let profile = read_container_profile(&json_fixture(
        "kubescape/containerprofile.kubevuln-nginx-ap.json",
    ))
    .unwrap();
    assert_eq!(profile.status, Some(ProfileStatus::Learning));
    assert_eq!(profile.completion, Some(Completion::Complete));
    assert!(profile.relevancy_scan_possible());
    assert!(!profile.learning_finished());
    assert_eq!(
        profile.instance_id.as_deref(),
        Some(
            "apiVersion-apps/v1/namespace-default/kind-ReplicaSet/name-nginx-75f48cbc54/containerName-nginx"
        )
    );
    assert_eq!(
        profile.wlid.as_deref(),
        Some("wlid://cluster-kind-kind/namespace-default/deployment-nginx")
    );
    assert_eq!(profile.learning_period, None);
    assert_eq!(
        profile.object.label("kubescape.io/workload-kind"),
        Some("Deployment")
    );
    assert_eq!(
        profile.image_tag.as_deref(),
        Some("docker.io/library/nginx:1.14.2")
    );
    assert!(profile.spec_present);
    assert_eq!(profile.execs[0].path, "/usr/sbin/nginx");
    assert!(profile.loaded_paths().any(|p| p == "/etc/nginx/nginx.conf"));
}

#[test]
fn grype_alpine_report_reads_and_wraps_as_a_manifest_payload() {
    let report = json_fixture("scanner-reports/kubevuln-alpine-cve.json");
    let grype = read_grype_document(&report).unwrap();
    assert_eq!(grype.matches.len(), 20);
    let m = &grype.matches[0];
    assert_eq!(m.vulnerability.id, "CVE-2023-5363");
    assert_eq!(m.fix_versions(), Some(&["3.0.12-r0".to_string()][..]));
    assert_eq!(
        m.artifact.purl,
        "pkg:apk/alpine/libcrypto3@3.0.8-r0?arch=x86_64&upstream=openssl&distro=alpine-3.17.2"
    );
    assert_eq!(serde_json::to_value(&grype).unwrap(), report);

    let wrapped = json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "VulnerabilityManifest",
        "metadata": {"name": "index.docker.io-library-alpine-177002501", "namespace": "kubescape"},
        "spec": {"metadata": {"withRelevancy": false, "tool": {"name": "grype", "version": "0.73.4", "databaseVersion": "x"}, "report": {"createdAt": "2024-01-01T00:00:00Z"}}, "payload": report},
    });
    let manifest = read_manifest(&wrapped).unwrap();
    assert!(!manifest.metadata.with_relevancy);
    assert_eq!(manifest.payload.matches.len(), 20);
}

#[test]
fn grype_nginx_filtered_report_reads() {
    let report = json_fixture("scanner-reports/kubevuln-nginx-filtered-cve.json");
    let grype = read_grype_document(&report).unwrap();
    assert_eq!(grype.matches.len(), 456);
    assert!(grype.matches.iter().all(|m| {
        m.vulnerability
            .data_source
            .contains("security-tracker.debian.org")
    }));
    assert_eq!(serde_json::to_value(&grype).unwrap(), report);
}

#[test]
fn syft_alpine_sbom_reads_and_reserialises_losslessly() {
    let doc = json_fixture("scanner-reports/kubevuln-alpine-sbom.json");
    let syft = read_syft_document(&doc).unwrap();
    assert_eq!(syft.artifacts.len(), 15);
    assert!(syft.artifacts.iter().all(|a| a.package_type == "apk"));
    assert_eq!(serde_json::to_value(&syft).unwrap(), doc);
}

#[test]
fn justification_and_status_are_typed() {
    let object = json!({
        "kind": "OpenVulnerabilityExchangeContainer",
        "metadata": {"name": "x"},
        "spec": {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "ab", "author": "kubescape.io", "version": 0,
                 "timestamp": "2026-01-01T00:00:00Z",
                 "statements": [{"vulnerability": {"@id": "CVE-2024-1", "name": "https://nvd.nist.gov/vuln/detail/CVE-2024-1"},
                                 "products": [{"@id": "pkg:oci/a@sha256:00", "subcomponents": [{"@id": "pkg:deb/debian/a@1"}]}],
                                 "status": "not_affected", "justification": "vulnerable_code_not_present",
                                 "impact_statement": "Vulnerable component is not loaded into the memory"}]}
    });
    let vex = read_vex(&object).unwrap();
    assert_eq!(
        vex.findings[0].justification,
        Some(Justification::VulnerableCodeNotPresent)
    );
    assert_eq!(vex.findings[0].status, VexStatus::NotAffected);
    assert_eq!(vex.document.version, 0);
}

/// The storage server's metadata-only view of a stored object: its envelope with the zero-valued
/// spec (and status) of its kind.
fn metadata_only_view(object: &Value, kind: &str) -> Value {
    let mut view = json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": kind,
        "metadata": object["metadata"],
        "spec": metadata_only::zero_spec(kind).unwrap(),
    });
    if let Some(status) = metadata_only::zero_status(kind) {
        view["status"] = status;
    }
    view
}

#[test]
fn metadata_only_views_of_real_objects_have_no_spec() {
    let spec_missing = |result: Result<(), ParseError>, what: &str| match result {
        Err(ParseError::SpecMissing { .. }) => {}
        other => panic!("{what}: expected SpecMissing, got {other:?}"),
    };
    let vex = metadata_only_view(
        &yaml_fixture("kubescape/vex-container.storage-example-01.yaml"),
        kinds::VEX,
    );
    spec_missing(read_vex(&vex).map(drop), "read_vex");
    let stored = serde_json::to_vec(&vex).unwrap();
    match read_vex_bytes(&stored) {
        Err(ReadError::Invalid(ParseError::SpecMissing { .. })) => {}
        other => panic!("read_vex_bytes: expected SpecMissing, got {other:?}"),
    }

    let sbom = metadata_only_view(
        &json_fixture("kubescape/sbomsyftfiltered.node-agent-nginx-syft-filtered.json"),
        kinds::SBOM_FILTERED,
    );
    spec_missing(read_sbom(&sbom).map(drop), "read_sbom");
    match read_sbom_bytes(&serde_json::to_vec(&sbom).unwrap()) {
        Err(ReadError::Invalid(ParseError::SpecMissing { .. })) => {}
        other => panic!("read_sbom_bytes: expected SpecMissing, got {other:?}"),
    }

    let manifest = metadata_only_view(
        &yaml_fixture("kubescape/vulnerabilitymanifest.storage-01-example.yaml"),
        kinds::MANIFEST,
    );
    spec_missing(read_manifest(&manifest).map(drop), "read_manifest");
    match read_manifest_bytes(&serde_json::to_vec(&manifest).unwrap()) {
        Err(ReadError::Invalid(ParseError::SpecMissing { .. })) => {}
        other => panic!("read_manifest_bytes: expected SpecMissing, got {other:?}"),
    }

    let summary = metadata_only_view(
        &json!({"metadata": {"name": "deployment-nginx-nginx"}}),
        kinds::SUMMARY,
    );
    spec_missing(read_summary(&summary).map(drop), "read_summary");

    // A profile's learning state is in its annotations, so the view still reads; its spec
    // (what the container loaded) is unknown.
    let full = json_fixture("kubescape/containerprofile.kubevuln-nginx-ap.json");
    let profile =
        read_container_profile(&metadata_only_view(&full, kinds::CONTAINER_PROFILE)).unwrap();
    assert!(!profile.spec_present);
    assert!(profile.execs.is_empty() && profile.image_tag.is_none());
    assert_eq!(
        (profile.status, profile.completion),
        (Some(ProfileStatus::Learning), Some(Completion::Complete))
    );
    assert!(read_container_profile(&full).unwrap().spec_present);
}
