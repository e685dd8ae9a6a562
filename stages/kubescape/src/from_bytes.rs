//! Readers that take the stored bytes of an object instead of a `serde_json::Value`, for
//! documents large enough that the `Value` tree costs more than the reading itself (a 10,000
//! statement VEX is ~5 MB of JSON and several times that as a `Value`; a 5,000-package SBOM
//! ~2.7 MB).
//!
//! Two passes over the bytes, so the checks happen in the same order and with the same errors
//! as the `Value` readers: the first checks the JSON syntax and reads only `kind`, `metadata`
//! and the outline of `spec` (its keys, each value kept as its stored text, borrowed, not
//! parsed); the second deserializes the part of `spec` the reader needs straight into its typed
//! view. The checks the `Value` readers make on the envelope and on the small parts of `spec`
//! are made by those same readers, on a stand-in object holding only those parts.

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
use crate::manifest::{GrypeDocument, KubescapeManifest, read_manifest};
use crate::metadata_only::text_has_content;
use crate::object::{null_as_default, read_envelope};
use crate::sbom::{KubescapeSbom, read_sbom};
use crate::vex::KubescapeVex;
use crate::vex_stream::StreamedVexDocument;

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

/// [`crate::read_vex`] on the stored bytes of an OpenVulnerabilityExchangeContainer: the same
/// checks, order and errors (a type error also says where it is in the bytes), with each
/// statement normalised as it is read and not kept.
pub fn read_vex_bytes(bytes: &[u8]) -> Result<KubescapeVex, ReadError> {
    let outline: Outline = serde_json::from_slice(bytes)?;
    let info = read_envelope(&outline.envelope(), &[kinds::VEX])?;
    // `read_vex`'s two checks: content at all (not a metadata-only view), then a VEX key.
    let spec = match &outline.spec {
        Some(SpecOutline::Object(entries)) => {
            entries.iter().any(|(_, raw)| text_has_content(raw.get()))
                && entries
                    .iter()
                    .any(|(key, _)| matches!(key.as_ref(), "statements" | "@context" | "@id"))
        }
        _ => false,
    };
    if !spec {
        return Err(ParseError::SpecMissing {
            kind: kinds::VEX,
            name: info.name,
        }
        .into());
    }
    #[derive(Deserialize)]
    struct SpecOnly {
        spec: StreamedVexDocument,
    }
    let doc = deserialize_tracked::<SpecOnly>(bytes)
        .map_err(|e| ParseError::from_serde(kinds::VEX, &info.name, "", e))?
        .spec;
    Ok(doc.normalise(info)?)
}

/// What enrich needs of an SBOMSyftFiltered / SBOMSyft, read from its stored bytes: everything
/// [`crate::read_sbom`] reads except the Syft document, which is kept as stored.
#[derive(Debug)]
pub struct StoredSbom<'a> {
    /// Envelope, kind and `spec.metadata`; `syft` is empty (the content is in [`Self::syft`]).
    pub sbom: KubescapeSbom,
    /// `spec.syft.artifacts`: one per package.
    pub artifacts: usize,
    /// `spec.syft` exactly as stored.
    pub syft: &'a RawValue,
}

/// [`crate::read_sbom`] on the stored bytes, with the same checks and errors (a type error also
/// says where it is in the bytes): the Syft document must have the shape of
/// [`crate::SyftDocument`], its packages are checked one at a time and not kept.
pub fn read_sbom_bytes(bytes: &[u8]) -> Result<StoredSbom<'_>, ReadError> {
    let outline: Outline = serde_json::from_slice(bytes)?;
    let stand_in = outline.stand_in(&["metadata"], "syft")?;
    let sbom = read_sbom(&stand_in)?;
    let label = match sbom.kind {
        crate::SbomKind::Filtered => kinds::SBOM_FILTERED,
        crate::SbomKind::Full => kinds::SBOM,
    };
    let syft = outline
        .spec_entry("syft")
        .expect("read_sbom refuses a spec without spec.syft");
    let checked: SyftCheck = typed_at(bytes, syft, label, &sbom.object.name, "spec.syft")?;
    Ok(StoredSbom {
        sbom,
        artifacts: checked.artifacts,
        syft,
    })
}

