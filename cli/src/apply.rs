//! Applying an OpenVEX document to a Grype or Trivy JSON report, the way those scanners apply it.
//!
//! A finding is **suppressed** when the most recent statement about it (by statement timestamp,
//! then document timestamp, then position) has status `not_affected` or `fixed`. A statement is
//! about a finding when:
//! * its vulnerability (`name`, `@id` or one of its `aliases`) equals the finding's id, and
//! * one of its products matches one of the scanned image's `pkg:oci` purls ([`crate::purl`]) and,
//!   if that product lists subcomponents, one of them matches the finding's package purl; or the
//!   product (without subcomponents) is the package purl itself.
//!
//! The image purls come from the report's repo digests (`source.target.repoDigests` in Grype,
//! `Metadata.RepoDigests` in Trivy), else from the scanned reference and its digest. Trivy gives
//! the scan a `pkg:oci` identity only when it scanned a container image (`ArtifactType`
//! `container_image`): a `trivy sbom` report has none, so there, as in Trivy, no statement about
//! the image matches and only statements whose product is the package itself do. Package purls
//! come from the report (`artifact.purl`, `PkgIdentifier.PURL`); for older Trivy reports without
//! one, an OS package's purl is derived as Trivy derives it (`pkg:apk/alpine/<name>@<version>`).
//!
//! Output mirrors each scanner's own format for suppressed findings: Grype moves them to
//! `ignoredMatches` with `appliedIgnoreRules` `vex-status`/`vex-justification`; Trivy to
//! `ExperimentalModifiedFindings` of the result. With `mark`, findings stay where they are and
//! get a `vexxy_vex` object instead.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::purl::{self, digest_of, image_purl};

/// Why one finding is suppressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: String,
    pub justification: Option<String>,
    pub statement: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Grype,
    Trivy,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counts {
    pub findings: usize,
    pub not_affected: usize,
    pub fixed: usize,
}

impl Counts {
    pub fn suppressed(&self) -> usize {
        self.not_affected + self.fixed
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApplyError {
    #[error(
        "the VEX document has no `statements` array: pass an OpenVEX document (vexxy writes vex.openvex.json)"
    )]
    NotOpenVex,
    #[error(
        "the report is neither a Grype JSON report (`matches`, from `grype -o json`) nor a Trivy JSON report (`Results`, from `trivy image --format json`)"
    )]
    UnknownReport,
    #[error(
        "the report names no image digest (no repo digests and no @sha256 in the scanned reference), so no statement can match it: scan the image by digest (IMAGE@sha256:...)"
    )]
    NoImageDigest,
}

struct Product {
    ids: Vec<String>,
    subcomponents: Vec<String>,
}

struct Statement {
    vulnerabilities: Vec<String>,
    products: Vec<Product>,
    status: String,
    justification: Option<String>,
    id: Option<String>,
    time: Option<DateTime<Utc>>,
}

