//! Renders the model as a CycloneDX 1.6 VEX (`vex.cdx.json`), from the same statements the
//! OpenVEX writer renders, so the two documents can never disagree about a finding.
//!
//! `affects[].ref` is a BOM-Link (`urn:cdx:<serial>/1#<bom-ref>`) into the image's CycloneDX SBOM
//! (`sbom.cdx.json`, [`crate::cyclonedx_sbom`]): the package component (bom-ref = its purl), or
//! the image when Kubescape named no package. Trivy applies a CycloneDX VEX only that way.
//!
//! One `vulnerabilities[]` entry per vulnerability and analysis: the packages a CVE has the same
//! analysis in share an entry (CycloneDX keeps the analysis per entry, and the same CVE can be
//! exploitable in one package and not present in another). Trivy keeps one entry per CVE id,
//! the last, so a CVE's suppressing entry (not_affected, resolved) comes after its others: the
//! packages it names are then suppressed and the rest, by default, are not. A CVE both
//! not_affected and resolved in different packages of one image still has two suppressing
//! entries, and Trivy honours only the second.
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
    /// The serial number of the image's SBOM (`sbom.cdx.json`) the links point into.
    pub sbom_serial_number: &'a str,
}

/// `urn:uuid:` + a name-based (v5) UUID of the document IRI: the same job always gets the same
/// serial number, so a redelivered job writes byte-identical documents.
pub fn serial_number(document_id: &str) -> String {
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, document_id.as_bytes());
    format!("urn:uuid:{uuid}")
}

/// The serial number of the job's SBOM, derived like [`serial_number`] from the VEX IRI.
pub fn sbom_serial_number(document_id: &str) -> String {
    serial_number(&format!("{document_id}#sbom"))
}

/// `urn:cdx:<uuid>/1#<bom-ref>`: a component of version 1 of the SBOM with `sbom_serial_number`,
/// the bom-ref percent-encoded (a purl's `?`, `&` and `=` are not fragment-safe everywhere).
pub fn bom_link(sbom_serial_number: &str, bom_ref: &str) -> String {
    let uuid = sbom_serial_number
        .strip_prefix("urn:uuid:")
        .unwrap_or(sbom_serial_number);
    let mut link = format!("urn:cdx:{uuid}/1#");
    for byte in bom_ref.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            link.push(byte as char);
        } else {
            link.push_str(&format!("%{byte:02X}"));
        }
    }
    link
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
    let serial_number = serial_number(info.document_id);
    let timestamp = rfc3339(info.timestamp);
    let document = Bom::new(
        &serial_number,
        Metadata {
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
            properties: [
                Property {
                    name: "vexxy:openvex:id",
                    value: info.document_id,
                },
                Property {
                    name: "vexxy:sbom:serialNumber",
                    value: info.sbom_serial_number,
                },
            ],
        },
        VexBody {
            vulnerabilities: Vulnerabilities {
                info,
                entries: entries(statements),
            },
        },
    );
    let mut out = Vec::with_capacity(1024 + statements.len() * 900);
    serde_json::to_writer_pretty(&mut out, &document)?;
    out.push(b'\n');
    Ok(out)
}

/// The statements grouped into entries: per vulnerability (statements come sorted by it), the
/// packages with the same analysis together, suppressing entries last.
fn entries<'s, 'a>(statements: &'s [Statement<'a>]) -> Vec<Vec<&'s Statement<'a>>> {
    let mut out: Vec<Vec<&Statement<'a>>> = Vec::new();
    for same_vulnerability in statements.chunk_by(|a, b| a.vulnerability == b.vulnerability) {
        let mut groups: Vec<Vec<&Statement<'a>>> = Vec::new();
        for statement in same_vulnerability {
            match groups.iter_mut().find(|g| same_analysis(g[0], statement)) {
                Some(group) => group.push(statement),
                None => groups.push(vec![statement]),
            }
        }
        groups.sort_by_key(|g| suppresses(g[0].status));
        out.extend(groups);
    }
    out
}

fn same_analysis(a: &Statement<'_>, b: &Statement<'_>) -> bool {
    a.status == b.status
        && a.justification == b.justification
        && a.status_notes == b.status_notes
        && a.action_statement == b.action_statement
        && a.vulnerability_iri == b.vulnerability_iri
}

