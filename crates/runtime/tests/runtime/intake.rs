//! The first stage: requests become tickets; bad and duplicate requests are rejected.

use vexxy_events::{FailureReason, JobState, Stage, subjects};
use vexxy_harness::NatsServer;
use vexxy_runtime::{Outcome, StageError};

use crate::support::*;

async fn publish_request(
    js: &async_nats::jetstream::Context,
    body: &str,
    msg_id: Option<&str>,
) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(msg_id) = msg_id {
        headers.insert("Nats-Msg-Id", msg_id);
    }
    js.publish_with_headers(subjects::REQUESTED, headers, body.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_becomes_a_ticket_for_the_handler() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::pass_through();
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::InstallCheck,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::InstallCheck).await;

    // No job_id in the body: it is derived from the Nats-Msg-Id.
    let body = format!(r#"{{"image_ref":"ghcr.io/acme/app","image_digest":"{DIGEST}"}}"#);
    let seq = publish_request(&js, &body, Some("client-req-1")).await;
    let next = wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy", 1).await;
    let ticket = &tickets(&next)[0].data;
    let expected_job = vexxy_events::derive_job_id(body.as_bytes(), Some("client-req-1"));
    assert_eq!(ticket.request.job_id, expected_job);
    assert_eq!(ticket.request.image_digest, DIGEST);
    assert_eq!(
        ticket.request.request_msg_id.as_deref(),
        Some("client-req-1")
    );
    assert_eq!(handler.calls()[0].job_id, expected_job);
    let status = job_status(&js, &expected_job).await.unwrap();
    assert_eq!(status.state, JobState::Running);
    assert_eq!(status.stage, Stage::Deploy);
    assert_eq!(status.request_sequence, seq);
    // The request stays in the public stream for other readers (limits retention).
    assert_eq!(
        stored(&js, subjects::PUBLIC_STREAM, subjects::REQUESTED)
            .await
            .len(),
        1
    );
    stage.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_is_dead_lettered_with_a_failed_event() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::pass_through();
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::InstallCheck,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::InstallCheck).await;

    let body = r#"{"job_id":"bad-one","image_ref":"ghcr.io/acme/app","image_digest":"sha256:xyz"}"#;
    let seq = publish_request(&js, body, Some("bad-req")).await;
    let dead = wait_stored(
        &js,
        subjects::DEAD_LETTER_STREAM,
        "vexxy.dlq.install-check",
        1,
    )
    .await;
    assert_eq!(dead[0].payload.as_ref(), body.as_bytes());
    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 1).await);
    assert_eq!(failed[0].reason, FailureReason::InvalidDigest);
    assert!(!failed[0].retryable);
    assert_eq!(failed[0].job_id.as_deref(), Some("bad-one"));
    assert_eq!(failed[0].request_msg_id.as_deref(), Some("bad-req"));
    assert_eq!(failed[0].original.stream_sequence, seq);
    assert!(
        handler.calls().is_empty(),
        "the handler never sees a rejected request"
    );
    assert!(
        job_status(&js, "bad-one").await.is_none(),
        "a rejected request creates no job"
    );
    stage.stop().await;
}

/// A second submission of the same request is rejected as a duplicate (the first job is
/// untouched); a redelivery of the accepted request is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submission_is_rejected_but_redelivery_is_not() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    // Fails transiently on the first delivery so the request is redelivered once.
    let handler = TestHandler::new(|job, ticket| async move {
        if job.delivery == 1 {
            return Err(StageError::Transient {
                reason: FailureReason::KubernetesUnavailable,
                message: "try again".into(),
            });
        }
        Ok(Outcome::Next(ticket))
    });
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::InstallCheck,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::InstallCheck).await;

    let body = request_body("job-twice");
    publish_request(&js, &body, Some("submit-1")).await;
    wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy", 1).await;
    let deliveries: Vec<u64> = handler.calls().iter().map(|c| c.delivery).collect();
    assert_eq!(deliveries, vec![1, 2], "the redelivery was accepted");
    assert!(
        stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED)
            .await
            .is_empty()
    );

    // Same request, new message.
    let second = publish_request(&js, &body, Some("submit-2")).await;
    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 1).await);
    assert_eq!(failed[0].reason, FailureReason::DuplicateRequest);
    assert_eq!(failed[0].original.stream_sequence, second);
    // Same job id, different image: a conflict.
    let other = request_body("job-twice").replace("ghcr.io/acme/app", "ghcr.io/acme/other");
    publish_request(&js, &other, Some("submit-3")).await;
    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 2).await);
    assert_eq!(failed[1].reason, FailureReason::JobIdConflict);

    assert_eq!(
        handler.calls().len(),
        2,
        "neither rejected submission reached the handler"
    );
    let status = job_status(&js, "job-twice").await.unwrap();
    assert_eq!(
        status.state,
        JobState::Running,
        "the existing job is unaffected"
    );
    assert_eq!(status.stage, Stage::Deploy);
    assert_eq!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy")
            .await
            .len(),
        1
    );
    stage.stop().await;
}

/// A redelivered request whose job a later stage already owns is acknowledged without running
/// the first stage again (the same rule as for every later stage's stale deliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_request_of_a_job_handed_on_is_not_run_again() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    // The first delivery fails transiently after the job "moved on" (as if an earlier run had
    // handed it to deploy and wait had claimed it), so the request comes back stale.
    let handler = {
        let js = js.clone();
        TestHandler::new(move |job, _ticket| {
            let js = js.clone();
            async move {
                let kv = js.get_key_value(subjects::STATUS_BUCKET).await.unwrap();
                vexxy_runtime::status::transition(
                    &kv,
                    &job.job_id,
                    None,
                    vexxy_runtime::status::moved_to(Stage::Wait),
                )
                .await
                .unwrap();
                Err(StageError::Transient {
                    reason: FailureReason::KubernetesUnavailable,
                    message: "try again".into(),
                })
            }
        })
    };
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::InstallCheck,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::InstallCheck).await;

    let seq = publish_request(&js, &request_body("job-stale-request"), Some("stale-1")).await;
    let consumer = eventually(
        std::time::Duration::from_secs(10),
        "the redelivered request to be acked",
        || async {
            let info = consumer_info(&js, Stage::InstallCheck).await;
            (info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0).then_some(info)
        },
    )
    .await;
    assert!(consumer.delivered.stream_sequence >= seq);
    let deliveries: Vec<u64> = handler.calls().iter().map(|c| c.delivery).collect();
    assert_eq!(
        deliveries,
        vec![1],
        "the stale redelivery did not reach the handler"
    );
    assert!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy")
            .await
            .is_empty()
    );
    assert!(
        stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED)
            .await
            .is_empty()
    );
    let status = job_status(&js, "job-stale-request").await.unwrap();
    assert_eq!(status.stage, Stage::Wait);
    assert_eq!(status.state, JobState::Running);
    stage.stop().await;
}
