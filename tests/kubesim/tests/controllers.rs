//! Deployment -> ReplicaSet -> Pods, as the real controllers name and move them.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

/// A timings change reaches the controllers by itself, with no object changing: a pod whose
/// start was an hour away starts at once under the new timings.
#[tokio::test]
async fn a_timings_change_wakes_the_controllers_without_an_object_change() {
    let mut cfg = fast_config();
    cfg.timings.pod_start_delay_ms = 3_600_000;
    let sim = start(cfg.clone()).await;
    let client = client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let d: Deployment =
        serde_yaml_ng::from_str(&deployment_yaml("late", "default", "nginx:1.14.2", 1)).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let phase_of_the_pod = || {
        let pods = pods.clone();
        async move {
            let pod = pods.list(&ListParams::default()).await.ok()?.items.pop()?;
            pod.status?.phase
        }
    };
    let phase = eventually(
        "the pod to exist",
        Duration::from_secs(10),
        phase_of_the_pod,
    )
    .await;
    assert_eq!(phase, "Pending", "its start is an hour away");
    cfg.timings.pod_start_delay_ms = 0;
    sim.set_timings(cfg.timings);
    eventually("the pod to run", Duration::from_secs(10), || async {
        (phase_of_the_pod().await? == "Running").then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn deployment_rolls_out_named_like_the_real_controller() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let d: Deployment =
        serde_yaml_ng::from_str(&deployment_yaml("web", "default", "nginx:1.14.2", 2)).unwrap();
    let created = deploys.create(&PostParams::default(), &d).await.unwrap();
    let template = serde_json::to_value(&created.spec.as_ref().unwrap().template).unwrap();
    let hash = kubesim::controllers::pod_template_hash(&template);

    let ready = eventually("deployment available", Duration::from_secs(10), || {
        let deploys = deploys.clone();
        async move {
            let d = deploys.get("web").await.ok()?;
            let st = d.status.clone()?;
            (st.ready_replicas == Some(2) && st.available_replicas == Some(2)).then_some(d)
        }
    })
    .await;
    let conds = ready.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Progressing"
                && c.reason.as_deref() == Some("NewReplicaSetAvailable"))
    );

    let rs = rss
        .get(&format!("web-{hash}"))
        .await
        .expect("ReplicaSet named <deployment>-<pod-template-hash>");
    assert_eq!(rs.metadata.owner_references.unwrap()[0].kind, "Deployment");
    let pod_list = pods
        .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
        .await
        .unwrap();
    assert_eq!(pod_list.items.len(), 2);
    for p in &pod_list.items {
        let name = p.metadata.name.as_deref().unwrap();
        assert!(
            name.starts_with(&format!("web-{hash}-"))
                && name.len() == format!("web-{hash}-").len() + 5,
            "{name}"
        );
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            (
                "ReplicaSet",
                rs.metadata.name.as_deref().unwrap(),
                Some(true)
            )
        );
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert!(
            cs.ready && cs.image_id.starts_with("docker.io/library/nginx@sha256:"),
            "{cs:?}"
        );
    }

    // Scale to zero.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually("pods gone", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        }
    })
    .await;

    // Delete cascades to ReplicaSets and pods.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    eventually("pod back", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            (!pods
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty())
            .then_some(())
        }
    })
    .await;
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        rss.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn kubescape_components_are_ready_when_installed() {
    let sim = start(fast_config()).await;
    let client = client(&sim).await;
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "kubescape");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "kubescape");
    eventually(
        "node-agent and kubevuln ready",
        Duration::from_secs(10),
        || {
            let (ds, deploys) = (ds.clone(), deploys.clone());
            async move {
                let na = ds.get("node-agent").await.ok()?.status?;
                let kv = deploys.get("kubevuln").await.ok()?.status?;
                (na.number_ready == 1
                    && na.desired_number_scheduled == 1
                    && kv.ready_replicas == Some(1))
                .then_some(())
            }
        },
    )
    .await;
    sim.shutdown().await;
}
