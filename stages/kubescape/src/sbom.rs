//! SBOMSyftFiltered / SBOMSyft: `spec.metadata` + `spec.syft` (Syft JSON, not CycloneDX).
//! Every field vexxy does not interpret is kept in `extra`, so re-serialising the document gives
//! back what Kubescape wrote.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ParseError;
use crate::keys::{self, kinds};
use crate::object::{ObjectInfo, null_as_default, read_envelope, spec_of, typed};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolMeta {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    #[serde(
        rename = "databaseVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub database_version: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportMeta {
    #[serde(rename = "createdAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SbomMeta {
    #[serde(default)]
    pub tool: ToolMeta,
    #[serde(default)]
    pub report: ReportMeta,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A Syft JSON document (`v1beta1/syfttypes.go SyftDocument`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyftDocument {
    #[serde(default, deserialize_with = "null_as_default")]
    pub artifacts: Vec<SyftArtifact>,
    #[serde(
        rename = "artifactRelationships",
        default,
        deserialize_with = "null_as_default"
    )]
    pub artifact_relationships: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<Value>>,
    #[serde(default)]
    pub source: Value,
    #[serde(default)]
    pub distro: Value,
    #[serde(default)]
    pub descriptor: Value,
    #[serde(default)]
    pub schema: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One package. `from_bytes` checks stored SBOMs against a copy of this shape that keeps nothing
/// (`ArtifactShape`): a field added or retyped here must be changed there too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyftArtifact {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub package_type: String,
    #[serde(rename = "foundBy", default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub locations: Vec<SyftLocation>,
    /// Objects in current Syft, plain strings in older documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `{cpe, source}` objects in current Syft, plain strings in older documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(
        rename = "metadataType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where a package was found. Like [`SyftArtifact`], mirrored by `from_bytes`'s `LocationShape`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyftLocation {
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: String,
    #[serde(rename = "layerID", default, skip_serializing_if = "Option::is_none")]
    pub layer_id: Option<String>,
    #[serde(
        rename = "accessPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub access_path: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SyftArtifact {
    /// Files the package owns: its `locations` and, for OS packages, `metadata.files[].path`.
    /// These are the paths kubevuln matches against the ContainerProfile's execs and opens.
    pub fn file_paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.locations.iter().map(|l| l.path.as_str()).collect();
        if let Some(files) = self
            .metadata
            .as_ref()
            .and_then(|m| m.get("files"))
            .and_then(Value::as_array)
        {
            paths.extend(
                files
                    .iter()
                    .filter_map(|f| f.get("path").and_then(Value::as_str)),
            );
        }
        paths
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SbomKind {
    /// SBOMSyftFiltered: only the packages whose files were loaded (relevancy).
    Filtered,
    /// SBOMSyft: every package in the image.
    Full,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubescapeSbom {
    pub object: ObjectInfo,
    pub kind: SbomKind,
    pub metadata: SbomMeta,
    pub syft: SyftDocument,
}

/// Reads an SBOMSyftFiltered or SBOMSyft. Objects without `kind` (test data) count as filtered
/// when labelled `kubescape.io/context: filtered` or named like an instance (they come from the
/// relevancy path), else as full.
pub fn read_sbom(object: &Value) -> Result<KubescapeSbom, ParseError> {
    let info = read_envelope(object, &[kinds::SBOM_FILTERED, kinds::SBOM])?;
    let kind = match object.get("kind").and_then(Value::as_str) {
        Some(k) if k == kinds::SBOM => SbomKind::Full,
        Some(k) if k == kinds::SBOM_FILTERED => SbomKind::Filtered,
        _ if info.label(keys::CONTEXT) == Some("filtered")
            || info.annotation(keys::INSTANCE_ID).is_some() =>
        {
            SbomKind::Filtered
        }
        _ => SbomKind::Full,
    };
    let label = match kind {
        SbomKind::Filtered => kinds::SBOM_FILTERED,
        SbomKind::Full => kinds::SBOM,
    };
    let spec = spec_of(object, label, &info.name)?;
    let syft =
        spec.get("syft")
            .filter(|v| v.is_object())
            .ok_or_else(|| ParseError::MissingField {
                kind: label,
                name: info.name.clone(),
                path: "spec.syft".into(),
                why: "the SBOM content (Syft JSON) is under spec.syft",
            })?;
    let metadata = match spec.get("metadata") {
        None | Some(Value::Null) => SbomMeta::default(),
        Some(m) => typed(m, label, &info.name, "spec.metadata")?,
    };
    let syft: SyftDocument = typed(syft, label, &info.name, "spec.syft")?;
    Ok(KubescapeSbom {
        object: info,
        kind,
        metadata,
        syft,
    })
}

/// Reads a bare Syft JSON document (e.g. a Syft report file).
pub fn read_syft_document(document: &Value) -> Result<SyftDocument, ParseError> {
    typed(document, "Syft document", "", "")
}
