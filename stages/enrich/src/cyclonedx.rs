//! Renders the model as a CycloneDX 1.6 VEX (`vex.cdx.json`), from the same statements the
//! OpenVEX writer renders, so the two documents can never disagree about a finding.
//!
//! One `vulnerabilities[]` entry per statement (vulnerability, package): CycloneDX keeps the
//! analysis per vulnerability entry, and the same CVE can be exploitable in one package and not
//! present in another. `affects[].ref` points at the package component (bom-ref = its purl), or at
//! the image when Kubescape named no package.
//!
//! Mappings (OpenVEX → CycloneDX `analysis`):
//! * status: not_affected → `not_affected`, affected → `exploitable`, fixed → `resolved`,
//!   under_investigation → `in_triage`;
//! * justification: vulnerable_code_not_present → `code_not_present`,
//!   vulnerable_code_not_in_execute_path → `code_not_reachable`,
//!   inline_mitigations_already_exist → `protected_by_mitigating_control`; **lossy**:
//!   component_not_present → `code_not_present` and
//!   vulnerable_code_cannot_be_controlled_by_adversary → `requires_environment`;
//! * status_notes → `analysis.detail`; action_statement → `recommendation`, with `response`
//!   `update` when a fixed version is known.
//!
//! The OpenVEX values are always kept in `properties` (`vexxy:openvex:status`,
//! `vexxy:openvex:justification`), and a lossy mapping is flagged with `vexxy:mapping:lossy`, so
//! nothing the analysis concluded is lost in translation.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::model::{Justification, Statement, VexStatus};
use crate::openvex::rfc3339;

pub const SPEC_VERSION: &str = "1.6";

/// Document-level fields.
#[derive(Debug, Clone)]
pub struct BomInfo<'a> {
    /// The OpenVEX document IRI; the serial number is derived from it (and so from the job id).
    pub document_id: &'a str,
    pub timestamp: DateTime<Utc>,
    /// The image purl (also the OpenVEX product).
    pub product: &'a str,
    /// `registry/path` of the image, the container component's name.
    pub repository: &'a str,
    pub digest: &'a str,
    /// What produced the evidence, e.g. `Kubescape kubevuln VEX (shape main)`.
    pub kubescape_tooling: &'a str,
}

/// `urn:uuid:` + a name-based (v5) UUID of the document IRI: the same job always gets the same
/// serial number, so a redelivered job writes byte-identical documents.
pub fn serial_number(document_id: &str) -> String {
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, document_id.as_bytes());
    format!("urn:uuid:{uuid}")
}

pub fn analysis_state(status: VexStatus) -> &'static str {
    match status {
        VexStatus::NotAffected => "not_affected",
        VexStatus::Affected => "exploitable",
        VexStatus::Fixed => "resolved",
        VexStatus::UnderInvestigation => "in_triage",
    }
}

/// The CycloneDX justification and whether the mapping loses meaning.
pub fn analysis_justification(justification: Justification) -> (&'static str, bool) {
    match justification {
        Justification::VulnerableCodeNotPresent => ("code_not_present", false),
        Justification::VulnerableCodeNotInExecutePath => ("code_not_reachable", false),
        Justification::InlineMitigationsAlreadyExist => ("protected_by_mitigating_control", false),
        Justification::ComponentNotPresent => ("code_not_present", true),
        Justification::VulnerableCodeCannotBeControlledByAdversary => {
            ("requires_environment", true)
        }
    }
}

