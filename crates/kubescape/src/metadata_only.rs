//! The storage server's metadata-only view of an object, and how a reader tells it from a full
//! one.
//!
//! Kubescape storage keeps each object's `ObjectMeta` apart from its payload. A LIST without
//! `resourceVersion=fullSpec`, a GET with `resourceVersion=metadata` and a watch without
//! `fullSpec` answer with that stored metadata unmarshalled into the typed Go object and
//! serialised again (`pkg/registry/file/storage.go`: `saveObject` stores
//! `extractFields(obj, ObjectMeta)`, `get`/`GetListWithConn` unmarshal it). The spec of such a
//! view is therefore not absent and not `{}` but the Go zero value of the spec type as its json
//! tags serialise it: `"statements": null`, `"version": 0`, `"@id": ""` for a VEX. Go's
//! `omitempty` never drops a struct, so every nested struct is there too.
//!
//! [`zero_spec`] and [`zero_status`] give those shapes per kind (derived from the json tags of
//! `pkg/apis/softwarecomposition/v1beta1`: `types.go`, `grype_types.go`, `syfttypes.go`), for
//! kubesim to answer like the real server. [`has_content`] is how readers tell a real spec from
//! a metadata-only one, whatever the kind.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

use crate::keys::kinds;

/// The spec a metadata-only view of `kind` carries, or `None` for a kind outside the storage
/// group's served kinds.
pub fn zero_spec(kind: &str) -> Option<Value> {
    // The Syft document (`SBOMSyftSpec`) of both SBOM kinds.
    let zero_sbom_spec = || {
        json!({
            "metadata": {"tool": {"name": "", "version": ""}, "report": {"createdAt": null}},
            "syft": {
                "artifacts": null,
                "artifactRelationships": null,
                "source": {"id": "", "name": "", "version": "", "type": "", "metadata": null},
                "distro": {},
                "descriptor": {"name": "", "version": ""},
                "schema": {"version": "", "url": ""},
            },
        })
    };
    let zero_scope = || json!({"namespace": "", "name": "", "kind": ""});
    Some(match kind {
        kinds::VEX => json!({
            "@context": "", "@id": "", "author": "", "timestamp": "", "version": 0, "statements": null,
        }),
        kinds::CONTAINER_PROFILE => json!({
            "architectures": null,
            "capabilities": null,
            "execs": null,
            "opens": null,
            "syscalls": null,
            "seccompProfile": {"spec": {"defaultAction": ""}},
            "endpoints": null,
            "imageID": "",
            "imageTag": "",
            "rulePolicies": null,
            "identifiedCallStacks": null,
            "ingress": null,
            "egress": null,
        }),
        kinds::APPLICATION_PROFILE => json!({"architectures": null}),
        kinds::SBOM | kinds::SBOM_FILTERED => zero_sbom_spec(),
        kinds::MANIFEST => json!({
            "metadata": {
                "withRelevancy": false,
                "tool": {"name": "", "version": "", "databaseVersion": ""},
                "report": {"createdAt": null},
            },
            "payload": {
                "matches": null,
                "source": null,
                "distro": {"name": "", "version": "", "idLike": null},
                "descriptor": {"name": "", "version": ""},
            },
        }),
        kinds::SUMMARY => {
            let counters = json!({"all": 0});
            json!({
                "severities": {
                    "critical": counters, "high": counters, "medium": counters,
                    "low": counters, "negligible": counters, "unknown": counters,
                },
                "vulnerabilitiesRef": {"all": zero_scope(), "relevant": zero_scope()},
            })
        }
        _ => return None,
    })
}

/// The status a metadata-only view of `kind` carries: `{}` for the kinds whose Go type has a
/// (field-less) `Status`, `None` for the VEX kind, which has none.
pub fn zero_status(kind: &str) -> Option<Value> {
    match kind {
        kinds::CONTAINER_PROFILE
        | kinds::APPLICATION_PROFILE
        | kinds::SBOM
        | kinds::SBOM_FILTERED
        | kinds::MANIFEST
        | kinds::SUMMARY => Some(json!({})),
        _ => None,
    }
}

