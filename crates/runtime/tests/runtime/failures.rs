//! Dead letters: malformed messages, permanent errors, handlers that crash every time.

use std::time::Duration;

use vexxy_events::{FailureReason, JobState, Stage, subjects};
use vexxy_harness::NatsServer;
use vexxy_runtime::{Outcome, StageError};

use crate::support::*;

/// A message that is not a ticket is copied byte for byte to `vexxy.dlq.<stage>`, a `failed`
/// event says why, and the stage goes on to process the next (good) message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_is_dead_lettered_and_the_stage_keeps_going() {
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

    let garbage: &[u8] = b"\x00\xffnot a ticket {";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "garbage-1");
    headers.insert(subjects::HEADER_JOB_ID, "job-garbage");
    headers.insert("X-Custom", "kept");
    let garbage_seq = js
        .publish_with_headers("vexxy.pipeline.deploy", headers, garbage.to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    publish_ticket(&js, Stage::Deploy, ticket("job-good")).await;

    let dead = wait_stored(&js, subjects::DEAD_LETTER_STREAM, "vexxy.dlq.deploy", 1).await;
    assert_eq!(
        dead[0].payload.as_ref(),
        garbage,
        "the original payload is kept byte for byte"
    );
    let header = |name: &str| dead[0].headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(
        header(subjects::HEADER_DLQ_REASON).as_deref(),
        Some("malformed_request")
    );
    assert_eq!(
        header(subjects::HEADER_DLQ_STREAM).as_deref(),
        Some(subjects::PIPELINE_STREAM)
    );
    assert_eq!(
        header(subjects::HEADER_DLQ_SEQUENCE),
        Some(garbage_seq.to_string())
    );
    assert_eq!(
        header(subjects::HEADER_DLQ_SUBJECT).as_deref(),
        Some("vexxy.pipeline.deploy")
    );
    assert_eq!(header("X-Custom").as_deref(), Some("kept"));
    assert_eq!(
        header("Vexxy-Original-Msg-Id").as_deref(),
        Some("garbage-1")
    );

    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 1).await);
    assert_eq!(failed[0].reason, FailureReason::MalformedRequest);
    assert_eq!(failed[0].stage, Stage::Deploy);
    assert_eq!(failed[0].job_id.as_deref(), Some("job-garbage"));
    assert_eq!(failed[0].original.stream_sequence, garbage_seq);
    assert_eq!(
        failed[0].original.dead_letter_subject.as_deref(),
        Some("vexxy.dlq.deploy")
    );
    assert!(!failed[0].message.is_empty());

    // The good message after it still goes through, and the bad one is gone from the queue.
    let next = wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;
    assert_eq!(tickets(&next)[0].data.request.job_id, "job-good");
    eventually(
        Duration::from_secs(10),
        "the input queue to empty",
        || async {
            stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert!(!stage.is_finished());
    stage.stop().await;
}

/// A permanent error fails the job: dead letter, `failed` with the handler's reason, record
/// failed, handler called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_error_fails_the_job_once() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::new(|_, _| async move {
        Err::<Outcome, _>(StageError::Permanent {
            reason: FailureReason::ImagePullFailed,
            message: "image not found in registry; check image_ref and image_digest".to_string(),
            retryable: false,
        })
    });
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::Deploy,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::Deploy).await;
    let ticket = ticket("job-perm");
    seed_job(&js, &ticket, Stage::InstallCheck).await;
    publish_ticket(&js, Stage::Deploy, ticket).await;

    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 1).await);
    assert_eq!(failed[0].reason, FailureReason::ImagePullFailed);
    assert!(!failed[0].retryable);
    assert_eq!(failed[0].image_digest.as_deref(), Some(DIGEST));
    assert_eq!(
        failed[0].labels.get("team").map(String::as_str),
        Some("payments")
    );
    let status = eventually(Duration::from_secs(10), "the job to fail", || async {
        job_status(&js, "job-perm")
            .await
            .filter(|s| s.state == JobState::Failed)
    })
    .await;
    assert_eq!(status.error.unwrap().reason, FailureReason::ImagePullFailed);
    assert_eq!(
        wait_stored(&js, subjects::DEAD_LETTER_STREAM, "vexxy.dlq.deploy", 1)
            .await
            .len(),
        1
    );
    assert_eq!(handler.calls().len(), 1);
    stage.stop().await;
}

