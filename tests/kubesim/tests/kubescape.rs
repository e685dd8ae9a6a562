//! The Kubescape emulator: ContainerProfile names and status sequence (node-agent's per-save
//! objects, storage's consolidation, exits and restarts), kubevuln's writes, partial profiles for
//! containers started before the install, capabilities, the 413 cap.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::{Value, json};
use vexxy_kubescape::names::{ContainerType, InstanceOwner, slug_for};

const GROUP: &str = "spdx.softwarecomposition.kubescape.io";
const NGINX: &str = "nginx@sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae";

fn storage_api(
    client: &kube::Client,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1beta1", kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn deployment(name: &str, image: &str, sniffing: Option<&str>) -> Deployment {
    let mut d: Value =
        serde_yaml_ng::from_str(&deployment_yaml(name, "default", image, 1)).unwrap();
    if let Some(s) = sniffing {
        d["spec"]["template"]["metadata"]["labels"]["kubescape.io/max-sniffing-time"] = json!(s);
    }
    serde_json::from_value(d).unwrap()
}

/// The instance slug of the first (only) container of the deployment's running pod.
async fn slug_of(client: &kube::Client, app: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = eventually("the pod to run", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            let p = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?
                .items
                .into_iter()
                .next()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
        }
    })
    .await;
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    slug_for(
        &InstanceOwner {
            api_version: &owner.api_version,
            namespace: "default",
            kind: &owner.kind,
            name: &owner.name,
        },
        ContainerType::Container,
        "app",
    )
}

fn annotation(o: &DynamicObject, key: &str) -> String {
    o.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
        .unwrap_or_default()
}

/// Follows the profile of the deployment's container until it is `completed`; returns the
/// distinct statuses in order, the completed profile and the slug.
async fn watch_profile_until_completed(
    client: &kube::Client,
    name: &str,
    sniffing: &str,
) -> (Vec<String>, DynamicObject, String) {
    let profiles = storage_api(client, "ContainerProfile", "containerprofiles", None);
    let mut events = profiles
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(
            &PostParams::default(),
            &deployment(name, NGINX, Some(sniffing)),
        )
        .await
        .unwrap();
    let slug = slug_of(client, name).await;

    let mut statuses = Vec::new();
    let completed = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("profile events keep coming")
            .unwrap();
        match ev {
            Some(WatchEvent::Added(o) | WatchEvent::Modified(o))
                if o.metadata.name.as_deref() == Some(slug.as_str()) =>
            {
                assert_eq!(o.metadata.namespace.as_deref(), Some("default"));
                assert_eq!(annotation(&o, "kubescape.io/completion"), "complete");
                let status = annotation(&o, "kubescape.io/status");
                if statuses.last() != Some(&status) {
                    statuses.push(status.clone());
                }
                if status == "completed" {
                    break o;
                }
            }
            Some(_) => {}
            None => panic!("profile watch ended; saw {statuses:?}"),
        }
        assert!(statuses.len() < 10, "{statuses:?}");
    };
    (statuses, completed, slug)
}

fn resource_version(o: &DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("numeric resourceVersion")
}

/// The VEX of `slug` once kubevuln's scan of the completed profile wrote it.
async fn vex_after(client: &kube::Client, slug: &str, completed: &DynamicObject) -> DynamicObject {
    let vex_api = storage_api(
        client,
        "OpenVulnerabilityExchangeContainer",
        "openvulnerabilityexchangecontainers",
        Some("kubescape"),
    );
    let completed_rv = resource_version(completed);
    eventually(
        "a VEX written after the profile completed",
        Duration::from_secs(10),
        || {
            let vex_api = vex_api.clone();
            let slug = slug.to_string();
            async move {
                let v = vex_api.get_opt(&slug).await.ok()??;
                (resource_version(&v) > completed_rv).then_some(v)
            }
        },
    )
    .await
}

/// kubevuln v0.3.159 counts its writes of one document in `version` (0 for the first scan).
fn scans_before(vex: &DynamicObject) -> i64 {
    vex.data["spec"]["version"]
        .as_i64()
        .expect("the VEX has a numeric version")
}

