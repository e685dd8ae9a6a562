//! The committed JSON Schemas match the types, and real events validate against them.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};
use vexxy_events::schemas::{self, render};
use vexxy_events::{FailureReason, Stage, completed_event, failed_event, ticket_event};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn schema(file: &str) -> Value {
    schemas::all()
        .into_iter()
        .find(|(name, _)| *name == file)
        .unwrap_or_else(|| panic!("no schema named {file}"))
        .1
}

/// Validates `instance` against the generated schema `file` (equal to the committed one, which
/// `committed_schemas_match_the_types` checks), returning every error.
fn errors(file: &str, instance: &Value) -> Vec<String> {
    let schema = schema(file);
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn committed_schemas_match_the_types() {
    let dir = schema_dir();
    // Set VEXXY_WRITE_SCHEMAS=1 to regenerate (what `cargo xtask schemas` does).
    if std::env::var_os("VEXXY_WRITE_SCHEMAS").is_some() {
        schemas::write_all(&dir).unwrap();
    }
    let mut stale = Vec::new();
    let generated = schemas::all();
    for (file, schema) in &generated {
        match std::fs::read_to_string(dir.join(file)) {
            Ok(committed) if committed == render(schema) => {}
            Ok(_) => stale.push(format!("{file} differs")),
            Err(e) => stale.push(format!("{file} cannot be read ({e})")),
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !generated.iter().any(|(file, _)| *file == name) {
            stale.push(format!("{name} is no longer generated"));
        }
    }
    assert!(
        stale.is_empty(),
        "events/schemas/ is out of date with the event types ({}): run `cargo xtask schemas` and \
         commit the result",
        stale.join("; ")
    );
}

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema() {
    for (file, schema) in schemas::all() {
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}"
        );
        assert!(
            schema["title"].is_string() && schema["description"].is_string(),
            "{file}"
        );
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn events_built_by_the_builders_validate() {
    let cases = [
        (
            schemas::COMPLETED,
            serde_json::to_value(completed_event(Stage::Enrich, sample_completed())).unwrap(),
        ),
        (
            schemas::FAILED,
            serde_json::to_value(failed_event(sample_failed())).unwrap(),
        ),
        (
            schemas::PIPELINE_TICKET,
            serde_json::to_value(ticket_event(Stage::Deploy, sample_ticket())).unwrap(),
        ),
        (
            schemas::JOB_STATUS,
            serde_json::to_value(sample_status()).unwrap(),
        ),
        (
            schemas::REQUESTED,
            json!({"job_id": "release-7", "image_ref": "ghcr.io/owner/repo:1.4", "image_digest": DIGEST,
                   "config": {"analysis_duration": 600, "environment": {"PORT": "8080"},
                              "command": ["/app"], "args": ["--serve"], "ports": [8080]},
                   "labels": {"team": "payments"}}),
        ),
        (schemas::REQUESTED_CLOUD_EVENT, cloud_event(minimal())),
    ];
    for (file, instance) in cases {
        let problems = errors(file, &instance);
        assert!(problems.is_empty(), "{file}: {problems:?}\n{instance:#}");
    }
    // Every reason code is allowed by the failed schema.
    for reason in FailureReason::ALL {
        let mut failed = sample_failed();
        failed.reason = reason;
        let event = serde_json::to_value(failed_event(failed)).unwrap();
        assert!(errors(schemas::FAILED, &event).is_empty(), "{reason}");
    }
}

#[test]
fn schemas_reject_what_the_contract_forbids() {
    let completed =
        serde_json::to_value(completed_event(Stage::Enrich, sample_completed())).unwrap();
    let mut wrong_type = completed.clone();
    wrong_type["type"] = json!("io.vexxy.analysis.failed.v1");
    assert!(!errors(schemas::COMPLETED, &wrong_type).is_empty());
    let mut wrong_version = completed.clone();
    wrong_version["specversion"] = json!("0.3");
    assert!(!errors(schemas::COMPLETED, &wrong_version).is_empty());
    let mut missing_summary = completed;
    missing_summary["data"]
        .as_object_mut()
        .unwrap()
        .remove("summary");
    assert!(!errors(schemas::COMPLETED, &missing_summary).is_empty());

    let mut bad_reason = serde_json::to_value(failed_event(sample_failed())).unwrap();
    bad_reason["data"]["reason"] = json!("something_else");
    assert!(!errors(schemas::FAILED, &bad_reason).is_empty());

    for bad_request in [
        json!({"image_ref": "nginx", "image_digest": DIGEST, "extra": 1}),
        json!({"image_ref": "nginx", "image_digest": "sha256:abc"}),
        json!({"image_digest": DIGEST}),
        json!({"image_ref": "nginx", "job_id": "Bad Id"}),
        json!({"image_ref": "nginx", "config": {"ports": [0]}}),
        json!({"image_ref": "nginx", "config": {"ports": [70000]}}),
        json!({"image_ref": "nginx", "config": {"analysis_duraton": 5}}),
    ] {
        assert!(
            !errors(schemas::REQUESTED, &bad_request).is_empty(),
            "{bad_request}"
        );
    }
    let mut event = cloud_event(minimal());
    event["type"] = json!("io.vexxy.analysis.completed.v1");
    assert!(!errors(schemas::REQUESTED_CLOUD_EVENT, &event).is_empty());
}
