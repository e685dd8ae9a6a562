//! kubesim driven by kube-rs: Api verbs, errors, watcher restarts, discovery.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubesim::Faults;
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API status error, got {other:?}"),
    }
}

#[tokio::test]
async fn api_verbs_and_errors() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = cms
        .create(&PostParams::default(), &cm("a", json!({"tier": "x"})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({"tier": "y"})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &cm("a", json!({})))
                .await
                .unwrap_err()
        ),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_code(cms.get("nope").await.unwrap_err()),
        (404, "NotFound".into())
    );

    let other_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "missing-ns");
    assert_eq!(
        api_code(
            other_ns
                .create(&PostParams::default(), &cm("a", json!({})))
                .await
                .unwrap_err()
        )
        .0,
        404
    );

    // Label and field selectors, pagination.
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let kube_root = |l: &kube::core::ObjectList<ConfigMap>| {
        l.items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("kube-root-ca.crt"))
    };
    let all = cms.list(&ListParams::default()).await.unwrap();
    assert!(!kube_root(&all));
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("tier=x"))
                .await
                .unwrap()
        ),
        vec!["a"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("tier in (x,y)"))
                .await
                .unwrap()
        ),
        vec!["a", "b"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("!tier"))
                .await
                .unwrap()
        ),
        vec!["c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("tier!=x"))
                .await
                .unwrap()
        ),
        vec!["b", "c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        vec!["b"]
    );
    let page1 = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().expect("continue token");
    let page2 = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(page2), vec!["c"]);

    // Update with a stale resourceVersion conflicts; a fresh one works.
    let mut stale = created.clone();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    stale.data = Some([("k".to_string(), "v3".to_string())].into());
    assert_eq!(
        api_code(
            cms.replace("a", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        (409, "Conflict".into())
    );
    let fresh = cms.get("a").await.unwrap();
    let mut edit = fresh.clone();
    edit.data = Some([("k".to_string(), "v4".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &edit)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        fresh.metadata.resource_version
    );

    // JSON patch, server-side apply (create when absent), strategic merge.
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "jp"}]))
            .unwrap();
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "jp");
    let applied = cms
        .patch("ssa", &PatchParams::apply("test").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "1"}})))
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["x"], "1");
    let smp = cms
        .patch(
            "ssa",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"y": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(smp.data.unwrap().len(), 2);

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_code(cms.get("a").await.unwrap_err()).0, 404);

    // Deleting a namespace deletes what is in it.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap(),
    )
    .await
    .unwrap();
    let scratch: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    scratch
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    nss.delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(scratch.get("x").await.unwrap_err()).0, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn watcher_survives_dropped_watches_and_gone() {
    let mut cfg = fast_config();
    cfg.watch_history = 5;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Raw watch from a resourceVersion older than the history: one ERROR event with 410 Expired.
    let old_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("fill-{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut raw = cms
        .watch(&kube::api::WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), raw.next())
        .await
        .unwrap()
    {
        Some(Err(kube::Error::Api(s))) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        Some(Ok(kube::api::WatchEvent::Error(s))) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 Expired watch error, got {other:?}"),
    }

    // BOOKMARK events when asked for.
    let now_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut bm = cms
        .watch(&kube::api::WatchParams::default(), &now_rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), bm.next())
        .await
        .unwrap()
    {
        Some(Ok(kube::api::WatchEvent::Bookmark(b))) => {
            let at: u64 = b.metadata.resource_version.parse().unwrap();
            assert!(
                at >= now_rv.parse::<u64>().unwrap(),
                "bookmark {at} is older than the watch start {now_rv}"
            );
        }
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }

    // Watches drop after 2 events; kube's watcher must still see every object.
    sim.set_faults(Faults {
        watch_drop_after_events: Some(2),
        ..Faults::default()
    });
    sim.reset_counters();
    let stream = watcher(cms.clone(), watcher::Config::default()).default_backoff();
    let mut stream = stream.boxed();
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            for i in 0..8 {
                cms.create(&PostParams::default(), &cm(&format!("w-{i}"), json!({})))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < 8 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(watcher::Event::Apply(c) | watcher::Event::InitApply(c)))) => {
                let n = c.metadata.name.unwrap();
                if n.starts_with("w-") {
                    seen.insert(n);
                }
            }
            Ok(Ok(Some(_))) => {}
            // The watcher reports the dropped watch and recovers with backoff.
            Ok(Err(_)) => {}
            Ok(Ok(None)) | Err(_) => break,
        }
    }
    writer.await.unwrap();
    assert_eq!(seen.len(), 8, "watcher saw {seen:?}");
    let counters = sim.counters();
    assert!(
        counters.get("watch", "configmaps") >= 2,
        "the watch was re-established: {counters:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn open_watches_are_counted_while_they_are_served() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // (open now, most open at once) for configmaps.
    let open = |sim: &kubesim::Handle| {
        let counters = sim.counters();
        let of = |map: &std::collections::BTreeMap<String, u64>| {
            map.get("configmaps").copied().unwrap_or(0)
        };
        (of(&counters.open_watches), of(&counters.peak_open_watches))
    };
    // Waits until `n` configmaps watches are open: a dropped watch ends on the server a little later.
    let open_now_becomes = |n: u64| {
        let sim = &sim;
        async move {
            eventually(
                "the open watch count to follow",
                Duration::from_secs(5),
                || async { (open(sim).0 == n).then_some(()) },
            )
            .await
        }
    };
    let params = kube::api::WatchParams::default();
    // A refused watch never opened.
    assert!(cms.watch(&params, "not-a-version").await.is_err());
    assert_eq!(open(&sim), (0, 0));
    let first = cms.watch(&params, "0").await.unwrap().boxed();
    let second = cms.watch(&params, "0").await.unwrap().boxed();
    assert_eq!(open(&sim), (2, 2));
    drop(second);
    open_now_becomes(1).await;
    assert_eq!(open(&sim).1, 2, "the peak stays");
    // A reset zeroes the counts but not the watches still open.
    sim.reset_counters();
    assert_eq!(sim.counters().total, 0);
    assert_eq!(open(&sim), (1, 1));
    drop(first);
    open_now_becomes(0).await;

    // A client that re-watches each time the server ends its watch makes many watch requests
    // but never holds two watches.
    sim.set_faults(Faults {
        watch_drop_after_events: Some(1),
        ..Faults::default()
    });
    sim.reset_counters();
    let mut stream = watcher(cms.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen = std::collections::BTreeSet::new();
    let mut created = 0;
    while seen.len() < 6 {
        if created < 6 {
            cms.create(
                &PostParams::default(),
                &cm(&format!("r-{created}"), json!({})),
            )
            .await
            .unwrap();
            created += 1;
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(watcher::Event::Apply(c) | watcher::Event::InitApply(c)))) => {
                seen.insert(c.metadata.name.unwrap());
            }
            Ok(Ok(Some(_)) | Err(_)) => {}
            Ok(Ok(None)) | Err(_) => panic!("the watcher stopped after seeing {seen:?}"),
        }
    }
    let counters = sim.counters();
    assert!(
        counters.get("watch", "configmaps") >= 3,
        "the watch was re-established: {counters:?}"
    );
    assert_eq!(open(&sim).1, 1, "{counters:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn discovery_follows_kubescape_installation() {
    let mut cfg = fast_config();
    cfg.kubescape.installed = false;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let has_storage = |d: &kube::Discovery| {
        d.groups()
            .any(|g| g.name() == "spdx.softwarecomposition.kubescape.io")
    };

    let d = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(!has_storage(&d));
    assert!(d.groups().any(|g| g.name() == "apps"));
    let raw = client.request_text(http_get("/apis/spdx.softwarecomposition.kubescape.io/v1beta1/openvulnerabilityexchangecontainers")).await;
    assert!(
        matches!(raw, Err(kube::Error::Api(ref s)) if s.code == 404),
        "{raw:?}"
    );

    let resp = raw_request(
        &format!("{}/kubesim/kubescape", sim.url()),
        "POST",
        r#"{"installed": true}"#,
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let d = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(has_storage(&d));
    let group = d
        .groups()
        .find(|g| g.name() == "spdx.softwarecomposition.kubescape.io")
        .unwrap();
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.plural)
        .collect();
    for plural in [
        "openvulnerabilityexchangecontainers",
        "sbomsyftfiltereds",
        "containerprofiles",
        "vulnerabilitymanifestsummaries",
    ] {
        assert!(
            kinds.iter().any(|k| k == plural),
            "{plural} missing from {kinds:?}"
        );
    }
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.get("kubescape").await.unwrap();
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), "kubescape");
    let cloud = cm.get("ks-cloud-config").await.unwrap();
    let data: serde_json::Value =
        serde_json::from_str(&cloud.data.unwrap()["clusterData"]).unwrap();
    assert_eq!(data["vexGeneration"], true);

    let mut caps = sim.config().kubescape.capabilities;
    caps.vex_generation = false;
    sim.set_capabilities(caps).unwrap();
    let cloud = cm.get("ks-cloud-config").await.unwrap();
    let data: serde_json::Value =
        serde_json::from_str(&cloud.data.unwrap()["clusterData"]).unwrap();
    assert_eq!(data["vexGeneration"], false);

    sim.set_kubescape_installed(false).unwrap();
    assert!(!has_storage(
        &kube::Discovery::new(client.clone()).run().await.unwrap()
    ));
    assert!(nss.get("kubescape").await.is_err());
    sim.shutdown().await;
}

