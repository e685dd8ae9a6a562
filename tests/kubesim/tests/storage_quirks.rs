//! The Kubescape storage server's quirks, each reproduced as `pkg/registry/file/storage.go` and
//! `watch.go` behave: LIST without a resourceVersion, a watch without initial events, replay,
//! bookmarks or 410, selectors ignored, metadata-only views with each kind's zero-valued spec.

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

type Events = futures::stream::BoxStream<'static, kube::Result<WatchEvent<DynamicObject>>>;

/// The next event of a watch, within 5 s.
async fn next_event(stream: &mut Events) -> Option<WatchEvent<DynamicObject>> {
    tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("an event within 5 s")
        .expect("no error")
}

/// The zero-valued spec of a metadata-only VEX view, as the storage server serialises it.
fn zero_vex_spec() -> serde_json::Value {
    json!({"@context": "", "@id": "", "author": "", "timestamp": "", "version": 0, "statements": null})
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
        zero_vex_spec(),
        "LIST without fullSpec carries the zero-valued spec"
    );
    assert!(
        listed.items[0].data.get("status").is_none(),
        "the VEX kind has no status"
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
    assert_eq!(view.data["spec"], zero_vex_spec());
    assert_eq!(view.metadata.name.as_deref(), Some("one"));
    assert_eq!(
        view.metadata.resource_version,
        got.metadata.resource_version
    );
    let again = api.get("one").await.unwrap();
    assert_eq!(again.data, got.data);
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_only_views_carry_each_kinds_zero_spec_and_status() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let gvk = GroupVersionKind::gvk(
        "spdx.softwarecomposition.kubescape.io",
        "v1beta1",
        "ContainerProfile",
    );
    let ar = ApiResource::from_gvk_with_plural(&gvk, "containerprofiles");
    let profiles: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let profile: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "ContainerProfile",
        "metadata": {"name": "p", "annotations": {"kubescape.io/status": "ready"}},
        "spec": {"architectures": ["amd64"], "imageID": "sha256:1", "execs": [{"path": "/bin/sh"}]},
    }))
    .unwrap();
    profiles
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    let view = profiles
        .get_with("p", &GetParams::at("metadata"))
        .await
        .unwrap();
    // `ContainerProfileSpec`'s json tags: nil slices and maps are null, strings "", the
    // embedded seccomp profile's non-omitempty `defaultAction` is there; `Status` is `{}`.
    assert_eq!(
        view.data["spec"],
        json!({"architectures": null, "capabilities": null, "execs": null, "opens": null,
               "syscalls": null, "seccompProfile": {"spec": {"defaultAction": ""}},
               "endpoints": null, "imageID": "", "imageTag": "", "rulePolicies": null,
               "identifiedCallStacks": null, "ingress": null, "egress": null})
    );
    assert_eq!(view.data["status"], json!({}));
    assert_eq!(
        view.metadata.annotations.unwrap()["kubescape.io/status"],
        "ready",
        "the metadata is the stored one"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn list_has_no_resource_version_and_continue_only_for_a_full_page() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let api = vex_api(&client, Some("kubescape"));
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &vex(name, "x", 1))
            .await
            .unwrap();
    }
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 3);
    assert_eq!(all.metadata.resource_version, None);
    assert_eq!(
        all.metadata.continue_, None,
        "a page short of 500 is the last"
    );

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.resource_version, None);
    assert_eq!(first.metadata.remaining_item_count, None);
    let token = first
        .metadata
        .continue_
        .expect("a full page has a continue token");
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.metadata.continue_, None);
    // A page exactly as long as the limit carries a token even when nothing follows.
    let exact = api.list(&ListParams::default().limit(3)).await.unwrap();
    let token = exact.metadata.continue_.expect("full page");
    let after = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert!(after.items.is_empty());

    // Which is why kube-runtime's watcher cannot follow the storage group.
    // It reads the list (Init, InitApply …) and then fails instead of finishing it.
    let mut stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).boxed();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Err(kube::runtime::watcher::Error::NoResourceVersion))) => break,
            Ok(Some(Ok(
                kube::runtime::watcher::Event::Init | kube::runtime::watcher::Event::InitApply(_),
            ))) => {}
            other => panic!("expected NoResourceVersion, got {other:?}"),
        }
    }
    // A core resource's list does carry one.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "kubescape");
    let listed = cms.list(&ListParams::default()).await.unwrap();
    assert!(listed.metadata.resource_version.is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors_are_ignored() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let api = vex_api(&client, Some("kubescape"));
    api.create(&PostParams::default(), &vex("one", "a", 1))
        .await
        .unwrap();
    api.create(&PostParams::default(), &vex("two", "b", 1))
        .await
        .unwrap();
    let by_label = api
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    assert_eq!(
        by_label.items.len(),
        2,
        "the storage server does not filter by label"
    );
    let by_field = api
        .list(&ListParams::default().fields("metadata.name=one"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 2, "nor by field");
    // A watch does not filter either.
    let mut watch = vex_api(&client, None)
        .watch(
            &WatchParams::default()
                .labels("team=a")
                .fields("metadata.name=one"),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &vex("three", "c", 1))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), watch.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("three")),
        other => panic!("expected ADDED three, got {other:?}"),
    }
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
async fn a_watch_streams_only_later_writes_whatever_resource_version_it_is_given() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let namespaced = vex_api(&client, Some("kubescape"));
    let all = vex_api(&client, None);
    let before = namespaced
        .create(&PostParams::default(), &vex("before", "a", 1))
        .await
        .unwrap();
    let old = before.metadata.resource_version.clone().unwrap();

    let mut idle = namespaced
        .watch(&WatchParams::default().timeout(2), "0")
        .await
        .unwrap()
        .boxed();
    // Bookmarks asked for (kube's default), a resourceVersion to resume from, one long gone:
    // none of it is served.
    let mut meta_only = all
        .watch(&WatchParams::default().timeout(3), &old)
        .await
        .unwrap()
        .boxed();
    let mut from_zero = all
        .watch(&WatchParams::default().timeout(3), "0")
        .await
        .unwrap()
        .boxed();
    let mut full = all
        .watch(&WatchParams::default().timeout(3), "fullSpec")
        .await
        .unwrap()
        .boxed();
    let mut gone = all
        .watch(&WatchParams::default().timeout(3), "1")
        .await
        .unwrap()
        .boxed();
    namespaced
        .create(&PostParams::default(), &vex("after", "a", 3))
        .await
        .unwrap();

    for stream in [&mut meta_only, &mut from_zero, &mut gone] {
        match next_event(stream).await {
            Some(WatchEvent::Added(o)) => {
                assert_eq!(o.metadata.name.as_deref(), Some("after"), "no replay");
                assert_eq!(o.data["spec"], zero_vex_spec());
            }
            other => panic!("expected ADDED after, got {other:?}"),
        }
    }
    match next_event(&mut full).await {
        Some(WatchEvent::Added(o)) => {
            assert_eq!(
                o.metadata.name.as_deref(),
                Some("after"),
                "no initial events"
            );
            assert_eq!(o.data["spec"]["statements"].as_array().unwrap().len(), 3)
        }
        other => panic!("expected ADDED after, got {other:?}"),
    }
    // Nothing more (no bookmark, no 410) until the timeout ends each watch.
    for stream in [&mut meta_only, &mut from_zero, &mut full, &mut gone] {
        let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(6), stream.collect::<Vec<_>>())
            .await
            .expect("the watch ends at its timeout");
        assert!(rest.is_empty(), "{rest:?}");
    }
    // The namespaced watch stays open without events until its timeout ends it.
    let res = tokio::time::timeout(Duration::from_secs(5), idle.next())
        .await
        .expect("the idle watch ends at its timeout");
    assert!(res.is_none(), "namespaced watch delivered {res:?}");
    sim.shutdown().await;
}

