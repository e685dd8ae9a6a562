//! A vexxy stack for benchmarks: nats-server, a `file://` object store, kubesim with zero
//! delays and the five release-built stage binaries with their production settings (only the
//! addresses, the sandbox-namespace creation and the analysis-window minimum of 1 s differ).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::pull};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use vexxy_events::completed::StageTiming;
use vexxy_events::{AnalysisRequest, CloudEvent, EventType, RunConfig, subjects};
use vexxy_harness::NatsServer;
use vexxy_harness::stack::{self, KubesimProcess, Pipeline, StackEndpoints};

/// kubesim's alpine fixture (the real Syft SBOM and Grype report: 15 packages, 20 matches).
pub const IMAGE_REF: &str = "docker.io/library/alpine";
pub const IMAGE_DIGEST: &str =
    "sha256:e2e16842c9b54d985bf1ef9242a313f36b856181f188de21313820e177002501";

pub struct BenchStack {
    pub dir: tempfile::TempDir,
    pub nats: NatsServer,
    pub kubesim: KubesimProcess,
    pub pipeline: Pipeline,
}

/// kubesim flags: every delay of emulated machinery zero (its controllers tick at their 5 ms
/// floor). The watch history is kubesim's default, five minutes like a real API server's etcd (a
/// count-based 10,000 events was overrun within seconds by a burst of 2,000 analyses, and wait's
/// re-watches got 410 forever). node-agent's first profile save (`--first-save-delay-ms`) is left
/// at kubesim's default, 2 minutes like the chart's `nodeAgent.config.learningPeriod`: it is a
/// Kubescape setting, not machinery speed, so zeroing it would invent a learning-time scan for
/// every short window. Windows shorter than it have no `ready` save, as on a real cluster; the
/// 300 s API-request window has one, and wait then sits out `VEXXY_LEARNING_SCAN_BOUND` after it
/// (rule B: correct, and it only costs bench wall time).
pub fn zero_delay_kubesim_args() -> Vec<String> {
    [
        "--seed",
        "8",
        "--pod-start-delay-ms",
        "0",
        "--learning-period-ms",
        "0",
        "--consolidation-delay-ms",
        "0",
        "--scan-delay-ms",
        "0",
    ]
    .map(String::from)
    .to_vec()
}

impl BenchStack {
    pub fn start(name: &str) -> Result<BenchStack> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vexxy-bench-{name}-"))
            .tempdir()?;
        let nats = NatsServer::start()?;
        let kubesim = KubesimProcess::start(dir.path(), &zero_delay_kubesim_args())?;
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir)?;
        let endpoints = StackEndpoints {
            nats_url: nats.url(),
            store: format!("file://{}", store_dir.display()),
            kubeconfig: kubesim.kubeconfig().to_path_buf(),
        };
        let mut pipeline = Pipeline::start(dir.path(), |_, health_file| {
            stage_env(&endpoints, health_file)
        })?;
        pipeline.wait_ready(Duration::from_secs(60))?;
        Ok(BenchStack {
            dir,
            nats,
            kubesim,
            pipeline,
        })
    }

    pub fn endpoints(&self) -> StackEndpoints {
        StackEndpoints {
            nats_url: self.nats.url(),
            store: format!("file://{}", self.dir.path().join("store").display()),
            kubeconfig: self.kubesim.kubeconfig().to_path_buf(),
        }
    }

    pub fn kubesim_port(&self) -> Result<u16> {
        let url = self.kubesim.url();
        url.rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .with_context(|| format!("no port in kubesim's URL {url}"))
    }

    /// Every process of the stack by name: the five stages, kubesim and nats-server.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes: Vec<(String, u32)> = self
            .pipeline
            .stages
            .iter()
            .map(|stage| (stage.name.to_string(), stage.process.pid()))
            .collect();
        processes.push(("kubesim".into(), self.kubesim.pid()));
        processes.extend(self.nats.pid().map(|pid| ("nats-server".to_string(), pid)));
        processes
    }

    pub fn reset_counters(&self) -> Result<()> {
        http(self.kubesim_port()?, "POST", "/kubesim/counters/reset").map(|_| ())
    }

    pub fn counters(&self) -> Result<Value> {
        let body = http(self.kubesim_port()?, "GET", "/kubesim/counters")?;
        serde_json::from_str(&body).context("kubesim counters are not JSON")
    }

    pub fn stop(mut self) {
        let _ = self.pipeline.terminate(Duration::from_secs(10));
    }
}

