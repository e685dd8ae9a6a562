//! Requests that must be accepted, and what they resolve to; job ids and fingerprints.
#![allow(clippy::result_large_err)] // Rejection is returned by value, as parse_request does

mod common;

use common::*;
use serde_json::json;
use vexxy_events::{
    ValidationPolicy, derive_job_id, escape_kubernetes_expansion, parse_request,
    request_fingerprint,
};

#[test]
fn plain_request_resolves_repository_digest_and_defaults() {
    let request = parse_request(
        &bytes(&minimal()),
        Some("build-1"),
        &ValidationPolicy::default(),
    )
    .unwrap();
    assert_eq!(request.image_ref, "ghcr.io/owner/repo");
    assert_eq!(request.repository, "ghcr.io/owner/repo");
    assert_eq!(request.registry, "ghcr.io");
    assert_eq!(request.tag, None);
    assert_eq!(request.image_digest, DIGEST);
    assert_eq!(
        request.pinned_image(),
        format!("ghcr.io/owner/repo@{DIGEST}")
    );
    assert_eq!(request.analysis_duration_seconds, 300);
    assert_eq!(request.config.analysis_duration, Some(300));
    assert_eq!(request.request_msg_id.as_deref(), Some("build-1"));
    assert_eq!(request.job_id, derive_job_id(b"", Some("build-1")));
    assert!(request.labels.is_empty());
}

