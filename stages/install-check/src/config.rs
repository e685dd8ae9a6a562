//! The stage's settings, read from the environment once at start and validated there, so a typo
//! stops the process with a message naming the variable instead of failing jobs later.

use std::path::PathBuf;
use std::time::Duration;

use crate::helm::HelmInstall;

pub const DEFAULT_HELM_REPO: &str = "https://kubescape.github.io/helm-charts";

#[derive(Debug, Clone)]
pub struct InstallCheckConfig {
    /// `VEXXY_KUBESCAPE_NAMESPACE` (default `kubescape`): where Kubescape runs.
    pub namespace: String,
    /// `VEXXY_KUBESCAPE_CONFIGMAP` (default `ks-cloud-config`): the chart's `global.cloudConfig`.
    pub config_map: String,
    /// `VEXXY_KUBESCAPE_CHECK_TTL` (default `5m`): how long a positive answer is trusted.
    pub check_ttl: Duration,
    /// `VEXXY_KUBESCAPE_AUTO_INSTALL` (default `false`).
    pub auto_install: bool,
    /// `VEXXY_KUBESCAPE_INSTALL_TIMEOUT` (default `10m`): helm plus waiting for readiness.
    pub install_timeout: Duration,
    /// `VEXXY_HELM_BIN` (default `helm`), `VEXXY_KUBESCAPE_VALUES` (default
    /// `deploy/kubescape-values.yaml`), `VEXXY_KUBESCAPE_HELM_REPO` (default the official chart
    /// repository; empty = use the repository already configured as `kubescape`),
    /// `VEXXY_KUBESCAPE_CHART_VERSION` (default: newest).
    pub helm: HelmInstall,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not a duration ({reason}); write it like 30s, 5m or 1h")]
    BadDuration {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("{name}={value:?} must be true or false")]
    BadFlag { name: &'static str, value: String },
    #[error("{name}={value:?} is not a valid {what}")]
    BadValue {
        name: &'static str,
        value: String,
        what: &'static str,
    },
}

impl InstallCheckConfig {
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
        let namespace = get("VEXXY_KUBESCAPE_NAMESPACE").unwrap_or_else(|| "kubescape".into());
        if !vexxy_kubescape::names::is_dns_label(&namespace) {
            return Err(ConfigError::BadValue {
                name: "VEXXY_KUBESCAPE_NAMESPACE",
                value: namespace,
                what: "namespace name (lowercase letters, digits and '-', at most 63)",
            });
        }
        let helm = HelmInstall {
            helm_bin: PathBuf::from(get("VEXXY_HELM_BIN").unwrap_or_else(|| "helm".into())),
            repo_url: match lookup("VEXXY_KUBESCAPE_HELM_REPO") {
                None => Some(DEFAULT_HELM_REPO.to_string()),
                Some(v) if v.trim().is_empty() => None,
                Some(v) => Some(v.trim().to_string()),
            },
            namespace: namespace.clone(),
            values_file: PathBuf::from(
                get("VEXXY_KUBESCAPE_VALUES")
                    .unwrap_or_else(|| "deploy/kubescape-values.yaml".into()),
            ),
            chart_version: get("VEXXY_KUBESCAPE_CHART_VERSION"),
        };
        Ok(InstallCheckConfig {
            config_map: get("VEXXY_KUBESCAPE_CONFIGMAP")
                .unwrap_or_else(|| "ks-cloud-config".into()),
            check_ttl: duration(&get, "VEXXY_KUBESCAPE_CHECK_TTL", "5m")?,
            auto_install: flag(&get, "VEXXY_KUBESCAPE_AUTO_INSTALL", false)?,
            install_timeout: duration(&get, "VEXXY_KUBESCAPE_INSTALL_TIMEOUT", "10m")?,
            namespace,
            helm,
        })
    }
}

fn duration(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let value = get(name).unwrap_or_else(|| default.to_string());
    humantime::parse_duration(&value).map_err(|e| ConfigError::BadDuration {
        name,
        value,
        reason: e.to_string(),
    })
}

fn flag(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(name).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError::BadFlag {
            name,
            value: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<InstallCheckConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        InstallCheckConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = from(&[]).unwrap();
        assert_eq!(config.namespace, "kubescape");
        assert_eq!(config.config_map, "ks-cloud-config");
        assert_eq!(config.check_ttl, Duration::from_secs(300));
        assert!(!config.auto_install);
        assert_eq!(config.install_timeout, Duration::from_secs(600));
        assert_eq!(config.helm.helm_bin, PathBuf::from("helm"));
        assert_eq!(
            config.helm.values_file,
            PathBuf::from("deploy/kubescape-values.yaml")
        );
        assert_eq!(config.helm.repo_url.as_deref(), Some(DEFAULT_HELM_REPO));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = from(&[("VEXXY_KUBESCAPE_CHECK_TTL", "five minutes")]).unwrap_err();
        assert!(
            err.to_string().contains("VEXXY_KUBESCAPE_CHECK_TTL"),
            "{err}"
        );
        let err = from(&[("VEXXY_KUBESCAPE_AUTO_INSTALL", "maybe")]).unwrap_err();
        assert!(
            err.to_string().contains("VEXXY_KUBESCAPE_AUTO_INSTALL"),
            "{err}"
        );
        let err = from(&[("VEXXY_KUBESCAPE_NAMESPACE", "Kube_Scape")]).unwrap_err();
        assert!(
            err.to_string().contains("VEXXY_KUBESCAPE_NAMESPACE"),
            "{err}"
        );
    }

    #[test]
    fn empty_repo_skips_repo_add() {
        let config = from(&[
            ("VEXXY_KUBESCAPE_HELM_REPO", ""),
            ("VEXXY_KUBESCAPE_AUTO_INSTALL", "true"),
        ])
        .unwrap();
        assert!(config.auto_install);
        assert_eq!(config.helm.invocations().len(), 1);
        assert_eq!(config.helm.invocations()[0][0], "upgrade");
    }
}
