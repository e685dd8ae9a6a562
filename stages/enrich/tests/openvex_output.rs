//! The documents enrich produces, checked against the official OpenVEX schema (format validation
//! on) for every Kubescape shape, partial evidence, large documents and empty images.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::*;
use serde_json::Value;
use vexxy_enrich::{Evidence, Produced, SbomFacts, filtered_sbom_document, produce};
use vexxy_events::completed::Completeness;

fn issuer() -> vexxy_enrich::Issuer {
    vexxy_enrich::Issuer::new("ACME Product Security", "https://security.acme.example/vex").unwrap()
}

fn evidence_from(
    vex: Option<Value>,
    relevant: &[Match],
    all: &[Match],
    packages: usize,
    profile: (&str, &str),
) -> Evidence {
    let filtered = sbom(
        "SBOMSyftFiltered",
        "replicaset-vexxy-job-1-7c5ddbdf54-app-1a2b-3c4d",
        packages / 4,
    );
    Evidence {
        vex: vex.map(|v| vexxy_kubescape::read_vex(&v).expect("VEX parses")),
        filtered_sbom: Some(SbomFacts::of(
            &vexxy_kubescape::read_sbom(&filtered).unwrap(),
        )),
        profile: Some(
            vexxy_kubescape::read_container_profile(&container_profile(profile.0, profile.1))
                .unwrap(),
        ),
        manifest: Some(
            vexxy_kubescape::read_manifest(&manifest("replicaset-x", relevant))
                .unwrap()
                .into(),
        ),
        image_manifest: Some(
            vexxy_kubescape::read_manifest(&manifest("docker.io-library-nginx-1.27-c9b3ae", all))
                .unwrap()
                .into(),
        ),
        image_sbom_packages: Some(packages as u64),
        image_packages: None,
    }
}

fn run(repository: &str, evidence: &Evidence, partial: bool) -> (Produced, Option<Value>) {
    let keys = BTreeMap::from([("vex", "analyses/job-1/evidence/vex.json")]);
    let produced = produce(
        &request(repository, "job-1"),
        &observation(partial),
        evidence,
        &keys,
        &issuer(),
    )
    .expect("produce");
    let vex = produced
        .openvex
        .as_ref()
        .map(|b| serde_json::from_slice::<Value>(b).expect("VEX is JSON"));
    if let Some(vex) = &vex {
        assert_valid_openvex(&openvex_validator(), vex);
        assert_eq!(
            vex["statements"].as_array().unwrap().len() as u64,
            produced.summary.total_cves_analyzed
        );
    }
    let s = &produced.summary;
    assert_eq!(
        s.total_cves_analyzed,
        s.affected + s.not_affected + s.fixed + s.under_investigation
    );
    (produced, vex)
}

