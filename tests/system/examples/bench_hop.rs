//! `cargo xtask bench` helper: one stage hand-off against the raw JetStream floor, same server,
//! same payload, same run. Prints one JSON object on stdout.
//!
//! * floor: publish (wait for the PubAck) → the message arrives on a pull consumer that already
//!   has a pull outstanding → ack. Stream and consumer configured like the runtime's (file storage,
//!   explicit ack). One message moved from one piece of code to another. Its payload has the size
//!   of deploy's real hand-off (a ticket carrying deploy's timing).
//! * hand-off (the target's figure): two real stage runtimes (`vexxy_runtime::run_with`,
//!   production consumer settings), deploy and then wait, each with a pass-through handler that
//!   notes when it is called and when it returns. Timed from deploy's handler returning to wait's
//!   handler being called: everything vexxy puts on a job's path between one stage's work and
//!   the next's — deploy's runtime building and publishing the ticket, the delivery to wait's
//!   pull (the PubAck travels back to deploy alongside; the window does not wait for it), wait
//!   decoding it, reading the job record and claiming the job. Deploy's status write and ack
//!   follow its PubAck, as in production, while the ticket travels; they are off the job's path
//!   and outside the window (they hold deploy's slot, which the throughput benchmark pays for).
//!   When wait reads the record before deploy's write lands, wait's claim writes it (and when
//!   the write lands between wait's read and claim, wait's compare-and-set re-reads), on the
//!   timed path as it would be in production. The job record exists beforehand naming deploy (as
//!   install-check leaves it). This is the gap the end-to-end benchmark reports between two
//!   stages (`path_step_p50_ms`), measured alone. Both stages run in this one process, on one
//!   tokio runtime; in production each is its own process.
//! * two-stage traversal (reported): the same iterations timed from outside, from publishing
//!   the ticket into deploy (PubAck) to the observer receiving wait's output. Minus the one-stage
//!   traversal below, it gives the hand-off again without relying on the handlers' marks.
//! * stage traversal (reported, not the target's figure; what this benchmark called "hop" up to
//!   816e388): a ticket published to `vexxy.pipeline.wait` (PubAck) → the wait runtime pulls it,
//!   reads the job record, runs the handler and publishes onward (PubAck) → an observer pulls
//!   the hand-off from `vexxy.pipeline.extract` and acks it. It holds two message transfers (the
//!   ticket in and the ticket out) against the floor's one, so a stage costing nothing would
//!   score about 2× here.
//! * design floors (reported): the same two windows with the broker effects done by hand, no
//!   runtime — a plain task per stage pulls, reads the job record (one KV get), publishes the same
//!   bytes onward (PubAck), writes the record (compare-and-set on the revision read; re-read
//!   after a lost race, as the runtime does) and acks. It never claims: a by-hand stage does not
//!   look at what the record says. design floor ÷ floor is what the round trips every hand-off
//!   needs cost; runtime − design floor is the runtime's own code plus its claim writes.
//!
//! Every loop moves one message at a time, so the figures are latency, not throughput. The loops
//! are measured in interleaved blocks of `BLOCK` iterations (see `measure`), not one after
//! another: run back to back, a disturbance during one of them (another benchmark's stack
//! starting, the machine's cores waking late) skewed their ratio either way.
//!
//! Each loop also reports this process's CPU time per measured iteration (user + system, from
//! `getrusage`; nats-server's is not included; a hand-off iteration runs two stages).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::pull, kv, stream};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use vexxy_events::completed::StageTiming;
use vexxy_events::pipeline::SandboxRef;
use vexxy_events::{PipelineTicket, RunConfig, Stage, ValidatedRequest, subjects};
use vexxy_runtime::config::{Env, RuntimeConfig};
use vexxy_runtime::{Handler, JobContext, Outcome, StageError};

const WARMUP: usize = 200;
/// Measured iterations per block; see `measure`.
const BLOCK: usize = 100;

/// Which of a chain's two stages noted a mark.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Position {
    Upstream,
    Downstream,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Edge {
    /// The stage's handler was called (its runtime has decoded, read and claimed).
    Called,
    /// The stage's handler returned (its runtime publishes next).
    Returned,
}

/// An instant a stage's handler noted for a job.
#[derive(Debug)]
struct Mark {
    position: Position,
    job_id: String,
    edge: Edge,
    at: Instant,
}

