//! `cargo xtask bench` helper: one stage hand-off against the raw JetStream floor, same server,
//! same payload, same run. Prints one JSON object on stdout.
//!
//! * floor: publish (wait for the PubAck) → the message arrives on a pull consumer that already
//!   has a pull outstanding → ack. Stream and consumer configured like the runtime's (file storage,
//!   explicit ack).
//! * hop: the real stage runtime (`vexxy_runtime::run_with`, production consumer settings) for
//!   the extract stage with a pass-through handler. One iteration: publish a ticket to
//!   `vexxy.pipeline.extract` (PubAck) → the runtime pulls it, reads the job record in KV (and
//!   claims it: no write when the record already names this stage), runs the
//!   handler, publishes to `vexxy.pipeline.enrich` (PubAck) → an observer pulls the hand-off from
//!   `vexxy.pipeline.enrich` and acks it. The runtime's KV update and ack follow the PubAck
//!   outside the timed window, but on the same server and cores as the next iteration.
//!   The job record exists beforehand (as intake would have written it).
//!
//! * design floor (reported, not part of the target): the hop's broker effects done by hand with
//!   no runtime — a task pulls the message, reads the job record (one KV get), publishes the same
//!   bytes onward (PubAck), writes the record (compare-and-set on the revision read) and acks;
//!   the timed window is the hop's. It is what the hand-off protocol itself costs on this server,
//!   so `hop - design_floor` is the runtime's own overhead and `design_floor / floor` what the
//!   protocol's round trips cost against the raw floor.
//!
//! All loops run one message at a time, so the figure is latency, not throughput. The three are
//! measured in interleaved blocks of `BLOCK` iterations (see `measure`), not one after another:
//! run back to back, a disturbance during one of them (another benchmark's stack starting, the
//! machine's cores waking late) skewed their ratio either way.
//!
//! Each loop also reports this process's CPU time per measured iteration (user + system, from
//! `getrusage`; nats-server's is not included). Everything but the runtime is the same in the
//! hop and the design floor (the same ticket built, the same record created, the same observer),
//! so `hop - design_floor` of it is the runtime's CPU per message beyond the bare broker calls.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::pull, kv, stream};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use vexxy_events::pipeline::SandboxRef;
use vexxy_events::{PipelineTicket, RunConfig, Stage, ValidatedRequest, subjects};
use vexxy_runtime::config::{Env, RuntimeConfig, default_max_in_flight};
use vexxy_runtime::{Handler, JobContext, Outcome, StageError};

const WARMUP: usize = 200;
/// Measured iterations per block; see `measure`.
const BLOCK: usize = 100;

struct PassThrough;

impl Handler for PassThrough {
    async fn handle(
        &self,
        _job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        Ok(Outcome::Next(ticket))
    }
}

fn ticket(job_id: &str) -> PipelineTicket {
    PipelineTicket {
        request: ValidatedRequest {
            job_id: job_id.into(),
            image_ref: "docker.io/library/nginx".into(),
            image_digest: format!("sha256:{}", "ab".repeat(32)),
            repository: "docker.io/library/nginx".into(),
            registry: "docker.io".into(),
            tag: None,
            request_msg_id: Some(format!("{job_id}.request")),
            analysis_duration_seconds: 300,
            config: RunConfig::default(),
            labels: [("team".to_string(), "payments".to_string())].into(),
        },
        timings: vec![],
        sandbox: Some(SandboxRef {
            namespace: "vexxy-sandbox".into(),
            deployment: format!("vexxy-{job_id}"),
            container: "app".into(),
            created_at: Utc::now(),
        }),
        observation: None,
        evidence: None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Latencies of one loop's measured iterations, and the process CPU time spent in its blocks
/// (each iteration's preparation included: the work of a hand-off does not all fall inside its
/// timed window, e.g. the runtime's KV update and ack follow the PubAck).
#[derive(Default)]
struct Measured {
    samples: Vec<f64>,
    cpu_us: f64,
}

/// User + system CPU time of this process so far, in µs.
fn process_cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |time: libc::timeval| time.tv_sec as f64 * 1e6 + time.tv_usec as f64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

fn summary(measured: Measured) -> serde_json::Value {
    let Measured {
        mut samples,
        cpu_us,
    } = measured;
    samples.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    json!({
        "n": samples.len(),
        "p50_us": percentile(&samples, 0.5),
        "p90_us": percentile(&samples, 0.9),
        "p99_us": percentile(&samples, 0.99),
        "mean_us": mean,
        "cpu_us_per_iteration": cpu_us / n,
    })
}

/// The next message of a pull stream, acked — the consuming half of every measured loop.
async fn receive_and_ack(messages: &mut pull::Stream, what: &str) -> Result<()> {
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .with_context(|| format!("{what} did not arrive within 10 s"))?
        .with_context(|| format!("the stream carrying {what} ended"))?
        .map_err(|e| anyhow::anyhow!("pull failed: {e}"))?;
    message.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))
}

