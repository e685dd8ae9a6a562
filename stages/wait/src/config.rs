//! The wait stage's settings, read from the environment once at start and validated there.

use std::time::Duration;

use vexxy_kubescape::names::{DNS_LABEL_RULE, is_dns_label};
use vexxy_runtime::{ConfigError, Env};

/// What to do when the deadline passes before Kubescape finished learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Go on with what evidence exists, marked partial (enrich then never claims `not_affected`).
    Partial,
    /// Fail the job with `analysis_timeout`.
    Fail,
}

#[derive(Debug, Clone)]
pub struct WaitConfig {
    /// `K8S_SANDBOX_NAMESPACE`: where deploy runs the sandboxes (and Kubescape writes their profiles).
    pub sandbox_namespace: String,
    /// `VEXXY_KUBESCAPE_NAMESPACE`: where kubevuln writes VEX documents.
    pub kubescape_namespace: String,
    /// `VEXXY_VEX_SETTLE`: after the profile completed, how long to wait for a VEX write.
    pub vex_settle: Duration,
    /// `VEXXY_LEARNING_SCAN_BOUND`: how long after a `ready` (learning-time) profile version a
    /// kubevuln scan of it may still write its VEX: the operator's cooldown (15 s) plus
    /// kubevuln's `scanTimeout` (5 m). Zero accepts that such a write may be taken for final.
    pub learning_scan_bound: Duration,
    /// `VEXXY_WAIT_GRACE`: added to the analysis window to form the deadline.
    pub grace: Duration,
    /// `VEXXY_ON_TIMEOUT`: `partial` or `fail`.
    pub on_timeout: OnTimeout,
    /// `VEXXY_IMAGE_PULL_GRACE`: how long `ErrImagePull` may persist before the job fails
    /// (`ImagePullBackOff` fails at once).
    pub image_pull_grace: Duration,
    /// `VEXXY_CRASHLOOP_RESTARTS`: restarts at which `CrashLoopBackOff` fails the job.
    pub crashloop_restarts: u32,
    /// `VEXXY_UNSCHEDULABLE_GRACE`: how long a pod may stay `Unschedulable` (e.g. while a
    /// cluster autoscaler adds a node) before the job fails.
    pub unschedulable_grace: Duration,
}

impl Default for WaitConfig {
    fn default() -> Self {
        WaitConfig {
            sandbox_namespace: "vexxy-sandbox".into(),
            kubescape_namespace: "kubescape".into(),
            vex_settle: Duration::from_secs(60),
            learning_scan_bound: Duration::from_secs(315),
            grace: Duration::from_secs(600),
            on_timeout: OnTimeout::Partial,
            image_pull_grace: Duration::from_secs(30),
            crashloop_restarts: 1,
            unschedulable_grace: Duration::ZERO,
        }
    }
}

impl WaitConfig {
    /// Reads every variable, falling back to the defaults for unset or empty ones.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    /// Same as [`WaitConfig::from_env`] over any source of variables (tests pass a map).
    pub fn load(env: &Env<'_>) -> Result<Self, ConfigError> {
        let defaults = WaitConfig::default();
        let namespace =
            |name: &str, default: &str| env.checked(name, default, is_dns_label, DNS_LABEL_RULE);
        Ok(WaitConfig {
            sandbox_namespace: namespace("K8S_SANDBOX_NAMESPACE", &defaults.sandbox_namespace)?,
            kubescape_namespace: namespace(
                "VEXXY_KUBESCAPE_NAMESPACE",
                &defaults.kubescape_namespace,
            )?,
            vex_settle: env.duration("VEXXY_VEX_SETTLE", defaults.vex_settle)?,
            learning_scan_bound: env
                .duration("VEXXY_LEARNING_SCAN_BOUND", defaults.learning_scan_bound)?,
            grace: env.duration("VEXXY_WAIT_GRACE", defaults.grace)?,
            on_timeout: env.choice(
                "VEXXY_ON_TIMEOUT",
                defaults.on_timeout,
                &[("partial", OnTimeout::Partial), ("fail", OnTimeout::Fail)],
            )?,
            image_pull_grace: env.duration("VEXXY_IMAGE_PULL_GRACE", defaults.image_pull_grace)?,
            crashloop_restarts: env
                .parse("VEXXY_CRASHLOOP_RESTARTS", defaults.crashloop_restarts)?,
            unschedulable_grace: env
                .duration("VEXXY_UNSCHEDULABLE_GRACE", defaults.unschedulable_grace)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<WaitConfig, ConfigError> {
        WaitConfig::load(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_when_unset() {
        let config = from(&[]).unwrap();
        assert_eq!(config.sandbox_namespace, "vexxy-sandbox");
        assert_eq!(config.kubescape_namespace, "kubescape");
        assert_eq!(config.vex_settle, Duration::from_secs(60));
        assert_eq!(config.learning_scan_bound, Duration::from_secs(315));
        assert_eq!(config.grace, Duration::from_secs(600));
        assert_eq!(config.on_timeout, OnTimeout::Partial);
        assert_eq!(config.crashloop_restarts, 1);
    }

    #[test]
    fn reads_short_local_stack_values() {
        let config = from(&[
            ("VEXXY_VEX_SETTLE", "1s"),
            ("VEXXY_LEARNING_SCAN_BOUND", "0"),
            ("VEXXY_WAIT_GRACE", "5"),
            ("VEXXY_ON_TIMEOUT", "fail"),
            ("VEXXY_CRASHLOOP_RESTARTS", "3"),
            ("K8S_SANDBOX_NAMESPACE", "sandbox-a"),
        ])
        .unwrap();
        assert_eq!(config.vex_settle, Duration::from_secs(1));
        assert_eq!(config.learning_scan_bound, Duration::ZERO);
        assert_eq!(config.grace, Duration::from_secs(5));
        assert_eq!(config.on_timeout, OnTimeout::Fail);
        assert_eq!(config.crashloop_restarts, 3);
        assert_eq!(config.sandbox_namespace, "sandbox-a");
    }

    #[test]
    fn errors_name_the_variable() {
        let err = from(&[("VEXXY_ON_TIMEOUT", "maybe")]).unwrap_err();
        assert_eq!(err.variable(), "VEXXY_ON_TIMEOUT");
        assert!(err.to_string().contains("VEXXY_ON_TIMEOUT"));
        assert_eq!(
            from(&[("VEXXY_VEX_SETTLE", "soon")])
                .unwrap_err()
                .variable(),
            "VEXXY_VEX_SETTLE"
        );
        let bound = from(&[("VEXXY_LEARNING_SCAN_BOUND", "5 minutes-ish")]).unwrap_err();
        assert_eq!(bound.variable(), "VEXXY_LEARNING_SCAN_BOUND");
        assert!(bound.to_string().contains("VEXXY_LEARNING_SCAN_BOUND"));
        assert_eq!(
            from(&[("VEXXY_LEARNING_SCAN_BOUND", "6m15s")])
                .unwrap()
                .learning_scan_bound,
            Duration::from_secs(375)
        );
        assert_eq!(
            from(&[("K8S_SANDBOX_NAMESPACE", "Bad_NS")])
                .unwrap_err()
                .variable(),
            "K8S_SANDBOX_NAMESPACE"
        );
    }
}