/// Whether a spec carries anything beyond the zero value of its type, i.e. is not what a
/// metadata-only view (or a stripped, absent or `null` spec) holds. A value has content when it
/// has a leaf other than `null`, `""`, `0` or `false`, or any array: Go writes a nil slice as
/// `null`, so a zero value never has one.
pub fn has_content(spec: Option<&Value>) -> bool {
    spec.is_some_and(|spec| ZeroValued::deserialize(spec).is_err())
}

/// [`has_content`] for a value's JSON text, reading only as far as its first non-zero leaf (a
/// VEX's `statements` array is content at its first byte).
pub(crate) fn text_has_content(text: &str) -> bool {
    serde_json::from_str::<ZeroValued>(text).is_err()
}

/// Deserialises only from a zero value; anything else is an error at the first content found,
/// so a large document is not read to its end.
struct ZeroValued;

impl<'de> Deserialize<'de> for ZeroValued {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ZeroVisitor)
    }
}

struct ZeroVisitor;

fn content<E: serde::de::Error>() -> E {
    E::custom("the value has content")
}

impl<'de> Visitor<'de> for ZeroVisitor {
    type Value = ZeroValued;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a zero value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<ZeroValued, E> {
        Ok(ZeroValued)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<ZeroValued, E> {
        Ok(ZeroValued)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ZeroValued, E> {
        if v { Err(content()) } else { Ok(ZeroValued) }
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ZeroValued, E> {
        if v == 0 {
            Ok(ZeroValued)
        } else {
            Err(content())
        }
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ZeroValued, E> {
        if v == 0 {
            Ok(ZeroValued)
        } else {
            Err(content())
        }
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ZeroValued, E> {
        if v == 0.0 {
            Ok(ZeroValued)
        } else {
            Err(content())
        }
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ZeroValued, E> {
        if v.is_empty() {
            Ok(ZeroValued)
        } else {
            Err(content())
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<ZeroValued, A::Error> {
        Err(A::Error::custom("an array is content"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ZeroValued, A::Error> {
        while map.next_entry::<IgnoredAny, ZeroValued>()?.is_some() {}
        Ok(ZeroValued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORAGE_KINDS: [&str; 7] = [
        kinds::VEX,
        kinds::CONTAINER_PROFILE,
        kinds::APPLICATION_PROFILE,
        kinds::SBOM,
        kinds::SBOM_FILTERED,
        kinds::MANIFEST,
        kinds::SUMMARY,
    ];

    #[test]
    fn every_zero_spec_and_status_has_no_content() {
        for kind in STORAGE_KINDS {
            let spec = zero_spec(kind).unwrap();
            assert!(!has_content(Some(&spec)), "{kind}: {spec}");
            assert!(!text_has_content(&spec.to_string()), "{kind}");
            if let Some(status) = zero_status(kind) {
                assert!(!has_content(Some(&status)), "{kind}");
            }
        }
        assert_eq!(zero_spec("Pod"), None);
        assert_eq!(zero_status(kinds::VEX), None);
    }

    #[test]
    fn the_vex_zero_spec_is_the_go_zero_value() {
        // `Metadata` is embedded (its fields inline); `role`, `last_updated`, `tooling` and
        // `supplier` are `omitempty`, the others are not.
        assert_eq!(
            zero_spec(kinds::VEX).unwrap().to_string(),
            r#"{"@context":"","@id":"","author":"","timestamp":"","version":0,"statements":null}"#
        );
    }

    #[test]
    fn any_non_zero_leaf_or_array_is_content() {
        for value in [
            json!({"version": 1}),
            json!({"statements": []}),
            json!({"a": {"b": {"c": "x"}}}),
            json!({"withRelevancy": true}),
            json!({"score": 0.5}),
            json!({"n": -1}),
            json!("x"),
            json!([]),
        ] {
            assert!(has_content(Some(&value)), "{value}");
            assert!(text_has_content(&value.to_string()), "{value}");
        }
        for value in [
            json!(null),
            json!({}),
            json!({"a": {"b": null, "c": ""}}),
            json!(0),
        ] {
            assert!(!has_content(Some(&value)), "{value}");
            assert!(!text_has_content(&value.to_string()), "{value}");
        }
        assert!(!has_content(None));
    }
}
