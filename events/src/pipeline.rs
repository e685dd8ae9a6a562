//! The internal hand-off between stages (`io.vexxy.pipeline.ticket.v1` on `vexxy.pipeline.<stage>`).
//!
//! One ticket type travels the whole pipeline; each stage fills in its own section and passes the
//! rest on untouched. Tickets carry references (object-store keys, Kubernetes names), never whole
//! documents: a VEX can exceed the NATS payload limit.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Anything else kept, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, String>,
}
