//! The Kubernetes REST API: routing, verbs, storage-group quirks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vexxy_kubescape::metadata_only as metadata_view;

use crate::app::App;
use crate::errors::ApiError;
use crate::patch::{self, PatchType};
use crate::resources::{self, Resource};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Propagation, name_of, namespace_of};
use crate::{discovery, table, watch};

/// A resolved resource URL.
#[derive(Debug)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

enum Route {
    Version,
    Health,
    Api,
    Apis,
    Group(String),
    ResourceList(String, String),
    OpenApiIndex,
    OpenApiGroupVersion(String),
    Resource(Target),
    NotFound,
}

fn parse_rest(group: &str, version: &str, rest: &[&str]) -> Route {
    if rest.is_empty() {
        return Route::ResourceList(group.to_string(), version.to_string());
    }
    let known = |plural: &str| resources::find(group, plural).filter(|r| r.version == version);
    if rest[0] == "namespaces"
        && rest.len() >= 3
        && let Some(r) = known(rest[2]).filter(|r| r.namespaced)
    {
        if rest.len() > 5 {
            return Route::NotFound;
        }
        return Route::Resource(Target {
            resource: r,
            namespace: Some(rest[1].to_string()),
            name: rest.get(3).map(|s| s.to_string()),
            subresource: rest.get(4).map(|s| s.to_string()),
        });
    }
    match known(rest[0]) {
        Some(r) if rest.len() <= 3 => Route::Resource(Target {
            resource: r,
            namespace: None,
            name: rest.get(1).map(|s| s.to_string()),
            subresource: rest.get(2).map(|s| s.to_string()),
        }),
        _ => Route::NotFound,
    }
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz"] | ["readyz"] | ["livez"] => Route::Health,
        ["api"] => Route::Api,
        ["api", "v1", rest @ ..] => parse_rest("", "v1", rest),
        ["apis"] => Route::Apis,
        ["apis", g] => Route::Group(g.to_string()),
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", rest @ ..] => Route::OpenApiGroupVersion(rest.join("/")),
        ["apis", g, v, rest @ ..] => parse_rest(g, v, rest),
        _ => Route::NotFound,
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    // Straight into bytes: `to_string` goes through `fmt::Write`, slow for a large object.
    json_bytes_response(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

fn json_bytes_response(code: StatusCode, body: Bytes) -> Response {
    (code, [("content-type", "application/json")], body).into_response()
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|s| s == "1" || s == "true")
}

/// The verb, as counters and fault rules name it.
pub fn verb_of(method: &Method, target: &Target, query: &HashMap<String, String>) -> &'static str {
    match (method.as_str(), target.name.is_some()) {
        ("GET", true) if is_true(query.get("watch")) => "watch",
        ("GET", true) => "get",
        ("GET", false) if is_true(query.get("watch")) => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// The storage server's metadata-only view (LIST without `fullSpec`, GET with
/// `resourceVersion=metadata`, watch without `fullSpec`): the stored metadata in the typed Go
/// object, so the spec (and status) are the zero values of the kind, not absent and not `{}`
/// (see `vexxy_kubescape::metadata_only`).
pub fn metadata_only(r: &Resource, obj: &Value) -> Value {
    let mut view = serde_json::Map::new();
    view.insert("kind".into(), json!(r.kind));
    view.insert("apiVersion".into(), json!(r.api_version()));
    view.insert(
        "metadata".into(),
        obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    );
    view.insert(
        "spec".into(),
        metadata_view::zero_spec(r.kind).unwrap_or_else(|| json!({})),
    );
    if let Some(status) = metadata_view::zero_status(r.kind) {
        view.insert("status".into(), status);
    }
    Value::Object(view)
}

/// Entry point for every non-control request.
pub async fn handle(
    app: Arc<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    tracing::debug!(%method, %uri, accept = ?headers.get("accept"), content_type = ?headers.get("content-type"), "request");
    let installed = app.kubescape_installed();
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let discovery_get = |v: Option<Value>| -> Response {
        app.count("get", "discovery");
        match v {
            Some(v) => json_response(StatusCode::OK, &v),
            None => ApiError::no_route().into_response(),
        }
    };
    match route(uri.path()) {
        Route::Version => discovery_get(Some(discovery::version())),
        Route::Health => (StatusCode::OK, "ok").into_response(),
        Route::Api => discovery_get(Some(discovery::api_versions(&app.addr.to_string()))),
        Route::Apis => discovery_get(Some(discovery::group_list(installed))),
        Route::Group(g) => discovery_get(discovery::group(&g, installed)),
        Route::ResourceList(g, v) => discovery_get(discovery::resource_list(&g, &v, installed)),
        Route::OpenApiIndex => discovery_get(Some(crate::openapi::index(installed))),
        Route::OpenApiGroupVersion(p) => {
            discovery_get(crate::openapi::group_version(&p, installed))
        }
        Route::NotFound => ApiError::no_route().into_response(),
        Route::Resource(target) => {
            if target.resource.is_kubescape_storage() && !installed {
                return ApiError::no_route().into_response();
            }
            let query = query_map(&uri);
            let verb = verb_of(&method, &target, &query);
            let counted = match &target.subresource {
                Some(sub) => format!("{}/{sub}", target.resource.qualified()),
                None => target.resource.qualified(),
            };
            app.count(verb, &counted);
            // Storage's queue handler sits in front of its API server, so the queue is taken
            // before anything else (faults' latency included: a slow storage fills its queues).
            let _admitted =
                if target.resource.is_kubescape_storage() && crate::storage_queue::queued(&query) {
                    let content_length = headers
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    match app
                        .storage_queues
                        .admit(target.resource.plural, content_length)
                        .await
                    {
                        Ok(admitted) => Some(admitted),
                        Err(refused) => return refused.into_response(),
                    }
                } else {
                    None
                };
            if let Some(err) = app.inject_fault(verb, &counted).await {
                return err.into_response();
            }
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            match serve(
                &app,
                &method,
                verb,
                target,
                &query,
                &accept,
                &content_type,
                body,
            )
            .await
            {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    app: &Arc<App>,
    method: &Method,
    verb: &str,
    target: Target,
    query: &HashMap<String, String>,
    accept: &str,
    content_type: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = target.resource;
    if body.len() > ApiError::MAX_REQUEST_BODY_BYTES {
        return Err(ApiError::request_too_large());
    }
    if r.namespaced && target.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::no_route());
    }
    if !r.namespaced && target.namespace.is_some() {
        return Err(ApiError::no_route());
    }
    if target.subresource.as_deref() == Some("scale")
        && matches!(r.plural, "deployments" | "replicasets")
    {
        return scale(app, verb, &target, content_type, &body);
    }
    let status_only = match target.subresource.as_deref() {
        None => false,
        Some("status") if r.has_status => true,
        Some(other) => {
            return Err(ApiError::not_found(
                r.group,
                &format!("{}/{other}", r.plural),
                target.name.as_deref().unwrap_or(""),
            ));
        }
    };
    let ns = target.namespace.clone().unwrap_or_default();
    let store = &app.store;
    let storage_quirks = r.is_kubescape_storage();
    match verb {
        "get" => {
            let name = target.name.as_deref().unwrap_or("");
            let stored = store.get_shared(r, &ns, name)?;
            let metadata_view = (storage_quirks
                && query.get("resourceVersion").map(String::as_str) == Some("metadata"))
            .then(|| metadata_only(r, &stored));
            let obj = metadata_view.as_ref().unwrap_or(&stored);
            if table::wants_table(accept) {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(
                        r,
                        std::slice::from_ref(obj),
                        None,
                        query.get("includeObject").map(String::as_str) == Some("Object"),
                    ),
                ));
            }
            let body = match &metadata_view {
                // Built for this request alone: nothing to keep.
                Some(view) => Bytes::from(serde_json::to_vec(view).unwrap_or_default()),
                None => app.serialized.bytes_of(&stored),
            };
            Ok(json_bytes_response(StatusCode::OK, body))
        }
        "list" => list(app, r, target.namespace.as_deref(), query, accept),
        "watch" => {
            let name_field = target.name.as_ref().map(|n| format!("metadata.name={n}"));
            watch::serve(
                app.clone(),
                r,
                target.namespace.clone(),
                query,
                accept,
                name_field,
            )
        }
        "create" => {
            if target.name.is_some() {
                return Err(ApiError::method_not_allowed(format!(
                    "POST is not allowed on a single {}",
                    r.singular
                )));
            }
            let obj = patch::parse_object_body(content_type, &body)?;
            let created = store.create(r, &ns, obj)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        "update" => {
            let name = target
                .name
                .as_deref()
                .ok_or_else(|| ApiError::method_not_allowed("PUT needs an object name"))?;
            let obj = patch::parse_object_body(content_type, &body)?;
            let updated = store.update(r, &ns, name, obj, status_only)?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        "patch" => {
            let name = target
                .name
                .as_deref()
                .ok_or_else(|| ApiError::method_not_allowed("PATCH needs an object name"))?;
            let patch_type = PatchType::from_content_type(content_type)?;
            if patch_type == PatchType::Apply && store.get(r, &ns, name).is_err() {
                if status_only {
                    return Err(ApiError::not_found(r.group, r.plural, name));
                }
                let mut obj = patch::apply_patch(PatchType::Apply, &json!({}), &body)?;
                if obj.pointer("/metadata/name").is_none() {
                    obj["metadata"]["name"] = json!(name);
                }
                let created = store.create(r, &ns, obj)?;
                return Ok(json_response(StatusCode::CREATED, &created));
            }
            let updated = store.update_with(r, &ns, name, status_only, |cur| {
                patch::apply_patch(patch_type, cur, &body)
            })?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        "delete" => {
            let name = target.name.as_deref().unwrap_or("");
            let deleted = store.delete(r, &ns, name, propagation(query, &body))?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        "deletecollection" => {
            let (items, _) = store.list(r, target.namespace.as_deref());
            let labels = label_selector(r, query)?;
            let fields = field_selector(r, query)?;
            let prop = propagation(query, &body);
            let mut deleted = Vec::new();
            for item in items
                .iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
            {
                if let Ok(d) = store.delete(r, namespace_of(item), name_of(item), prop) {
                    deleted.push(d);
                }
            }
            let deleted: Vec<&Value> = deleted.iter().map(|d| &**d).collect();
            let list = json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()},
                "items": deleted,
            });
            Ok(json_response(StatusCode::OK, &list))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}",
            r.qualified()
        ))),
    }
}

