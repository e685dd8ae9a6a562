//! VulnerabilityManifestSummary (workload namespace): points at the instance's relevant manifest
//! (named like the VEX) and the image manifest.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ParseError;
use crate::keys::kinds;
use crate::object::{ObjectInfo, null_as_default, read_envelope, spec_of, typed};

const KIND: &str = kinds::SUMMARY;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCount {
    #[serde(default, deserialize_with = "null_as_default")]
    pub all: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub relevant: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Severities {
    #[serde(default, deserialize_with = "null_as_default")]
    pub critical: SeverityCount,
    #[serde(default, deserialize_with = "null_as_default")]
    pub high: SeverityCount,
    #[serde(default, deserialize_with = "null_as_default")]
    pub medium: SeverityCount,
    #[serde(default, deserialize_with = "null_as_default")]
    pub low: SeverityCount,
    #[serde(default, deserialize_with = "null_as_default")]
    pub negligible: SeverityCount,
    #[serde(default, deserialize_with = "null_as_default")]
    pub unknown: SeverityCount,
}

/// `{namespace, name, kind}`. The namespace is the workload's, but the manifests live in
/// `kubescape` (facts §3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(default, deserialize_with = "null_as_default")]
    pub namespace: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Refs {
    #[serde(default)]
    all: Option<ObjectRef>,
    #[serde(default)]
    relevant: Option<ObjectRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct SummarySpec {
    #[serde(default, deserialize_with = "null_as_default")]
    severities: Severities,
    #[serde(
        rename = "vulnerabilitiesRef",
        default,
        deserialize_with = "null_as_default"
    )]
    refs: Refs,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubescapeSummary {
    pub object: ObjectInfo,
    pub severities: Severities,
    /// The relevancy-filtered manifest: its name is the instance slug (= the VEX name).
    pub relevant: Option<ObjectRef>,
    /// The image manifest: its name is the image slug.
    pub all: Option<ObjectRef>,
}

pub fn read_summary(object: &Value) -> Result<KubescapeSummary, ParseError> {
    let info = read_envelope(object, &[KIND])?;
    let spec = spec_of(object, KIND, &info.name)?;
    let spec: SummarySpec = typed(spec, KIND, &info.name, "spec")?;
    let keep = |r: Option<ObjectRef>| r.filter(|r| !r.name.is_empty());
    Ok(KubescapeSummary {
        object: info,
        severities: spec.severities,
        relevant: keep(spec.refs.relevant),
        all: keep(spec.refs.all),
    })
}