fn statuses(vex: &Value) -> Vec<(String, String)> {
    vex["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["vulnerability"]["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn sample() -> Vec<(Match, bool)> {
    vec![
        (
            Match::new("CVE-2024-0001", "openssl", "3.0.11-1").fixed_in("3.0.15-1"),
            true,
        ),
        (Match::new("CVE-2024-0002", "libxml2", "2.9.14"), false),
        (Match::new("CVE-2024-0003", "zlib1g", "1.2.13"), true),
        (
            Match::new("GHSA-abcd-efgh-ijkl", "libxml2", "2.9.14"),
            false,
        ),
    ]
}

fn relevant_of(matches: &[(Match, bool)]) -> Vec<Match> {
    matches
        .iter()
        .filter(|(_, l)| *l)
        .map(|(m, _)| m.clone())
        .collect()
}

fn all_of(matches: &[(Match, bool)]) -> Vec<Match> {
    matches.iter().map(|(m, _)| m.clone()).collect()
}

#[test]
fn main_shape_becomes_valid_openvex_with_actions_and_justifications() {
    let m = sample();
    let evidence = evidence_from(
        Some(main_vex(&m)),
        &relevant_of(&m),
        &all_of(&m),
        40,
        ("completed", "complete"),
    );
    let (produced, vex) = run("docker.io/library/nginx", &evidence, false);
    let vex = vex.expect("a VEX for an image with vulnerabilities");
    assert_eq!(
        statuses(&vex),
        vec![
            ("CVE-2024-0001".into(), "affected".into()),
            ("CVE-2024-0002".into(), "not_affected".into()),
            ("CVE-2024-0003".into(), "affected".into()),
            ("GHSA-abcd-efgh-ijkl".into(), "not_affected".into()),
        ]
    );
    let first = &vex["statements"][0];
    assert_eq!(
        first["action_statement"],
        "Upgrade openssl to 3.0.15-1 or later."
    );
    assert_eq!(
        first["vulnerability"]["@id"],
        "https://security-tracker.debian.org/tracker/CVE-2024-0001"
    );
    assert_eq!(
        first["products"][0]["@id"],
        "pkg:oci/nginx@sha256%3A6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae?repository_url=index.docker.io/library/nginx"
    );
    // Without `distro`: Syft and Trivy spell it differently, and go-vex needs every qualifier
    // of the VEX purl in the scanner's.
    assert_eq!(
        first["products"][0]["subcomponents"][0]["@id"],
        "pkg:deb/debian/openssl@3.0.11-1?arch=amd64"
    );
    let second = &vex["statements"][1];
    // Not loaded: in the image, so present, but not in the execute path of the observed run.
    assert_eq!(
        second["justification"],
        "vulnerable_code_not_in_execute_path"
    );
    assert!(second.get("impact_statement").is_none());
    let notes = second["status_notes"].as_str().unwrap();
    assert!(
        notes.starts_with("Not loaded while the container ran ")
            && notes.ends_with("(learning completed): in the image, not in the execute path."),
        "{notes}"
    );
    assert_eq!(vex["author"], "ACME Product Security");
    assert_eq!(vex["version"], 1);
    assert_eq!(vex["@id"], "https://security.acme.example/vex/job-1/vex");
    assert!(vex["tooling"].as_str().unwrap().contains("Kubescape"));
    assert!(vex["tooling"].as_str().unwrap().contains("main"));
    assert_eq!(produced.summary.affected, 2);
    assert_eq!(produced.summary.not_affected, 2);
    assert_eq!(produced.summary.distinct_vulnerabilities, 4);
    assert_eq!(produced.summary.total_components_in_image, Some(40));
    assert_eq!(produced.summary.relevant_components, 10);
    assert_eq!(produced.quality.loaded_package_ratio, Some(0.25));
    assert_eq!(produced.quality.kubescape_shape, "main");
    assert_eq!(produced.quality.completeness, Completeness::Complete);
}

#[test]
fn v0_3_159_swapped_fields_version_zero_and_duplicates_are_repaired() {
    let m = sample();
    // The loaded CVE-2024-0001 was re-appended as not_affected by a later rescan: affected must win.
    let appended = vec![m[0].0.clone(), m[1].0.clone()];
    let evidence = evidence_from(
        Some(v0_3_159_vex(&m, &appended)),
        &relevant_of(&m),
        &all_of(&m),
        40,
        ("completed", "complete"),
    );
    let (produced, vex) = run("docker.io/library/nginx", &evidence, false);
    let vex = vex.unwrap();
    let got = statuses(&vex);
    assert_eq!(got.len(), 4, "duplicates merged: {got:?}");
    assert_eq!(got[0], ("CVE-2024-0001".into(), "affected".into()));
    assert_eq!(got[1], ("CVE-2024-0002".into(), "not_affected".into()));
    assert_eq!(
        vex["statements"][0]["vulnerability"]["@id"],
        "https://security-tracker.debian.org/tracker/CVE-2024-0001"
    );
    assert_eq!(vex["version"], 1);
    assert_eq!(produced.quality.kubescape_shape, "v0.3.159");
    assert!(vex["tooling"].as_str().unwrap().contains("v0.3.159"));
}

#[test]
fn a_loaded_match_only_appended_on_a_rescan_is_affected_not_hidden() {
    // kubevuln v0.3.159 appends a match first reported on a rescan with the other field mapping
    // and never marks it affected (kubevuln #394): its VEX says not_affected although the
    // relevancy-filtered manifest lists the package as loaded.
    let m = sample();
    let created: Vec<(Match, bool)> = m
        .iter()
        .filter(|(x, _)| x.cve != "CVE-2024-0003")
        .cloned()
        .collect();
    let late = vec![m[2].0.clone()];
    let evidence = evidence_from(
        Some(v0_3_159_vex(&created, &late)),
        &relevant_of(&m),
        &all_of(&m),
        40,
        ("completed", "complete"),
    );
    let (produced, vex) = run("docker.io/library/nginx", &evidence, false);
    let got = statuses(&vex.unwrap());
    assert!(
        got.contains(&("CVE-2024-0003".into(), "affected".into())),
        "the loaded zlib1g match must be affected: {got:?}"
    );
    assert_eq!(produced.summary.affected, 2);
    assert_eq!(produced.summary.not_affected, 2);
    let summary: Value = serde_json::from_slice(&produced.summary_json).unwrap();
    let notes = summary["notes"].to_string();
    assert!(
        notes.contains("kubevuln #394"),
        "the promotion is explained: {notes}"
    );
}

#[test]
fn legacy_storage_fixture_becomes_valid_openvex() {
    let text = std::fs::read_to_string(
        shared().join("fixtures/kubescape/vex-container.storage-example-01.yaml"),
    )
    .unwrap();
    let object: Value = serde_yaml_ng::from_str(&text).unwrap();
    let evidence = Evidence {
        vex: Some(vexxy_kubescape::read_vex(&object).unwrap()),
        ..Evidence::default()
    };
    let (produced, vex) = run(
        "gcr.io/google-samples/microservices-demo/adservice",
        &evidence,
        false,
    );
    let vex = vex.unwrap();
    assert_eq!(produced.quality.kubescape_shape, "legacy");
    assert!(produced.summary.total_cves_analyzed >= 1);
    assert!(
        vex["statements"][0]["products"][0]["@id"]
            .as_str()
            .unwrap()
            .contains("repository_url=gcr.io/google-samples/microservices-demo/adservice")
    );
    assert_eq!(produced.summary.total_components_in_image, None);
}

#[test]
fn partial_evidence_turns_not_affected_into_under_investigation() {
    let m = sample();
    let evidence = evidence_from(
        Some(main_vex(&m)),
        &relevant_of(&m),
        &all_of(&m),
        40,
        ("ready", "partial"),
    );
    let (produced, vex) = run("docker.io/library/nginx", &evidence, true);
    let vex = vex.unwrap();
    assert!(statuses(&vex).iter().all(|(_, s)| s != "not_affected"));
    assert_eq!(produced.summary.not_affected, 0);
    assert_eq!(produced.summary.affected, 2);
    assert_eq!(produced.summary.under_investigation, 2);
    let notes = vex["statements"][1]["status_notes"].as_str().unwrap();
    assert!(notes.contains("did not complete"), "{notes}");
    assert_eq!(produced.quality.completeness, Completeness::Partial);
    let summary: Value = serde_json::from_slice(&produced.summary_json).unwrap();
    assert_eq!(summary["confidence"], "low");
    assert_eq!(summary["analysis_method"], "kubescape_runtime");
}

#[test]
fn a_profile_that_is_still_learning_counts_as_partial_even_if_wait_said_complete() {
    let m = sample();
    let evidence = evidence_from(
        Some(main_vex(&m)),
        &relevant_of(&m),
        &all_of(&m),
        40,
        ("ready", "complete"),
    );
    let (produced, _) = run("docker.io/library/nginx", &evidence, false);
    assert_eq!(produced.summary.not_affected, 0);
    assert_eq!(produced.quality.completeness, Completeness::Partial);
}

#[test]
fn partial_evidence_without_a_vex_uses_the_manifests() {
    let m = sample();
    let evidence = evidence_from(
        None,
        &relevant_of(&m),
        &all_of(&m),
        40,
        ("ready", "partial"),
    );
    let (produced, vex) = run("docker.io/library/nginx", &evidence, true);
    let vex = vex.unwrap();
    assert_eq!(produced.summary.affected, 2);
    assert_eq!(produced.summary.under_investigation, 2);
    assert_eq!(produced.summary.not_affected, 0);
    assert_eq!(produced.quality.kubescape_shape, "absent");
    assert_eq!(
        vex["statements"][0]["action_statement"],
        "Upgrade openssl to 3.0.15-1 or later."
    );
}

#[test]
fn an_image_without_vulnerabilities_has_zero_counts_and_no_vex() {
    let evidence = evidence_from(Some(main_vex(&[])), &[], &[], 12, ("completed", "complete"));
    let (produced, vex) = run("docker.io/library/busybox", &evidence, false);
    assert!(vex.is_none());
    assert_eq!(produced.summary.total_cves_analyzed, 0);
    assert_eq!(produced.summary.distinct_vulnerabilities, 0);
    let summary: Value = serde_json::from_slice(&produced.summary_json).unwrap();
    assert_eq!(summary["counts"]["total_cves_analyzed"], 0);
}

#[test]
fn product_purls_for_ghcr_and_a_registry_with_a_port() {
    let m = sample();
    for (repository, expected) in [
        (
            "ghcr.io/acme/web",
            "pkg:oci/web@sha256%3A6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae?repository_url=ghcr.io/acme/web",
        ),
        (
            "registry.local:5000/team/api",
            "pkg:oci/api@sha256%3A6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae?repository_url=registry.local:5000/team/api",
        ),
    ] {
        let evidence = evidence_from(
            Some(main_vex(&m)),
            &relevant_of(&m),
            &all_of(&m),
            8,
            ("completed", "complete"),
        );
        let (_, vex) = run(repository, &evidence, false);
        assert_eq!(
            vex.unwrap()["statements"][0]["products"][0]["@id"],
            expected
        );
    }
}

#[test]
fn output_is_byte_identical_on_redelivery_and_the_sbom_is_verbatim() {
    let m = sample();
    let evidence = evidence_from(
        Some(v0_3_159_vex(&m, &[m[0].0.clone()])),
        &relevant_of(&m),
        &all_of(&m),
        40,
        ("completed", "complete"),
    );
    let (a, _) = run("docker.io/library/nginx", &evidence, false);
    let (b, _) = run("docker.io/library/nginx", &evidence, false);
    assert_eq!(a.openvex, b.openvex);
    assert_eq!(a.summary_json, b.summary_json);
    let object = sbom(
        "SBOMSyftFiltered",
        "replicaset-vexxy-job-1-7c5ddbdf54-app-1a2b-3c4d",
        10,
    );
    let document = filtered_sbom_document(Some(&object)).unwrap();
    let written: Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(&written, object.pointer("/spec/syft").unwrap());
    assert_eq!(document, filtered_sbom_document(Some(&object)).unwrap());
}

#[test]
fn ten_thousand_statements_validate_and_count() {
    let matches: Vec<(Match, bool)> = (0..10_000)
        .map(|i| {
            (
                Match::new(
                    &format!("CVE-2024-{i:05}"),
                    &format!("pkg{}", i % 500),
                    "1.0",
                ),
                i % 7 == 0,
            )
        })
        .collect();
    let vex = v0_3_159_vex(
        &matches,
        &matches[..100]
            .iter()
            .map(|(m, _)| m.clone())
            .collect::<Vec<_>>(),
    );
    let evidence = evidence_from(
        Some(vex),
        &relevant_of(&matches),
        &all_of(&matches),
        5000,
        ("completed", "complete"),
    );
    let started = Instant::now();
    let (produced, vex) = run("docker.io/library/nginx", &evidence, false);
    let vex = vex.unwrap();
    assert_eq!(produced.summary.total_cves_analyzed, 10_000);
    assert_eq!(
        produced.summary.affected,
        (0..10_000).filter(|i| i % 7 == 0).count() as u64
    );
    let names: Vec<&str> = vex["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["vulnerability"]["name"].as_str().unwrap())
        .collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    eprintln!(
        "10k statements: produce+validate in {:?}",
        started.elapsed()
    );
}

#[test]
fn the_validator_rejects_kubescapes_raw_document() {
    // Proves the schema check has teeth: kubevuln's own spec (version 0, a bare-hex `@id`,
    // `@id` = CVE in v0.3.159) is not valid OpenVEX, which is why enrich rewrites it.
    let m = sample();
    let raw = v0_3_159_vex(&m, &[]);
    let validator = openvex_validator();
    let errors: Vec<String> = validator
        .iter_errors(&raw["spec"])
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("minimum") || e.contains("less than")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("iri")), "{errors:?}");
}