/// node-agent saves its first profile at `initialDelay`: a container whose learning ends before
/// that is saved once, at its end, so its profile first appears `completed` (never
/// `initializing`, never `ready`) and kubevuln scans it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_shorter_than_the_first_save_has_no_ready_stage_and_one_scan() {
    let mut cfg = fast_config();
    cfg.timings.first_save_delay_ms = 120_000;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let (statuses, completed, slug) = watch_profile_until_completed(&client, "brief", "1s").await;
    assert_eq!(statuses, ["completed"]);
    let vex = vex_after(&client, &slug, &completed).await;
    assert_eq!(
        scans_before(&vex),
        0,
        "the scan of the completed profile is the only one"
    );
    sim.shutdown().await;
}

/// kubevuln stores an image's SBOM and unfiltered manifest once, under the image slug, and
/// reuses them for every later workload of that image (`getOrCreateSBOM`, `GetCVE`); only the
/// instance's own objects are written per scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_sbom_and_manifest_are_stored_once_per_image() {
    let mut cfg = fast_config();
    cfg.timings.first_save_delay_ms = 120_000;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let sboms = storage_api(&client, "SBOMSyft", "sbomsyfts", Some("kubescape"));
    let manifests = storage_api(
        &client,
        "VulnerabilityManifest",
        "vulnerabilitymanifests",
        Some("kubescape"),
    );
    let image_objects = || async {
        let sbom = sboms.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(sbom.len(), 1, "one SBOMSyft for the one image");
        let image_slug = sbom[0].metadata.name.clone().unwrap();
        let manifest = manifests.get(&image_slug).await.unwrap();
        (
            image_slug,
            resource_version(&sbom[0]),
            resource_version(&manifest),
        )
    };

    let (_, completed, slug) = watch_profile_until_completed(&client, "first", "1s").await;
    vex_after(&client, &slug, &completed).await;
    let first = image_objects().await;

    let (_, completed, slug) = watch_profile_until_completed(&client, "second", "1s").await;
    let vex = vex_after(&client, &slug, &completed).await;
    assert_eq!(scans_before(&vex), 0, "one scan of the second instance");
    assert!(
        manifests.get_opt(&slug).await.unwrap().is_some(),
        "the second instance's filtered manifest is written"
    );
    assert_eq!(
        image_objects().await,
        first,
        "the second workload of the image reuses its SBOM and manifest"
    );

    // Without them in storage, the next scan builds both again.
    sboms.delete(&first.0, &Default::default()).await.unwrap();
    manifests
        .delete(&first.0, &Default::default())
        .await
        .unwrap();
    let (_, completed, slug) = watch_profile_until_completed(&client, "third", "1s").await;
    vex_after(&client, &slug, &completed).await;
    let third = image_objects().await;
    assert_eq!(third.0, first.0);
    assert!(
        third.1 > first.1 && third.2 > first.2,
        "{third:?} after {first:?}"
    );
    sim.shutdown().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_lifecycle_then_vex_in_kubescape() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    // Learning (1 s) outlasts the first save (300 ms): a `ready` profile and its scan come first.
    let (statuses, completed, slug) = watch_profile_until_completed(&client, "web", "1s").await;
    assert_eq!(statuses, ["ready", "completed"]);
    let labels = completed.metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("kubescape.io/learning-period")
            .map(String::as_str),
        Some("1s")
    );

    // The VEX (named by the same slug, in `kubescape`) is rewritten after completion.
    let vex = vex_after(&client, &slug, &completed).await;
    assert_eq!(
        scans_before(&vex),
        1,
        "the learning-time scan wrote it first"
    );
    assert_eq!(
        annotation(&vex, "kubescape.io/instance-id"),
        annotation(&completed, "kubescape.io/instance-id")
    );
    assert!(
        annotation(&vex, "kubescape.io/image-id").ends_with(NGINX.trim_start_matches("nginx@"))
    );
    assert!(
        !vex.data["spec"]["statements"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let filtered = storage_api(
        &client,
        "SBOMSyftFiltered",
        "sbomsyftfiltereds",
        Some("kubescape"),
    );
    assert!(filtered.get_opt(&slug).await.unwrap().is_some());
    let summaries = storage_api(
        &client,
        "VulnerabilityManifestSummary",
        "vulnerabilitymanifestsummaries",
        Some("default"),
    );
    assert!(
        summaries
            .get_opt("deployment-web-app")
            .await
            .unwrap()
            .is_some()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_started_before_install_are_partial_and_never_scanned() {
    let mut cfg = fast_config();
    cfg.kubescape.installed = false;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("early", NGINX, None))
        .await
        .unwrap();
    let slug = slug_of(&client, "early").await;
    sim.set_kubescape_installed(true).unwrap();

    let profiles = storage_api(
        &client,
        "ContainerProfile",
        "containerprofiles",
        Some("default"),
    );
    let done = eventually(
        "the partial profile to complete",
        Duration::from_secs(10),
        || {
            let profiles = profiles.clone();
            let slug = slug.clone();
            async move {
                let p = profiles.get_opt(&slug).await.ok()??;
                (annotation(&p, "kubescape.io/status") == "completed").then_some(p)
            }
        },
    )
    .await;
    assert_eq!(annotation(&done, "kubescape.io/completion"), "partial");
    // Give the emulated kubevuln well past its scan delay: it must skip partial profiles.
    let scan_delay = Duration::from_millis(sim.config().timings.scan_delay_ms);
    tokio::time::sleep(scan_delay * 4).await;
    let vex_api = storage_api(
        &client,
        "OpenVulnerabilityExchangeContainer",
        "openvulnerabilityexchangecontainers",
        Some("kubescape"),
    );
    assert!(vex_api.get_opt(&slug).await.unwrap().is_none());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vex_generation_off_and_too_large_vex_leave_no_vex() {
    let mut cfg = fast_config();
    cfg.kubescape.capabilities.vex_generation = false;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("novex", NGINX, None))
        .await
        .unwrap();
    let huge = format!(
        "example.org/huge@{}{}",
        kubesim::catalogue::HUGE_PREFIX,
        "e".repeat(60)
    );
    let slug = slug_of(&client, "novex").await;

    let summaries = storage_api(
        &client,
        "VulnerabilityManifestSummary",
        "vulnerabilitymanifestsummaries",
        Some("default"),
    );
    let vex_api = storage_api(
        &client,
        "OpenVulnerabilityExchangeContainer",
        "openvulnerabilityexchangecontainers",
        Some("kubescape"),
    );
    // The summary is kubevuln's last write but the VEX (written in the same step): once it
    // exists the scan is over.
    eventually("the scan of novex", Duration::from_secs(10), || {
        let s = summaries.clone();
        async move { s.get_opt("deployment-novex-app").await.ok()?.map(|_| ()) }
    })
    .await;
    assert!(
        vex_api.get_opt(&slug).await.unwrap().is_none(),
        "vexGeneration off must not write a VEX"
    );

    let mut caps = sim.config().kubescape.capabilities;
    caps.vex_generation = true;
    sim.set_capabilities(caps).unwrap();
    deploys
        .create(&PostParams::default(), &deployment("huge", &huge, None))
        .await
        .unwrap();
    let huge_slug = slug_of(&client, "huge").await;
    eventually("the scan of huge", Duration::from_secs(20), || {
        let s = summaries.clone();
        async move { s.get_opt("deployment-huge-app").await.ok()?.map(|_| ()) }
    })
    .await;
    assert!(
        vex_api.get_opt(&huge_slug).await.unwrap().is_none(),
        "a VEX over 500000 bytes is rejected with 413"
    );
    let filtered = storage_api(
        &client,
        "SBOMSyftFiltered",
        "sbomsyftfiltereds",
        Some("kubescape"),
    );
    assert!(filtered.get_opt(&huge_slug).await.unwrap().is_some());

    // Deleting the deployment stops the emulation; a later install switch removes the group.
    deploys.delete("huge", &Default::default()).await.unwrap();
    sim.set_kubescape_installed(false).unwrap();
    let all = storage_api(&client, "ContainerProfile", "containerprofiles", None);
    assert!(
        all.list(&ListParams::default()).await.is_err(),
        "the storage group is gone with Kubescape"
    );
    sim.shutdown().await;
}

/// A burst of workloads: every container gets a completed profile, and kubevuln's writes for it
/// (filtered SBOM, then VEX) come after the completion, as the facts describe.
#[tokio::test]
async fn every_container_of_a_burst_completes_then_gets_its_sbom_and_vex() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = (0..20).map(|i| format!("burst-{i}")).collect();
    futures::future::try_join_all(names.iter().map(|n| {
        let deploys = deploys.clone();
        let d = deployment(n, NGINX, Some("300ms"));
        async move { deploys.create(&PostParams::default(), &d).await }
    }))
    .await
    .expect("deployments created");
    let store = sim.store();
    let rv_of = |o: &Value| -> u64 {
        o.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .expect("resourceVersion")
    };
    for name in &names {
        let slug = slug_of(&client, name).await;
        let (profile, sbom, vex) = eventually(
            "completed profile, filtered SBOM and VEX",
            Duration::from_secs(20),
            || {
                let store = store.clone();
                let slug = slug.clone();
                async move {
                    let get = |plural: &str, ns: &str| {
                        store
                            .get(kubesim::resources::kubescape(plural), ns, &slug)
                            .ok()
                    };
                    let profile = get("containerprofiles", "default")?;
                    (profile.pointer("/metadata/annotations/kubescape.io~1status")
                        == Some(&json!("completed")))
                    .then_some(())?;
                    let sbom = get("sbomsyftfiltereds", "kubescape")?;
                    let vex = get("openvulnerabilityexchangecontainers", "kubescape")?;
                    (rv_of(&vex) > rv_of(&profile)).then_some((profile, sbom, vex))
                }
            },
        )
        .await;
        assert!(
            rv_of(&profile) < rv_of(&sbom) && rv_of(&sbom) < rv_of(&vex),
            "{name}: profile {} < filtered SBOM {} < VEX {}",
            rv_of(&profile),
            rv_of(&sbom),
            rv_of(&vex)
        );
    }
}

/// One ContainerProfile event seen on a storage watch.
#[derive(Debug, Clone)]
struct ProfileEvent {
    kind: &'static str,
    name: String,
    status: String,
    completion: String,
    series: String,
    previous: String,
    report: String,
    at: std::time::Instant,
}

impl ProfileEvent {
    fn of(kind: &'static str, o: &DynamicObject) -> Self {
        ProfileEvent {
            kind,
            name: o.metadata.name.clone().unwrap_or_default(),
            status: annotation(o, "kubescape.io/status"),
            completion: annotation(o, "kubescape.io/completion"),
            series: annotation(o, "kubescape.io/report-series-id"),
            previous: annotation(o, "kubescape.io/previous-report-timestamp"),
            report: annotation(o, "kubescape.io/report-timestamp"),
            at: std::time::Instant::now(),
        }
    }

    /// node-agent's per-save object `<slug>-<32 hex>` (not the consolidated `<slug>`).
    fn is_save_of(&self, slug: &str) -> bool {
        self.name.strip_prefix(slug).is_some_and(|rest| {
            rest.len() == 33
                && rest.starts_with('-')
                && rest[1..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
    }
}

/// Profile events of `slug` and its per-save objects, until `done` says so.
async fn profile_events(
    events: &mut (impl futures::Stream<Item = Result<WatchEvent<DynamicObject>, kube::Error>> + Unpin),
    slug: &str,
    mut done: impl FnMut(&[ProfileEvent]) -> bool,
) -> Vec<ProfileEvent> {
    let mut seen: Vec<ProfileEvent> = Vec::new();
    while !done(&seen) {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap_or_else(|_| panic!("profile events stopped; saw {seen:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("profile watch ended; saw {seen:#?}"));
        let (kind, o) = match &ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            _ => continue,
        };
        if o.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(slug))
        {
            seen.push(ProfileEvent::of(kind, o));
        }
        assert!(seen.len() < 30, "{seen:#?}");
    }
    seen
}

/// node-agent writes a new object `<slug>-<32 hex>` per save, with its run's series id and the
/// previous save's report timestamp; storage merges them into `<slug>` and deletes them. So
/// there is no `<slug>` before the first save (no `initializing` profile), and a save for a
/// profile that is already complete is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_save_objects_are_consolidated_into_a_profile_that_starts_at_the_first_save() {
    let mut cfg = fast_config();
    cfg.timings.first_save_delay_ms = 1_500;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let mut events = storage_api(&client, "ContainerProfile", "containerprofiles", None)
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(
            &PostParams::default(),
            &deployment("saves", NGINX, Some("3s")),
        )
        .await
        .unwrap();
    let slug = slug_of(&client, "saves").await;
    let running = std::time::Instant::now();
    let profiles = storage_api(
        &client,
        "ContainerProfile",
        "containerprofiles",
        Some("default"),
    );
    assert!(
        profiles.get_opt(&slug).await.unwrap().is_none(),
        "no consolidated profile before node-agent's first save"
    );

    let seen = profile_events(&mut events, &slug, |seen| {
        seen.iter()
            .filter(|e| e.kind == "DELETED" && e.is_save_of(&slug))
            .count()
            == 2
    })
    .await;
    let shape: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|e| {
            let which = if e.name == slug { "profile" } else { "save" };
            (e.kind, which, e.status.as_str())
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("ADDED", "save", "ready"),
            ("ADDED", "profile", "ready"),
            ("DELETED", "save", "ready"),
            ("ADDED", "save", "completed"),
            ("MODIFIED", "profile", "completed"),
            ("DELETED", "save", "completed"),
        ],
        "{seen:#?}"
    );
    let (first, second) = (&seen[0], &seen[3]);
    assert!(
        first.is_save_of(&slug) && second.is_save_of(&slug),
        "{seen:#?}"
    );
    assert_ne!(first.name, second.name, "each save is a new object");
    assert!(
        first.at.duration_since(running) >= Duration::from_millis(1_000),
        "the first save comes at node-agent's initialDelay (1.5 s), not at the start"
    );
    assert!(!first.series.is_empty());
    assert_eq!(first.series, second.series, "one run, one series");
    assert_eq!(first.previous, "0001-01-01 00:00:00 +0000 UTC");
    assert_eq!(second.previous, first.report, "the saves form one chain");
    for e in seen.iter().filter(|e| e.name == slug) {
        assert!(
            e.series.is_empty(),
            "the consolidated profile has no series"
        );
        assert_eq!(e.completion, "complete");
    }
    let consolidated = profiles.get(&slug).await.unwrap();
    assert!(!annotation(&consolidated, "kubescape.io/resource-size").is_empty());
    let names: Vec<String> = profiles
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, std::slice::from_ref(&slug), "the saves are gone");

    // Storage's PreSave: no more saves for a completed/complete profile.
    let late: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "ContainerProfile",
        "metadata": {"name": format!("{slug}-{}", "0".repeat(32)), "namespace": "default",
            "annotations": {"kubescape.io/report-series-id": "late", "kubescape.io/status": "ready",
                            "kubescape.io/completion": "complete"}},
        "spec": {},
    }))
    .unwrap();
    match profiles.create(&PostParams::default(), &late).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 500);
            assert!(status.message.contains("object is completed"), "{status:?}");
        }
        other => panic!("a save for a completed profile was accepted: {other:?}"),
    }
    sim.shutdown().await;
}

