//! Builders for the events vexxy publishes, with deterministic ids.
//!
//! The event `id` doubles as the JetStream `Nats-Msg-Id`, so a stage that publishes the same
//! step twice (after a crash or a redelivery) produces a duplicate the server drops:
//!
//! | event | id |
//! | --- | --- |
//! | completed | `<job>.completed` |
//! | failed, job failure | `<job>.failed` |
//! | failed, request problem (rejection, conflict, duplicate) | `<stream>.<sequence>.failed` |
//! | pipeline ticket emitted by stage S | `<job>.ticket.<S>` |
//!
//! A rejected request is identified by its message (stream + sequence), not by its job id: the
//! job id of a rejected message may be reused by a corrected request whose own failure must not
//! be taken for a duplicate of the rejection.

use crate::envelope::{CloudEvent, EventType, SOURCE_PREFIX, event_id};
use crate::failed::{AnalysisFailed, OriginalMessage};
use crate::request::Rejection;
use crate::{AnalysisCompleted, PipelineTicket, Stage};

/// `/vexxy/stages/<stage>`: the CloudEvents `source` of everything `stage` emits.
pub fn stage_source(stage: Stage) -> String {
    format!("{SOURCE_PREFIX}{stage}")
}

/// The `io.vexxy.analysis.completed.v1` event for `data`, emitted by `stage`.
pub fn completed_event(stage: Stage, data: AnalysisCompleted) -> CloudEvent<AnalysisCompleted> {
    let id = event_id(&data.job_id, "completed");
    let job_id = data.job_id.clone();
    CloudEvent::new(
        EventType::Completed,
        &stage_source(stage),
        id,
        &job_id,
        data,
    )
}

/// The deterministic id of a `failed` event (see the module docs).
pub fn failed_event_id(data: &AnalysisFailed) -> String {
    match &data.job_id {
        Some(job_id) if !data.reason.is_request_problem() => event_id(job_id, "failed"),
        _ => event_id(
            &format!("{}.{}", data.original.stream, data.original.stream_sequence),
            "failed",
        ),
    }
}

/// The `io.vexxy.analysis.failed.v1` event for `data`, emitted by `data.stage`. Its `subject`
/// is the job id, absent when the failure has none.
pub fn failed_event(data: AnalysisFailed) -> CloudEvent<AnalysisFailed> {
    let id = failed_event_id(&data);
    let mut event = CloudEvent::new(EventType::Failed, &stage_source(data.stage), id, "", data);
    event.subject = event.data.job_id.clone();
    event
}

/// The `io.vexxy.pipeline.ticket.v1` event `from` hands to the next stage.
pub fn ticket_event(from: Stage, ticket: PipelineTicket) -> CloudEvent<PipelineTicket> {
    let job_id = ticket.request.job_id.clone();
    let id = event_id(&job_id, &format!("ticket.{from}"));
    CloudEvent::new(
        EventType::PipelineTicket,
        &stage_source(from),
        id,
        &job_id,
        ticket,
    )
}

impl Rejection {
    /// The `failed` data for this rejection, as `stage` (the stage reading requests) reports it.
    pub fn into_failed(
        self,
        stage: Stage,
        request_msg_id: Option<String>,
        original: OriginalMessage,
    ) -> AnalysisFailed {
        AnalysisFailed {
            job_id: self.job_id,
            image_ref: self.image_ref,
            image_digest: self.image_digest,
            request_msg_id,
            stage,
            reason: self.reason,
            message: self.message,
            retryable: false,
            original,
            labels: self.labels,
        }
    }
}