#[derive(Clone)]
struct Notes {
    position: Position,
    marks: mpsc::UnboundedSender<Mark>,
}

impl Notes {
    fn note(&self, job_id: &str, edge: Edge) {
        let at = Instant::now();
        // The receiver lives as long as the chain; a send after it is gone has no one to tell.
        let _ = self.marks.send(Mark {
            position: self.position,
            job_id: job_id.to_string(),
            edge,
            at,
        });
    }
}

/// A pass-through handler noting when it is called and when it returns.
struct PassThrough(Notes);

impl Handler for PassThrough {
    async fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        self.0.note(&job.job_id, Edge::Called);
        let outcome = Outcome::Next(ticket);
        self.0.note(&job.job_id, Edge::Returned);
        Ok(outcome)
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

/// One iteration's latency in µs, and for a hand-off also the two-stage traversal around it.
struct Timed {
    latency: f64,
    two_stages: Option<f64>,
}

impl From<f64> for Timed {
    fn from(latency: f64) -> Self {
        Timed {
            latency,
            two_stages: None,
        }
    }
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

/// Percentiles and mean of latencies in µs.
fn latencies(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = samples.len() as f64;
    json!({
        "n": samples.len(),
        "p50_us": percentile(samples, 0.5),
        "p90_us": percentile(samples, 0.9),
        "p99_us": percentile(samples, 0.99),
        "mean_us": samples.iter().sum::<f64>() / n,
    })
}

fn summary(measured: &mut Measured) -> serde_json::Value {
    let mut summary = latencies(&mut measured.samples);
    summary["cpu_us_per_iteration"] = json!(measured.cpu_us / measured.samples.len() as f64);
    summary
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

fn micros_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e6
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

async fn durable_pull(
    stream: &stream::Stream,
    name: &str,
    subject: String,
) -> Result<pull::Stream> {
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.into()),
            filter_subject: subject,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .with_context(|| format!("create the consumer {name}"))?;
    Ok(consumer.messages().await?)
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
        let messages = durable_pull(&stream, "bench-floor", "bench.floor".into()).await?;
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

/// A pipeline ticket for a fresh job whose record exists in KV naming `stage` (as the stage
/// before it leaves it), as the payload and headers that stage before it publishes.
async fn prepared_ticket(
    kv: &kv::Store,
    job_id: &str,
    i: usize,
    stage: Stage,
    from: Stage,
) -> Result<(async_nats::HeaderMap, Bytes)> {
    let ticket = ticket(job_id);
    let status = vexxy_runtime::status::new_job(&ticket.request, "bench".into(), i as u64, stage);
    vexxy_runtime::status::create(kv, &status).await?;
    let event = vexxy_events::ticket_event(from, ticket);
    let payload = Bytes::from(serde_json::to_vec(&event)?);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.id.as_str());
    headers.insert(subjects::HEADER_JOB_ID, job_id);
    Ok((headers, payload))
}

/// Two stages in a row and an observer of the second one's output, either the real runtimes or
/// plain tasks doing their broker effects by hand; both measured loops of one kind run on it.
struct Chain {
    kv: kv::Store,
    /// The subjects the two stages read.
    upstream: String,
    downstream: String,
    /// The second stage's output.
    observed: pull::Stream,
    marks: mpsc::UnboundedReceiver<Mark>,
    running: Running,
}

enum Running {
    Runtimes {
        stop: Vec<tokio::sync::oneshot::Sender<()>>,
        runtimes: Vec<tokio::task::JoinHandle<Result<(), vexxy_runtime::RuntimeError>>>,
        _store_dir: tempfile::TempDir,
    },
    ByHand(Vec<tokio::task::JoinHandle<Result<()>>>),
}

impl Chain {
    /// deploy → wait → observer on `vexxy.pipeline.extract`, all production runtime code.
    async fn runtimes(js: &jetstream::Context, nats_url: &str) -> Result<Self> {
        let store_dir = tempfile::tempdir()?;
        let (marks_tx, marks) = mpsc::unbounded_channel();
        let mut stop = Vec::new();
        let mut runtimes = Vec::new();
        for (stage, position) in [
            (Stage::Deploy, Position::Upstream),
            (Stage::Wait, Position::Downstream),
        ] {
            // The defaults each stage binary declares (VEXXY_MAX_IN_FLIGHT unset).
            let defaults = match stage {
                Stage::Wait => vexxy_wait::RUNTIME_DEFAULTS,
                _ => vexxy_deploy::RUNTIME_DEFAULTS,
            };
            let config = RuntimeConfig::load_for(
                &Env::from_pairs(&[
                    ("NATS_URL", nats_url.to_string()),
                    (
                        "VEXXY_STORE",
                        format!("file://{}", store_dir.path().display()),
                    ),
                    ("VEXXY_HEALTH_ADDR", "127.0.0.1:0".to_string()),
                ]),
                defaults,
            )?;
            let handler = PassThrough(Notes {
                position,
                marks: marks_tx.clone(),
            });
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            stop.push(stop_tx);
            runtimes.push(tokio::spawn(vexxy_runtime::run_with(
                config,
                stage,
                handler,
                async {
                    let _ = stop_rx.await;
                },
            )));
            wait_for_consumer(js, stage).await?;
        }
        let pipeline = js.get_stream(subjects::PIPELINE_STREAM).await?;
        Ok(Chain {
            kv: js.get_key_value(subjects::STATUS_BUCKET).await?,
            upstream: subjects::input_of(Stage::Deploy),
            downstream: subjects::input_of(Stage::Wait),
            observed: durable_pull(
                &pipeline,
                "bench-observer",
                subjects::input_of(Stage::Extract),
            )
            .await?,
            marks,
            running: Running::Runtimes {
                stop,
                runtimes,
                _store_dir: store_dir,
            },
        })
    }

