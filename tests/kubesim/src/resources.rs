//! The resource types kubesim serves, as the discovery documents and the router see them.

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether a `/status` subresource exists (writes to the main resource keep `status`).
    pub has_status: bool,
}

pub const KUBESCAPE_GROUP: &str = "spdx.softwarecomposition.kubescape.io";
pub const KUBESCAPE_VERSION: &str = "v1beta1";

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`: the name counters and messages use.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Served by the emulated Kubescape storage aggregated API server.
    pub fn is_kubescape_storage(&self) -> bool {
        self.group == KUBESCAPE_GROUP
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $namespaced:expr, [$($short:expr),*], $status:expr) => {
        Resource {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            has_status: $status,
        }
    };
}

pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        ["ns"],
        true
    ),
    res!("", "v1", "pods", "pod", "Pod", true, ["po"], true),
    res!("", "v1", "events", "event", "Event", true, ["ev"], false),
    res!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        ["cm"],
        false
    ),
    res!("", "v1", "secrets", "secret", "Secret", true, [], false),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        ["sa"],
        false
    ),
    res!(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        ["svc"],
        true
    ),
    res!("", "v1", "nodes", "node", "Node", false, ["no"], true),
    res!(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        ["deploy"],
        true
    ),
    res!(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        ["rs"],
        true
    ),
    res!(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        ["ds"],
        true
    ),
    // Stored and served like the real API server's, with no controller behind them: kubesim
    // runs no Job's pods and enforces no budget (the real control plane tier does).
    res!("batch", "v1", "jobs", "job", "Job", true, [], true),
    res!(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        ["pdb"],
        true
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        ["netpol"],
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        [],
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        [],
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        [],
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        [],
        false
    ),
    res!(
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "apiservice",
        "APIService",
        false,
        [],
        true
    ),
    res!(
        KUBESCAPE_GROUP,
        KUBESCAPE_VERSION,
        "openvulnerabilityexchangecontainers",
        "openvulnerabilityexchangecontainer",
        "OpenVulnerabilityExchangeContainer",
        true,
        [],
        false
    ),
    res!(
        KUBESCAPE_GROUP,
        KUBESCAPE_VERSION,
        "sbomsyftfiltereds",
        "sbomsyftfiltered",
        "SBOMSyftFiltered",
        true,
        [],
        false
    ),
    res!(
        KUBESCAPE_GROUP,
        KUBESCAPE_VERSION,
        "sbomsyfts",
        "sbomsyft",
        "SBOMSyft",
        true,
        [],
        false
    ),
    res!(
        KUBESCAPE_GROUP,
        KUBESCAPE_VERSION,
        "vulnerabilitymanifests",
        "vulnerabilitymanifest",
        "VulnerabilityManifest",
        true,
        [],
        false
    ),
    res!(
        KUBESCAPE_GROUP,
        KUBESCAPE_VERSION,
        "vulnerabilitymanifestsummaries",
        "vulnerabilitymanifestsummary",
        "VulnerabilityManifestSummary",
        true,
        [],
        false
    ),
    res!(
        KUBESCAPE_GROUP,
        KUBESCAPE_VERSION,
        "containerprofiles",
        "containerprofile",
        "ContainerProfile",
        true,
        [],
        false
    ),
    res!(
        KUBESCAPE_GROUP,
        KUBESCAPE_VERSION,
        "applicationprofiles",
        "applicationprofile",
        "ApplicationProfile",
        true,
        [],
        false
    ),
];

/// The resource with this group and plural, if served.
pub fn find(group: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

/// The resource with this group and kind.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// Group/version pairs in discovery order (core excluded).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn pods() -> &'static Resource {
    find("", "pods").expect("pods are served")
}
pub fn namespaces() -> &'static Resource {
    find("", "namespaces").expect("namespaces are served")
}
pub fn events() -> &'static Resource {
    find("", "events").expect("events are served")
}
pub fn deployments() -> &'static Resource {
    find("apps", "deployments").expect("deployments are served")
}
pub fn replicasets() -> &'static Resource {
    find("apps", "replicasets").expect("replicasets are served")
}
pub fn daemonsets() -> &'static Resource {
    find("apps", "daemonsets").expect("daemonsets are served")
}
pub fn kubescape(plural: &str) -> &'static Resource {
    find(KUBESCAPE_GROUP, plural).expect("kubescape storage resource is served")
}
