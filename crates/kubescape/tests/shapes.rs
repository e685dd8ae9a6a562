//! Both kubevuln generations' quirks normalise to the same findings; bad input gives precise errors.

use serde_json::{Value, json};
use vexxy_kubescape::{KubevulnShape, ParseError, VexStatus, read_vex};

const PRODUCT: &str = "pkg:oci/nginx@sha256:aa11?repository_url=docker.io%2Flibrary";
const URL1: &str = "https://nvd.nist.gov/vuln/detail/CVE-2024-0001";
const URL2: &str = "https://nvd.nist.gov/vuln/detail/CVE-2024-0002";
const LIBC: &str = "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12";
const ZLIB: &str = "pkg:deb/debian/zlib1g@1.2.13?arch=amd64&distro=debian-12";

fn statement(id: Option<&str>, vuln_id: &str, vuln_name: &str, purl: &str, status: &str) -> Value {
    let mut s = json!({
        "vulnerability": {"@id": vuln_id, "name": vuln_name},
        "products": [{"@id": PRODUCT, "subcomponents": [{"@id": purl}]}],
        "status": status,
    });
    if status == "affected" {
        s["impact_statement"] = json!("Vulnerable component is loaded into the memory");
    } else {
        s["justification"] = json!("vulnerable_code_not_present");
        s["impact_statement"] = json!("Vulnerable component is not loaded into the memory");
    }
    if let Some(id) = id {
        s["@id"] = json!(id);
    }
    s
}

fn vex(statements: Vec<Value>, version: i64) -> Value {
    json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "OpenVulnerabilityExchangeContainer",
        "metadata": {"name": "replicaset-nginx-7c5ddbdf54-nginx-1234-abcd", "namespace": "kubescape"},
        "spec": {"@context": "https://openvex.dev/ns/v0.2.0",
                 "@id": "3f1c0ffee0d1e5b1a7f9c0d2a4b6c8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1",
                 "author": "kubescape.io", "role": "smart vulnerability scanner :-)",
                 "timestamp": "2026-07-21T10:00:00Z", "last_updated": "2026-07-21T10:10:00Z",
                 "version": version, "tooling": "kubescape-vulnerability-analyzer",
                 "statements": statements}
    })
}

/// v0.3.159 after a rescan: created statements (CVE in `@id`), the loaded one promoted, and the
/// same matches appended by `updateVEX` the other way round, still `not_affected`.
fn v0_3_159_with_duplicates() -> Value {
    vex(
        vec![
            statement(None, "CVE-2024-0001", URL1, LIBC, "affected"),
            statement(None, "CVE-2024-0002", URL2, ZLIB, "not_affected"),
            statement(None, URL1, "CVE-2024-0001", LIBC, "not_affected"),
            statement(None, URL2, "CVE-2024-0002", ZLIB, "not_affected"),
            statement(None, URL1, "CVE-2024-0001", LIBC, "not_affected"),
        ],
        2,
    )
}

fn main_shape() -> Value {
    let sid = |cve: &str, purl: &str| {
        format!(
            "https://kubescape.io/vex/statement/{cve}/{}",
            purl.replace('/', "%2F").replace('?', "%3F")
        )
    };
    let mut affected = statement(
        Some(&sid("CVE-2024-0001", LIBC)),
        URL1,
        "CVE-2024-0001",
        LIBC,
        "affected",
    );
    affected.as_object_mut().unwrap().remove("impact_statement");
    affected["action_statement"] = json!(format!("Upgrade {LIBC} to version 2.36-10"));
    vex(
        vec![
            affected,
            statement(
                Some(&sid("CVE-2024-0002", ZLIB)),
                URL2,
                "CVE-2024-0002",
                ZLIB,
                "not_affected",
            ),
        ],
        1,
    )
}

type Essentials = Vec<(String, Option<String>, String, Option<String>, VexStatus)>;

fn essentials(v: &vexxy_kubescape::KubescapeVex) -> Essentials {
    v.findings
        .iter()
        .map(|f| {
            (
                f.vulnerability_id.clone(),
                f.data_source_url.clone(),
                f.product_id.clone(),
                f.subcomponent_purl.clone(),
                f.status,
            )
        })
        .collect()
}

#[test]
fn v0_3_159_duplicates_merge_and_affected_survives() {
    let v = read_vex(&v0_3_159_with_duplicates()).unwrap();
    assert_eq!(v.shape, KubevulnShape::V0_3_159);
    assert_eq!(v.statement_count, 5);
    assert_eq!(v.findings.len(), 2);
    assert_eq!(v.duplicates_merged, 3);
    assert_eq!(v.conflicting_duplicates, 2);
    let libc = &v.findings[0];
    assert_eq!(libc.vulnerability_id, "CVE-2024-0001");
    assert_eq!(libc.data_source_url.as_deref(), Some(URL1));
    assert_eq!(
        libc.status,
        VexStatus::Affected,
        "the stale appended not_affected copies must not win"
    );
    assert_eq!(libc.justification, None);
    assert_eq!(libc.statement_index, 0);
    assert_eq!(v.findings[1].status, VexStatus::NotAffected);
    assert_eq!(
        v.findings[1].statement_index, 3,
        "equal status: the later statement wins"
    );
}

