//! The one stage loop every vexxy stage runs in.
//!
//! A stage crate supplies a [`Handler`]: given one job's [`PipelineTicket`], do this stage's work
//! and say what comes next ([`Outcome`]) or why it cannot ([`StageError`]). Everything else —
//! connecting to NATS, provisioning streams, consumers and the KV bucket, pulling, keeping long
//! work alive, publishing the next event before acking, retries with backoff, dead letters, job
//! status, graceful shutdown, health and metrics — lives here, written once.
//!
//! (API pinned by the founding commit; the implementation fills it in.)

use std::future::Future;

use vexxy_events::{AnalysisCompleted, FailureReason, PipelineTicket, Stage};

/// What a stage decided for one job.
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
    Transient { reason: FailureReason, message: String },
    /// Will never succeed for this message: the job fails now with a `failed` event.
    /// `retryable` tells the user whether submitting again (after fixing the cause) could help.
    #[error("{reason:?}: {message}")]
    Permanent {
        reason: FailureReason,
        message: String,
        retryable: bool,
    },
}

/// One stage's own logic.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> impl Future<Output = Result<Outcome, StageError>> + Send;
}

/// What the runtime tells a handler about the job and delivery at hand.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: String,
    pub stage: Stage,
    /// 1 on first delivery.
    pub delivery: u64,
}