fn suppresses(status: VexStatus) -> bool {
    matches!(status, VexStatus::NotAffected | VexStatus::Fixed)
}

/// What every CycloneDX document vexxy writes opens with (shared with
/// [`crate::cyclonedx_sbom`]): format, spec version, serial number, version and its `metadata`;
/// `body` holds the rest, the VEX's vulnerabilities or the SBOM's components.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bom<'a, M, B> {
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: &'a str,
    version: u64,
    metadata: M,
    #[serde(flatten)]
    body: B,
}

impl<'a, M, B> Bom<'a, M, B> {
    /// Version 1: each document is written once, under its own serial number.
    pub(crate) fn new(serial_number: &'a str, metadata: M, body: B) -> Self {
        Bom {
            bom_format: "CycloneDX",
            spec_version: SPEC_VERSION,
            serial_number,
            version: 1,
            metadata,
            body,
        }
    }
}

#[derive(Serialize)]
struct VexBody<'a> {
    vulnerabilities: Vulnerabilities<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    timestamp: &'a str,
    tools: Tools<[Tool<'a>; 2]>,
    component: Container<'a>,
    properties: [Property<'a>; 2],
}

/// `metadata.tools` (shared with [`crate::cyclonedx_sbom`]).
#[derive(Serialize)]
pub(crate) struct Tools<T> {
    /// `[Tool; N]`
    pub components: T,
}

/// A `metadata.tools.components[]` entry (shared with [`crate::cyclonedx_sbom`]).
#[derive(Serialize)]
pub(crate) struct Tool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
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

/// A CycloneDX property (shared with [`crate::cyclonedx_sbom`]).
#[derive(Serialize)]
pub(crate) struct Property<'a> {
    pub name: &'static str,
    pub value: &'a str,
}

struct Vulnerabilities<'a> {
    info: &'a BomInfo<'a>,
    entries: Vec<Vec<&'a Statement<'a>>>,
}

impl Serialize for Vulnerabilities<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.entries.iter().map(|e| vulnerability(self.info, e)))
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
    affects: Vec<Affects>,
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
struct Affects {
    #[serde(rename = "ref")]
    reference: String,
}

/// One entry: `entry` holds statements of one vulnerability with the same analysis.
fn vulnerability<'a>(info: &'a BomInfo<'_>, entry: &[&'a Statement<'_>]) -> Vulnerability<'a> {
    let s = entry[0];
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
        bom_ref: vulnerability_ref(info.document_id, entry),
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
        affects: entry
            .iter()
            .map(|s| Affects {
                reference: bom_link(
                    info.sbom_serial_number,
                    s.subcomponent.unwrap_or(info.product),
                ),
            })
            .collect(),
        properties,
    }
}

/// `transform::action_for` words a known fix as "Upgrade <package> to <versions> or later.";
/// any other action (no fix known, or Kubescape's generic "Upgrade to a fixed version") is
/// advice, not an `update` response.
fn names_a_fixed_version(action: &str) -> bool {
    action.starts_with("Upgrade ") && action.contains(" to ") && action.ends_with(" or later.")
}

/// A bom-ref unique per entry (vulnerability and its packages), stable across runs.
fn vulnerability_ref(document_id: &str, entry: &[&Statement<'_>]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(document_id.as_bytes());
    hasher.update([0]);
    hasher.update(entry[0].vulnerability.as_bytes());
    for s in entry {
        hasher.update([0]);
        hasher.update(s.subcomponent.unwrap_or("").as_bytes());
    }
    format!(
        "vuln:{}:{}",
        entry[0].vulnerability,
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
    fn bom_links_name_the_sbom_and_encode_the_reference() {
        assert_eq!(
            bom_link(
                "urn:uuid:f28a8dcf-8027-5a90-87ec-810dbb772fa0",
                "pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64&distro=alpine-3.17.2"
            ),
            "urn:cdx:f28a8dcf-8027-5a90-87ec-810dbb772fa0/1#pkg%3Aapk%2Falpine%2Flibssl3%403.0.8-r0%3Farch%3Dx86_64%26distro%3Dalpine-3.17.2"
        );
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
}
