//! The consume loop: pull messages, run the handler, publish what comes next, then ack.
//!
//! The order of effects for one message is the whole point of this module:
//!
//! 1. turn the message into a ticket (validate a request, or decode a hand-off);
//! 2. skip it if the job is already final (a redelivery after the job ended);
//! 3. run the handler, sending in-progress acks so a long handler keeps its message;
//! 4. publish the outcome (next ticket, completed or failed event) and wait for its PubAck;
//! 5. update the job status in KV;
//! 6. only then ack (or term) the input.
//!
//! A crash anywhere before 6 means redelivery, and every effect before it is idempotent
//! (deterministic `Nats-Msg-Id`s, KV compare-and-set, final states never change), so a
//! redelivered message re-does the steps without duplicating any event.
//!
//! Pulling: the loop asks the server for at most as many messages as it has free handler slots,
//! so a replica never holds messages it is not working on (they would sit out their AckWait in
//! a client buffer while another replica could have taken them).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::{AckKind, Message};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use vexxy_events::completed::StageTiming;
use vexxy_events::{
    AnalysisFailed, FailureReason, JobStatus, PipelineTicket, Stage, ValidationPolicy,
};

mod admit;

use crate::config::ConsumerTuning;
use crate::input::Input;
use crate::metrics::{MessageOutcome, Metrics};
use crate::publish::{Delivery, Publisher};
use crate::status::{self, StatusError, Versioned};
use crate::store::Store;
use crate::{Handler, JobContext, Outcome, StageError};

/// Everything a message task needs, shared by all tasks of the process.
pub struct Worker<H> {
    pub stage: Stage,
    /// Requests or tickets, chosen once when the worker is built.
    pub input: Input,
    pub handler: H,
    pub status: kv::Store,
    pub store: Store,
    pub publisher: Publisher,
    pub tuning: ConsumerTuning,
    pub policy: ValidationPolicy,
    pub metrics: Metrics,
}

/// Why the pull loop stopped.
#[derive(Debug, thiserror::Error)]
#[error("pulling from the consumer failed: {0}")]
pub struct PullError(String);

/// Pulls and dispatches messages until `stopping` turns true (returns `Ok`) or the consumer
/// breaks (returns the error so the caller can rebuild it).
pub async fn pull_loop<H: Handler>(
    consumer: &PullConsumer,
    worker: &Arc<Worker<H>>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    hand_back: &watch::Receiver<bool>,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), PullError> {
    let tuning = &worker.tuning;
    loop {
        reap_finished(tasks);
        if *stopping.borrow() {
            return Ok(());
        }
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the slot semaphore is never closed"),
            _ = stop_requested(stopping) => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < tuning.max_in_flight {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let mut batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(tuning.pull_expires)
            // No idle heartbeats on a batch: async-nats 0.51's batch stream swallows a
            // heartbeat without re-arming its waker, stalling the batch until its fallback
            // timer (expires + 5 s) and dropping messages that arrived meanwhile. A lost pull
            // is detected by that timer instead, and a short `expires` keeps pulls fresh.
            .messages()
            .await
            .map_err(|e| PullError(e.to_string()))?;
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = stop_requested(stopping) => {
                    // Messages of this pull may still arrive; hand each back so another
                    // replica gets it soon rather than after its AckWait.
                    while let Some(Ok(message)) = batch.next().await {
                        hand_back_message(&message, tuning).await;
                    }
                    return Ok(());
                }
            };
            let Some(next) = next else { break };
            let message = next.map_err(|e| PullError(e.to_string()))?;
            let Some(permit) = permits.pop() else {
                // The server never sends more than requested; if it did, hand the extra back.
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            let worker = worker.clone();
            let hand_back = hand_back.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let _in_flight = worker.metrics.in_flight();
                process(&worker, message, hand_back).await;
            });
        }
    }
}

