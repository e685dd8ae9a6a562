//! NATS subjects and JetStream streams: where each event lives.
//!
//! Two streams, because the two kinds of traffic want different retention:
//!
//! * [`PUBLIC_STREAM`] (limits retention) holds what users exchange with vexxy: requests in,
//!   completed and failed events out. Any number of subscribers can read it, each with its own
//!   durable consumer, and a late subscriber can replay history within the retention limits.
//! * [`PIPELINE_STREAM`] (work-queue retention) holds the hand-offs between stages. Each message
//!   is work for exactly one stage and disappears once that stage acks it.
//!
//! Dead letters go to [`DEAD_LETTER_STREAM`] (limits retention) so an operator can inspect and
//! replay them.

use crate::Stage;

/// Input: users publish analysis requests here.
pub const REQUESTED: &str = "vexxy.analysis.requested";
/// Output: one event per job that finished with a VEX document.
pub const COMPLETED: &str = "vexxy.analysis.completed";
/// Output: one event per job (or per rejected request) that could not finish.
pub const FAILED: &str = "vexxy.analysis.failed";

pub const PUBLIC_STREAM: &str = "VEXXY_ANALYSIS";
pub const PUBLIC_SUBJECTS: &str = "vexxy.analysis.>";

pub const PIPELINE_STREAM: &str = "VEXXY_PIPELINE";
pub const PIPELINE_SUBJECTS: &str = "vexxy.pipeline.>";

pub const DEAD_LETTER_STREAM: &str = "VEXXY_DEAD_LETTER";
pub const DEAD_LETTER_SUBJECTS: &str = "vexxy.dlq.>";

/// The KV bucket holding one [`crate::JobStatus`] per job, keyed by job id.
pub const STATUS_BUCKET: &str = "vexxy-jobs";

/// The subject a stage consumes. The first stage reads the public request subject; every later
/// stage reads its own pipeline subject.
pub fn input_of(stage: Stage) -> String {
    match stage {
        Stage::InstallCheck => REQUESTED.to_string(),
        other => format!("vexxy.pipeline.{}", other.as_str()),
    }
}

/// The stream a stage consumes from.
pub fn input_stream_of(stage: Stage) -> &'static str {
    match stage {
        Stage::InstallCheck => PUBLIC_STREAM,
        _ => PIPELINE_STREAM,
    }
}

/// The durable consumer name shared by all replicas of a stage.
pub fn durable_of(stage: Stage) -> String {
    format!("vexxy-{}", stage.as_str())
}

/// Where a stage's dead letters go: `vexxy.dlq.<stage>`.
pub fn dead_letter_of(stage: Stage) -> String {
    format!("vexxy.dlq.{}", stage.as_str())
}

/// Header carrying the publisher's `Nats-Msg-Id` of the original request through the pipeline.
pub const HEADER_REQUEST_MSG_ID: &str = "Vexxy-Request-Msg-Id";
/// Header naming the job on every event, so consumers can filter without parsing the body.
pub const HEADER_JOB_ID: &str = "Vexxy-Job-Id";
/// Headers on a dead letter: why it was dead-lettered and where it came from.
pub const HEADER_DLQ_REASON: &str = "Vexxy-Dead-Letter-Reason";
pub const HEADER_DLQ_STREAM: &str = "Vexxy-Original-Stream";
pub const HEADER_DLQ_SEQUENCE: &str = "Vexxy-Original-Sequence";
pub const HEADER_DLQ_SUBJECT: &str = "Vexxy-Original-Subject";
