//! The wait stage's settings, read from the environment once at start and validated there.

use std::time::Duration;

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

#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is invalid: {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl WaitConfig {
    /// Reads every variable, falling back to the defaults for unset or empty ones.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`WaitConfig::from_env`] over any source of variables (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut config = WaitConfig::default();
        if let Some(ns) = get("K8S_SANDBOX_NAMESPACE") {
            config.sandbox_namespace = namespace("K8S_SANDBOX_NAMESPACE", ns)?;
        }
        if let Some(ns) = get("VEXXY_KUBESCAPE_NAMESPACE") {
            config.kubescape_namespace = namespace("VEXXY_KUBESCAPE_NAMESPACE", ns)?;
        }
        if let Some(v) = get("VEXXY_VEX_SETTLE") {
            config.vex_settle = duration("VEXXY_VEX_SETTLE", v)?;
        }
        if let Some(v) = get("VEXXY_LEARNING_SCAN_BOUND") {
            config.learning_scan_bound = duration("VEXXY_LEARNING_SCAN_BOUND", v)?;
        }
        if let Some(v) = get("VEXXY_WAIT_GRACE") {
            config.grace = duration("VEXXY_WAIT_GRACE", v)?;
        }
        if let Some(v) = get("VEXXY_IMAGE_PULL_GRACE") {
            config.image_pull_grace = duration("VEXXY_IMAGE_PULL_GRACE", v)?;
        }
        if let Some(v) = get("VEXXY_UNSCHEDULABLE_GRACE") {
            config.unschedulable_grace = duration("VEXXY_UNSCHEDULABLE_GRACE", v)?;
        }
        if let Some(v) = get("VEXXY_ON_TIMEOUT") {
            config.on_timeout = match v.as_str() {
                "partial" => OnTimeout::Partial,
                "fail" => OnTimeout::Fail,
                _ => {
                    return Err(ConfigError {
                        variable: "VEXXY_ON_TIMEOUT",
                        value: v,
                        expected: "`partial` (go on with partial evidence) or `fail`",
                    });
                }
            };
        }
        if let Some(v) = get("VEXXY_CRASHLOOP_RESTARTS") {
            config.crashloop_restarts = v.parse().map_err(|_| ConfigError {
                variable: "VEXXY_CRASHLOOP_RESTARTS",
                value: v.clone(),
                expected: "a whole number of restarts, e.g. 1",
            })?;
        }
        Ok(config)
    }
}

/// Plain seconds (`60`) or a humantime duration (`90s`, `10m`, `1h 30m`).
fn duration(variable: &'static str, value: String) -> Result<Duration, ConfigError> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(&value).map_err(|_| ConfigError {
        variable,
        value,
        expected: "a duration such as `60`, `90s`, `10m` or `1h 30m`",
    })
}

fn namespace(variable: &'static str, value: String) -> Result<String, ConfigError> {
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value)
    } else {
        Err(ConfigError {
            variable,
            value,
            expected: "a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<WaitConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WaitConfig::from_lookup(|name| map.get(name).cloned())
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
        assert_eq!(err.variable, "VEXXY_ON_TIMEOUT");
        assert!(err.to_string().contains("VEXXY_ON_TIMEOUT"));
        assert_eq!(
            from(&[("VEXXY_VEX_SETTLE", "soon")]).unwrap_err().variable,
            "VEXXY_VEX_SETTLE"
        );
        let bound = from(&[("VEXXY_LEARNING_SCAN_BOUND", "5 minutes-ish")]).unwrap_err();
        assert_eq!(bound.variable, "VEXXY_LEARNING_SCAN_BOUND");
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
                .variable,
            "K8S_SANDBOX_NAMESPACE"
        );
    }
}
