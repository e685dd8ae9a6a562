//! OpenVulnerabilityExchangeContainer: the typed view of Kubescape's VEX document and its
//! normalisation into one finding per (vulnerability, product, subcomponent).
//!
//! Three shapes exist in the wild (facts §4, §6):
//! * kubevuln **main**: vulnerability `@id` = data-source URL, `name` = CVE, statement `@id` =
//!   `https://kubescape.io/vex/statement/<cve>/<purl>`, no duplicates;
//! * kubevuln **v0.3.159** (the released one): `createVEX` writes `@id` = CVE and `name` = URL and
//!   no statement `@id`; `updateVEX` appends statements the other way round and never matches
//!   them again, so duplicates accumulate and `affected` is sticky; `version` starts at 0;
//! * the **legacy** storage sample: products are the image with the package in
//!   `identifiers.purl`, no subcomponents.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ParseError;
use crate::keys::kinds;
use crate::object::{ObjectInfo, null_as_default};

const KIND: &str = kinds::VEX;

// ---------------------------------------------------------------------------------------------
// Raw view: exactly what storage serves (`spec` = VEX with the metadata inline). The document
// around the statements is read by `vex_stream`, which normalises each statement as it is read.

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VexStatement {
    #[serde(rename = "@id", default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub vulnerability: VexVulnerability,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub last_updated: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub products: Vec<VexProduct>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: String,
    #[serde(default)]
    pub status_notes: Option<String>,
    #[serde(default)]
    pub justification: Option<String>,
    #[serde(default)]
    pub impact_statement: Option<String>,
    #[serde(default)]
    pub action_statement: Option<String>,
    #[serde(default)]
    pub action_statement_timestamp: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VexVulnerability {
    #[serde(rename = "@id", default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VexComponent {
    #[serde(rename = "@id", default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub hashes: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub identifiers: BTreeMap<String, String>,
    #[serde(default)]
    pub supplier: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VexProduct {
    #[serde(rename = "@id", default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub hashes: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub identifiers: BTreeMap<String, String>,
    #[serde(default)]
    pub supplier: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub subcomponents: Vec<VexComponent>,
}

// ---------------------------------------------------------------------------------------------
// Normalised model.

/// Which writer produced the document, as far as its content tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubevulnShape {
    /// Released kubevuln (v0.3.159 and earlier relevancy VEX): some statement carries the CVE in
    /// vulnerability `@id`.
    #[serde(rename = "v0_3_159")]
    V0_3_159,
    /// kubevuln `main`: statement `@id`s under `https://kubescape.io/vex/statement/`, or
    /// statements with the corrected `@id` = URL / `name` = CVE mapping and subcomponents.
    Main,
    /// The 2023 storage sample: packages in `products[].identifiers`, no subcomponents.
    Legacy,
    /// No statements, so nothing tells the writers apart (an image without vulnerabilities).
    Undetermined,
}

impl KubevulnShape {
    pub fn as_str(self) -> &'static str {
        match self {
            KubevulnShape::V0_3_159 => "v0.3.159",
            KubevulnShape::Main => "main",
            KubevulnShape::Legacy => "legacy",
            KubevulnShape::Undetermined => "undetermined",
        }
    }
}

/// The OpenVEX statuses, ordered by caution (how little they suppress): when a document says
/// two different things about the same (vulnerability, package) — kubevuln v0.3.159 appends
/// contradicting duplicates — the most cautious wins (`max`), because a VEX that wrongly hides
/// a vulnerability is worse than one that shows it once too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VexStatus {
    NotAffected,
    Fixed,
    UnderInvestigation,
    Affected,
}

impl VexStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VexStatus::NotAffected => "not_affected",
            VexStatus::Affected => "affected",
            VexStatus::Fixed => "fixed",
            VexStatus::UnderInvestigation => "under_investigation",
        }
    }

    /// The status an OpenVEX `status` field spells, `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "not_affected" => VexStatus::NotAffected,
            "affected" => VexStatus::Affected,
            "fixed" => VexStatus::Fixed,
            "under_investigation" => VexStatus::UnderInvestigation,
            _ => return None,
        })
    }
}

