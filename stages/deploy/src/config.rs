//! The stage's settings, read from the environment once at start and validated there.

use crate::quantity::parse_quantity;

/// How sandboxes are made. Every field is documented in the crate's table of variables.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployConfig {
    pub namespace: String,
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub ephemeral_storage_limit: String,
    pub drop_capabilities: bool,
    pub run_as_non_root: bool,
    pub deny_egress: bool,
    pub create_namespace: bool,
    pub termination_grace_seconds: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not a Kubernetes quantity; write it like 500m, 2, 512Mi or 4Gi")]
    BadQuantity { name: &'static str, value: String },
    #[error(
        "{request_name}={request:?} is more than {limit_name}={limit:?}; a request cannot exceed its limit"
    )]
    RequestOverLimit {
        request_name: &'static str,
        request: String,
        limit_name: &'static str,
        limit: String,
    },
    #[error("{name}={value:?} must be true or false")]
    BadFlag { name: &'static str, value: String },
    #[error("{name}={value:?} is not valid: {why}")]
    BadValue {
        name: &'static str,
        value: String,
        why: &'static str,
    },
}

impl DeployConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `lookup` returns a variable's value; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let namespace = get("K8S_SANDBOX_NAMESPACE").unwrap_or_else(|| "vexxy-sandbox".into());
        if !vexxy_kubescape::names::is_dns_label(&namespace) {
            return Err(ConfigError::BadValue {
                name: "K8S_SANDBOX_NAMESPACE",
                value: namespace,
                why: "a namespace name is lowercase letters, digits and '-', at most 63 characters",
            });
        }
        let quantity = |name: &'static str, default: &str| {
            let value = get(name).unwrap_or_else(|| default.to_string());
            match parse_quantity(&value) {
                Some(_) => Ok(value),
                None => Err(ConfigError::BadQuantity { name, value }),
            }
        };
        let flag = |name: &'static str, default: bool| match get(name).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ConfigError::BadFlag {
                name,
                value: other.to_string(),
            }),
        };
        let config = DeployConfig {
            cpu_request: quantity("SANDBOX_CPU_REQUEST", "1000m")?,
            cpu_limit: quantity("SANDBOX_CPU_LIMIT", "2000m")?,
            memory_request: quantity("SANDBOX_MEMORY_REQUEST", "2Gi")?,
            memory_limit: quantity("SANDBOX_MEMORY_LIMIT", "4Gi")?,
            ephemeral_storage_limit: quantity("VEXXY_SANDBOX_EPHEMERAL_STORAGE_LIMIT", "2Gi")?,
            drop_capabilities: flag("VEXXY_SANDBOX_DROP_CAPABILITIES", true)?,
            run_as_non_root: flag("VEXXY_SANDBOX_RUN_AS_NON_ROOT", false)?,
            deny_egress: flag("VEXXY_SANDBOX_DENY_EGRESS", false)?,
            create_namespace: flag("VEXXY_CREATE_SANDBOX_NAMESPACE", false)?,
            termination_grace_seconds: match get("VEXXY_SANDBOX_TERMINATION_GRACE_SECONDS") {
                None => 5,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|s: &i64| (0..=3600).contains(s))
                    .ok_or(ConfigError::BadValue {
                        name: "VEXXY_SANDBOX_TERMINATION_GRACE_SECONDS",
                        value: v,
                        why: "a whole number of seconds from 0 to 3600",
                    })?,
            },
            namespace,
        };
        config.check_request_within_limit(
            ("SANDBOX_CPU_REQUEST", &config.cpu_request),
            ("SANDBOX_CPU_LIMIT", &config.cpu_limit),
        )?;
        config.check_request_within_limit(
            ("SANDBOX_MEMORY_REQUEST", &config.memory_request),
            ("SANDBOX_MEMORY_LIMIT", &config.memory_limit),
        )?;
        Ok(config)
    }

    fn check_request_within_limit(
        &self,
        (request_name, request): (&'static str, &str),
        (limit_name, limit): (&'static str, &str),
    ) -> Result<(), ConfigError> {
        match (parse_quantity(request), parse_quantity(limit)) {
            (Some(r), Some(l)) if r > l => Err(ConfigError::RequestOverLimit {
                request_name,
                request: request.to_string(),
                limit_name,
                limit: limit.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<DeployConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DeployConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_previous_service_ones_and_hardened() {
        let c = from(&[]).unwrap();
        assert_eq!(c.namespace, "vexxy-sandbox");
        assert_eq!(
            (
                c.cpu_request.as_str(),
                c.cpu_limit.as_str(),
                c.memory_request.as_str(),
                c.memory_limit.as_str()
            ),
            ("1000m", "2000m", "2Gi", "4Gi")
        );
        assert!(c.drop_capabilities);
        assert!(!c.run_as_non_root);
        assert!(!c.deny_egress);
        assert!(!c.create_namespace);
        assert_eq!(c.termination_grace_seconds, 5);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("SANDBOX_CPU_LIMIT", "two cores"),
            ("SANDBOX_MEMORY_REQUEST", "2GB"),
            ("VEXXY_SANDBOX_EPHEMERAL_STORAGE_LIMIT", "-1Gi"),
            ("VEXXY_SANDBOX_DENY_EGRESS", "sure"),
            ("K8S_SANDBOX_NAMESPACE", "Sandbox"),
            ("VEXXY_SANDBOX_TERMINATION_GRACE_SECONDS", "-3"),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn request_above_limit_is_refused() {
        let err = from(&[("SANDBOX_MEMORY_REQUEST", "8Gi")]).unwrap_err();
        assert!(matches!(err, ConfigError::RequestOverLimit { .. }), "{err}");
        assert!(from(&[("SANDBOX_CPU_REQUEST", "2"), ("SANDBOX_CPU_LIMIT", "2000m")]).is_ok());
    }
}
