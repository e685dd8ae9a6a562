//! The public event contract of vexxy.
//!
//! Everything a user publishes to or reads from vexxy over NATS is defined here, and nothing else
//! of ours is a dependency of this crate, so a client can depend on it alone. The contract is
//! versioned through the CloudEvents `type` (`io.vexxy.analysis.<event>.v1`): a breaking change
//! gets a new `.v2` type published beside the old one, never an in-place edit.
//!
//! * [`subjects`]: the NATS subjects and streams.
//! * [`envelope`]: the CloudEvents 1.0 structured-mode envelope every event travels in.
//! * [`request`]: the analysis request (input) and its validation.
//! * [`completed`], [`failed`]: the two public outcomes; [`outcome`] reads either from the wire.
//! * [`pipeline`]: the internal hand-off between stages (not public, but versioned the same way).
//! * [`status`]: the job record kept in the KV bucket.
//! * [`emit`]: builders for the events vexxy publishes, with deterministic ids.
//! * [`schemas`]: JSON Schemas of all of the above (committed in `events/schemas/`).

pub mod completed;
pub mod emit;
pub mod envelope;
pub mod failed;
pub mod outcome;
pub mod pipeline;
pub mod purl;
pub mod request;
pub mod schemas;
pub mod status;
pub mod subjects;

pub use completed::{AnalysisCompleted, Artifacts, EvidenceQuality, ExtraArtifacts, Summary};
pub use emit::{completed_event, failed_event, failed_event_id, stage_source, ticket_event};
pub use envelope::{CloudEvent, EventType};
pub use failed::{AnalysisFailed, FailureReason, OriginalMessage};
pub use outcome::{AnalysisOutcome, OutcomeError, ReceivedOutcome};
pub use pipeline::{MissingSection, PipelineTicket};
pub use request::{
    AnalysisRequest, Rejection, RunConfig, ValidatedRequest, ValidationPolicy, derive_job_id,
    escape_kubernetes_expansion, parse_request, request_fingerprint,
};
pub use status::{JobState, JobStatus};

/// The five stages, in pipeline order. Used in events, status records and metrics labels.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    InstallCheck,
    Deploy,
    Wait,
    Extract,
    Enrich,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::InstallCheck,
        Stage::Deploy,
        Stage::Wait,
        Stage::Extract,
        Stage::Enrich,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::InstallCheck => "install-check",
            Stage::Deploy => "deploy",
            Stage::Wait => "wait",
            Stage::Extract => "extract",
            Stage::Enrich => "enrich",
        }
    }

    /// The stage after this one, `None` for the last.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::InstallCheck => Some(Stage::Deploy),
            Stage::Deploy => Some(Stage::Wait),
            Stage::Wait => Some(Stage::Extract),
            Stage::Extract => Some(Stage::Enrich),
            Stage::Enrich => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
