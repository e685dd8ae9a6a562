//! Dead-lettering messages that exhausted their deliveries without the handler ever deciding.
//!
//! The handler path dead-letters what it can: permanent errors, and transient errors on the last
//! delivery. But a message whose handler crashes the process (or hangs past AckWait) every time
//! never reaches that code. JetStream announces such a message with a MAX_DELIVERIES advisory
//! when it stops redelivering it; this watcher fetches the message by its stream sequence,
//! copies it to the dead letters, fails the job, and removes it from the work queue (where it
//! would otherwise stay forever, unacked). Every replica of the stage sees the advisory; the
//! effects are idempotent, so it does not matter how many act on it.

use std::sync::Arc;

use async_nats::jetstream::Context;
use futures::StreamExt;
use serde::Deserialize;
use tracing::Instrument;
use vexxy_events::{FailureReason, Stage, parse_request, subjects};

use crate::consume::{Failure, JobFacts, Worker, report_failure};
use crate::input::{Input, decode_ticket};
use crate::metrics::MessageOutcome;
use crate::publish::Delivery;
use crate::status;

/// The fields of `io.nats.jetstream.advisory.v1.max_deliver` we use.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    stream_seq: u64,
    deliveries: u64,
}

/// The advisory subject for `stage`'s consumer.
pub fn advisory_subject(stage: Stage) -> String {
    format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        subjects::input_stream_of(stage),
        subjects::durable_of(stage)
    )
}

/// Runs until the connection closes.
pub async fn watch<H>(client: async_nats::Client, js: Context, worker: Arc<Worker<H>>) {
    let subject = advisory_subject(worker.stage);
    let mut advisories = match client.subscribe(subject.clone()).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::error!(%subject, %error, "cannot watch for messages that exhausted their deliveries");
            return;
        }
    };
    while let Some(advisory) = advisories.next().await {
        match serde_json::from_slice::<MaxDeliveries>(&advisory.payload) {
            Ok(advisory) => handle(&js, &worker, advisory).await,
            Err(error) => tracing::warn!(%error, "unreadable max-deliveries advisory"),
        }
    }
}

async fn handle<H>(js: &Context, worker: &Worker<H>, advisory: MaxDeliveries) {
    let stream = match js.get_stream(&advisory.stream).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(stream = %advisory.stream, %error, "cannot open the stream of an exhausted message");
            return;
        }
    };
    let original = match stream.get_raw_message(advisory.stream_seq).await {
        Ok(message) => message,
        Err(error) => {
            // Another replica already dealt with it and removed it, or it aged out.
            tracing::debug!(seq = advisory.stream_seq, %error, "exhausted message no longer in the stream");
            return;
        }
    };
    let msg_id = original
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|value| value.as_str().to_string());
    let delivery = Delivery {
        stream: advisory.stream.clone(),
        subject: original.subject.to_string(),
        stream_sequence: advisory.stream_seq,
        delivered: advisory.deliveries,
        msg_id,
        headers: Some(original.headers.clone()),
        payload: original.payload.clone(),
    };
    let (facts, update_status) = job_of(worker, &delivery).await;
    let span = tracing::info_span!(
        "max_deliveries",
        stage = %worker.stage,
        job_id = facts.job_id.as_deref().unwrap_or("-"),
        stream_seq = delivery.stream_sequence,
    );
    let failure = Failure {
        message: format!(
            "the {} stage did not finish this message in {} deliveries: its handler crashed or \
             hung every time. Look at the stage's logs for this job; the original message is \
             kept on {} for replay",
            worker.stage,
            advisory.deliveries,
            subjects::dead_letter_of(worker.stage)
        ),
        facts,
        reason: FailureReason::MaxDeliveriesExceeded,
        retryable: true,
        update_status,
    };
    async {
        if let Err(problem) = report_failure(worker, &delivery, &failure).await {
            tracing::error!(%problem, "cannot dead-letter an exhausted message; it stays in its stream");
            return;
        }
        // Only the work queue is ours to clean; the public stream keeps requests for other
        // readers.
        if advisory.stream == subjects::PIPELINE_STREAM
            && let Err(error) = stream.delete_message(advisory.stream_seq).await
        {
            tracing::debug!(%error, "exhausted message already removed");
        }
        tracing::error!("message exhausted its deliveries; dead-lettered and job failed");
        worker.metrics.record(MessageOutcome::DeadLettered);
    }
    .instrument(span)
    .await
}

/// What can be learnt about the job from the message, and whether its record may be marked
/// failed (for a request, only if the record was created by this very message).
async fn job_of<H>(worker: &Worker<H>, delivery: &Delivery) -> (JobFacts, bool) {
    if worker.input == Input::Ticket {
        return match decode_ticket(delivery) {
            Ok(ticket) => (JobFacts::of(&ticket), true),
            Err(_) => (
                JobFacts {
                    job_id: delivery.header(subjects::HEADER_JOB_ID),
                    ..JobFacts::default()
                },
                true,
            ),
        };
    }
    match parse_request(
        &delivery.payload,
        delivery.msg_id.as_deref(),
        &worker.policy,
    ) {
        Ok(request) => {
            let owns_record = matches!(
                status::read(&worker.status, &request.job_id).await,
                Ok(Some((record, _))) if record.request_sequence == delivery.stream_sequence
            );
            let facts = JobFacts {
                job_id: Some(request.job_id.clone()),
                image_ref: Some(request.image_ref.clone()),
                image_digest: Some(request.image_digest.clone()),
                request_msg_id: delivery.msg_id.clone(),
                labels: request.labels.clone(),
            };
            (facts, owns_record)
        }
        Err(rejection) => (
            JobFacts {
                job_id: rejection.job_id,
                image_ref: rejection.image_ref,
                image_digest: rejection.image_digest,
                request_msg_id: delivery.msg_id.clone(),
                labels: rejection.labels,
            },
            false,
        ),
    }
}
