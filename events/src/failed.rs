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
    /// Every reason, in declaration order. `all_is_complete` (a unit test) fails when a variant
    /// is added without being listed here.
    pub const ALL: [FailureReason; 29] = [
        FailureReason::MalformedRequest,
        FailureReason::InvalidRequest,
        FailureReason::UnknownField,
        FailureReason::MissingField,
        FailureReason::PayloadTooLarge,
        FailureReason::MissingDigest,
        FailureReason::InvalidDigest,
        FailureReason::InvalidImageRef,
        FailureReason::RegistryNotAllowed,
        FailureReason::InvalidEnvironment,
        FailureReason::InvalidCommand,
        FailureReason::InvalidPorts,
        FailureReason::InvalidLabels,
        FailureReason::InvalidDuration,
        FailureReason::InvalidJobId,
        FailureReason::UnsupportedEvent,
        FailureReason::JobIdConflict,
        FailureReason::DuplicateRequest,
        FailureReason::KubescapeUnavailable,
        FailureReason::ImagePullFailed,
        FailureReason::ContainerCrashLooping,
        FailureReason::Unschedulable,
        FailureReason::SandboxDisappeared,
        FailureReason::AnalysisTimeout,
        FailureReason::NoVexProduced,
        FailureReason::KubernetesUnavailable,
        FailureReason::StorageUnavailable,
        FailureReason::MaxDeliveriesExceeded,
        FailureReason::Internal,
    ];

    /// True when the failure is about the request message itself (it was rejected before or
    /// instead of becoming a job), false when an accepted job failed while running.
    pub fn is_request_problem(self) -> bool {
        matches!(
            self,
            FailureReason::MalformedRequest
                | FailureReason::InvalidRequest
                | FailureReason::UnknownField
                | FailureReason::MissingField
                | FailureReason::PayloadTooLarge
                | FailureReason::MissingDigest
                | FailureReason::InvalidDigest
                | FailureReason::InvalidImageRef
                | FailureReason::RegistryNotAllowed
                | FailureReason::InvalidEnvironment
                | FailureReason::InvalidCommand
                | FailureReason::InvalidPorts
                | FailureReason::InvalidLabels
                | FailureReason::InvalidDuration
                | FailureReason::InvalidJobId
                | FailureReason::UnsupportedEvent
                | FailureReason::JobIdConflict
                | FailureReason::DuplicateRequest
        )
    }

    /// Whether submitting the same request again could succeed, absent better knowledge at the
    /// point of failure: a request problem never can; a cluster, storage or broker problem can
    /// once it is fixed. A crash-looping image or one whose VEX Kubescape cannot store will fail
    /// the same way again.
    pub fn default_retryable(self) -> bool {
        match self {
            reason if reason.is_request_problem() => false,
            FailureReason::ContainerCrashLooping | FailureReason::NoVexProduced => false,
            _ => true,
        }
    }

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

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive on purpose: a new variant breaks compilation here until it is given a
    /// position, and the assertion then checks `ALL` holds it at that position.
    fn position(reason: FailureReason) -> usize {
        match reason {
            FailureReason::MalformedRequest => 0,
            FailureReason::InvalidRequest => 1,
            FailureReason::UnknownField => 2,
            FailureReason::MissingField => 3,
            FailureReason::PayloadTooLarge => 4,
            FailureReason::MissingDigest => 5,
            FailureReason::InvalidDigest => 6,
            FailureReason::InvalidImageRef => 7,
            FailureReason::RegistryNotAllowed => 8,
            FailureReason::InvalidEnvironment => 9,
            FailureReason::InvalidCommand => 10,
            FailureReason::InvalidPorts => 11,
            FailureReason::InvalidLabels => 12,
            FailureReason::InvalidDuration => 13,
            FailureReason::InvalidJobId => 14,
            FailureReason::UnsupportedEvent => 15,
            FailureReason::JobIdConflict => 16,
            FailureReason::DuplicateRequest => 17,
            FailureReason::KubescapeUnavailable => 18,
            FailureReason::ImagePullFailed => 19,
            FailureReason::ContainerCrashLooping => 20,
            FailureReason::Unschedulable => 21,
            FailureReason::SandboxDisappeared => 22,
            FailureReason::AnalysisTimeout => 23,
            FailureReason::NoVexProduced => 24,
            FailureReason::KubernetesUnavailable => 25,
            FailureReason::StorageUnavailable => 26,
            FailureReason::MaxDeliveriesExceeded => 27,
            FailureReason::Internal => 28,
        }
    }

    #[test]
    fn all_is_complete() {
        for (index, reason) in FailureReason::ALL.iter().enumerate() {
            assert_eq!(
                position(*reason),
                index,
                "{reason:?} is out of place in ALL"
            );
        }
    }

    #[test]
    fn as_str_equals_the_serde_name() {
        for reason in FailureReason::ALL {
            let serde_name = serde_json::to_value(reason).unwrap();
            assert_eq!(serde_name, serde_json::Value::from(reason.as_str()));
            let back: FailureReason = serde_json::from_value(serde_name).unwrap();
            assert_eq!(back, reason);
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }

    #[test]
    fn request_problems_are_never_retryable() {
        for reason in FailureReason::ALL {
            if reason.is_request_problem() {
                assert!(!reason.default_retryable(), "{reason}");
            }
        }
        assert!(FailureReason::KubernetesUnavailable.default_retryable());
    }
}