/// The OpenVEX 0.2.0 justification labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Justification {
    ComponentNotPresent,
    VulnerableCodeNotPresent,
    VulnerableCodeNotInExecutePath,
    VulnerableCodeCannotBeControlledByAdversary,
    InlineMitigationsAlreadyExist,
}

impl Justification {
    pub fn as_str(self) -> &'static str {
        match self {
            Justification::ComponentNotPresent => "component_not_present",
            Justification::VulnerableCodeNotPresent => "vulnerable_code_not_present",
            Justification::VulnerableCodeNotInExecutePath => "vulnerable_code_not_in_execute_path",
            Justification::VulnerableCodeCannotBeControlledByAdversary => {
                "vulnerable_code_cannot_be_controlled_by_adversary"
            }
            Justification::InlineMitigationsAlreadyExist => "inline_mitigations_already_exist",
        }
    }

    /// The justification an OpenVEX `justification` field spells, `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "component_not_present" => Justification::ComponentNotPresent,
            "vulnerable_code_not_present" => Justification::VulnerableCodeNotPresent,
            "vulnerable_code_not_in_execute_path" => Justification::VulnerableCodeNotInExecutePath,
            "vulnerable_code_cannot_be_controlled_by_adversary" => {
                Justification::VulnerableCodeCannotBeControlledByAdversary
            }
            "inline_mitigations_already_exist" => Justification::InlineMitigationsAlreadyExist,
            _ => return None,
        })
    }
}

/// One assessment of one vulnerability in one package of one product.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The CVE (or GHSA, ...) identifier, wherever the writer put it.
    pub vulnerability_id: String,
    /// Grype's data-source URL for the vulnerability, when the statement has one.
    pub data_source_url: Option<String>,
    pub aliases: Vec<String>,
    pub description: Option<String>,
    /// `products[].@id`: `pkg:oci/<name>@sha256:…?repository_url=…` from kubevuln, the image
    /// reference in the legacy shape.
    pub product_id: String,
    /// The package: `subcomponents[].@id`, or in the legacy shape `products[].identifiers.purl`.
    pub subcomponent_purl: Option<String>,
    pub status: VexStatus,
    pub status_notes: Option<String>,
    pub justification: Option<Justification>,
    pub impact_statement: Option<String>,
    pub action_statement: Option<String>,
    pub action_statement_timestamp: Option<DateTime<Utc>>,
    /// Statement timestamps (kubevuln writes none; the document's apply then).
    pub timestamp: Option<DateTime<Utc>>,
    pub last_updated: Option<DateTime<Utc>>,
    /// Index in `spec.statements` of the statement this finding was taken from.
    pub statement_index: usize,
}

/// Document-level metadata of the VEX.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VexDocumentInfo {
    pub id: String,
    pub context: String,
    pub author: String,
    pub role: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
    pub last_updated: Option<DateTime<Utc>>,
    pub version: i64,
    pub tooling: Option<String>,
    pub supplier: Option<String>,
}

/// A Kubescape VEX object, normalised.
#[derive(Debug, Clone, Serialize)]
pub struct KubescapeVex {
    pub object: ObjectInfo,
    pub document: VexDocumentInfo,
    pub shape: KubevulnShape,
    /// One per (vulnerability, product, subcomponent), in order of first appearance.
    pub findings: Vec<Finding>,
    /// Statements in the document as stored.
    pub statement_count: usize,
    /// Findings that appeared more than once and were merged (see [`read_vex`]).
    pub duplicates_merged: usize,
    /// Of those, how many disagreed on the status.
    pub conflicting_duplicates: usize,
}

