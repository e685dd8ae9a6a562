//! The stage's settings, read from the environment once at start and validated there, so a typo
//! stops the process with a message naming the variable instead of failing jobs later.

use std::path::PathBuf;
use std::time::Duration;

use vexxy_kubescape::names::{DNS_LABEL_RULE, is_dns_label};
use vexxy_runtime::{ConfigError, Env};

use crate::checks::DEFAULT_CHART;
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
    /// `deploy/kubescape-values.yaml`), `VEXXY_KUBESCAPE_CHART` (default
    /// `kubescape/kubescape-operator`; a path or `oci://` reference needs no repository),
    /// `VEXXY_KUBESCAPE_HELM_REPO` (default the official chart repository; empty = use the
    /// repository already configured as `kubescape`),
    /// `VEXXY_KUBESCAPE_CHART_VERSION` (default: newest).
    pub helm: HelmInstall,
}

impl InstallCheckConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    pub fn load(env: &Env<'_>) -> Result<Self, ConfigError> {
        let namespace = env.checked(
            "VEXXY_KUBESCAPE_NAMESPACE",
            "kubescape",
            is_dns_label,
            DNS_LABEL_RULE,
        )?;
        let helm = HelmInstall {
            helm_bin: PathBuf::from(env.text("VEXXY_HELM_BIN", "helm")),
            chart: env.text("VEXXY_KUBESCAPE_CHART", DEFAULT_CHART),
            // Set but empty means "the repository is already configured": no `helm repo add`.
            repo_url: match env.verbatim("VEXXY_KUBESCAPE_HELM_REPO") {
                None => Some(DEFAULT_HELM_REPO.to_string()),
                Some(v) if v.trim().is_empty() => None,
                Some(v) => Some(v.trim().to_string()),
            },
            namespace: namespace.clone(),
            values_file: PathBuf::from(
                env.text("VEXXY_KUBESCAPE_VALUES", "deploy/kubescape-values.yaml"),
            ),
            chart_version: env
                .raw("VEXXY_KUBESCAPE_CHART_VERSION")
                .map(|v| v.trim().to_string()),
        };
        Ok(InstallCheckConfig {
            config_map: env.text("VEXXY_KUBESCAPE_CONFIGMAP", "ks-cloud-config"),
            check_ttl: env.duration("VEXXY_KUBESCAPE_CHECK_TTL", Duration::from_secs(300))?,
            auto_install: env.flag("VEXXY_KUBESCAPE_AUTO_INSTALL", false)?,
            install_timeout: env
                .duration("VEXXY_KUBESCAPE_INSTALL_TIMEOUT", Duration::from_secs(600))?,
            namespace,
            helm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<InstallCheckConfig, ConfigError> {
        InstallCheckConfig::load(&Env::from_pairs(vars))
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
        assert_eq!(config.helm.chart, DEFAULT_CHART);
        assert_eq!(config.helm.invocations()[0][..2], ["repo", "add"]);
    }

    #[test]
    fn a_chart_path_needs_no_repository() {
        let config = from(&[("VEXXY_KUBESCAPE_CHART", "/charts/kubescape-operator")]).unwrap();
        let calls = config.helm.invocations();
        assert_eq!(calls.len(), 1);
        assert_eq!(
            calls[0][..4],
            [
                "upgrade",
                "--install",
                "kubescape",
                "/charts/kubescape-operator"
            ]
        );
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
    fn durations_and_flags_follow_the_runtime_rules() {
        let config = from(&[
            ("VEXXY_KUBESCAPE_CHECK_TTL", "300"),
            ("VEXXY_KUBESCAPE_AUTO_INSTALL", "on"),
        ])
        .unwrap();
        assert_eq!(config.check_ttl, Duration::from_secs(300));
        assert!(config.auto_install);
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
