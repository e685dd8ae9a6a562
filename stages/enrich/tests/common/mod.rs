//! Builders for Kubescape objects in the shapes kubevuln writes (facts §4) and a validator for
//! the official OpenVEX schema with format validation on.
#![allow(dead_code)]

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use vexxy_events::pipeline::Observation;
use vexxy_events::{RunConfig, ValidatedRequest};

pub const DIGEST: &str = "sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae";

pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

pub fn openvex_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(shared().join("reference/openvex_json_schema.json"))
        .expect("schema readable");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

/// Panics with every schema error when `document` is not valid OpenVEX.
pub fn assert_valid_openvex(validator: &jsonschema::Validator, document: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(document)
        .take(20)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "OpenVEX schema violations: {errors:#?}");
}

pub fn request(repository: &str, job_id: &str) -> ValidatedRequest {
    let registry = repository.split('/').next().unwrap().to_string();
    ValidatedRequest {
        job_id: job_id.to_string(),
        image_ref: repository.to_string(),
        image_digest: DIGEST.to_string(),
        repository: repository.to_string(),
        registry,
        tag: None,
        request_msg_id: Some("msg-1".into()),
        analysis_duration_seconds: 60,
        config: RunConfig::default(),
        labels: Default::default(),
    }
}

pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + secs, 0).unwrap()
}

pub fn observation(partial: bool) -> Observation {
    Observation {
        pod: "vexxy-job-1-7c5ddbdf54-abcde".into(),
        replicaset: "vexxy-job-1-7c5ddbdf54".into(),
        instance_slug: "replicaset-vexxy-job-1-7c5ddbdf54-app-1a2b-3c4d".into(),
        instance_id: "apiVersion-apps/v1/namespace-vexxy-sandbox/kind-ReplicaSet/name-vexxy-job-1-7c5ddbdf54/containerName-app".into(),
        learning_status: if partial { "ready".into() } else { "completed".into() },
        learning_completion: if partial { "partial".into() } else { "complete".into() },
        window_start: t(0),
        window_end: t(60),
        container_restarts: 0,
        partial,
    }
}

/// One Grype-like match: (CVE, package name, version) with a purl.
#[derive(Clone, Debug)]
pub struct Match {
    pub cve: String,
    pub package: String,
    pub version: String,
    pub fix: Option<String>,
}

impl Match {
    pub fn new(cve: &str, package: &str, version: &str) -> Self {
        Match {
            cve: cve.into(),
            package: package.into(),
            version: version.into(),
            fix: None,
        }
    }
    pub fn fixed_in(mut self, version: &str) -> Self {
        self.fix = Some(version.into());
        self
    }
    pub fn purl(&self) -> String {
        format!(
            "pkg:deb/debian/{}@{}?arch=amd64&distro=debian-12",
            self.package, self.version
        )
    }
    pub fn url(&self) -> String {
        format!("https://security-tracker.debian.org/tracker/{}", self.cve)
    }
}

const KUBESCAPE_PRODUCT: &str = "pkg:oci/nginx@sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae?repository_url=docker.io%2Flibrary";

fn vex_object(statements: Vec<Value>, version: i64) -> Value {
    json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "OpenVulnerabilityExchangeContainer",
        "metadata": {"name": "replicaset-vexxy-job-1-7c5ddbdf54-app-1a2b-3c4d", "namespace": "kubescape",
                     "annotations": {"kubescape.io/status": "ready", "kubescape.io/completion": "complete"}},
        "spec": {
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": "4f1c2a0d7e9b3c5a6f8e1d2c3b4a59687f6e5d4c3b2a1908f7e6d5c4b3a29180",
            "author": "kubescape.io",
            "role": "smart vulnerability scanner :-)",
            "timestamp": "2025-06-15T15:06:40Z",
            "last_updated": "2025-06-15T15:16:40Z",
            "version": version,
            "tooling": "kubescape-vulnerability-analyzer",
            "statements": statements,
        }
    })
}

fn ks_status(m: &Match, loaded: bool) -> Value {
    if loaded {
        json!({"status": "affected", "impact_statement": "Vulnerable component is loaded into the memory"})
    } else {
        json!({"status": "not_affected", "justification": "vulnerable_code_not_present",
               "impact_statement": "Vulnerable component is not loaded into the memory"})
    }
    .as_object()
    .cloned()
    .map(|mut o| {
        o.insert("products".into(), json!([{"@id": KUBESCAPE_PRODUCT, "subcomponents": [{"@id": m.purl()}]}]));
        Value::Object(o)
    })
    .unwrap()
}

