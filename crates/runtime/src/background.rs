//! Work a stage runs beside its handler (extract's janitor, say), declared with
//! [`Handler::background_tasks`](crate::Handler::background_tasks).
//!
//! The runtime spawns each task once the stage is ready, on the stage's own NATS connection, and
//! on shutdown tells it to stop and waits for it before draining that connection: background work
//! neither holds a second connection nor outlives the process's orderly exit.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use vexxy_events::Stage;

/// How long a background task may take to return after being told to stop before it is aborted.
const STOP_BOUND: Duration = Duration::from_secs(5);

type Start = Box<dyn FnOnce(BackgroundContext) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// One piece of background work: a name for logs and the future to run.
pub struct BackgroundTask {
    name: &'static str,
    start: Start,
}

impl BackgroundTask {
    /// `run` receives the runtime's JetStream context and shutdown signal; it should return soon
    /// after [`ShutdownSignal::requested`] resolves (it is aborted after a few seconds anyway).
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce(BackgroundContext) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        BackgroundTask {
            name,
            start: Box::new(move |context| Box::pin(run(context))),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for BackgroundTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundTask")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What the runtime hands a background task.
#[derive(Debug, Clone)]
pub struct BackgroundContext {
    /// JetStream on the stage's own connection (`jetstream.client()` for core NATS).
    pub jetstream: async_nats::jetstream::Context,
    pub shutdown: ShutdownSignal,
}

/// Tells background work that the stage is shutting down.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// Resolves once shutdown was requested (at once if it already was).
    pub async fn requested(&self) {
        let mut receiver = self.0.clone();
        // An error means the runtime is gone, which is a shutdown too.
        let _ = receiver.wait_for(|stop| *stop).await;
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// The spawned background tasks of one running stage.
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    pub(crate) fn spawn(
        stage: Stage,
        tasks: Vec<BackgroundTask>,
        jetstream: &async_nats::jetstream::Context,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut running = JoinSet::new();
        for task in tasks {
            tracing::debug!(%stage, task = task.name, "starting background task");
            let context = BackgroundContext {
                jetstream: jetstream.clone(),
                shutdown: ShutdownSignal(stopped.clone()),
            };
            running.spawn((task.start)(context));
        }
        Running {
            stop,
            tasks: running,
        }
    }

    /// Tells every task to stop; [`Running::join`] waits for them.
    pub(crate) fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits (bounded) for every task to return, then aborts what is left.
    pub(crate) async fn join(mut self, stage: Stage) {
        self.request_stop();
        let joined = tokio::time::timeout(STOP_BOUND, async {
            while let Some(result) = self.tasks.join_next().await {
                if let Err(error) = result {
                    tracing::error!(%stage, %error, "a background task failed");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(%stage, running = self.tasks.len(), bound = ?STOP_BOUND, "background tasks did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}
