//! The request types: the body as published, the service's bounds, and the validated result.
//! Every other module of `request` reads these; this one reads none of them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The request as published. Validate it with [`parse_request`] before use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisRequest {
    /// Optional caller-chosen job id: 1–40 characters of `[a-z0-9-]`, starting and ending with a
    /// letter or digit. When absent vexxy derives one deterministically from the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"))]
    pub job_id: Option<String>,
    /// Image repository, e.g. `ghcr.io/owner/repo` or `nginx` (Docker Hub). A tag is allowed and
    /// kept for display; the image that runs is always `image_ref@image_digest`.
    #[schemars(length(min = 1))]
    pub image_ref: String,
    /// `sha256:` followed by 64 lowercase hex digits. May be omitted when `image_ref` already
    /// ends in `@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^sha256:[0-9a-f]{64}$"))]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// Free-form labels echoed in every later event (at most 32; keys ≤ 63, values ≤ 256 chars).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How to run the image during the analysis window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seconds the workload runs under observation. A whole number within the service's
    /// configured bounds (production default 60–86400; default value 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub analysis_duration: Option<u64>,
    /// Environment variables: names are C identifiers, values printable text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Overrides the image entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub command: Option<Vec<String>>,
    /// Overrides the image arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub args: Option<Vec<String>>,
    /// Container ports to declare (1–65535).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 1)))]
    pub ports: Vec<u16>,
}

/// Service-side bounds applied to every request (configuration, not part of the request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationPolicy {
    pub min_analysis_duration: u64,
    pub max_analysis_duration: u64,
    pub default_analysis_duration: u64,
    /// Registries (host[:port], after Docker Hub normalisation) images may come from; empty = any.
    pub registry_allowlist: Vec<String>,
    /// Largest accepted request body in bytes.
    pub max_request_bytes: usize,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        ValidationPolicy {
            min_analysis_duration: 60,
            max_analysis_duration: 86_400,
            default_analysis_duration: 300,
            registry_allowlist: Vec::new(),
            max_request_bytes: 64 * 1024,
        }
    }
}

/// A request that passed validation, with everything later stages need already resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ValidatedRequest {
    pub job_id: String,
    /// As the user wrote it (tag kept, digest removed).
    #[schemars(length(min = 1))]
    pub image_ref: String,
    /// `sha256:<64 hex>`.
    pub image_digest: String,
    /// Fully qualified repository: `docker.io/library/nginx`, `ghcr.io/owner/repo`.
    pub repository: String,
    /// Registry host[:port] of `repository` (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub registry: String,
    /// The tag in `image_ref`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `Nats-Msg-Id` of the request message, when the publisher set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_msg_id: Option<String>,
    pub analysis_duration_seconds: u64,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ValidatedRequest {
    /// The pinned reference the sandbox runs: `repository@digest`.
    pub fn pinned_image(&self) -> String {
        format!("{}@{}", self.repository, self.image_digest)
    }
}
