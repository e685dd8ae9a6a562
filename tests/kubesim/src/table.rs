//! Server-side printing (`meta.k8s.io/v1 Table`), which kubectl asks for on `get`.

use serde_json::{Value, json};

use crate::resources::Resource;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn age(obj: &Value) -> String {
    let Some(ts) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
    else {
        return "<unknown>".into();
    };
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<invalid>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Pod STATUS the way kubectl shows it: a waiting/terminated reason wins over the phase.
pub fn pod_status(pod: &Value) -> String {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for cs in statuses.into_iter().flatten() {
        if let Some(r) = cs.pointer("/state/waiting/reason").and_then(Value::as_str) {
            return r.to_string();
        }
        if let Some(r) = cs
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            return r.to_string();
        }
    }
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
        .to_string()
}

fn columns_and_cells(
    resource: &Resource,
    obj: &Value,
) -> (Vec<(&'static str, &'static str)>, Vec<Value>) {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    match resource.plural {
        "pods" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| {
                s.iter().filter(|c| c["ready"] == json!(true)).count()
            });
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum()
            });
            (
                vec![
                    ("Name", "string"),
                    ("Ready", "string"),
                    ("Status", "string"),
                    ("Restarts", "string"),
                    ("Age", "string"),
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(obj)),
                    json!(restarts.to_string()),
                    json!(age(obj)),
                ],
            )
        }
        "deployments" => (
            vec![
                ("Name", "string"),
                ("Ready", "string"),
                ("Up-to-date", "integer"),
                ("Available", "integer"),
                ("Age", "string"),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    obj.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                json!(age(obj)),
            ],
        ),
        "replicasets" => (
            vec![
                ("Name", "string"),
                ("Desired", "integer"),
                ("Current", "integer"),
                ("Ready", "integer"),
                ("Age", "string"),
            ],
            vec![
                name,
                json!(
                    obj.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                json!(age(obj)),
            ],
        ),
        "namespaces" => (
            vec![("Name", "string"), ("Status", "string"), ("Age", "string")],
            vec![
                name,
                obj.pointer("/status/phase")
                    .cloned()
                    .unwrap_or(json!("Active")),
                json!(age(obj)),
            ],
        ),
        "events" => (
            vec![
                ("Last Seen", "string"),
                ("Type", "string"),
                ("Reason", "string"),
                ("Object", "string"),
                ("Message", "string"),
            ],
            vec![
                json!(age(obj)),
                obj.get("type").cloned().unwrap_or(json!("")),
                obj.get("reason").cloned().unwrap_or(json!("")),
                json!(format!(
                    "{}/{}",
                    obj.pointer("/involvedObject/kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_lowercase(),
                    obj.pointer("/involvedObject/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                )),
                obj.get("message").cloned().unwrap_or(json!("")),
            ],
        ),
        _ => (
            vec![("Name", "string"), ("Age", "string")],
            vec![name, json!(age(obj))],
        ),
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A Table of `objects`; `resource_version` goes into the list metadata.
pub fn table(
    resource: &Resource,
    objects: &[Value],
    resource_version: Option<String>,
    include_object: bool,
) -> Value {
    let sample = objects.first().cloned().unwrap_or(json!({}));
    let (columns, _) = columns_and_cells(resource, &sample);
    let column_definitions: Vec<Value> = columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            json!({"name": name, "type": ty, "format": if *name == "Name" { "name" } else { "" }, "description": name, "priority": if i < 5 { 0 } else { 1 }})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let (_, cells) = columns_and_cells(resource, o);
            let object = if include_object {
                o.clone()
            } else {
                partial_metadata(o)
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": column_definitions, "rows": rows})
}
