//! Shared fixtures for the events tests: digests, request bodies and one sample of every event.
#![allow(dead_code)] // each test file uses a different subset
#![allow(clippy::result_large_err)] // Rejection is returned by value, as parse_request does

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use vexxy_events::completed::{Completeness, StageTiming};
use vexxy_events::pipeline::{EvidenceRefs, Observation, SandboxRef};
use vexxy_events::status::StatusError;
use vexxy_events::{
    AnalysisCompleted, AnalysisFailed, Artifacts, EvidenceQuality, FailureReason, JobState,
    JobStatus, OriginalMessage, PipelineTicket, Stage, Summary, ValidationPolicy, parse_request,
};

pub const DIGEST: &str = "sha256:4f2c1d3a5b6c7d8e9f00112233445566778899aabbccddeeff0011223344556a";
pub const OTHER_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000001";

/// A minimal valid request body.
pub fn minimal() -> Value {
    json!({"image_ref": "ghcr.io/owner/repo", "image_digest": DIGEST})
}

/// `minimal()` with `config` set to `config`.
pub fn with_config(config: Value) -> Value {
    let mut body = minimal();
    body["config"] = config;
    body
}

pub fn bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).unwrap()
}

pub fn parse(body: &Value) -> Result<vexxy_events::ValidatedRequest, vexxy_events::Rejection> {
    parse_request(&bytes(body), None, &ValidationPolicy::default())
}

pub fn cloud_event(data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": "build-7781",
        "source": "/ci/payments",
        "type": "io.vexxy.analysis.requested.v1",
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn at(minute: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, minute, 0).unwrap()
}

pub fn sample_request() -> vexxy_events::ValidatedRequest {
    let body = json!({
        "image_ref": "ghcr.io/owner/repo:1.4",
        "image_digest": DIGEST,
        "config": {"analysis_duration": 600, "environment": {"PORT": "8080"},
                   "command": ["/app"], "args": ["--serve"], "ports": [8080]},
        "labels": {"team": "payments"}
    });
    parse_request(
        &bytes(&body),
        Some("build-7781"),
        &ValidationPolicy::default(),
    )
    .unwrap()
}

pub fn sample_completed() -> AnalysisCompleted {
    let request = sample_request();
    let base = format!("s3://vexxy/analyses/{}", request.job_id);
    AnalysisCompleted {
        job_id: request.job_id.clone(),
        image_ref: request.image_ref.clone(),
        image_digest: request.image_digest.clone(),
        request_msg_id: request.request_msg_id.clone(),
        summary: Summary {
            total_cves_analyzed: 10,
            not_affected: 6,
            affected: 2,
            fixed: 1,
            under_investigation: 1,
            distinct_vulnerabilities: 9,
            total_components_in_image: Some(120),
            relevant_components: 14,
        },
        evidence: EvidenceQuality {
            completeness: Completeness::Complete,
            learning_status: "completed".into(),
            learning_completion: "complete".into(),
            window_start: at(0),
            window_end: at(10),
            container_restarts: 0,
            loaded_package_ratio: Some(14.0 / 120.0),
            kubescape_shape: "v0.3.159".into(),
        },
        artifacts: Artifacts {
            openvex: Some(format!("{base}/openvex.json")),
            filtered_sbom: format!("{base}/sbom.filtered.syft.json"),
            summary: format!("{base}/summary.json"),
            evidence: vec![format!("{base}/evidence/containerprofile.json")],
            extra: Default::default(),
        },
        timings: Stage::ALL
            .iter()
            .enumerate()
            .map(|(i, stage)| StageTiming {
                stage: *stage,
                started_at: at(i as u32),
                finished_at: at(i as u32 + 1),
                duration_ms: 60_000,
            })
            .collect(),
        labels: request.labels.clone(),
    }
}

pub fn sample_original(sequence: u64) -> OriginalMessage {
    OriginalMessage {
        stream: "VEXXY_ANALYSIS".into(),
        subject: "vexxy.analysis.requested".into(),
        stream_sequence: sequence,
        msg_id: Some("build-7781".into()),
        dead_letter_subject: Some("vexxy.dlq.install-check".into()),
    }
}

pub fn sample_failed() -> AnalysisFailed {
    let request = sample_request();
    AnalysisFailed {
        job_id: Some(request.job_id.clone()),
        image_ref: Some(request.image_ref.clone()),
        image_digest: Some(request.image_digest.clone()),
        request_msg_id: request.request_msg_id.clone(),
        stage: Stage::Deploy,
        reason: FailureReason::ImagePullFailed,
        message: "the image could not be pulled: check the registry credentials".into(),
        retryable: true,
        original: sample_original(42),
        labels: request.labels.clone(),
    }
}

pub fn sample_ticket() -> PipelineTicket {
    PipelineTicket {
        request: sample_request(),
        timings: vec![],
        sandbox: Some(SandboxRef {
            namespace: "vexxy-sandbox".into(),
            deployment: "vexxy-j1".into(),
            container: "target".into(),
            created_at: at(1),
        }),
        observation: Some(Observation {
            pod: "vexxy-j1-5d9c-abcde".into(),
            replicaset: "vexxy-j1-5d9c".into(),
            instance_slug: "replicaset-vexxy-j1-5d9c-target-1234".into(),
            instance_id: "apiVersion-apps/v1/namespace-vexxy-sandbox/kind-ReplicaSet".into(),
            learning_status: "completed".into(),
            learning_completion: "complete".into(),
            window_start: at(1),
            window_end: at(11),
            container_restarts: 0,
            partial: false,
        }),
        evidence: Some(EvidenceRefs {
            vex: Some("analyses/j1/evidence/vex.json".into()),
            filtered_sbom: None,
            container_profile: None,
            vulnerability_summary: None,
            vulnerability_manifest: None,
            other: Default::default(),
        }),
    }
}

pub fn sample_status() -> JobStatus {
    let request = sample_request();
    JobStatus {
        job_id: request.job_id.clone(),
        state: JobState::Failed,
        stage: Stage::Wait,
        image_ref: request.image_ref.clone(),
        image_digest: request.image_digest.clone(),
        request_fingerprint: vexxy_events::request_fingerprint(&request),
        request_sequence: 42,
        created_at: at(0),
        updated_at: at(5),
        error: Some(StatusError {
            reason: FailureReason::AnalysisTimeout,
            message: "Kubescape did not finish learning before the deadline".into(),
        }),
        result: None,
    }
}
