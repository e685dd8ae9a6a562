//! The objects deploy creates, as plain data built from the request and the configuration.
//! Nothing here talks to the cluster, so every field can be checked in a unit test.
//!
//! Request values (env, command, args) are placed verbatim through the API, never templated;
//! Kubernetes' own `$(VAR)` expansion is neutralised with
//! [`escape_kubernetes_expansion`] so the container sees exactly what the user wrote.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, Namespace, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use vexxy_events::ValidatedRequest;
use vexxy_events::request::escape_kubernetes_expansion;

use crate::config::DeployConfig;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "vexxy";
pub const JOB_ID_LABEL: &str = "vexxy.io/job-id";
/// node-agent ends learning for the pod after this Go duration (kubescape-facts §1).
pub const MAX_SNIFFING_TIME_LABEL: &str = "kubescape.io/max-sniffing-time";
pub const IMAGE_REF_ANNOTATION: &str = "vexxy.io/image-ref";
pub const IMAGE_DIGEST_ANNOTATION: &str = "vexxy.io/image-digest";
pub const REQUEST_MSG_ID_ANNOTATION: &str = "vexxy.io/request-msg-id";
pub const ANALYSIS_DURATION_ANNOTATION: &str = "vexxy.io/analysis-duration-seconds";
/// The one container of every sandbox; Kubescape's instance slug includes it.
pub const CONTAINER_NAME: &str = "target";

/// `vexxy-<job_id>`: job ids are at most 40 characters of `[a-z0-9-]`, so this is a valid name.
pub fn sandbox_name(job_id: &str) -> String {
    format!("vexxy-{job_id}")
}

fn identity_labels(job_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (JOB_ID_LABEL.to_string(), job_id.to_string()),
    ])
}