#[test]
fn cloud_event_wrapped_request_equals_the_plain_one() {
    let policy = ValidationPolicy::default();
    let plain = parse_request(&bytes(&minimal()), Some("m"), &policy).unwrap();
    let wrapped = parse_request(&bytes(&cloud_event(minimal())), Some("m"), &policy).unwrap();
    assert_eq!(plain, wrapped);

    // CloudEvents extension attributes and a JSON content type with parameters are fine.
    let mut event = cloud_event(minimal());
    event["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    event["datacontenttype"] = json!("application/json; charset=utf-8");
    assert_eq!(
        parse_request(&bytes(&event), Some("m"), &policy).unwrap(),
        plain
    );
}

#[test]
fn docker_hub_short_names_are_normalised() {
    for (image_ref, repository) in [
        ("nginx:1.25", "docker.io/library/nginx"),
        ("bitnami/redis", "docker.io/bitnami/redis"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx"),
        ("registry-1.docker.io/nginx", "docker.io/library/nginx"),
    ] {
        let request = parse(&json!({"image_ref": image_ref, "image_digest": DIGEST})).unwrap();
        assert_eq!(request.repository, repository, "{image_ref}");
        assert_eq!(request.registry, "docker.io");
        assert_eq!(
            request.image_ref, image_ref,
            "the reference is kept as written"
        );
    }
    let request = parse(&json!({"image_ref": "nginx:1.25", "image_digest": DIGEST})).unwrap();
    assert_eq!(request.tag.as_deref(), Some("1.25"));
}

#[test]
fn digest_may_come_from_the_reference() {
    let request = parse(&json!({"image_ref": format!("ghcr.io/owner/repo@{DIGEST}")})).unwrap();
    assert_eq!(request.image_digest, DIGEST);
    assert_eq!(request.image_ref, "ghcr.io/owner/repo");
    assert_eq!(request.tag, None);

    // Tag and digest together, with the same digest repeated in image_digest.
    let request = parse(&json!({
        "image_ref": format!("ghcr.io/owner/repo:v2.1.0@{DIGEST}"),
        "image_digest": DIGEST,
    }))
    .unwrap();
    assert_eq!(request.image_ref, "ghcr.io/owner/repo:v2.1.0");
    assert_eq!(request.tag.as_deref(), Some("v2.1.0"));
    assert_eq!(
        request.pinned_image(),
        format!("ghcr.io/owner/repo@{DIGEST}")
    );
}

#[test]
fn registry_with_a_port() {
    let request =
        parse(&json!({"image_ref": "localhost:5000/team/app:dev", "image_digest": DIGEST}))
            .unwrap();
    assert_eq!(request.registry, "localhost:5000");
    assert_eq!(request.repository, "localhost:5000/team/app");
    assert_eq!(request.tag.as_deref(), Some("dev"));
    let request =
        parse(&json!({"image_ref": "registry.internal:8443/app", "image_digest": DIGEST})).unwrap();
    assert_eq!(request.registry, "registry.internal:8443");
}

#[test]
fn allowlist_matches_after_normalisation() {
    let policy = ValidationPolicy {
        registry_allowlist: vec![
            "index.docker.io".into(),
            "GHCR.io".into(),
            "localhost:5000".into(),
        ],
        ..ValidationPolicy::default()
    };
    for image_ref in ["nginx", "ghcr.io/owner/repo", "localhost:5000/app"] {
        let body = json!({"image_ref": image_ref, "image_digest": DIGEST});
        assert!(
            parse_request(&bytes(&body), None, &policy).is_ok(),
            "{image_ref}"
        );
    }
}

#[test]
fn full_configuration_is_kept_verbatim() {
    let body = json!({
        "job_id": "payments-api-42",
        "image_ref": "ghcr.io/owner/repo:1.4",
        "image_digest": DIGEST,
        "config": {
            "analysis_duration": 600,
            // Shell and expansion syntax is data: nothing interprets it, so it is accepted as is.
            "environment": {"PORT": "8080", "GREETING": "$(HOME); rm -rf / `id` ${X}", "_x1": ""},
            "command": ["/app"],
            "args": ["--serve", "--name=it's \"quoted\""],
            "ports": [8080, 9090.0]
        },
        "labels": {"team": "payments", "app.kubernetes.io/name": "api"}
    });
    let request = parse(&body).unwrap();
    assert_eq!(request.job_id, "payments-api-42");
    assert_eq!(request.analysis_duration_seconds, 600);
    assert_eq!(
        request.config.environment["GREETING"],
        "$(HOME); rm -rf / `id` ${X}"
    );
    assert_eq!(
        request.config.args.as_deref().unwrap()[1],
        "--name=it's \"quoted\""
    );
    assert_eq!(request.config.ports, vec![8080, 9090]);
    assert_eq!(request.labels["app.kubernetes.io/name"], "api");
    assert_eq!(
        escape_kubernetes_expansion(&request.config.environment["GREETING"]),
        "$$(HOME); rm -rf / `id` ${X}"
    );
}

#[test]
fn nulls_count_as_absent_and_whole_floats_as_integers() {
    let body = json!({"job_id": null, "image_ref": "nginx", "image_digest": DIGEST,
                      "config": {"analysis_duration": 120.0, "command": null}, "labels": null});
    let request = parse(&body).unwrap();
    assert_eq!(request.analysis_duration_seconds, 120);
    assert_eq!(request.config.command, None);
}

#[test]
fn duration_bounds_come_from_the_policy() {
    let policy = ValidationPolicy {
        min_analysis_duration: 5,
        max_analysis_duration: 30,
        default_analysis_duration: 10,
        ..ValidationPolicy::default()
    };
    let accepted = |config| parse_request(&bytes(&with_config(config)), None, &policy);
    assert_eq!(accepted(json!({})).unwrap().analysis_duration_seconds, 10);
    assert_eq!(
        accepted(json!({"analysis_duration": 5}))
            .unwrap()
            .analysis_duration_seconds,
        5
    );
    assert_eq!(
        accepted(json!({"analysis_duration": 30}))
            .unwrap()
            .analysis_duration_seconds,
        30
    );
    let rejected = accepted(json!({"analysis_duration": 31})).unwrap_err();
    assert!(
        rejected.message.contains("from 5 to 30"),
        "{}",
        rejected.message
    );
}

#[test]
fn job_ids_are_derived_deterministically() {
    let policy = ValidationPolicy::default();
    let body_a = bytes(&minimal());
    let body_b = bytes(&json!({"image_ref": "nginx", "image_digest": DIGEST}));

    // Same Nats-Msg-Id: same job, whatever the bytes (a redelivery or a republish).
    let a = parse_request(&body_a, Some("build-1"), &policy).unwrap();
    let b = parse_request(&body_b, Some("build-1"), &policy).unwrap();
    assert_eq!(a.job_id, b.job_id);
    assert!(
        a.job_id.starts_with('j') && a.job_id.len() == 25,
        "{}",
        a.job_id
    );

    // No Nats-Msg-Id: the bytes decide.
    let a1 = parse_request(&body_a, None, &policy).unwrap();
    let a2 = parse_request(&body_a, None, &policy).unwrap();
    let b1 = parse_request(&body_b, None, &policy).unwrap();
    assert_eq!(a1.job_id, a2.job_id);
    assert_ne!(a1.job_id, b1.job_id);
    assert_ne!(a1.job_id, a.job_id);

    // A caller's job id wins over both.
    let mut named = minimal();
    named["job_id"] = json!("release-7");
    assert_eq!(
        parse_request(&bytes(&named), Some("build-1"), &policy)
            .unwrap()
            .job_id,
        "release-7"
    );
}

#[test]
fn fingerprint_ignores_identity_and_sees_content() {
    let policy = ValidationPolicy::default();
    let base = json!({"image_ref": "nginx", "image_digest": DIGEST,
                      "config": {"environment": {"A": "1", "B": "2"}}, "labels": {"x": "y"}});
    let reordered = r#"{"labels":{"x":"y"},"config":{"environment":{"B":"2","A":"1"},"analysis_duration":300},"image_digest":"DIGEST","image_ref":"nginx"}"#
        .replace("DIGEST", DIGEST);
    let first = parse_request(&bytes(&base), Some("m-1"), &policy).unwrap();
    let mut renamed = base.clone();
    renamed["job_id"] = json!("other-id");
    let second = parse_request(&bytes(&renamed), Some("m-2"), &policy).unwrap();
    let third = parse_request(reordered.as_bytes(), None, &policy).unwrap();
    let fingerprint = request_fingerprint(&first);
    assert_eq!(fingerprint.len(), 64);
    assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        fingerprint,
        request_fingerprint(&second),
        "job id and msg id are not content"
    );
    assert_eq!(
        fingerprint,
        request_fingerprint(&third),
        "key order and an explicit default are not content"
    );
    assert_eq!(fingerprint, request_fingerprint(&first.clone()), "stable");

    for change in [
        json!({"image_digest": OTHER_DIGEST}),
        json!({"labels": {"x": "z"}}),
        json!({"config": {"environment": {"A": "1", "B": "3"}}}),
        json!({"config": {"environment": {"A": "1", "B": "2"}, "analysis_duration": 301}}),
        json!({"image_ref": "nginx:1.25"}),
    ] {
        let mut changed = base.clone();
        for (key, value) in change.as_object().unwrap() {
            changed[key] = value.clone();
        }
        let changed = parse_request(&bytes(&changed), Some("m-1"), &policy).unwrap();
        assert_ne!(fingerprint, request_fingerprint(&changed), "{change}");
    }
}
