//! The readers of Kubescape's large documents (VEX, SBOM, vulnerability manifest), which take the
//! stored bytes of an object instead of a `serde_json::Value`: the `Value` tree of a large
//! document costs more than the reading itself (a 10,000 statement VEX is ~5 MB of JSON and
//! several times that as a `Value`; a 5,000-package SBOM ~2.7 MB). They are the only readers of
//! these kinds: [`crate::read_vex`], [`crate::read_sbom`] and [`crate::read_manifest`] give them
//! the text of an object already parsed.
//!
//! Two passes over the bytes: the first checks the JSON syntax and reads only `kind`, `metadata`
//! and the outline of `spec` (its keys, each value kept as its stored text, borrowed, not
//! parsed), which is enough for the envelope checks and for telling a metadata-only view; the
//! second deserializes the parts of `spec` the reader needs straight into their typed views.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ParseError;
use crate::keys::kinds;
use crate::manifest::{GrypeDocument, KubescapeManifest};
use crate::metadata_only::text_has_content;
use crate::object::read_envelope;
use crate::sbom::{KubescapeSbom, SbomKind, SyftArtifactOf, SyftDocument, SyftDocumentOf};
use crate::vex::KubescapeVex;
use crate::vex_stream::VexDocument;

/// Why stored bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON, but not an object of the expected kind and shape.
    #[error(transparent)]
    Invalid(#[from] ParseError),
}

/// Reads the stored bytes of an OpenVulnerabilityExchangeContainer into findings, as
/// [`crate::read_vex`] describes (that is this reader given an object's text), with each
/// statement normalised as it is read and not kept; a type error also says where it is in the
/// bytes.
pub fn read_vex_bytes(bytes: &[u8]) -> Result<KubescapeVex, ReadError> {
    let outline: Outline = serde_json::from_slice(bytes)?;
    let info = read_envelope(&outline.envelope(), &[kinds::VEX])?;
    let spec = outline.spec_with_content(kinds::VEX, &info.name)?;
    // A spec with none of the VEX keys is not a VEX document (a stub some writers leave).
    if !spec
        .iter()
        .any(|(key, _)| matches!(key.as_ref(), "statements" | "@context" | "@id"))
    {
        return Err(ParseError::SpecMissing {
            kind: kinds::VEX,
            name: info.name,
        }
        .into());
    }
    #[derive(Deserialize)]
    struct SpecOnly {
        spec: VexDocument,
    }
    let doc = deserialize_tracked::<SpecOnly>(bytes)
        .map_err(|e| ParseError::from_serde(kinds::VEX, &info.name, "", e))?
        .spec;
    Ok(doc.normalise(info)?)
}

/// Runs a byte reader on an object already parsed (test data, kubesim's catalogue), so that
/// there is one reader per kind whatever the caller holds.
pub(crate) fn read_parsed<T>(
    object: &Value,
    kind: &'static str,
    read: impl FnOnce(&[u8]) -> Result<T, ReadError>,
) -> Result<T, ParseError> {
    let text = serde_json::to_vec(object).expect("a Value always serialises: its keys are strings");
    read(&text).map_err(|error| match error {
        ReadError::Invalid(error) => error,
        // The text of a `Value` is JSON, but the parser refuses some a `Value` can hold (nesting
        // past its recursion limit).
        ReadError::NotJson(error) => ParseError::InvalidField {
            kind,
            name: String::new(),
            path: ".".into(),
            message: error.to_string(),
        },
    })
}

/// An SBOMSyftFiltered / SBOMSyft read from its stored bytes: everything but the packages, which
/// are checked and counted, the Syft document being kept as stored (enrich copies it through).
#[derive(Debug)]
pub struct StoredSbom<'a> {
    /// Envelope, kind and `spec.metadata`; `syft` is empty (the content is in [`Self::syft`]).
    pub sbom: KubescapeSbom,
    /// `spec.syft.artifacts`: one per package.
    pub artifacts: usize,
    /// `spec.syft` exactly as stored.
    pub syft: &'a RawValue,
}

impl StoredSbom<'_> {
    /// The SBOM with its Syft document read, every package kept.
    pub fn into_sbom(self) -> Result<KubescapeSbom, ParseError> {
        let mut sbom = self.sbom;
        sbom.syft =
            deserialize_tracked::<SyftDocument>(self.syft.get().as_bytes()).map_err(|e| {
                ParseError::from_serde(sbom.kind.kind_name(), &sbom.object.name, "spec.syft", e)
            })?;
        Ok(sbom)
    }
}

