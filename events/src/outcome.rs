//! Reading what arrives on the outcome subjects (`vexxy.analysis.completed` and `.failed`): one
//! decoder for every consumer, so a client, the CLI and the tests agree on what an outcome is.

use serde_json::Value;

use crate::completed::AnalysisCompleted;
use crate::envelope::{CloudEvent, EventType};
use crate::failed::AnalysisFailed;

/// How one analysis ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisOutcome {
    Completed(Box<AnalysisCompleted>),
    Failed(Box<AnalysisFailed>),
}

/// Why a message on the outcome subjects is no outcome.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("the message is not a CloudEvent ({source}): {payload}")]
    NotCloudEvent {
        payload: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "event type {event_type} (job {}) is neither {} nor {}",
        job_id.as_deref().unwrap_or("none"),
        EventType::Completed.as_str(),
        EventType::Failed.as_str()
    )]
    UnknownType {
        job_id: Option<String>,
        event_type: String,
    },
    #[error(
        "the data of {event_type} (job {}) does not match the contract: {source}",
        job_id.as_deref().unwrap_or("none")
    )]
    Data {
        job_id: Option<String>,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// An outcome and the envelope it came in (the data is taken out of it).
#[derive(Debug, Clone)]
pub struct ReceivedOutcome {
    /// The job the event is about (its CloudEvents `subject`); a `failed` event for a request
    /// that could not be read names none.
    pub job_id: Option<String>,
    /// The CloudEvents `id`: the same for a redelivered copy of one event.
    pub event_id: String,
    pub outcome: AnalysisOutcome,
}

impl AnalysisOutcome {
    /// Decodes one message of the outcome subjects.
    pub fn from_slice(payload: &[u8]) -> Result<ReceivedOutcome, OutcomeError> {
        let event: CloudEvent<Value> =
            serde_json::from_slice(payload).map_err(|source| OutcomeError::NotCloudEvent {
                payload: String::from_utf8_lossy(payload).into_owned(),
                source,
            })?;
        Self::from_event(event)
    }

    /// The outcome an already parsed CloudEvent carries (for a consumer that looked at the
    /// envelope first, e.g. to skip other jobs' events).
    pub fn from_event(event: CloudEvent<Value>) -> Result<ReceivedOutcome, OutcomeError> {
        let job_id = event.subject.clone();
        let data_error = |source| OutcomeError::Data {
            job_id: job_id.clone(),
            event_type: event.event_type.clone(),
            source,
        };
        let outcome = if event.is_type(EventType::Completed) {
            AnalysisOutcome::Completed(Box::new(
                serde_json::from_value(event.data.clone()).map_err(data_error)?,
            ))
        } else if event.is_type(EventType::Failed) {
            AnalysisOutcome::Failed(Box::new(
                serde_json::from_value(event.data.clone()).map_err(data_error)?,
            ))
        } else {
            return Err(OutcomeError::UnknownType {
                job_id,
                event_type: event.event_type,
            });
        };
        Ok(ReceivedOutcome {
            job_id,
            event_id: event.id,
            outcome,
        })
    }

    pub fn is_completed(&self) -> bool {
        matches!(self, AnalysisOutcome::Completed(_))
    }

    /// The `Nats-Msg-Id` of the request the outcome answers, when it had one.
    pub fn request_msg_id(&self) -> Option<&str> {
        match self {
            AnalysisOutcome::Completed(completed) => completed.request_msg_id.as_deref(),
            AnalysisOutcome::Failed(failed) => failed.request_msg_id.as_deref(),
        }
    }

    /// `completed`, or the failure's reason code.
    pub fn label(&self) -> &'static str {
        match self {
            AnalysisOutcome::Completed(_) => "completed",
            AnalysisOutcome::Failed(failed) => failed.reason.as_str(),
        }
    }
}
