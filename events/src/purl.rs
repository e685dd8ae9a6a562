//! The image's product identifier: the `pkg:oci` package URL vexxy writes as the VEX product and
//! that scanners compare with. Part of the public contract: enrich writes it, and clients (the
//! `vexxy` CLI's `apply`) compute the same identifier for the image they scanned.
//!
//! # How Grype and Trivy match an OpenVEX product (researched in their sources)
//!
//! Both hand the comparison to `openvex/go-vex` (`VEX.Matches` → `Component.Matches` →
//! `PurlMatches(vexPurl, scannerPurl)`), which parses both purls and requires equal type,
//! namespace and name, an equal version when the VEX names one, and **every qualifier of the VEX
//! purl present with the same (decoded) value** in the scanner's purl; the scanner may carry
//! extra qualifiers. Percent-encoding differences do not matter (both sides are parsed); the
//! qualifier *values* must be equal strings.
//!
//! * Grype (`grype/vex/openvex/implementation.go`, `productIdentifiersFromContext`) builds its
//!   image identifiers with `openvex/discovery` `oci.GenerateReferenceIdentifiers(userInput, os,
//!   arch)`: name = last path element of go-containerregistry's `RepositoryStr()`, version = the
//!   digest, and `repository_url = RegistryStr() + "/" + RepositoryStr()` (the registry for Docker
//!   Hub is go-containerregistry's default `index.docker.io`, and single-name images get
//!   `library/`). It offers two purls: one with only `repository_url`, one adding `tag`, `os`,
//!   `arch`. So `nginx@sha256:…` is `pkg:oci/nginx@sha256:…?repository_url=index.docker.io/library/nginx`.
//! * Trivy (`pkg/purl/purl.go` `parseOCI`, used for the image component that `pkg/vex/openvex.go`
//!   passes as the product) uses the image's first RepoDigest: name = lower-cased last path
//!   element, version = digest, qualifiers `repository_url = digest.Repository.Name()` (again
//!   `index.docker.io/library/nginx` for Docker Hub) and `arch`.
//!
//! Hence the product purl carries **only** `repository_url` (a VEX qualifier the scanner lacks
//! would defeat the match; `arch`/`tag` are left out), with Docker Hub spelled `index.docker.io`.
//! Kubescape's own product `@id` (`repository_url=docker.io%2Flibrary`, without the image name)
//! matches neither tool, which is why vexxy replaces it.
//!
//! Confidence: high for Docker Hub, ghcr.io and other registries when the user scans the same
//! `repository@digest` vexxy analysed. Limits: a scan of a *tag* resolves to the index digest in
//! Grype but to the platform manifest digest in Trivy (RepoDigests), so the digest in the VEX
//! must be the one the user scans; Grype's `strings.ReplaceAll` of the image name in the path
//! (an image whose name also appears earlier in its path, like `nginx/nginx`) produces a
//! different `repository_url` than Trivy, and vexxy follows Trivy/the purl spec there.

use crate::request::split_image_reference;

/// The registry Docker Hub images are matched under (go-containerregistry's default registry).
pub const DOCKER_HUB_REGISTRY: &str = "index.docker.io";

const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// The `pkg:oci` purl of `repository@digest`.
///
/// `repository` is a repository (`docker.io/library/nginx`, `ghcr.io/owner/repo`,
/// `registry.local:5000/team/app`, `nginx`) or a whole reference, whose tag and digest are
/// ignored (`digest` wins); `digest` is `sha256:<hex>`. Docker Hub is normalised to
/// `index.docker.io` and a single-name Docker Hub repository gets `library/`.
/// Encoding follows the purl spec's canonical form: the version's `:` becomes `%3A`, the
/// `repository_url` value keeps `/` and `:` (as in the spec's `pkg:oci` examples).
pub fn image_purl(repository: &str, digest: &str) -> String {
    let repository_url = normalized_repository(repository);
    let last = repository_url
        .rsplit('/')
        .next()
        .unwrap_or(&repository_url)
        .to_lowercase();
    format!(
        "pkg:oci/{}@{}?repository_url={}",
        encode(&last, b""),
        encode(digest, b""),
        encode(&repository_url, b"/:")
    )
}

/// `registry/path` with Docker Hub spelled the way Grype and Trivy spell it; a tag or digest in
/// `repository` is dropped.
pub fn normalized_repository(repository: &str) -> String {
    let parts = split_image_reference(repository);
    let (registry, path) = (parts.registry.unwrap_or("docker.io"), parts.path);
    if DOCKER_HUB_ALIASES.contains(&registry.to_ascii_lowercase().as_str()) {
        let path = if path.contains('/') {
            path.to_string()
        } else {
            format!("library/{path}")
        };
        format!("{DOCKER_HUB_REGISTRY}/{path}")
    } else {
        format!("{registry}/{path}")
    }
}

/// Percent-encodes everything except unreserved characters and `keep`.
fn encode(value: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_official_image_uses_index_docker_io_and_library() {
        assert_eq!(
            image_purl("docker.io/library/nginx", DIGEST),
            format!(
                "pkg:oci/nginx@sha256%3A{}?repository_url=index.docker.io/library/nginx",
                &DIGEST[7..]
            )
        );
        assert_eq!(
            image_purl("nginx", DIGEST),
            image_purl("docker.io/library/nginx", DIGEST)
        );
        assert_eq!(
            image_purl("registry-1.docker.io/library/nginx", DIGEST),
            image_purl("nginx", DIGEST)
        );
    }

    #[test]
    fn docker_hub_user_image_keeps_its_namespace() {
        assert_eq!(
            image_purl("docker.io/bitnami/redis", DIGEST),
            format!(
                "pkg:oci/redis@sha256%3A{}?repository_url=index.docker.io/bitnami/redis",
                &DIGEST[7..]
            )
        );
    }

    #[test]
    fn ghcr_image_keeps_registry_and_path() {
        assert_eq!(
            image_purl("ghcr.io/Owner/Repo", DIGEST),
            format!(
                "pkg:oci/repo@sha256%3A{}?repository_url=ghcr.io/Owner/Repo",
                &DIGEST[7..]
            )
        );
    }

    #[test]
    fn registry_with_port_keeps_the_port_unencoded() {
        assert_eq!(
            image_purl("registry.local:5000/team/app", DIGEST),
            format!(
                "pkg:oci/app@sha256%3A{}?repository_url=registry.local:5000/team/app",
                &DIGEST[7..]
            )
        );
        assert_eq!(
            normalized_repository("localhost:5000/app"),
            "localhost:5000/app"
        );
        assert_eq!(
            image_purl("localhost:5000/app:1.2@sha256:abc", DIGEST),
            image_purl("localhost:5000/app", DIGEST)
        );
    }

    #[test]
    fn unusual_characters_are_percent_encoded() {
        assert_eq!(encode("a b+c", b""), "a%20b%2Bc");
    }
}
