//! The gateway against a real nats-server (streams and bucket provisioned exactly as the stages
//! provision them) and a file object store: submissions reach `vexxy.analysis.requested` with
//! the Idempotency-Key as Nats-Msg-Id, bad input gets problem+json with the right reason and
//! status, status and results read the KV record and the store, and the OpenAPI document served is
//! the checked-in file and describes the responses the gateway really sends.

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use serde_json::{Value, json};
use vexxy_events::status::StatusError;
use vexxy_events::{FailureReason, JobState, JobStatus, Stage, subjects};
use vexxy_gateway::{AppState, router};
use vexxy_harness::NatsServer;
use vexxy_runtime::config::{Env, RuntimeConfig};
use vexxy_runtime::{Store, job_key};

const DIGEST: &str = "sha256:e2e16842c9b54d985bf1ef9242a313f36b856181f188de21313820e177002501";

struct Gateway {
    _nats: NatsServer,
    _dir: tempfile::TempDir,
    base: String,
    js: jetstream::Context,
    store: Store,
    http: reqwest::Client,
}

async fn start() -> Gateway {
    let nats = NatsServer::start().expect("nats-server starts");
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig::load(&Env::from_pairs(&[
        ("NATS_URL", nats.url()),
        ("VEXXY_STORE", format!("file://{}", dir.path().display())),
    ]))
    .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    vexxy_runtime::provision::provision(&js, Stage::InstallCheck, &config.consumer)
        .await
        .expect("streams and bucket provisioned");
    let store = Store::open(&config.store_url, &[]).unwrap();
    let app = router(
        AppState::new(client, store.clone(), config.policy.clone()),
        Duration::from_secs(10),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Gateway {
        _nats: nats,
        _dir: dir,
        base,
        js,
        store,
        http: reqwest::Client::new(),
    }
}

impl Gateway {
    async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        key: Option<&str>,
    ) -> (u16, String, Value) {
        let mut request = self
            .http
            .post(format!("{}/api/v1/analysis/submit", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        read(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> (u16, String, Value) {
        read(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

async fn read(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, content_type, value)
}

fn openapi_file() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Validates `instance` against `#/components/schemas/<name>` of the checked-in document.
fn assert_matches_schema(name: &str, instance: &Value) {
    let mut schema = openapi_file();
    schema["$ref"] = format!("#/components/schemas/{name}").into();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the OpenAPI schemas compile");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?} for {instance}");
}

fn assert_problem(response: &(u16, String, Value), status: u16, reason: &str) {
    assert_eq!(response.0, status, "{:?}", response.2);
    assert_eq!(response.1, "application/problem+json");
    assert_eq!(response.2["reason"], reason, "{}", response.2);
    assert_eq!(response.2["status"], status);
    assert_eq!(
        response.2["type"],
        format!("https://vexxy.io/problems/{reason}")
    );
    assert_matches_schema("Problem", &response.2);
}

#[tokio::test]
async fn a_valid_submission_is_published_with_the_idempotency_key_as_msg_id() {
    let gw = start().await;
    let body = json!({"image_ref": "docker.io/library/alpine", "image_digest": DIGEST,
                      "config": {"analysis_duration": 300}, "labels": {"team": "payments"}});
    let first = gw.post(body.to_string(), Some("release-42")).await;
    assert_eq!(first.0, 202, "{}", first.2);
    assert_matches_schema("SubmitAccepted", &first.2);
    let job = first.2["job_id"].as_str().unwrap().to_string();
    assert_eq!(job, vexxy_events::derive_job_id(b"", Some("release-42")));
    assert_eq!(first.2["duplicate"], false);
    let again = gw.post(body.to_string(), Some("release-42")).await;
    assert_eq!(again.2["job_id"], job.as_str());
    assert_eq!(
        again.2["duplicate"], true,
        "JetStream drops the retried POST"
    );

    let stream = gw.js.get_stream(subjects::PUBLIC_STREAM).await.unwrap();
    let message = stream
        .get_last_raw_message_by_subject(subjects::REQUESTED)
        .await
        .unwrap();
    assert_eq!(
        message.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("release-42")
    );
    let published: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(published, body, "the body is published unchanged");
}

#[tokio::test]
async fn bad_input_gets_problem_details_with_the_event_paths_reason() {
    let gw = start().await;
    assert_problem(&gw.post("{not json", None).await, 400, "malformed_request");
    assert_problem(
        &gw.post(json!({"image_ref": "alpine", "image_digest": DIGEST, "config": {"analysis_duraton": 60}}).to_string(), None).await,
        422,
        "unknown_field",
    );
    let missing = gw
        .post(json!({"image_ref": "alpine:3.19"}).to_string(), None)
        .await;
    assert_problem(&missing, 422, "missing_digest");
    assert!(
        missing.2["detail"]
            .as_str()
            .unwrap()
            .contains("crane digest")
    );
    assert_problem(
        &gw.post(json!({"image_ref": "alpine", "image_digest": DIGEST, "config": {"analysis_duration": "5m"}}).to_string(), None).await,
        422,
        "invalid_duration",
    );
    let huge = format!("{{\"image_ref\": \"{}\"}}", "a".repeat(70 * 1024));
    assert_problem(&gw.post(huge, None).await, 413, "payload_too_large");
    // Nothing was published.
    let stream = gw.js.get_stream(subjects::PUBLIC_STREAM).await.unwrap();
    assert!(
        stream
            .get_last_raw_message_by_subject(subjects::REQUESTED)
            .await
            .is_err()
    );
}

fn record(job_id: &str, state: JobState, stage: Stage) -> JobStatus {
    JobStatus {
        job_id: job_id.into(),
        state,
        stage,
        image_ref: "docker.io/library/alpine".into(),
        image_digest: DIGEST.into(),
        request_fingerprint: "f".repeat(64),
        request_sequence: 1,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        error: (state == JobState::Failed).then(|| StatusError {
            reason: FailureReason::ImagePullFailed,
            message: "the cluster could not pull the image".into(),
        }),
        result: None,
    }
}

#[tokio::test]
async fn status_and_results_follow_the_job_record_and_the_store() {
    let gw = start().await;
    let bucket = gw.js.get_key_value(subjects::STATUS_BUCKET).await.unwrap();
    for job in [
        record("job-running", JobState::Running, Stage::Wait),
        record("job-failed", JobState::Failed, Stage::Wait),
        record("job-done", JobState::Completed, Stage::Enrich),
    ] {
        bucket
            .put(&job.job_id, serde_json::to_vec(&job).unwrap().into())
            .await
            .unwrap();
    }
    let status = gw.get("/api/v1/analysis/job-running/status").await;
    assert_eq!(status.0, 200);
    assert_eq!(status.2["state"], "running");
    assert_eq!(status.2["stage"], "wait");
    assert_matches_schema("JobStatus", &status.2);
    assert_problem(
        &gw.get("/api/v1/analysis/nope/status").await,
        404,
        "not_found",
    );
    assert_problem(
        &gw.get("/api/v1/analysis/nope/results").await,
        404,
        "not_found",
    );
    assert_problem(
        &gw.get("/api/v1/analysis/job-running/results").await,
        409,
        "not_finished",
    );
    assert_problem(
        &gw.get("/api/v1/analysis/job-failed/results").await,
        409,
        "image_pull_failed",
    );

    for (name, value) in [
        (
            "vex.openvex.json",
            json!({"@context": "https://openvex.dev/ns/v0.2.0", "statements": []}),
        ),
        (
            "vex.cdx.json",
            json!({"bomFormat": "CycloneDX", "specVersion": "1.6"}),
        ),
        ("sbom.filtered.json", json!({"artifacts": []})),
        ("summary.json", json!({"job_id": "job-done"})),
    ] {
        gw.store
            .put_json(&job_key("job-done", name), &value)
            .await
            .unwrap();
    }
    let results = gw.get("/api/v1/analysis/job-done/results").await;
    assert_eq!(results.0, 200, "{}", results.2);
    assert_matches_schema("Results", &results.2);
    assert_eq!(results.2["cyclonedx_vex"]["specVersion"], "1.6");
    assert_eq!(results.2["summary"]["job_id"], "job-done");
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_file_and_its_examples_validate() {
    let gw = start().await;
    let served = gw.get("/openapi.json").await;
    assert_eq!(served.0, 200);
    assert_eq!(served.2, openapi_file());
    assert_eq!(served.2["openapi"], "3.1.0");
    // Every example in the document validates against the schema next to it.
    let document = openapi_file();
    let mut checked = 0;
    for (_, item) in document["paths"].as_object().unwrap() {
        for (_, operation) in item.as_object().unwrap() {
            let mut contents: Vec<&Value> = operation["responses"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|r| r["content"].as_object())
                .flat_map(|c| c.values())
                .collect();
            if let Some(body) = operation["requestBody"]["content"].as_object() {
                contents.extend(body.values());
            }
            for content in contents {
                if let (Some(example), Some(reference)) =
                    (content.get("example"), content["schema"]["$ref"].as_str())
                {
                    assert_matches_schema(reference.rsplit('/').next().unwrap(), example);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} examples checked");
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let gw = start().await;
    assert_eq!(gw.get("/healthz").await.0, 200);
    assert_eq!(gw.get("/readyz").await.0, 200);
    gw.get("/api/v1/analysis/nope/status").await;
    let metrics = gw.get("/metrics").await;
    assert_eq!(metrics.0, 200);
    let text = metrics.2.as_str().unwrap().to_string();
    assert!(
        text.contains("vexxy_gateway_requests_total{route=\"status\",status=\"404\"} 1"),
        "{text}"
    );
    assert_problem(&gw.get("/no/such/path").await, 404, "not_found");
}
