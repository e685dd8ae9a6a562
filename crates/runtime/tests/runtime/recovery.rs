//! Shutdown with work in flight, and a broker restart under a running stage.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use vexxy_events::{Stage, subjects};
use vexxy_harness::NatsServer;
use vexxy_runtime::Outcome;

use crate::support::*;

/// Shutdown while a handler runs: the runtime stops pulling, waits for the handler, publishes
/// its outcome and acks; the message is handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_in_flight_message_finish() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
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
    let mut stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::Deploy,
        handler.clone(),
    );
    wait_provisioned(&js, Stage::Deploy).await;
    publish_ticket(&js, Stage::Deploy, ticket("job-finish")).await;
    eventually(Duration::from_secs(10), "the handler to start", || async {
        (!handler.calls().is_empty()).then_some(())
    })
    .await;

    stage.request_stop();
    // Still waiting for the handler: not finished, nothing published yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stage.is_finished(),
        "the runtime waits for the in-flight handler"
    );
    release.notify_one();
    stage.stop().await;

    assert_eq!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait")
            .await
            .len(),
        1
    );
    assert!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.deploy")
            .await
            .is_empty()
    );
    assert_eq!(handler.calls().len(), 1);
}

/// Shutdown while a handler never finishes: after the grace period the message is handed back
/// (no AckWait wait), and the next replica processes it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_what_does_not_finish_in_time() {
    let nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let js = jetstream(&nats).await;
    let stuck = TestHandler::new(|_, ticket| async move {
        std::future::pending::<()>().await;
        Ok(Outcome::Next(ticket))
    });
    // A long AckWait proves the hand-back is a Nak, not an expiry.
    let slow_expiry = [("VEXXY_SHUTDOWN_GRACE", "500ms"), ("VEXXY_ACK_WAIT", "30s")];
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &slow_expiry),
        Stage::Deploy,
        stuck.clone(),
    );
    wait_provisioned(&js, Stage::Deploy).await;
    publish_ticket(&js, Stage::Deploy, ticket("job-handback")).await;
    eventually(
        Duration::from_secs(10),
        "the stuck handler to start",
        || async { (!stuck.calls().is_empty()).then_some(()) },
    )
    .await;
    stage.stop().await;
    assert!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait")
            .await
            .is_empty()
    );

    let replacement = TestHandler::pass_through();
    let started = std::time::Instant::now();
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &slow_expiry),
        Stage::Deploy,
        replacement.clone(),
    );
    wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "handed back, not left to expire"
    );
    assert_eq!(replacement.calls().len(), 1);
    assert_eq!(replacement.calls()[0].delivery, 2);
    assert_eq!(stuck.calls().len(), 1);
    stage.stop().await;
    assert_eq!(
        stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait")
            .await
            .len(),
        1
    );
}

/// The broker restarts (same port, same store) under a running stage: the stage reconnects,
/// rebuilds its consumer if needed, and processes new messages without being restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_recovers_after_the_broker_restarts() {
    let mut nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let handler = TestHandler::pass_through();
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &[]),
        Stage::Deploy,
        handler.clone(),
    );
    {
        let js = jetstream(&nats).await;
        wait_provisioned(&js, Stage::Deploy).await;
        publish_ticket(&js, Stage::Deploy, ticket("job-before")).await;
        wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;
    }

    nats.restart().unwrap();

    let js = jetstream(&nats).await;
    publish_ticket(&js, Stage::Deploy, ticket("job-after")).await;
    let next = eventually(
        Duration::from_secs(40),
        "the message after the restart",
        || async {
            let messages = stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait").await;
            (messages.len() == 2).then_some(messages)
        },
    )
    .await;
    assert_eq!(tickets(&next)[1].data.request.job_id, "job-after");
    assert!(!stage.is_finished(), "the stage never exited");
    stage.stop().await;
}

/// With memory storage a restart loses the streams and the consumer; the stage provisions them
/// again and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_reprovisions_after_a_restart_loses_memory_streams() {
    let mut nats = NatsServer::start().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let handler = TestHandler::pass_through();
    let memory = [("VEXXY_STREAM_STORAGE", "memory")];
    let stage = RunningStage::start(
        config(&nats, store_dir.path(), &memory),
        Stage::Deploy,
        handler.clone(),
    );
    {
        let js = jetstream(&nats).await;
        wait_provisioned(&js, Stage::Deploy).await;
    }
    nats.kill().unwrap();
    nats.start_again().unwrap();
    let js = jetstream(&nats).await;
    // The stage recreates the streams; publish once they exist.
    wait_provisioned(&js, Stage::Deploy).await;
    publish_ticket(&js, Stage::Deploy, ticket("job-memory")).await;
    wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;
    assert_eq!(handler.calls().len(), 1);
    stage.stop().await;
}