pub fn deployment(request: &ValidatedRequest, config: &DeployConfig) -> Deployment {
    let name = sandbox_name(&request.job_id);
    let labels = identity_labels(&request.job_id);
    let mut pod_labels = labels.clone();
    pod_labels.insert(
        MAX_SNIFFING_TIME_LABEL.to_string(),
        format!("{}s", request.analysis_duration_seconds),
    );
    let mut annotations = BTreeMap::from([
        (IMAGE_REF_ANNOTATION.to_string(), request.image_ref.clone()),
        (
            IMAGE_DIGEST_ANNOTATION.to_string(),
            request.image_digest.clone(),
        ),
        (
            ANALYSIS_DURATION_ANNOTATION.to_string(),
            request.analysis_duration_seconds.to_string(),
        ),
    ]);
    if let Some(msg_id) = &request.request_msg_id {
        annotations.insert(REQUEST_MSG_ID_ANNOTATION.to_string(), msg_id.clone());
    }

    Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..LabelSelector::default()
            },
            // A rolling update would briefly run two pods and a second ReplicaSet, i.e. a second
            // Kubescape instance slug; the sandbox is never updated, but if someone edits it the
            // old pod goes first.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_string()),
                ..DeploymentStrategy::default()
            }),
            revision_history_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(request, config)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(request: &ValidatedRequest, config: &DeployConfig) -> PodSpec {
    PodSpec {
        containers: vec![container(request, config)],
        // The image under analysis is untrusted: it gets no API credentials and no view of the
        // other Services in the namespace.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        restart_policy: Some("Always".to_string()),
        termination_grace_period_seconds: Some(config.termination_grace_seconds),
        security_context: Some(PodSecurityContext {
            run_as_non_root: config.run_as_non_root.then_some(true),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn container(request: &ValidatedRequest, config: &DeployConfig) -> Container {
    let run = &request.config;
    let escape_all = |values: &Vec<String>| {
        values
            .iter()
            .map(|v| escape_kubernetes_expansion(v))
            .collect()
    };
    Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(request.pinned_image()),
        // Pinned by digest: a cached copy is the same image.
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: run.command.as_ref().map(escape_all),
        args: run.args.as_ref().map(escape_all),
        env: (!run.environment.is_empty()).then(|| {
            run.environment
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(escape_kubernetes_expansion(value)),
                    value_from: None,
                })
                .collect()
        }),
        ports: (!run.ports.is_empty()).then(|| {
            run.ports
                .iter()
                .map(|port| ContainerPort {
                    container_port: i32::from(*port),
                    protocol: Some("TCP".to_string()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(config.cpu_request.clone())),
                (
                    "memory".to_string(),
                    Quantity(config.memory_request.clone()),
                ),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(config.cpu_limit.clone())),
                ("memory".to_string(), Quantity(config.memory_limit.clone())),
                (
                    "ephemeral-storage".to_string(),
                    Quantity(config.ephemeral_storage_limit.clone()),
                ),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: config.drop_capabilities.then(|| Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            run_as_non_root: config.run_as_non_root.then_some(true),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    }
}

/// Denies all egress from the job's pod (no `egress` rules with policy type `Egress`).
/// DNS is denied too: an image that must resolve names needs egress left on.
pub fn deny_egress_policy(job_id: &str, namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(sandbox_name(job_id)),
            namespace: Some(namespace.to_string()),
            labels: Some(identity_labels(job_id)),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    JOB_ID_LABEL.to_string(),
                    job_id.to_string(),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Egress".to_string()]),
            egress: Some(Vec::new()),
            ingress: None,
        }),
    }
}

/// The sandbox namespace, labelled for Pod Security admission: `baseline` is enforced (refuses
/// privileged pods, host namespaces and host paths even if someone edits a sandbox), and
/// `restricted` is warned and audited so what keeps sandboxes from the strictest level shows up.
pub fn sandbox_namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (
                    "pod-security.kubernetes.io/enforce".to_string(),
                    "baseline".to_string(),
                ),
                (
                    "pod-security.kubernetes.io/warn".to_string(),
                    "restricted".to_string(),
                ),
                (
                    "pod-security.kubernetes.io/audit".to_string(),
                    "restricted".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexxy_events::RunConfig;

    fn request() -> ValidatedRequest {
        ValidatedRequest {
            job_id: "job-1".into(),
            image_ref: "nginx:1.27".into(),
            image_digest: format!("sha256:{}", "a".repeat(64)),
            repository: "docker.io/library/nginx".into(),
            registry: "docker.io".into(),
            tag: Some("1.27".into()),
            request_msg_id: Some("msg-1".into()),
            analysis_duration_seconds: 90,
            config: RunConfig {
                analysis_duration: Some(90),
                environment: BTreeMap::from([("GREETING".into(), "$(HOME) and $$(x)".into())]),
                command: Some(vec!["/bin/sh".into(), "-c".into(), "echo $(PATH)".into()]),
                args: Some(vec!["--port=$(PORT)".into()]),
                ports: vec![8080, 9090],
            },
            labels: BTreeMap::new(),
        }
    }

    fn config() -> DeployConfig {
        DeployConfig::load(&vexxy_runtime::Env::empty()).unwrap()
    }

    #[test]
    fn deployment_carries_identity_and_the_sniffing_window() {
        let d = deployment(&request(), &config());
        let labels = d.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[JOB_ID_LABEL], "job-1");
        assert_eq!(labels[MANAGED_BY_LABEL], "vexxy");
        assert_eq!(d.metadata.name.as_deref(), Some("vexxy-job-1"));
        let annotations = d.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[IMAGE_REF_ANNOTATION], "nginx:1.27");
        assert_eq!(annotations[REQUEST_MSG_ID_ANNOTATION], "msg-1");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels[MAX_SNIFFING_TIME_LABEL], "90s");
        assert_eq!(pod_labels[JOB_ID_LABEL], "job-1");
        let selector = spec.selector.match_labels.unwrap();
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "selector matches the pod"
        );
    }

    #[test]
    fn values_stay_literal() {
        let d = deployment(&request(), &config());
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(format!("docker.io/library/nginx@sha256:{}", "a".repeat(64)).as_str())
        );
        assert_eq!(c.command.as_ref().unwrap()[2], "echo $$(PATH)");
        assert_eq!(c.args.as_ref().unwrap()[0], "--port=$$(PORT)");
        assert_eq!(
            c.env.as_ref().unwrap()[0].value.as_deref(),
            Some("$$(HOME) and $$$(x)")
        );
        let ports: Vec<i32> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, vec![8080, 9090]);
    }

    #[test]
    fn optional_hardening_follows_the_config() {
        let mut cfg = config();
        cfg.drop_capabilities = false;
        cfg.run_as_non_root = true;
        let d = deployment(&request(), &cfg);
        let pod = d.spec.unwrap().template.spec.unwrap();
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert!(sc.capabilities.is_none());
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false), "never optional");
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }

    #[test]
    fn egress_policy_selects_only_this_job() {
        let p = deny_egress_policy("job-1", "sandbox");
        let spec = p.spec.unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
        assert_eq!(spec.egress, Some(vec![]));
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[JOB_ID_LABEL],
            "job-1"
        );
    }
}