/// A handler that crashes on every delivery (here: panics, so nothing is acked or nacked) is
/// still dead-lettered once MaxDeliver is reached, through the JetStream advisory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_that_crashes_the_handler_every_time_is_dead_lettered() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::new(|_, _| async move {
        panic!("simulated crash in the handler");
        #[allow(unreachable_code)]
        Err(StageError::Permanent {
            reason: FailureReason::Internal,
            message: String::new(),
            retryable: false,
        })
    });
    let config = config(
        &nats,
        store_dir.path(),
        &[("VEXXY_ACK_WAIT", "1s"), ("VEXXY_MAX_DELIVER", "2")],
    );
    let stage = RunningStage::start(config, Stage::Wait, handler.clone());
    wait_provisioned(&js, Stage::Wait).await;
    let ticket = ticket("job-crash");
    seed_job(&js, &ticket, Stage::Deploy).await;
    let seq = publish_ticket(&js, Stage::Wait, ticket).await;

    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 1).await);
    assert_eq!(failed[0].reason, FailureReason::MaxDeliveriesExceeded);
    assert_eq!(failed[0].job_id.as_deref(), Some("job-crash"));
    assert_eq!(failed[0].original.stream_sequence, seq);
    let dead = wait_stored(&js, subjects::DEAD_LETTER_STREAM, "vexxy.dlq.wait", 1).await;
    assert_eq!(
        dead[0]
            .headers
            .get(subjects::HEADER_DLQ_REASON)
            .map(|v| v.as_str()),
        Some("max_deliveries_exceeded")
    );
    eventually(
        Duration::from_secs(10),
        "the job to be marked failed",
        || async {
            job_status(&js, "job-crash")
                .await
                .filter(|s| s.state == JobState::Failed)
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the exhausted message to leave the work queue",
        || async {
            stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        handler.calls().len(),
        2,
        "delivered exactly MaxDeliver times"
    );
    stage.stop().await;
}

/// A transient error on the last allowed delivery fails the job (retryable) instead of
/// retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_error_on_the_last_delivery_fails_the_job() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::new(|_, _| async move {
        Err::<Outcome, _>(StageError::Transient {
            reason: FailureReason::KubescapeUnavailable,
            message: "node agent not ready".to_string(),
        })
    });
    let config = config(&nats, store_dir.path(), &[("VEXXY_MAX_DELIVER", "2")]);
    let stage = RunningStage::start(config, Stage::Deploy, handler.clone());
    wait_provisioned(&js, Stage::Deploy).await;
    publish_ticket(&js, Stage::Deploy, ticket("job-exhaust")).await;
    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 1).await);
    assert_eq!(failed[0].reason, FailureReason::KubescapeUnavailable);
    assert!(failed[0].retryable);
    assert!(failed[0].message.contains("node agent not ready"));
    assert_eq!(
        handler
            .calls()
            .iter()
            .map(|c| c.delivery)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    stage.stop().await;
}

/// A stale delivery — a hand-off whose input was never acked because the stage crashed after
/// publishing — arrives after a later stage has taken the job over. Re-running it could
/// contradict that stage (wait would find the sandbox extract already deleted), so the runtime
/// acknowledges it without calling the handler, and never reports a failure for it. A job still
/// owned by this stage is handled (and claimed) as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_delivery_of_a_job_a_later_stage_owns_is_skipped() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::new(|_, _| async move {
        Err::<Outcome, _>(StageError::Permanent {
            reason: FailureReason::SandboxDisappeared,
            message: "the sandbox Deployment is gone".to_string(),
            retryable: true,
        })
    });
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::Wait,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::Wait).await;

    let stale = ticket("job-stale");
    seed_job(&js, &stale, Stage::Extract).await;
    publish_ticket(&js, Stage::Wait, stale).await;
    let owned = ticket("job-owned");
    seed_job(&js, &owned, Stage::Deploy).await;
    publish_ticket(&js, Stage::Wait, owned).await;

    let failed =
        failed_events(&wait_stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED, 1).await);
    assert_eq!(failed[0].job_id.as_deref(), Some("job-owned"));
    eventually(
        Duration::from_secs(10),
        "both messages to be settled",
        || async {
            let info = consumer_info(&js, Stage::Wait).await;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;

    let calls: Vec<String> = handler.calls().into_iter().map(|c| c.job_id).collect();
    assert_eq!(
        calls,
        vec!["job-owned".to_string()],
        "the stale job never reaches the handler"
    );
    assert_eq!(
        stored(&js, subjects::PUBLIC_STREAM, subjects::FAILED)
            .await
            .len(),
        1,
        "no failure is reported for the job extract owns"
    );
    let stale_status = job_status(&js, "job-stale").await.unwrap();
    assert_eq!(stale_status.state, JobState::Running);
    assert_eq!(stale_status.stage, Stage::Extract);
    let owned_status = job_status(&js, "job-owned").await.unwrap();
    assert_eq!(owned_status.state, JobState::Failed);
    assert_eq!(owned_status.stage, Stage::Wait);
    stage.stop().await;
}

/// The record read of a hand-off starts from its job id header, before the ticket is decoded;
/// the ticket still decides whose record is checked. Two hand-offs whose headers name each
/// other's job: the one whose ticket names a job a later stage owns is skipped, the other is
/// handled, whatever the headers say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticket_not_the_job_id_header_decides_whose_record_is_checked() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let handler = TestHandler::pass_through();
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::Wait,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::Wait).await;

    let stale = ticket("job-stale");
    seed_job(&js, &stale, Stage::Extract).await;
    let owned = ticket("job-owned");
    seed_job(&js, &owned, Stage::Wait).await;
    for (ticket, header_job_id) in [(stale, "job-owned"), (owned, "job-stale")] {
        let event = vexxy_events::ticket_event(Stage::Deploy, ticket);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.as_str());
        headers.insert(subjects::HEADER_JOB_ID, header_job_id);
        js.publish_with_headers(
            subjects::input_of(Stage::Wait),
            headers,
            serde_json::to_vec(&event).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let handed_on =
        tickets(&wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.extract", 1).await);
    assert_eq!(handed_on[0].data.request.job_id, "job-owned");
    eventually(
        Duration::from_secs(10),
        "both messages to be settled",
        || async {
            let info = consumer_info(&js, Stage::Wait).await;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
    let calls: Vec<String> = handler.calls().into_iter().map(|c| c.job_id).collect();
    assert_eq!(calls, vec!["job-owned".to_string()]);
    assert_eq!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.extract")
            .await
            .len(),
        1,
        "the stale job is not handed on again"
    );
    assert_eq!(
        job_status(&js, "job-owned").await.unwrap().stage,
        Stage::Extract
    );
    assert_eq!(
        job_status(&js, "job-stale").await.unwrap().stage,
        Stage::Extract
    );
    stage.stop().await;
}
