//! SBOMSyftFiltered / SBOMSyft: `spec.metadata` + `spec.syft` (Syft JSON, not CycloneDX).
//! Every field vexxy does not interpret is kept in `extra`, so re-serialising the document gives
//! back what Kubescape wrote.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ParseError;
use crate::keys::{self, kinds};
use crate::object::{ObjectInfo, null_as_default, typed};

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
///
/// The Syft types are generic over how they keep what they read, so that one field list serves
/// both the typed view ([`SyftDocument`], [`SyftArtifact`], [`SyftLocation`]) and the check of a
/// stored SBOM (`from_bytes`), which accepts and refuses the same JSON with the same errors but
/// keeps nothing: building every package's `metadata` (file lists) as a `Value` only to drop it
/// was most of the cost of reading an SBOM. `Text` is each string, `Any` each value kept as
/// JSON, `Rest` the fields vexxy does not know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    expecting = "struct SyftDocument",
    bound(
        deserialize = "Artifacts: Deserialize<'de> + Default, Any: Deserialize<'de> + Default, \
                         Rest: Deserialize<'de>"
    )
)]
pub struct SyftDocumentOf<Artifacts, Any, Rest> {
    #[serde(default, deserialize_with = "null_as_default")]
    pub artifacts: Artifacts,
    #[serde(
        rename = "artifactRelationships",
        default,
        deserialize_with = "null_as_default"
    )]
    pub artifact_relationships: Vec<Any>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<Any>>,
    #[serde(default)]
    pub source: Any,
    #[serde(default)]
    pub distro: Any,
    #[serde(default)]
    pub descriptor: Any,
    #[serde(default)]
    pub schema: Any,
    #[serde(flatten)]
    pub extra: Rest,
}

/// A Syft JSON document as vexxy reads it: every field kept.
pub type SyftDocument = SyftDocumentOf<Vec<SyftArtifact>, Value, Map<String, Value>>;

/// One package (see [`SyftDocumentOf`] for the type parameters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    expecting = "struct SyftArtifact",
    bound(
        deserialize = "Text: Deserialize<'de> + Default, Any: Deserialize<'de>, \
                         Rest: Deserialize<'de>"
    )
)]
pub struct SyftArtifactOf<Text, Any, Rest> {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: Text,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: Text,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: Text,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub package_type: Text,
    #[serde(rename = "foundBy", default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<Text>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub locations: Vec<SyftLocationOf<Text, Rest>>,
    /// Objects in current Syft, plain strings in older documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<Any>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Text>,
    /// `{cpe, source}` objects in current Syft, plain strings in older documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpes: Option<Any>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<Text>,
    #[serde(
        rename = "metadataType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_type: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Any>,
    #[serde(flatten)]
    pub extra: Rest,
}

/// One package as vexxy reads it: every field kept.
pub type SyftArtifact = SyftArtifactOf<String, Value, Map<String, Value>>;

/// Where a package was found (see [`SyftDocumentOf`] for the type parameters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    expecting = "struct SyftLocation",
    bound(deserialize = "Text: Deserialize<'de> + Default, Rest: Deserialize<'de>")
)]
pub struct SyftLocationOf<Text, Rest> {
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: Text,
    #[serde(rename = "layerID", default, skip_serializing_if = "Option::is_none")]
    pub layer_id: Option<Text>,
    #[serde(
        rename = "accessPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub access_path: Option<Text>,
    #[serde(flatten)]
    pub extra: Rest,
}

/// Where a package was found, every field kept.
pub type SyftLocation = SyftLocationOf<String, Map<String, Value>>;

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

impl SbomKind {
    /// The kind an SBOM object is. Objects without `kind` (test data) count as filtered when
    /// labelled `kubescape.io/context: filtered` or annotated with an instance id (they come
    /// from the relevancy path), else as full.
    pub(crate) fn of(kind: Option<&Value>, info: &ObjectInfo) -> SbomKind {
        match kind.and_then(Value::as_str) {
            Some(k) if k == kinds::SBOM => SbomKind::Full,
            Some(k) if k == kinds::SBOM_FILTERED => SbomKind::Filtered,
            _ if info.label(keys::CONTEXT) == Some("filtered")
                || info.annotation(keys::INSTANCE_ID).is_some() =>
            {
                SbomKind::Filtered
            }
            _ => SbomKind::Full,
        }
    }

    /// The Kubescape kind, for error messages.
    pub(crate) fn kind_name(self) -> &'static str {
        match self {
            SbomKind::Filtered => kinds::SBOM_FILTERED,
            SbomKind::Full => kinds::SBOM,
        }
    }
}

/// Reads an SBOMSyftFiltered or SBOMSyft (see [`SbomKind::of`] for objects without `kind`),
/// with every package.
pub fn read_sbom(object: &Value) -> Result<KubescapeSbom, ParseError> {
    // One reader: the one for stored bytes, given this object's text.
    crate::from_bytes::read_parsed(object, kinds::SBOM_FILTERED, |text| {
        Ok(crate::from_bytes::read_sbom_bytes(text)?.into_sbom()?)
    })
}

/// Reads a bare Syft JSON document (e.g. a Syft report file).
pub fn read_syft_document(document: &Value) -> Result<SyftDocument, ParseError> {
    typed(document, "Syft document", "", "")
}
