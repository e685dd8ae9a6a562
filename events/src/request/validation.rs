//! Validation of request messages: raw bytes in, [`ValidatedRequest`] or [`Rejection`] out.
//!
//! The body is first parsed into a JSON value and checked field by field, so each problem gets
//! its own reason code and a message naming the field; only then is it deserialised. The order
//! of checks is fixed (size, encoding, JSON, envelope, unknown fields, then each field), so the
//! same bad message always gets the same answer.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::image_ref::{self, ImageRefError, describe_char, is_forbidden_char, shorten};
use super::job_id::{derive_job_id, is_valid_job_id};
use super::{AnalysisRequest, ValidatedRequest, ValidationPolicy, strict_json};
use crate::FailureReason;
use crate::envelope::{EventType, SPEC_VERSION};

pub const MAX_ENV_VARS: usize = 64;
pub const MAX_ENV_NAME_LEN: usize = 128;
pub const MAX_ENV_VALUE_BYTES: usize = 8 * 1024;
pub const MAX_COMMAND_ELEMENTS: usize = 64;
pub const MAX_COMMAND_ELEMENT_BYTES: usize = 4 * 1024;
pub const MAX_PORTS: usize = 32;
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY_LEN: usize = 63;
pub const MAX_LABEL_VALUE_CHARS: usize = 256;

const REQUEST_FIELDS: [&str; 5] = ["job_id", "image_ref", "image_digest", "config", "labels"];
const CONFIG_FIELDS: [&str; 5] = [
    "analysis_duration",
    "environment",
    "command",
    "args",
    "ports",
];
/// Longest correlation value copied from a rejected body into the `failed` event.
const MAX_ECHO_LEN: usize = 512;

/// Why a request was not accepted, with whatever could be read from it for correlation.
///
/// A rejection is never retryable as-is: the same bytes get the same answer. `job_id` is the
/// caller's `job_id` when it was valid, the derived id when the body named none, and `None`
/// only when the body named an invalid one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    pub reason: FailureReason,
    /// What is wrong, naming the field, and what to do about it.
    pub message: String,
    pub job_id: Option<String>,
    pub image_ref: Option<String>,
    pub image_digest: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Validates one message from `vexxy.analysis.requested`.
///
/// `body` is the raw payload: a JSON [`AnalysisRequest`] or a CloudEvents 1.0 structured-mode
/// envelope (recognised by its `specversion` attribute) of type `io.vexxy.analysis.requested.v1`
/// whose `data` is the request. `msg_id` is the message's `Nats-Msg-Id` header, if any; it names
/// the job when the body does not (see [`super::job_id`]).
pub fn parse_request(
    body: &[u8],
    msg_id: Option<&str>,
    policy: &ValidationPolicy,
) -> Result<ValidatedRequest, Rejection> {
    let msg_id = msg_id.filter(|id| !id.is_empty());
    let mut correlation = Correlation {
        job_id: Some(derive_job_id(body, msg_id)),
        ..Correlation::default()
    };
    let fail = |reason, message: String, correlation: &Correlation| {
        Err(correlation.reject(reason, message))
    };

    if body.len() > policy.max_request_bytes {
        return fail(
            FailureReason::PayloadTooLarge,
            format!(
                "the request is {} bytes; the limit is {} bytes. Requests carry only the image \
                 reference and run configuration: move large data out of environment values \
                 and arguments",
                body.len(),
                policy.max_request_bytes
            ),
            &correlation,
        );
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            return fail(
                FailureReason::MalformedRequest,
                format!(
                    "the request body is not valid UTF-8 (bad byte at offset {}): send the \
                     request as UTF-8 encoded JSON",
                    e.valid_up_to()
                ),
                &correlation,
            );
        }
    };
    let document = match strict_json::from_str(text) {
        Ok(document) => document,
        Err(e) => {
            return fail(
                FailureReason::MalformedRequest,
                format!(
                    "the request body is not valid JSON ({e}): send one JSON object such as \
                     {{\"image_ref\": \"ghcr.io/owner/repo\", \"image_digest\": \"sha256:<64 hex>\"}}"
                ),
                &correlation,
            );
        }
    };
    let Value::Object(document) = document else {
        return fail(
            FailureReason::InvalidRequest,
            format!(
                "the request body is a JSON {}, but must be a JSON object with at least \
                 `image_ref`",
                json_type(&document)
            ),
            &correlation,
        );
    };
    let request = if document.contains_key("specversion") {
        unwrap_cloud_event(document)
            .map_err(|(reason, message)| correlation.reject(reason, message))?
    } else {
        document
    };

    correlation.read_from(&request);
    check_request(&request, policy)
        .map_err(|(reason, message)| correlation.reject(reason, message))?;

    let job_id = correlation
        .job_id
        .clone()
        .expect("a request that passed validation has a valid or derived job id");
    build(request, job_id, msg_id, policy)
        .map_err(|(reason, message)| correlation.reject(reason, message))
}

