//! A minimal OpenAPI v3 surface: the index and, per group/version, the PATCH operations with
//! their `x-kubernetes-group-version-kind` and the `fieldValidation` query parameter. That is
//! what kubectl's validation looks for before it delegates field validation to the server
//! (so `kubectl apply -f` works without `--validate=false`). No schemas are served: kubectl then
//! builds strategic merge patches from its compiled-in types, and merge patches for others.

use serde_json::{Map, Value, json};

use crate::resources::{self, Resource};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn served(r: &Resource, installed: bool) -> bool {
    installed || !r.is_kubescape_storage()
}

/// `/openapi/v3`
pub fn index(installed: bool) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    gvs.extend(resources::groups());
    for (g, v) in gvs {
        if !installed && g == resources::KUBESCAPE_GROUP {
            continue;
        }
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kubesim")}),
        );
    }
    json!({"paths": paths})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`; None when not served.
pub fn group_version(path: &str, installed: bool) -> Option<Value> {
    let (group, version) = match path
        .trim_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let rs: Vec<&Resource> = resources::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && served(r, installed))
        .collect();
    if rs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in rs {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |action: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(
            item,
            json!({
                "get": op("get", vec![]),
                "put": op("put", vec![param("dryRun"), param("fieldManager"), param("fieldValidation")]),
                "patch": op("patch", vec![param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")]),
                "delete": op("delete", vec![param("dryRun"), param("propagationPolicy")]),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-kubesim"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
