//! Prometheus metrics of one stage process.
//!
//! Four series answer the operational questions: how many messages ended how
//! (`vexxy_messages_total{stage,outcome}`), why jobs failed or requests were rejected
//! (`vexxy_failures_total{stage,reason}`, the reason code of the `failed` event), how long
//! handlers take (`vexxy_handler_duration_seconds{stage}`) and how busy the process is right now
//! (`vexxy_in_flight{stage}`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vexxy_events::{FailureReason, Stage};

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
    const COUNT: usize = 6;

    fn index(self) -> usize {
        self as usize
    }

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
struct FailureLabels {
    stage: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

/// The metrics of one stage; cheap to clone.
///
/// A process has one stage, so each series' handle is looked up once and kept (the handles
/// share their value with the registry): a message then costs an atomic update per series
/// rather than label strings built, hashed and looked up under a lock. An outcome's counter is
/// still created on its first use, so `/metrics` lists the same series as before.
#[derive(Clone)]
pub struct Metrics {
    stage: Stage,
    messages: Family<OutcomeLabels, Counter>,
    outcome_counters: Arc<[OnceLock<Counter>; MessageOutcome::COUNT]>,
    // Failures are rare next to messages: looked up per failure, no cached handles.
    failures: Family<FailureLabels, Counter>,
    handler_duration: Family<StageLabels, Histogram>,
    stage_histogram: Arc<OnceLock<Histogram>>,
    in_flight: Gauge,
    registry: Arc<Registry>,
}

fn duration_histogram() -> Histogram {
    // 10 ms .. ~1.5 h: handlers range from a status check to a whole analysis window.
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

impl Metrics {
    pub fn new(stage: Stage) -> Self {
        let messages = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
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
            "vexxy_failures",
            "Failed jobs and rejected requests reported (failed event published), by reason code",
            failures.clone(),
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
        let stage_labels = StageLabels {
            stage: stage.to_string(),
        };
        // Created up front so dashboards see zeros instead of gaps.
        let in_flight = in_flight.get_or_create(&stage_labels).clone();
        Metrics {
            stage,
            messages,
            outcome_counters: Arc::new(std::array::from_fn(|_| OnceLock::new())),
            failures,
            handler_duration,
            stage_histogram: Arc::new(OnceLock::new()),
            in_flight,
            registry: Arc::new(registry),
        }
    }

    pub fn record(&self, outcome: MessageOutcome) {
        self.outcome_counters[outcome.index()]
            .get_or_init(|| {
                self.messages
                    .get_or_create(&OutcomeLabels {
                        stage: self.stage.to_string(),
                        outcome: outcome.as_str().to_string(),
                    })
                    .clone()
            })
            .inc();
    }

    /// Counts one reported failure (a `failed` event published) under its reason code.
    pub fn record_failure(&self, reason: FailureReason) {
        self.failures
            .get_or_create(&FailureLabels {
                stage: self.stage.to_string(),
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    pub fn observe_handler(&self, elapsed: Duration) {
        self.stage_histogram
            .get_or_init(|| {
                self.handler_duration
                    .get_or_create(&StageLabels {
                        stage: self.stage.to_string(),
                    })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one message as in flight until the returned guard is dropped (also on panic).
    pub fn in_flight(&self) -> InFlightGuard {
        self.in_flight.inc();
        InFlightGuard {
            gauge: self.in_flight.clone(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_reason_code() {
        let metrics = Metrics::new(Stage::Deploy);
        metrics.record_failure(FailureReason::KubernetesUnavailable);
        metrics.record_failure(FailureReason::KubernetesUnavailable);
        metrics.record_failure(FailureReason::MaxDeliveriesExceeded);
        let text = metrics.render();
        let line = |reason: &str, count: u64| {
            format!("vexxy_failures_total{{stage=\"deploy\",reason=\"{reason}\"}} {count}")
        };
        assert!(text.contains(&line("kubernetes_unavailable", 2)), "{text}");
        assert!(text.contains(&line("max_deliveries_exceeded", 1)), "{text}");
    }
}
