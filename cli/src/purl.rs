//! Package URLs, parsed and compared the way `openvex/go-vex` `PurlMatches` does (Grype and Trivy
//! both delegate to it): equal type, namespace and name; an equal version when the VEX purl names
//! one; and every qualifier of the VEX purl present with the same decoded value in the scanner's
//! purl (the scanner may carry more). Percent-encoding differences do not matter.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purl {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub version: Option<String>,
    pub qualifiers: BTreeMap<String, String>,
}

impl Purl {
    /// `None` when `text` is not a `pkg:` URL.
    pub fn parse(text: &str) -> Option<Purl> {
        let rest = text.trim().strip_prefix("pkg:")?.trim_start_matches('/');
        let rest = rest.split('#').next().unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (kind, path) = path.split_once('/')?;
        let (path, version) = match path.rsplit_once('@') {
            Some((path, version)) => (path, Some(decode(version))),
            None => (path, None),
        };
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        let (name, namespace) = segments.split_last()?;
        let qualifiers = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (key.to_ascii_lowercase(), decode(value)))
            .collect();
        Some(Purl {
            kind: kind.to_ascii_lowercase(),
            namespace: namespace.join("/"),
            name: name.clone(),
            version: version.filter(|v| !v.is_empty()),
            qualifiers,
        })
    }

    /// Whether this (VEX) purl matches `scanned` (the scanner's purl).
    pub fn matches(&self, scanned: &Purl) -> bool {
        self.kind == scanned.kind
            && self.namespace == scanned.namespace
            && self.name == scanned.name
            && self
                .version
                .as_ref()
                .is_none_or(|v| scanned.version.as_ref() == Some(v))
            && self
                .qualifiers
                .iter()
                .all(|(key, value)| scanned.qualifiers.get(key) == Some(value))
    }
}

/// Whether the VEX identifier `vex` (a purl) matches the scanner's purl `scanned`; identifiers
/// that are not purls never match.
pub fn matches(vex: &str, scanned: &str) -> bool {
    match (Purl::parse(vex), Purl::parse(scanned)) {
        (Some(vex), Some(scanned)) => vex.matches(&scanned),
        _ => false,
    }
}

/// The `pkg:oci` purl Grype and Trivy give an image — the same identifier enrich writes as the
/// VEX product ([`vexxy_events::purl::image_purl`]). `reference` is `repo[:tag][@digest]`;
/// `digest` wins.
pub fn image_purl(reference: &str, digest: &str) -> String {
    vexxy_events::purl::image_purl(strip_tag_and_digest(reference), digest)
}

/// `repo:tag@sha256:...` → `repo` (a `:port` in the registry is kept).
pub fn strip_tag_and_digest(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
}

/// The digest in `repo@sha256:...`, if any.
pub fn digest_of(reference: &str) -> Option<&str> {
    reference
        .split_once('@')
        .map(|(_, digest)| digest)
        .filter(|d| d.starts_with("sha256:"))
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPINE: &str = "sha256:e2e16842c9b54d985bf1ef9242a313f36b856181f188de21313820e177002501";

    #[test]
    fn encoding_differences_do_not_matter_but_values_do() {
        let scanned = format!(
            "pkg:oci/alpine@{}?arch=amd64&repository_url=index.docker.io%2Flibrary%2Falpine",
            ALPINE.replace(':', "%3A")
        );
        assert!(matches(&image_purl("alpine", ALPINE), &scanned));
        assert!(matches(&format!("pkg:oci/alpine@{ALPINE}"), &scanned));
        // A qualifier the scanner lacks defeats the match, as does a different value.
        assert!(!matches(
            &format!("pkg:oci/alpine@{ALPINE}?tag=3.17"),
            &scanned
        ));
        assert!(!matches(
            &format!("pkg:oci/alpine@{ALPINE}?repository_url=docker.io/library"),
            &scanned
        ));
        assert!(!matches("not a purl", &scanned));
    }

    #[test]
    fn a_versionless_vex_purl_matches_any_version() {
        assert!(matches(
            "pkg:apk/alpine/libssl3",
            "pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64&distro=alpine-3.17.2"
        ));
        assert!(!matches(
            "pkg:apk/alpine/libssl3@3.0.9-r0",
            "pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64"
        ));
        assert!(!matches(
            "pkg:apk/alpine/libcrypto3@3.0.8-r0",
            "pkg:apk/alpine/libssl3@3.0.8-r0"
        ));
    }

    #[test]
    fn image_references_normalise_like_the_scanners() {
        assert_eq!(
            image_purl("docker.io/library/alpine:3.17@sha256:abc", "sha256:abc"),
            "pkg:oci/alpine@sha256%3Aabc?repository_url=index.docker.io/library/alpine"
        );
        assert_eq!(
            image_purl("localhost:55844/alpine:3.10", "sha256:abc"),
            "pkg:oci/alpine@sha256%3Aabc?repository_url=localhost:55844/alpine"
        );
        assert_eq!(
            strip_tag_and_digest("localhost:5000/app"),
            "localhost:5000/app"
        );
        assert_eq!(digest_of("alpine@sha256:abc"), Some("sha256:abc"));
    }
}
