//! Whether the Kubescape in the cluster can produce a runtime VEX: each component vexxy relies on
//! is present and ready, and the capabilities that make kubevuln write the relevancy VEX and the
//! filtered SBOM are switched on.
//!
//! Where the answers live (`kubescape-facts.md` §1, §2, chart `kubescape-operator`):
//! * the storage aggregated API: APIService `v1beta1.spdx.softwarecomposition.kubescape.io`,
//!   condition `Available=True`;
//! * node-agent (records what containers load): DaemonSet `node-agent`;
//! * kubevuln (writes VEX and filtered SBOM): Deployment `kubevuln`;
//! * the capabilities: ConfigMap `ks-cloud-config`, key `clusterData`, a JSON object rendered
//!   from `templates/configs/cloudapi-configmap.yaml` and mounted into kubevuln and the operator
//!   as `/etc/config/clusterData.json`: `relevantImageVulnerabilitiesEnabled`
//!   (`capabilities.relevancy`), `vexGeneration` (`capabilities.vexGeneration`),
//!   `storeFilteredSbom` (`kubevuln.config.storeFilteredSboms`) and `storage`
//!   (`storage.enabled`). A missing key counts as off: that is kubevuln's own default.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::{Api, Client};
use serde_json::Value;

/// The APIService the Kubescape storage server registers.
pub const STORAGE_API_SERVICE: &str = "v1beta1.spdx.softwarecomposition.kubescape.io";
pub const NODE_AGENT_DAEMONSET: &str = "node-agent";
pub const KUBEVULN_DEPLOYMENT: &str = "kubevuln";
pub const RELEASE_NAME: &str = "kubescape";
/// The chart from the official repository, added as `kubescape`.
pub const DEFAULT_CHART: &str = "kubescape/kubescape-operator";

/// Where the checks look.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    /// The chart's `global.cloudConfig` ConfigMap (`ks-cloud-config`).
    pub config_map: String,
}

/// What the cluster looks like to vexxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    Ready,
    /// Kubescape is not installed: the storage APIService does not exist.
    Absent,
    NotReady(Vec<Problem>),
}

/// One failed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub what: String,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProblemKind {
    /// Exists but is not (yet) ready: may pass by itself (rollout, image pull, restart).
    Starting { hint: String },
    /// A component is missing or a capability is off: fixed by this helm `--set`.
    NeedsSetting { set: &'static str },
}

impl Problem {
    pub fn may_pass_by_itself(&self) -> bool {
        matches!(self.kind, ProblemKind::Starting { .. })
    }
}

/// A failed API request made while checking.
#[derive(Debug, thiserror::Error)]
#[error("{request}: {source}")]
pub struct CheckError {
    pub request: String,
    #[source]
    pub source: kube::Error,
}

/// Reads the cluster. Stops after one request when Kubescape is absent.
pub async fn check(client: &Client, target: &Target) -> Result<Readiness, CheckError> {
    let api_services: Api<APIService> = Api::all(client.clone());
    let Some(api_service) = api_services
        .get_opt(STORAGE_API_SERVICE)
        .await
        .map_err(|source| CheckError {
            request: format!("GET apiservices/{STORAGE_API_SERVICE}"),
            source,
        })?
    else {
        return Ok(Readiness::Absent);
    };

    let ns = target.namespace.as_str();
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let (node_agent, kubevuln, config) = tokio::try_join!(
        async {
            daemonsets
                .get_opt(NODE_AGENT_DAEMONSET)
                .await
                .map_err(|source| CheckError {
                    request: format!("GET daemonsets {ns}/{NODE_AGENT_DAEMONSET}"),
                    source,
                })
        },
        async {
            deployments
                .get_opt(KUBEVULN_DEPLOYMENT)
                .await
                .map_err(|source| CheckError {
                    request: format!("GET deployments {ns}/{KUBEVULN_DEPLOYMENT}"),
                    source,
                })
        },
        async {
            config_maps
                .get_opt(&target.config_map)
                .await
                .map_err(|source| CheckError {
                    request: format!("GET configmaps {ns}/{}", target.config_map),
                    source,
                })
        },
    )?;

    let mut problems = Vec::new();
    problems.extend(api_service_problem(&api_service, ns));
    problems.extend(node_agent_problem(node_agent.as_ref(), ns));
    problems.extend(kubevuln_problem(kubevuln.as_ref(), ns));
    problems.extend(capability_problems(config.as_ref(), target));
    Ok(if problems.is_empty() {
        Readiness::Ready
    } else {
        Readiness::NotReady(problems)
    })
}