/// Hands back a message that arrived in the pull being drained at shutdown, redelivered once
/// that pull has expired: a Nak without a delay would be redelivered at once into the same
/// pull (it is still waiting for more), come back here and be nacked again, using up
/// deliveries until the pull ends.
async fn hand_back_message(message: &Message, tuning: &ConsumerTuning) {
    let _ = message
        .ack_with(AckKind::Nak(Some(tuning.pull_expires)))
        .await;
}

/// Logs tasks that ended by panicking: their message was neither acked nor nacked, so the
/// server redelivers it after AckWait, and the dead-letter watcher catches it if it keeps
/// crashing the handler.
pub fn reap_finished(tasks: &mut JoinSet<()>) {
    while let Some(result) = tasks.try_join_next() {
        log_task_end(result);
    }
}

pub fn log_task_end(result: Result<(), tokio::task::JoinError>) {
    if let Err(error) = result
        && error.is_panic()
    {
        tracing::error!(%error, "a message handler panicked; the message will be redelivered after AckWait");
    }
}

/// Handles one message end to end; never returns an error (every failure is disposed of by
/// acking, nacking or terminating the message, and counted).
async fn process<H: Handler>(
    worker: &Worker<H>,
    message: Message,
    hand_back: watch::Receiver<bool>,
) {
    let delivery = match describe(&message) {
        Some(delivery) => delivery,
        None => {
            tracing::error!(subject = %message.subject, "received a message without JetStream metadata; ignoring it");
            return;
        }
    };
    let span = tracing::info_span!(
        "message",
        stage = %worker.stage,
        job_id = tracing::field::Empty,
        stream_seq = delivery.stream_sequence,
        delivery = delivery.delivered,
    );
    let period = worker.tuning.ack_wait / 3;
    // Pinned here rather than moved into `keep_alive`: a future passed by value keeps a slot for
    // it both as a parameter and as the pinned local, doubling every parked task.
    let work = std::pin::pin!(handle(worker, &message, &delivery, hand_back));
    let outcome = keep_alive(&message, period, work).instrument(span).await;
    worker.metrics.record(outcome);
}

/// Runs `work` while telling the server every `period` that the message is still being worked
/// on, so AckWait does not expire under a long handler (or a slow publish).
async fn keep_alive<F: Future>(
    message: &Message,
    period: Duration,
    mut work: Pin<&mut F>,
) -> F::Output {
    let start = tokio::time::Instant::now() + period;
    let mut ticker = tokio::time::interval_at(start, period);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticker.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(%error, "cannot send in-progress ack");
                }
            }
        }
    }
}

fn describe(message: &Message) -> Option<Delivery> {
    let info = message.info().ok()?;
    let headers = message.headers.clone();
    let msg_id = headers
        .as_ref()
        .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|value| value.as_str().to_string());
    Some(Delivery {
        stream: info.stream.to_string(),
        subject: message.subject.to_string(),
        stream_sequence: info.stream_sequence,
        delivered: u64::try_from(info.delivered).unwrap_or(1).max(1),
        msg_id,
        headers,
        payload: message.payload.clone(),
    })
}

