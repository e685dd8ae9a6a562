//! Watches: initial events, history replay from a resourceVersion, 410 Gone, bookmarks,
//! timeouts, injected drops, and the storage group's watch.
//!
//! Storage group semantics (kubescape storage `pkg/registry/file/storage.go` `Watch`,
//! `watch.go`): a namespaced watch is accepted and stays idle; a cluster-wide watch registers a
//! listener for the writes that follow and nothing else. The resourceVersion only chooses what
//! the events carry (`fullSpec`: full objects, anything else: metadata-only views); there are no
//! initial events, no replay from a resourceVersion, no bookmarks and never 410 Gone, and
//! selectors are ignored. An object written while a client re-opens its watch is seen only by
//! a GET or LIST.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::api::{field_selector, label_selector, metadata_only};
use crate::app::{App, OpenWatch};
use crate::errors::ApiError;
use crate::resources::Resource;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{StoreEvent, namespace_of};
use crate::table;

/// One line of a watch stream, as the apiserver writes it.
#[derive(serde::Serialize)]
struct WatchLine<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    object: &'a Value,
}

struct Filter {
    resource: &'static Resource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    full_spec: bool,
    as_table: bool,
    include_object: bool,
}

impl Filter {
    fn matches(&self, resource: &Resource, obj: &Value) -> bool {
        resource == self.resource
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| namespace_of(obj) == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    fn render(&self, event_type: &str, obj: &Value) -> Bytes {
        let trimmed;
        let obj = if self.full_spec {
            obj
        } else {
            trimmed = metadata_only(self.resource, obj);
            &trimmed
        };
        let table;
        let obj = if self.as_table {
            table = table::table(
                self.resource,
                std::slice::from_ref(obj),
                None,
                self.include_object,
            );
            &table
        } else {
            obj
        };
        // Serialised in place: one watch event per watcher must not copy the object first.
        let line = WatchLine {
            event_type,
            object: obj,
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

fn stream_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Body::from_stream(stream)
}

fn streaming_response(rx: mpsc::Receiver<Bytes>) -> Response {
    (
        StatusCode::OK,
        [
            ("content-type", "application/json"),
            ("cache-control", "no-cache"),
        ],
        stream_body(rx),
    )
        .into_response()
}

pub fn serve(
    app: Arc<App>,
    resource: &'static Resource,
    namespace: Option<String>,
    query: &HashMap<String, String>,
    accept: &str,
    name_field: Option<String>,
) -> Result<Response, ApiError> {
    let rv_param = query.get("resourceVersion").cloned().unwrap_or_default();
    let storage = resource.is_kubescape_storage();
    let mut fields = field_selector(resource, query)?;
    if let Some(nf) = name_field.filter(|_| !storage) {
        fields = FieldSelector::parse(&nf)?;
    }
    let filter = Filter {
        resource,
        namespace: namespace.clone(),
        labels: label_selector(resource, query)?,
        fields,
        full_spec: !storage || rv_param == "fullSpec",
        as_table: table::wants_table(accept),
        include_object: query.get("includeObject").map(String::as_str) == Some("Object"),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let (faults, timings) = {
        let cfg = app.config();
        (cfg.faults, cfg.timings)
    };
    let drop_after = faults.watch_drop_after_ms.map(Duration::from_millis);
    let deadline = [timeout, drop_after]
        .into_iter()
        .flatten()
        .min()
        .map(|d| Instant::now() + d);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let bookmark_every = Duration::from_millis(timings.bookmark_interval_ms.max(10));

    if storage && namespace.is_some() {
        // "rejecting Watch called with namespace": the storage server returns an idle watch.
        let open = app.open_watch(resource.qualified());
        let mut shutdown = app.shutdown.clone();
        tokio::spawn(async move {
            let _open = open;
            let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = tx.closed() => {}
                _ = crate::app::stopped(&mut shutdown) => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        });
        return Ok(streaming_response(rx));
    }

    if storage {
        // A listener from now on, whatever resourceVersion was asked for.
        let open = app.open_watch(resource.qualified());
        let (_, events) = app.store.watch_from(None)?;
        tokio::spawn(run(
            app.shutdown.clone(),
            filter,
            tx,
            Vec::new(),
            events,
            None,
            0,
            deadline,
            faults.watch_drop_after_events,
            false,
            bookmark_every,
            open,
        ));
        return Ok(streaming_response(rx));
    }

    let start_rv = match rv_param.as_str() {
        "" | "0" | "fullSpec" => None,
        other => Some(other.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {other:?}: expected a resourceVersion from a previous list or watch"))
        })?),
    };
    // Held by the task that serves the watch, so it counts as open until that task ends. A
    // request refused above never opened one; a 410 Gone below is a watch whose stream ends
    // after its one ERROR line, and counts while that line is sent.
    let open = app.open_watch(resource.qualified());
    let (backlog, events) = match app.store.watch_from(start_rv) {
        Ok(x) => x,
        Err(gone) => {
            // Like the apiserver: HTTP 200, then one ERROR event carrying the 410 Status.
            let line = format!("{}\n", json!({"type": "ERROR", "object": gone.status()}));
            tokio::spawn(async move {
                let _open = open;
                let _ = tx.send(Bytes::from(line)).await;
            });
            return Ok(streaming_response(rx));
        }
    };
    let initial = if start_rv.is_none() {
        let (items, rv) = app.store.list_map(resource, namespace.as_deref(), |o| {
            filter.matches(resource, o).then(|| o.clone())
        });
        Some((items, rv))
    } else {
        None
    };
    let start = start_rv.unwrap_or(0);
    let drop_after_events = faults.watch_drop_after_events;
    tokio::spawn(run(
        app.shutdown.clone(),
        filter,
        tx,
        backlog,
        events,
        initial,
        start,
        deadline,
        drop_after_events,
        bookmarks,
        bookmark_every,
        open,
    ));
    Ok(streaming_response(rx))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
    backlog: Vec<Arc<StoreEvent>>,
    mut events: broadcast::Receiver<Arc<StoreEvent>>,
    initial: Option<(Vec<Value>, u64)>,
    start_rv: u64,
    deadline: Option<Instant>,
    drop_after_events: Option<u64>,
    bookmarks: bool,
    bookmark_every: Duration,
    // Last, so dropped first: the watch stops counting as open before `tx` ends its stream,
    // and a client re-watching at once is never counted twice.
    mut open: OpenWatch,
) {
    let mut sent = 0u64;
    let mut last_rv = start_rv;
    let limit_reached = |sent: u64| drop_after_events.is_some_and(|n| sent >= n);
    macro_rules! send {
        ($bytes:expr) => {{
            if tx.send($bytes).await.is_err() {
                return;
            }
            sent += 1;
            if limit_reached(sent) {
                return;
            }
        }};
    }
    if let Some((items, rv)) = initial {
        last_rv = rv;
        for obj in items.iter().filter(|o| filter.matches(filter.resource, o)) {
            send!(filter.render("ADDED", obj));
        }
    }
    for ev in backlog {
        last_rv = last_rv.max(ev.rv);
        if filter.matches(ev.resource, &ev.object) {
            send!(filter.render(ev.event_type.as_str(), &ev.object));
        }
    }
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let deadline = deadline.unwrap_or(far);
    let mut ticker = tokio::time::interval_at(Instant::now() + bookmark_every, bookmark_every);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = crate::app::stopped(&mut shutdown) => return,
            _ = tokio::time::sleep_until(deadline) => return,
            r = events.recv() => match r {
                Ok(ev) => {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if filter.matches(ev.resource, &ev.object) {
                        send!(filter.render(ev.event_type.as_str(), &ev.object));
                    }
                }
                // A slow watcher is closed; it re-watches from its last resourceVersion.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    open.fell_behind = true;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                let bookmark = json!({
                    "type": "BOOKMARK",
                    "object": {
                        "kind": filter.resource.kind,
                        "apiVersion": filter.resource.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}
                    }
                });
                send!(Bytes::from(format!("{bookmark}\n")));
            }
        }
    }
}
