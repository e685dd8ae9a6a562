//! The job record in the `vexxy-jobs` KV bucket, one key per job id.
//!
//! Writers update it with a revision check (compare-and-set), so two replicas racing on the
//! same job cannot overwrite each other's transition; see `vexxy_runtime::status`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureReason, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for or inside a stage.
    Running,
    Completed,
    Failed,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobStatus {
    pub job_id: String,
    pub state: JobState,
    /// The stage the job is in (or ended in).
    pub stage: Stage,
    pub image_ref: String,
    pub image_digest: String,
    /// sha256 of the canonical validated request: a reused job id with a different fingerprint
    /// is a conflict, the same fingerprint is a redelivery.
    pub request_fingerprint: String,
    /// Stream sequence of the request message that created the job: a redelivery carries the
    /// same sequence, a new submission of the same job id does not.
    pub request_sequence: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
    /// URL of the OpenVEX document once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusError {
    pub reason: FailureReason,
    pub message: String,
}
