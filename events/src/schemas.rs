//! JSON Schemas (draft 2020-12) of every message in the contract, generated from the types.
//!
//! The committed copies in `events/schemas/` are what users read and validate against; a test
//! fails when they drift from the types. Regenerate them with `cargo xtask schemas`.

use std::io;
use std::path::Path;

use schemars::JsonSchema;
use serde_json::{Value, json};

use crate::envelope::{CloudEvent, EventType, SPEC_VERSION};
use crate::{AnalysisCompleted, AnalysisFailed, AnalysisRequest, JobStatus, PipelineTicket};

pub const REQUESTED: &str = "analysis-requested.v1.json";
pub const REQUESTED_CLOUD_EVENT: &str = "analysis-requested-cloudevent.v1.json";
pub const COMPLETED: &str = "analysis-completed.v1.json";
pub const FAILED: &str = "analysis-failed.v1.json";
pub const PIPELINE_TICKET: &str = "pipeline-ticket.v1.json";
pub const JOB_STATUS: &str = "job-status.v1.json";

/// Every schema, by file name.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        (
            REQUESTED,
            schema_of::<AnalysisRequest>(
                "vexxy analysis request v1",
                "The body published on `vexxy.analysis.requested`: this object as plain JSON, or \
                 the `data` of a CloudEvents 1.0 structured-mode event of type \
                 `io.vexxy.analysis.requested.v1` (see analysis-requested-cloudevent.v1.json). \
                 Unknown fields are rejected. The service applies further rules this schema \
                 cannot express (digest required unless `image_ref` ends in `@sha256:...`, \
                 environment names, control characters, duration bounds, allowlist); see \
                 events/README.md.",
            ),
        ),
        (
            REQUESTED_CLOUD_EVENT,
            cloud_event_schema::<AnalysisRequest>(
                EventType::Requested,
                "vexxy analysis request v1, CloudEvent form",
                "A CloudEvents 1.0 structured-mode event carrying an analysis request in `data`. \
                 Published on `vexxy.analysis.requested`.",
            ),
        ),
        (
            COMPLETED,
            cloud_event_schema::<AnalysisCompleted>(
                EventType::Completed,
                "vexxy analysis completed v1",
                "Published on `vexxy.analysis.completed` when a job wrote its VEX document.",
            ),
        ),
        (
            FAILED,
            cloud_event_schema::<AnalysisFailed>(
                EventType::Failed,
                "vexxy analysis failed v1",
                "Published on `vexxy.analysis.failed` when a request was rejected or a job \
                 could not finish.",
            ),
        ),
        (
            PIPELINE_TICKET,
            cloud_event_schema::<PipelineTicket>(
                EventType::PipelineTicket,
                "vexxy pipeline ticket v1 (internal)",
                "The hand-off between stages on `vexxy.pipeline.<stage>`. Internal: not part \
                 of the public contract, versioned the same way.",
            ),
        ),
        (
            JOB_STATUS,
            schema_of::<JobStatus>(
                "vexxy job status v1",
                "The record kept per job id in the `vexxy-jobs` JetStream KV bucket.",
            ),
        ),
    ]
}

/// Writes every schema into `dir` (created if needed) as pretty JSON with a trailing newline,
/// and removes `.json` files there that no longer correspond to a schema.
pub fn write_all(dir: impl AsRef<Path>) -> io::Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)?;
    let schemas = all();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".json") && !schemas.iter().any(|(file, _)| *file == name) {
            std::fs::remove_file(&path)?;
        }
    }
    for (file, schema) in schemas {
        std::fs::write(dir.join(file), render(&schema))?;
    }
    Ok(())
}

/// The exact bytes [`write_all`] writes for `schema`.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a JSON value always serialises");
    text.push('\n');
    text
}

/// The schema of `T`, with `$schema`, `title` and `description` first so a reader meets them
/// before the details.
fn schema_of<T: JsonSchema>(title: &str, description: &str) -> Value {
    let Value::Object(mut generated) = schemars::schema_for!(T).to_value() else {
        unreachable!("the schema of a struct is an object");
    };
    let mut schema = serde_json::Map::new();
    if let Some(dialect) = generated.remove("$schema") {
        schema.insert("$schema".into(), dialect);
    }
    schema.insert("title".into(), title.into());
    schema.insert("description".into(), description.into());
    generated.remove("title");
    generated.remove("description");
    schema.extend(generated);
    Value::Object(schema)
}

/// The schema of `CloudEvent<T>` with `specversion` and `type` pinned to their only valid values.
fn cloud_event_schema<T: JsonSchema>(
    event_type: EventType,
    title: &str,
    description: &str,
) -> Value {
    let mut schema = schema_of::<CloudEvent<T>>(title, description);
    let properties = schema["properties"]
        .as_object_mut()
        .expect("CloudEvent has properties");
    properties.insert(
        "specversion".into(),
        json!({"description": "CloudEvents specification version.", "const": SPEC_VERSION}),
    );
    properties.insert(
        "type".into(),
        json!({
            "description": "Versioned event type. A breaking change gets a new `.v2` type.",
            "const": event_type.as_str()
        }),
    );
    schema
}
