//! A vexxy stack for benchmarks: nats-server, a `file://` object store, kubesim with zero
//! delays and the five release-built stage binaries with their production settings (only the
//! addresses, the sandbox-namespace creation and the analysis-window minimum of 1 s differ).

use std::collections::{BTreeMap, HashMap};
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
use vexxy_harness::identities::StageIdentities;
use vexxy_harness::realcluster::{RealCluster, STORAGE_APISERVICE};
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
    /// The real control plane, when the stack runs on it (kubesim is then only Kubescape).
    pub real: Option<RealStack>,
}

/// A real kube-apiserver, etcd, controller-manager, scheduler and kwok, with the stages as their
/// own ServiceAccounts; requests are counted from the API server's audit log.
pub struct RealStack {
    pub cluster: RealCluster,
    /// Audit log lines before this one belong to an earlier count (see `reset_counters`).
    counted_from: Mutex<usize>,
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
    /// A stack on kubesim.
    pub fn start(name: &str) -> Result<BenchStack> {
        Self::start_on(name, false)
    }

    /// A stack on the real control plane: kubesim is only Kubescape (its storage API behind the
    /// real aggregator, node-agent and kubevuln for the real pods) and each stage authenticates
    /// as its own ServiceAccount with the RBAC of `deploy/base`.
    pub fn start_real(name: &str) -> Result<BenchStack> {
        Self::start_on(name, true)
    }

