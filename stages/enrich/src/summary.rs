//! `summary.json`: the job metadata the previous service put inside its VEX (which the OpenVEX
//! schema forbids), the counts over the written statements and how good the evidence was.

use std::collections::BTreeMap;

use serde::Serialize;
use vexxy_events::{EvidenceQuality, Summary};

#[derive(Debug, Serialize)]
pub struct SummaryDocument<'a> {
    pub job_id: &'a str,
    pub analysis_method: &'static str,
    /// `high` for complete evidence, `low` for partial.
    pub confidence: &'static str,
    pub image: ImageInfo<'a>,
    pub counts: &'a Summary,
    pub evidence: &'a EvidenceQuality,
    pub kubescape: KubescapeInfo,
    /// Object-store keys of the raw Kubescape objects this result was computed from.
    pub evidence_objects: BTreeMap<&'a str, &'a str>,
    /// Anything a reader should know to interpret the counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo<'a> {
    pub image_ref: &'a str,
    pub image_digest: &'a str,
    pub repository: &'a str,
    /// The product identifier used in the VEX.
    pub purl: &'a str,
}

#[derive(Debug, Default, Serialize)]
pub struct KubescapeInfo {
    /// VEX shape detected: `v0.3.159`, `main`, `legacy`, `undetermined` or `absent`.
    pub vex_shape: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vex_author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vex_tooling: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vex_version: Option<i64>,
    /// Statements in Kubescape's document before de-duplication.
    pub source_statements: u64,
    /// Duplicate (vulnerability, package) statements merged into one.
    pub duplicates_merged: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom_tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner_db: Option<String>,
}