/// A container that exits non-zero while learning makes its profile `completed`/`partial`
/// (node-agent saves `failed`, storage's `SetFailedStatus`); the restarted container is a new
/// run and series, and its end of learning turns the profile `completed`/`complete`, which
/// kubevuln then scans (it skipped the partial version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_makes_the_profile_partial_and_the_restarted_container_completes_it() {
    let mut cfg = fast_config();
    // The container runs 600 ms, exits 1, restarts 600 ms later and runs on; node-agent's first
    // save comes 200 ms into each run, learning ends 1 s into it.
    cfg.timings.pod_start_delay_ms = 600;
    cfg.timings.first_save_delay_ms = 200;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let mut events = storage_api(&client, "ContainerProfile", "containerprofiles", None)
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let image = format!(
        "docker.io/library/crash-once@{}",
        NGINX.trim_start_matches("nginx@")
    );
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(
            &PostParams::default(),
            &deployment("flaky", &image, Some("1s")),
        )
        .await
        .unwrap();
    let slug = slug_of(&client, "flaky").await;

    let seen = profile_events(&mut events, &slug, |seen| {
        seen.iter()
            .any(|e| e.name == slug && e.status == "completed" && e.completion == "complete")
    })
    .await;
    let mut versions: Vec<(String, String)> = Vec::new();
    for e in seen.iter().filter(|e| e.name == slug) {
        let version = (e.status.clone(), e.completion.clone());
        if versions.last() != Some(&version) {
            versions.push(version);
        }
    }
    let versions: Vec<(&str, &str)> = versions
        .iter()
        .map(|(s, c)| (s.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        versions,
        [
            ("ready", "complete"),
            ("completed", "partial"),
            ("completed", "complete")
        ],
        "{seen:#?}"
    );
    let saves: Vec<&ProfileEvent> = seen
        .iter()
        .filter(|e| e.kind == "ADDED" && e.is_save_of(&slug))
        .collect();
    let statuses: Vec<&str> = saves.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["ready", "failed", "ready", "completed"],
        "{seen:#?}"
    );
    assert_eq!(saves[0].series, saves[1].series, "{seen:#?}");
    assert_eq!(saves[2].series, saves[3].series, "{seen:#?}");
    assert_ne!(
        saves[0].series, saves[2].series,
        "the restarted container is a new series"
    );
    assert_eq!(saves[2].previous, "0001-01-01 00:00:00 +0000 UTC");

    // kubevuln scanned the learning-time version and the complete one, not the partial one.
    let completed = storage_api(
        &client,
        "ContainerProfile",
        "containerprofiles",
        Some("default"),
    )
    .get(&slug)
    .await
    .unwrap();
    let vex = vex_after(&client, &slug, &completed).await;
    assert_eq!(
        scans_before(&vex),
        1,
        "the ready scan, then the complete one"
    );
    sim.shutdown().await;
}