/// [`crate::read_manifest`] on the stored bytes, with the same checks and errors (a type error
/// also says where it is in the bytes).
pub fn read_manifest_bytes(bytes: &[u8]) -> Result<KubescapeManifest, ReadError> {
    let outline: Outline = serde_json::from_slice(bytes)?;
    let stand_in = outline.stand_in(&["metadata"], "payload")?;
    let mut manifest = read_manifest(&stand_in)?;
    let payload = outline
        .spec_entry("payload")
        .expect("read_manifest refuses a spec without spec.payload");
    manifest.payload = typed_at::<GrypeDocument>(
        bytes,
        payload,
        kinds::MANIFEST,
        &manifest.object.name,
        "spec.payload",
    )?;
    // Kept while enrich renders its documents: without the room the vector kept for growth.
    manifest.payload.matches.shrink_to_fit();
    Ok(manifest)
}

/// What [`crate::SyftDocument`] accepts, checked without keeping it: the packages are checked one
/// at a time against [`crate::sbom::SyftArtifact`]'s shape ([`ArtifactShape`]) and counted.
#[derive(Deserialize)]
struct SyftCheck {
    #[serde(default, deserialize_with = "count_artifacts")]
    artifacts: usize,
    #[serde(rename = "artifactRelationships", default)]
    _relationships: Option<Vec<IgnoredAny>>,
    #[serde(rename = "files", default)]
    _files: Option<Vec<IgnoredAny>>,
}

fn count_artifacts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_none<E>(self) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
            deserializer.deserialize_seq(Count)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut count = 0;
            while seq.next_element::<ArtifactShape>()?.is_some() {
                count += 1;
            }
            Ok(count)
        }
    }
    deserializer.deserialize_option(Count)
}

/// Accepts exactly the JSON [`crate::sbom::SyftArtifact`] accepts, with the same errors at the
/// same places, and keeps nothing: the same fields and types, except that a string is checked and
/// dropped ([`AnyString`]) and a field `SyftArtifact` keeps as a `Value` is skipped (any JSON is a
/// `Value`). `flatten` stays for what it does to the struct, not for the data: like
/// `SyftArtifact`'s catch-all map, it makes the struct readable from a JSON object only, not from
/// an array of its fields. Errors name `SyftArtifact`, as its own do. Building every package's
/// `metadata` (file lists) as a `Value` only to drop it was most of the cost of reading an SBOM.
/// A field added to `SyftArtifact` must be added here too.
#[derive(Deserialize)]
#[serde(expecting = "struct SyftArtifact")]
struct ArtifactShape {
    #[serde(rename = "id", default, deserialize_with = "null_as_default")]
    _id: AnyString,
    #[serde(rename = "name", default, deserialize_with = "null_as_default")]
    _name: AnyString,
    #[serde(rename = "version", default, deserialize_with = "null_as_default")]
    _version: AnyString,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    _package_type: AnyString,
    #[serde(rename = "foundBy", default)]
    _found_by: Option<AnyString>,
    #[serde(rename = "locations", default)]
    _locations: Option<Vec<LocationShape>>,
    #[serde(rename = "licenses", default)]
    _licenses: Option<IgnoredAny>,
    #[serde(rename = "language", default)]
    _language: Option<AnyString>,
    #[serde(rename = "cpes", default)]
    _cpes: Option<IgnoredAny>,
    #[serde(rename = "purl", default)]
    _purl: Option<AnyString>,
    #[serde(rename = "metadataType", default)]
    _metadata_type: Option<AnyString>,
    #[serde(rename = "metadata", default)]
    _metadata: Option<IgnoredAny>,
    #[serde(flatten)]
    _rest: IgnoredAny,
}

