//! Event builders and JSON round trips of every message type.

mod common;

use common::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use vexxy_events::envelope::event_id;
use vexxy_events::{
    CloudEvent, EventType, FailureReason, Stage, ValidationPolicy, completed_event, failed_event,
    parse_request, ticket_event,
};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let text = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, value, "{text}");
}

#[test]
fn every_message_type_round_trips_through_json() {
    round_trip(&sample_request());
    round_trip(&completed_event(Stage::Enrich, sample_completed()));
    round_trip(&failed_event(sample_failed()));
    round_trip(&ticket_event(Stage::Deploy, sample_ticket()));
    round_trip(&sample_status());
    let request: vexxy_events::AnalysisRequest =
        serde_json::from_value(with_config(serde_json::json!({"ports": [80]}))).unwrap();
    round_trip(&request);
}

#[test]
fn completed_event_has_deterministic_identity() {
    let data = sample_completed();
    let job_id = data.job_id.clone();
    let event = completed_event(Stage::Enrich, data.clone());
    assert_eq!(event.specversion, "1.0");
    assert!(event.is_type(EventType::Completed));
    assert_eq!(event.id, format!("{job_id}.completed"));
    assert_eq!(event.source, "/vexxy/stages/enrich");
    assert_eq!(event.subject.as_deref(), Some(job_id.as_str()));
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(
        completed_event(Stage::Enrich, data).id,
        event.id,
        "same job, same id"
    );
}

#[test]
fn job_failures_are_identified_by_job_and_rejections_by_message() {
    let job_failure = failed_event(sample_failed());
    let job_id = job_failure.data.job_id.clone().unwrap();
    assert_eq!(job_failure.id, event_id(&job_id, "failed"));
    assert_eq!(job_failure.source, "/vexxy/stages/deploy");
    assert_eq!(job_failure.subject.as_deref(), Some(job_id.as_str()));
    assert!(job_failure.is_type(EventType::Failed));

    // A rejected request: identified by stream and sequence, so a corrected request reusing the
    // job id is not taken for a duplicate of the rejection; a redelivery (same sequence) is.
    let body = serde_json::json!({"job_id": "release-7", "image_ref": "nginx:1.25"});
    let rejection =
        parse_request(&bytes(&body), Some("m-9"), &ValidationPolicy::default()).unwrap_err();
    assert_eq!(rejection.reason, FailureReason::MissingDigest);
    let data =
        rejection
            .clone()
            .into_failed(Stage::InstallCheck, Some("m-9".into()), sample_original(17));
    assert!(!data.retryable);
    assert_eq!(data.job_id.as_deref(), Some("release-7"));
    assert_eq!(data.image_ref.as_deref(), Some("nginx:1.25"));
    assert_eq!(data.request_msg_id.as_deref(), Some("m-9"));
    let event = failed_event(data.clone());
    assert_eq!(event.id, "VEXXY_ANALYSIS.17.failed");
    assert_eq!(event.subject.as_deref(), Some("release-7"));
    assert_eq!(event.source, "/vexxy/stages/install-check");
    assert_eq!(
        failed_event(data).id,
        event.id,
        "a redelivery gets the same id"
    );
    let later = rejection.into_failed(Stage::InstallCheck, None, sample_original(18));
    assert_ne!(failed_event(later).id, event.id);

    // Without a job id at all, the subject is left out.
    let mut anonymous = sample_failed();
    anonymous.job_id = None;
    let event = failed_event(anonymous);
    assert_eq!(event.subject, None);
    assert_eq!(event.id, "VEXXY_ANALYSIS.42.failed");
    let json = serde_json::to_value(&event).unwrap();
    assert!(json.get("subject").is_none(), "{json}");
}

#[test]
fn tickets_are_identified_by_job_and_emitting_stage() {
    let ticket = sample_ticket();
    let job_id = ticket.request.job_id.clone();
    let event = ticket_event(Stage::Wait, ticket.clone());
    assert_eq!(event.id, format!("{job_id}.ticket.wait"));
    assert_eq!(event.source, "/vexxy/stages/wait");
    assert!(event.is_type(EventType::PipelineTicket));
    assert_ne!(ticket_event(Stage::Deploy, ticket).id, event.id);
}

#[test]
fn an_event_of_an_unknown_type_still_parses() {
    let mut event =
        serde_json::to_value(completed_event(Stage::Enrich, sample_completed())).unwrap();
    event["type"] = "io.vexxy.analysis.completed.v9".into();
    let parsed: CloudEvent<serde_json::Value> = serde_json::from_value(event).unwrap();
    assert!(!parsed.is_type(EventType::Completed));
    assert_eq!(parsed.event_type, "io.vexxy.analysis.completed.v9");
}