/// kubevuln main: vulnerability `@id` = URL, `name` = CVE, statement `@id`s, `action_statement` on affected.
pub fn main_vex(matches: &[(Match, bool)]) -> Value {
    let statements = matches
        .iter()
        .map(|(m, loaded)| {
            let mut s = ks_status(m, *loaded);
            let o = s.as_object_mut().unwrap();
            o.insert(
                "@id".into(),
                json!(format!(
                    "https://kubescape.io/vex/statement/{}/{}",
                    m.cve,
                    m.purl().replace('/', "%2F")
                )),
            );
            o.insert(
                "vulnerability".into(),
                json!({"@id": m.url(), "name": m.cve}),
            );
            if *loaded {
                o.remove("impact_statement");
                o.insert(
                    "action_statement".into(),
                    json!("Upgrade to a fixed version"),
                );
            }
            s
        })
        .collect();
    vex_object(statements, 3)
}

/// kubevuln v0.3.159: createVEX swaps (`@id` = CVE, `name` = URL), version 0, and updateVEX
/// appends the other mapping, leaving stale duplicates (`appended`: matches re-appended as
/// `not_affected` although the first copy became `affected`).
pub fn v0_3_159_vex(matches: &[(Match, bool)], appended: &[Match]) -> Value {
    let mut statements: Vec<Value> = matches
        .iter()
        .map(|(m, loaded)| {
            let mut s = ks_status(m, *loaded);
            s.as_object_mut().unwrap().insert(
                "vulnerability".into(),
                json!({"@id": m.cve, "name": m.url()}),
            );
            s
        })
        .collect();
    for m in appended {
        let mut s = ks_status(m, false);
        s.as_object_mut().unwrap().insert(
            "vulnerability".into(),
            json!({"@id": m.url(), "name": m.cve}),
        );
        statements.push(s);
    }
    vex_object(statements, 0)
}

pub fn manifest(name: &str, matches: &[Match]) -> Value {
    let matches: Vec<Value> = matches
        .iter()
        .map(|m| {
            json!({
                "vulnerability": {"id": m.cve, "dataSource": m.url(), "namespace": "debian:distro:debian:12",
                    "severity": "High",
                    "fix": match &m.fix { Some(v) => json!({"versions": [v], "state": "fixed"}),
                                           None => json!({"versions": [], "state": "not-fixed"}) }},
                "relatedVulnerabilities": [],
                "matchDetails": [],
                "artifact": {"id": format!("{}-id", m.package), "name": m.package, "version": m.version,
                             "type": "deb", "purl": m.purl(), "locations": [], "language": "", "licenses": [], "cpes": []}
            })
        })
        .collect();
    json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "VulnerabilityManifest",
        "metadata": {"name": name, "namespace": "kubescape"},
        "spec": {"metadata": {"withRelevancy": true, "tool": {"name": "grype", "version": "v0.92.2", "databaseVersion": "v6"},
                              "report": {"createdAt": "2025-06-15T15:06:00Z"}},
                 "payload": {"matches": matches, "source": {}, "distro": {}, "descriptor": {"name": "grype"}}}
    })
}

pub fn sbom(kind: &str, name: &str, packages: usize) -> Value {
    let artifacts: Vec<Value> = (0..packages)
        .map(|i| json!({"id": format!("id{i}"), "name": format!("pkg{i}"), "version": "1.0", "type": "deb",
                        "foundBy": "dpkg-db-cataloger", "locations": [{"path": format!("/usr/lib/pkg{i}.so")}],
                        "licenses": [], "language": "", "cpes": [], "purl": format!("pkg:deb/debian/pkg{i}@1.0")}))
        .collect();
    json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "kubescape"},
        "spec": {"metadata": {"tool": {"name": "syft", "version": "v1.18.1"}, "report": {"createdAt": "2025-06-15T15:05:00Z"}},
                 "syft": {"artifacts": artifacts, "artifactRelationships": [], "files": [],
                          "source": {"id": "x", "name": "nginx", "version": DIGEST, "type": "image", "metadata": {}},
                          "distro": {"name": "debian"}, "descriptor": {"name": "syft", "version": "v1.18.1"},
                          "schema": {"version": "16.0.20", "url": "https://raw.githubusercontent.com/anchore/syft/main/schema/json/schema-16.0.20.json"}}}
    })
}

pub fn container_profile(status: &str, completion: &str) -> Value {
    json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "ContainerProfile",
        "metadata": {"name": "replicaset-vexxy-job-1-7c5ddbdf54-app-1a2b-3c4d", "namespace": "vexxy-sandbox",
                     "annotations": {"kubescape.io/status": status, "kubescape.io/completion": completion}},
        "spec": {"execs": [{"path": "/usr/sbin/nginx", "args": []}], "opens": [{"path": "/usr/lib/libssl.so.3", "flags": []}]}
    })
}
