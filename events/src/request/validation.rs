//! Validation of request messages: raw bytes in, [`ValidatedRequest`] or [`Rejection`] out.
//!
//! The body is first parsed into a JSON value and checked field by field, so each problem gets
//! its own reason code and a message naming the field; only then is it deserialised. The order
//! of checks is fixed (size, encoding, JSON, envelope, unknown fields, then each field), so the
//! same bad message always gets the same answer.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::cloud_event::unwrap_cloud_event;
use super::fields::{
    Problem, check_command, check_duration, check_environment, check_labels, check_ports,
    json_type, present, whole_number, wrong_type,
};
use super::image_ref::{self, ImageRefError};
use super::job_id::{derive_job_id, is_valid_job_id};
use super::model::{AnalysisRequest, ValidatedRequest, ValidationPolicy};
use super::strict_json;
use super::text::{forbidden_char, shorten};
use crate::FailureReason;

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
// A rejection is built once per bad message and carries its correlation fields by value;
// boxing it would only complicate every caller's pattern matching.
#[allow(clippy::result_large_err)]
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
    #[allow(clippy::result_large_err)]
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
            image_ref::split_image_reference(reference)
                .digest
                .map(str::to_string)
        });
        if let Some(labels) = request.get("labels")
            && check_labels(labels).is_ok()
            && let Ok(labels) = serde_json::from_value(labels.clone())
        {
            self.labels = labels;
        }
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
    use crate::request::model::RunConfig;

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