/// A stage's environment in a bench stack: the local-stack settings and JSON logs (as deployed);
/// everything else at its production default.
pub fn stage_env(
    endpoints: &StackEndpoints,
    health_file: &std::path::Path,
) -> Vec<(String, String)> {
    let mut env = stack::local_stage_env(endpoints, health_file, 1);
    env.push(("VEXXY_LOG_FORMAT".into(), "json".into()));
    env
}

/// A minimal HTTP/1.0 exchange with a local server; returns the body (error on non-2xx).
pub fn http(port: u16, method: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        (200..300).contains(&status),
        "{method} {path} on port {port} answered {status}: {body}"
    );
    Ok(body.to_string())
}

/// One outcome event as the downstream subscriber saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    /// The same moment on the wall clock, to set against the stages' own timestamps.
    pub at_wall: DateTime<Utc>,
    pub completed: bool,
    /// Each stage's handler as the stage itself timed it (the completed event's `timings`), in
    /// pipeline order; empty for a failed event.
    pub timings: Vec<StageTiming>,
}

/// Subscribes to completed + failed like a downstream user and records every outcome by job id.
pub struct Outcomes {
    pub seen: Arc<Mutex<HashMap<String, Seen>>>,
    pub changed: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Outcomes {
    pub async fn subscribe(js: &jetstream::Context, durable: &str) -> Result<Outcomes> {
        let consumer = js
            .get_stream(subjects::PUBLIC_STREAM)
            .await?
            .create_consumer(pull::Config {
                durable_name: Some(durable.to_string()),
                filter_subjects: vec![subjects::COMPLETED.into(), subjects::FAILED.into()],
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .context("cannot create the outcome consumer")?;
        let mut messages = consumer.messages().await?;
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let (tx, changed) = watch::channel(0u64);
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut count = 0u64;
            while let Some(Ok(message)) = messages.next().await {
                let at = Instant::now();
                let at_wall = Utc::now();
                let _ = message.ack().await;
                let Ok(mut event) = serde_json::from_slice::<CloudEvent<Value>>(&message.payload)
                else {
                    continue;
                };
                let Some(job) = event.subject.clone() else {
                    continue;
                };
                let completed = event.is_type(EventType::Completed);
                let timings =
                    serde_json::from_value(event.data["timings"].take()).unwrap_or_default();
                record.lock().expect("not poisoned").insert(
                    job,
                    Seen {
                        at,
                        at_wall,
                        completed,
                        timings,
                    },
                );
                count += 1;
                let _ = tx.send(count);
            }
        });
        Ok(Outcomes {
            seen,
            changed,
            task,
        })
    }

    pub fn get(&self, job: &str) -> Option<Seen> {
        self.seen.lock().expect("not poisoned").get(job).cloned()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("not poisoned").len()
    }

    /// Waits until `job` has an outcome or `timeout` passes.
    pub async fn wait_for(&self, job: &str, timeout: Duration) -> Option<Seen> {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(seen) = self.get(job) {
                return Some(seen);
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return self.get(job);
            }
        }
    }

    /// Waits until at least `n` outcomes arrived or `timeout` passes; returns the count.
    pub async fn wait_count(&self, n: usize, timeout: Duration) -> usize {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.count() < n {
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        self.count()
    }
}

impl Drop for Outcomes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes one analysis request (PubAck awaited).
pub async fn submit(js: &jetstream::Context, job: &str, window_seconds: u64) -> Result<()> {
    let request = AnalysisRequest {
        job_id: Some(job.to_string()),
        image_ref: IMAGE_REF.to_string(),
        image_digest: Some(IMAGE_DIGEST.to_string()),
        config: Some(RunConfig {
            analysis_duration: Some(window_seconds),
            ..RunConfig::default()
        }),
        labels: [("suite".to_string(), "bench".to_string())].into(),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{job}.request").as_str());
    js.publish_with_headers(
        subjects::REQUESTED,
        headers,
        serde_json::to_vec(&request)?.into(),
    )
    .await
    .with_context(|| format!("cannot publish the request of {job}"))?
    .await
    .with_context(|| format!("no PubAck for the request of {job}"))?;
    Ok(())
}