#[test]
fn both_generations_normalise_to_the_same_findings() {
    let old = read_vex(&v0_3_159_with_duplicates()).unwrap();
    let new = read_vex(&main_shape()).unwrap();
    assert_eq!(new.shape, KubevulnShape::Main);
    assert_eq!(new.duplicates_merged, 0);
    assert_eq!(essentials(&old), essentials(&new));
}

#[test]
fn statement_order_of_duplicates_does_not_change_the_verdict() {
    let mut doc = v0_3_159_with_duplicates();
    doc["spec"]["statements"].as_array_mut().unwrap().reverse();
    let v = read_vex(&doc).unwrap();
    let libc = v
        .findings
        .iter()
        .find(|f| f.vulnerability_id == "CVE-2024-0001")
        .unwrap();
    assert_eq!(libc.status, VexStatus::Affected);
}

#[test]
fn later_last_updated_wins_between_equally_cautious_duplicates() {
    let mut a = statement(None, "CVE-2024-0002", URL2, ZLIB, "not_affected");
    a["last_updated"] = json!("2026-07-22T00:00:00Z");
    a["impact_statement"] = json!("newer");
    let mut b = statement(None, "CVE-2024-0002", URL2, ZLIB, "not_affected");
    b["last_updated"] = json!("2026-07-21T00:00:00Z");
    let v = read_vex(&vex(vec![a, b], 0)).unwrap();
    assert_eq!(v.findings[0].impact_statement.as_deref(), Some("newer"));
}

#[test]
fn an_image_without_vulnerabilities_is_undetermined_not_an_error() {
    let v = read_vex(&vex(vec![], 0)).unwrap();
    assert_eq!(v.shape, KubevulnShape::Undetermined);
    assert!(v.findings.is_empty());
    let mut null_statements = vex(vec![], 0);
    null_statements["spec"]["statements"] = Value::Null;
    assert!(read_vex(&null_statements).unwrap().findings.is_empty());
}

#[test]
fn metadata_only_list_items_are_refused() {
    let mut stripped = vex(vec![], 0);
    stripped["spec"] = json!({});
    let err = read_vex(&stripped).unwrap_err();
    assert!(matches!(err, ParseError::SpecMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("resourceVersion=fullSpec"),
        "{err}"
    );
    stripped.as_object_mut().unwrap().remove("spec");
    assert!(matches!(
        read_vex(&stripped).unwrap_err(),
        ParseError::SpecMissing { .. }
    ));
}

#[test]
fn errors_name_the_object_and_field() {
    let mut bad_status = vex(
        vec![statement(None, "CVE-2024-0001", URL1, LIBC, "maybe")],
        0,
    );
    let err = read_vex(&bad_status).unwrap_err().to_string();
    assert!(
        err.contains("replicaset-nginx-7c5ddbdf54-nginx-1234-abcd"),
        "{err}"
    );
    assert!(err.contains("spec.statements[0].status"), "{err}");
    assert!(err.contains("\"maybe\""), "{err}");

    bad_status["spec"]["version"] = json!("seven");
    let err = read_vex(&bad_status).unwrap_err();
    match &err {
        ParseError::InvalidField { path, .. } => assert_eq!(path, "spec.version"),
        other => panic!("unexpected {other}"),
    }

    let mut bad_time = vex(vec![], 0);
    bad_time["spec"]["timestamp"] = json!("yesterday");
    assert!(
        read_vex(&bad_time)
            .unwrap_err()
            .to_string()
            .contains("spec.timestamp")
    );

    let mut no_cve = vex(vec![statement(None, "", "", LIBC, "affected")], 0);
    assert!(
        read_vex(&no_cve)
            .unwrap_err()
            .to_string()
            .contains("spec.statements[0].vulnerability")
    );
    no_cve["spec"]["statements"][0]["vulnerability"] = json!({"name": "CVE-1"});
    no_cve["spec"]["statements"][0]["products"] = json!([]);
    assert!(
        read_vex(&no_cve)
            .unwrap_err()
            .to_string()
            .contains("spec.statements[0].products")
    );

    let wrong = json!({"kind": "SBOMSyftFiltered", "metadata": {"name": "x"}, "spec": {}});
    assert!(matches!(
        read_vex(&wrong).unwrap_err(),
        ParseError::WrongKind { .. }
    ));
    assert!(read_vex(&json!([1])).is_err());
}

#[test]
fn a_non_url_id_beside_a_cve_name_is_kept_as_an_alias() {
    let v = read_vex(&vex(
        vec![statement(
            None,
            "GHSA-xxxx-yyyy-zzzz",
            "CVE-2024-0001",
            LIBC,
            "affected",
        )],
        0,
    ))
    .unwrap();
    assert_eq!(v.findings[0].vulnerability_id, "CVE-2024-0001");
    assert_eq!(v.findings[0].aliases, ["GHSA-xxxx-yyyy-zzzz"]);
    assert_eq!(v.findings[0].data_source_url, None);
}
