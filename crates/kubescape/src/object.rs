//! The envelope every storage object shares (`apiVersion`, `kind`, `metadata`, `spec`) and the
//! lenient deserialisation helpers the typed views use.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::ParseError;
use crate::metadata_only::has_content;

/// The parts of `metadata` vexxy reads. Go omits empty maps or writes `null`; both read as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectInfo {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

impl ObjectInfo {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Reads a JSON `null` as the type's default (Go writes `null` for nil slices and maps).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Checks `kind` (when the object carries one; files copied from test data may not) and reads
/// `metadata`. Returns the object's name for error messages.
pub(crate) fn read_envelope(
    object: &Value,
    expected_kinds: &[&'static str],
) -> Result<ObjectInfo, ParseError> {
    let expected = expected_kinds[0];
    let Some(map) = object.as_object() else {
        return Err(ParseError::InvalidField {
            kind: expected,
            name: String::new(),
            path: ".".into(),
            message: format!("expected a JSON object, got {}", json_type(object)),
        });
    };
    match map.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind.is_empty() || expected_kinds.contains(&kind.as_str()) => {
        }
        Some(other) => {
            return Err(ParseError::WrongKind {
                expected,
                found: other
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            });
        }
    }
    match map.get("metadata") {
        None | Some(Value::Null) => Err(ParseError::MissingField {
            kind: expected,
            name: String::new(),
            path: "metadata".into(),
            why: "every storage object has metadata; this is not a Kubernetes object",
        }),
        Some(meta) => serde_path_to_error::deserialize::<_, ObjectInfo>(meta)
            .map_err(|e| ParseError::from_serde(expected, "", "metadata", e)),
    }
}

/// The object's `spec`, or `SpecMissing` when it has no content: absent, null, `{}`, or the
/// zero-valued spec of the storage server's metadata-only view (see [`crate::metadata_only`]).
pub(crate) fn spec_of<'a>(
    object: &'a Value,
    kind: &'static str,
    name: &str,
) -> Result<&'a Value, ParseError> {
    match object.get("spec") {
        Some(spec @ Value::Object(_)) if has_content(Some(spec)) => Ok(spec),
        _ => Err(ParseError::SpecMissing {
            kind,
            name: name.to_string(),
        }),
    }
}

/// Deserialises `value` (found at `prefix` in the object) with the failing path in the error.
pub(crate) fn typed<T: DeserializeOwned>(
    value: &Value,
    kind: &'static str,
    name: &str,
    prefix: &str,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map_err(|e| ParseError::from_serde(kind, name, prefix, e))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
