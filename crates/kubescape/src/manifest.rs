//! VulnerabilityManifest: `spec.metadata` + `spec.payload` (a Grype JSON document).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ParseError;
use crate::keys::kinds;
use crate::object::{ObjectInfo, null_as_default, typed};
use crate::sbom::{ReportMeta, ToolMeta};

const KIND: &str = kinds::MANIFEST;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestMeta {
    #[serde(
        rename = "withRelevancy",
        default,
        deserialize_with = "null_as_default"
    )]
    pub with_relevancy: bool,
    #[serde(default)]
    pub tool: ToolMeta,
    #[serde(default)]
    pub report: ReportMeta,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrypeDocument {
    #[serde(default, deserialize_with = "null_as_default")]
    pub matches: Vec<GrypeMatch>,
    #[serde(
        rename = "ignoredMatches",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ignored_matches: Option<Vec<Value>>,
    #[serde(default)]
    pub source: Value,
    #[serde(default)]
    pub distro: Value,
    #[serde(default)]
    pub descriptor: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrypeMatch {
    pub vulnerability: GrypeVulnerability,
    #[serde(
        rename = "relatedVulnerabilities",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub related_vulnerabilities: Option<Vec<Value>>,
    #[serde(
        rename = "matchDetails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub match_details: Option<Vec<Value>>,
    pub artifact: GrypeArtifact,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrypeVulnerability {
    pub id: String,
    #[serde(rename = "dataSource", default, deserialize_with = "null_as_default")]
    pub data_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<GrypeFix>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrypeFix {
    #[serde(default, deserialize_with = "null_as_default")]
    pub versions: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub state: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrypeArtifact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub package_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub purl: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl GrypeMatch {
    /// `fixed` with known versions, as kubevuln's `buildActionStatement` tests it.
    pub fn fix_versions(&self) -> Option<&[String]> {
        self.vulnerability
            .fix
            .as_ref()
            .filter(|f| f.state == "fixed" && !f.versions.is_empty())
            .map(|f| f.versions.as_slice())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KubescapeManifest {
    pub object: ObjectInfo,
    pub metadata: ManifestMeta,
    pub payload: GrypeDocument,
}

/// Reads a VulnerabilityManifest.
pub fn read_manifest(object: &Value) -> Result<KubescapeManifest, ParseError> {
    // One reader: the one for stored bytes, given this object's text.
    crate::from_bytes::read_parsed(object, KIND, crate::from_bytes::read_manifest_bytes)
}

/// Reads a bare Grype JSON report.
pub fn read_grype_document(document: &Value) -> Result<GrypeDocument, ParseError> {
    typed(document, "Grype document", "", "")
}