/// Reads the stored bytes of an SBOMSyftFiltered or SBOMSyft (see [`crate::SbomKind`] for
/// objects without `kind`): the Syft document must have the shape of [`crate::SyftDocument`];
/// its packages are checked one at a time and not kept. A type error also says where it is in
/// the bytes.
pub fn read_sbom_bytes(bytes: &[u8]) -> Result<StoredSbom<'_>, ReadError> {
    let outline: Outline = serde_json::from_slice(bytes)?;
    let object = read_envelope(&outline.envelope(), &[kinds::SBOM_FILTERED, kinds::SBOM])?;
    let kind = SbomKind::of(outline.kind.as_ref(), &object);
    let label = kind.kind_name();
    let spec = outline.spec_with_content(label, &object.name)?;
    let syft = object_entry(spec, "syft").ok_or_else(|| ParseError::MissingField {
        kind: label,
        name: object.name.clone(),
        path: "spec.syft".into(),
        why: "the SBOM content (Syft JSON) is under spec.syft",
    })?;
    let metadata = metadata_at(bytes, spec, label, &object.name)?;
    let checked: SyftCheck = typed_at(bytes, syft, label, &object.name, "spec.syft")?;
    Ok(StoredSbom {
        sbom: KubescapeSbom {
            object,
            kind,
            metadata,
            syft: SyftDocument::default(),
        },
        artifacts: checked.artifacts.0,
        syft,
    })
}

/// Reads the stored bytes of a VulnerabilityManifest (a type error also says where it is in the
/// bytes).
pub fn read_manifest_bytes(bytes: &[u8]) -> Result<KubescapeManifest, ReadError> {
    let outline: Outline = serde_json::from_slice(bytes)?;
    let object = read_envelope(&outline.envelope(), &[kinds::MANIFEST])?;
    let spec = outline.spec_with_content(kinds::MANIFEST, &object.name)?;
    let payload = object_entry(spec, "payload").ok_or_else(|| ParseError::MissingField {
        kind: kinds::MANIFEST,
        name: object.name.clone(),
        path: "spec.payload".into(),
        why: "the Grype document is under spec.payload",
    })?;
    let metadata = metadata_at(bytes, spec, kinds::MANIFEST, &object.name)?;
    let mut payload: GrypeDocument = typed_at(
        bytes,
        payload,
        kinds::MANIFEST,
        &object.name,
        "spec.payload",
    )?;
    // Kept while enrich renders its documents: without the room the vector kept for growth.
    payload.matches.shrink_to_fit();
    Ok(KubescapeManifest {
        object,
        metadata,
        payload,
    })
}

/// The spec entry `key` when it is a JSON object.
fn object_entry<'a>(spec: &[SpecEntry<'a>], key: &str) -> Option<&'a RawValue> {
    spec.iter()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, raw)| *raw)
        .filter(|raw| raw.get().starts_with('{'))
}

/// `spec.metadata` read as `T`; absent or null, `T`'s default.
fn metadata_at<T: DeserializeOwned + Default>(
    document: &[u8],
    spec: &[SpecEntry<'_>],
    kind: &'static str,
    name: &str,
) -> Result<T, ParseError> {
    match spec.iter().find(|(k, _)| k.as_ref() == "metadata") {
        Some((_, raw)) if raw.get() != "null" => {
            typed_at(document, raw, kind, name, "spec.metadata")
        }
        _ => Ok(T::default()),
    }
}

/// A Syft document checked as [`SyftDocument`] is read, keeping only the number of packages.
type SyftCheck = SyftDocumentOf<ArtifactCount, IgnoredAny, IgnoredAny>;

/// `spec.syft.artifacts`, each package checked as [`crate::SyftArtifact`] is read (strings are
/// checked and dropped, other values skipped) and counted.
#[derive(Default)]
struct ArtifactCount(usize);

impl<'de> Deserialize<'de> for ArtifactCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = ArtifactCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArtifactCount, A::Error> {
                let mut count = 0;
                while seq
                    .next_element::<SyftArtifactOf<AnyString, IgnoredAny, IgnoredAny>>()?
                    .is_some()
                {
                    count += 1;
                }
                Ok(ArtifactCount(count))
            }
        }
        deserializer.deserialize_seq(Count)
    }
}

/// A JSON string, checked as `String` checks it (same error for anything else), not kept.
#[derive(Default)]
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;
        impl Visitor<'_> for StringVisitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_string(StringVisitor)
    }
}

