//! Prometheus metrics of one stage process.
//!
//! Three series answer the operational questions: how many messages ended how
//! (`vexxy_messages_total{stage,outcome}`), how long handlers take
//! (`vexxy_handler_duration_seconds{stage}`) and how busy the process is right now
//! (`vexxy_in_flight{stage}`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vexxy_events::Stage;

/// How one delivery of a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Handed to the next stage.
    Next,
    /// The job completed.
    Completed,
    /// Handed back for a later redelivery (transient error or shutdown).
    Retry,
    /// The job failed (a `failed` event was published).
    Failed,
    /// The message was unusable or exhausted its deliveries and was copied to the dead letters.
    DeadLettered,
    /// Nothing to do: the job was already final, or the request was a duplicate submission.
    Duplicate,
}

impl MessageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Next => "next",
            MessageOutcome::Completed => "completed",
            MessageOutcome::Retry => "retry",
            MessageOutcome::Failed => "failed",
            MessageOutcome::DeadLettered => "dead_lettered",
            MessageOutcome::Duplicate => "duplicate",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    stage: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

/// The metrics of one stage; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    stage: Stage,
    messages: Family<OutcomeLabels, Counter>,
    handler_duration: Family<StageLabels, Histogram>,
    in_flight: Family<StageLabels, Gauge>,
    registry: Arc<Registry>,
}

fn duration_histogram() -> Histogram {
    // 10 ms .. ~1.5 h: handlers range from a status check to a whole analysis window.
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

impl Metrics {
    pub fn new(stage: Stage) -> Self {
        let messages = Family::<OutcomeLabels, Counter>::default();
        let handler_duration = Family::<StageLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let in_flight = Family::<StageLabels, Gauge>::default();
        let mut registry = Registry::default();
        registry.register(
            "vexxy_messages",
            "Messages handled, by how their delivery ended",
            messages.clone(),
        );
        registry.register(
            "vexxy_handler_duration_seconds",
            "Time spent in the stage handler per delivery",
            handler_duration.clone(),
        );
        registry.register(
            "vexxy_in_flight",
            "Messages being handled right now",
            in_flight.clone(),
        );
        let metrics = Metrics {
            stage,
            messages,
            handler_duration,
            in_flight,
            registry: Arc::new(registry),
        };
        // Create the series up front so dashboards see zeros instead of gaps.
        metrics.in_flight_gauge();
        metrics
    }

    pub fn record(&self, outcome: MessageOutcome) {
        self.messages
            .get_or_create(&OutcomeLabels {
                stage: self.stage.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
    }

    pub fn observe_handler(&self, elapsed: Duration) {
        self.handler_duration
            .get_or_create(&StageLabels {
                stage: self.stage.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    fn in_flight_gauge(&self) -> Gauge {
        self.in_flight
            .get_or_create(&StageLabels {
                stage: self.stage.to_string(),
            })
            .clone()
    }

    /// Counts one message as in flight until the returned guard is dropped (also on panic).
    pub fn in_flight(&self) -> InFlightGuard {
        let gauge = self.in_flight_gauge();
        gauge.inc();
        InFlightGuard { gauge }
    }

    /// The Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding into a String cannot fail");
        text
    }
}

pub struct InFlightGuard {
    gauge: Gauge,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