    /// The same shape with plain tasks (see the module comment). Needs the status bucket, which
    /// the runtimes provision.
    async fn by_hand(js: &jetstream::Context, nats_url: &str) -> Result<Self> {
        let stream = work_queue_stream(js, "BENCH_DESIGN", "bench.design.>")
            .await
            .context("create the design-floor stream")?;
        let (marks_tx, marks) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (position, input, onward) in [
            (
                Position::Upstream,
                "bench.design.upstream",
                "bench.design.downstream",
            ),
            (
                Position::Downstream,
                "bench.design.downstream",
                "bench.design.out",
            ),
        ] {
            let inputs =
                durable_pull(&stream, &format!("bench-design-{position:?}"), input.into()).await?;
            // Each stage has a connection of its own, like the runtime.
            let stage_js = jetstream::new(async_nats::connect(nats_url).await?);
            let notes = Notes {
                position,
                marks: marks_tx.clone(),
            };
            tasks.push(tokio::spawn(stage_by_hand(stage_js, inputs, onward, notes)));
        }
        Ok(Chain {
            kv: js.get_key_value(subjects::STATUS_BUCKET).await?,
            upstream: "bench.design.upstream".into(),
            downstream: "bench.design.downstream".into(),
            observed: durable_pull(&stream, "bench-design-observer", "bench.design.out".into())
                .await?,
            marks,
            running: Running::ByHand(tasks),
        })
    }

    /// One hand-off: a ticket enters the first stage; the time from its handler returning to
    /// the second stage's handler being called, and from the ticket's publish to the observer
    /// having the second stage's output (the two-stage traversal).
    async fn hand_off(&mut self, js: &jetstream::Context, job_id: &str, i: usize) -> Result<Timed> {
        let (headers, payload) =
            prepared_ticket(&self.kv, job_id, i, Stage::Deploy, Stage::InstallCheck).await?;
        let started = Instant::now();
        js.publish_with_headers(self.upstream.clone(), headers, payload)
            .await?
            .await?;
        self.receive_output("the hand-off's onward ticket").await?;
        let two_stages = micros_since(started);
        let marks = self.marks_of(job_id, 4).await?;
        let at = |position, edge| {
            marks
                .iter()
                .find(|mark| mark.position == position && mark.edge == edge)
                .map(|mark| mark.at)
                .with_context(|| format!("no {edge:?} mark from the {position:?} stage"))
        };
        let returned = at(Position::Upstream, Edge::Returned)?;
        let called = at(Position::Downstream, Edge::Called)?;
        Ok(Timed {
            latency: called.duration_since(returned).as_secs_f64() * 1e6,
            two_stages: Some(two_stages),
        })
    }

