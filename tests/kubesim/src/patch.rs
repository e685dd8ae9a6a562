//! PATCH bodies: JSON merge patch, JSON patch, strategic merge patch (approximated) and
//! server-side apply (approximated as a strategic merge that creates when absent).

use serde_json::{Map, Value};

use crate::errors::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// The body of a create or update, by its media type as the real API server takes them: JSON
/// or YAML (or none given, as some clients send); protobuf is refused with 415, which the real
/// API server accepts (kubesim cannot decode it: see tests/kubesim/README.md); anything else 415.
pub fn parse_object_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "" | "application/json" | "application/yaml" => parse_body(body),
        "application/vnd.kubernetes.protobuf" => Err(ApiError::unsupported_media_type_note(
            content_type,
            "kubesim does not decode protobuf bodies (a real API server does); send JSON, e.g. \
             `kubectl apply -f` or `kubectl create ... -o yaml --dry-run=client | kubectl apply -f -`",
        )),
        _ => Err(ApiError::unsupported_media_type(content_type)),
    }
}

/// Parses a body that may be JSON or YAML.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    serde_yaml_ng::from_slice::<Value>(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is neither valid JSON nor valid YAML: {e}"
        ))
    })
}

/// Applies a patch body to `target`.
pub fn apply_patch(patch_type: PatchType, target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut out = target.clone();
    match patch_type {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the JSON patch is not a valid RFC 6902 document: {e}"
                ))
            })?;
            json_patch::patch(&mut out, &patch.0).map_err(|e| {
                ApiError::invalid(
                    "Object",
                    "",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the merge patch is not valid JSON: {e}"))
            })?;
            json_patch::merge(&mut out, &patch);
        }
        PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the strategic merge patch is not valid JSON: {e}"))
            })?;
            strategic_merge(&mut out, &patch);
        }
        PatchType::Apply => {
            let mut patch = parse_body(body)?;
            if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
                m.remove("resourceVersion");
            }
            strategic_merge(&mut out, &patch);
        }
    }
    Ok(out)
}

/// The element key strategic merge uses for lists of objects: Kubernetes merges containers,
/// env, volumes, volumeMounts, ports (by name) etc.; kubesim uses `name` when every element has
/// one, `containerPort` for port lists, and otherwise replaces the list.
fn merge_key(items: &[Value]) -> Option<&'static str> {
    ["name", "containerPort"]
        .into_iter()
        .find(|&k| !items.is_empty() && items.iter().all(|i| i.get(k).is_some()))
}

/// An approximation of strategic merge patch: maps merge like JSON merge patch (null deletes),
/// lists of keyed objects merge element-wise (`$patch: delete` removes an element,
/// `$setElementOrder/<field>` orders them), other lists are replaced, and directive keys
/// (`$retainKeys`, `$deleteFromPrimitiveList/...`) never end up in the stored object.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        strip_directives(&mut p);
        *target = p;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tmap = target.as_object_mut().expect("object");
    for (k, v) in patch_map {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            tmap.remove(k);
            continue;
        }
        match (tmap.get_mut(k), v) {
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic_merge(cur, v),
            (Some(Value::Array(cur)), Value::Array(new)) => {
                let all: Vec<Value> = cur.iter().chain(new.iter()).cloned().collect();
                if let Some(key) = merge_key(&all).filter(|_| !cur.is_empty()) {
                    let order = patch_map
                        .get(&format!("$setElementOrder/{k}"))
                        .and_then(Value::as_array)
                        .map(|o| {
                            o.iter()
                                .filter_map(|e| e.get(key).cloned())
                                .collect::<Vec<_>>()
                        });
                    merge_keyed_list(cur, new, key, order);
                } else {
                    let mut n = v.clone();
                    strip_directives(&mut n);
                    tmap.insert(k.clone(), n);
                }
            }
            _ => {
                let mut n = v.clone();
                strip_directives(&mut n);
                tmap.insert(k.clone(), n);
            }
        }
    }
}

fn merge_keyed_list(cur: &mut Vec<Value>, new: &[Value], key: &str, order: Option<Vec<Value>>) {
    for item in new {
        let id = item.get(key).cloned();
        let pos = cur.iter().position(|c| c.get(key) == id.as_ref());
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(p), true) => {
                cur.remove(p);
            }
            (None, true) => {}
            (Some(p), false) => strategic_merge(&mut cur[p], item),
            (None, false) => {
                let mut n = item.clone();
                strip_directives(&mut n);
                cur.push(n);
            }
        }
    }
    if let Some(order) = order {
        cur.sort_by_key(|c| {
            c.get(key)
                .and_then(|id| order.iter().position(|o| o == id))
                .unwrap_or(usize::MAX)
        });
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_keeps_unpatched_container_fields() {
        let mut obj = json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "y:1"}
        ]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x:2"}, {"name": "c", "$patch": "delete"}]}});
        strategic_merge(&mut obj, &patch);
        assert_eq!(
            obj,
            json!({"spec": {"containers": [
                {"name": "b", "image": "y:1"},
                {"name": "a", "image": "x:2", "ports": [{"containerPort": 80}]}
            ]}})
        );
    }

    #[test]
    fn null_deletes_and_json_patch_works() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = apply_patch(
            PatchType::Merge,
            &obj,
            br#"{"metadata":{"labels":{"a":null}}}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2"}}}));
        let out = apply_patch(
            PatchType::Json,
            &obj,
            br#"[{"op":"replace","path":"/metadata/labels/a","value":"9"}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["a"], "9");
        assert!(
            apply_patch(
                PatchType::Json,
                &obj,
                br#"[{"op":"test","path":"/x","value":1}]"#
            )
            .is_err()
        );
    }

    #[test]
    fn apply_accepts_yaml() {
        let out = apply_patch(PatchType::Apply, &json!({}), b"metadata:\n  name: x\n").unwrap();
        assert_eq!(out, json!({"metadata": {"name": "x"}}));
    }
}
