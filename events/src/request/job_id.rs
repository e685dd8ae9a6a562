//! Job ids and request fingerprints.
//!
//! A request without a `job_id` gets one derived from the message, never a random one, so a
//! redelivered message (same `Nats-Msg-Id`, or same bytes) maps to the same job instead of
//! starting a second analysis:
//!
//! * with a `Nats-Msg-Id` header: `"j" + the first 24 hex digits of sha256(Nats-Msg-Id)`;
//! * without one: `"j" + the first 24 hex digits of sha256(raw body bytes)`.
//!
//! A publisher can compute the id itself, e.g. in Python
//! `"j" + hashlib.sha256(msg_id.encode()).hexdigest()[:24]`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::ValidatedRequest;

/// Longest job id accepted from a caller.
pub const MAX_JOB_ID_LEN: usize = 40;

/// The job id vexxy assigns to a request that names none. See the module docs.
pub fn derive_job_id(body: &[u8], msg_id: Option<&str>) -> String {
    let digest = match msg_id.filter(|id| !id.is_empty()) {
        Some(id) => Sha256::digest(id.as_bytes()),
        None => Sha256::digest(body),
    };
    format!("j{}", &hex::encode(digest)[..24])
}

/// `^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`: safe as a Kubernetes name part, an object-store key
/// segment and a NATS subject token.
pub fn is_valid_job_id(job_id: &str) -> bool {
    let bytes = job_id.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_JOB_ID_LEN
        && edge_ok(bytes[0])
        && edge_ok(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| edge_ok(b) || b == b'-')
}

/// sha256 (hex) of the canonical JSON of `request` without `job_id` and `request_msg_id`.
///
/// Two messages for the same job id with the same fingerprint are the same request (a
/// redelivery or a harmless resubmission); a different fingerprint means the job id was reused
/// for a different image or configuration (`job_id_conflict`).
pub fn request_fingerprint(request: &ValidatedRequest) -> String {
    let mut value = serde_json::to_value(request).expect("a ValidatedRequest always serialises");
    if let Value::Object(fields) = &mut value {
        fields.remove("job_id");
        fields.remove("request_msg_id");
    }
    hex::encode(Sha256::digest(canonical_json(&value).as_bytes()))
}

/// JSON with object keys sorted at every level and no insignificant whitespace, so equal values
/// always produce equal bytes whatever order their maps were built in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&fields[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_valid_job_ids() {
        let from_msg = derive_job_id(b"{}", Some("build-42"));
        let from_body = derive_job_id(b"{}", None);
        assert!(is_valid_job_id(&from_msg), "{from_msg}");
        assert!(is_valid_job_id(&from_body), "{from_body}");
        assert_eq!(from_msg.len(), 25);
        // sha256("build-42") computed independently with `printf build-42 | sha256sum`.
        assert_eq!(from_msg, "j9bf1b5433aade46f7da23e24");
        // An empty header is no header.
        assert_eq!(derive_job_id(b"{}", Some("")), from_body);
    }

    #[test]
    fn job_id_grammar() {
        for good in ["a", "0", "job-1", "a-b-c", &"a".repeat(40)] {
            assert!(is_valid_job_id(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "job_1",
            "job.1",
            "job 1",
            &"a".repeat(41),
            "é",
        ] {
            assert!(!is_valid_job_id(bad), "{bad}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":"s"}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }
}