fn api_service_problem(api_service: &APIService, ns: &str) -> Option<Problem> {
    let available = api_service
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Available"));
    match available {
        Some(c) if c.status == "True" => None,
        other => {
            let detail = other
                .map(|c| {
                    format!(
                        "Available={} ({}: {})",
                        c.status,
                        c.reason.as_deref().unwrap_or("no reason"),
                        c.message.as_deref().unwrap_or("no message")
                    )
                })
                .unwrap_or_else(|| "no Available condition yet".to_string());
            Some(Problem {
                what: format!(
                    "the Kubescape storage API (APIService {STORAGE_API_SERVICE}) is not available: {detail}"
                ),
                kind: ProblemKind::Starting {
                    hint: format!("check the storage pod: kubectl -n {ns} get pods -l app=storage"),
                },
            })
        }
    }
}

fn node_agent_problem(daemonset: Option<&DaemonSet>, ns: &str) -> Option<Problem> {
    let Some(daemonset) = daemonset else {
        return Some(Problem {
            what: format!(
                "DaemonSet {ns}/{NODE_AGENT_DAEMONSET} does not exist, so nothing records what containers load"
            ),
            kind: ProblemKind::NeedsSetting {
                set: "capabilities.relevancy=enable",
            },
        });
    };
    let status = daemonset.status.as_ref();
    let ready = status.map_or(0, |s| s.number_ready);
    let desired = status.map_or(0, |s| s.desired_number_scheduled);
    if ready >= 1 && ready == desired {
        return None;
    }
    Some(Problem {
        what: format!(
            "DaemonSet {ns}/{NODE_AGENT_DAEMONSET} has {ready} of {desired} pods ready (needs all, at least one)"
        ),
        kind: ProblemKind::Starting {
            hint: format!("kubectl -n {ns} describe daemonset {NODE_AGENT_DAEMONSET}"),
        },
    })
}

fn kubevuln_problem(deployment: Option<&Deployment>, ns: &str) -> Option<Problem> {
    let Some(deployment) = deployment else {
        return Some(Problem {
            what: format!(
                "Deployment {ns}/{KUBEVULN_DEPLOYMENT} does not exist, so nothing writes VEX documents"
            ),
            kind: ProblemKind::NeedsSetting {
                set: "capabilities.vulnerabilityScan=enable",
            },
        });
    };
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Available"))
        .is_some_and(|c| c.status == "True");
    if available {
        return None;
    }
    Some(Problem {
        what: format!("Deployment {ns}/{KUBEVULN_DEPLOYMENT} is not Available"),
        kind: ProblemKind::Starting {
            hint: format!("kubectl -n {ns} describe deployment {KUBEVULN_DEPLOYMENT}"),
        },
    })
}

/// (key in clusterData, helm setting that turns it on, what is lost without it)
const CAPABILITIES: [(&str, &str, &str); 4] = [
    (
        "relevantImageVulnerabilitiesEnabled",
        "capabilities.relevancy=enable",
        "no runtime relevancy is computed",
    ),
    (
        "vexGeneration",
        "capabilities.vexGeneration=enable",
        "kubevuln writes no VEX documents",
    ),
    (
        "storeFilteredSbom",
        "kubevuln.config.storeFilteredSboms=true",
        "kubevuln stores no relevancy-filtered SBOM",
    ),
    (
        "storage",
        "storage.enabled=true",
        "kubevuln stores nothing in the cluster",
    ),
];

