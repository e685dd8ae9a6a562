//! The one stage loop every vexxy stage runs in.
//!
//! A stage crate supplies a [`Handler`]: given one job's [`PipelineTicket`], do this stage's work
//! and say what comes next ([`Outcome`]) or why it cannot ([`StageError`]). Everything else —
//! connecting to NATS, provisioning streams, consumers and the KV bucket, pulling, keeping long
//! work alive, publishing the next event before acking, retries with backoff, dead letters, job
//! status, graceful shutdown, health and metrics — lives here, written once.
//!
//! Read in this order (only `background`, `config`, `connect`, `kubernetes`, `logging`,
//! `provision`, `status` and `store` are used from outside; the rest is private):
//! * [`config`]: every setting, from environment variables, validated at start.
//! * [`connect`], [`provision`]: the NATS connection and the JetStream objects.
//! * [`consume`]: the loop and the order of effects for one message (the heart of it); its
//!   steps 1-2 (ticket, claim) in `consume/admit.rs`, by the stage's [`input`] kind (requests or
//!   tickets, chosen when the worker is built).
//! * [`intake`]: how the first stage turns a request into a job.
//! * [`status`]: the job record in KV, written with compare-and-set.
//! * [`publish`]: outgoing events and dead letters, with deterministic message ids.
//! * [`advisory`]: dead-lettering messages whose handler crashed on every delivery.
//! * [`store`]: object storage for artifacts.
//! * [`kubernetes`] (feature `kubernetes`): Kubernetes API failures as stage errors.
//! * [`health`], [`metrics`], [`logging`], [`shutdown`]: operating the process.
//! * [`background`]: work a stage runs beside its handler, under the runtime's connection and
//!   shutdown.

mod advisory;
pub mod background;
pub mod config;
pub mod connect;
mod consume;
mod health;
mod input;
mod intake;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod logging;
mod metrics;
pub mod provision;
mod publish;
mod secret;
mod shutdown;
pub mod status;
pub mod store;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use vexxy_events::{AnalysisCompleted, FailureReason, MissingSection, PipelineTicket, Stage};

pub use background::{BackgroundContext, BackgroundTask, ShutdownSignal};
pub use config::{ConfigError, Env, RuntimeConfig, StageDefaults};
pub use health::HealthError;
pub use store::{Store, StoreError, job_key};

/// What a stage decided for one job.
// The ticket is not boxed: this is the API five stages code against, and one ticket per message
// is nothing worth an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Hand the updated ticket to the next stage.
    Next(PipelineTicket),
    /// The job is finished: publish `vexxy.analysis.completed` (only the last stage returns this).
    Completed(Box<AnalysisCompleted>),
}

/// Why a stage could not finish a job.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Could succeed later (broker, storage or API hiccup): the message is redelivered with an
    /// exponential delay; after the last allowed delivery the job fails with `reason`.
    #[error("{reason:?} (will retry): {message}")]
    Transient {
        reason: FailureReason,
        message: String,
    },
    /// Will never succeed for this message: the job fails now with a `failed` event.
    /// `retryable` tells the user whether submitting again (after fixing the cause) could help.
    #[error("{reason:?}: {message}")]
    Permanent {
        reason: FailureReason,
        message: String,
        retryable: bool,
    },
}

/// A ticket without a section an earlier stage fills fails the job: a later delivery of the same
/// message would lack it too, while a resubmitted analysis goes through every stage.
impl From<MissingSection> for StageError {
    fn from(missing: MissingSection) -> Self {
        StageError::Permanent {
            reason: FailureReason::Internal,
            message: missing.to_string(),
            retryable: true,
        }
    }
}

/// One stage's own logic.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> impl Future<Output = Result<Outcome, StageError>> + Send;

    /// Work to run beside the handler for as long as the stage runs, started once the stage is
    /// ready and stopped on shutdown (see [`background`]). None by default.
    fn background_tasks(&self) -> Vec<BackgroundTask> {
        Vec::new()
    }
}

