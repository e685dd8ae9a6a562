//! The internal hand-off between stages (`io.vexxy.pipeline.ticket.v1` on `vexxy.pipeline.<stage>`).
//!
//! One ticket type travels the whole pipeline; each stage fills in its own section and passes the
//! rest on untouched. Tickets carry references (object-store keys, Kubernetes names), never whole
//! documents: a VEX can exceed the NATS payload limit.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Stage;
use crate::completed::StageTiming;
use crate::request::ValidatedRequest;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineTicket {
    pub request: ValidatedRequest,
    /// Timings of the stages done so far.
    #[serde(default)]
    pub timings: Vec<StageTiming>,
    /// Set by deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxRef>,
    /// Set by wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<Observation>,
    /// Set by extract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRefs>,
}

/// The Deployment that runs the image under observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxRef {
    pub namespace: String,
    pub deployment: String,
    pub container: String,
    pub created_at: DateTime<Utc>,
}

/// What wait saw: which workload instance Kubescape profiled and how learning ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Observation {
    pub pod: String,
    pub replicaset: String,
    /// Kubescape instance slug: the name of the ContainerProfile, VEX and filtered SBOM.
    pub instance_slug: String,
    pub instance_id: String,
    pub learning_status: String,
    pub learning_completion: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub container_restarts: u32,
    /// True when the deadline passed before Kubescape finished and the job goes on with what
    /// evidence exists (enrich then never claims `not_affected`).
    pub partial: bool,
}

/// Object-store keys of the raw Kubescape objects extract saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvidenceRefs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered_sbom: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerability_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerability_manifest: Option<String>,
    /// The image-level objects, and anything else kept, by name.
    #[serde(default, skip_serializing_if = "OtherEvidence::is_empty")]
    pub other: OtherEvidence,
}

impl EvidenceRefs {
    /// Every key held, by its name on the wire (`vex`, …, `sbom_image`, then any other).
    pub fn keys_by_name(&self) -> BTreeMap<&str, &str> {
        let named = [
            ("vex", &self.vex),
            ("filtered_sbom", &self.filtered_sbom),
            ("container_profile", &self.container_profile),
            ("vulnerability_summary", &self.vulnerability_summary),
            ("vulnerability_manifest", &self.vulnerability_manifest),
            (IMAGE_MANIFEST, &self.other.vulnerability_manifest_image),
            (IMAGE_SBOM, &self.other.sbom_image),
        ];
        let named = named
            .into_iter()
            .filter_map(|(name, key)| Some((name, key.as_deref()?)));
        let more = self
            .other
            .more
            .iter()
            .map(|(name, key)| (name.as_str(), key.as_str()));
        named.chain(more).collect()
    }
}

/// Wire names of the typed entries of [`OtherEvidence`].
const IMAGE_MANIFEST: &str = "vulnerability_manifest_image";
const IMAGE_SBOM: &str = "sbom_image";

/// More object-store keys, by name. The image-level objects got fields after this was a plain
/// map; they keep their names in it, so tickets written before and after read the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OtherEvidence {
    /// The image's full vulnerability manifest (all packages, not only the loaded ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerability_manifest_image: Option<String>,
    /// The image's full Syft SBOM (`SBOMSyft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_image: Option<String>,
    /// Anything else kept, by name.
    #[serde(flatten)]
    pub more: BTreeMap<String, String>,
}

impl OtherEvidence {
    pub fn is_empty(&self) -> bool {
        self.vulnerability_manifest_image.is_none()
            && self.sbom_image.is_none()
            && self.more.is_empty()
    }
}

/// A stage was handed a ticket without a section an earlier stage fills: the pipeline was
/// bypassed (a hand-made or replayed message), never a state the stages themselves produce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job {job_id} reached {stage} without `{section}` (set by {set_by}); the ticket must pass through {set_by} first — resubmit the analysis and report this if it repeats"
)]
pub struct MissingSection {
    pub job_id: String,
    pub stage: Stage,
    pub section: &'static str,
    pub set_by: Stage,
}

impl PipelineTicket {
    /// The sandbox deploy created, for `stage`'s use.
    pub fn sandbox_for(&self, stage: Stage) -> Result<&SandboxRef, MissingSection> {
        self.section(stage, self.sandbox.as_ref(), "sandbox", Stage::Deploy)
    }

    /// What wait observed, for `stage`'s use.
    pub fn observation_for(&self, stage: Stage) -> Result<&Observation, MissingSection> {
        self.section(stage, self.observation.as_ref(), "observation", Stage::Wait)
    }

    /// The evidence extract saved, for `stage`'s use.
    pub fn evidence_for(&self, stage: Stage) -> Result<&EvidenceRefs, MissingSection> {
        self.section(stage, self.evidence.as_ref(), "evidence", Stage::Extract)
    }

    fn section<'a, T>(
        &self,
        stage: Stage,
        section: Option<&'a T>,
        name: &'static str,
        set_by: Stage,
    ) -> Result<&'a T, MissingSection> {
        section.ok_or_else(|| MissingSection {
            job_id: self.request.job_id.clone(),
            stage,
            section: name,
            set_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A ticket extract wrote before the image-level objects had fields: the same JSON, so
    /// it reads into the fields and writes back byte for byte.
    #[test]
    fn an_old_other_map_reads_into_the_fields_and_writes_back_unchanged() {
        let old = json!({
            "vex": "analyses/j1/evidence/vex.json",
            "other": {
                "sbom_image": "analyses/j1/evidence/sbom-image.json",
                "vulnerability_manifest_image": "analyses/j1/evidence/manifest-image.json",
                "later_object": "analyses/j1/evidence/later.json"
            }
        });
        let refs: EvidenceRefs = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(
            refs.other.sbom_image.as_deref(),
            Some("analyses/j1/evidence/sbom-image.json")
        );
        assert_eq!(
            refs.other.vulnerability_manifest_image.as_deref(),
            Some("analyses/j1/evidence/manifest-image.json")
        );
        assert_eq!(
            refs.other.more,
            BTreeMap::from([(
                "later_object".to_string(),
                "analyses/j1/evidence/later.json".to_string()
            )])
        );
        assert_eq!(serde_json::to_value(&refs).unwrap(), old);
        assert_eq!(
            refs.keys_by_name().into_keys().collect::<Vec<_>>(),
            [
                "later_object",
                "sbom_image",
                "vex",
                "vulnerability_manifest_image"
            ]
        );
    }

    #[test]
    fn no_other_objects_write_no_other_map() {
        let refs = EvidenceRefs {
            vex: Some("k".into()),
            ..EvidenceRefs::default()
        };
        assert_eq!(serde_json::to_value(&refs).unwrap(), json!({"vex": "k"}));
    }
}
