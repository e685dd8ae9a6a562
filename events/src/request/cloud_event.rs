//! Unwrapping of a request sent as a CloudEvents 1.0 structured-mode event.

use serde_json::{Map, Value};

use super::fields::{Problem, describe_value, json_type};
use crate::FailureReason;
use crate::envelope::{EventType, SPEC_VERSION};

/// The request object in `event.data`, after checking the envelope's attributes.
pub(super) fn unwrap_cloud_event(
    mut event: Map<String, Value>,
) -> Result<Map<String, Value>, Problem> {
    let requested = EventType::Requested.as_str();
    match event.get("specversion") {
        Some(Value::String(v)) if v == SPEC_VERSION => {}
        other => {
            return Err((
                FailureReason::UnsupportedEvent,
                format!(
                    "CloudEvent `specversion` is {}; vexxy accepts the string \"1.0\" only (or \
                     send the plain request JSON without an envelope)",
                    describe_value(other)
                ),
            ));
        }
    }
    match event.get("type") {
        Some(Value::String(t)) if t == requested => {}
        other => {
            return Err((
                FailureReason::UnsupportedEvent,
                format!(
                    "CloudEvent `type` is {}; requests must have type `{requested}`",
                    describe_value(other)
                ),
            ));
        }
    }
    for attribute in ["id", "source"] {
        match event.get(attribute) {
            Some(Value::String(s)) if !s.is_empty() => {}
            None | Some(Value::Null) => {
                return Err((
                    FailureReason::MissingField,
                    format!(
                        "CloudEvent attribute `{attribute}` is missing; CloudEvents 1.0 requires \
                         `id` and `source` (e.g. \"source\": \"/ci/my-pipeline\")"
                    ),
                ));
            }
            Some(other) => {
                return Err((
                    FailureReason::InvalidRequest,
                    format!(
                        "CloudEvent attribute `{attribute}` must be a non-empty string, got {}",
                        describe_value(Some(other))
                    ),
                ));
            }
        }
    }
    if let Some(content_type) = event.get("datacontenttype") {
        let is_json = content_type.as_str().is_some_and(|t| {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            t == "application/json" || t.ends_with("+json")
        });
        if !is_json {
            return Err((
                FailureReason::UnsupportedEvent,
                format!(
                    "CloudEvent `datacontenttype` is {}; vexxy accepts `application/json` data \
                     only",
                    describe_value(Some(content_type))
                ),
            ));
        }
    }
    if event.contains_key("data_base64") {
        return Err((
            FailureReason::UnsupportedEvent,
            "CloudEvent carries `data_base64`; put the request in `data` as a JSON object".into(),
        ));
    }
    match event.remove("data") {
        Some(Value::Object(data)) => Ok(data),
        None | Some(Value::Null) => Err((
            FailureReason::MissingField,
            "CloudEvent attribute `data` is missing: put the analysis request object in `data`"
                .into(),
        )),
        Some(other) => Err((
            FailureReason::InvalidRequest,
            format!(
                "CloudEvent `data` is a JSON {}, but must be the analysis request object",
                json_type(&other)
            ),
        )),
    }
}