/// A stream with the runtime's pipeline settings (file storage, work-queue retention, a
/// duplicate window), so the floors pay what the pipeline stream pays.
async fn work_queue_stream(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
}

/// One of the three measured loops, set up once and then driven one iteration at a time.
enum Loop {
    Floor(Floor),
    Hop(Hop),
    DesignFloor(DesignFloor),
}

impl Loop {
    /// Runs iteration `i` and returns its latency in µs.
    async fn iteration(&mut self, js: &jetstream::Context, i: usize) -> Result<f64> {
        match self {
            Loop::Floor(floor) => floor.iteration(js, i).await,
            Loop::Hop(hop) => hop.iteration(js, i).await,
            Loop::DesignFloor(design) => design.iteration(js, i).await,
        }
    }
}

struct Floor {
    payload: Bytes,
    messages: pull::Stream,
}

impl Floor {
    async fn start(js: &jetstream::Context, payload: Bytes) -> Result<Self> {
        let stream = work_queue_stream(js, "BENCH_FLOOR", "bench.floor")
            .await
            .context("create the floor stream")?;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("bench-floor".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .context("create the floor consumer")?;
        let messages = consumer.messages().await?;
        Ok(Floor { payload, messages })
    }

    async fn iteration(&mut self, js: &jetstream::Context, i: usize) -> Result<f64> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("floor-{i}").as_str());
        let started = Instant::now();
        js.publish_with_headers("bench.floor", headers, self.payload.clone())
            .await?
            .await?;
        receive_and_ack(&mut self.messages, "the floor message").await?;
        Ok(micros_since(started))
    }
}

fn micros_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e6
}

/// A pipeline ticket for a fresh job whose record exists in KV (as intake would have written
/// it), as the payload and headers a stage publishes a hand-off with.
async fn prepared_hand_off(
    kv: &kv::Store,
    job_id: &str,
    i: usize,
) -> Result<(async_nats::HeaderMap, Bytes)> {
    let ticket = ticket(job_id);
    let status =
        vexxy_runtime::status::new_job(&ticket.request, "bench".into(), i as u64, Stage::Extract);
    vexxy_runtime::status::create(kv, &status).await?;
    let event = vexxy_events::ticket_event(Stage::Wait, ticket);
    let payload = Bytes::from(serde_json::to_vec(&event)?);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.id.as_str());
    headers.insert(subjects::HEADER_JOB_ID, job_id);
    Ok((headers, payload))
}

struct Hop {
    kv: kv::Store,
    handed_on: pull::Stream,
    stop: tokio::sync::oneshot::Sender<()>,
    runtime: tokio::task::JoinHandle<Result<(), vexxy_runtime::RuntimeError>>,
    _store_dir: tempfile::TempDir,
}