fn propagation(query: &HashMap<String, String>, body: &[u8]) -> Propagation {
    let from_body = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                v.get("orphanDependents")
                    .and_then(Value::as_bool)
                    .filter(|b| *b)
                    .map(|_| "Orphan".to_string())
            })
    });
    let policy = query.get("propagationPolicy").cloned().or(from_body);
    let orphan_flag = query.get("orphanDependents").is_some_and(|v| v == "true");
    if policy.as_deref() == Some("Orphan") || orphan_flag {
        Propagation::Orphan
    } else {
        Propagation::Cascade
    }
}

/// The label selector of a request; the storage group ignores it (kubescape storage `GetList`
/// and `Watch` never look at the predicate's selectors).
pub fn label_selector(
    r: &Resource,
    query: &HashMap<String, String>,
) -> Result<LabelSelector, ApiError> {
    if r.is_kubescape_storage() {
        return Ok(LabelSelector::default());
    }
    LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
}

/// The field selector of a request; the storage group ignores it like the label selector.
pub fn field_selector(
    r: &Resource,
    query: &HashMap<String, String>,
) -> Result<FieldSelector, ApiError> {
    if r.is_kubescape_storage() {
        return Ok(FieldSelector::default());
    }
    FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
}

/// The storage server's default page size (`GetListWithConn`).
const STORAGE_PAGE: usize = 500;

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    hex::encode(format!("{rv}\n{ns}\n{name}"))
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid continue token {token:?}: pass back the token of the previous page unchanged"
        ))
    };
    let raw = String::from_utf8(hex::decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, '\n');
    let rv = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let ns = parts.next().ok_or_else(bad)?.to_string();
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok((rv, ns, name))
}

