//! Readers that take the stored bytes of an object instead of a `serde_json::Value`, for
//! documents large enough that the `Value` tree costs more than the reading itself (a 10,000
//! statement VEX is ~5 MB of JSON and several times that as a `Value`).
//!
//! Two passes over the bytes, so the checks happen in the same order and with the same errors
//! as the `Value` readers: the first checks the JSON syntax and reads only `kind`, `metadata`
//! and the outline of `spec` (which keys it has) without keeping anything else; the second
//! deserializes `spec` straight into the typed view.

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ParseError;
use crate::keys::kinds;
use crate::object::read_envelope;
use crate::vex::{self, KubescapeVex, VexDocument};

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

/// [`crate::read_vex`] on the stored bytes of an OpenVulnerabilityExchangeContainer.
pub fn read_vex_bytes(bytes: &[u8]) -> Result<KubescapeVex, ReadError> {
    let outline: Outline = serde_json::from_slice(bytes)?;
    let info = read_envelope(&outline.envelope(), &[kinds::VEX])?;
    let spec = match outline.spec {
        Some(SpecOutline::Object {
            entries,
            has_document_key,
        }) if entries > 0 => has_document_key,
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
        spec: VexDocument,
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let doc = serde_path_to_error::deserialize::<_, SpecOnly>(&mut deserializer)
        .map_err(|e| ParseError::from_serde(kinds::VEX, &info.name, "", e))?
        .spec;
    Ok(vex::normalise(info, doc)?)
}

/// The top level of a storage object, without the content of `spec`.
#[derive(Default)]
struct Outline {
    /// `None` when the top level is not an object: the JSON type it is instead.
    not_an_object: Option<Value>,
    kind: Option<Value>,
    metadata: Option<Value>,
    spec: Option<SpecOutline>,
}

enum SpecOutline {
    Object {
        entries: usize,
        /// `statements`, `@context` or `@id` present (what tells a VEX spec from a stub).
        has_document_key: bool,
    },
    Other,
}

impl Outline {
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
}

impl<'de> Deserialize<'de> for Outline {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OutlineVisitor)
    }
}

/// A value of the same JSON type as a top level that is not an object, for the "expected a JSON
/// object, got …" error.
fn stand_in(value: Value) -> Outline {
    Outline {
        not_an_object: Some(value),
        ..Outline::default()
    }
}

struct OutlineVisitor;

impl<'de> Visitor<'de> for OutlineVisitor {
    type Value = Outline;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outline, A::Error> {
        let mut outline = Outline::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outline, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(stand_in(Value::Array(Vec::new())))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Outline, E> {
        Ok(stand_in(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Outline, E> {
        Ok(stand_in(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Outline, E> {
        Ok(stand_in(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Outline, E> {
        Ok(stand_in(Value::from(v)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Outline, E> {
        Ok(stand_in(Value::String(String::new())))
    }
    fn visit_unit<E>(self) -> Result<Outline, E> {
        Ok(stand_in(Value::Null))
    }
}

struct SpecSeed;

impl<'de> DeserializeSeed<'de> for SpecSeed {
    type Value = SpecOutline;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SpecOutline, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = SpecOutline;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecOutline, A::Error> {
        let mut entries = 0;
        let mut has_document_key = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            entries += 1;
            has_document_key |= matches!(key.as_ref(), "statements" | "@context" | "@id");
            map.next_value::<IgnoredAny>()?;
        }
        Ok(SpecOutline::Object {
            entries,
            has_document_key,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SpecOutline, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(SpecOutline::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<SpecOutline, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<SpecOutline, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<SpecOutline, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<SpecOutline, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<SpecOutline, E> {
        Ok(SpecOutline::Other)
    }
    fn visit_unit<E>(self) -> Result<SpecOutline, E> {
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
        for object in [
            wrong_kind,
            no_spec,
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
