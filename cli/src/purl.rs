//! Package URLs, parsed and compared the way `openvex/go-vex` `PurlMatches` does (Grype and Trivy
//! both delegate to it): equal type, namespace and name; an equal version when the VEX purl names
//! one; and every qualifier of the VEX purl present with the same decoded value in the scanner's
//! purl (the scanner may carry more). Percent-encoding differences do not matter. Parsing is the
//! `packageurl` crate's, which like go-vex's `packageurl-go` applies the spec's per-type case
//! rules to both sides.

use std::collections::BTreeMap;
use std::str::FromStr;

use packageurl::PackageUrl;
use vexxy_events::request::split_image_reference;

pub use vexxy_events::purl::image_purl;

/// The parts of a purl that `PurlMatches` compares, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purl {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub version: Option<String>,
    pub qualifiers: BTreeMap<String, String>,
}

impl Purl {
    /// `None` when `text` is not a valid `pkg:` URL.
    pub fn parse(text: &str) -> Option<Purl> {
        let parsed = PackageUrl::from_str(text.trim()).ok()?;
        Some(Purl {
            kind: parsed.ty().to_string(),
            namespace: parsed.namespace().unwrap_or_default().to_string(),
            name: parsed.name().to_string(),
            version: parsed
                .version()
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            qualifiers: parsed
                .qualifiers()
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
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

/// The `sha256:` digest in `repo[:tag]@sha256:...`, if any.
pub fn digest_of(reference: &str) -> Option<&str> {
    split_image_reference(reference)
        .digest
        .filter(|d| d.starts_with("sha256:"))
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
        assert_eq!(digest_of("alpine@sha256:abc"), Some("sha256:abc"));
    }
}
