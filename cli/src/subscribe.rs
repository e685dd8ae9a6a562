//! `vexxy subscribe`: the reference downstream consumer. A pull consumer of its own on the public
//! stream, filtered to completed and failed events; durable (`--durable NAME`) to resume after a
//! restart, ephemeral otherwise. Each event is acked after it was printed.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use vexxy_events::{AnalysisCompleted, AnalysisFailed, CloudEvent, EventType, subjects};

use crate::CliError;
use crate::cli::{Format, SubscribeArgs};

/// One outcome, flattened for printing.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub event: String,
    pub job_id: Option<String>,
    pub image: Option<String>,
    /// `completed` or the failure reason.
    pub result: String,
    /// The OpenVEX URL, or the failure message.
    pub detail: String,
    pub data: Value,
}

pub fn outcome(payload: &[u8]) -> Outcome {
    let unreadable = |problem: String| Outcome {
        event: "unreadable".into(),
        job_id: None,
        image: None,
        result: "unreadable".into(),
        detail: problem,
        data: Value::Null,
    };
    let event: CloudEvent<Value> = match serde_json::from_slice(payload) {
        Ok(event) => event,
        Err(e) => return unreadable(format!("not a CloudEvent: {e}")),
    };
    if event.is_type(EventType::Completed) {
        match serde_json::from_value::<AnalysisCompleted>(event.data.clone()) {
            Ok(c) => Outcome {
                event: event.event_type.clone(),
                job_id: Some(c.job_id.clone()),
                image: Some(format!("{}@{}", c.image_ref, c.image_digest)),
                result: "completed".into(),
                detail: format!(
                    "affected {} not_affected {} under_investigation {} fixed {}; {}",
                    c.summary.affected,
                    c.summary.not_affected,
                    c.summary.under_investigation,
                    c.summary.fixed,
                    c.artifacts
                        .openvex
                        .as_deref()
                        .unwrap_or("no VEX (no vulnerabilities)")
                ),
                data: event.data,
            },
            Err(e) => unreadable(format!("completed event data: {e}")),
        }
    } else if event.is_type(EventType::Failed) {
        match serde_json::from_value::<AnalysisFailed>(event.data.clone()) {
            Ok(f) => Outcome {
                event: event.event_type.clone(),
                job_id: f.job_id.clone(),
                image: f.image_ref.clone(),
                result: f.reason.to_string(),
                detail: f.message.clone(),
                data: event.data,
            },
            Err(e) => unreadable(format!("failed event data: {e}")),
        }
    } else {
        unreadable(format!("unexpected event type {}", event.event_type))
    }
}

fn print_one(format: Format, outcome: &Outcome) {
    match format {
        // One JSON document per line, so the stream can be piped into jq.
        Format::Json => println!(
            "{}",
            serde_json::to_string(outcome).expect("an outcome serialises")
        ),
        Format::Yaml => print!(
            "---\n{}",
            serde_yaml_ng::to_string(outcome).expect("an outcome serialises")
        ),
        Format::Table => println!(
            "{}  {}  {}  {}",
            outcome.job_id.as_deref().unwrap_or("-"),
            outcome.result,
            outcome.image.as_deref().unwrap_or("-"),
            outcome.detail
        ),
    }
}

pub async fn run(js: &jetstream::Context, args: &SubscribeArgs) -> Result<(), CliError> {
    let unavailable = |e: String| {
        CliError::Unavailable(format!(
            "cannot subscribe to {}: {e}; start the vexxy stages (`cargo xtask up`) so the stream exists",
            subjects::PUBLIC_STREAM
        ))
    };
    let config = pull::Config {
        durable_name: args.durable.clone(),
        description: Some("vexxy subscribe".into()),
        filter_subjects: vec![subjects::COMPLETED.into(), subjects::FAILED.into()],
        deliver_policy: if args.all {
            DeliverPolicy::All
        } else {
            DeliverPolicy::New
        },
        ack_policy: AckPolicy::Explicit,
        inactive_threshold: if args.durable.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        },
        ..Default::default()
    };
    let consumer = js
        .create_consumer_on_stream(config, subjects::PUBLIC_STREAM)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut seen = 0usize;
    while args.count.is_none_or(|limit| seen < limit) {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.map_err(|e| unavailable(e.to_string()))?;
        print_one(args.output, &outcome(&message.payload));
        message
            .ack()
            .await
            .map_err(|e| unavailable(format!("ack failed: {e}")))?;
        seen += 1;
    }
    Ok(())
}