/// Deserialises `raw` (the stored text found at `prefix`, a slice of `document`) with the failing
/// path in the error and its position counted from the start of `document`.
fn typed_at<T: DeserializeOwned>(
    document: &[u8],
    raw: &RawValue,
    kind: &'static str,
    name: &str,
    prefix: &str,
) -> Result<T, ParseError> {
    deserialize_tracked::<T>(raw.get().as_bytes()).map_err(|e| {
        let inner = e.path().to_string();
        let path = match inner.as_str() {
            "." | "" => prefix.to_string(),
            _ => format!("{prefix}.{inner}"),
        };
        ParseError::InvalidField {
            kind,
            name: name.to_string(),
            path,
            message: located_in(document, raw, e.into_inner()),
        }
    })
}

/// Deserialises `text` without tracking where the reader is (tracking costs a good share of
/// the time on a large document, and almost every object is valid); only when that fails, again
/// with tracking, for an error that names the failing field.
fn deserialize_tracked<'de, T: Deserialize<'de>>(
    text: &'de [u8],
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    if let Ok(value) = T::deserialize(&mut serde_json::Deserializer::from_slice(text)) {
        return Ok(value);
    }
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(text))
}

/// The error's message with its line and column moved from `raw` to the whole `document`.
fn located_in(document: &[u8], raw: &RawValue, error: serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let Some(text) = message.strip_suffix(&suffix).filter(|_| error.line() > 0) else {
        return message;
    };
    let offset = (raw.get().as_ptr() as usize).saturating_sub(document.as_ptr() as usize);
    let before = &document[..offset.min(document.len())];
    let start_line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let start_column = before.len()
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
    let (line, column) = if error.line() == 1 {
        (start_line, start_column + error.column())
    } else {
        (start_line + error.line() - 1, error.column())
    };
    format!("{text} at line {line} column {column}")
}

/// The top level of a storage object: `kind` and `metadata` parsed, `spec` as the stored text of
/// each of its entries.
#[derive(Default)]
struct Outline<'a> {
    /// `None` when the top level is not an object: the JSON type it is instead.
    not_an_object: Option<Value>,
    kind: Option<Value>,
    metadata: Option<Value>,
    spec: Option<SpecOutline<'a>>,
}

/// A key of `spec` and its stored text.
type SpecEntry<'a> = (Cow<'a, str>, &'a RawValue);

enum SpecOutline<'a> {
    /// The entries in stored order; a repeated key holds its last value, as in a `Value`.
    Object(Vec<SpecEntry<'a>>),
    Other,
}

impl<'a> Outline<'a> {
    /// The object as `read_envelope` expects it: only `kind` and `metadata`.
    fn envelope(&self) -> Value {
        if let Some(other) = &self.not_an_object {
            return other.clone();
        }
        let mut map = Map::new();
        if let Some(kind) = &self.kind {
            map.insert("kind".into(), kind.clone());
        }
        if let Some(metadata) = &self.metadata {
            map.insert("metadata".into(), metadata.clone());
        }
        Value::Object(map)
    }

    /// The entries of `spec`, or `SpecMissing` when it has no content: absent, not an object,
    /// `{}`, or the zero-valued spec of the storage server's metadata-only view.
    fn spec_with_content(
        &self,
        kind: &'static str,
        name: &str,
    ) -> Result<&[SpecEntry<'a>], ParseError> {
        match &self.spec {
            Some(SpecOutline::Object(entries))
                if entries.iter().any(|(_, raw)| text_has_content(raw.get())) =>
            {
                Ok(entries)
            }
            _ => Err(ParseError::SpecMissing {
                kind,
                name: name.to_string(),
            }),
        }
    }
}

impl<'de> Deserialize<'de> for Outline<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OutlineVisitor)
    }
}

/// A value of the same JSON type as a top level that is not an object, for the "expected a JSON
/// object, got …" error.
fn of_type(value: Value) -> Outline<'static> {
    Outline {
        not_an_object: Some(value),
        ..Outline::default()
    }
}

struct OutlineVisitor;