/// Serialises the BOM. Unlike OpenVEX, a CycloneDX VEX may hold no vulnerabilities, but enrich
/// writes one only when the OpenVEX document exists, so both formats appear together.
///
/// Serialised straight from the statements (no intermediate `serde_json::Value` tree): with
/// 10,000 statements the tree and its copy cost more time and memory than the document itself.
pub fn render(
    info: &BomInfo<'_>,
    statements: &[Statement<'_>],
) -> Result<Vec<u8>, serde_json::Error> {
    let mut packages: Vec<&str> = statements
        .iter()
        .filter_map(|s| s.subcomponent)
        .filter(|purl| *purl != info.product)
        .collect();
    packages.sort_unstable();
    packages.dedup();
    let serial_number = serial_number(info.document_id);
    let timestamp = rfc3339(info.timestamp);
    let document = Bom {
        bom_format: "CycloneDX",
        spec_version: SPEC_VERSION,
        serial_number: &serial_number,
        version: 1,
        metadata: Metadata {
            timestamp: &timestamp,
            tools: Tools {
                components: [
                    Tool {
                        kind: "application",
                        name: "vexxy",
                        version: Some(env!("CARGO_PKG_VERSION")),
                        description: None,
                    },
                    Tool {
                        kind: "application",
                        name: "kubescape",
                        version: None,
                        description: Some(info.kubescape_tooling),
                    },
                ],
            },
            component: Container {
                kind: "container",
                bom_ref: info.product,
                name: info.repository,
                version: info.digest,
                purl: info.product,
            },
            properties: [Property {
                name: "vexxy:openvex:id",
                value: info.document_id,
            }],
        },
        components: Components(&packages),
        vulnerabilities: Vulnerabilities { info, statements },
    };
    let mut out = Vec::with_capacity(1024 + statements.len() * 900);
    serde_json::to_writer_pretty(&mut out, &document)?;
    out.push(b'\n');
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom<'a> {
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: &'a str,
    version: u64,
    metadata: Metadata<'a>,
    components: Components<'a>,
    vulnerabilities: Vulnerabilities<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    timestamp: &'a str,
    tools: Tools<'a>,
    component: Container<'a>,
    properties: [Property<'a>; 1],
}

#[derive(Serialize)]
struct Tools<'a> {
    components: [Tool<'a>; 2],
}

#[derive(Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

#[derive(Serialize)]
struct Container<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: &'a str,
    name: &'a str,
    version: &'a str,
    purl: &'a str,
}

#[derive(Serialize)]
struct Property<'a> {
    name: &'static str,
    value: &'a str,
}

/// The package components, one per distinct purl, in purl order.
struct Components<'a>(&'a [&'a str]);

impl Serialize for Components<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|purl| {
            let (name, version) = purl_name_version(purl);
            Library {
                kind: "library",
                bom_ref: purl,
                name,
                version,
                purl,
            }
        }))
    }
}

/// A library component named after the purl's name and version.
#[derive(Serialize)]
struct Library<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: &'a str,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    purl: &'a str,
}

struct Vulnerabilities<'a> {
    info: &'a BomInfo<'a>,
    statements: &'a [Statement<'a>],
}

impl Serialize for Vulnerabilities<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.statements.iter().map(|s| vulnerability(self.info, s)))
    }
}

#[derive(Serialize)]
struct Vulnerability<'a> {
    #[serde(rename = "bom-ref")]
    bom_ref: String,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recommendation: Option<&'a str>,
    analysis: Analysis<'a>,
    affects: [Affects<'a>; 1],
    properties: Vec<Property<'static>>,
}

#[derive(Serialize)]
struct Source<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

#[derive(Serialize)]
struct Analysis<'a> {
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    justification: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<[&'static str; 1]>,
}

#[derive(Serialize)]
struct Affects<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
}

fn vulnerability<'a>(info: &'a BomInfo<'_>, s: &'a Statement<'_>) -> Vulnerability<'a> {
    let mut properties = vec![Property {
        name: "vexxy:openvex:status",
        value: s.status.as_str(),
    }];
    let mut justification = None;
    if let (VexStatus::NotAffected, Some(openvex)) = (s.status, s.justification) {
        let (mapped, lossy) = analysis_justification(openvex);
        justification = Some(mapped);
        properties.push(Property {
            name: "vexxy:openvex:justification",
            value: openvex.as_str(),
        });
        if lossy {
            properties.push(Property {
                name: "vexxy:mapping:lossy",
                value: "justification",
            });
        }
    }
    let action = match s.status {
        VexStatus::Affected => s.action_statement.as_deref(),
        _ => None,
    };
    Vulnerability {
        bom_ref: vulnerability_ref(info.document_id, s),
        id: s.vulnerability,
        source: source_of(s),
        recommendation: action,
        analysis: Analysis {
            state: analysis_state(s.status),
            justification,
            detail: s.status_notes.as_deref(),
            response: action
                .filter(|a| names_a_fixed_version(a))
                .map(|_| ["update"]),
        },
        affects: [Affects {
            reference: s.subcomponent.unwrap_or(info.product),
        }],
        properties,
    }
}

