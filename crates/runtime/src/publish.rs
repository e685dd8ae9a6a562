//! Everything the runtime publishes: tickets, completed and failed events, dead letters.
//!
//! Every publish carries a deterministic `Nats-Msg-Id`, so publishing the same step twice (a
//! redelivered input, a retry after a lost PubAck, two replicas racing) stores one message: the
//! stream's duplicate window drops the copy. Every publish waits for the PubAck, because "the
//! next event is in a stream" is what allows acking the input; and it is retried with backoff
//! while the broker is unreachable.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::publish::PublishAck;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use serde::Serialize;
use vexxy_events::failed::OriginalMessage;
use vexxy_events::subjects::{
    HEADER_DLQ_REASON, HEADER_DLQ_SEQUENCE, HEADER_DLQ_STREAM, HEADER_DLQ_SUBJECT, HEADER_JOB_ID,
    HEADER_REQUEST_MSG_ID,
};
use vexxy_events::{
    AnalysisCompleted, AnalysisFailed, CloudEvent, FailureReason, PipelineTicket, Stage, subjects,
};

/// Header on a dead letter carrying the original's `Nats-Msg-Id` (the original header itself
/// cannot be kept: it would make the dead letter a "duplicate" of unrelated messages).
pub const HEADER_DLQ_MSG_ID: &str = "Vexxy-Original-Msg-Id";

#[derive(Debug, thiserror::Error)]
#[error("cannot publish to {subject} (msg id {msg_id}): {message}")]
pub struct PublishError {
    pub subject: String,
    pub msg_id: String,
    pub message: String,
}

/// One received message, detached from the client so it can be described, copied and reported.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub stream: String,
    pub subject: String,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u64,
    pub msg_id: Option<String>,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_string())
            .filter(|value| !value.is_empty())
    }

    /// Where the original is, for the `failed` event.
    pub fn original(&self, dead_letter_subject: Option<String>) -> OriginalMessage {
        OriginalMessage {
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            stream_sequence: self.stream_sequence,
            msg_id: self.msg_id.clone(),
            dead_letter_subject,
        }
    }
}

/// Publishes with retries; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    js: Context,
    stage: Stage,
}

impl Publisher {
    pub fn new(js: Context, stage: Stage) -> Self {
        Publisher { js, stage }
    }

    /// Publishes `payload` to `subject` with `Nats-Msg-Id: msg_id` and waits for the PubAck,
    /// retrying for a while (about half a minute) if the broker does not answer.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        mut headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishAck, PublishError> {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let attempt = || async {
            let ack: PublishAckFuture = self
                .js
                .publish_with_headers(subject.to_string(), headers.clone(), payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        let ack = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(10)
                    .with_jitter(),
            )
            .notify(|error, delay| {
                tracing::warn!(subject, msg_id, %error, ?delay, "publish failed; retrying");
            })
            .await
            .map_err(|message| PublishError {
                subject: subject.to_string(),
                msg_id: msg_id.to_string(),
                message,
            })?;
        if ack.duplicate {
            tracing::debug!(
                subject,
                msg_id,
                "already published before (duplicate dropped by the stream)"
            );
        }
        Ok(ack)
    }

    async fn publish_event<T: Serialize>(
        &self,
        subject: &str,
        event: &CloudEvent<T>,
        job_id: Option<&str>,
        request_msg_id: Option<&str>,
    ) -> Result<PublishAck, PublishError> {
        let mut headers = HeaderMap::new();
        if let Some(job_id) = job_id {
            headers.insert(HEADER_JOB_ID, job_id);
        }
        if let Some(request_msg_id) = request_msg_id {
            headers.insert(HEADER_REQUEST_MSG_ID, request_msg_id);
        }
        headers.insert("Content-Type", "application/cloudevents+json");
        let payload = Bytes::from(serde_json::to_vec(event).expect("events always serialise"));
        self.publish(subject, &event.id, headers, payload).await
    }

    /// Hands `ticket` to `next` on `vexxy.pipeline.<next>`.
    pub async fn ticket(
        &self,
        next: Stage,
        ticket: PipelineTicket,
    ) -> Result<PublishAck, PublishError> {
        let job_id = ticket.request.job_id.clone();
        let request_msg_id = ticket.request.request_msg_id.clone();
        let event = vexxy_events::ticket_event(self.stage, ticket);
        self.publish_event(
            &subjects::input_of(next),
            &event,
            Some(&job_id),
            request_msg_id.as_deref(),
        )
        .await
    }

    /// Publishes `vexxy.analysis.completed`.
    pub async fn completed(&self, data: AnalysisCompleted) -> Result<PublishAck, PublishError> {
        let job_id = data.job_id.clone();
        let request_msg_id = data.request_msg_id.clone();
        let event = vexxy_events::completed_event(self.stage, data);
        self.publish_event(
            subjects::COMPLETED,
            &event,
            Some(&job_id),
            request_msg_id.as_deref(),
        )
        .await
    }

    /// Publishes `vexxy.analysis.failed`.
    pub async fn failed(&self, data: AnalysisFailed) -> Result<PublishAck, PublishError> {
        let job_id = data.job_id.clone();
        let request_msg_id = data.request_msg_id.clone();
        let event = vexxy_events::failed_event(data);
        self.publish_event(
            subjects::FAILED,
            &event,
            job_id.as_deref(),
            request_msg_id.as_deref(),
        )
        .await
    }

    /// Copies the original message byte for byte to `vexxy.dlq.<stage>`, with its headers and
    /// where it came from; returns the dead-letter subject.
    pub async fn dead_letter(
        &self,
        original: &Delivery,
        reason: FailureReason,
    ) -> Result<String, PublishError> {
        let subject = subjects::dead_letter_of(self.stage);
        let mut headers = HeaderMap::new();
        if let Some(source) = &original.headers {
            for (name, values) in source.iter() {
                // `Nats-*` headers steer JetStream (dedupe, expected sequence, TTL); on a copy
                // they would make the publish fail or be dropped, so they are not carried over.
                if AsRef::<str>::as_ref(name).starts_with("Nats-") {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        if let Some(msg_id) = &original.msg_id {
            headers.insert(HEADER_DLQ_MSG_ID, msg_id.as_str());
        }
        headers.insert(HEADER_DLQ_REASON, reason.as_str());
        headers.insert(HEADER_DLQ_STREAM, original.stream.as_str());
        headers.insert(
            HEADER_DLQ_SEQUENCE,
            original.stream_sequence.to_string().as_str(),
        );
        headers.insert(HEADER_DLQ_SUBJECT, original.subject.as_str());
        let msg_id = format!("dlq.{}.{}", original.stream, original.stream_sequence);
        self.publish(&subject, &msg_id, headers, original.payload.clone())
            .await?;
        Ok(subject)
    }
}