impl Hop {
    async fn start(js: &jetstream::Context, nats_url: &str) -> Result<Self> {
        let stage = Stage::Extract;
        let store_dir = tempfile::tempdir()?;
        let mut config = RuntimeConfig::load(&Env::from_pairs(&[
            ("NATS_URL", nats_url.to_string()),
            (
                "VEXXY_STORE",
                format!("file://{}", store_dir.path().display()),
            ),
            ("VEXXY_HEALTH_ADDR", "127.0.0.1:0".to_string()),
        ]))?;
        // What `vexxy_runtime::run` does for a stage binary when VEXXY_MAX_IN_FLIGHT is unset.
        config.consumer.max_in_flight = default_max_in_flight(stage);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::spawn(vexxy_runtime::run_with(config, stage, PassThrough, async {
            let _ = stop_rx.await;
        }));
        // The stage provisions streams, KV and its consumer; wait until its consumer exists.
        let deadline = Instant::now() + Duration::from_secs(30);
        let kv = loop {
            let ready = match js.get_stream(subjects::PIPELINE_STREAM).await {
                Ok(stream) => stream
                    .consumer_info(subjects::durable_of(stage))
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            if ready {
                break js.get_key_value(subjects::STATUS_BUCKET).await?;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the stage runtime did not provision within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let observer = js
            .get_stream(subjects::PIPELINE_STREAM)
            .await?
            .create_consumer(pull::Config {
                durable_name: Some("bench-observer".into()),
                filter_subject: subjects::input_of(Stage::Enrich),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .context("create the observer consumer")?;
        let handed_on = observer.messages().await?;
        Ok(Hop {
            kv,
            handed_on,
            stop,
            runtime,
            _store_dir: store_dir,
        })
    }

    async fn iteration(&mut self, js: &jetstream::Context, i: usize) -> Result<f64> {
        let job_id = format!("bench-hop-{i}");
        let (headers, payload) = prepared_hand_off(&self.kv, &job_id, i).await?;
        let started = Instant::now();
        js.publish_with_headers(subjects::input_of(Stage::Extract), headers, payload)
            .await?
            .await?;
        receive_and_ack(&mut self.handed_on, "the hand-off").await?;
        Ok(micros_since(started))
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.runtime.await??;
        Ok(())
    }
}

/// The hop's broker effects without the runtime: see the module comment.
struct DesignFloor {
    kv: kv::Store,
    handed_on: pull::Stream,
    stage: tokio::task::JoinHandle<Result<()>>,
}

impl DesignFloor {
    /// Needs the status bucket (the hop's runtime provisions it).
    async fn start(js: &jetstream::Context, nats_url: &str) -> Result<Self> {
        let stream = work_queue_stream(js, "BENCH_DESIGN", "bench.design.>")
            .await
            .context("create the design-floor stream")?;
        let consumer = |name: &str, subject: &str| {
            stream.create_consumer(pull::Config {
                durable_name: Some(name.into()),
                filter_subject: subject.into(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
        };
        let stage_input = consumer("bench-design-stage", "bench.design.in")
            .await
            .context("create the design-floor stage consumer")?;
        let observer = consumer("bench-design-observer", "bench.design.out")
            .await
            .context("create the design-floor observer consumer")?;
        // The stage side has a connection of its own, like the runtime.
        let stage_js = jetstream::new(async_nats::connect(nats_url).await?);
        let stage_kv = stage_js.get_key_value(subjects::STATUS_BUCKET).await?;
        let mut inputs = stage_input.messages().await?;
        let stage = tokio::spawn(async move {
            while let Some(message) = inputs.next().await {
                let message = message.map_err(|e| anyhow::anyhow!("pull failed: {e}"))?;
                let mut headers = message.headers.clone().unwrap_or_default();
                let job_id = headers
                    .get(subjects::HEADER_JOB_ID)
                    .context("the design-floor message has no job id")?
                    .to_string();
                // The hand-off is a new event with an id of its own (the input's would be a
                // duplicate).
                headers.insert("Nats-Msg-Id", format!("{job_id}.handed-on").as_str());
                let entry = stage_kv
                    .entry(&job_id)
                    .await?
                    .context("the design-floor job has no record")?;
                stage_js
                    .publish_with_headers("bench.design.out", headers, message.payload.clone())
                    .await?
                    .await?;
                stage_kv
                    .update(&job_id, entry.value, entry.revision)
                    .await?;
                message
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            }
            anyhow::Ok(())
        });
        Ok(DesignFloor {
            kv: js.get_key_value(subjects::STATUS_BUCKET).await?,
            handed_on: observer.messages().await?,
            stage,
        })
    }

    async fn iteration(&mut self, js: &jetstream::Context, i: usize) -> Result<f64> {
        let job_id = format!("bench-design-{i}");
        let (headers, payload) = prepared_hand_off(&self.kv, &job_id, i).await?;
        let started = Instant::now();
        js.publish_with_headers("bench.design.in", headers, payload)
            .await?
            .await?;
        receive_and_ack(&mut self.handed_on, "the design-floor hand-off").await?;
        Ok(micros_since(started))
    }

    async fn stop(self) -> Result<()> {
        self.stage.abort();
        if let Ok(Err(error)) = self.stage.await {
            return Err(error.context("the design-floor stage failed"));
        }
        Ok(())
    }
}

/// Measures the three loops in interleaved blocks: every loop warms up, then each round runs
/// one block of each, in an order that rotates from round to round. Whatever else the machine
/// does during the run (another benchmark's stack, a core waking late) falls on all three
/// alike, so their ratios compare like with like.
async fn measure(
    js: &jetstream::Context,
    loops: &mut [Loop; 3],
    iterations: usize,
) -> Result<[Measured; 3]> {
    let mut measured: [Measured; 3] = Default::default();
    for measured_loop in loops.iter_mut() {
        for i in 0..WARMUP {
            measured_loop.iteration(js, i).await?;
        }
    }
    let rounds = iterations.div_ceil(BLOCK);
    for round in 0..rounds {
        for turn in 0..loops.len() {
            let which = (round + turn) % loops.len();
            let first = WARMUP + round * BLOCK;
            let last = (first + BLOCK).min(WARMUP + iterations);
            let cpu_before = process_cpu_us();
            for i in first..last {
                let latency = loops[which].iteration(js, i).await?;
                measured[which].samples.push(latency);
            }
            measured[which].cpu_us += process_cpu_us() - cpu_before;
        }
    }
    Ok(measured)
}

#[tokio::main]
async fn main() -> Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("the argument is the number of iterations")?
        .unwrap_or(2000);
    // Logging as a stage process does it (JSON lines, RUST_LOG or info), so the hop pays for it.
    vexxy_runtime::logging::init(vexxy_runtime::config::LogFormat::Json);
    let nats = vexxy_harness::NatsServer::start()?;
    let client = nats.client().await?;
    let js = jetstream::new(client);
    // The floor carries exactly the bytes of a hand-off the hop carries.
    let payload = Bytes::from(serde_json::to_vec(&vexxy_events::ticket_event(
        Stage::Wait,
        ticket("bench-hop-0"),
    ))?);
    let floor = Floor::start(&js, payload.clone()).await?;
    let hop = Hop::start(&js, &nats.url()).await?;
    let design_floor = DesignFloor::start(&js, &nats.url()).await?;
    let mut loops = [
        Loop::Floor(floor),
        Loop::Hop(hop),
        Loop::DesignFloor(design_floor),
    ];
    let [floor, hop, design_floor] = measure(&js, &mut loops, iterations).await?;
    let [_, Loop::Hop(hop_loop), Loop::DesignFloor(design_loop)] = loops else {
        unreachable!("the loops keep their places");
    };
    hop_loop.stop().await?;
    design_loop.stop().await?;
    println!(
        "BENCH_RESULT {}",
        json!({
            "payload_bytes": payload.len(),
            "block": BLOCK,
            "floor": summary(floor),
            "hop": summary(hop),
            "design_floor": summary(design_floor),
        })
    );
    Ok(())
}