fn capability_problems(config_map: Option<&ConfigMap>, target: &Target) -> Vec<Problem> {
    let ns = &target.namespace;
    let name = &target.config_map;
    let all_off = |why: String| {
        CAPABILITIES
            .iter()
            .map(|(key, set, lost)| Problem {
                what: format!("capability {key} cannot be confirmed ({why}): without it {lost}"),
                kind: ProblemKind::NeedsSetting { set },
            })
            .collect()
    };
    let Some(config_map) = config_map else {
        return all_off(format!("ConfigMap {ns}/{name} does not exist"));
    };
    let Some(text) = config_map.data.as_ref().and_then(|d| d.get("clusterData")) else {
        return all_off(format!("ConfigMap {ns}/{name} has no clusterData key"));
    };
    let data: Value = match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return all_off(format!(
                "clusterData in ConfigMap {ns}/{name} is not a JSON object"
            ));
        }
        Err(e) => {
            return all_off(format!(
                "clusterData in ConfigMap {ns}/{name} is not JSON: {e}"
            ));
        }
    };
    CAPABILITIES
        .iter()
        .filter(|(key, _, _)| !is_on(data.get(*key)))
        .map(|(key, set, lost)| Problem {
            what: format!(
                "{key} is {} in ConfigMap {ns}/{name}: {lost}",
                data.get(*key)
                    .map_or("absent".to_string(), |v| v.to_string())
            ),
            kind: ProblemKind::NeedsSetting { set },
        })
        .collect()
}

/// Helm renders these as JSON booleans; a quoted "true" is accepted too since the operator
/// config has carried string flags (e.g. `nodeAgent`).
fn is_on(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The one command that repairs every misconfiguration found, keeping the user's other values.
pub fn fix_command(namespace: &str, chart: &str, problems: &[Problem]) -> Option<String> {
    let mut sets: Vec<&str> = Vec::new();
    for problem in problems {
        if let ProblemKind::NeedsSetting { set } = problem.kind
            && !sets.contains(&set)
        {
            sets.push(set);
        }
    }
    if sets.is_empty() {
        return None;
    }
    let mut command =
        format!("helm upgrade --install {RELEASE_NAME} {chart} -n {namespace} --reuse-values");
    for set in sets {
        command.push_str(" --set ");
        command.push_str(set);
    }
    Some(command)
}

/// One line per problem, with the hint for those that may pass by themselves.
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match &p.kind {
            ProblemKind::Starting { hint } => format!("{} (to investigate: {hint})", p.what),
            ProblemKind::NeedsSetting { .. } => p.what.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn target() -> Target {
        Target {
            namespace: "kubescape".into(),
            config_map: "ks-cloud-config".into(),
        }
    }

    fn cloud_config(cluster_data: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(
                "clusterData".to_string(),
                cluster_data.to_string(),
            )])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn all_capabilities_on_is_no_problem() {
        let cm = cloud_config(
            r#"{"storage": true, "relevantImageVulnerabilitiesEnabled": true, "vexGeneration": true, "storeFilteredSbom": true, "namespace": "kubescape"}"#,
        );
        assert_eq!(capability_problems(Some(&cm), &target()), vec![]);
    }

    #[test]
    fn vex_generation_off_names_the_setting() {
        let cm = cloud_config(
            r#"{"storage": true, "relevantImageVulnerabilitiesEnabled": true, "vexGeneration": false}"#,
        );
        let problems = capability_problems(Some(&cm), &target());
        assert_eq!(problems.len(), 2, "{problems:?}");
        let fix = fix_command("kubescape", DEFAULT_CHART, &problems).unwrap();
        assert_eq!(
            fix,
            "helm upgrade --install kubescape kubescape/kubescape-operator -n kubescape --reuse-values \
             --set capabilities.vexGeneration=enable --set kubevuln.config.storeFilteredSboms=true"
        );
        assert!(problems.iter().all(|p| !p.may_pass_by_itself()));
    }

    #[test]
    fn unreadable_config_counts_as_off() {
        for cm in [
            cloud_config("not json"),
            cloud_config("[1]"),
            ConfigMap::default(),
        ] {
            assert_eq!(capability_problems(Some(&cm), &target()).len(), 4);
        }
        assert_eq!(capability_problems(None, &target()).len(), 4);
    }

    #[test]
    fn starting_components_have_no_fix_command() {
        let problems = vec![Problem {
            what: "x".into(),
            kind: ProblemKind::Starting { hint: "y".into() },
        }];
        assert_eq!(fix_command("kubescape", DEFAULT_CHART, &problems), None);
        assert!(describe(&problems).contains("to investigate: y"));
    }
}