impl<'de> Visitor<'de> for OutlineVisitor {
    type Value = Outline<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outline<'de>, A::Error> {
        let mut outline = Outline::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "kind" => outline.kind = Some(map.next_value()?),
                "metadata" => outline.metadata = Some(map.next_value()?),
                "spec" => outline.spec = Some(map.next_value_seed(SpecSeed)?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(outline)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outline<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(of_type(Value::Array(Vec::new())))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Outline<'de>, E> {
        Ok(of_type(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Outline<'de>, E> {
        Ok(of_type(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Outline<'de>, E> {
        Ok(of_type(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Outline<'de>, E> {
        Ok(of_type(Value::from(v)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Outline<'de>, E> {
        Ok(of_type(Value::String(String::new())))
    }
    fn visit_unit<E>(self) -> Result<Outline<'de>, E> {
        Ok(of_type(Value::Null))
    }
}

struct SpecSeed;

impl<'de> DeserializeSeed<'de> for SpecSeed {
    type Value = SpecOutline<'de>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<SpecOutline<'de>, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = SpecOutline<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecOutline<'de>, A::Error> {
        let mut entries: Vec<SpecEntry<'de>> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let raw: &'de RawValue = map.next_value()?;
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = raw,
                None => entries.push((key, raw)),
            }
        }
        Ok(SpecOutline::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SpecOutline<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(SpecOutline::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<SpecOutline<'de>, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<SpecOutline<'de>, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<SpecOutline<'de>, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<SpecOutline<'de>, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<SpecOutline<'de>, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_unit<E>(self) -> Result<SpecOutline<'de>, E> {
        Ok(SpecOutline::Other)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vex_object() -> Value {
        json!({"apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
               "kind": "OpenVulnerabilityExchangeContainer",
               "metadata": {"name": "replicaset-x-app-1a2b-3c4d", "namespace": "kubescape"},
               "spec": {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "x", "author": "kubescape.io",
                        "timestamp": "2025-06-15T15:06:40Z", "version": 0,
                        "statements": [
                            {"vulnerability": {"@id": "CVE-2023-4911", "name": "https://security-tracker.debian.org/tracker/CVE-2023-4911"},
                             "products": [{"@id": "pkg:oci/nginx", "subcomponents": [{"@id": "pkg:deb/debian/libc6@2.36-9"}]}],
                             "status": "affected"},
                            {"vulnerability": {"@id": "https://security-tracker.debian.org/tracker/CVE-2023-4911", "name": "CVE-2023-4911"},
                             "products": [{"@id": "pkg:oci/nginx", "subcomponents": [{"@id": "pkg:deb/debian/libc6@2.36-9"}]}],
                             "status": "not_affected", "justification": "vulnerable_code_not_present"}]}})
    }

    fn from_bytes(object: &Value) -> Result<KubescapeVex, ReadError> {
        read_vex_bytes(&serde_json::to_vec(object).unwrap())
    }

    #[test]
    fn a_vex_reads_into_findings_with_its_duplicates_merged() {
        let vex = from_bytes(&vex_object()).unwrap();
        assert_eq!(vex.object.name, "replicaset-x-app-1a2b-3c4d");
        assert_eq!(vex.document.author, "kubescape.io");
        assert_eq!(vex.document.version, 0);
        assert_eq!(vex.statement_count, 2);
        assert_eq!(vex.findings.len(), 1);
        assert_eq!((vex.duplicates_merged, vex.conflicting_duplicates), (1, 1));
        let finding = &vex.findings[0];
        assert_eq!(finding.vulnerability_id, "CVE-2023-4911");
        assert_eq!(
            finding.status,
            crate::VexStatus::Affected,
            "the cautious one"
        );
        assert_eq!(
            finding.subcomponent_purl.as_deref(),
            Some("pkg:deb/debian/libc6@2.36-9")
        );
    }

    /// The error of the first check that fails: the envelope, then the spec's content, then
    /// the statements.
    fn error_of(object: &Value) -> ParseError {
        match from_bytes(object) {
            Err(ReadError::Invalid(error)) => error,
            other => panic!("{object}: expected an invalid object, got {other:?}"),
        }
    }

    fn path_of(error: &ParseError) -> &str {
        match error {
            ParseError::InvalidField { path, .. } | ParseError::MissingField { path, .. } => path,
            other => panic!("expected an error naming a field, got {other:?}"),
        }
    }

    #[test]
    fn checks_come_in_order_envelope_spec_statements() {
        let mut wrong_kind = vex_object();
        wrong_kind["kind"] = json!("SBOMSyft");
        wrong_kind["spec"]["statements"][0]["status"] = json!(7);
        assert!(matches!(
            error_of(&wrong_kind),
            ParseError::WrongKind { found, .. } if found == "SBOMSyft"
        ));
        let mut no_spec = vex_object();
        no_spec["spec"] = json!({});
        let mut stub = vex_object();
        stub["spec"] = json!({"author": "x"});
        let mut metadata_only = vex_object();
        metadata_only["spec"] = crate::metadata_only::zero_spec(kinds::VEX).unwrap();
        for object in [no_spec, stub, metadata_only] {
            assert!(
                matches!(error_of(&object), ParseError::SpecMissing { ref name, .. } if name == "replicaset-x-app-1a2b-3c4d"),
                "{object}"
            );
        }
        let mut no_metadata = vex_object();
        no_metadata.as_object_mut().unwrap().remove("metadata");
        let error = error_of(&no_metadata);
        assert!(matches!(error, ParseError::MissingField { .. }), "{error}");
        assert_eq!(path_of(&error), "metadata");
        let mut bad_status = vex_object();
        bad_status["spec"]["statements"][1]["status"] = json!("exploitable");
        let error = error_of(&bad_status);
        assert_eq!(path_of(&error), "spec.statements[1].status");
        assert!(error.to_string().contains("\"exploitable\""), "{error}");
        for (object, got) in [(json!([1]), "an array"), (json!("x"), "a string")] {
            let error = error_of(&object);
            assert_eq!(path_of(&error), ".");
            assert!(
                error.to_string().ends_with(&format!("got {got}")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_type_error_names_the_field_and_where_it_is_in_the_bytes() {
        let mut object = vex_object();
        object["spec"]["statements"][0]["products"][0]["subcomponents"] = json!("pkg:deb/x");
        let Err(ReadError::Invalid(ParseError::InvalidField { path, message, .. })) =
            from_bytes(&object)
        else {
            panic!("a type error is an invalid field");
        };
        assert_eq!(path, "spec.statements[0].products[0].subcomponents");
        assert!(
            message.starts_with(
                "invalid type: string \"pkg:deb/x\", expected a sequence at line 1 column"
            ),
            "{message}"
        );
    }

    #[test]
    fn statement_errors_come_after_document_time_errors() {
        let mut bad_time_and_status = vex_object();
        bad_time_and_status["spec"]["last_updated"] = json!("yesterday");
        bad_time_and_status["spec"]["statements"][0]["status"] = json!("exploitable");
        assert_eq!(
            path_of(&error_of(&bad_time_and_status)),
            "spec.last_updated"
        );
        let mut two_bad_statements = vex_object();
        two_bad_statements["spec"]["statements"][0]["products"] = json!([]);
        two_bad_statements["spec"]["statements"][1]["status"] = json!("");
        let error = error_of(&two_bad_statements);
        assert!(
            matches!(error, ParseError::MissingField { ref name, .. } if name == "replicaset-x-app-1a2b-3c4d"),
            "{error}"
        );
        assert_eq!(path_of(&error), "spec.statements[0].products");
    }

    #[test]
    fn null_statements_and_unknown_fields_are_read() {
        let mut statements_null = vex_object();
        statements_null["spec"]["statements"] = json!(null);
        let vex = from_bytes(&statements_null).unwrap();
        assert_eq!((vex.statement_count, vex.findings.len()), (0, 0));
        assert_eq!(vex.shape, crate::KubevulnShape::Undetermined);
        let mut unknown_fields = vex_object();
        unknown_fields["spec"]["extra"] = json!({"nested": [1, 2]});
        unknown_fields["spec"]["statements"][1]["extra"] = json!("x");
        let (with, without) = (
            from_bytes(&unknown_fields).unwrap(),
            from_bytes(&vex_object()).unwrap(),
        );
        assert_eq!(with.findings, without.findings);
        assert_eq!(with.document, without.document);
    }

    #[test]
    fn a_type_error_after_a_refused_statement_is_reported_first() {
        let mut object = vex_object();
        object["spec"]["statements"][0]["status"] = json!("exploitable");
        object["spec"]["statements"][1]["vulnerability"]["aliases"] = json!(3);
        object["spec"]["timestamp"] = json!("yesterday");
        let Err(ReadError::Invalid(ParseError::InvalidField { path, message, .. })) =
            from_bytes(&object)
        else {
            panic!("a type error is an invalid field");
        };
        assert_eq!(path, "spec.statements[1].vulnerability.aliases");
        assert!(
            message.starts_with("invalid type: integer `3`"),
            "{message}"
        );
    }

    #[test]
    fn every_shape_is_told_and_its_duplicates_merged() {
        let statement = |id: Option<&str>, vid: &str, vname: &str, status: &str, legacy: bool| {
            let product = if legacy {
                json!({"@id": "nginx", "identifiers": {"purl": "pkg:deb/debian/libc6@2.36-9"}})
            } else {
                json!({"@id": "pkg:oci/nginx", "subcomponents": [{"@id": "pkg:deb/debian/libc6@2.36-9"}]})
            };
            let mut s = json!({"vulnerability": {"@id": vid, "name": vname, "aliases": ["GHSA-1"]},
                               "products": [product], "status": status,
                               "last_updated": "2025-06-15T15:06:40Z"});
            if let Some(id) = id {
                s["@id"] = json!(id);
            }
            s
        };
        let url = "https://security-tracker.debian.org/tracker/CVE-2023-4911";
        let shapes = [
            vec![],
            vec![
                statement(None, "CVE-2023-4911", url, "affected", false),
                statement(None, "CVE-2023-4911", url, "not_affected", false),
                statement(None, "CVE-2023-4912", url, "fixed", false),
            ],
            vec![statement(
                Some("https://kubescape.io/vex/statement/CVE-2023-4911/x"),
                url,
                "CVE-2023-4911",
                "under_investigation",
                false,
            )],
            vec![
                statement(None, url, "CVE-2023-4911", "affected", true),
                statement(None, url, "CVE-2023-4911", "affected", true),
            ],
        ];
        // (shape, statements, findings, duplicates merged, of which conflicting)
        let expected = [
            (crate::KubevulnShape::Undetermined, 0, 0, 0, 0),
            (crate::KubevulnShape::V0_3_159, 3, 2, 1, 1),
            (crate::KubevulnShape::Main, 1, 1, 0, 0),
            (crate::KubevulnShape::Legacy, 2, 1, 1, 0),
        ];
        for (statements, expected) in shapes.into_iter().zip(expected) {
            let mut object = vex_object();
            object["spec"]["statements"] = json!(statements);
            let vex = from_bytes(&object).unwrap();
            assert_eq!(
                (
                    vex.shape,
                    vex.statement_count,
                    vex.findings.len(),
                    vex.duplicates_merged,
                    vex.conflicting_duplicates
                ),
                expected
            );
            // The cautious status wins and the aliases are kept.
            if let Some(finding) = vex
                .findings
                .iter()
                .find(|f| f.vulnerability_id == "CVE-2023-4911")
            {
                assert_ne!(finding.status, crate::VexStatus::NotAffected);
                assert_eq!(finding.aliases, ["GHSA-1"]);
            }
        }
    }

    #[test]
    fn bytes_that_are_not_json_are_told_apart() {
        assert!(matches!(
            read_vex_bytes(b"{\"kind\": \"OpenVulnerabilityExchangeContainer\", "),
            Err(ReadError::NotJson(_))
        ));
        assert!(matches!(
            read_vex_bytes(b"{} trailing"),
            Err(ReadError::NotJson(_))
        ));
    }
}

#[cfg(test)]
mod sbom_and_manifest_tests {
    use serde_json::json;

    use super::*;

    fn sbom_object() -> Value {
        json!({"apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1", "kind": "SBOMSyftFiltered",
               "metadata": {"name": "replicaset-x-app-1a2b-3c4d", "namespace": "kubescape",
                            "labels": {"kubescape.io/context": "filtered"}},
               "spec": {"metadata": {"tool": {"name": "syft", "version": "v1.18.1"}, "report": {"createdAt": "2025-06-15T15:06:00Z"}},
                        "syft": {"artifacts": [
                                    {"id": "a", "name": "libc6", "version": "2.36-9", "type": "deb",
                                     "locations": [{"path": "/lib/x86_64-linux-gnu/libc.so.6"}], "purl": "pkg:deb/debian/libc6@2.36-9"},
                                    {"id": "b", "name": "zlib", "version": null, "type": "deb", "locations": null,
                                     "metadata": {"files": [{"path": "/usr/lib/libz.so.1"}]}}],
                                 "artifactRelationships": null, "source": {"type": "image"}, "distro": {"name": "debian"},
                                 "descriptor": {"name": "syft"}, "schema": {"version": "16.0.20"}}}})
    }

    fn manifest_object() -> Value {
        json!({"kind": "VulnerabilityManifest",
               "metadata": {"name": "replicaset-x-app-1a2b-3c4d", "namespace": "kubescape"},
               "spec": {"metadata": {"withRelevancy": true, "tool": {"name": "grype", "version": "v0.92.2", "databaseVersion": "v6"},
                                     "report": {"createdAt": "2025-06-15T15:06:00Z"}},
                        "payload": {"matches": [
                            {"vulnerability": {"id": "CVE-2023-4911", "dataSource": "https://security-tracker.debian.org/tracker/CVE-2023-4911",
                                               "fix": {"versions": ["2.36-9+deb12u3"], "state": "fixed"}, "cvss": [1, 2.5]},
                             "artifact": {"name": "libc6", "version": "2.36-9", "type": "deb", "purl": "pkg:deb/debian/libc6@2.36-9"},
                             "matchDetails": []}],
                                    "source": {"type": "image"}}}})
    }

    fn bytes(object: &Value) -> Vec<u8> {
        serde_json::to_vec_pretty(object).unwrap()
    }

    #[test]
    fn an_sbom_reads_its_metadata_and_counts_its_packages_keeping_the_syft_text() {
        let object = sbom_object();
        let stored = bytes(&object);
        let read = read_sbom_bytes(&stored).unwrap();
        assert_eq!(read.sbom.object.name, "replicaset-x-app-1a2b-3c4d");
        assert_eq!(read.sbom.kind, crate::SbomKind::Filtered);
        assert_eq!(read.sbom.metadata.tool.version, "v1.18.1");
        assert_eq!(read.artifacts, 2);
        assert_eq!(
            serde_json::from_str::<Value>(read.syft.get()).unwrap(),
            object["spec"]["syft"]
        );
        let sbom = read.into_sbom().unwrap();
        assert_eq!(sbom.syft.artifacts.len(), 2);
        assert_eq!(sbom.syft.artifacts[1].version, "", "null reads as empty");
        assert_eq!(
            serde_json::to_value(&sbom.syft).unwrap()["distro"],
            json!({"name": "debian"})
        );
    }

    #[test]
    fn a_manifest_reads_its_metadata_and_matches() {
        let manifest = read_manifest_bytes(&bytes(&manifest_object())).unwrap();
        assert_eq!(manifest.object.name, "replicaset-x-app-1a2b-3c4d");
        assert!(manifest.metadata.with_relevancy);
        assert_eq!(manifest.metadata.tool.version, "v0.92.2");
        assert_eq!(manifest.payload.matches.len(), 1);
        assert_eq!(
            manifest.payload.matches[0].fix_versions(),
            Some(&["2.36-9+deb12u3".to_string()][..])
        );
    }

    #[test]
    fn content_beside_zero_valued_metadata_is_read_not_taken_for_a_metadata_only_view() {
        let mut sbom = sbom_object();
        sbom["spec"]["metadata"] =
            json!({"tool": {"name": "", "version": ""}, "report": {"createdAt": null}});
        assert_eq!(read_sbom_bytes(&bytes(&sbom)).unwrap().artifacts, 2);
        let mut manifest = manifest_object();
        manifest["spec"]["metadata"] = json!(null);
        let read = read_manifest_bytes(&bytes(&manifest)).unwrap();
        assert_eq!(read.payload.matches.len(), 1);
        assert!(!read.metadata.with_relevancy);
    }

    /// What an error is about: its variant, or the field it names; an error naming a field of
    /// the stored text says where it is, at a place that exists.
    fn what_is_wrong(error: ReadError, stored: &[u8]) -> String {
        let ReadError::Invalid(error) = error else {
            panic!("JSON that is not a valid object is Invalid, got {error:?}");
        };
        match &error {
            ParseError::WrongKind { .. } => "WrongKind".into(),
            ParseError::SpecMissing { .. } => "SpecMissing".into(),
            ParseError::MissingField { path, .. } => format!("missing {path}"),
            ParseError::InvalidField { path, message, .. } => {
                if let Some((_, position)) = message.rsplit_once(" at line ") {
                    let (line, column) = position.split_once(" column ").unwrap();
                    let (line, column): (usize, usize) =
                        (line.parse().unwrap(), column.parse().unwrap());
                    let line_text = String::from_utf8_lossy(stored)
                        .lines()
                        .nth(line - 1)
                        .unwrap()
                        .to_string();
                    assert!(
                        column <= line_text.len() + 1,
                        "{error}: column {column} is past line {line}: {line_text}"
                    );
                }
                format!("invalid {path}")
            }
        }
    }

    #[test]
    fn a_bad_sbom_is_refused_naming_what_is_wrong() {
        let mut cases = Vec::new();
        let mut wrong_kind = sbom_object();
        wrong_kind["kind"] = json!("OpenVulnerabilityExchangeContainer");
        cases.push((wrong_kind, "WrongKind"));
        let mut no_syft = sbom_object();
        no_syft["spec"]["syft"] = json!(null);
        cases.push((no_syft, "missing spec.syft"));
        let mut syft_array = sbom_object();
        syft_array["spec"]["syft"] = json!([]);
        cases.push((syft_array, "missing spec.syft"));
        let mut only_other = sbom_object();
        only_other["spec"] = json!({"other": 1});
        cases.push((only_other, "missing spec.syft"));
        let mut empty_spec = sbom_object();
        empty_spec["spec"] = json!({});
        cases.push((empty_spec, "SpecMissing"));
        let mut metadata_only = sbom_object();
        metadata_only["spec"] = crate::metadata_only::zero_spec(kinds::SBOM_FILTERED).unwrap();
        cases.push((metadata_only, "SpecMissing"));
        let mut bad_metadata = sbom_object();
        bad_metadata["spec"]["metadata"]["tool"]["name"] = json!(7);
        cases.push((bad_metadata, "invalid spec.metadata.tool.name"));
        let mut bad_location = sbom_object();
        bad_location["spec"]["syft"]["artifacts"][1]["locations"] = json!([{"path": 7}]);
        cases.push((
            bad_location,
            "invalid spec.syft.artifacts[1].locations[0].path",
        ));
        let mut artifact_array = sbom_object();
        artifact_array["spec"]["syft"]["artifacts"][0] = json!(["id", "name"]);
        cases.push((artifact_array, "invalid spec.syft.artifacts[0]"));
        let mut artifacts_object = sbom_object();
        artifacts_object["spec"]["syft"]["artifacts"] = json!({});
        cases.push((artifacts_object, "invalid spec.syft.artifacts"));
        let mut relationships_string = sbom_object();
        relationships_string["spec"]["syft"]["artifactRelationships"] = json!("x");
        cases.push((
            relationships_string,
            "invalid spec.syft.artifactRelationships",
        ));
        let mut files_number = sbom_object();
        files_number["spec"]["syft"]["files"] = json!(3);
        cases.push((files_number, "invalid spec.syft.files"));
        cases.push((json!(["not", "an", "object"]), "invalid ."));
        for (object, expected) in cases {
            let stored = bytes(&object);
            let error = read_sbom_bytes(&stored).unwrap_err();
            assert_eq!(what_is_wrong(error, &stored), expected, "{object}");
        }
    }

    #[test]
    fn a_bad_manifest_is_refused_naming_what_is_wrong() {
        let mut cases = Vec::new();
        let mut no_name = manifest_object();
        no_name["spec"]["payload"]["matches"][0]["artifact"] = json!({"version": "1"});
        cases.push((no_name, "invalid spec.payload.matches[0].artifact"));
        let mut no_payload = manifest_object();
        no_payload["spec"]["payload"] = json!("x");
        cases.push((no_payload, "missing spec.payload"));
        let mut bad_versions = manifest_object();
        bad_versions["spec"]["payload"]["matches"][0]["vulnerability"]["fix"]["versions"] =
            json!([1]);
        cases.push((
            bad_versions,
            "invalid spec.payload.matches[0].vulnerability.fix.versions[0]",
        ));
        let mut bad_relevancy = manifest_object();
        bad_relevancy["spec"]["metadata"]["withRelevancy"] = json!("yes");
        cases.push((bad_relevancy, "invalid spec.metadata.withRelevancy"));
        let mut no_metadata = manifest_object();
        no_metadata.as_object_mut().unwrap().remove("metadata");
        cases.push((no_metadata, "missing metadata"));
        let mut metadata_only = manifest_object();
        metadata_only["spec"] = crate::metadata_only::zero_spec(kinds::MANIFEST).unwrap();
        cases.push((metadata_only, "SpecMissing"));
        for (object, expected) in cases {
            let stored = bytes(&object);
            let error = read_manifest_bytes(&stored).unwrap_err();
            assert_eq!(what_is_wrong(error, &stored), expected, "{object}");
        }
    }

    #[test]
    fn positions_are_counted_from_the_start_of_the_stored_bytes() {
        let mut object = manifest_object();
        object["spec"]["payload"]["matches"][0]["vulnerability"]["fix"]["versions"] = json!([1]);
        for stored in [serde_json::to_vec(&object).unwrap(), bytes(&object)] {
            // Where serde_json itself puts the error when it reads the whole document.
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct Whole {
                spec: WholeSpec,
            }
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct WholeSpec {
                payload: GrypeDocument,
            }
            let whole = serde_json::from_slice::<Whole>(&stored).unwrap_err();
            let expected = format!("at line {} column {}", whole.line(), whole.column());
            let message = read_manifest_bytes(&stored).unwrap_err().to_string();
            assert!(
                message.ends_with(&expected),
                "{message} ends with {expected}"
            );
        }
    }
}