/// Makes `value` safe to place in a Kubernetes container's `command`, `args` or `env[].value`,
/// where Kubernetes itself would expand `$(VAR)` references: `$(` becomes `$$(`, which
/// Kubernetes turns back into a literal `$(`. vexxy passes values verbatim and never expands them.
pub fn escape_kubernetes_expansion(value: &str) -> String {
    value.replace("$(", "$$(")
}

type Problem = (FailureReason, String);

#[derive(Debug, Default)]
struct Correlation {
    job_id: Option<String>,
    image_ref: Option<String>,
    image_digest: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Correlation {
    fn reject(&self, reason: FailureReason, message: String) -> Rejection {
        Rejection {
            reason,
            message,
            job_id: self.job_id.clone(),
            image_ref: self.image_ref.clone(),
            image_digest: self.image_digest.clone(),
            labels: self.labels.clone(),
        }
    }

    /// Best effort: copies what is readable and harmless to echo, ignores the rest.
    fn read_from(&mut self, request: &Map<String, Value>) {
        match request.get("job_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if is_valid_job_id(id) => self.job_id = Some(id.clone()),
            Some(_) => self.job_id = None,
        }
        let echoable = |v: &Value| match v {
            Value::String(s) if s.len() <= MAX_ECHO_LEN && forbidden_char(s).is_none() => {
                Some(s.clone())
            }
            _ => None,
        };
        self.image_ref = request.get("image_ref").and_then(echoable);
        self.image_digest = request.get("image_digest").and_then(echoable).or_else(|| {
            let reference = self.image_ref.as_deref()?;
            reference
                .split_once('@')
                .map(|(_, digest)| digest.to_string())
        });
        if let Some(labels) = request.get("labels")
            && check_labels(labels).is_ok()
            && let Ok(labels) = serde_json::from_value(labels.clone())
        {
            self.labels = labels;
        }
    }
}

fn unwrap_cloud_event(mut event: Map<String, Value>) -> Result<Map<String, Value>, Problem> {
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

/// Every check, in a fixed order. Does not build anything.
fn check_request(request: &Map<String, Value>, policy: &ValidationPolicy) -> Result<(), Problem> {
    check_unknown_fields(request, &REQUEST_FIELDS, "")?;
    let config = match present(request, "config") {
        None => None,
        Some(Value::Object(config)) => Some(config),
        Some(other) => return Err(wrong_type("config", "an object", other)),
    };
    if let Some(config) = config {
        check_unknown_fields(config, &CONFIG_FIELDS, "config.")?;
    }

    if let Some(job_id) = present(request, "job_id") {
        let Value::String(job_id) = job_id else {
            return Err(wrong_type("job_id", "a string", job_id));
        };
        if !is_valid_job_id(job_id) {
            return Err((
                FailureReason::InvalidJobId,
                format!(
                    "job_id `{}` is invalid: use 1-40 characters of lowercase letters, digits \
                     and `-`, starting and ending with a letter or digit, or leave job_id out \
                     and vexxy derives one from the Nats-Msg-Id",
                    shorten(job_id, 60)
                ),
            ));
        }
    }

    let reference = match present(request, "image_ref") {
        None => {
            return Err((
                FailureReason::MissingField,
                "`image_ref` is missing: name the image to analyse, e.g. \"image_ref\": \
                 \"ghcr.io/owner/repo\""
                    .into(),
            ));
        }
        Some(Value::String(reference)) => reference,
        Some(other) => return Err(wrong_type("image_ref", "a string", other)),
    };
    let reference = image_ref::parse_image_reference(reference).map_err(|e| match e {
        ImageRefError::Reference(m) => (FailureReason::InvalidImageRef, m),
        ImageRefError::Digest(m) => (FailureReason::InvalidDigest, m),
    })?;

    let explicit_digest = match present(request, "image_digest") {
        None => None,
        Some(Value::String(digest)) => Some(digest),
        Some(other) => return Err(wrong_type("image_digest", "a string", other)),
    };
    if let Some(digest) = explicit_digest
        && !image_ref::is_valid_digest(digest)
    {
        return Err((
            FailureReason::InvalidDigest,
            format!(
                "image_digest is invalid: {}",
                image_ref::digest_problem(digest)
            ),
        ));
    }
    match (explicit_digest, &reference.digest) {
        (None, None) => {
            return Err((
                FailureReason::MissingDigest,
                "image_digest is missing and image_ref is not pinned with `@sha256:...`: vexxy \
                 analyses only digest-pinned images; resolve the tag with `crane digest <ref>` / \
                 `docker buildx imagetools inspect <ref>` and send it as image_digest"
                    .into(),
            ));
        }
        (Some(explicit), Some(pinned)) if explicit != pinned => {
            return Err((
                FailureReason::InvalidDigest,
                format!(
                    "image_digest `{explicit}` conflicts with the digest `{pinned}` in image_ref: \
                     send one digest, or the same digest in both places"
                ),
            ));
        }
        _ => {}
    }

    if !policy.registry_allowlist.is_empty() {
        let allowed: Vec<String> = policy
            .registry_allowlist
            .iter()
            .map(|r| normalise_registry(r))
            .collect();
        if !allowed.contains(&reference.registry) {
            return Err((
                FailureReason::RegistryNotAllowed,
                format!(
                    "image_ref registry `{}` is not on this service's registry allowlist ({}): \
                     copy the image to an allowed registry or ask the vexxy operator to allow it",
                    reference.registry,
                    allowed.join(", ")
                ),
            ));
        }
    }

    if let Some(config) = config {
        if let Some(duration) = present(config, "analysis_duration") {
            check_duration(duration, policy)?;
        }
        if let Some(environment) = present(config, "environment") {
            check_environment(environment)?;
        }
        for field in ["command", "args"] {
            if let Some(list) = present(config, field) {
                check_command(field, list)?;
            }
        }
        if let Some(ports) = present(config, "ports") {
            check_ports(ports)?;
        }
    }
    if let Some(labels) = present(request, "labels") {
        check_labels(labels)?;
    }
    Ok(())
}

/// Deserialises a request that passed [`check_request`] and resolves what later stages need.
fn build(
    request: Map<String, Value>,
    job_id: String,
    msg_id: Option<&str>,
    policy: &ValidationPolicy,
) -> Result<ValidatedRequest, Problem> {
    let mut request = request;
    normalise(&mut request);
    let request: AnalysisRequest = serde_json::from_value(Value::Object(request)).map_err(|e| {
        // check_request mirrors every rule serde enforces; reaching this is a bug in vexxy.
        (
            FailureReason::InvalidRequest,
            format!("the request could not be read ({e}); please report this to the vexxy team"),
        )
    })?;
    let reference = image_ref::parse_image_reference(&request.image_ref)
        .map_err(|e| (FailureReason::InvalidImageRef, e.to_string()))?;
    let image_digest = request
        .image_digest
        .clone()
        .or_else(|| reference.digest.clone())
        .ok_or_else(|| {
            (
                FailureReason::MissingDigest,
                "image_digest is missing".to_string(),
            )
        })?;
    let mut config = request.config.unwrap_or_default();
    let duration = config
        .analysis_duration
        .unwrap_or(policy.default_analysis_duration);
    config.analysis_duration = Some(duration);
    Ok(ValidatedRequest {
        job_id,
        repository: reference.repository(),
        registry: reference.registry.clone(),
        tag: reference.tag.clone(),
        image_ref: reference.without_digest,
        image_digest,
        request_msg_id: msg_id.map(str::to_string),
        analysis_duration_seconds: duration,
        config,
        labels: request.labels,
    })
}

fn check_unknown_fields(
    object: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), Problem> {
    let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) else {
        return Ok(());
    };
    let suggestion = known
        .iter()
        .map(|k| (edit_distance(unknown, k), *k))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, k)| format!(" Did you mean `{prefix}{k}`?"))
        .unwrap_or_default();
    let known_list: Vec<String> = known.iter().map(|k| format!("`{prefix}{k}`")).collect();
    Err((
        FailureReason::UnknownField,
        format!(
            "unknown field `{prefix}{}`: vexxy rejects fields it does not know rather than \
             ignore a setting you meant.{suggestion} Known fields here: {}",
            shorten(unknown, 60),
            known_list.join(", ")
        ),
    ))
}