/// [`crate::sbom::SyftLocation`]'s shape, as [`ArtifactShape`] is `SyftArtifact`'s.
#[derive(Deserialize)]
#[serde(expecting = "struct SyftLocation")]
struct LocationShape {
    #[serde(rename = "path", default, deserialize_with = "null_as_default")]
    _path: AnyString,
    #[serde(rename = "layerID", default)]
    _layer_id: Option<AnyString>,
    #[serde(rename = "accessPath", default)]
    _access_path: Option<AnyString>,
    #[serde(flatten)]
    _rest: IgnoredAny,
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

enum SpecOutline<'a> {
    /// The entries in stored order (a repeated key appears twice; the last one counts, as in
    /// a `Value`).
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
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

    /// The last `spec` entry named `key`.
    fn spec_entry(&self, key: &str) -> Option<&'a RawValue> {
        match &self.spec {
            Some(SpecOutline::Object(entries)) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == key)
                .map(|(_, raw)| *raw),
            _ => None,
        }
    }

    /// The envelope with a `spec` a `Value` reader checks as it would the stored one: the entries
    /// named in `parsed` parsed (they are small); `content` an object when it is one, every other
    /// key null, each of them standing in with `true` inside when it has content, so the
    /// reader's check for a metadata-only (zero-valued) spec sees what the stored one holds. The
    /// reader then finds the same problems, in the same order, except inside `content`, which
    /// the caller reads from its stored text.
    fn stand_in(&self, parsed: &[&str], content: &str) -> Result<Value, serde_json::Error> {
        let mut object = self.envelope();
        let (Value::Object(map), Some(spec)) = (&mut object, &self.spec) else {
            return Ok(object);
        };
        let spec = match spec {
            SpecOutline::Object(entries) => {
                let mut stand_in = Map::new();
                for (key, raw) in entries {
                    let has_content = text_has_content(raw.get());
                    let value = if parsed.contains(&key.as_ref()) {
                        serde_json::from_str(raw.get())?
                    } else if key == content && raw.get().starts_with('{') {
                        let mut object = Map::new();
                        if has_content {
                            // Ignored by the typed views, which read the content itself.
                            object.insert("stand-in".into(), Value::Bool(true));
                        }
                        Value::Object(object)
                    } else if has_content {
                        Value::Bool(true)
                    } else {
                        Value::Null
                    };
                    stand_in.insert(key.to_string(), value);
                }
                Value::Object(stand_in)
            }
            SpecOutline::Other => Value::Null,
        };
        map.insert("spec".into(), spec);
        Ok(object)
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
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let raw: &'de RawValue = map.next_value()?;
            entries.push((key, raw));
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
    fn bytes_and_value_give_the_same_vex() {
        let object = vex_object();
        let a = from_bytes(&object).unwrap();
        let b = crate::read_vex(&object).unwrap();
        assert_eq!(a.findings, b.findings);
        assert_eq!(a.document, b.document);
        assert_eq!(a.object, b.object);
        assert_eq!(
            (a.shape, a.statement_count, a.duplicates_merged),
            (b.shape, b.statement_count, b.duplicates_merged)
        );
        assert_eq!(a.duplicates_merged, 1);
    }

    #[test]
    fn the_same_errors_in_the_same_order() {
        let mut wrong_kind = vex_object();
        wrong_kind["kind"] = json!("SBOMSyft");
        wrong_kind["spec"]["statements"][0]["status"] = json!(7);
        let mut no_spec = vex_object();
        no_spec["spec"] = json!({});
        let mut stub = vex_object();
        stub["spec"] = json!({"author": "x"});
        let mut no_metadata = vex_object();
        no_metadata.as_object_mut().unwrap().remove("metadata");
        let mut bad_status = vex_object();
        bad_status["spec"]["statements"][1]["status"] = json!("exploitable");
        let mut metadata_only = vex_object();
        metadata_only["spec"] = crate::metadata_only::zero_spec(kinds::VEX).unwrap();
        for object in [
            wrong_kind,
            no_spec,
            metadata_only,
            stub,
            no_metadata,
            bad_status,
            json!([1]),
            json!("x"),
        ] {
            let expected = crate::read_vex(&object).unwrap_err().to_string();
            match from_bytes(&object) {
                Err(ReadError::Invalid(e)) => assert_eq!(e.to_string(), expected),
                other => panic!("{object}: expected {expected}, got {other:?}"),
            }
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
    fn statement_errors_come_after_document_time_errors_in_the_value_readers_order() {
        let mut bad_time_and_status = vex_object();
        bad_time_and_status["spec"]["last_updated"] = json!("yesterday");
        bad_time_and_status["spec"]["statements"][0]["status"] = json!("exploitable");
        let mut two_bad_statements = vex_object();
        two_bad_statements["spec"]["statements"][0]["products"] = json!([]);
        two_bad_statements["spec"]["statements"][1]["status"] = json!("");
        let mut statements_null = vex_object();
        statements_null["spec"]["statements"] = json!(null);
        let mut unknown_fields = vex_object();
        unknown_fields["spec"]["extra"] = json!({"nested": [1, 2]});
        unknown_fields["spec"]["statements"][1]["extra"] = json!("x");
        for object in [bad_time_and_status, two_bad_statements] {
            let expected = crate::read_vex(&object).unwrap_err().to_string();
            let actual = from_bytes(&object).unwrap_err().to_string();
            assert_eq!(actual, expected);
        }
        for object in [statements_null, unknown_fields] {
            let (a, b) = (
                from_bytes(&object).unwrap(),
                crate::read_vex(&object).unwrap(),
            );
            assert_eq!(a.findings, b.findings);
            assert_eq!(a.document, b.document);
            assert_eq!(
                (a.shape, a.statement_count, a.duplicates_merged),
                (b.shape, b.statement_count, b.duplicates_merged)
            );
        }
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
    fn every_shape_and_its_duplicates_read_as_from_a_value() {
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
        for statements in shapes {
            let mut object = vex_object();
            object["spec"]["statements"] = json!(statements);
            let (a, b) = (
                from_bytes(&object).unwrap(),
                crate::read_vex(&object).unwrap(),
            );
            assert_eq!(a.findings, b.findings);
            assert_eq!((a.shape, a.statement_count), (b.shape, b.statement_count));
            assert_eq!(
                (a.duplicates_merged, a.conflicting_duplicates),
                (b.duplicates_merged, b.conflicting_duplicates)
            );
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

    /// `ArtifactShape` accepts what `SyftArtifact` accepts and fails where it fails, with the
    /// same message (which carries the line and column): every artifact of the real Syft SBOMs
    /// in `shared/fixtures`, then one artifact with each field replaced by each JSON type, and
    /// artifacts that are not objects at all.
    #[test]
    fn the_artifact_shape_accepts_and_refuses_what_syft_artifact_does() {
        let outcome = |text: &str| {
            let full = serde_json::from_str::<crate::sbom::SyftArtifact>(text)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let shape = serde_json::from_str::<ArtifactShape>(text)
                .map(|_| ())
                .map_err(|e| e.to_string());
            (full, shape)
        };
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
        let mut artifacts: Vec<Value> = Vec::new();
        for rel in [
            "scanner-reports/kubevuln-alpine-sbom.json",
            "kubescape/sbomsyftfiltered.node-agent-nginx-syft-filtered.json",
        ] {
            let document: Value =
                serde_json::from_slice(&std::fs::read(fixtures.join(rel)).unwrap()).unwrap();
            let found = document
                .pointer("/spec/syft/artifacts")
                .or_else(|| document.pointer("/artifacts"))
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{rel} has artifacts"));
            artifacts.extend(found.iter().cloned());
        }
        assert!(artifacts.len() > 10);
        for artifact in &artifacts {
            let (full, shape) = outcome(&artifact.to_string());
            assert!(full.is_ok(), "{full:?}");
            assert_eq!(full, shape);
        }

        let base = artifacts
            .iter()
            .find(|a| a.get("metadata").is_some() && a.get("locations").is_some())
            .expect("an artifact with metadata and locations")
            .clone();
        let values = [
            json!(null),
            json!(true),
            json!(7),
            json!(-1.5),
            json!("text"),
            json!("esc\"aped"),
            json!([]),
            json!(["a", 1]),
            json!({}),
            json!({"path": "/x", "layerID": 3}),
            json!([{"path": "/x"}]),
            json!([{"path": null, "other": 1}]),
            json!([{"path": 5}]),
            json!([["/x"]]),
            json!([{"accessPath": ["no"]}]),
        ];
        let mut keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
        keys.extend(["unknown".to_string(), "layerID".to_string()]);
        let mut checked = 0;
        for key in &keys {
            for value in &values {
                let mut changed = base.clone();
                changed[key.as_str()] = value.clone();
                let (full, shape) = outcome(&serde_json::to_string_pretty(&changed).unwrap());
                assert_eq!(full, shape, "{key} = {value}");
                checked += 1;
            }
        }
        let mut refused = 0;
        for text in [
            "null",
            "3",
            "\"artifact\"",
            "[]",
            "[\"id\", \"name\"]",
            "{\"id\": \"a\", \"id\": \"b\"}",
            "{\"locations\": [{\"path\": \"/a\", \"path\": \"/b\"}]}",
            "{\"name\": \"a\"",
        ] {
            let (full, shape) = outcome(text);
            refused += usize::from(full.is_err());
            assert_eq!(full, shape, "{text}");
        }
        assert!(checked > 100 && refused == 8, "{checked} {refused}");
    }

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
    fn the_sbom_from_bytes_has_what_the_value_reader_reads() {
        let object = sbom_object();
        let stored = bytes(&object);
        let from_bytes = read_sbom_bytes(&stored).unwrap();
        let from_value = crate::read_sbom(&object).unwrap();
        assert_eq!(from_bytes.sbom.object, from_value.object);
        assert_eq!(from_bytes.sbom.kind, from_value.kind);
        assert_eq!(from_bytes.sbom.metadata, from_value.metadata);
        assert_eq!(from_bytes.artifacts, from_value.syft.artifacts.len());
        assert_eq!(
            serde_json::from_str::<Value>(from_bytes.syft.get()).unwrap(),
            object["spec"]["syft"]
        );
    }

    #[test]
    fn the_manifest_from_bytes_equals_the_value_reader() {
        let object = manifest_object();
        let from_bytes = read_manifest_bytes(&bytes(&object)).unwrap();
        let from_value = crate::read_manifest(&object).unwrap();
        assert_eq!(from_bytes.object, from_value.object);
        assert_eq!(from_bytes.metadata, from_value.metadata);
        assert_eq!(from_bytes.payload, from_value.payload);
    }

    #[test]
    fn content_beside_zero_valued_metadata_is_read_not_taken_for_a_metadata_only_view() {
        // The stand-in holds only `spec.metadata`; the content it replaces must still count.
        let mut sbom = sbom_object();
        sbom["spec"]["metadata"] =
            json!({"tool": {"name": "", "version": ""}, "report": {"createdAt": null}});
        let stored = bytes(&sbom);
        let from_bytes = read_sbom_bytes(&stored).unwrap();
        assert_eq!(from_bytes.artifacts, 2);
        assert_eq!(crate::read_sbom(&sbom).unwrap().syft.artifacts.len(), 2);
        let mut manifest = manifest_object();
        manifest["spec"]["metadata"] = json!(null);
        let from_bytes = read_manifest_bytes(&bytes(&manifest)).unwrap();
        assert_eq!(from_bytes.payload.matches.len(), 1);
        assert_eq!(
            crate::read_manifest(&manifest).unwrap().payload,
            from_bytes.payload
        );
    }

    /// The same message as the `Value` reader, plus where the problem is in the stored bytes.
    fn assert_same_error(from_bytes: ReadError, from_value: ParseError, stored: &[u8]) {
        let ReadError::Invalid(from_bytes) = from_bytes else {
            panic!("JSON that is not a valid object is Invalid, got {from_bytes:?}");
        };
        let (actual, expected) = (from_bytes.to_string(), from_value.to_string());
        if actual == expected {
            return;
        }
        let (text, position) = actual
            .rsplit_once(" at line ")
            .unwrap_or_else(|| panic!("{actual} differs from {expected}"));
        assert_eq!(text, expected);
        let (line, column) = position.split_once(" column ").unwrap();
        let (line, column): (usize, usize) = (line.parse().unwrap(), column.parse().unwrap());
        let line_text = String::from_utf8_lossy(stored)
            .lines()
            .nth(line - 1)
            .unwrap()
            .to_string();
        assert!(
            column <= line_text.len() + 1,
            "{actual}: column {column} is past line {line}: {line_text}"
        );
    }

    #[test]
    fn bad_sboms_give_the_value_readers_errors_with_their_position() {
        let mut cases = Vec::new();
        let mut wrong_kind = sbom_object();
        wrong_kind["kind"] = json!("OpenVulnerabilityExchangeContainer");
        cases.push(wrong_kind);
        let mut no_syft = sbom_object();
        no_syft["spec"]["syft"] = json!(null);
        cases.push(no_syft);
        let mut syft_array = sbom_object();
        syft_array["spec"]["syft"] = json!([]);
        cases.push(syft_array);
        let mut only_other = sbom_object();
        only_other["spec"] = json!({"other": 1});
        cases.push(only_other);
        let mut empty_spec = sbom_object();
        empty_spec["spec"] = json!({});
        cases.push(empty_spec);
        let mut metadata_only = sbom_object();
        metadata_only["spec"] = crate::metadata_only::zero_spec(kinds::SBOM_FILTERED).unwrap();
        cases.push(metadata_only);
        let mut bad_metadata = sbom_object();
        bad_metadata["spec"]["metadata"]["tool"]["name"] = json!(7);
        cases.push(bad_metadata);
        let mut bad_location = sbom_object();
        bad_location["spec"]["syft"]["artifacts"][1]["locations"] = json!([{"path": 7}]);
        cases.push(bad_location);
        let mut artifacts_object = sbom_object();
        artifacts_object["spec"]["syft"]["artifacts"] = json!({});
        cases.push(artifacts_object);
        let mut relationships_string = sbom_object();
        relationships_string["spec"]["syft"]["artifactRelationships"] = json!("x");
        cases.push(relationships_string);
        let mut files_number = sbom_object();
        files_number["spec"]["syft"]["files"] = json!(3);
        cases.push(files_number);
        cases.push(json!(["not", "an", "object"]));
        for object in cases {
            let expected = crate::read_sbom(&object).unwrap_err();
            let stored = bytes(&object);
            let actual = read_sbom_bytes(&stored).unwrap_err();
            assert_same_error(actual, expected, &stored);
        }
    }

    #[test]
    fn bad_manifests_give_the_value_readers_errors_with_their_position() {
        let mut cases = Vec::new();
        let mut no_name = manifest_object();
        no_name["spec"]["payload"]["matches"][0]["artifact"] = json!({"version": "1"});
        cases.push(no_name);
        let mut no_payload = manifest_object();
        no_payload["spec"]["payload"] = json!("x");
        cases.push(no_payload);
        let mut bad_versions = manifest_object();
        bad_versions["spec"]["payload"]["matches"][0]["vulnerability"]["fix"]["versions"] =
            json!([1]);
        cases.push(bad_versions);
        let mut bad_relevancy = manifest_object();
        bad_relevancy["spec"]["metadata"]["withRelevancy"] = json!("yes");
        cases.push(bad_relevancy);
        let mut no_metadata = manifest_object();
        no_metadata.as_object_mut().unwrap().remove("metadata");
        cases.push(no_metadata);
        let mut metadata_only = manifest_object();
        metadata_only["spec"] = crate::metadata_only::zero_spec(kinds::MANIFEST).unwrap();
        cases.push(metadata_only);
        for object in cases {
            let expected = crate::read_manifest(&object).unwrap_err();
            let stored = bytes(&object);
            let actual = read_manifest_bytes(&stored).unwrap_err();
            assert_same_error(actual, expected, &stored);
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