/// Reads an OpenVulnerabilityExchangeContainer (as served by GET, full spec) into findings.
///
/// **Vulnerability id** (facts §4, main's `hasSwappedVulnerabilityFields`): if the
/// vulnerability `@id` has no `://` and `name` is empty or contains `://`, the CVE is in `@id`
/// (and the URL in `name`); otherwise the CVE is in `name` and the URL in `@id`. Any other
/// identifier the statement carries ends up in `aliases`.
///
/// **De-duplication**: findings with the same (vulnerability id, product id, subcomponent purl)
/// are merged into one. The winner is the most cautious status
/// (`affected` > `under_investigation` > `fixed` > `not_affected`), because a duplicate exists only
/// when kubevuln (v0.3.159) appended a second statement for the same match and never looked at it
/// again: the first statement can have been promoted to `affected` (sticky) while the appended one
/// stays `not_affected`, and reading the stale copy would hide a loaded vulnerability. Between
/// equally cautious statements the one with the later statement `last_updated` (else `timestamp`)
/// wins, and without timestamps the later one in the document (it was appended by a later scan).
/// Data-source URL, description and aliases missing on the winner are taken from the others.
pub fn read_vex(object: &Value) -> Result<KubescapeVex, ParseError> {
    // One reader: the one for stored bytes, given this object's text.
    crate::from_bytes::read_parsed(object, KIND, crate::from_bytes::read_vex_bytes)
}

/// True when the CVE is in vulnerability `@id` (v0.3.159 `createVEX`), false when in `name`.
pub fn has_swapped_vulnerability_fields(id: &str, name: &str) -> bool {
    !id.contains("://") && (name.is_empty() || name.contains("://"))
}

/// What the statements tell about their writer, gathered one statement at a time (the reader
/// does not keep the statements).
#[derive(Debug, Default)]
pub(crate) struct ShapeClues {
    statements: bool,
    subcomponents: bool,
    identifiers: bool,
    main_statement_id: bool,
    swapped: bool,
}

impl ShapeClues {
    pub(crate) fn add(&mut self, s: &VexStatement) {
        self.statements = true;
        self.subcomponents |= s.products.iter().any(|p| !p.subcomponents.is_empty());
        self.identifiers |= s.products.iter().any(|p| !p.identifiers.is_empty());
        self.main_statement_id |=
            s.id.as_deref()
                .is_some_and(|id| id.starts_with("https://kubescape.io/vex/statement/"));
        self.swapped |= has_swapped_vulnerability_fields(
            s.vulnerability.id.as_deref().unwrap_or(""),
            s.vulnerability.name.as_deref().unwrap_or(""),
        );
    }

    pub(crate) fn shape(&self) -> KubevulnShape {
        if !self.statements {
            KubevulnShape::Undetermined
        } else if !self.subcomponents && self.identifiers {
            KubevulnShape::Legacy
        } else if self.main_statement_id || !self.swapped {
            KubevulnShape::Main
        } else {
            KubevulnShape::V0_3_159
        }
    }
}