/// What a failed job's `failed` event says about the job (empty when the message named none).
#[derive(Default)]
pub(crate) struct JobFacts {
    pub job_id: Option<String>,
    pub image_ref: Option<String>,
    pub image_digest: Option<String>,
    pub request_msg_id: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl JobFacts {
    pub fn of(ticket: &PipelineTicket) -> Self {
        let request = &ticket.request;
        JobFacts {
            job_id: Some(request.job_id.clone()),
            image_ref: Some(request.image_ref.clone()),
            image_digest: Some(request.image_digest.clone()),
            request_msg_id: request.request_msg_id.clone(),
            labels: request.labels.clone(),
        }
    }
}

/// A failure to report: what, why, and whether the job record should say so.
pub(crate) struct Failure {
    pub facts: JobFacts,
    pub reason: FailureReason,
    pub message: String,
    pub retryable: bool,
    /// False for rejected requests: they never became a job (or belong to another one).
    pub update_status: bool,
}

async fn handle<H: Handler>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
    mut hand_back: watch::Receiver<bool>,
) -> MessageOutcome {
    // Steps 1-2 and 4-6 are boxed. A task's future is as large as its largest state, and the
    // broker calls around the handler (KV reads and writes, publishes, the failure paths) took
    // several KB of every task, also while it only waits in its handler: wait parks up to 5,000
    // of them. Boxed, they take heap memory only while they run.
    let (ticket, known) = match Box::pin(admit::admit(worker, message, delivery)).await {
        Ok(admitted) => admitted,
        Err(outcome) => return outcome,
    };
    let job_id = ticket.request.job_id.clone();

    // 3. The handler, unless shutdown hands the message back first.
    let context = JobContext {
        job_id: job_id.clone(),
        stage: worker.stage,
        delivery: delivery.delivered,
        max_deliver: worker.tuning.max_deliver as u64,
        stream_sequence: delivery.stream_sequence,
        store: worker.store.clone(),
    };
    let facts = JobFacts::of(&ticket);
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = tokio::select! {
        result = worker.handler.handle(&context, ticket) => result,
        _ = handed_back(&mut hand_back) => {
            tracing::info!("shutting down: handing the message back unfinished");
            // This process's pulls have ended by now (the pull loop drained them first), so
            // another replica can have it at once; the runtime flushes before draining.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return MessageOutcome::Retry;
        }
    };
    worker.metrics.observe_handler(clock.elapsed());

    // 4-6. Publish, record, ack.
    let handled = Handled {
        job_id,
        known,
        facts,
        started_at,
        result,
    };
    Box::pin(dispose(worker, message, delivery, handled)).await
}

/// What the handler returned, and what the steps after it need to know about the job.
struct Handled {
    job_id: String,
    /// The job record as last read or written (see `admit`).
    known: Option<Versioned>,
    facts: JobFacts,
    started_at: chrono::DateTime<Utc>,
    result: Result<Outcome, StageError>,
}

