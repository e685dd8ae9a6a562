//! The Kubescape storage server's quirks, each reproduced (facts §2).

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DynamicObject, GetParams, GroupVersionKind, ListParams, PostParams,
    WatchEvent, WatchParams,
};
use serde_json::json;

fn vex_api(client: &kube::Client, ns: Option<&str>) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(
        "spdx.softwarecomposition.kubescape.io",
        "v1beta1",
        "OpenVulnerabilityExchangeContainer",
    );
    let ar = ApiResource::from_gvk_with_plural(&gvk, "openvulnerabilityexchangecontainers");
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn vex(name: &str, label: &str, statements: usize) -> DynamicObject {
    let stmts: Vec<_> = (0..statements)
        .map(|i| json!({"vulnerability": {"@id": format!("CVE-2024-{i:05}")}, "status": "not_affected", "justification": "vulnerable_code_not_present",
                        "products": [{"@id": "pkg:oci/nginx?repository_url=docker.io%2Flibrary", "subcomponents": [{"@id": format!("pkg:deb/debian/pkg{i}@1.0")}]}]}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "OpenVulnerabilityExchangeContainer",
        "metadata": {"name": name, "labels": {"team": label}},
        "spec": {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "abc", "author": "kubescape.io", "timestamp": "2025-01-01T00:00:00Z", "version": 0, "statements": stmts},
    }))
    .unwrap()
}

#[tokio::test]
async fn list_is_metadata_only_unless_full_spec_and_get_is_full() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let api = vex_api(&client, Some("kubescape"));
    api.create(&PostParams::default(), &vex("one", "a", 2))
        .await
        .unwrap();

    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].data["spec"],
        json!({}),
        "LIST without fullSpec carries no spec"
    );
    let full = api
        .list(&ListParams::default().at("fullSpec"))
        .await
        .unwrap();
    assert_eq!(
        full.items[0].data["spec"]["statements"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let got = api.get("one").await.unwrap();
    assert_eq!(got.data["spec"]["statements"].as_array().unwrap().len(), 2);
    // The metadata-only view of a GET, and full GETs on either side of it (one from kubesim's
    // cache of the stored object's bytes), each get what they asked for.
    let view = api
        .get_with("one", &GetParams::at("metadata"))
        .await
        .unwrap();
    assert_eq!(view.data["spec"], json!({}));
    assert_eq!(view.metadata.name.as_deref(), Some("one"));
    let again = api.get("one").await.unwrap();
    assert_eq!(again.data, got.data);
    sim.shutdown().await;
}

#[tokio::test]
async fn label_selectors_are_ignored() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let api = vex_api(&client, Some("kubescape"));
    api.create(&PostParams::default(), &vex("one", "a", 1))
        .await
        .unwrap();
    api.create(&PostParams::default(), &vex("two", "b", 1))
        .await
        .unwrap();
    let listed = api
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        2,
        "the storage server does not filter by label"
    );
    // A normal resource does filter.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "kubescape");
    assert!(
        cms.list(&ListParams::default().labels("team=a"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn namespaced_watch_is_idle_cluster_watch_works() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let namespaced = vex_api(&client, Some("kubescape"));
    let all = vex_api(&client, None);

    let mut idle = namespaced
        .watch(&WatchParams::default().timeout(2), "0")
        .await
        .unwrap()
        .boxed();
    let mut meta_only = all
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut full = all
        .watch(&WatchParams::default(), "fullSpec")
        .await
        .unwrap()
        .boxed();
    namespaced
        .create(&PostParams::default(), &vex("one", "a", 3))
        .await
        .unwrap();

    match tokio::time::timeout(Duration::from_secs(5), meta_only.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Added(o)) => assert_eq!(o.data["spec"], json!({})),
        other => panic!("expected ADDED, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(5), full.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Added(o)) => {
            assert_eq!(o.data["spec"]["statements"].as_array().unwrap().len(), 3)
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    // The namespaced watch stays open without events until its timeout ends it.
    let res = tokio::time::timeout(Duration::from_secs(5), idle.next())
        .await
        .expect("the idle watch ends at its timeout");
    assert!(res.is_none(), "namespaced watch delivered {res:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn vex_writes_over_500000_bytes_get_413() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let api = vex_api(&client, Some("kubescape"));
    let err = api
        .create(&PostParams::default(), &vex("huge", "a", 5000))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (413, "RequestEntityTooLarge"))
        }
        other => panic!("expected 413, got {other:?}"),
    }
    assert!(api.get_opt("huge").await.unwrap().is_none());
    api.create(&PostParams::default(), &vex("small", "a", 100))
        .await
        .unwrap();
    sim.shutdown().await;
}
