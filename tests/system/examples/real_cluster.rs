//! The end-to-end flow against a REAL cluster running Kubescape — not kubesim:
//! `cargo run -p vexxy-system-tests --example real_cluster`.
//!
//! A program rather than a test, so that it never passes where it did not run: it needs
//! `KUBECONFIG` (a cluster where Kubescape is installed with deploy/kubescape-values.yaml, e.g.
//! the kind cluster of .github/workflows/e2e-real-cluster.yml or docs/real-cluster.md) and
//! `VEXXY_E2E_IMAGE`, and exits non-zero when either is missing or the analysis fails. It starts a private
//! nats-server, a file store and the five stage binaries on this machine (as `cargo xtask up`
//! does), pointed at that cluster, publishes one analysis request for `VEXXY_E2E_IMAGE`
//! (`repository@sha256:...`, a real pullable image) and waits for its `completed` event (up to
//! `VEXXY_E2E_TIMEOUT`, default 20m: Kubescape's first profile alone takes its learning period),
//! then checks the artifacts and that the sandbox is gone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use serde_json::Value;
use vexxy_events::{
    AnalysisCompleted, AnalysisFailed, AnalysisRequest, CloudEvent, EventType, RunConfig, subjects,
};
use vexxy_harness::stack::{self, Pipeline, StackEndpoints};
use vexxy_harness::{NatsServer, workspace_root};

const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The analysis window (seconds); the request policy's minimum is lowered to it.
const ANALYSIS_SECONDS: u64 = 60;

struct RealCluster {
    kubeconfig: PathBuf,
    image_ref: String,
    image_digest: String,
    timeout: Duration,
}

