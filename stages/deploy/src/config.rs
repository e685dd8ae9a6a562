//! The stage's settings, read from the environment once at start and validated there.

use vexxy_kubescape::names::{DNS_LABEL_RULE, is_dns_label};
use vexxy_runtime::{ConfigError, Env};

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

impl DeployConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    pub fn load(env: &Env<'_>) -> Result<Self, ConfigError> {
        let quantity = |name: &str, default: &str| {
            env.checked(
                name,
                default,
                |value| parse_quantity(value).is_some(),
                "a Kubernetes quantity; write it like 500m, 2, 512Mi or 4Gi",
            )
        };
        let config = DeployConfig {
            namespace: env.checked(
                "K8S_SANDBOX_NAMESPACE",
                "vexxy-sandbox",
                is_dns_label,
                DNS_LABEL_RULE,
            )?,
            cpu_request: quantity("SANDBOX_CPU_REQUEST", "1000m")?,
            cpu_limit: quantity("SANDBOX_CPU_LIMIT", "2000m")?,
            memory_request: quantity("SANDBOX_MEMORY_REQUEST", "2Gi")?,
            memory_limit: quantity("SANDBOX_MEMORY_LIMIT", "4Gi")?,
            ephemeral_storage_limit: quantity("VEXXY_SANDBOX_EPHEMERAL_STORAGE_LIMIT", "2Gi")?,
            drop_capabilities: env.flag("VEXXY_SANDBOX_DROP_CAPABILITIES", true)?,
            run_as_non_root: env.flag("VEXXY_SANDBOX_RUN_AS_NON_ROOT", false)?,
            deny_egress: env.flag("VEXXY_SANDBOX_DENY_EGRESS", false)?,
            create_namespace: env.flag("VEXXY_CREATE_SANDBOX_NAMESPACE", false)?,
            termination_grace_seconds: env.bounded(
                "VEXXY_SANDBOX_TERMINATION_GRACE_SECONDS",
                5,
                0,
                3600,
            )?,
        };
        check_request_within_limit(
            ("SANDBOX_CPU_REQUEST", &config.cpu_request),
            ("SANDBOX_CPU_LIMIT", &config.cpu_limit),
        )?;
        check_request_within_limit(
            ("SANDBOX_MEMORY_REQUEST", &config.memory_request),
            ("SANDBOX_MEMORY_LIMIT", &config.memory_limit),
        )?;
        Ok(config)
    }
}

fn check_request_within_limit(
    (request_name, request): (&str, &str),
    (limit_name, limit): (&str, &str),
) -> Result<(), ConfigError> {
    match (parse_quantity(request), parse_quantity(limit)) {
        (Some(r), Some(l)) if r > l => Err(ConfigError::inconsistent(
            request_name,
            format!(
                "{request_name}={request:?} is more than {limit_name}={limit:?}; a request \
                 cannot exceed its limit"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<DeployConfig, ConfigError> {
        DeployConfig::load(&Env::from_pairs(vars))
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
            assert_eq!(err.variable(), name, "{err}");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        // Flags and numbers follow the runtime's rules, like every other variable.
        let config = from(&[
            ("VEXXY_SANDBOX_DENY_EGRESS", "on"),
            ("VEXXY_SANDBOX_DROP_CAPABILITIES", "No"),
        ])
        .unwrap();
        assert!(config.deny_egress);
        assert!(!config.drop_capabilities);
    }

    #[test]
    fn request_above_limit_is_refused() {
        let err = from(&[("SANDBOX_MEMORY_REQUEST", "8Gi")]).unwrap_err();
        assert_eq!(err.variable(), "SANDBOX_MEMORY_REQUEST", "{err}");
        assert!(err.to_string().contains("cannot exceed its limit"), "{err}");
        assert!(from(&[("SANDBOX_CPU_REQUEST", "2"), ("SANDBOX_CPU_LIMIT", "2000m")]).is_ok());
    }
}