/// What the runtime tells a handler about the job and delivery at hand.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: String,
    pub stage: Stage,
    /// 1 on first delivery.
    pub delivery: u64,
    /// The last delivery the runtime allows (`VEXXY_MAX_DELIVER`); a transient error on it fails
    /// the job.
    pub max_deliver: u64,
    /// Stream sequence of the message being handled (stable across redeliveries).
    pub stream_sequence: u64,
    /// The configured object store (`VEXXY_STORE`).
    pub store: Store,
}

impl JobContext {
    /// True when a transient error now would fail the job instead of being retried.
    pub fn is_last_delivery(&self) -> bool {
        self.delivery >= self.max_deliver
    }
}

/// Everything that can stop a stage before or instead of a clean shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("cannot create the {stage} handler: {message}")]
    Handler { stage: Stage, message: String },
}

/// The entry point of a stage binary: reads the configuration from the environment (with the
/// stage's own `defaults`), builds the handler with `make_handler`, and runs until
/// SIGTERM/SIGINT.
///
/// Exit codes: 0 after a clean shutdown, 2 for a configuration error (one line naming the
/// variable), 1 for anything else that stops the stage at start.
pub async fn run<H, F, Fut>(stage: Stage, defaults: StageDefaults, make_handler: F) -> ExitCode
where
    H: Handler,
    F: FnOnce(&RuntimeConfig) -> Fut,
    Fut: Future<Output = anyhow::Result<H>>,
{
    let config = match RuntimeConfig::from_env(defaults) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("vexxy-{stage}: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_format);
    tracing::info!(%stage, ?config, "starting");
    let handler = match make_handler(&config).await {
        Ok(handler) => handler,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line.
            tracing::error!(%stage, "cannot start: {error:#}");
            eprintln!("vexxy-{stage}: cannot start: {error:#}");
            return ExitCode::from(2);
        }
    };
    match run_with(config, stage, handler, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%stage, %error, "stopped");
            eprintln!("vexxy-{stage}: {error}");
            match error {
                RuntimeError::Config(_) | RuntimeError::Store(StoreError::InvalidUrl { .. }) => {
                    ExitCode::from(2)
                }
                // Refused credentials or TLS: retrying cannot help, the configuration must change.
                RuntimeError::Connect(ref error) if error.is_configuration() => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Runs `stage` with `handler` until `shutdown` resolves, then shuts down gracefully: stop
/// pulling and the handler's background tasks, let in-flight handlers finish within
/// `shutdown_grace`, hand back the rest, drain the connection. Returns only errors that prevent starting at all; broker trouble after start is
/// retried forever.
pub async fn run_with<H: Handler>(
    config: RuntimeConfig,
    stage: Stage,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    store::install_crypto_provider();
    let store = Store::open(&config.store_url, &config.store_options)?;
    let metrics = metrics::Metrics::new(stage);
    let readiness = health::Readiness::default();
    let (exit_tx, exit_rx) = watch::channel(false);
    health::serve(
        config.health_addr,
        config.health_addr_file.clone(),
        readiness.clone(),
        metrics.clone(),
        wait_for_true(exit_rx),
    )
    .await?;

    let client = connect::connect(&config.nats, stage).await?;
    let js = async_nats::jetstream::new(client.clone());
    tokio::pin!(shutdown);

    let provisioned = tokio::select! {
        provisioned = provision_until_ok(&js, stage, &config.consumer) => provisioned,
        _ = &mut shutdown => {
            tracing::info!(%stage, "shutdown before the stage was ready");
            let _ = exit_tx.send(true);
            return Ok(());
        }
    };
    readiness.set(true);
    tracing::info!(%stage, "ready: consuming {}", vexxy_events::subjects::input_of(stage));

    let background_tasks = background::Running::spawn(stage, handler.background_tasks(), &js);
    let worker = Arc::new(consume::Worker {
        stage,
        input: input::Input::of(stage),
        handler,
        status: provisioned.status,
        store,
        publisher: publish::Publisher::new(js.clone(), stage),
        tuning: config.consumer.clone(),
        policy: config.policy.clone(),
        metrics,
    });
    let advisories = tokio::spawn(advisory::watch(client.clone(), js.clone(), worker.clone()));

    let slots = Arc::new(Semaphore::new(config.consumer.max_in_flight));
    let mut tasks = JoinSet::new();
    let (hand_back_tx, hand_back_rx) = watch::channel(false);
    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let mut consumer = provisioned.consumer;

    // Pull until shutdown; rebuild the consumer (and everything it depends on) whenever pulling
    // fails: a restarted broker may have lost a memory-stored stream, a deleted consumer must be
    // recreated, and "no responders" just means JetStream is not back yet.
    let mut shutdown_requested = false;
    loop {
        let pulled = {
            let pulling = consume::pull_loop(
                &consumer,
                &worker,
                &slots,
                &mut tasks,
                &hand_back_rx,
                &mut stopping_rx,
            );
            tokio::pin!(pulling);
            tokio::select! {
                result = &mut pulling => result,
                _ = &mut shutdown, if !shutdown_requested => {
                    shutdown_requested = true;
                    let _ = stopping_tx.send(true);
                    // Let the pull loop finish handing back what its current pull delivers.
                    pulling.await
                }
            }
        };
        match pulled {
            Ok(()) => break,
            Err(error) => {
                if shutdown_requested {
                    break;
                }
                readiness.set(false);
                tracing::warn!(%stage, %error, "consumer failed; rebuilding it");
                tokio::select! {
                    provisioned = provision_until_ok(&js, stage, &config.consumer) => {
                        consumer = provisioned.consumer;
                        readiness.set(true);
                        tracing::info!(%stage, "consumer rebuilt; consuming again");
                    }
                    _ = &mut shutdown => break,
                }
            }
        }
    }

    readiness.set(false);
    // Background work stops while in-flight handlers finish; both before the connection drains.
    background_tasks.request_stop();
    finish_in_flight(stage, &mut tasks, config.shutdown_grace, &hand_back_tx).await;
    background_tasks.join(stage).await;
    advisories.abort();
    // The hand-backs and acks above are only queued; drain may close the socket before the
    // queue is written (seen: a Nak lost, its message then waiting out AckWait), so flush first.
    match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "flushing the NATS connection failed"),
        Err(_) => tracing::warn!("flushing the NATS connection timed out"),
    }
    match tokio::time::timeout(Duration::from_secs(5), client.drain()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "draining the NATS connection failed"),
        Err(_) => tracing::warn!("draining the NATS connection timed out"),
    }
    let _ = exit_tx.send(true);
    tracing::info!(%stage, "stopped");
    Ok(())
}

