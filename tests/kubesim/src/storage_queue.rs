//! Kubescape storage's request queues (kubescape/storage `pkg/queuemanager/manager.go`,
//! `QueueHandler`, enabled by the operator chart's `storage.queueManagerEnabled: true`): one
//! queue per kind, in front of the storage API.
//!
//! A request that is not skipped (see [`queued`]) is refused with 413 when its Content-Length
//! is over the kind's `maxObjectSize`, and with 429 when more than the kind's `queueLength`
//! requests of that kind are in the server at once; otherwise it waits for one of the kind's
//! `workerCount` workers. Both refusals are `http.Error`s: a plain-text body, not a
//! `metav1.Status`. The sizes are the chart's (`values.yaml`, `storage.kindQueues`), which are
//! what a cluster runs, not the server's built-in defaults.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One kind's queue settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindQueue {
    pub queue_length: u64,
    pub worker_count: usize,
    pub max_object_size: u64,
}

/// The chart's defaults for a kind it does not list (`defaultQueueLength`,
/// `defaultWorkerCount`, `defaultMaxObjectSize`).
const DEFAULT: KindQueue = KindQueue {
    queue_length: 100,
    worker_count: 2,
    max_object_size: 400_000,
};

/// The chart's `storage.kindQueues`.
fn configured(plural: &str) -> KindQueue {
    let (queue_length, worker_count, max_object_size) = match plural {
        "applicationprofiles" => (50, 2, 20_000_000),
        "containerprofiles" => (50, 2, 2_500_000),
        "networkneighborhoods" => (50, 2, 10_000_000),
        "openvulnerabilityexchangecontainers" => (50, 1, crate::kubescape::MAX_VEX_BYTES as u64),
        "sbomsyftfiltereds" => (50, 1, 50_000_000),
        "sbomsyfts" => (50, 1, 100_000_000),
        "vulnerabilitymanifests" => (50, 1, 50_000_000),
        _ => return DEFAULT,
    };
    KindQueue {
        queue_length,
        worker_count,
        max_object_size,
    }
}

/// `shouldSkipQueue`: watches, metadata-only reads (`resourceVersion=metadata`), lists and
/// follows bypass the queues; `resourceVersion=fullSpec` never does.
pub fn queued(query: &HashMap<String, String>) -> bool {
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "true");
    if flag("watch") {
        return false;
    }
    match query.get("resourceVersion").map(String::as_str) {
        Some("metadata") => return false,
        Some("fullSpec") => return true,
        _ => {}
    }
    !(flag("list") || flag("follow"))
}

struct Queue {
    config: KindQueue,
    in_server: AtomicU64,
    workers: Arc<Semaphore>,
}

/// Every kind's queue, made on first use as the server does.
#[derive(Default)]
pub struct StorageQueues {
    queues: std::sync::Mutex<HashMap<String, Arc<Queue>>>,
}

/// A request's place in its kind's queue, given back when dropped (also when the request is
/// dropped while it waits for a worker: the client went away).
struct Place(Arc<Queue>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.in_server.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request's place and its worker, both given back when dropped.
pub struct Admitted {
    _worker: OwnedSemaphorePermit,
    _place: Place,
}

/// What the queue handler answers instead of serving the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    QueueFull,
}

impl IntoResponse for Refused {
    /// Go's `http.Error`: the text and a newline, `text/plain; charset=utf-8`, `nosniff`.
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Refused::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Request entity too large\n"),
            Refused::QueueFull => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests (queue full)\n",
            ),
        };
        (
            status,
            [
                ("content-type", "text/plain; charset=utf-8"),
                ("x-content-type-options", "nosniff"),
            ],
            text,
        )
            .into_response()
    }
}

impl StorageQueues {
    fn queue(&self, plural: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues
            .entry(plural.to_string())
            .or_insert_with(|| {
                let config = configured(plural);
                Arc::new(Queue {
                    config,
                    in_server: AtomicU64::new(0),
                    workers: Arc::new(Semaphore::new(config.worker_count)),
                })
            })
            .clone()
    }

    /// Admits a request of `plural` whose body is `content_length` bytes, once a worker is
    /// free; or refuses it as the server would.
    pub async fn admit(&self, plural: &str, content_length: u64) -> Result<Admitted, Refused> {
        let queue = self.queue(plural);
        if content_length > queue.config.max_object_size {
            return Err(Refused::TooLarge);
        }
        let in_server = queue.in_server.fetch_add(1, Ordering::SeqCst) + 1;
        let place = Place(queue.clone());
        if in_server > queue.config.queue_length {
            return Err(Refused::QueueFull);
        }
        let worker = queue
            .workers
            .clone()
            .acquire_owned()
            .await
            .expect("the workers' semaphore is never closed");
        Ok(Admitted {
            _worker: worker,
            _place: place,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn watches_lists_and_metadata_reads_skip_the_queue() {
        assert!(queued(&query(&[])));
        assert!(!queued(&query(&[("watch", "true")])));
        assert!(!queued(&query(&[("resourceVersion", "metadata")])));
        assert!(queued(&query(&[("resourceVersion", "fullSpec")])));
        assert!(!queued(&query(&[("list", "true")])));
        assert!(queued(&query(&[("resourceVersion", "12")])));
    }

    #[tokio::test]
    async fn over_the_queue_length_a_request_is_refused_and_its_place_comes_back() {
        let queues = StorageQueues::default();
        let vex = "openvulnerabilityexchangecontainers";
        // One worker: the first holds it, the next 49 wait in the queue.
        let first = queues.admit(vex, 10).await.expect("the first is served");
        let mut waiting = Vec::new();
        for _ in 0..49 {
            let queues = &queues;
            waiting.push(Box::pin(async move { queues.admit(vex, 10).await }));
        }
        for future in &mut waiting {
            // Each takes its place in the queue and then waits for the worker.
            assert!(
                futures::poll!(future.as_mut()).is_pending(),
                "one worker: the others wait"
            );
        }
        assert_eq!(
            queues.admit(vex, 10).await.err(),
            Some(Refused::QueueFull),
            "the 51st request in the server"
        );
        // Another kind has a queue of its own.
        assert!(queues.admit("containerprofiles", 10).await.is_ok());
        drop(first);
        drop(waiting);
        assert!(queues.admit(vex, 10).await.is_ok(), "every place came back");
    }

    #[tokio::test]
    async fn a_body_over_the_kinds_size_is_refused_before_it_queues() {
        let queues = StorageQueues::default();
        assert_eq!(
            queues
                .admit("openvulnerabilityexchangecontainers", 500_001)
                .await
                .err(),
            Some(Refused::TooLarge)
        );
        assert!(
            queues
                .admit("openvulnerabilityexchangecontainers", 500_000)
                .await
                .is_ok()
        );
        assert_eq!(
            queues
                .admit("vulnerabilitymanifestsummaries", 400_001)
                .await
                .err(),
            Some(Refused::TooLarge),
            "a kind the chart does not list gets the default size"
        );
    }
}