    /// One traversal of the second stage: publishing its ticket (PubAck) until the observer has
    /// its output.
    async fn traversal(&mut self, js: &jetstream::Context, job_id: &str, i: usize) -> Result<f64> {
        let (headers, payload) =
            prepared_ticket(&self.kv, job_id, i, Stage::Wait, Stage::Deploy).await?;
        let started = Instant::now();
        js.publish_with_headers(self.downstream.clone(), headers, payload)
            .await?
            .await?;
        self.receive_output("the traversal's onward ticket").await?;
        let latency = micros_since(started);
        self.marks_of(job_id, 2).await?;
        Ok(latency)
    }

    /// The second stage's next output, acked; when it does not come, a by-hand stage's failure
    /// is the likelier story than the timeout, so that is what the error says.
    async fn receive_output(&mut self, what: &str) -> Result<()> {
        let received = receive_and_ack(&mut self.observed, what).await;
        if received.is_err()
            && let Running::ByHand(tasks) = &mut self.running
        {
            for task in tasks.iter_mut().filter(|task| task.is_finished()) {
                if let Ok(Err(error)) = task.await {
                    return Err(error.context("a design-floor stage failed"));
                }
            }
        }
        received
    }

    /// The next `count` marks, all of which must be `job_id`'s (one job at a time).
    async fn marks_of(&mut self, job_id: &str, count: usize) -> Result<Vec<Mark>> {
        let mut marks = Vec::with_capacity(count);
        while marks.len() < count {
            let mark = tokio::time::timeout(Duration::from_secs(10), self.marks.recv())
                .await
                .context("a handler's mark did not come within 10 s")?
                .context("the handlers are gone")?;
            anyhow::ensure!(
                mark.job_id == job_id,
                "a mark for {} came while {job_id} was measured",
                mark.job_id
            );
            marks.push(mark);
        }
        Ok(marks)
    }