/// Storage consolidates per-save objects whoever writes them through the API (here with
/// node-agent's emulation off), as it does node-agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_consolidates_per_save_objects_any_client_creates() {
    let mut cfg = fast_config();
    cfg.kubescape.capabilities.relevancy = false;
    let sim = start(cfg).await;
    let client = client(&sim).await;
    let profiles = storage_api(
        &client,
        "ContainerProfile",
        "containerprofiles",
        Some("default"),
    );
    let save = |suffix: &str, status: &str, previous: &str, report: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
            "kind": "ContainerProfile",
            "metadata": {"name": format!("pod-x-app-1111-2222-{suffix}"), "namespace": "default",
                "annotations": {"kubescape.io/report-series-id": "s1", "kubescape.io/status": status,
                    "kubescape.io/completion": "complete", "kubescape.io/instance-id": "apiVersion-v1/namespace-default/kind-Pod/name-x/containerName-app",
                    "kubescape.io/wlid": "wlid://cluster-kubesim/namespace-default/pod-x",
                    "kubescape.io/previous-report-timestamp": previous, "kubescape.io/report-timestamp": report}},
            "spec": {"execs": [{"path": "/bin/sh"}], "syscalls": ["read"]},
        }))
        .unwrap()
    };
    let zero = "0001-01-01 00:00:00 +0000 UTC";
    profiles
        .create(
            &PostParams::default(),
            &save(&"a".repeat(32), "ready", zero, "t1"),
        )
        .await
        .unwrap();
    let profile = eventually("the consolidated profile", Duration::from_secs(10), || {
        let profiles = profiles.clone();
        async move { profiles.get_opt("pod-x-app-1111-2222").await.ok()? }
    })
    .await;
    assert_eq!(annotation(&profile, "kubescape.io/status"), "ready");
    assert_eq!(profile.data["spec"]["execs"], json!([{"path": "/bin/sh"}]));
    profiles
        .create(
            &PostParams::default(),
            &save(&"b".repeat(32), "completed", "t1", "t2"),
        )
        .await
        .unwrap();
    let done = eventually("the completed profile", Duration::from_secs(10), || {
        let profiles = profiles.clone();
        async move {
            let names: Vec<String> = profiles
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            let p = profiles.get_opt("pod-x-app-1111-2222").await.ok()??;
            (annotation(&p, "kubescape.io/status") == "completed" && names.len() == 1).then_some(p)
        }
    })
    .await;
    assert_eq!(annotation(&done, "kubescape.io/completion"), "complete");
    sim.shutdown().await;
}