/// Storage's queue handler refuses a VEX body over the chart's 500,000 bytes with Go's
/// `http.Error`: a plain-text 413, which kube-rs can only reconstruct as a Status.
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
            assert_eq!(
                (s.code, s.message.as_str()),
                (413, "Request entity too large")
            )
        }
        other => panic!("expected 413, got {other:?}"),
    }
    assert!(api.get_opt("huge").await.unwrap().is_none());
    api.create(&PostParams::default(), &vex("small", "a", 100))
        .await
        .unwrap();
    sim.shutdown().await;
}

/// More than the chart's 50 requests of one kind in the server at once: storage's queue
/// handler answers 429 in plain text. Watches and metadata-only reads skip the queue.
#[tokio::test]
async fn a_full_queue_answers_429_in_plain_text_and_metadata_reads_pass() {
    let mut config = fast_config();
    // Every request stays 100 ms in the server and the VEX queue has one worker, so of 60 sent
    // at once, those past the queue's 50 places are refused.
    config.faults.latency_ms = 100;
    let sim = start(config).await;
    let mut no_retry = kube::Config::new(sim.url().parse().expect("url"));
    // kube's own retry layer would hide the 429s.
    no_retry.default_retry = false;
    let client = kube::Client::try_from(no_retry).expect("client");
    let api = vex_api(&client, Some("kubescape"));
    api.create(&PostParams::default(), &vex("v", "a", 3))
        .await
        .unwrap();

    let full_gets = futures::future::join_all((0..60).map(|_| api.get("v"))).await;
    let refused: Vec<_> = full_gets
        .iter()
        .filter_map(|r| match r {
            Err(kube::Error::Api(s)) => Some((s.code, s.message.clone())),
            _ => None,
        })
        .collect();
    assert!(
        !refused.is_empty()
            && refused
                .iter()
                .all(|r| *r == (429, "Too Many Requests (queue full)".to_string())),
        "{refused:?}"
    );
    assert!(
        full_gets.iter().filter(|r| r.is_ok()).count() >= 1,
        "the admitted ones are served"
    );

    let metadata = GetParams::at("metadata");
    let metadata_gets =
        futures::future::join_all((0..60).map(|_| api.get_with("v", &metadata))).await;
    assert!(
        metadata_gets.iter().all(Result::is_ok),
        "metadata-only reads skip the queue"
    );
    sim.shutdown().await;
}