/// Steps 4 to 6: publish the outcome, record it, ack (or retry, or fail the job).
async fn dispose<H: Handler>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
    handled: Handled,
) -> MessageOutcome {
    let Handled {
        job_id,
        known,
        facts,
        started_at,
        result,
    } = handled;
    match result {
        Ok(Outcome::Next(mut next_ticket)) => {
            let Some(next) = worker.stage.next() else {
                let failure = Failure {
                    facts,
                    reason: FailureReason::Internal,
                    message: format!(
                        "the {} stage is the last one but asked to hand the job on; this is a bug in vexxy",
                        worker.stage
                    ),
                    retryable: true,
                    update_status: true,
                };
                return fail(worker, message, delivery, failure, MessageOutcome::Failed).await;
            };
            // A handler may record its own (more precise) timing; never list a stage twice.
            if next_ticket.timings.last().map(|t| t.stage) != Some(worker.stage) {
                next_ticket.timings.push(timing(worker.stage, started_at));
            }
            if let Err(error) = worker.publisher.ticket(next, next_ticket).await {
                return retry_later(worker, message, delivery, &error.to_string()).await;
            }
            let record = status::transition_from(
                &worker.status,
                &job_id,
                known,
                None,
                status::moved_to(next),
            )
            .await;
            if let Err(error) = record {
                if !matches!(error, StatusError::Missing { .. }) {
                    return status_unavailable(worker, message, delivery, error).await;
                }
                tracing::warn!(%error, "job has no status record; handing on anyway");
            }
            ack(message).await;
            tracing::info!(%next, "handed the job to the next stage");
            MessageOutcome::Next
        }
        Ok(Outcome::Completed(mut completed)) => {
            if completed.timings.last().map(|t| t.stage) != Some(worker.stage) {
                completed.timings.push(timing(worker.stage, started_at));
            }
            let result_url = completed.artifacts.openvex.clone();
            if let Err(error) = worker.publisher.completed(*completed).await {
                return retry_later(worker, message, delivery, &error.to_string()).await;
            }
            let record = status::transition_from(
                &worker.status,
                &job_id,
                known,
                None,
                status::completed(worker.stage, result_url),
            )
            .await;
            if let Err(error) = record
                && !matches!(error, StatusError::Missing { .. })
            {
                return status_unavailable(worker, message, delivery, error).await;
            }
            ack(message).await;
            tracing::info!("job completed");
            MessageOutcome::Completed
        }
        Err(StageError::Transient {
            reason,
            message: problem,
        }) => {
            let last = delivery.delivered >= worker.tuning.max_deliver as u64;
            if !last {
                let delay = retry_delay(&worker.tuning, delivery.delivered);
                tracing::warn!(reason = reason.as_str(), %problem, ?delay, "transient failure; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                return MessageOutcome::Retry;
            }
            let failure = Failure {
                facts,
                reason,
                message: format!(
                    "{problem} (gave up after {} attempts; submit the request again once the cause is fixed)",
                    delivery.delivered
                ),
                retryable: true,
                update_status: true,
            };
            fail(worker, message, delivery, failure, MessageOutcome::Failed).await
        }
        Err(StageError::Permanent {
            reason,
            message: problem,
            retryable,
        }) => {
            let failure = Failure {
                facts,
                reason,
                message: problem,
                retryable,
                update_status: true,
            };
            fail(worker, message, delivery, failure, MessageOutcome::Failed).await
        }
    }
}

/// Resolves once the runtime asks the pull loop to stop. (A helper rather than an inline
/// `wait_for`, whose borrow guard is not `Send` and must not live across later awaits.)
async fn stop_requested(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once shutdown asks in-flight handlers to hand their messages back.
async fn handed_back(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|hand_back| *hand_back).await.is_err() {
        // The runtime dropped the sender: it will never ask, so never resolve.
        std::future::pending::<()>().await;
    }
}

fn timing(stage: Stage, started_at: chrono::DateTime<Utc>) -> StageTiming {
    let finished_at = Utc::now();
    StageTiming {
        stage,
        started_at,
        finished_at,
        duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
    }
}

/// The delay before redelivery after the `delivered`-th attempt failed transiently: exponential
/// from `retry_base_delay`, capped at `retry_max_delay`.
pub fn retry_delay(tuning: &ConsumerTuning, delivered: u64) -> Duration {
    let attempt = delivered.clamp(1, 64) as usize;
    ExponentialBuilder::default()
        .with_min_delay(tuning.retry_base_delay)
        .with_max_delay(tuning.retry_max_delay)
        .with_factor(2.0)
        .with_max_times(attempt)
        .build()
        .nth(attempt - 1)
        .unwrap_or(tuning.retry_max_delay)
}

async fn ack(message: &Message) {
    // A plain ack, sent only after every effect above is stored. Waiting for the server to
    // confirm it (a double ack: one more subscription and round trip per message) would add
    // nothing but a log line: a lost ack brings the message back after AckWait, and the
    // redelivery finds the job record already past this stage or final (step 2) and is acked
    // without running the handler again. Draining the connection at shutdown flushes it.
    if let Err(error) = message.ack_with(AckKind::Ack).await {
        tracing::warn!(%error, "cannot send the ack; the message will be redelivered (harmless)");
    }
}

async fn skip_handed_on(message: &Message, status: &JobStatus) -> MessageOutcome {
    tracing::info!(now_in = %status.stage, "job already handed on to a later stage; acknowledging the stale delivery");
    ack(message).await;
    MessageOutcome::Duplicate
}

async fn skip_final(message: &Message, status: &JobStatus) -> MessageOutcome {
    tracing::info!(state = ?status.state, "job already finished; acknowledging the redelivered message");
    ack(message).await;
    MessageOutcome::Duplicate
}

/// The broker or KV could not be reached: hand the message back for a later attempt.
async fn retry_later<H>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
    problem: &str,
) -> MessageOutcome {
    let delay = retry_delay(&worker.tuning, delivery.delivered);
    tracing::warn!(%problem, ?delay, "cannot record the outcome now; the message will be redelivered");
    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
    MessageOutcome::Retry
}

