//! The one decoder of the outcome subjects reads what the stages emit, and says why anything
//! else is no outcome.

mod common;

use serde_json::{Value, json};
use vexxy_events::{
    AnalysisOutcome, EventType, OutcomeError, Stage, completed_event, failed_event,
};

fn wire<T: serde::Serialize>(event: &T) -> Vec<u8> {
    serde_json::to_vec(event).expect("serialize")
}

#[test]
fn what_the_stages_emit_decodes() {
    let completed = common::sample_completed();
    let received =
        AnalysisOutcome::from_slice(&wire(&completed_event(Stage::Enrich, completed.clone())))
            .expect("a completed event");
    assert_eq!(received.job_id.as_deref(), Some(completed.job_id.as_str()));
    assert_eq!(
        received.outcome,
        AnalysisOutcome::Completed(Box::new(completed))
    );
    assert!(received.outcome.is_completed());
    assert_eq!(received.outcome.label(), "completed");

    let failed = common::sample_failed();
    let received =
        AnalysisOutcome::from_slice(&wire(&failed_event(failed.clone()))).expect("a failed event");
    assert_eq!(received.job_id, failed.job_id);
    assert_eq!(received.outcome.label(), failed.reason.as_str());
    assert_eq!(received.outcome, AnalysisOutcome::Failed(Box::new(failed)));
}

#[test]
fn a_failed_event_without_a_job_still_decodes() {
    let mut failed = common::sample_failed();
    failed.job_id = None;
    let mut event: Value = serde_json::to_value(failed_event(failed)).expect("value");
    event.as_object_mut().expect("object").remove("subject");
    let received = AnalysisOutcome::from_slice(&wire(&event)).expect("decodes");
    assert_eq!(received.job_id, None);
}

#[test]
fn anything_else_is_an_error_saying_what() {
    assert!(matches!(
        AnalysisOutcome::from_slice(b"not json"),
        Err(OutcomeError::NotCloudEvent { .. })
    ));
    let mut event: Value =
        serde_json::to_value(completed_event(Stage::Enrich, common::sample_completed()))
            .expect("value");
    event["type"] = "io.vexxy.analysis.requested.v1".into();
    let error = AnalysisOutcome::from_slice(&wire(&event)).expect_err("a request is no outcome");
    assert!(matches!(error, OutcomeError::UnknownType { .. }), "{error}");
    assert!(error.to_string().contains(EventType::Completed.as_str()));
    event["type"] = EventType::Completed.as_str().into();
    event["data"] = json!({"job_id": 7});
    let error = AnalysisOutcome::from_slice(&wire(&event)).expect_err("data off the contract");
    assert!(matches!(error, OutcomeError::Data { .. }), "{error}");
    assert!(error.to_string().contains("does not match the contract"));
}
