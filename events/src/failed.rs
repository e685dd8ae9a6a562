//! `io.vexxy.analysis.failed.v1`: a job (or a request that never became one) did not finish.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Stage;

/// Machine-readable failure reasons. Codes are stable API: never rename one, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    // --- the request itself (never retryable as-is) ---
    /// Body is not JSON, or not UTF-8.
    MalformedRequest,
    /// A field has the wrong type or an impossible value not covered by a more precise code.
    InvalidRequest,
    /// A field vexxy does not know (reject rather than guess).
    UnknownField,
    /// A required field is absent.
    MissingField,
    PayloadTooLarge,
    /// No digest: vexxy only analyses digest-pinned images.
    MissingDigest,
    InvalidDigest,
    InvalidImageRef,
    RegistryNotAllowed,
    InvalidEnvironment,
    InvalidCommand,
    InvalidPorts,
    InvalidLabels,
    InvalidDuration,
    InvalidJobId,
    /// A CloudEvent with the wrong `specversion` or `type`.
    UnsupportedEvent,
    /// The `job_id` was used before for a different image or configuration.
    JobIdConflict,
    /// A job with this id already exists (running or finished) and this message is a new
    /// submission, not a redelivery of the job's own request. The existing job is unaffected.
    DuplicateRequest,
    // --- the cluster and the analysis ---
    KubescapeUnavailable,
    ImagePullFailed,
    ContainerCrashLooping,
    Unschedulable,
    SandboxDisappeared,
    AnalysisTimeout,
    /// Kubescape finished but wrote no VEX (e.g. the 500 kB storage cap).
    NoVexProduced,
    KubernetesUnavailable,
    StorageUnavailable,
    /// A message was delivered the maximum number of times without success.
    MaxDeliveriesExceeded,
    Internal,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        // Must equal serde's snake_case name; a unit test checks every variant.
        match self {
            FailureReason::MalformedRequest => "malformed_request",
            FailureReason::InvalidRequest => "invalid_request",
            FailureReason::UnknownField => "unknown_field",
            FailureReason::MissingField => "missing_field",
            FailureReason::PayloadTooLarge => "payload_too_large",
            FailureReason::MissingDigest => "missing_digest",
            FailureReason::InvalidDigest => "invalid_digest",
            FailureReason::InvalidImageRef => "invalid_image_ref",
            FailureReason::RegistryNotAllowed => "registry_not_allowed",
            FailureReason::InvalidEnvironment => "invalid_environment",
            FailureReason::InvalidCommand => "invalid_command",
            FailureReason::InvalidPorts => "invalid_ports",
            FailureReason::InvalidLabels => "invalid_labels",
            FailureReason::InvalidDuration => "invalid_duration",
            FailureReason::InvalidJobId => "invalid_job_id",
            FailureReason::UnsupportedEvent => "unsupported_event",
            FailureReason::JobIdConflict => "job_id_conflict",
            FailureReason::DuplicateRequest => "duplicate_request",
            FailureReason::KubescapeUnavailable => "kubescape_unavailable",
            FailureReason::ImagePullFailed => "image_pull_failed",
            FailureReason::ContainerCrashLooping => "container_crash_looping",
            FailureReason::Unschedulable => "unschedulable",
            FailureReason::SandboxDisappeared => "sandbox_disappeared",
            FailureReason::AnalysisTimeout => "analysis_timeout",
            FailureReason::NoVexProduced => "no_vex_produced",
            FailureReason::KubernetesUnavailable => "kubernetes_unavailable",
            FailureReason::StorageUnavailable => "storage_unavailable",
            FailureReason::MaxDeliveriesExceeded => "max_deliveries_exceeded",
            FailureReason::Internal => "internal",
        }
    }
}

/// Where the message that failed can be found again (it is also copied to the dead-letter
/// subject when the failure is about the message itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OriginalMessage {
    pub stream: String,
    pub subject: String,
    pub stream_sequence: u64,
    /// `Nats-Msg-Id` of the original, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// The dead-letter subject the payload was copied to, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_subject: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisFailed {
    /// Absent only when the request was so broken no job id could be derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// `Nats-Msg-Id` of the request, echoed for correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_msg_id: Option<String>,
    pub stage: Stage,
    pub reason: FailureReason,
    /// What happened and what to do about it, for a person.
    pub message: String,
    /// Whether submitting the same request again could succeed (e.g. after fixing the cluster).
    pub retryable: bool,
    pub original: OriginalMessage,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}
