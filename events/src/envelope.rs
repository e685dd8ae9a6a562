//! The CloudEvents 1.0 structured-mode JSON envelope.
//!
//! Every event vexxy publishes is one of these with a typed `data`. The `type` carries the
//! contract version; `subject` is the job id so consumers can route without reading `data`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/json";
/// The `source` attribute of events vexxy emits; the stage is appended (`/vexxy/stages/wait`).
pub const SOURCE_PREFIX: &str = "/vexxy/stages/";

/// The versioned event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    #[serde(rename = "io.vexxy.analysis.requested.v1")]
    Requested,
    #[serde(rename = "io.vexxy.analysis.completed.v1")]
    Completed,
    #[serde(rename = "io.vexxy.analysis.failed.v1")]
    Failed,
    /// Internal hand-off between stages.
    #[serde(rename = "io.vexxy.pipeline.ticket.v1")]
    PipelineTicket,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Requested => "io.vexxy.analysis.requested.v1",
            EventType::Completed => "io.vexxy.analysis.completed.v1",
            EventType::Failed => "io.vexxy.analysis.failed.v1",
            EventType::PipelineTicket => "io.vexxy.pipeline.ticket.v1",
        }
    }
}

/// A CloudEvents 1.0 event in structured JSON mode.
///
/// `event_type` is kept as a plain string so that an event with an unknown or future type still
/// parses and can be reported precisely instead of failing as "malformed JSON".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CloudEvent<T> {
    /// Always `"1.0"`.
    pub specversion: String,
    /// Unique per event; deterministic for events vexxy emits (job id + step), so a redelivered
    /// message produces the same id.
    pub id: String,
    /// URI-reference of the producer, e.g. `/vexxy/stages/enrich`.
    pub source: String,
    /// Versioned type, e.g. `io.vexxy.analysis.completed.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    pub data: T,
}

impl<T> CloudEvent<T> {
    /// A new event emitted by vexxy. `id` must be deterministic for the step that emits it.
    pub fn new(event_type: EventType, source: &str, id: String, job_id: &str, data: T) -> Self {
        CloudEvent {
            specversion: SPEC_VERSION.to_string(),
            id,
            source: source.to_string(),
            event_type: event_type.as_str().to_string(),
            subject: Some(job_id.to_string()),
            time: Some(Utc::now()),
            datacontenttype: Some(CONTENT_TYPE.to_string()),
            data,
        }
    }

    pub fn is_type(&self, event_type: EventType) -> bool {
        self.event_type == event_type.as_str()
    }
}

/// The deterministic event id for `step` of `job_id`: redelivery and retries reuse it, so the
/// JetStream de-duplication window (`Nats-Msg-Id`) drops the copy.
pub fn event_id(job_id: &str, step: &str) -> String {
    format!("{job_id}.{step}")
}
