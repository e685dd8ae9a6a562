//! The CycloneDX 1.6 VEX enrich writes beside the OpenVEX document, validated against the official
//! CycloneDX 1.6 JSON schema (with its spdx and jsf schemas registered, so nothing is fetched) for
//! the same evidence the OpenVEX tests use: both kubevuln shapes, partial evidence, and the legacy
//! storage fixture. Each test also checks the CycloneDX entries say what the OpenVEX statements say.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use vexxy_enrich::{Evidence, SbomFacts, produce};

fn issuer() -> vexxy_enrich::Issuer {
    vexxy_enrich::Issuer::new("ACME Product Security", "https://security.acme.example/vex").unwrap()
}

fn schema(name: &str) -> Value {
    let text = std::fs::read_to_string(shared().join("reference/schemas").join(name))
        .unwrap_or_else(|e| panic!("cannot read the {name} schema: {e}"));
    serde_json::from_str(&text).expect("schema is JSON")
}

fn cyclonedx_validator() -> jsonschema::Validator {
    let registry = jsonschema::Registry::new()
        .add(
            "http://cyclonedx.org/schema/spdx.schema.json",
            schema("spdx.schema.json"),
        )
        .expect("spdx schema registers")
        .add(
            "http://cyclonedx.org/schema/jsf-0.82.schema.json",
            schema("jsf-0.82.schema.json"),
        )
        .expect("jsf schema registers")
        .prepare()
        .expect("registry prepares");
    jsonschema::options()
        .with_registry(&registry)
        .offline()
        .should_validate_formats(true)
        .build(&schema("bom-1.6.schema.json"))
        .expect("the CycloneDX 1.6 schema compiles offline")
}

fn assert_valid_cyclonedx(document: &Value) {
    let validator = cyclonedx_validator();
    let errors: Vec<String> = validator
        .iter_errors(document)
        .take(20)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "CycloneDX 1.6 schema violations: {errors:#?}"
    );
}

fn evidence_from(vex: Option<Value>, matches: &[(Match, bool)], partial: bool) -> Evidence {
    let relevant: Vec<Match> = matches
        .iter()
        .filter(|(_, l)| *l)
        .map(|(m, _)| m.clone())
        .collect();
    let all: Vec<Match> = matches.iter().map(|(m, _)| m.clone()).collect();
    let filtered = sbom(
        "SBOMSyftFiltered",
        "replicaset-vexxy-job-1-7c5ddbdf54-app-1a2b-3c4d",
        10,
    );
    let profile = if partial {
        ("ready", "partial")
    } else {
        ("completed", "complete")
    };
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
            vexxy_kubescape::read_manifest(&manifest("replicaset-x", &relevant))
                .unwrap()
                .into(),
        ),
        image_manifest: Some(
            vexxy_kubescape::read_manifest(&manifest("docker.io-library-nginx-1.27-c9b3ae", &all))
                .unwrap()
                .into(),
        ),
        image_sbom_packages: Some(40),
        image_packages: None,
    }
}

/// Produces the documents, validates the CycloneDX VEX and returns (OpenVEX, CycloneDX VEX).
fn run(repository: &str, evidence: &Evidence, partial: bool) -> (Value, Value) {
    let keys = BTreeMap::from([("vex", "analyses/job-1/evidence/vex.json")]);
    let produced = produce(
        &request(repository, "job-1"),
        &observation(partial),
        evidence,
        &keys,
        &issuer(),
    )
    .expect("produce");
    let openvex: Value =
        serde_json::from_slice(produced.openvex.as_ref().expect("OpenVEX written")).unwrap();
    let cdx: Value = serde_json::from_slice(
        produced
            .cyclonedx
            .as_ref()
            .expect("CycloneDX written with it"),
    )
    .unwrap();
    let sbom: Value = serde_json::from_slice(&produced.sbom_cyclonedx).unwrap();
    assert_valid_cyclonedx(&cdx);
    assert_valid_cyclonedx(&sbom);
    assert_same_conclusions(&openvex, &cdx, &sbom);
    (openvex, cdx)
}