/// What the run is against, or why it cannot run.
fn real_cluster() -> Result<RealCluster, String> {
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .ok_or("KUBECONFIG is not set")?;
    let image = std::env::var("VEXXY_E2E_IMAGE").map_err(|_| {
        "VEXXY_E2E_IMAGE is not set: give a pullable image pinned by digest, e.g. \
         VEXXY_E2E_IMAGE=$(docker inspect --format '{{index .RepoDigests 0}}' nginx:1.27)"
            .to_string()
    })?;
    let (image_ref, image_digest) = image
        .split_once('@')
        .filter(|(repository, digest)| !repository.is_empty() && digest.starts_with("sha256:"))
        .ok_or(format!(
            "VEXXY_E2E_IMAGE={image:?} is not repository@sha256:<digest>"
        ))?;
    let timeout = match std::env::var("VEXXY_E2E_TIMEOUT") {
        Ok(value) => vexxy_runtime::config::parse_duration(&value)
            .map_err(|e| format!("VEXXY_E2E_TIMEOUT={value}: {e}"))?,
        Err(_) => Duration::from_secs(20 * 60),
    };
    Ok(RealCluster {
        kubeconfig,
        image_ref: image_ref.to_string(),
        image_digest: image_digest.to_string(),
        timeout,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cluster = real_cluster().map_err(|why| {
        anyhow::anyhow!(
            "real_cluster cannot run: {why}. It needs a cluster running Kubescape: set KUBECONFIG \
             and VEXXY_E2E_IMAGE (see docs/real-cluster.md); CI runs it in \
             .github/workflows/e2e-real-cluster.yml"
        )
    })?;
    let root = workspace_root();
    stack::build_binaries(&root)?;
    let dir = tempfile::Builder::new()
        .prefix("vexxy-real-cluster-")
        .tempdir()?;
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir)?;
    let nats = NatsServer::start()?;
    let endpoints = StackEndpoints {
        nats_url: nats.url(),
        store: format!("file://{}", store_dir.display()),
        kubeconfig: cluster.kubeconfig.clone(),
    };
    let mut pipeline = Pipeline::start(dir.path(), |_, health_file| {
        let mut env = stack::local_stage_env(&endpoints, health_file, ANALYSIS_SECONDS);
        // Kubescape is installed by whoever prepared the cluster; never install it from a test.
        env.push(("VEXXY_KUBESCAPE_AUTO_INSTALL".into(), "false".into()));
        env
    })?;
    // On failure the logs stay on disk (CI uploads them) and their ends go into the message.
    let fail = |dir: tempfile::TempDir, pipeline: &Pipeline, what: String| -> anyhow::Error {
        let tails = pipeline.log_tails(40);
        anyhow::anyhow!("{what}\n{tails}\n(logs kept in {})", dir.keep().display())
    };
    if let Err(error) = pipeline.wait_ready(READY_TIMEOUT) {
        return Err(fail(dir, &pipeline, format!("{error:#}")));
    }

    let js = jetstream::new(nats.client().await?);
    let mut outcomes = js
        .get_stream(subjects::PUBLIC_STREAM)
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("real-cluster".into()),
            filter_subjects: vec![subjects::COMPLETED.into(), subjects::FAILED.into()],
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let job_id = format!("e2e-real-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let request = AnalysisRequest {
        job_id: Some(job_id.clone()),
        image_ref: cluster.image_ref.clone(),
        image_digest: Some(cluster.image_digest.clone()),
        config: Some(RunConfig {
            analysis_duration: Some(ANALYSIS_SECONDS),
            ..RunConfig::default()
        }),
        labels: [("suite".to_string(), "real-cluster".to_string())].into(),
    };
    js.publish(subjects::REQUESTED, serde_json::to_vec(&request)?.into())
        .await?
        .await
        .context("JetStream did not acknowledge the request")?;
    let started = Instant::now();
    eprintln!(
        "real_cluster: published {job_id} for {}@{}; waiting up to {:?}",
        cluster.image_ref, cluster.image_digest, cluster.timeout
    );

    let outcome = loop {
        let remaining = cluster.timeout.saturating_sub(started.elapsed());
        let Ok(next) = tokio::time::timeout(remaining, outcomes.next()).await else {
            let what = format!("no outcome for {job_id} within {:?}", cluster.timeout);
            return Err(fail(dir, &pipeline, what));
        };
        let message = next
            .context("the outcome stream ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        let event: CloudEvent<Value> = serde_json::from_slice(&message.payload)?;
        if event.subject.as_deref() == Some(job_id.as_str()) {
            break event;
        }
    };
    if outcome.is_type(EventType::Failed) {
        let failed: AnalysisFailed = serde_json::from_value(outcome.data)?;
        return Err(fail(dir, &pipeline, format!("{job_id} failed: {failed:?}")));
    }
    ensure!(
        outcome.is_type(EventType::Completed),
        "unexpected event type {}",
        outcome.event_type
    );
    let completed: AnalysisCompleted = serde_json::from_value(outcome.data)?;
    eprintln!(
        "real_cluster: {job_id} completed after {:.0?}: {:?}, evidence {:?}",
        started.elapsed(),
        completed.summary,
        completed.evidence
    );
    let summary = store_dir.join(format!("analyses/{job_id}/summary.json"));
    ensure!(
        summary.is_file(),
        "{job_id} completed but {} was not written",
        summary.display()
    );
    if completed.summary.total_cves_analyzed > 0 {
        let vex = store_dir.join(format!("analyses/{job_id}/vex.openvex.json"));
        ensure!(
            vex.is_file(),
            "{job_id} has statements but no {}",
            vex.display()
        );
    }

    // extract removed the sandbox.
    let kube = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&cluster.kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?,
    )?;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube, "vexxy-sandbox");
    ensure!(
        deployments
            .get_opt(&format!("vexxy-{job_id}"))
            .await?
            .is_none(),
        "the sandbox Deployment vexxy-{job_id} is still there after completion"
    );
    for (stage, result) in pipeline.terminate(Duration::from_secs(30)) {
        let status = result?;
        ensure!(status.success(), "{stage} exited with {status} on SIGTERM");
    }
    Ok(())
}