    async fn stop(self) -> Result<()> {
        match self.running {
            Running::Runtimes { stop, runtimes, .. } => {
                for stop in stop {
                    let _ = stop.send(());
                }
                for runtime in runtimes {
                    runtime.await??;
                }
            }
            Running::ByHand(tasks) => {
                for task in tasks {
                    task.abort();
                    if let Ok(Err(error)) = task.await {
                        return Err(error.context("a design-floor stage failed"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Waits until a starting runtime has provisioned its consumer.
async fn wait_for_consumer(js: &jetstream::Context, stage: Stage) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = js.get_stream(subjects::PIPELINE_STREAM).await
            && stream
                .consumer_info(subjects::durable_of(stage))
                .await
                .is_ok()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {stage} runtime did not provision within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One stage's broker effects by hand: pull, read the record, (handler), publish onward, write
/// the record, ack.
async fn stage_by_hand(
    js: jetstream::Context,
    mut inputs: pull::Stream,
    onward: &'static str,
    notes: Notes,
) -> Result<()> {
    let kv = js.get_key_value(subjects::STATUS_BUCKET).await?;
    while let Some(message) = inputs.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("pull failed: {e}"))?;
        let mut headers = message.headers.clone().unwrap_or_default();
        let job_id = headers
            .get(subjects::HEADER_JOB_ID)
            .context("the design-floor message has no job id")?
            .to_string();
        let entry = kv
            .entry(&job_id)
            .await?
            .context("the design-floor job has no record")?;
        notes.note(&job_id, Edge::Called);
        notes.note(&job_id, Edge::Returned);
        // The hand-off is a new event with an id of its own (the input's would be a duplicate).
        headers.insert("Nats-Msg-Id", format!("{job_id}.{onward}").as_str());
        js.publish_with_headers(onward, headers, message.payload.clone())
            .await?
            .await?;
        write_back(&kv, &job_id, entry).await?;
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    Ok(())
}

/// Writes the record read back with compare-and-set; when the other stage wrote it since, reads
/// again and re-applies, like the runtime after a lost race.
async fn write_back(kv: &kv::Store, job_id: &str, mut entry: kv::Entry) -> Result<()> {
    for _ in 0..10 {
        match kv.update(job_id, entry.value.clone(), entry.revision).await {
            Ok(_) => return Ok(()),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                entry = kv
                    .entry(job_id)
                    .await?
                    .context("the design-floor job lost its record")?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    anyhow::bail!("the record of {job_id} kept changing under the design-floor stage")
}

/// The measured loops, in the order of `LOOPS`.
struct Loops {
    floor: Floor,
    runtimes: Chain,
    by_hand: Chain,
}

const LOOPS: [&str; 5] = [
    "floor",
    "hand_off",
    "hand_off_design_floor",
    "traversal",
    "traversal_design_floor",
];

impl Loops {
    /// Runs iteration `i` of loop `which` (an index into `LOOPS`).
    async fn iteration(
        &mut self,
        js: &jetstream::Context,
        which: usize,
        i: usize,
    ) -> Result<Timed> {
        let job_id = format!("bench-{}-{i}", LOOPS[which]);
        match which {
            0 => self.floor.iteration(js, i).await.map(Timed::from),
            1 => self.runtimes.hand_off(js, &job_id, i).await,
            2 => self.by_hand.hand_off(js, &job_id, i).await,
            3 => self
                .runtimes
                .traversal(js, &job_id, i)
                .await
                .map(Timed::from),
            _ => self
                .by_hand
                .traversal(js, &job_id, i)
                .await
                .map(Timed::from),
        }
    }
}

/// Measures the loops in interleaved blocks: every loop warms up, then each round runs one block
/// of each, in an order that rotates from round to round. Whatever else the machine does during
/// the run (another benchmark's stack, a core waking late) falls on all of them alike, so their
/// ratios compare like with like.
/// Returns each loop's measurements and, per loop, the two-stage traversals its iterations
/// timed (only the hand-off loops time one).
async fn measure(
    js: &jetstream::Context,
    loops: &mut Loops,
    iterations: usize,
) -> Result<(Vec<Measured>, Vec<Vec<f64>>)> {
    let mut measured: Vec<Measured> = LOOPS.iter().map(|_| Measured::default()).collect();
    let mut two_stages: Vec<Vec<f64>> = LOOPS.iter().map(|_| Vec::new()).collect();
    for which in 0..LOOPS.len() {
        for i in 0..WARMUP {
            loops.iteration(js, which, i).await?;
        }
    }
    let rounds = iterations.div_ceil(BLOCK);
    for round in 0..rounds {
        for turn in 0..LOOPS.len() {
            let which = (round + turn) % LOOPS.len();
            let first = WARMUP + round * BLOCK;
            let last = (first + BLOCK).min(WARMUP + iterations);
            let cpu_before = process_cpu_us();
            for i in first..last {
                let timed = loops.iteration(js, which, i).await?;
                measured[which].samples.push(timed.latency);
                two_stages[which].extend(timed.two_stages);
            }
            measured[which].cpu_us += process_cpu_us() - cpu_before;
        }
    }
    Ok((measured, two_stages))
}

#[tokio::main]
async fn main() -> Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("the argument is the number of iterations")?
        .unwrap_or(2000);
    anyhow::ensure!(
        iterations > 0,
        "the number of iterations must be at least 1"
    );
    // Logging as a stage process does it (JSON lines, RUST_LOG or info), so the stages pay for it.
    vexxy_runtime::logging::init(vexxy_runtime::config::LogFormat::Json);
    let nats = vexxy_harness::NatsServer::start()?;
    let client = nats.client().await?;
    let js = jetstream::new(client);
    // The floor carries a hand-off the size of deploy's: a ticket with deploy's timing, for a
    // job id as long as the measured ones.
    let mut handed_on = ticket("bench-hand_off-1000");
    let now = Utc::now();
    handed_on.timings.push(StageTiming {
        stage: Stage::Deploy,
        started_at: now,
        finished_at: now,
        duration_ms: 0,
    });
    let payload = Bytes::from(serde_json::to_vec(&vexxy_events::ticket_event(
        Stage::Deploy,
        handed_on,
    ))?);
    let mut loops = Loops {
        floor: Floor::start(&js, payload.clone()).await?,
        runtimes: Chain::runtimes(&js, &nats.url()).await?,
        by_hand: Chain::by_hand(&js, &nats.url()).await?,
    };
    let (mut measured, mut two_stages) = measure(&js, &mut loops, iterations).await?;
    loops.runtimes.stop().await?;
    loops.by_hand.stop().await?;
    let mut result = json!({"payload_bytes": payload.len(), "block": BLOCK});
    for ((name, measured), two_stages) in LOOPS.iter().zip(&mut measured).zip(&mut two_stages) {
        result[*name] = summary(measured);
        if !two_stages.is_empty() {
            // "hand_off" → "two_stage_traversal", "hand_off_design_floor" → "..._design_floor".
            let key = name.replacen("hand_off", "two_stage_traversal", 1);
            result[key] = latencies(two_stages);
        }
    }
    println!("BENCH_RESULT {result}");
    Ok(())
}