fn list(
    app: &Arc<App>,
    r: &'static Resource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let labels = label_selector(r, query)?;
    let fields = field_selector(r, query)?;
    let storage = r.is_kubescape_storage();
    let trim = storage && query.get("resourceVersion").map(String::as_str) != Some("fullSpec");
    let (mut matching, current_rv) = app.store.list_map(r, ns, |o| {
        (labels.matches(o) && fields.matches(o))
            .then(|| if trim { metadata_only(r, o) } else { o.clone() })
    });
    let mut list_rv = current_rv;
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let (rv, cns, cname) = decode_continue(token)?;
        list_rv = rv;
        matching.retain(|o| (namespace_of(o), name_of(o)) > (cns.as_str(), cname.as_str()));
    }
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid limit {l:?}: expected a non-negative integer"
            ))
        })?),
        None => None,
    };
    let mut cont = None;
    let mut remaining = None;
    if storage {
        // `GetListWithConn`: pages of 500 unless a limit is given, `continue` whenever a page
        // is full (even when nothing follows), never a resourceVersion or remainingItemCount.
        let limit = limit.filter(|l| *l > 0).unwrap_or(STORAGE_PAGE);
        matching.truncate(limit);
        if matching.len() == limit {
            let last = matching.last().expect("non-empty page");
            cont = Some(encode_continue(list_rv, namespace_of(last), name_of(last)));
        }
    } else if let Some(limit) = limit.filter(|l| *l > 0)
        && matching.len() > limit
    {
        remaining = Some(matching.len() - limit);
        matching.truncate(limit);
        let last = matching.last().expect("non-empty page");
        cont = Some(encode_continue(list_rv, namespace_of(last), name_of(last)));
    }
    // The storage server's list carries no resourceVersion (`SetResourceVersion` is commented
    // out), so a client cannot watch "from this list" (kube-runtime's watcher fails with
    // `NoResourceVersion`).
    let list_rv = (!storage).then(|| list_rv.to_string());
    if table::wants_table(accept) {
        let mut t = table::table(
            r,
            &matching,
            list_rv,
            query.get("includeObject").map(String::as_str) == Some("Object"),
        );
        if let Some(c) = cont {
            t["metadata"]["continue"] = json!(c);
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    let mut meta = json!({});
    if let Some(rv) = list_rv {
        meta["resourceVersion"] = json!(rv);
    }
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(remaining) = remaining {
        meta["remainingItemCount"] = json!(remaining);
    }
    let list = json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": meta,
        "items": matching,
    });
    Ok(json_response(StatusCode::OK, &list))
}