fn http_get(path: &str) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::get(path).body(Vec::new()).unwrap()
}

#[tokio::test]
async fn faults_and_counters() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    sim.reset_counters();
    sim.set_faults(Faults {
        rules: vec![kubesim::FaultRule {
            verb: "list".into(),
            resource: "pods".into(),
            status: 429,
            rate: 1.0,
            max: Some(2),
        }],
        ..Faults::default()
    });
    // kube-rs retries 429s by itself; the rule is bounded to two failures, so the third try works.
    pods.list(&ListParams::default())
        .await
        .expect("kube retries past the two injected 429s");
    assert_eq!(sim.faults_injected(), 2);

    sim.set_faults(Faults {
        rules: vec![kubesim::FaultRule {
            verb: "get".into(),
            resource: "*".into(),
            status: 500,
            rate: 1.0,
            max: None,
        }],
        ..Faults::default()
    });
    assert_eq!(
        api_code(pods.get("x").await.unwrap_err()),
        (500, "InternalError".into())
    );
    sim.set_faults(Faults {
        rules: vec![kubesim::FaultRule {
            verb: "list".into(),
            resource: "configmaps".into(),
            status: 429,
            rate: 1.0,
            max: None,
        }],
        retry_after_seconds: 7,
        ..Faults::default()
    });
    let raw = raw_get(&format!(
        "{}/api/v1/namespaces/default/configmaps",
        sim.url()
    ))
    .await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_lowercase().contains("retry-after: 7"), "{raw}");
    assert!(raw.contains("\"reason\":\"TooManyRequests\""), "{raw}");
    sim.set_faults(Faults::default());

    // Counters over HTTP.
    let body = reqwest_get(&format!("{}/kubesim/counters", sim.url())).await;
    let counters: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(counters["requests"]["pods"]["list"], 3);
    assert_eq!(counters["requests"]["configmaps"]["list"], 1);
    assert_eq!(counters["requests"]["pods"]["get"], 1);
    sim.reset_counters();
    assert_eq!(sim.counters().total, 0);
    sim.shutdown().await;
}

