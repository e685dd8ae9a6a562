//! Renders the image's packages as a CycloneDX 1.6 SBOM (`sbom.cdx.json`), the document the
//! CycloneDX VEX points into.
//!
//! Trivy applies a CycloneDX VEX only through BOM-Links (`urn:cdx:<serial>/<version>#<bom-ref>`)
//! into the SBOM it scans, so vexxy publishes that SBOM: `trivy sbom sbom.cdx.json --vex
//! vex.cdx.json`. Packages come from Kubescape's SBOM of the image (Syft), plus any package a
//! statement names that the SBOM lacks, so every link resolves. Each package's bom-ref is its
//! purl. Trivy looks up distro advisories by *source* package (openssl, not libssl3) and reads
//! it from its own properties (`aquasecurity:trivy:SrcName`, `SrcVersion`), the de facto
//! vocabulary of CycloneDX SBOMs of OS packages; without them a Trivy scan of the SBOM misses
//! every vulnerability filed under a source package.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use vexxy_kubescape::SyftDocument;

use crate::cyclonedx::{Bom, Property, Tool, Tools};
use crate::purl;

/// One package of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomPackage {
    pub purl: String,
    pub name: String,
    pub version: String,
    /// The distro source package, when it differs from `name` (dpkg `source`, apk `originPackage`).
    pub source_name: Option<String>,
    /// The source package's version, when it differs from `version`.
    pub source_version: Option<String>,
}

/// What the SBOM lists: the operating system and the packages, by purl.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagePackages {
    /// (`alpine`, `3.17.2`): Syft's `distro.id` and `versionID`.
    pub os: Option<(String, String)>,
    pub packages: BTreeMap<String, SbomPackage>,
}

impl ImagePackages {
    /// The packages of a Syft document that have a purl.
    pub fn from_syft(syft: &SyftDocument) -> ImagePackages {
        let os = match (text(&syft.distro["id"]), text(&syft.distro["versionID"])) {
            (Some(id), Some(version)) => Some((id.to_string(), version.to_string())),
            _ => None,
        };
        let mut packages = BTreeMap::new();
        for artifact in &syft.artifacts {
            let Some(purl) = artifact.purl.as_deref().filter(|p| !p.is_empty()) else {
                continue;
            };
            let metadata = artifact.metadata.as_ref().unwrap_or(&Value::Null);
            let (source_name, source_version) = source_of(metadata);
            let package = SbomPackage {
                purl: purl.to_string(),
                name: artifact.name.clone(),
                version: artifact.version.clone(),
                source_name: source_name.filter(|s| *s != artifact.name),
                source_version: source_version.filter(|v| *v != artifact.version),
            };
            packages.entry(package.purl.clone()).or_insert(package);
        }
        ImagePackages { os, packages }
    }

    /// Adds a package named only by a purl (a statement's subcomponent the SBOM lacks): name and
    /// version from the purl, the source from its `upstream` qualifier, the OS from `distro`.
    pub fn add_purl(&mut self, purl: &str) {
        if self.packages.contains_key(purl) {
            return;
        }
        if self.os.is_none()
            && let Some((id, version)) = purl::qualifier(purl, "distro")
                .as_deref()
                .and_then(|d| d.split_once('-'))
        {
            self.os = Some((id.to_string(), version.to_string()));
        }
        let (name, version) = purl::name_version(purl);
        let (source_name, source_version) = match purl::qualifier(purl, "upstream") {
            Some(upstream) => match upstream.split_once('@') {
                Some((n, v)) => (Some(n.to_string()), Some(v.to_string())),
                None => (Some(upstream), None),
            },
            None => (None, None),
        };
        self.packages.insert(
            purl.to_string(),
            SbomPackage {
                purl: purl.to_string(),
                version: version.unwrap_or_default(),
                source_name: source_name.filter(|s| *s != name),
                source_version,
                name,
            },
        );
    }
}

fn text(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

/// (source name, source version) of a Syft package's metadata: dpkg's `source` (which may read
/// `glibc (2.36-9)` when the versions differ) and `sourceVersion`, apk's `originPackage`.
fn source_of(metadata: &Value) -> (Option<String>, Option<String>) {
    if let Some(source) = text(&metadata["source"]) {
        let (name, inline_version) = match source.split_once(" (") {
            Some((name, rest)) => (name, Some(rest.trim_end_matches(')').to_string())),
            None => (source, None),
        };
        let version = text(&metadata["sourceVersion"])
            .map(str::to_string)
            .or(inline_version);
        return (Some(name.to_string()), version);
    }
    (text(&metadata["originPackage"]).map(str::to_string), None)
}

/// The image the SBOM describes.
#[derive(Debug, Clone)]
pub struct SbomImage<'a> {
    /// The image purl (also the VEX product); the root component's bom-ref.
    pub purl: &'a str,
    pub repository: &'a str,
    pub digest: &'a str,
}

