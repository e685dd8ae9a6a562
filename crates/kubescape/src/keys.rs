//! Annotation and label keys Kubescape puts on its objects (k8s-interface
//! `instanceidhandler/v1/helpers/keys.go`), and the storage resources' plurals.

pub const INSTANCE_ID: &str = "kubescape.io/instance-id";
pub const WLID: &str = "kubescape.io/wlid";
pub const IMAGE_ID: &str = "kubescape.io/image-id";
pub const IMAGE_TAG: &str = "kubescape.io/image-tag";
pub const WORKLOAD_CONTAINER_NAME: &str = "kubescape.io/workload-container-name";
pub const WORKLOAD_CONTAINER_TYPE: &str = "kubescape.io/workload-container-type";
pub const COMPLETION: &str = "kubescape.io/completion";
pub const STATUS: &str = "kubescape.io/status";
pub const SCAN_ID: &str = "kubescape.io/scan-id";
pub const CVE_MATCHING_MODE: &str = "kubescape.io/cve-matching-mode";
pub const RESOURCE_SIZE: &str = "kubescape.io/resource-size";
/// On node-agent's per-save ContainerProfiles (`<slug>-<32 hex>`) only: the container run's
/// series, which storage consolidates into the profile `<slug>`.
pub const REPORT_SERIES_ID: &str = "kubescape.io/report-series-id";
pub const REPORT_TIMESTAMP: &str = "kubescape.io/report-timestamp";
pub const PREVIOUS_REPORT_TIMESTAMP: &str = "kubescape.io/previous-report-timestamp";

pub const WORKLOAD_API_GROUP: &str = "kubescape.io/workload-api-group";
pub const WORKLOAD_API_VERSION: &str = "kubescape.io/workload-api-version";
pub const WORKLOAD_NAMESPACE: &str = "kubescape.io/workload-namespace";
pub const WORKLOAD_KIND: &str = "kubescape.io/workload-kind";
pub const WORKLOAD_NAME: &str = "kubescape.io/workload-name";
pub const WORKLOAD_RESOURCE_VERSION: &str = "kubescape.io/workload-resource-version";
pub const INSTANCE_TEMPLATE_HASH: &str = "kubescape.io/instance-template-hash";
pub const LEARNING_PERIOD: &str = "kubescape.io/learning-period";
pub const SBOM_TYPE: &str = "kubescape.io/sbom-type";
pub const CONTEXT: &str = "kubescape.io/context";

/// Pod label that overrides node-agent's maximum learning time for that pod.
pub const MAX_SNIFFING_TIME: &str = "kubescape.io/max-sniffing-time";

/// `kind` values and resource plurals of the storage group.
pub mod kinds {
    pub const VEX: &str = "OpenVulnerabilityExchangeContainer";
    pub const SBOM_FILTERED: &str = "SBOMSyftFiltered";
    pub const SBOM: &str = "SBOMSyft";
    pub const MANIFEST: &str = "VulnerabilityManifest";
    pub const SUMMARY: &str = "VulnerabilityManifestSummary";
    pub const CONTAINER_PROFILE: &str = "ContainerProfile";
    pub const APPLICATION_PROFILE: &str = "ApplicationProfile";

    pub const VEX_PLURAL: &str = "openvulnerabilityexchangecontainers";
    pub const SBOM_FILTERED_PLURAL: &str = "sbomsyftfiltereds";
    pub const SBOM_PLURAL: &str = "sbomsyfts";
    pub const MANIFEST_PLURAL: &str = "vulnerabilitymanifests";
    pub const SUMMARY_PLURAL: &str = "vulnerabilitymanifestsummaries";
    pub const CONTAINER_PROFILE_PLURAL: &str = "containerprofiles";
    pub const APPLICATION_PROFILE_PLURAL: &str = "applicationprofiles";
}