/// Every OpenVEX statement is named by exactly one CycloneDX entry's `affects`, with the mapped
/// state, through a BOM-Link that resolves in the SBOM.
fn assert_same_conclusions(openvex: &Value, cdx: &Value, sbom: &Value) {
    let statements = openvex["statements"].as_array().unwrap();
    let product = openvex["statements"][0]["products"][0]["@id"]
        .as_str()
        .unwrap();
    assert_eq!(cdx["metadata"]["component"]["bom-ref"], product);
    assert_eq!(cdx["metadata"]["component"]["purl"], product);
    assert_eq!(sbom["metadata"]["component"]["bom-ref"], product);
    let serial = sbom["serialNumber"].as_str().unwrap();
    let link_prefix = format!("urn:cdx:{}/1#", serial.trim_start_matches("urn:uuid:"));
    let in_sbom: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["bom-ref"].as_str())
        .chain([product])
        .collect();
    // (vulnerability, package) → the entry naming it.
    let mut named: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for entry in cdx["vulnerabilities"].as_array().unwrap() {
        for affects in entry["affects"].as_array().unwrap() {
            let link = affects["ref"].as_str().unwrap();
            let bom_ref = vexxy_enrich::purl::decode(
                link.strip_prefix(&link_prefix)
                    .unwrap_or_else(|| panic!("{link} is not a BOM-Link into the SBOM {serial}")),
            );
            assert!(
                in_sbom.contains(&bom_ref.as_str()),
                "{bom_ref} is not in the SBOM"
            );
            // OpenVEX names the package without the scanner-specific qualifiers.
            let key = (
                entry["id"].as_str().unwrap().to_string(),
                vexxy_enrich::purl::scanner_neutral(&bom_ref),
            );
            assert!(
                named.insert(key.clone(), entry).is_none(),
                "{key:?} named twice"
            );
        }
    }
    assert_eq!(named.len(), statements.len());
    for statement in statements {
        let package = statement["products"][0]["subcomponents"][0]["@id"]
            .as_str()
            .unwrap_or(product);
        let id = statement["vulnerability"]["name"].as_str().unwrap();
        let entry = named[&(id.to_string(), package.to_string())];
        let expected_state = match statement["status"].as_str().unwrap() {
            "not_affected" => "not_affected",
            "affected" => "exploitable",
            "fixed" => "resolved",
            "under_investigation" => "in_triage",
            other => panic!("unknown status {other}"),
        };
        assert_eq!(entry["analysis"]["state"], expected_state);
        let openvex_status = entry["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "vexxy:openvex:status")
            .expect("the OpenVEX status is kept");
        assert_eq!(openvex_status["value"], statement["status"]);
        assert_eq!(
            entry["analysis"]["detail"],
            statement
                .get("status_notes")
                .cloned()
                .unwrap_or(Value::Null)
        );
    }
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

fn entry<'a>(cdx: &'a Value, id: &str) -> &'a Value {
    cdx["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .unwrap()
}

