//! Image references: normalisation (as containerd, kubevuln and node-agent do it) and the
//! deterministic digest an emulated registry "resolves" a tag to.

use sha2::{Digest, Sha256};

/// `nginx:1.14.2` -> `docker.io/library/nginx:1.14.2`; a missing tag becomes `latest` (unless a
/// digest is given).
pub fn normalize(image: &str) -> String {
    let (name_part, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let first = name_part.split('/').next().unwrap_or("");
    let has_domain = name_part.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        name_part.to_string()
    } else if name_part.contains('/') {
        format!("docker.io/{name_part}")
    } else {
        format!("docker.io/library/{name_part}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && digest.is_none() {
        full.push_str(":latest");
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None => full,
    }
}

/// The repository of a normalised reference (no tag, no digest).
pub fn repository(image: &str) -> String {
    let n = normalize(image);
    let no_digest = n.split('@').next().unwrap_or("").to_string();
    match no_digest.rsplit_once('/') {
        Some((prefix, last)) => format!("{prefix}/{}", last.split(':').next().unwrap_or(last)),
        None => no_digest,
    }
}

/// `sha256:<hex>`: the digest in the reference, or a stable hash of the normalised reference.
pub fn digest(image: &str) -> String {
    if let Some((_, d)) = image.split_once('@')
        && d.starts_with("sha256:")
    {
        return d.to_string();
    }
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(normalize(image).as_bytes()))
    )
}

/// The `imageID` of a container status: `<repository>@sha256:<hex>`.
pub fn image_id(image: &str) -> String {
    format!("{}@{}", repository(image), digest(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize("nginx:1.14.2"), "docker.io/library/nginx:1.14.2");
        assert_eq!(normalize("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(normalize("ghcr.io/a/b:1"), "ghcr.io/a/b:1");
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(repository("nginx:1.14.2"), "docker.io/library/nginx");
        assert_eq!(repository("localhost:5000/x:1"), "localhost:5000/x");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest(&format!("nginx@{d}")), d);
        assert_eq!(
            image_id(&format!("nginx@{d}")),
            format!("docker.io/library/nginx@{d}")
        );
        assert_eq!(digest("nginx:1"), digest("docker.io/library/nginx:1"));
    }
}
