//! Kubescape object names: instance IDs and instance slugs (k8s-interface `names/slugs.go`,
//! `instanceidhandler/v1`).

use sha2::{Digest, Sha256};

/// The API group/version of Kubescape's storage aggregated API server.
pub const STORAGE_GROUP: &str = "spdx.softwarecomposition.kubescape.io";
pub const STORAGE_VERSION: &str = "v1beta1";

/// Which list of the pod spec a container is in; part of the instance ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerType {
    Container,
    InitContainer,
    EphemeralContainer,
}

impl ContainerType {
    fn key(self) -> &'static str {
        match self {
            ContainerType::Container => "containerName",
            ContainerType::InitContainer => "initContainerName",
            ContainerType::EphemeralContainer => "ephemeralContainerName",
        }
    }
}

/// The owner of a pod as Kubescape sees it: the pod's first ownerReference
/// (for a Deployment's pod: `apps/v1`, `ReplicaSet`, `<deployment>-<pod-template-hash>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceOwner<'a> {
    pub api_version: &'a str,
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

/// `apiVersion-<av>/namespace-<ns>/kind-<Kind>/name-<name>/<type>Name-<container>`
pub fn instance_id(owner: &InstanceOwner<'_>, container_type: ContainerType, container: &str) -> String {
    format!(
        "apiVersion-{}/namespace-{}/kind-{}/name-{}/{}-{}",
        owner.api_version,
        owner.namespace,
        owner.kind,
        owner.name,
        container_type.key(),
        container
    )
}

/// The instance slug (`GetSlug(false)`): lower(`<kind>-<name>-<container>-<h[0:4]>-<h[60:64]>`)
/// with `h = hex(sha256(instance_id))`, truncated to 253 characters keeping the hash suffix.
/// It names the ContainerProfile, the relevancy VEX, the filtered SBOM and the filtered
/// VulnerabilityManifest of that container instance.
pub fn instance_slug(instance_id: &str, kind: &str, name: &str, container: &str) -> String {
    let hash = hex::encode(Sha256::digest(instance_id.as_bytes()));
    let suffix = format!("-{}-{}", &hash[0..4], &hash[60..64]);
    let mut prefix = format!("{kind}-{name}-{container}").to_lowercase();
    let max_prefix = 253 - suffix.len();
    if prefix.len() > max_prefix {
        prefix.truncate(max_prefix);
    }
    prefix + &suffix
}

/// The instance slug for a container of a pod owned by `owner`.
pub fn slug_for(owner: &InstanceOwner<'_>, container_type: ContainerType, container: &str) -> String {
    let id = instance_id(owner, container_type, container);
    instance_slug(&id, owner.kind, owner.name, container)
}

/// The image slug (`names.ImageInfoToSlug`): the normalised image reference with `://`, `:`,
/// `/`, `_`, `@` replaced by `-`, lower-cased, then `-` and the last 6 characters of the image
/// hash. Names the unfiltered SBOM and VulnerabilityManifest (and main's image-wide VEX).
pub fn image_slug(normalized_image: &str, image_hash: &str) -> String {
    let mut slug = normalized_image.replace("://", "-");
    for c in [':', '/', '_', '@'] {
        slug = slug.replace(c, "-");
    }
    let tail = &image_hash[image_hash.len().saturating_sub(6)..];
    format!("{}-{}", slug.to_lowercase(), tail)
}

/// The VulnerabilityManifestSummary name: `<kind>-<name>-<container>` of the top-level workload.
pub fn summary_name(workload_kind: &str, workload_name: &str, container: &str) -> String {
    format!("{workload_kind}-{workload_name}-{container}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_real_storage_pair() {
        // kubescape/storage pkg/registry/file/testdata/p1.json (shared/fixtures/kubescape/README.md)
        let owner = InstanceOwner {
            api_version: "apps/v1",
            namespace: "kube-system",
            kind: "ReplicaSet",
            name: "coredns-5d78c9869d",
        };
        assert_eq!(
            instance_id(&owner, ContainerType::Container, "coredns"),
            "apiVersion-apps/v1/namespace-kube-system/kind-ReplicaSet/name-coredns-5d78c9869d/containerName-coredns"
        );
        assert_eq!(
            slug_for(&owner, ContainerType::Container, "coredns"),
            "replicaset-coredns-5d78c9869d-coredns-185f-129c"
        );
    }

    #[test]
    fn reproduces_the_k8s_interface_pod_example() {
        let id = "apiVersion-v1/namespace-default/kind-Pod/name-reverse-proxy/containerName-nginx";
        assert_eq!(instance_slug(id, "Pod", "reverse-proxy", "nginx"), "pod-reverse-proxy-nginx-2f07-68bd");
    }

    #[test]
    fn long_names_keep_the_hash_suffix() {
        let name = "a".repeat(300);
        let slug = instance_slug("x", "ReplicaSet", &name, "c");
        assert_eq!(slug.len(), 253);
        let hash = hex::encode(Sha256::digest(b"x"));
        assert!(slug.ends_with(&format!("-{}-{}", &hash[0..4], &hash[60..64])));
    }

    #[test]
    fn image_slug_matches_kubevuln_naming() {
        assert_eq!(
            image_slug("docker.io/library/nginx:1.14.2", "sha256:0123456789abcdef"),
            "docker.io-library-nginx-1.14.2-abcdef"
        );
    }
}
