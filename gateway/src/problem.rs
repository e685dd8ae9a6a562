//! Errors as RFC 9457 problem details (`application/problem+json`), with vexxy's reason code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vexxy_events::{FailureReason, Rejection};

pub const CONTENT_TYPE: &str = "application/problem+json";
/// Problem types are documented per reason code in the event contract.
pub const TYPE_BASE: &str = "https://vexxy.io/problems/";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// vexxy's `FailureReason` code (or `not_found` / `not_finished` for lookups).
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, reason: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("{TYPE_BASE}{reason}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            reason: reason.to_string(),
            job_id: None,
        }
    }

    pub fn with_job(mut self, job_id: &str) -> Self {
        self.job_id = Some(job_id.to_string());
        self
    }

    /// The HTTP status of a rejected request: 413 too large, 400 unreadable body, 422 a request
    /// that parses but breaks a rule.
    pub fn from_rejection(rejection: &Rejection) -> Self {
        let status = match rejection.reason {
            FailureReason::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            FailureReason::MalformedRequest | FailureReason::InvalidRequest => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut problem = Problem::new(
            status,
            rejection.reason.as_str(),
            "The analysis request was rejected",
            rejection.message.clone(),
        );
        problem.job_id = rejection.job_id.clone();
        problem
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            FailureReason::StorageUnavailable.as_str(),
            "vexxy is temporarily unavailable",
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("a problem serialises");
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}
