//! kubesim as Kubescape for a real cluster: the storage API as an aggregated API server behind a
//! real kube-apiserver, and node-agent's and kubevuln's behaviour driven by the real cluster's
//! pods.
//!
//! Kubescape's storage server cannot be built here (the Go module proxy refuses
//! `github.com/kubescape/storage` at every version), and node-agent and kubevuln need eBPF and a
//! vulnerability database download. So in this mode kubesim:
//! * serves HTTPS (self-signed; the APIService says `insecureSkipTLSVerify`, as Kubescape's chart
//!   does) and is registered with the real API server as
//!   `v1beta1.spdx.softwarecomposition.kubescape.io`, through a Service of type ExternalName
//!   pointing at 127.0.0.1 (no kube-proxy is needed for that);
//! * installs Kubescape's other objects (namespace, `ks-cloud-config`, the component
//!   Deployments and node-agent's DaemonSet, whose pods kwok "runs") into the real cluster, so
//!   install-check sees what the chart creates;
//! * mirrors the real cluster's namespaces, ReplicaSets and pods into its own store (a watch
//!   through the Kubernetes API, as node-agent learns of containers from the API too), where the
//!   same emulator as in the standalone mode turns running containers into ContainerProfiles and
//!   scans. Its own Deployment/ReplicaSet/pod controllers do not run: the real
//!   controller-manager, scheduler and kwok do that work.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::app::{App, stopped};
use crate::resources::{self, Resource};
use crate::store::{Propagation, name_of, namespace_of};

/// Who the objects kubesim applies to the real cluster belong to (server-side apply).
const FIELD_MANAGER: &str = "kubesim";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read the real cluster's kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("cannot make a self-signed serving certificate: {0}")]
    Certificate(String),
    #[error("cannot install Kubescape's objects into the real cluster ({what}): {source}")]
    Install { what: String, source: kube::Error },
}

/// A kube-rs client for the real cluster.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, UpstreamError> {
    let error = |message: String| UpstreamError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        message,
    };
    let yaml = std::fs::read_to_string(kubeconfig).map_err(|e| error(e.to_string()))?;
    let parsed = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| error(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| error(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| error(e.to_string()))
}

/// A self-signed certificate for 127.0.0.1 and localhost, as (certificate PEM, key PEM).
pub fn self_signed_certificate() -> Result<(String, String), UpstreamError> {
    let certified = rcgen::generate_simple_self_signed(vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
        "localhost".to_string(),
    ])
    .map_err(|e| UpstreamError::Certificate(e.to_string()))?;
    Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
}

/// The real cluster's view of Kubescape's installation: the objects kubesim keeps in its own
/// store, with the storage Service pointing at kubesim and no status (the real aggregator
/// decides whether the APIService is available).
pub fn upstream_objects(
    local: Vec<(&'static Resource, Value)>,
    port: u16,
) -> Vec<(&'static Resource, Value)> {
    local
        .into_iter()
        .map(|(resource, mut object)| {
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                for key in ["resourceVersion", "uid", "creationTimestamp", "generation"] {
                    metadata.remove(key);
                }
            }
            if let Some(object) = object.as_object_mut() {
                object.remove("status");
            }
            if resource.kind == "Service" && name_of(&object) == "storage" {
                object["spec"] = json!({
                    "type": "ExternalName",
                    "externalName": "127.0.0.1",
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                });
            }
            if resource.kind == "APIService" {
                object["spec"]["service"]["port"] = json!(port);
            }
            (resource, object)
        })
        .collect()
}

/// Keeps the real cluster's Kubescape installation in step with kubesim's `installed` setting
/// (which the stand-in helm and the control endpoint flip): installs at start when set, and
/// again or removes it whenever it changes.
pub async fn follow_installation(
    app: Arc<App>,
    client: kube::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = app.config_changes();
    let mut applied: Option<bool> = None;
    loop {
        let config = changes.borrow_and_update().clone();
        let wanted = config.kubescape.installed;
        if applied != Some(wanted) {
            let result = if wanted {
                let objects = crate::kubescape::installation_objects(
                    &config.cluster_name,
                    &config.kubescape.capabilities,
                );
                install(&client, upstream_objects(objects, app.addr.port())).await
            } else {
                uninstall(&client).await
            };
            match result {
                Ok(()) => {
                    tracing::info!(
                        installed = wanted,
                        "Kubescape's objects in the real cluster updated"
                    );
                    applied = Some(wanted);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot update Kubescape's objects in the real cluster; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        () = stopped(&mut shutdown) => return,
                    }
                }
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = stopped(&mut shutdown) => return,
        }
    }
}

