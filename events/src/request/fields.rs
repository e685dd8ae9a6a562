//! Checks of the individual request fields, each producing its own reason code and a message
//! that names the field and says what is allowed.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::model::ValidationPolicy;
use super::text::{describe_char, forbidden_char, shorten};
use crate::FailureReason;

pub const MAX_ENV_VARS: usize = 64;
pub const MAX_ENV_NAME_LEN: usize = 128;
pub const MAX_ENV_VALUE_BYTES: usize = 8 * 1024;
pub const MAX_COMMAND_ELEMENTS: usize = 64;
pub const MAX_COMMAND_ELEMENT_BYTES: usize = 4 * 1024;
pub const MAX_PORTS: usize = 32;
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY_LEN: usize = 63;
pub const MAX_LABEL_VALUE_CHARS: usize = 256;

/// A reason code and the message for the user.
pub(super) type Problem = (FailureReason, String);

pub(super) fn check_duration(value: &Value, policy: &ValidationPolicy) -> Result<(), Problem> {
    let (min, max) = (
        policy.min_analysis_duration.max(1),
        policy.max_analysis_duration,
    );
    let range = format!(
        "a whole number of seconds from {min} to {max} (leave it out for the default of {})",
        policy.default_analysis_duration
    );
    let problem = |what: String| {
        Err((
            FailureReason::InvalidDuration,
            format!("config.analysis_duration {what}: it must be {range}"),
        ))
    };
    let Value::Number(number) = value else {
        return problem(format!("is {}", describe_value(Some(value))));
    };
    let float = number.as_f64().unwrap_or(f64::NAN);
    if number.as_i64().is_some_and(|n| n < 0) || float < 0.0 {
        return problem(format!("is negative ({number})"));
    }
    if float.fract() != 0.0 {
        return problem(format!("is fractional ({number})"));
    }
    let Some(seconds) = whole_number(number).filter(|s| *s <= max) else {
        return problem(format!("is too large ({number})"));
    };
    if seconds == 0 {
        return problem("is zero".into());
    }
    if seconds < min || seconds > max {
        return problem(format!("is {seconds}, outside the allowed range"));
    }
    Ok(())
}

pub(super) fn check_environment(value: &Value) -> Result<(), Problem> {
    let Value::Object(variables) = value else {
        return Err(wrong_type(
            "config.environment",
            "an object of NAME: \"value\" strings",
            value,
        ));
    };
    let bad = |message: String| Err((FailureReason::InvalidEnvironment, message));
    if variables.len() > MAX_ENV_VARS {
        return bad(format!(
            "config.environment has {} variables; at most {MAX_ENV_VARS} are allowed",
            variables.len()
        ));
    }
    for (name, value) in variables {
        if !is_c_identifier(name) || name.len() > MAX_ENV_NAME_LEN {
            return bad(format!(
                "config.environment name `{}` is not a valid variable name: use letters, digits \
                 and `_`, not starting with a digit, at most {MAX_ENV_NAME_LEN} characters",
                shorten(name, 60)
            ));
        }
        let Value::String(text) = value else {
            return Err(wrong_type(
                &format!("config.environment.{name}"),
                "a string (quote numbers and booleans)",
                value,
            ));
        };
        if text.len() > MAX_ENV_VALUE_BYTES {
            return bad(format!(
                "config.environment.{name} is {} bytes; values are limited to {MAX_ENV_VALUE_BYTES} \
                 bytes",
                text.len()
            ));
        }
        if let Some((position, c)) = forbidden_char(text) {
            return bad(format!(
                "config.environment.{name} contains {} at character {position}: values must be \
                 printable text without line breaks or control characters (vexxy passes values \
                 verbatim, so there is nothing to escape)",
                describe_char(c)
            ));
        }
    }
    Ok(())
}