async fn status_unavailable<H>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
    error: StatusError,
) -> MessageOutcome {
    retry_later(worker, message, delivery, &error.to_string()).await
}

/// Dead-letters the message, publishes `failed`, records it, then terminates the message.
async fn fail<H>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
    failure: Failure,
    outcome: MessageOutcome,
) -> MessageOutcome {
    if let Err(problem) = report_failure(worker, delivery, &failure).await {
        return retry_later(worker, message, delivery, &problem).await;
    }
    tracing::error!(reason = failure.reason.as_str(), message = %failure.message, "job failed; message dead-lettered");
    if let Err(error) = message.double_ack_with(AckKind::Term).await {
        tracing::warn!(%error, "term not confirmed; a redelivery will find the job final or repeat the (idempotent) failure");
    }
    outcome
}

/// The three idempotent effects of a failure: the original copied to the dead letters, the
/// `failed` event, the job record marked failed. Safe to repeat (deterministic msg ids, final
/// states never change), which is what lets both the handler path and the max-deliveries
/// watcher report the same message.
pub(crate) async fn report_failure<H>(
    worker: &Worker<H>,
    delivery: &Delivery,
    failure: &Failure,
) -> Result<(), String> {
    // A stale delivery must not fail a job that a later stage already owns (see step 2 of
    // `handle`; the job may have been claimed while this handler ran).
    let mut known = None;
    if let (true, Some(job_id)) = (failure.update_status, failure.facts.job_id.as_deref()) {
        match status::read(&worker.status, job_id).await {
            Ok(Some((current, _))) if status::is_past(&current, worker.stage) => {
                tracing::warn!(now_in = %current.stage, reason = failure.reason.as_str(),
                    "not reporting a failure from a stale delivery: a later stage owns the job");
                return Ok(());
            }
            Ok(Some((status, revision))) => known = Some(Versioned { status, revision }),
            Ok(None) => {}
            Err(error) => return Err(error.to_string()),
        }
    }
    let dead_letter_subject = worker
        .publisher
        .dead_letter(delivery, failure.reason)
        .await
        .map_err(|e| e.to_string())?;
    let data = AnalysisFailed {
        job_id: failure.facts.job_id.clone(),
        image_ref: failure.facts.image_ref.clone(),
        image_digest: failure.facts.image_digest.clone(),
        request_msg_id: failure.facts.request_msg_id.clone(),
        stage: worker.stage,
        reason: failure.reason,
        message: failure.message.clone(),
        retryable: failure.retryable,
        original: delivery.original(Some(dead_letter_subject)),
        labels: failure.facts.labels.clone(),
    };
    worker
        .publisher
        .failed(data)
        .await
        .map_err(|e| e.to_string())?;
    if let (true, Some(job_id)) = (failure.update_status, failure.facts.job_id.as_deref()) {
        let change = status::failed(worker.stage, failure.reason, failure.message.clone());
        // Starting from the record read above: if a later stage claimed the job since (while
        // the dead letter and the event were published), the revision no longer matches and
        // the change is re-applied to the fresh record.
        match status::transition_from(&worker.status, job_id, known, None, change).await {
            Ok(_) | Err(StatusError::Missing { .. }) => {}
            Err(error) => return Err(error.to_string()),
        }
    }
    worker.metrics.record_failure(failure.reason);
    Ok(())
}
