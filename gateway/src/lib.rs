//! # vexxy-gateway: the previous service's REST API, in front of vexxy's events
//!
//! Stateless: `POST /api/v1/analysis/submit` validates the body with the same
//! [`vexxy_events::parse_request`] the pipeline uses and publishes it on
//! `vexxy.analysis.requested`; `GET .../{job_id}/status` reads the job record from the KV bucket;
//! `GET .../{job_id}/results` reads the documents from the object store. Errors are
//! `application/problem+json` (RFC 9457) with vexxy's reason code. The OpenAPI 3.1 document is
//! served at `/openapi.json` (checked in as `gateway/openapi.json`).
//!
//! ## Environment
//! The stages' variables for NATS (`NATS_URL`, `NATS_*`), the store (`VEXXY_STORE`, `AWS_*`) and
//! request validation (`VEXXY_MIN_ANALYSIS_DURATION`, ...), plus:
//! * `VEXXY_GATEWAY_ADDR` (default `0.0.0.0:8080`): listen address.
//! * `VEXXY_GATEWAY_ADDR_FILE`: if set, the bound address is written there (tests use port 0).
//! * `VEXXY_GATEWAY_TIMEOUT` (default `30s`): per-request timeout.
//!
//! A submission is published with `Nats-Msg-Id` = the `Idempotency-Key` header when given (a
//! retried POST is then the same job), else a fresh id.

pub mod problem;
pub mod routes;

pub use routes::{AppState, router};

/// The checked-in OpenAPI document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");
/// Largest accepted request body (the event path's default limit).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