pub(super) fn check_command(field: &str, value: &Value) -> Result<(), Problem> {
    let path = format!("config.{field}");
    let Value::Array(items) = value else {
        return Err(wrong_type(&path, "an array of strings", value));
    };
    let bad = |message: String| Err((FailureReason::InvalidCommand, message));
    if field == "command" && items.is_empty() {
        return bad(
            "config.command is an empty array: give the program to run (e.g. [\"/app\"]) or \
             leave command out to use the image's entrypoint"
                .into(),
        );
    }
    if items.len() > MAX_COMMAND_ELEMENTS {
        return bad(format!(
            "{path} has {} elements; at most {MAX_COMMAND_ELEMENTS} are allowed",
            items.len()
        ));
    }
    for (index, item) in items.iter().enumerate() {
        let Value::String(text) = item else {
            return Err(wrong_type(&format!("{path}[{index}]"), "a string", item));
        };
        if field == "command" && index == 0 && text.is_empty() {
            return bad("config.command[0] is empty: it must name the program to run".into());
        }
        if text.len() > MAX_COMMAND_ELEMENT_BYTES {
            return bad(format!(
                "{path}[{index}] is {} bytes; elements are limited to {MAX_COMMAND_ELEMENT_BYTES} \
                 bytes",
                text.len()
            ));
        }
        if let Some((position, c)) = forbidden_char(text) {
            return bad(format!(
                "{path}[{index}] contains {} at character {position}: elements must be printable \
                 text without line breaks or control characters (no shell runs them, so pass \
                 each argument as its own element instead of quoting)",
                describe_char(c)
            ));
        }
    }
    Ok(())
}

pub(super) fn check_ports(value: &Value) -> Result<(), Problem> {
    let Value::Array(items) = value else {
        return Err(wrong_type(
            "config.ports",
            "an array of port numbers",
            value,
        ));
    };
    let bad = |message: String| Err((FailureReason::InvalidPorts, message));
    if items.len() > MAX_PORTS {
        return bad(format!(
            "config.ports has {} entries; at most {MAX_PORTS} are allowed",
            items.len()
        ));
    }
    let mut seen = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        let Value::Number(number) = item else {
            return Err(wrong_type(
                &format!("config.ports[{index}]"),
                "a port number",
                item,
            ));
        };
        let port = whole_number(number).filter(|p| (1..=65_535).contains(p));
        let Some(port) = port else {
            return bad(format!(
                "config.ports[{index}] is {number}: ports are whole numbers from 1 to 65535"
            ));
        };
        if !seen.insert(port) {
            return bad(format!(
                "config.ports lists port {port} more than once: list each port once"
            ));
        }
    }
    Ok(())
}

pub(super) fn check_labels(value: &Value) -> Result<(), Problem> {
    let Value::Object(labels) = value else {
        return Err(wrong_type(
            "labels",
            "an object of key: \"value\" strings",
            value,
        ));
    };
    let bad = |message: String| Err((FailureReason::InvalidLabels, message));
    if labels.len() > MAX_LABELS {
        return bad(format!(
            "labels has {} entries; at most {MAX_LABELS} are allowed",
            labels.len()
        ));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'));
        if !key_ok {
            return bad(format!(
                "labels key `{}` is invalid: keys are 1-{MAX_LABEL_KEY_LEN} characters of \
                 letters, digits, `_`, `.`, `-` and `/`",
                shorten(key, 80)
            ));
        }
        let Value::String(text) = value else {
            return Err(wrong_type(&format!("labels.{key}"), "a string", value));
        };
        let chars = text.chars().count();
        if chars > MAX_LABEL_VALUE_CHARS {
            return bad(format!(
                "labels.{key} is {chars} characters; values are limited to \
                 {MAX_LABEL_VALUE_CHARS}"
            ));
        }
        if let Some((position, c)) = forbidden_char(text) {
            return bad(format!(
                "labels.{key} contains {} at character {position}: label values must be \
                 printable text",
                describe_char(c)
            ));
        }
    }
    Ok(())
}

/// The field's value, treating an explicit `null` as absent.
pub(super) fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|v| !v.is_null())
}

pub(super) fn wrong_type(path: &str, expected: &str, got: &Value) -> Problem {
    (
        FailureReason::InvalidRequest,
        format!(
            "`{path}` must be {expected}, but is a JSON {}",
            json_type(got)
        ),
    )
}

pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn describe_value(value: Option<&Value>) -> String {
    match value {
        None => "missing".into(),
        Some(Value::String(s)) => format!("the string \"{}\"", shorten(s, 60)),
        Some(Value::Number(n)) => format!("the number {n}"),
        Some(other) => format!("a JSON {}", json_type(other)),
    }
}

pub(super) fn is_c_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A non-negative whole number, whether written `300` or `300.0`.
pub(super) fn whole_number(number: &serde_json::Number) -> Option<u64> {
    number.as_u64().or_else(|| {
        let float = number.as_f64()?;
        (float >= 0.0 && float.fract() == 0.0 && float <= u64::MAX as f64).then_some(float as u64)
    })
}