#[test]
fn main_shape_becomes_a_valid_cyclonedx_vex_with_mapped_states() {
    let m = sample();
    let (_, cdx) = run(
        "docker.io/library/nginx",
        &evidence_from(Some(main_vex(&m)), &m, false),
        false,
    );
    assert_eq!(cdx["bomFormat"], "CycloneDX");
    assert_eq!(cdx["specVersion"], "1.6");
    assert!(
        cdx["serialNumber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    let fixed = entry(&cdx, "CVE-2024-0001");
    assert_eq!(fixed["analysis"]["state"], "exploitable");
    assert_eq!(fixed["analysis"]["response"], serde_json::json!(["update"]));
    assert_eq!(
        fixed["recommendation"],
        "Upgrade openssl to 3.0.15-1 or later."
    );
    let unfixed = entry(&cdx, "CVE-2024-0003");
    assert_eq!(unfixed["analysis"]["state"], "exploitable");
    assert!(
        unfixed["analysis"].get("response").is_none(),
        "no fix known: no update response"
    );
    let not_loaded = entry(&cdx, "CVE-2024-0002");
    assert_eq!(not_loaded["analysis"]["state"], "not_affected");
    assert_eq!(
        not_loaded["analysis"]["justification"],
        "code_not_reachable"
    );
    let props = not_loaded["properties"].to_string();
    assert!(
        props.contains("vulnerable_code_not_in_execute_path"),
        "{props}"
    );
    let detail = not_loaded["analysis"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Not loaded while the container ran"),
        "{detail}"
    );
    assert_eq!(
        entry(&cdx, "GHSA-abcd-efgh-ijkl")["source"]["name"],
        "GitHub Advisories"
    );
    let tools = cdx["metadata"]["tools"]["components"].to_string();
    assert!(
        tools.contains("vexxy") && tools.contains("kubescape"),
        "{tools}"
    );
    assert_eq!(cdx["metadata"]["component"]["type"], "container");
}

#[test]
fn v0_3_159_shape_becomes_a_valid_cyclonedx_vex() {
    let m = sample();
    let appended = vec![m[0].0.clone(), m[1].0.clone()];
    let (_, cdx) = run(
        "docker.io/library/nginx",
        &evidence_from(Some(v0_3_159_vex(&m, &appended)), &m, false),
        false,
    );
    assert_eq!(cdx["vulnerabilities"].as_array().unwrap().len(), 4);
    assert_eq!(
        entry(&cdx, "CVE-2024-0001")["analysis"]["state"],
        "exploitable"
    );
}

#[test]
fn partial_evidence_is_in_triage_never_not_affected() {
    let m = sample();
    let (_, cdx) = run(
        "docker.io/library/nginx",
        &evidence_from(Some(main_vex(&m)), &m, true),
        true,
    );
    let states: Vec<&str> = cdx["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["analysis"]["state"].as_str().unwrap())
        .collect();
    assert!(!states.contains(&"not_affected"), "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == "in_triage").count(), 2);
    let detail = entry(&cdx, "CVE-2024-0002")["analysis"]["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains("did not complete"), "{detail}");
}

#[test]
fn partial_evidence_without_a_vex_becomes_a_valid_cyclonedx_vex() {
    let m = sample();
    let (_, cdx) = run(
        "docker.io/library/nginx",
        &evidence_from(None, &m, true),
        true,
    );
    assert_eq!(cdx["vulnerabilities"].as_array().unwrap().len(), 4);
}

#[test]
fn legacy_storage_fixture_becomes_a_valid_cyclonedx_vex() {
    let text = std::fs::read_to_string(
        shared().join("fixtures/kubescape/vex-container.storage-example-01.yaml"),
    )
    .unwrap();
    let object: Value = serde_yaml_ng::from_str(&text).unwrap();
    let evidence = Evidence {
        vex: Some(vexxy_kubescape::read_vex(&object).unwrap()),
        ..Evidence::default()
    };
    let (_, cdx) = run(
        "gcr.io/google-samples/microservices-demo/adservice",
        &evidence,
        false,
    );
    assert!(
        cdx["metadata"]["component"]["purl"]
            .as_str()
            .unwrap()
            .contains("repository_url=gcr.io/google-samples/microservices-demo/adservice")
    );
}

#[test]
fn the_serial_number_is_deterministic_per_job_and_output_is_byte_identical() {
    let m = sample();
    let evidence = evidence_from(Some(main_vex(&m)), &m, false);
    let keys = BTreeMap::new();
    let produce_for = |job: &str| {
        produce(
            &request("docker.io/library/nginx", job),
            &observation(false),
            &evidence,
            &keys,
            &issuer(),
        )
        .unwrap()
        .cyclonedx
        .unwrap()
    };
    assert_eq!(produce_for("job-1"), produce_for("job-1"));
    let serial =
        |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap()["serialNumber"].clone();
    assert_ne!(serial(produce_for("job-1")), serial(produce_for("job-2")));
}

#[test]
fn the_validator_rejects_a_document_with_an_unmapped_state() {
    let m = sample();
    let (_, mut cdx) = run(
        "docker.io/library/nginx",
        &evidence_from(Some(main_vex(&m)), &m, false),
        false,
    );
    cdx["vulnerabilities"][0]["analysis"]["state"] = "affected".into();
    assert!(
        !cyclonedx_validator().is_valid(&cdx),
        "OpenVEX's `affected` is not a CycloneDX state"
    );
}

#[test]
fn an_image_without_vulnerabilities_gets_neither_document() {
    let evidence = evidence_from(Some(main_vex(&[])), &[], false);
    let produced = produce(
        &request("docker.io/library/busybox", "job-1"),
        &observation(false),
        &evidence,
        &BTreeMap::new(),
        &issuer(),
    )
    .unwrap();
    assert!(produced.openvex.is_none() && produced.cyclonedx.is_none());
}