/// An OpenVEX document ready to answer "is this finding suppressed?".
pub struct Vex {
    statements: Vec<Statement>,
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The identifiers of a component: `@id` and `identifiers.*` (a bare string is its own id).
fn component_ids(component: &Value) -> Vec<String> {
    if let Value::String(id) = component {
        return vec![id.clone()];
    }
    let mut ids = strings(&component["@id"]);
    if let Some(identifiers) = component["identifiers"].as_object() {
        ids.extend(identifiers.values().flat_map(strings));
    }
    ids
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Vex {
    pub fn parse(document: &Value) -> Result<Vex, ApplyError> {
        let list = document["statements"]
            .as_array()
            .ok_or(ApplyError::NotOpenVex)?;
        let document_time = time(&document["timestamp"]);
        let statements = list
            .iter()
            .map(|s| {
                let vulnerability = &s["vulnerability"];
                let mut vulnerabilities = match vulnerability {
                    Value::String(name) => vec![name.clone()],
                    _ => {
                        let mut ids = strings(&vulnerability["name"]);
                        ids.extend(strings(&vulnerability["@id"]));
                        ids.extend(strings(&vulnerability["aliases"]));
                        ids
                    }
                };
                vulnerabilities.retain(|id| !id.is_empty());
                // OpenVEX 0.0.x put subcomponents beside the products; they apply to each.
                let shared_subcomponents: Vec<String> = s["subcomponents"]
                    .as_array()
                    .map(|subs| subs.iter().flat_map(component_ids).collect())
                    .unwrap_or_default();
                let products = s["products"]
                    .as_array()
                    .map(|products| {
                        products
                            .iter()
                            .map(|p| {
                                let mut subcomponents: Vec<String> = p["subcomponents"]
                                    .as_array()
                                    .map(|subs| subs.iter().flat_map(component_ids).collect())
                                    .unwrap_or_default();
                                subcomponents.extend(shared_subcomponents.iter().cloned());
                                Product {
                                    ids: component_ids(p),
                                    subcomponents,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Statement {
                    vulnerabilities,
                    products,
                    status: s["status"].as_str().unwrap_or("").to_string(),
                    justification: s["justification"].as_str().map(str::to_string),
                    id: s["@id"].as_str().map(str::to_string),
                    time: time(&s["timestamp"]).or(document_time),
                }
            })
            .collect();
        Ok(Vex { statements })
    }

    /// The verdict for one finding, `None` when nothing suppresses it.
    pub fn verdict(
        &self,
        vulnerability: &str,
        image_purls: &[String],
        package_purl: Option<&str>,
    ) -> Option<Verdict> {
        let about_finding = |s: &&Statement| {
            s.vulnerabilities.iter().any(|v| v == vulnerability)
                && s.products.iter().any(|p| {
                    let image = p
                        .ids
                        .iter()
                        .any(|id| image_purls.iter().any(|scanned| purl::matches(id, scanned)));
                    let package_matches = |id: &String| {
                        package_purl.is_some_and(|scanned| purl::matches(id, scanned))
                    };
                    if image {
                        p.subcomponents.is_empty() || p.subcomponents.iter().any(package_matches)
                    } else {
                        p.subcomponents.is_empty() && p.ids.iter().any(package_matches)
                    }
                })
        };
        // The latest statement wins; among equal times the later one in the document.
        let latest = self
            .statements
            .iter()
            .enumerate()
            .filter(|(_, s)| about_finding(s))
            .max_by_key(|(position, s)| (s.time, *position))
            .map(|(_, s)| s)?;
        matches!(latest.status.as_str(), "not_affected" | "fixed").then(|| Verdict {
            status: latest.status.clone(),
            justification: latest.justification.clone(),
            statement: latest.id.clone(),
        })
    }
}

pub fn detect(report: &Value) -> Result<ReportFormat, ApplyError> {
    if report["matches"].is_array() && report.get("source").is_some() {
        Ok(ReportFormat::Grype)
    } else if report.get("Results").is_some() || report.get("SchemaVersion").is_some() {
        Ok(ReportFormat::Trivy)
    } else {
        Err(ApplyError::UnknownReport)
    }
}

/// The `pkg:oci` purls of the scanned image (one per known repo digest).
pub fn image_purls(report: &Value, format: ReportFormat) -> Result<Vec<String>, ApplyError> {
    let (repo_digests, reference, digest) = match format {
        ReportFormat::Grype => {
            let target = &report["source"]["target"];
            (
                strings(&target["repoDigests"]),
                target["userInput"].as_str().unwrap_or(""),
                target["manifestDigest"].as_str(),
            )
        }
        ReportFormat::Trivy if !scanned_an_image(report) => return Ok(Vec::new()),
        ReportFormat::Trivy => (
            strings(&report["Metadata"]["RepoDigests"]),
            report["ArtifactName"].as_str().unwrap_or(""),
            None,
        ),
    };
    let mut purls: Vec<String> = repo_digests
        .iter()
        .filter_map(|rd| digest_of(rd).map(|d| image_purl(rd, d)))
        .collect();
    if let Some(d) = digest_of(reference).or(digest)
        && !reference.is_empty()
    {
        purls.push(image_purl(reference, d));
    }
    purls.dedup();
    if purls.is_empty() {
        return Err(ApplyError::NoImageDigest);
    }
    Ok(purls)
}

/// Whether a Trivy report is of a container image (older reports, without `ArtifactType`, are).
pub fn scanned_an_image(report: &Value) -> bool {
    report["ArtifactType"]
        .as_str()
        .is_none_or(|kind| kind == "container_image")
}

/// Applies `vex` to `report` in place; returns the counts.
pub fn apply(vex: &Vex, report: &mut Value, mark: bool) -> Result<Counts, ApplyError> {
    let format = detect(report)?;
    let images = image_purls(report, format)?;
    match format {
        ReportFormat::Grype => Ok(apply_grype(vex, &images, report, mark)),
        ReportFormat::Trivy => Ok(apply_trivy(vex, &images, report, mark)),
    }
}

fn count(counts: &mut Counts, verdict: &Verdict) {
    match verdict.status.as_str() {
        "fixed" => counts.fixed += 1,
        _ => counts.not_affected += 1,
    }
}

fn mark_object(verdict: &Verdict) -> Value {
    json!({
        "suppressed": true,
        "status": verdict.status,
        "justification": verdict.justification,
        "statement": verdict.statement,
    })
}

fn apply_grype(vex: &Vex, images: &[String], report: &mut Value, mark: bool) -> Counts {
    let mut counts = Counts::default();
    let matches = std::mem::take(&mut report["matches"]);
    let mut kept = Vec::new();
    let mut ignored = Vec::new();
    for mut finding in matches.as_array().cloned().unwrap_or_default() {
        counts.findings += 1;
        let id = finding["vulnerability"]["id"].as_str().unwrap_or("");
        let package = finding["artifact"]["purl"]
            .as_str()
            .filter(|p| !p.is_empty());
        match vex.verdict(id, images, package) {
            Some(verdict) => {
                count(&mut counts, &verdict);
                if mark {
                    finding["vexxy_vex"] = mark_object(&verdict);
                    kept.push(finding);
                } else {
                    let mut rule = json!({"vex-status": verdict.status});
                    if let Some(j) = &verdict.justification {
                        rule["vex-justification"] = j.clone().into();
                    }
                    finding["appliedIgnoreRules"] = json!([rule]);
                    ignored.push(finding);
                }
            }
            None => kept.push(finding),
        }
    }
    report["matches"] = Value::Array(kept);
    if !ignored.is_empty() {
        let existing = report
            .get_mut("ignoredMatches")
            .and_then(Value::as_array_mut);
        match existing {
            Some(list) => list.extend(ignored),
            None => report["ignoredMatches"] = Value::Array(ignored),
        }
    }
    counts
}

/// Trivy's purl for an OS package of a report without `PkgIdentifier` (older Trivy).
fn trivy_os_purl(result_type: &str, os: &Value, finding: &Value) -> Option<String> {
    let (kind, namespace) = match result_type {
        "alpine" => ("apk", "alpine"),
        "debian" => ("deb", "debian"),
        "ubuntu" => ("deb", "ubuntu"),
        _ => return None,
    };
    let name = finding["PkgName"].as_str()?;
    let version = finding["InstalledVersion"].as_str()?;
    let mut purl = format!("pkg:{kind}/{namespace}/{name}@{version}");
    if let Some(distro) = os["Name"].as_str() {
        purl.push_str(&format!("?distro={distro}"));
    }
    Some(purl)
}

fn apply_trivy(vex: &Vex, images: &[String], report: &mut Value, mark: bool) -> Counts {
    let mut counts = Counts::default();
    let os = report["Metadata"]["OS"].clone();
    let Some(results) = report["Results"].as_array_mut() else {
        return counts;
    };
    for result in results {
        let result_type = result["Type"].as_str().unwrap_or("").to_string();
        let findings = std::mem::take(&mut result["Vulnerabilities"]);
        let Some(findings) = findings.as_array().cloned() else {
            result["Vulnerabilities"] = findings;
            continue;
        };
        let mut kept = Vec::new();
        let mut modified = Vec::new();
        for mut finding in findings {
            counts.findings += 1;
            let id = finding["VulnerabilityID"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let package = finding["PkgIdentifier"]["PURL"]
                .as_str()
                .map(str::to_string)
                .or_else(|| trivy_os_purl(&result_type, &os, &finding));
            match vex.verdict(&id, images, package.as_deref()) {
                Some(verdict) => {
                    count(&mut counts, &verdict);
                    if mark {
                        finding["vexxy_vex"] = mark_object(&verdict);
                        kept.push(finding);
                    } else {
                        modified.push(json!({
                            "Type": "vulnerability",
                            "Status": verdict.status,
                            "Statement": verdict.justification.clone().unwrap_or_default(),
                            "Source": "OpenVEX",
                            "Finding": finding,
                        }));
                    }
                }
                None => kept.push(finding),
            }
        }
        result["Vulnerabilities"] = Value::Array(kept);
        if !modified.is_empty() {
            result["ExperimentalModifiedFindings"] = Value::Array(modified);
        }
    }
    counts
}