    fn start_on(name: &str, real: bool) -> Result<BenchStack> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vexxy-bench-{name}-"))
            .tempdir()?;
        let nats = NatsServer::start()?;
        let cluster = if real {
            Some(RealCluster::start()?)
        } else {
            None
        };
        let mut kubesim_args = zero_delay_kubesim_args();
        if let Some(cluster) = &cluster {
            kubesim_args.push("--upstream-kubeconfig".into());
            kubesim_args.push(cluster.kubeconfig().display().to_string());
        }
        let kubesim = KubesimProcess::start(dir.path(), &kubesim_args)?;
        let identities = match &cluster {
            Some(cluster) => {
                cluster.wait_api_service_available(STORAGE_APISERVICE, Duration::from_secs(60))?;
                Some(StageIdentities::apply(cluster, dir.path())?)
            }
            None => None,
        };
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir)?;
        let endpoints = StackEndpoints {
            nats_url: nats.url(),
            store: format!("file://{}", store_dir.display()),
            kubeconfig: match &cluster {
                Some(cluster) => cluster.kubeconfig().to_path_buf(),
                None => kubesim.kubeconfig().to_path_buf(),
            },
        };
        let mut pipeline = Pipeline::start(dir.path(), |stage, health_file| {
            let mut env = stage_env(&endpoints, health_file);
            if let Some(identities) = &identities {
                env.extend(identities.env_of(stage));
            }
            env
        })?;
        pipeline.wait_ready(Duration::from_secs(60))?;
        Ok(BenchStack {
            dir,
            nats,
            kubesim,
            pipeline,
            real: cluster.map(|cluster| RealStack {
                cluster,
                counted_from: Mutex::new(0),
            }),
        })
    }

    pub fn endpoints(&self) -> StackEndpoints {
        StackEndpoints {
            nats_url: self.nats.url(),
            store: format!("file://{}", self.dir.path().join("store").display()),
            kubeconfig: match &self.real {
                Some(real) => real.cluster.kubeconfig().to_path_buf(),
                None => self.kubesim.kubeconfig().to_path_buf(),
            },
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

    /// Starts the request count afresh.
    pub fn reset_counters(&self) -> Result<()> {
        match &self.real {
            Some(real) => {
                let lines = audit_lines(&real.cluster)?.len();
                *real.counted_from.lock().expect("not poisoned") = lines;
                Ok(())
            }
            None => http(self.kubesim_port()?, "POST", "/kubesim/counters/reset").map(|_| ()),
        }
    }

    /// The stages' Kubernetes API requests since the last reset, as kubesim's counters shape
    /// them: `{"total": n, "requests": {"<resource>[.<group>]": {"<verb>": n}}}`. On the real
    /// control plane they are read from the API server's audit log (every request of a stage's
    /// ServiceAccount, storage kinds included: the aggregator audits what it proxies).
    pub fn counters(&self) -> Result<Value> {
        match &self.real {
            Some(real) => {
                let lines = audit_lines(&real.cluster)?;
                let from = *real.counted_from.lock().expect("not poisoned");
                Ok(count_audited_requests(&lines[from.min(lines.len())..]))
            }
            None => {
                let body = http(self.kubesim_port()?, "GET", "/kubesim/counters")?;
                serde_json::from_str(&body).context("kubesim counters are not JSON")
            }
        }
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

/// The audit log's lines (complete ones only: the API server may be writing the last).
fn audit_lines(cluster: &RealCluster) -> Result<Vec<String>> {
    let path = cluster.audit_log();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    Ok(complete
        .lines()
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect())
}

/// Audit events as one count per request: a watch when it starts (`ResponseStarted`), every
/// other request when it completes. Grouped like kubesim's counters.
pub fn count_audited_requests(lines: &[String]) -> Value {
    let mut requests: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut total = 0u64;
    for line in lines {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let verb = event["verb"].as_str().unwrap_or("");
        let counted = match event["stage"].as_str() {
            Some("ResponseStarted") => verb == "watch",
            Some("ResponseComplete") | Some("Panic") => verb != "watch",
            _ => false,
        };
        if !counted {
            continue;
        }
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or("").to_string();
        if resource.is_empty() {
            // Non-resource URLs (/api, /apis, /version): discovery.
            resource = event["requestURI"]
                .as_str()
                .unwrap_or("?")
                .split('?')
                .next()
                .unwrap_or("?")
                .to_string();
        }
        if let Some(subresource) = object["subresource"].as_str() {
            resource = format!("{resource}/{subresource}");
        }
        if let Some(group) = object["apiGroup"].as_str().filter(|g| !g.is_empty()) {
            resource = format!("{resource}.{group}");
        }
        *requests
            .entry(resource)
            .or_default()
            .entry(verb.to_string())
            .or_default() += 1;
        total += 1;
    }
    serde_json::json!({"total": total, "requests": requests})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stage: &str, verb: &str, resource: &str, group: &str, sub: Option<&str>) -> String {
        let mut object = serde_json::json!({"resource": resource, "apiGroup": group});
        if let Some(sub) = sub {
            object["subresource"] = sub.into();
        }
        serde_json::json!({"stage": stage, "verb": verb, "objectRef": object,
                           "user": {"username": "system:serviceaccount:vexxy:vexxy-wait"}})
        .to_string()
    }

    #[test]
    fn audited_requests_count_once_each_like_kubesim_names_them() {
        let lines = vec![
            // A watch: counted when it starts, not again when it ends.
            event("ResponseStarted", "watch", "pods", "", None),
            event("ResponseComplete", "watch", "pods", "", None),
            event("ResponseComplete", "create", "deployments", "apps", None),
            event(
                "ResponseComplete",
                "get",
                "deployments",
                "apps",
                Some("status"),
            ),
            event(
                "ResponseComplete",
                "get",
                "containerprofiles",
                "spdx.softwarecomposition.kubescape.io",
                None,
            ),
            "not json".to_string(),
        ];
        let counted = count_audited_requests(&lines);
        assert_eq!(counted["total"], 4);
        assert_eq!(counted["requests"]["pods"]["watch"], 1);
        assert_eq!(counted["requests"]["deployments.apps"]["create"], 1);
        assert_eq!(counted["requests"]["deployments/status.apps"]["get"], 1);
        assert_eq!(
            counted["requests"]["containerprofiles.spdx.softwarecomposition.kubescape.io"]["get"],
            1
        );
    }
}