pub const OS_BOM_REF: &str = "vexxy:os";

/// Serialises the SBOM: the image as `metadata.component`, the OS and the packages as
/// components, and the dependency graph image → OS → packages that Trivy walks.
pub fn render(
    serial_number: &str,
    timestamp: &str,
    image: &SbomImage<'_>,
    packages: &ImagePackages,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut components = Vec::with_capacity(packages.packages.len() + 1);
    if let Some((name, version)) = &packages.os {
        components.push(Component {
            kind: "operating-system",
            bom_ref: OS_BOM_REF,
            name,
            version,
            purl: None,
            properties: Vec::new(),
        });
    }
    for package in packages.packages.values() {
        let mut properties = Vec::new();
        if let Some(source) = &package.source_name {
            properties.push(Property {
                name: "aquasecurity:trivy:SrcName",
                value: source,
            });
        }
        if let Some(version) = &package.source_version {
            properties.push(Property {
                name: "aquasecurity:trivy:SrcVersion",
                value: version,
            });
        }
        components.push(Component {
            kind: "library",
            bom_ref: &package.purl,
            name: &package.name,
            version: &package.version,
            purl: Some(&package.purl),
            properties,
        });
    }
    let package_refs: Vec<&str> = packages.packages.keys().map(String::as_str).collect();
    let mut dependencies = Vec::new();
    match &packages.os {
        Some(_) => {
            dependencies.push(Dependency {
                reference: image.purl,
                depends_on: vec![OS_BOM_REF],
            });
            dependencies.push(Dependency {
                reference: OS_BOM_REF,
                depends_on: package_refs,
            });
        }
        None => dependencies.push(Dependency {
            reference: image.purl,
            depends_on: package_refs,
        }),
    }
    let document = Bom::new(
        serial_number,
        Metadata {
            timestamp,
            tools: Tools {
                components: [Tool {
                    kind: "application",
                    name: "vexxy",
                    version: Some(env!("CARGO_PKG_VERSION")),
                    description: None,
                }],
            },
            component: Component {
                kind: "container",
                bom_ref: image.purl,
                name: image.repository,
                version: image.digest,
                purl: Some(image.purl),
                properties: Vec::new(),
            },
        },
        SbomBody {
            components,
            dependencies,
        },
    );
    let mut out = Vec::with_capacity(1024 + packages.packages.len() * 400);
    serde_json::to_writer_pretty(&mut out, &document)?;
    out.push(b'\n');
    Ok(out)
}

#[derive(Serialize)]
struct SbomBody<'a> {
    components: Vec<Component<'a>>,
    dependencies: Vec<Dependency<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    timestamp: &'a str,
    tools: Tools<[Tool<'static>; 1]>,
    component: Component<'a>,
}

#[derive(Serialize)]
struct Component<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: &'a str,
    name: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
    depends_on: Vec<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_and_apk_sources_are_read() {
        let dpkg = serde_json::json!({"source": "glibc (2.36-9)", "version": "2.36-9+b1"});
        assert_eq!(
            source_of(&dpkg),
            (Some("glibc".into()), Some("2.36-9".into()))
        );
        let dpkg = serde_json::json!({"source": "shadow", "sourceVersion": "1:4.13+dfsg1-1"});
        assert_eq!(
            source_of(&dpkg),
            (Some("shadow".into()), Some("1:4.13+dfsg1-1".into()))
        );
        let apk = serde_json::json!({"originPackage": "openssl"});
        assert_eq!(source_of(&apk), (Some("openssl".into()), None));
    }

    #[test]
    fn a_purl_alone_gives_a_package_and_the_os() {
        let mut packages = ImagePackages::default();
        packages.add_purl(
            "pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64&distro=alpine-3.17.2&upstream=openssl",
        );
        assert_eq!(packages.os, Some(("alpine".into(), "3.17.2".into())));
        let package = packages.packages.values().next().unwrap();
        assert_eq!(
            (package.name.as_str(), package.version.as_str()),
            ("libssl3", "3.0.8-r0")
        );
        assert_eq!(package.source_name.as_deref(), Some("openssl"));
    }
}
