//! `io.vexxy.analysis.completed.v1`: a job finished and its documents are in object storage.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Stage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisCompleted {
    pub job_id: String,
    pub image_ref: String,
    pub image_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_msg_id: Option<String>,
    pub summary: Summary,
    pub evidence: EvidenceQuality,
    pub artifacts: Artifacts,
    /// Wall-clock time each stage spent on this job, in pipeline order.
    pub timings: Vec<StageTiming>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Counts over the statements of the written VEX document. They always add up:
/// `total_cves_analyzed == affected + not_affected + fixed + under_investigation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Statements in the VEX (one per vulnerability, product and subcomponent).
    pub total_cves_analyzed: u64,
    pub not_affected: u64,
    pub affected: u64,
    pub fixed: u64,
    pub under_investigation: u64,
    /// Distinct vulnerability ids.
    pub distinct_vulnerabilities: u64,
    /// Packages in the image's (unfiltered) SBOM, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_components_in_image: Option<u64>,
    /// Packages Kubescape saw loaded (artifacts in the relevancy-filtered SBOM).
    pub relevant_components: u64,
}

/// How much the evidence behind the VEX can be trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvidenceQuality {
    /// `complete` when Kubescape finished learning over the whole window; `partial` otherwise,
    /// in which case no statement is `not_affected`.
    pub completeness: Completeness,
    /// ContainerProfile `kubescape.io/status` at extraction (`completed`, `ready`, ...).
    pub learning_status: String,
    /// ContainerProfile `kubescape.io/completion` (`complete` or `partial`).
    pub learning_completion: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub container_restarts: u32,
    /// Share of the image's packages seen loaded, 0.0–1.0, when the full SBOM is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_package_ratio: Option<f64>,
    /// Kubescape component version and VEX shape detected (`v0.3.159`, `main`, `legacy`).
    pub kubescape_shape: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Completeness {
    Complete,
    Partial,
}

/// Object-store URLs of everything the job wrote (`s3://bucket/analyses/<job>/...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Artifacts {
    /// OpenVEX 0.2.0 document. Absent when the image has no known vulnerabilities: an OpenVEX
    /// document must hold at least one statement, and vexxy never writes an invalid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openvex: Option<String>,
    /// Syft JSON SBOM of the packages seen loaded, as Kubescape produced it.
    pub filtered_sbom: String,
    /// `summary.json`: job metadata, counts and evidence quality.
    pub summary: String,
    /// Raw Kubescape objects, kept as evidence.
    pub evidence: Vec<String>,
    /// Further documents, by name: the CycloneDX VEX and any other.
    #[serde(default, skip_serializing_if = "ExtraArtifacts::is_empty")]
    pub extra: ExtraArtifacts,
}

/// More documents, by name. The CycloneDX VEX got a field after this was a plain map; it keeps
/// its name in it, so events written before and after read the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExtraArtifacts {
    /// CycloneDX 1.6 VEX document. Absent when the image has no known vulnerabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cyclonedx: Option<String>,
    /// CycloneDX 1.6 SBOM of the image, which the CycloneDX VEX's BOM-Links point into
    /// (`trivy sbom sbom.cdx.json --vex vex.cdx.json`). Added in 1.x; always written since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_cyclonedx: Option<String>,
    /// Any other document, by name.
    #[serde(flatten)]
    pub more: BTreeMap<String, String>,
}

impl ExtraArtifacts {
    pub fn is_empty(&self) -> bool {
        self.cyclonedx.is_none() && self.sbom_cyclonedx.is_none() && self.more.is_empty()
    }

    /// Every URL held, by its name on the wire.
    pub fn by_name(&self) -> BTreeMap<&str, &str> {
        let cyclonedx = self.cyclonedx.as_deref().map(|url| ("cyclonedx", url));
        let sbom_cyclonedx = self
            .sbom_cyclonedx
            .as_deref()
            .map(|url| ("sbom_cyclonedx", url));
        let more = self
            .more
            .iter()
            .map(|(name, url)| (name.as_str(), url.as_str()));
        cyclonedx
            .into_iter()
            .chain(sbom_cyclonedx)
            .chain(more)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageTiming {
    pub stage: Stage,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Artifacts an enrich wrote before the CycloneDX document had a field: the same JSON, so
    /// it reads into the field and writes back byte for byte.
    #[test]
    fn an_old_extra_map_reads_into_the_field_and_writes_back_unchanged() {
        let old = json!({
            "openvex": "s3://b/analyses/j1/vex.openvex.json",
            "filtered_sbom": "s3://b/analyses/j1/sbom.filtered.json",
            "summary": "s3://b/analyses/j1/summary.json",
            "evidence": [],
            "extra": {
                "cyclonedx": "s3://b/analyses/j1/vex.cdx.json",
                "later": "s3://b/analyses/j1/later.json"
            }
        });
        let artifacts: Artifacts = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(
            artifacts.extra.cyclonedx.as_deref(),
            Some("s3://b/analyses/j1/vex.cdx.json")
        );
        assert_eq!(
            artifacts.extra.more,
            BTreeMap::from([(
                "later".to_string(),
                "s3://b/analyses/j1/later.json".to_string()
            )])
        );
        assert_eq!(serde_json::to_value(&artifacts).unwrap(), old);
        assert_eq!(
            artifacts.extra.by_name().into_keys().collect::<Vec<_>>(),
            ["cyclonedx", "later"]
        );
    }
}