async fn reqwest_get(url: &str) -> String {
    let text = raw_get(url).await;
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// A bare HTTP/1.1 GET (no extra client dependency); the whole response text.
async fn raw_get(url: &str) -> String {
    raw_request(url, "GET", "").await
}

/// A bare HTTP/1.1 request (no extra client dependency); the whole response text.
async fn raw_request(url: &str, method: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(url).unwrap();
    let mut s = tokio::net::TcpStream::connect((u.host_str().unwrap(), u.port().unwrap()))
        .await
        .unwrap();
    let req = format!(
        "{method} {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        u.path(),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// History is kept for a time, like etcd before compaction: with the default (5 minutes) a
/// watch resumes from an earlier resourceVersion; once the events after it are older than the
/// retention, the same watch gets 410 Expired however few events there were.
#[tokio::test]
async fn watch_history_is_kept_for_a_time() {
    for (retention_seconds, expect_gone) in [(300, false), (0, true)] {
        let mut cfg = fast_config();
        cfg.watch_history_seconds = retention_seconds;
        let sim = start(cfg).await;
        let client = client(&sim).await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let old_rv = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        for i in 0..3 {
            cms.create(&PostParams::default(), &cm(&format!("kept-{i}"), json!({})))
                .await
                .unwrap();
        }
        // One more event after the three, so with no retention they are all dropped.
        cms.create(&PostParams::default(), &cm("last", json!({})))
            .await
            .unwrap();
        let mut raw = cms
            .watch(&kube::api::WatchParams::default(), &old_rv)
            .await
            .unwrap()
            .boxed();
        let first = tokio::time::timeout(Duration::from_secs(5), raw.next())
            .await
            .unwrap();
        match (expect_gone, first) {
            (true, Some(Ok(kube::api::WatchEvent::Error(s)))) => {
                assert_eq!((s.code, s.reason.as_str()), (410, "Expired"))
            }
            (true, Some(Err(kube::Error::Api(s)))) => {
                assert_eq!((s.code, s.reason.as_str()), (410, "Expired"))
            }
            (false, Some(Ok(kube::api::WatchEvent::Added(cm)))) => {
                assert_eq!(cm.metadata.name.as_deref(), Some("kept-0"))
            }
            (expect_gone, other) => {
                panic!("retention {retention_seconds} s (gone expected: {expect_gone}): {other:?}")
            }
        }
        sim.shutdown().await;
    }
}