fn scale_object(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name_of(obj),
            "namespace": namespace_of(obj),
            "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
            "resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

/// The `scale` subresource of Deployments and ReplicaSets (what `kubectl scale` uses).
fn scale(
    app: &Arc<App>,
    verb: &str,
    target: &Target,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let r = target.resource;
    let ns = target.namespace.as_deref().unwrap_or("");
    let name = target
        .name
        .as_deref()
        .ok_or_else(|| ApiError::method_not_allowed("scale needs an object name"))?;
    let new_scale = match verb {
        "get" => {
            return Ok(json_response(
                StatusCode::OK,
                &scale_object(&app.store.get(r, ns, name)?),
            ));
        }
        "update" => patch::parse_body(body)?,
        "patch" => {
            let current = scale_object(&app.store.get(r, ns, name)?);
            patch::apply_patch(PatchType::from_content_type(content_type)?, &current, body)?
        }
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "{verb} is not supported on {}/scale",
                r.plural
            )));
        }
    };
    let replicas = new_scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                name,
                "spec.replicas: Invalid value: must be a non-negative integer",
            )
        })?;
    let updated = app.store.update_with(r, ns, name, false, |cur| {
        let mut c = cur.clone();
        c["spec"]["replicas"] = json!(replicas);
        Ok(c)
    })?;
    Ok(json_response(StatusCode::OK, &scale_object(&updated)))
}
