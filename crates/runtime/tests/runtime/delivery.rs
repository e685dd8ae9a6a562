//! Happy paths: hand-off ordering, retries with delay, de-duplication, metrics.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use vexxy_events::{FailureReason, JobState, Stage, subjects};
use vexxy_harness::NatsServer;
use vexxy_runtime::{Outcome, StageError};

use crate::support::*;

/// The next stage's ticket is stored (PubAck received) before the input is acked: while the
/// handler runs nothing is published and the input is unacked; afterwards the ticket is seen on
/// the wire before the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_event_is_published_before_the_input_is_acked() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let addr_file = store_dir.path().join("health.addr");
    let js = jetstream(&nats).await;
    let release = Arc::new(Notify::new());
    let handler = {
        let release = release.clone();
        TestHandler::new(move |_, ticket| {
            let release = release.clone();
            async move {
                release.notified().await;
                Ok(Outcome::Next(ticket))
            }
        })
    };
    let config = config(
        &nats,
        store_dir.path(),
        &[("VEXXY_HEALTH_ADDR_FILE", addr_file.to_str().unwrap())],
    );
    let stage = RunningStage::start(config, Stage::Deploy, handler.clone());
    wait_provisioned(&js, Stage::Deploy).await;

    // A raw subscriber sees, in order, everything the stage's connection publishes.
    let watcher = nats.client().await.unwrap();
    let mut wire = watcher.subscribe(">").await.unwrap();
    watcher.flush().await.unwrap();

    let ticket = ticket("job-order");
    seed_job(&js, &ticket, Stage::InstallCheck).await;
    publish_ticket(&js, Stage::Deploy, ticket).await;
    eventually(
        Duration::from_secs(10),
        "the handler to be called",
        || async { (!handler.calls().is_empty()).then_some(()) },
    )
    .await;

    // Handler still running: nothing downstream, input pending ack.
    assert!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait")
            .await
            .is_empty()
    );
    assert_eq!(consumer_info(&js, Stage::Deploy).await.num_ack_pending, 1);

    release.notify_one();
    let downstream = wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;
    let tickets = tickets(&downstream);
    assert_eq!(tickets[0].id, "job-order.ticket.deploy");
    assert_eq!(tickets[0].data.timings.len(), 1);
    assert_eq!(tickets[0].data.timings[0].stage, Stage::Deploy);
    assert_eq!(
        downstream[0]
            .headers
            .get(subjects::HEADER_JOB_ID)
            .map(|v| v.as_str()),
        Some("job-order")
    );

    // On the wire: the ticket publish strictly before the ack of the input.
    let ack_prefix = format!(
        "$JS.ACK.{}.{}.",
        subjects::PIPELINE_STREAM,
        subjects::durable_of(Stage::Deploy)
    );
    let mut order = Vec::new();
    let observed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = wire.next().await {
            if message.subject.as_str() == "vexxy.pipeline.wait" {
                order.push("ticket");
            } else if message.subject.starts_with(&ack_prefix)
                && message.payload.as_ref() == b"+ACK"
            {
                order.push("ack");
                return;
            }
        }
    })
    .await;
    assert!(observed.is_ok(), "never saw the ack; saw {order:?}");
    assert_eq!(order, vec!["ticket", "ack"]);

    // Input gone from the work queue, job moved on.
    eventually(
        Duration::from_secs(10),
        "the input to be removed",
        || async {
            stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let status = job_status(&js, "job-order").await.unwrap();
    assert_eq!(status.state, JobState::Running);
    assert_eq!(status.stage, Stage::Wait);

    // Health and metrics.
    let addr: std::net::SocketAddr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"vexxy_messages_total{stage="deploy",outcome="next"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("vexxy_handler_duration_seconds_count{stage=\"deploy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vexxy_in_flight{stage=\"deploy\"} 0"),
        "{metrics}"
    );
    stage.stop().await;
}

/// A transient error is retried by redelivery with a growing delay; the third delivery succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_redelivered_with_exponential_delay() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::new(|job, ticket| async move {
        if job.delivery < 3 {
            Err(StageError::Transient {
                reason: FailureReason::KubernetesUnavailable,
                message: "API server unreachable".to_string(),
            })
        } else {
            Ok(Outcome::Next(ticket))
        }
    });
    let config = config(
        &nats,
        store_dir.path(),
        &[
            ("VEXXY_RETRY_BASE_DELAY", "400ms"),
            ("VEXXY_RETRY_MAX_DELAY", "5s"),
        ],
    );
    let stage = RunningStage::start(config, Stage::Deploy, handler.clone());
    wait_provisioned(&js, Stage::Deploy).await;
    publish_ticket(&js, Stage::Deploy, ticket("job-retry")).await;

    wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;
    let calls = handler.calls();
    let deliveries: Vec<u64> = calls.iter().map(|call| call.delivery).collect();
    assert_eq!(deliveries, vec![1, 2, 3]);
    let first_gap = calls[1].at - calls[0].at;
    let second_gap = calls[2].at - calls[1].at;
    assert!(
        first_gap >= Duration::from_millis(400),
        "first retry after {first_gap:?}"
    );
    assert!(
        second_gap >= Duration::from_millis(800),
        "second retry after {second_gap:?}"
    );
    // Not an AckWait expiry (2s) that happened to come later: the Nak delay drove it.
    assert!(
        first_gap < Duration::from_millis(1900),
        "first retry after {first_gap:?}"
    );
    assert!(
        stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED)
            .await
            .is_empty()
    );
    stage.stop().await;
}