/// `transform::action_for` words a known fix as "Upgrade <package> to <versions> or later.";
/// any other action (no fix known, or Kubescape's generic "Upgrade to a fixed version") is
/// advice, not an `update` response.
fn names_a_fixed_version(action: &str) -> bool {
    action.starts_with("Upgrade ") && action.contains(" to ") && action.ends_with(" or later.")
}

/// A bom-ref unique per (vulnerability, package), stable across runs.
fn vulnerability_ref(document_id: &str, s: &Statement<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(document_id.as_bytes());
    hasher.update([0]);
    hasher.update(s.vulnerability.as_bytes());
    hasher.update([0]);
    hasher.update(s.subcomponent.unwrap_or("").as_bytes());
    format!(
        "vuln:{}:{}",
        s.vulnerability,
        hex::encode(&hasher.finalize()[..8])
    )
}

fn source_of<'a>(s: &Statement<'a>) -> Option<Source<'a>> {
    let name = if s.vulnerability.starts_with("CVE-") {
        Some("NVD")
    } else if s.vulnerability.starts_with("GHSA-") {
        Some("GitHub Advisories")
    } else {
        None
    };
    let url = s.vulnerability_iri;
    (name.is_some() || url.is_some()).then_some(Source { name, url })
}

/// `pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64` → (`libssl3`, `3.0.8-r0`), percent-decoded.
///
/// Split by hand on purpose: the `packageurl` crate normalises names per type (pypi
/// `PyYAML` → `pyyaml`, npm lowercased) and refuses purls the spec's type rules reject (a pypi
/// namespace, a swift one missing), where a component must keep the name the SBOM gives the
/// package and a purl Grype matched must still name it.
fn purl_name_version(purl: &str) -> (String, Option<String>) {
    let without_extras = purl.split(['?', '#']).next().unwrap_or(purl);
    let (path, version) = match without_extras.rsplit_once('@') {
        Some((path, version)) if !path.ends_with(':') => (path, Some(decode(version))),
        _ => (without_extras, None),
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    let name = if name.is_empty() { purl } else { name };
    (decode(name), version)
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_deterministic_v5_uuids() {
        let a = serial_number("https://vexxy.io/analyses/job-1/vex");
        assert_eq!(a, serial_number("https://vexxy.io/analyses/job-1/vex"));
        assert_ne!(a, serial_number("https://vexxy.io/analyses/job-2/vex"));
        assert_eq!(&a[9 + 14..9 + 15], "5", "{a} is a version 5 UUID");
    }

    #[test]
    fn every_status_and_justification_has_a_mapping() {
        assert_eq!(analysis_state(VexStatus::Affected), "exploitable");
        assert_eq!(analysis_state(VexStatus::Fixed), "resolved");
        assert_eq!(analysis_state(VexStatus::UnderInvestigation), "in_triage");
        assert_eq!(analysis_state(VexStatus::NotAffected), "not_affected");
        assert_eq!(
            analysis_justification(Justification::VulnerableCodeNotPresent),
            ("code_not_present", false)
        );
        assert!(analysis_justification(Justification::ComponentNotPresent).1);
    }

    #[test]
    fn purl_names_and_versions_are_decoded() {
        assert_eq!(
            purl_name_version("pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64"),
            ("libssl3".to_string(), Some("3.0.8-r0".to_string()))
        );
        assert_eq!(
            purl_name_version("pkg:npm/%40angular/core@1.2.3"),
            ("core".to_string(), Some("1.2.3".to_string()))
        );
        assert_eq!(
            purl_name_version("pkg:golang/golang.org/x/net"),
            ("net".to_string(), None)
        );
        assert_eq!(
            purl_name_version("pkg:deb/debian/lib%2Bc@1%3A2.36"),
            ("lib+c".to_string(), Some("1:2.36".to_string()))
        );
        // Names stay as the SBOM spells them, whatever the type's normalisation would say.
        assert_eq!(
            purl_name_version("pkg:pypi/PyYAML@6.0.1"),
            ("PyYAML".to_string(), Some("6.0.1".to_string()))
        );
        assert_eq!(
            purl_name_version("pkg:npm/JSONStream@1.3.5"),
            ("JSONStream".to_string(), Some("1.3.5".to_string()))
        );
        assert_eq!(decode("a%20b%"), "a b%");
    }
}
