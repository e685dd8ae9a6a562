//! The HTTP routes. Each handler is a thin adapter: the rules live in `vexxy_events` (validation),
//! `vexxy_runtime` (store, status records) and the pipeline itself.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tower_http::timeout::TimeoutLayer;
use vexxy_events::{FailureReason, JobState, JobStatus, ValidationPolicy, parse_request, subjects};
use vexxy_runtime::{Store, StoreError, job_key};

use crate::problem::Problem;
use crate::{MAX_BODY_BYTES, OPENAPI};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    pub route: &'static str,
    pub status: u16,
}

/// Everything a handler needs; nothing here is job state.
#[derive(Clone)]
pub struct AppState {
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub store: Store,
    pub policy: ValidationPolicy,
    pub requests: Family<Labels, Counter>,
    pub registry: Arc<Registry>,
}

impl AppState {
    pub fn new(nats: async_nats::Client, store: Store, policy: ValidationPolicy) -> Self {
        let requests = Family::<Labels, Counter>::default();
        let mut registry = Registry::with_prefix("vexxy_gateway");
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        AppState {
            js: async_nats::jetstream::new(nats.clone()),
            nats,
            store,
            policy,
            requests,
            registry: Arc::new(registry),
        }
    }

    fn count(&self, route: &'static str, response: Response) -> Response {
        self.requests
            .get_or_create(&Labels {
                route,
                status: response.status().as_u16(),
            })
            .inc();
        response
    }
}

pub fn router(state: AppState, timeout: Duration) -> Router {
    Router::new()
        .route("/api/v1/analysis/submit", post(submit))
        .route("/api/v1/analysis/{job_id}/status", get(status))
        .route("/api/v1/analysis/{job_id}/results", get(results))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such endpoint",
                "see /openapi.json for the API",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = submit_inner(&state, &headers, body).await;
    state.count("submit", response)
}

async fn submit_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                FailureReason::PayloadTooLarge.as_str(),
                "The analysis request was rejected",
                format!(
                    "the request body is larger than {MAX_BODY_BYTES} bytes; requests carry only the image reference and run configuration"
                ),
            )
            .into_response();
        }
        Err(rejection) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                FailureReason::MalformedRequest.as_str(),
                "The analysis request was rejected",
                format!("cannot read the request body: {rejection}"),
            )
            .into_response();
        }
    };
    let msg_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("vexxy-gateway-{}", uuid::Uuid::new_v4()));
    let request = match parse_request(&body, Some(&msg_id), &state.policy) {
        Ok(request) => request,
        Err(rejection) => return Problem::from_rejection(&rejection).into_response(),
    };
    let mut nats_headers = async_nats::HeaderMap::new();
    nats_headers.insert("Nats-Msg-Id", msg_id.as_str());
    let published = async {
        state
            .js
            .publish_with_headers(subjects::REQUESTED, nats_headers, body)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match published {
        Ok(ack) => {
            let job = &request.job_id;
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/api/v1/analysis/{job}/status"))],
                axum::Json(json!({
                    "job_id": job,
                    "status": "queued",
                    "msg_id": msg_id,
                    "duplicate": ack.duplicate,
                    "status_url": format!("/api/v1/analysis/{job}/status"),
                    "results_url": format!("/api/v1/analysis/{job}/results"),
                })),
            )
                .into_response()
        }
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "vexxy is temporarily unavailable",
            format!("the request could not be published on {}: {e}; retry later (with the same Idempotency-Key)", subjects::REQUESTED),
        )
        .into_response(),
    }
}

async fn read_job(state: &AppState, job_id: &str) -> Result<JobStatus, Problem> {
    let bucket = state
        .js
        .get_key_value(subjects::STATUS_BUCKET)
        .await
        .map_err(|e| {
            Problem::unavailable(format!("the job status bucket is not available: {e}"))
        })?;
    match vexxy_runtime::status::read(&bucket, job_id).await {
        Ok(Some((job, _))) => Ok(job),
        Ok(None) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such job",
            format!("vexxy has no record of job {job_id}; a rejected request never becomes a job (its reason is in the submit response or the failed event)"),
        )
        .with_job(job_id)),
        Err(e) => Err(Problem::unavailable(e.to_string())),
    }
}

async fn status(State(state): State<AppState>, Path(job_id): Path<String>) -> Response {
    let response = match read_job(&state, &job_id).await {
        Ok(job) => axum::Json(job).into_response(),
        Err(problem) => problem.into_response(),
    };
    state.count("status", response)
}

async fn results(State(state): State<AppState>, Path(job_id): Path<String>) -> Response {
    let response = match results_inner(&state, &job_id).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(problem) => problem.into_response(),
    };
    state.count("results", response)
}

async fn document(state: &AppState, job_id: &str, name: &str) -> Result<Option<Value>, Problem> {
    match state.store.get_bytes(&job_key(job_id, name)).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                FailureReason::Internal.as_str(),
                "A result document is damaged",
                format!("{name} of job {job_id} is not JSON: {e}"),
            )
        }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(Problem::unavailable(e.to_string())),
    }
}

async fn results_inner(state: &AppState, job_id: &str) -> Result<Value, Problem> {
    let job = read_job(state, job_id).await?;
    match job.state {
        JobState::Completed => {}
        JobState::Running => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "not_finished",
                "The analysis is not finished",
                format!("job {job_id} is in stage {}; poll its status", job.stage),
            )
            .with_job(job_id));
        }
        JobState::Failed => {
            let (reason, message) = job
                .error
                .as_ref()
                .map(|e| (e.reason.as_str(), e.message.clone()))
                .unwrap_or((FailureReason::Internal.as_str(), String::new()));
            return Err(Problem::new(
                StatusCode::CONFLICT,
                reason,
                "The analysis failed and has no results",
                format!("job {job_id} failed in {}: {message}", job.stage),
            )
            .with_job(job_id));
        }
    }
    let summary = document(state, job_id, "summary.json").await?;
    let filtered_sbom = document(state, job_id, "sbom.filtered.json").await?;
    let (Some(summary), Some(filtered_sbom)) = (summary, filtered_sbom) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "The results are gone",
            format!("job {job_id} completed but its documents are no longer in the object store (expired or deleted); submit the analysis again"),
        )
        .with_job(job_id));
    };
    Ok(json!({
        "job_id": job_id,
        "status": "completed",
        "vex": document(state, job_id, "vex.openvex.json").await?,
        "cyclonedx_vex": document(state, job_id, "vex.cdx.json").await?,
        "filtered_sbom": filtered_sbom,
        "summary": summary,
    }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
    if !connected {
        return Problem::unavailable("not connected to NATS").into_response();
    }
    match state.js.get_key_value(subjects::STATUS_BUCKET).await {
        Ok(_) => "ready".into_response(),
        Err(e) => Problem::unavailable(format!("the job status bucket is not available: {e}"))
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