/// Removes what [`install`] applied: the APIService (the storage group stops being served) and
/// the `kubescape` namespace with everything in it.
pub async fn uninstall(client: &kube::Client) -> Result<(), UpstreamError> {
    let delete = kube::api::DeleteParams::default();
    for resource in [
        resources::find("apiregistration.k8s.io", "apiservices").expect("apiservices"),
        resources::namespaces(),
    ] {
        let api = Api::<DynamicObject>::all_with(client.clone(), &api_resource_of(resource));
        let name = if resource == resources::namespaces() {
            crate::kubescape::NAMESPACE
        } else {
            crate::kubescape::APISERVICE
        };
        match api.delete(name, &delete).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(UpstreamError::Install {
                    what: format!("deleting {} {name}", resource.kind),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Applies Kubescape's installation objects to the real cluster (server-side apply, so a
/// restarted kubesim takes them over again).
pub async fn install(
    client: &kube::Client,
    objects: Vec<(&'static Resource, Value)>,
) -> Result<(), UpstreamError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (resource, mut object) in objects {
        let api_version = if resource.group.is_empty() {
            resource.version.to_string()
        } else {
            format!("{}/{}", resource.group, resource.version)
        };
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(resource.kind);
        let gvk = GroupVersionKind::gvk(resource.group, resource.version, resource.kind);
        let api_resource = ApiResource::from_gvk_with_plural(&gvk, resource.plural);
        let name = name_of(&object).to_string();
        let namespace = namespace_of(&object).to_string();
        let api: Api<DynamicObject> = if resource.namespaced {
            Api::namespaced_with(client.clone(), &namespace, &api_resource)
        } else {
            Api::all_with(client.clone(), &api_resource)
        };
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|source| UpstreamError::Install {
                what: format!("{} {namespace}/{name}", resource.kind),
                source,
            })?;
    }
    Ok(())
}

/// Keeps namespaces, ReplicaSets and pods of the real cluster in kubesim's store for as long as
/// kubesim runs: what the emulator reacts to.
pub async fn mirror(app: Arc<App>, client: kube::Client, shutdown: watch::Receiver<bool>) {
    let kinds: [(&'static Resource, ApiResource); 3] = [
        (
            resources::namespaces(),
            api_resource_of(resources::namespaces()),
        ),
        (
            resources::replicasets(),
            api_resource_of(resources::replicasets()),
        ),
        (resources::pods(), api_resource_of(resources::pods())),
    ];
    let tasks = kinds.into_iter().map(|(resource, api_resource)| {
        let app = app.clone();
        let api = Api::<DynamicObject>::all_with(client.clone(), &api_resource);
        let mut shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = follow(app, resource, api) => {}
                () = stopped(&mut shutdown) => {}
            }
        }
    });
    futures::future::join_all(tasks).await;
}

fn api_resource_of(resource: &'static Resource) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(resource.group, resource.version, resource.kind),
        resource.plural,
    )
}

/// One kind's watch, applied to the store: a relist replaces what is held.
async fn follow(app: Arc<App>, resource: &'static Resource, api: Api<DynamicObject>) {
    let mut listed: Option<Vec<(String, String)>> = None;
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object)) => copy_in(&app, resource, object),
            Ok(watcher::Event::Delete(object)) => {
                let ns = object.metadata.namespace.clone().unwrap_or_default();
                let name = object.metadata.name.clone().unwrap_or_default();
                // The real cluster deletes owned objects itself; mirror each deletion alone.
                let _ = app.store.delete(resource, &ns, &name, Propagation::Orphan);
            }
            Ok(watcher::Event::Init) => listed = Some(Vec::new()),
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(listed) = listed.as_mut() {
                    listed.push((
                        object.metadata.namespace.clone().unwrap_or_default(),
                        object.metadata.name.clone().unwrap_or_default(),
                    ));
                }
                copy_in(&app, resource, object);
            }
            Ok(watcher::Event::InitDone) => {
                // Namespaces are only ever removed by a deletion seen: kubesim's own
                // `kubescape` namespace (its storage objects) may exist before the real one.
                if let Some(listed) = listed.take()
                    && resource != resources::namespaces()
                {
                    forget_unlisted(&app, resource, &listed);
                }
            }
            Err(error) => {
                tracing::warn!(%error, kind = resource.kind, "watching the real cluster failed; retrying")
            }
        }
    }
}

fn copy_in(app: &App, resource: &'static Resource, object: DynamicObject) {
    let mut value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(error) => {
            tracing::warn!(%error, kind = resource.kind, "cannot copy an object of the real cluster");
            return;
        }
    };
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        // kubesim keeps its own resourceVersions; the real cluster's bookkeeping is noise here.
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    let ns = namespace_of(&value).to_string();
    let name = name_of(&value).to_string();
    // A write to the main resource keeps the stored status (the status subresource's rule),
    // so the real cluster's status is copied with a second, status-only write.
    let status = value.get("status").cloned();
    let mut copied = app.store.upsert(resource, &ns, value).map(|_| ());
    if let (Ok(()), true, Some(status)) = (&copied, resource.has_status, status) {
        copied = app
            .store
            .update_with(resource, &ns, &name, true, |_| {
                Ok(json!({"status": status}))
            })
            .map(|_| ());
    }
    if let Err(error) = copied {
        tracing::warn!(error = %error.message, kind = resource.kind, name, "cannot mirror an object of the real cluster");
    }
}

fn forget_unlisted(app: &App, resource: &'static Resource, listed: &[(String, String)]) {
    let (held, _) = app.store.list(resource, None);
    for object in held {
        let key = (
            namespace_of(&object).to_string(),
            name_of(&object).to_string(),
        );
        let key = if resource.namespaced {
            key
        } else {
            (String::new(), key.1)
        };
        if !listed.contains(&key) {
            let _ = app
                .store
                .delete(resource, &key.0, &key.1, Propagation::Orphan);
        }
    }
}