fn check_duration(value: &Value, policy: &ValidationPolicy) -> Result<(), Problem> {
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

fn check_environment(value: &Value) -> Result<(), Problem> {
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

fn check_command(field: &str, value: &Value) -> Result<(), Problem> {
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

fn check_ports(value: &Value) -> Result<(), Problem> {
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

fn check_labels(value: &Value) -> Result<(), Problem> {
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
fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|v| !v.is_null())
}

fn wrong_type(path: &str, expected: &str, got: &Value) -> Problem {
    (
        FailureReason::InvalidRequest,
        format!(
            "`{path}` must be {expected}, but is a JSON {}",
            json_type(got)
        ),
    )
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn describe_value(value: Option<&Value>) -> String {
    match value {
        None => "missing".into(),
        Some(Value::String(s)) => format!("the string \"{}\"", shorten(s, 60)),
        Some(Value::Number(n)) => format!("the number {n}"),
        Some(other) => format!("a JSON {}", json_type(other)),
    }
}

/// The first character (1-based position) a value may not contain: control characters
/// (newlines, NUL, ESC, ...) and the invisible characters that reorder or break displayed text,
/// which is how YAML, log and terminal injection is attempted.
fn forbidden_char(text: &str) -> Option<(usize, char)> {
    text.chars()
        .enumerate()
        .find_map(|(i, c)| is_forbidden_char(c).then_some((i + 1, c)))
}

fn is_c_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn normalise_registry(registry: &str) -> String {
    let registry = registry.trim().to_ascii_lowercase();
    match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => image_ref::DOCKER_HUB.to_string(),
        _ => registry,
    }
}

/// Levenshtein distance, for "did you mean" suggestions on short field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A non-negative whole number, whether written `300` or `300.0`.
fn whole_number(number: &serde_json::Number) -> Option<u64> {
    number.as_u64().or_else(|| {
        let float = number.as_f64()?;
        (float >= 0.0 && float.fract() == 0.0 && float <= u64::MAX as f64).then_some(float as u64)
    })
}

/// Drops `null` fields (they mean absent) and rewrites `300.0` as `300` where the request type
/// has an integer, so deserialising cannot fail on a value the checks accepted.
fn normalise(request: &mut Map<String, Value>) {
    request.retain(|_, value| !value.is_null());
    let Some(Value::Object(config)) = request.get_mut("config") else {
        return;
    };
    config.retain(|_, value| !value.is_null());
    if let Some(Value::Number(n)) = config.get("analysis_duration")
        && let Some(whole) = whole_number(n)
    {
        config.insert("analysis_duration".into(), Value::from(whole));
    }
    if let Some(Value::Array(ports)) = config.get_mut("ports") {
        for port in ports.iter_mut() {
            if let Value::Number(n) = port
                && let Some(whole) = whole_number(n)
            {
                *port = Value::from(whole);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RunConfig;

    #[test]
    fn field_lists_match_the_request_types() {
        let config = RunConfig {
            analysis_duration: Some(300),
            environment: [("A".to_string(), "b".to_string())].into(),
            command: Some(vec!["/app".into()]),
            args: Some(vec![]),
            ports: vec![80],
        };
        let request = AnalysisRequest {
            job_id: Some("a".into()),
            image_ref: "nginx".into(),
            image_digest: Some("sha256:x".into()),
            config: Some(config.clone()),
            labels: [("a".to_string(), "b".to_string())].into(),
        };
        let keys = |v: Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(keys(serde_json::to_value(&config).unwrap()), CONFIG_FIELDS);
        assert_eq!(
            keys(serde_json::to_value(&request).unwrap()),
            REQUEST_FIELDS
        );
    }

    #[test]
    fn edit_distance_suggests_close_names() {
        assert_eq!(edit_distance("analysis_duraton", "analysis_duration"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn kubernetes_expansion_is_escaped() {
        assert_eq!(escape_kubernetes_expansion("$(HOME)/x"), "$$(HOME)/x");
        assert_eq!(escape_kubernetes_expansion("$HOME ${X}"), "$HOME ${X}");
        assert_eq!(escape_kubernetes_expansion("a$($(b"), "a$$($$(b");
    }

    #[test]
    fn forbidden_chars_are_found_with_their_position() {
        assert_eq!(forbidden_char("ok value"), None);
        assert_eq!(forbidden_char("a\nb"), Some((2, '\n')));
        assert_eq!(forbidden_char("\u{1b}[31m"), Some((1, '\u{1b}')));
        assert_eq!(forbidden_char("abc\u{202E}"), Some((4, '\u{202E}')));
    }
}