/// The same event published twice with the same Nats-Msg-Id is stored once, and handling the
/// same job's input twice (what a redelivery does) yields one downstream event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_events_are_stored_once() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::pass_through();
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::Deploy,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::Deploy).await;

    let first = publish_ticket(&js, Stage::Deploy, ticket("job-dedupe")).await;
    let second = publish_ticket(&js, Stage::Deploy, ticket("job-dedupe")).await;
    assert_eq!(
        first, second,
        "the second publish is a duplicate of the first"
    );
    wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;

    // The same job's input again under another message id: the handler runs again, and its
    // hand-off (same deterministic id) is dropped as a duplicate.
    let event = vexxy_events::ticket_event(Stage::InstallCheck, ticket("job-dedupe"));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "job-dedupe.redelivered-copy");
    js.publish_with_headers(
        "vexxy.pipeline.deploy",
        headers,
        serde_json::to_vec(&event).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "the second handling", || async {
        (handler.calls().len() == 2).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the copy to be acked", || async {
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait")
            .await
            .len(),
        1
    );
    stage.stop().await;
}

/// The last stage completes a job: `completed` is published once and the record is final; a
/// redelivered input for a final job is acked without calling the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_jobs_are_final() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::new(|job, ticket| async move {
        let url = job
            .store
            .put_json(
                &vexxy_runtime::job_key(&job.job_id, "summary.json"),
                &ticket.request,
            )
            .await?;
        let completed = vexxy_events::AnalysisCompleted {
            job_id: job.job_id.clone(),
            image_ref: ticket.request.image_ref.clone(),
            image_digest: ticket.request.image_digest.clone(),
            request_msg_id: None,
            summary: Default::default(),
            evidence: vexxy_events::EvidenceQuality {
                completeness: vexxy_events::completed::Completeness::Complete,
                learning_status: "completed".into(),
                learning_completion: "complete".into(),
                window_start: chrono::Utc::now(),
                window_end: chrono::Utc::now(),
                container_restarts: 0,
                loaded_package_ratio: None,
                kubescape_shape: "test".into(),
            },
            artifacts: vexxy_events::Artifacts {
                openvex: Some(url.clone()),
                filtered_sbom: url.clone(),
                summary: url,
                evidence: vec![],
                extra: Default::default(),
            },
            timings: ticket.timings.clone(),
            labels: ticket.request.labels.clone(),
        };
        Ok(Outcome::Completed(Box::new(completed)))
    });
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::Enrich,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::Enrich).await;
    let ticket = ticket("job-done");
    seed_job(&js, &ticket, Stage::Extract).await;
    publish_ticket(&js, Stage::Enrich, ticket.clone()).await;
    let completed = wait_stored(&js, subjects::PUBLIC_STREAM, subjects::COMPLETED, 1).await;
    let event: vexxy_events::CloudEvent<vexxy_events::AnalysisCompleted> =
        serde_json::from_slice(&completed[0].payload).unwrap();
    assert_eq!(event.id, "job-done.completed");
    assert_eq!(event.data.timings.last().unwrap().stage, Stage::Enrich);
    let status = eventually(Duration::from_secs(10), "the job to complete", || async {
        job_status(&js, "job-done")
            .await
            .filter(|s| s.state == JobState::Completed)
    })
    .await;
    let result = status.result.unwrap();
    assert!(
        result.starts_with("file:///") && result.ends_with("analyses/job-done/summary.json"),
        "{result}"
    );

    // Same job again: acknowledged, handler not called, no second completed event.
    let event = vexxy_events::ticket_event(Stage::Extract, ticket);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "job-done.late-copy");
    js.publish_with_headers(
        "vexxy.pipeline.enrich",
        headers,
        serde_json::to_vec(&event).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the late copy to be acked",
        || async {
            stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.enrich")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(handler.calls().len(), 1);
    assert_eq!(
        stored(&js, subjects::PUBLIC_STREAM, subjects::COMPLETED)
            .await
            .len(),
        1
    );
    stage.stop().await;
}

/// The status write after a hand-off starts from the record the stage claimed before its
/// handler ran (no read of its own). A record written by someone else while the handler ran
/// is not overwritten with that older copy: a change made meanwhile survives next to the new
/// stage, and a job failed meanwhile stays failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_while_the_handler_ran_is_not_overwritten() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let stage = {
        let js = js.clone();
        let handler = TestHandler::new(move |job, ticket| {
            let js = js.clone();
            async move {
                let kv = js.get_key_value(subjects::STATUS_BUCKET).await.unwrap();
                let change = move |current: &vexxy_events::JobStatus| {
                    let mut next = current.clone();
                    if current.job_id == "job-failed-meanwhile" {
                        next.state = JobState::Failed;
                    } else {
                        next.result = Some("written-meanwhile".into());
                    }
                    Some(next)
                };
                vexxy_runtime::status::transition(&kv, &job.job_id, None, change)
                    .await
                    .unwrap();
                Ok(Outcome::Next(ticket))
            }
        });
        RunningStage::start(config(&nats, store_dir.path(), &[]), Stage::Deploy, handler)
    };
    wait_provisioned(&js, Stage::Deploy).await;
    for job_id in ["job-changed-meanwhile", "job-failed-meanwhile"] {
        let ticket = ticket(job_id);
        seed_job(&js, &ticket, Stage::InstallCheck).await;
        publish_ticket(&js, Stage::Deploy, ticket).await;
    }
    wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 2).await;
    eventually(Duration::from_secs(10), "both inputs acked", || async {
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy")
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    let changed = job_status(&js, "job-changed-meanwhile").await.unwrap();
    assert_eq!(changed.stage, Stage::Wait);
    assert_eq!(changed.state, JobState::Running);
    assert_eq!(changed.result.as_deref(), Some("written-meanwhile"));
    let failed = job_status(&js, "job-failed-meanwhile").await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.stage, Stage::Deploy, "{failed:?}");
    stage.stop().await;
}
