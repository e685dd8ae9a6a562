//! Background tasks a handler declares: started on the stage's connection once it is ready,
//! told to stop on shutdown and awaited before `run_with` returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use vexxy_events::{PipelineTicket, Stage};
use vexxy_harness::NatsServer;
use vexxy_runtime::{BackgroundTask, Handler, JobContext, Outcome, StageError};

use crate::support::*;

const STARTED_SUBJECT: &str = "test.background.started";

struct WithBackground {
    seen: Arc<Mutex<Vec<&'static str>>>,
}

impl Handler for WithBackground {
    async fn handle(
        &self,
        _job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        Ok(Outcome::Next(ticket))
    }

    fn background_tasks(&self) -> Vec<BackgroundTask> {
        let seen = self.seen.clone();
        vec![BackgroundTask::new("probe", move |context| async move {
            // Recorded before it is announced: the observer may see the message before this
            // task's flush returns.
            seen.lock().unwrap().push("started");
            let client = context.jetstream.client();
            client
                .publish(STARTED_SUBJECT, "".into())
                .await
                .expect("the stage's connection publishes");
            client
                .flush()
                .await
                .expect("the stage's connection flushes");
            context.shutdown.requested().await;
            seen.lock().unwrap().push("stopped");
        })]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_tasks_run_on_the_stage_connection_and_stop_with_it() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let observer = async_nats::connect(nats.url()).await.unwrap();
    let mut started = observer.subscribe(STARTED_SUBJECT).await.unwrap();
    observer.flush().await.unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = WithBackground { seen: seen.clone() };
    let stage = RunningStage::start(config(&nats, dir.path(), &[]), Stage::Wait, handler);
    tokio::time::timeout(Duration::from_secs(20), started.next())
        .await
        .expect("the background task starts once the stage is ready")
        .expect("the subscription stays open");
    assert_eq!(*seen.lock().unwrap(), ["started"]);

    stage.stop().await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["started", "stopped"],
        "run_with returns only after its background tasks saw the shutdown and returned"
    );
}
