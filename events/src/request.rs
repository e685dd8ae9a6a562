//! The analysis request: what a user publishes on `vexxy.analysis.requested`.
//!
//! The body is the request of the previous service (`POST /api/v1/analysis/submit`), as plain
//! JSON or as the `data` of a CloudEvent of type `io.vexxy.analysis.requested.v1`:
//!
//! ```json
//! {"image_ref": "ghcr.io/owner/repo", "image_digest": "sha256:<64 hex>",
//!  "config": {"analysis_duration": 300, "environment": {"PORT": "8080"},
//!             "command": ["/app"], "args": ["--serve"], "ports": [8080]},
//!  "labels": {"team": "payments"}}
//! ```
//!
//! Unknown fields are **rejected** (reason `unknown_field`): a misspelt `analysis_duraton` must
//! not silently run a five-minute default analysis and produce VEX for the wrong window.
//!
//! [`parse_request`] turns a raw message into a [`ValidatedRequest`] or a [`Rejection`] whose
//! reason code and message say exactly which field is wrong and what to do. A field of the wrong
//! JSON type is `invalid_request` (the message names the field and the expected type), except
//! `config.analysis_duration`, where every bad value is `invalid_duration`, and out-of-range
//! numbers in `config.ports`, which are `invalid_ports`. `null` counts as absent. Repeated keys
//! are rejected as `malformed_request`.
//!
//! # Values are data, never code
//!
//! vexxy never interprets the values it is given: environment values, `command` and `args` are
//! placed verbatim into the sandbox Deployment through the Kubernetes API (no shell, no YAML
//! templating, no string concatenation into manifests), and labels are only echoed in events.
//! Control characters (newline, carriage return, NUL, ESC, tab, ...) and the invisible
//! characters that reorder text are still rejected, because they are how YAML, log and terminal
//! injection is attempted against whatever reads the values later. Kubernetes itself expands
//! `$(VAR)` in `command`, `args` and `env` values; the deploy stage passes every such value
//! through [`escape_kubernetes_expansion`] so it reaches the container exactly as written.

// The modules form a tree: `model` (the types) and `text` (quoting helpers) import nothing of
// ours; the checks build on them, and `validation` on the checks. Nothing imports this module.
mod cloud_event;
mod fields;
mod image_ref;
pub mod job_id;
mod model;
mod strict_json;
mod text;
mod validation;

pub use fields::{
    MAX_COMMAND_ELEMENT_BYTES, MAX_COMMAND_ELEMENTS, MAX_ENV_NAME_LEN, MAX_ENV_VALUE_BYTES,
    MAX_ENV_VARS, MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_CHARS, MAX_LABELS, MAX_PORTS,
};
pub use image_ref::{
    DOCKER_HUB, ImageRefError, ImageReference, ReferenceParts, is_valid_digest,
    parse_image_reference, split_image_reference,
};
pub use job_id::{derive_job_id, is_valid_job_id, request_fingerprint};
pub use model::{AnalysisRequest, RunConfig, ValidatedRequest, ValidationPolicy};
pub use validation::{Rejection, escape_kubernetes_expansion, parse_request};
