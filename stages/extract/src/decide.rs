//! Whether a missing Kubescape VEX is an empty result, partial evidence, or a failure.

use vexxy_events::FailureReason;

/// What the vulnerability manifests and summary say about the image, when Kubescape wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VulnerabilityCount {
    /// At least one manifest or the summary was found; this many matches in total.
    Known(u64),
    /// Neither manifests nor summary exist: Kubescape never scanned this instance.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingVex {
    /// The image has no vulnerabilities: enrich completes with zero counts and no VEX.
    EmptyResult,
    /// Learning did not complete; enrich derives statements from the manifests, never
    /// claiming `not_affected`.
    PartialEvidence,
    Fail {
        reason: FailureReason,
        message: String,
        retryable: bool,
    },
}

/// Decides what a missing VEX means for instance `slug`.
pub fn missing_vex(
    slug: &str,
    namespace: &str,
    count: VulnerabilityCount,
    partial: bool,
) -> MissingVex {
    match (count, partial) {
        (VulnerabilityCount::Known(0), _) => MissingVex::EmptyResult,
        (VulnerabilityCount::Known(_), true) => MissingVex::PartialEvidence,
        (VulnerabilityCount::Known(n), false) => MissingVex::Fail {
            reason: FailureReason::NoVexProduced,
            message: format!(
                "Kubescape found {n} vulnerability matches for container instance {slug} but stored no \
                 OpenVulnerabilityExchangeContainer {namespace}/{slug}. The usual cause is the Kubescape storage \
                 server's request-size cap: kubevuln's VEX write is rejected with HTTP 413 when it exceeds \
                 500,000 bytes (large images), and kubevuln only logs a warning. Raise the Helm value \
                 storage.kindQueues.openvulnerabilityexchangecontainers.maxObjectSize (e.g. to 20000000) with \
                 `helm upgrade kubescape kubescape/kubescape-operator -n kubescape --reuse-values --set \
                 storage.kindQueues.openvulnerabilityexchangecontainers.maxObjectSize=20000000`, check that \
                 capabilities.vexGeneration is enable, then submit the analysis again."
            ),
            retryable: true,
        },
        (VulnerabilityCount::Unknown, _) => MissingVex::Fail {
            reason: FailureReason::NoVexProduced,
            message: format!(
                "Kubescape stored neither a VEX nor a vulnerability manifest or summary for container instance \
                 {slug}{}: kubevuln did not scan it. Check that capabilities.vulnerabilityScan, relevancy and \
                 vexGeneration are enable and kubevuln is running (kubectl -n kubescape logs deploy/kubevuln), \
                 then submit the analysis again, with a longer analysis_duration if learning did not complete.",
                if partial {
                    " (learning did not complete)"
                } else {
                    ""
                }
            ),
            retryable: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_vulnerabilities_is_an_empty_result_even_if_partial() {
        assert_eq!(
            missing_vex("s", "kubescape", VulnerabilityCount::Known(0), false),
            MissingVex::EmptyResult
        );
        assert_eq!(
            missing_vex("s", "kubescape", VulnerabilityCount::Known(0), true),
            MissingVex::EmptyResult
        );
    }

    #[test]
    fn vulnerabilities_without_vex_fail_with_the_size_cap_explained() {
        let MissingVex::Fail {
            reason,
            message,
            retryable,
        } = missing_vex(
            "replicaset-x-1",
            "kubescape",
            VulnerabilityCount::Known(1200),
            false,
        )
        else {
            panic!("must fail");
        };
        assert_eq!(reason, FailureReason::NoVexProduced);
        assert!(retryable);
        assert!(message.contains("500,000 bytes"));
        assert!(
            message
                .contains("storage.kindQueues.openvulnerabilityexchangecontainers.maxObjectSize")
        );
    }

    #[test]
    fn vulnerabilities_without_vex_under_partial_evidence_go_on() {
        assert_eq!(
            missing_vex("s", "kubescape", VulnerabilityCount::Known(3), true),
            MissingVex::PartialEvidence
        );
    }

    #[test]
    fn nothing_at_all_fails() {
        assert!(matches!(
            missing_vex("s", "kubescape", VulnerabilityCount::Unknown, true),
            MissingVex::Fail {
                reason: FailureReason::NoVexProduced,
                ..
            }
        ));
    }
}