/// Waits up to `grace` for running handlers, then asks the rest to hand their messages back
/// (Nak without delay, so another replica picks them up immediately).
async fn finish_in_flight(
    stage: Stage,
    tasks: &mut JoinSet<()>,
    grace: Duration,
    hand_back: &watch::Sender<bool>,
) {
    if tasks.is_empty() {
        return;
    }
    tracing::info!(%stage, running = tasks.len(), ?grace, "waiting for in-flight messages");
    let finished = tokio::time::timeout(grace, async {
        while let Some(result) = tasks.join_next().await {
            consume::log_task_end(result);
        }
    })
    .await;
    if finished.is_ok() {
        return;
    }
    tracing::warn!(%stage, running = tasks.len(), "grace period over; handing unfinished messages back");
    let _ = hand_back.send(true);
    let handed_back = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(result) = tasks.join_next().await {
            consume::log_task_end(result);
        }
    })
    .await;
    if handed_back.is_err() {
        tracing::error!(%stage, "some messages could not be handed back in time; they return after AckWait");
        tasks.abort_all();
    }
}

async fn provision_until_ok(
    js: &async_nats::jetstream::Context,
    stage: Stage,
    tuning: &config::ConsumerTuning,
) -> provision::Provisioned {
    let attempt = || provision::provision(js, stage, tuning);
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .without_max_times()
                .with_jitter(),
        )
        .notify(|error, delay| {
            tracing::warn!(%stage, %error, ?delay, "cannot provision JetStream yet; retrying");
        })
        .await
        .expect("retrying without a limit only ends on success")
}

async fn wait_for_true(mut signal: watch::Receiver<bool>) {
    let _ = signal.wait_for(|value| *value).await;
}
