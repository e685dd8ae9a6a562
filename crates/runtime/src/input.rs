//! What a stage's input messages are, and how a pipeline hand-off is decoded.

use vexxy_events::{CloudEvent, EventType, FailureReason, PipelineTicket, Stage, subjects};

use crate::publish::Delivery;

/// The kind of message a stage consumes, chosen once when its worker is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A user's analysis request (`vexxy.analysis.requested`), validated and turned into a job.
    Request,
    /// The previous stage's ticket (`vexxy.pipeline.<stage>`).
    Ticket,
}

impl Input {
    /// What `stage` reads: the stage consuming the public request subject reads requests.
    pub fn of(stage: Stage) -> Self {
        if subjects::input_of(stage) == subjects::REQUESTED {
            Input::Request
        } else {
            Input::Ticket
        }
    }
}

/// Decodes a pipeline hand-off: a CloudEvent of type `io.vexxy.pipeline.ticket.v1`.
///
/// A well-formed ticket (every hand-off but a broken one) takes one pass straight into the
/// typed event. Anything else is explained by two passes, in the order of the checks: the
/// envelope (with `data` only checked to be JSON, not kept), then, once the type is known to be
/// a ticket, the whole event again, for the error in `data`. The outcome is the same as always
/// taking the two passes: the first pass succeeds only where both would (the envelope of an
/// event that parses with its `data` parses with `data` ignored), and a parsed event of
/// another type is still refused as unsupported. Building a `serde_json::Value` tree of the
/// event first cost more than both passes together.
pub(crate) fn decode_ticket(
    delivery: &Delivery,
) -> Result<PipelineTicket, (FailureReason, String)> {
    if let Ok(event) = serde_json::from_slice::<CloudEvent<PipelineTicket>>(&delivery.payload)
        && event.is_type(EventType::PipelineTicket)
    {
        return Ok(event.data);
    }
    let envelope: CloudEvent<serde::de::IgnoredAny> = serde_json::from_slice(&delivery.payload)
        .map_err(|e| {
            (
                FailureReason::MalformedRequest,
                format!("not a CloudEvent in JSON: {e}"),
            )
        })?;
    if !envelope.is_type(EventType::PipelineTicket) {
        return Err((
            FailureReason::UnsupportedEvent,
            format!(
                "event type {:?}, expected {:?}",
                envelope.event_type,
                EventType::PipelineTicket.as_str()
            ),
        ));
    }
    // The envelope parsed above, so an error here is in `data`.
    serde_json::from_slice::<CloudEvent<PipelineTicket>>(&delivery.payload)
        .map(|event| event.data)
        .map_err(|e| {
            (
                FailureReason::MalformedRequest,
                format!("the ticket does not match the contract: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexxy_events::{RunConfig, ValidatedRequest};

    fn delivery(payload: &[u8]) -> Delivery {
        Delivery {
            stream: subjects::PIPELINE_STREAM.into(),
            subject: subjects::input_of(Stage::Extract),
            stream_sequence: 7,
            delivered: 1,
            msg_id: None,
            headers: None,
            payload: bytes::Bytes::copy_from_slice(payload),
        }
    }

    fn ticket() -> PipelineTicket {
        PipelineTicket {
            request: ValidatedRequest {
                job_id: "job-1".into(),
                image_ref: "docker.io/library/nginx".into(),
                image_digest: format!("sha256:{}", "ab".repeat(32)),
                repository: "docker.io/library/nginx".into(),
                registry: "docker.io".into(),
                tag: None,
                request_msg_id: Some("job-1.request".into()),
                analysis_duration_seconds: 300,
                config: RunConfig::default(),
                labels: [("team".to_string(), "payments".to_string())].into(),
            },
            timings: vec![],
            sandbox: None,
            observation: None,
            evidence: None,
        }
    }

    fn event_json() -> serde_json::Value {
        serde_json::to_value(vexxy_events::ticket_event(Stage::Wait, ticket())).unwrap()
    }

    fn decode(event: &serde_json::Value) -> Result<PipelineTicket, (FailureReason, String)> {
        decode_ticket(&delivery(&serde_json::to_vec(event).unwrap()))
    }

    #[test]
    fn a_ticket_event_decodes_to_its_ticket() {
        assert_eq!(decode(&event_json()).unwrap(), ticket());
    }

    #[test]
    fn bytes_that_are_not_json_are_malformed() {
        let (reason, problem) = decode_ticket(&delivery(b"{not json")).unwrap_err();
        assert_eq!(reason, FailureReason::MalformedRequest);
        assert!(
            problem.starts_with("not a CloudEvent in JSON: "),
            "{problem}"
        );
    }

    #[test]
    fn an_event_without_data_is_not_a_cloud_event() {
        let mut event = event_json();
        event.as_object_mut().unwrap().remove("data");
        let (reason, problem) = decode(&event).unwrap_err();
        assert_eq!(reason, FailureReason::MalformedRequest);
        assert!(problem.contains("missing field `data`"), "{problem}");
    }

    #[test]
    fn another_event_type_is_unsupported_whatever_its_data() {
        let mut event = event_json();
        event["type"] = "io.vexxy.analysis.completed.v1".into();
        event["data"] = serde_json::json!({"something": "else"});
        let (reason, problem) = decode(&event).unwrap_err();
        assert_eq!(reason, FailureReason::UnsupportedEvent);
        assert!(
            problem.contains("io.vexxy.analysis.completed.v1")
                && problem.contains("io.vexxy.pipeline.ticket.v1"),
            "{problem}"
        );
    }

    #[test]
    fn another_event_type_is_unsupported_even_when_its_data_is_a_ticket() {
        let mut event = event_json();
        event["type"] = "io.vexxy.analysis.completed.v1".into();
        let (reason, problem) = decode(&event).unwrap_err();
        assert_eq!(reason, FailureReason::UnsupportedEvent);
        assert!(
            problem.contains("io.vexxy.analysis.completed.v1"),
            "{problem}"
        );
    }

    #[test]
    fn a_ticket_event_whose_data_breaks_the_contract_is_malformed() {
        let mut event = event_json();
        event["data"]["request"]
            .as_object_mut()
            .unwrap()
            .remove("job_id");
        let (reason, problem) = decode(&event).unwrap_err();
        assert_eq!(reason, FailureReason::MalformedRequest);
        assert!(
            problem.starts_with("the ticket does not match the contract: ")
                && problem.contains("job_id"),
            "{problem}"
        );
    }
}
