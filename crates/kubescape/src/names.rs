//! Kubescape object names: instance IDs and instance slugs (k8s-interface `names/slugs.go`,
//! `instanceidhandler/v1`).

use sha2::{Digest, Sha256};

/// A Kubernetes DNS-1123 label (namespace names, among others): 1–63 lowercase letters, digits
/// and `-`, starting and ending with a letter or digit. Used to validate configured namespaces.
pub fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// What [`is_dns_label`] accepts, for configuration errors: "expected …".
pub const DNS_LABEL_RULE: &str =
    "a namespace name (lowercase letters, digits and '-', at most 63 characters)";

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
pub fn instance_id(
    owner: &InstanceOwner<'_>,
    container_type: ContainerType,
    container: &str,
) -> String {
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
pub fn slug_for(
    owner: &InstanceOwner<'_>,
    container_type: ContainerType,
    container: &str,
) -> String {
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

/// The workload ID kubevuln and node-agent put in `kubescape.io/wlid`:
/// `wlid://cluster-<cluster>/namespace-<ns>/<kind>-<name>` with the kind lower-cased
/// (top-level workload, e.g. `deployment-nginx`).
pub fn wlid(cluster: &str, namespace: &str, workload_kind: &str, workload_name: &str) -> String {
    format!(
        "wlid://cluster-{cluster}/namespace-{namespace}/{}-{workload_name}",
        workload_kind.to_lowercase()
    )
}

/// Go's `url.PathEscape`: keeps `A-Z a-z 0-9 - _ . ~` and `$ & + : = @`, percent-encodes the
/// rest (upper-case hex). kubevuln uses it for product and statement IRIs.
pub fn go_path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'~' | b'$' | b'&' | b'+' | b':' | b'=' | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The product `@id` kubevuln writes for an image (`createProductStructForImageAndPackage`):
/// `pkg:oci/<last path element>?repository_url=<the rest>`, both path-escaped, from the
/// `kubescape.io/image-id` value (e.g. `docker.io/library/nginx@sha256:…` →
/// `pkg:oci/nginx@sha256:…?repository_url=docker.io%2Flibrary`).
pub fn oci_product_id(image_id: &str) -> String {
    let image = image_id.strip_prefix("docker://").unwrap_or(image_id);
    let (repo, name) = match image.rsplit_once('/') {
        Some((repo, name)) => (repo, name),
        None => ("", image),
    };
    if repo.is_empty() {
        format!("pkg:oci/{}", go_path_escape(name))
    } else {
        format!(
            "pkg:oci/{}?repository_url={}",
            go_path_escape(name),
            go_path_escape(repo)
        )
    }
}

/// The statement `@id` kubevuln main writes: `https://kubescape.io/vex/statement/<cve>/<purl>`.
pub fn statement_id(vulnerability_id: &str, package_purl: &str) -> String {
    format!(
        "https://kubescape.io/vex/statement/{}/{}",
        go_path_escape(vulnerability_id),
        go_path_escape(package_purl)
    )
}

/// Normalises an image reference the way kubevuln and node-agent do before naming objects
/// (`nginx:1.14.2` → `docker.io/library/nginx:1.14.2`): Docker Hub names get `docker.io/` and
/// single-element names `library/`. A reference with neither tag nor digest gets `:latest`.
pub fn normalize_image_reference(image: &str) -> String {
    let image = image.strip_prefix("docker://").unwrap_or(image);
    let (first, rest) = image.split_once('/').unwrap_or(("", image));
    let is_registry =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut normalized = match (first.is_empty(), is_registry) {
        (true, _) => format!("docker.io/library/{rest}"),
        (false, true) => image.to_string(),
        (false, false) => format!("docker.io/{image}"),
    };
    if normalized.starts_with("index.docker.io/") {
        normalized = normalized.replacen("index.docker.io/", "docker.io/", 1);
    }
    let last = normalized.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        normalized.push_str(":latest");
    }
    normalized
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
        assert_eq!(
            instance_slug(id, "Pod", "reverse-proxy", "nginx"),
            "pod-reverse-proxy-nginx-2f07-68bd"
        );
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

    #[test]
    fn product_and_statement_ids_escape_like_go() {
        assert_eq!(
            oci_product_id("docker.io/library/nginx@sha256:abc"),
            "pkg:oci/nginx@sha256:abc?repository_url=docker.io%2Flibrary"
        );
        assert_eq!(
            oci_product_id("nginx@sha256:abc"),
            "pkg:oci/nginx@sha256:abc"
        );
        assert_eq!(
            statement_id(
                "CVE-2024-1",
                "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12"
            ),
            "https://kubescape.io/vex/statement/CVE-2024-1/pkg:deb%2Fdebian%2Flibc6@2.36-9%3Farch=amd64&distro=debian-12"
        );
        assert_eq!(go_path_escape("a b;c,d"), "a%20b%3Bc%2Cd");
    }

    #[test]
    fn images_normalise_to_docker_hub_names() {
        assert_eq!(
            normalize_image_reference("nginx:1.14.2"),
            "docker.io/library/nginx:1.14.2"
        );
        assert_eq!(
            normalize_image_reference("bitnami/redis@sha256:ab"),
            "docker.io/bitnami/redis@sha256:ab"
        );
        assert_eq!(
            normalize_image_reference("ghcr.io/o/app:v1"),
            "ghcr.io/o/app:v1"
        );
        assert_eq!(
            normalize_image_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_image_reference("alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            normalize_image_reference("index.docker.io/library/alpine:3"),
            "docker.io/library/alpine:3"
        );
    }

    #[test]
    fn wlid_uses_the_top_level_workload() {
        assert_eq!(
            wlid("kind-kind", "default", "Deployment", "nginx"),
            "wlid://cluster-kind-kind/namespace-default/deployment-nginx"
        );
    }
}