pub(crate) fn statement_findings(
    statement: &VexStatement,
    i: usize,
    name: &str,
) -> Result<Vec<Finding>, ParseError> {
    let at = |field: &str| format!("spec.statements[{i}].{field}");
    let missing = |field: &str, why: &'static str| ParseError::MissingField {
        kind: KIND,
        name: name.to_string(),
        path: at(field),
        why,
    };
    let invalid = |field: &str, message: String| ParseError::InvalidField {
        kind: KIND,
        name: name.to_string(),
        path: at(field),
        message,
    };

    let vuln = &statement.vulnerability;
    let vid = vuln.id.as_deref().unwrap_or("").trim();
    let vname = vuln.name.as_deref().unwrap_or("").trim();
    let (cve, url, other) = if has_swapped_vulnerability_fields(vid, vname) {
        (vid, vname, "")
    } else if vid.contains("://") {
        (vname, vid, "")
    } else {
        (vname, "", vid)
    };
    if cve.is_empty() {
        return Err(missing(
            "vulnerability",
            "a statement must name the vulnerability it is about",
        ));
    }
    let mut aliases: Vec<String> = Vec::new();
    for alias in vuln
        .aliases
        .iter()
        .map(|a| a.trim())
        .chain(std::iter::once(other))
    {
        if !alias.is_empty() && alias != cve && !aliases.iter().any(|a| a == alias) {
            aliases.push(alias.to_string());
        }
    }

    let status = VexStatus::parse(statement.status.trim()).ok_or_else(|| {
        if statement.status.trim().is_empty() {
            missing("status", "every VEX statement has a status")
        } else {
            invalid(
                "status",
                format!(
                    "unknown status {:?} (expected not_affected, affected, fixed or under_investigation)",
                    statement.status
                ),
            )
        }
    })?;
    let justification = match non_empty(&statement.justification) {
        None => None,
        Some(j) => Some(Justification::parse(&j).ok_or_else(|| {
            invalid(
                "justification",
                format!("unknown OpenVEX justification {j:?}"),
            )
        })?),
    };
    let timestamp = parse_time(&statement.timestamp, name, at("timestamp"))?;
    let last_updated = parse_time(&statement.last_updated, name, at("last_updated"))?;
    let action_statement_timestamp = parse_time(
        &statement.action_statement_timestamp,
        name,
        at("action_statement_timestamp"),
    )?;

    if statement.products.is_empty() {
        return Err(missing(
            "products",
            "kubevuln names the image and the package in every statement",
        ));
    }
    let mut out = Vec::new();
    for (p, product) in statement.products.iter().enumerate() {
        let product_id = product
            .id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                missing(
                    &format!("products[{p}].@id"),
                    "the product (image) must be identified",
                )
            })?
            .to_string();
        let mut subcomponents: Vec<Option<String>> = Vec::new();
        if product.subcomponents.is_empty() {
            subcomponents.push(
                product
                    .identifiers
                    .get("purl")
                    .cloned()
                    .filter(|s| !s.is_empty()),
            );
        } else {
            for (s, sub) in product.subcomponents.iter().enumerate() {
                let purl = sub
                    .id
                    .clone()
                    .or_else(|| sub.identifiers.get("purl").cloned())
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| {
                        missing(
                            &format!("products[{p}].subcomponents[{s}].@id"),
                            "a subcomponent must carry the package purl",
                        )
                    })?;
                subcomponents.push(Some(purl));
            }
        }
        for subcomponent_purl in subcomponents {
            out.push(Finding {
                vulnerability_id: cve.to_string(),
                data_source_url: Some(url.to_string()).filter(|u| !u.is_empty()),
                aliases: aliases.clone(),
                description: non_empty(&vuln.description),
                product_id: product_id.clone(),
                subcomponent_purl,
                status,
                status_notes: non_empty(&statement.status_notes),
                justification,
                impact_statement: non_empty(&statement.impact_statement),
                action_statement: non_empty(&statement.action_statement),
                action_statement_timestamp,
                timestamp,
                last_updated,
                statement_index: i,
            });
        }
    }
    Ok(out)
}

pub(crate) fn merge_duplicate(earlier: Finding, later: Finding) -> Finding {
    let later_wins = match later.status.cmp(&earlier.status) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => {
            let when = |f: &Finding| f.last_updated.or(f.timestamp);
            match (when(&earlier), when(&later)) {
                (Some(a), Some(b)) if a != b => b > a,
                _ => true,
            }
        }
    };
    let (mut winner, loser) = if later_wins {
        (later, earlier)
    } else {
        (earlier, later)
    };
    if winner.data_source_url.is_none() {
        winner.data_source_url = loser.data_source_url;
    }
    if winner.description.is_none() {
        winner.description = loser.description;
    }
    for alias in loser.aliases {
        if !winner.aliases.contains(&alias) {
            winner.aliases.push(alias);
        }
    }
    winner
}

pub(crate) fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub(crate) fn parse_time(
    value: &Option<String>,
    name: &str,
    path: String,
) -> Result<Option<DateTime<Utc>>, ParseError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| ParseError::InvalidField {
                kind: KIND,
                name: name.to_string(),
                path,
                message: format!("{text:?} is not an RFC 3339 timestamp: {e}"),
            }),
    }
}
