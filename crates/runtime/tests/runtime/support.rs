//! Shared test scaffolding: a configured in-process stage, a scriptable handler, and readers
//! for what ended up in the streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, Context};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vexxy_events::{
    AnalysisFailed, CloudEvent, PipelineTicket, Stage, ValidationPolicy, parse_request, subjects,
};
use vexxy_harness::NatsServer;
use vexxy_runtime::config::Env;
use vexxy_runtime::{Handler, JobContext, Outcome, RuntimeConfig, StageError, run_with};

pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A configuration for tests: short AckWait and retry delays, health on a free port, a private
/// file store. `extra` overrides any of it.
pub fn config(
    nats: &NatsServer,
    store_dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> RuntimeConfig {
    init_logging();
    let store = format!("file://{}", store_dir.display());
    let mut pairs: Vec<(String, String)> = vec![
        ("NATS_URL".into(), nats.url()),
        ("VEXXY_STORE".into(), store),
        ("VEXXY_HEALTH_ADDR".into(), "127.0.0.1:0".into()),
        ("VEXXY_ACK_WAIT".into(), "2s".into()),
        ("VEXXY_MAX_DELIVER".into(), "4".into()),
        ("VEXXY_RETRY_BASE_DELAY".into(), "200ms".into()),
        ("VEXXY_RETRY_MAX_DELAY".into(), "2s".into()),
        ("VEXXY_PULL_EXPIRES".into(), "1s".into()),
        ("VEXXY_SHUTDOWN_GRACE".into(), "5s".into()),
        ("VEXXY_MIN_ANALYSIS_DURATION".into(), "1".into()),
    ];
    for (name, value) in extra {
        pairs.push((name.to_string(), value.to_string()));
    }
    RuntimeConfig::load(&Env::from_pairs(&pairs)).expect("test configuration is valid")
}

/// Runtime logs go through the test harness's capture (shown for failing tests); the filter
/// comes from RUST_LOG (default: warnings and errors).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// One call of a [`TestHandler`].
#[derive(Debug, Clone)]
pub struct Call {
    pub job_id: String,
    pub delivery: u64,
    pub at: Instant,
}

type Behaviour = dyn Fn(
        JobContext,
        PipelineTicket,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, StageError>> + Send>>
    + Send
    + Sync;

/// A handler whose behaviour is a closure; records every call.
#[derive(Clone)]
pub struct TestHandler {
    pub calls: Arc<Mutex<Vec<Call>>>,
    behaviour: Arc<Behaviour>,
}

impl TestHandler {
    pub fn new<F, Fut>(behaviour: F) -> Self
    where
        F: Fn(JobContext, PipelineTicket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, StageError>> + Send + 'static,
    {
        TestHandler {
            calls: Arc::new(Mutex::new(Vec::new())),
            behaviour: Arc::new(move |job, ticket| Box::pin(behaviour(job, ticket))),
        }
    }

    /// Hands every ticket on unchanged.
    pub fn pass_through() -> Self {
        Self::new(|_, ticket| async move { Ok(Outcome::Next(ticket)) })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Handler for TestHandler {
    async fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        self.calls.lock().unwrap().push(Call {
            job_id: job.job_id.clone(),
            delivery: job.delivery,
            at: Instant::now(),
        });
        (self.behaviour)(job.clone(), ticket).await
    }
}

/// A stage running in this process.
pub struct RunningStage {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), vexxy_runtime::RuntimeError>>,
}

impl RunningStage {
    pub fn start<H: Handler>(config: RuntimeConfig, stage: Stage, handler: H) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_with(config, stage, handler, async move {
            let _ = stopped.await;
        }));
        RunningStage {
            stop: Some(stop),
            task,
        }
    }

    /// Requests shutdown (what SIGTERM does) without waiting.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Requests shutdown and waits (bounded) for `run_with` to return.
    pub async fn stop(mut self) {
        self.request_stop();
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the stage stops within 30s")
            .expect("the stage task did not panic")
            .expect("the stage stopped cleanly");
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// A validated request for `job_id`, as intake would produce it.
pub fn request_body(job_id: &str) -> String {
    format!(
        r#"{{"job_id":"{job_id}","image_ref":"ghcr.io/acme/app","image_digest":"{DIGEST}","config":{{"analysis_duration":60}},"labels":{{"team":"payments"}}}}"#
    )
}

pub fn ticket(job_id: &str) -> PipelineTicket {
    let request = parse_request(
        request_body(job_id).as_bytes(),
        None,
        &ValidationPolicy::default(),
    )
    .expect("the sample request is valid");
    PipelineTicket {
        request,
        timings: Vec::new(),
        sandbox: None,
        observation: None,
        evidence: None,
    }
}

pub async fn jetstream(nats: &NatsServer) -> Context {
    jetstream::new(nats.client().await.expect("test client connects"))
}

/// Publishes `ticket` to `stage`'s input as the previous stage would, waiting for the PubAck.
pub async fn publish_ticket(js: &Context, stage: Stage, ticket: PipelineTicket) -> u64 {
    let job_id = ticket.request.job_id.clone();
    let previous = Stage::ALL[Stage::ALL.iter().position(|s| *s == stage).unwrap() - 1];
    let event = vexxy_events::ticket_event(previous, ticket);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.id.as_str());
    headers.insert(subjects::HEADER_JOB_ID, job_id.as_str());
    js.publish_with_headers(
        subjects::input_of(stage),
        headers,
        serde_json::to_vec(&event).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap()
    .sequence
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message currently stored in `stream` on `subject`, oldest first.
pub async fn stored(js: &Context, stream: &str, subject: &str) -> Vec<StreamMessage> {
    let Ok(stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut next = 1;
    for _ in 0..1000 {
        match stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subject.to_string())
            .send()
            .await
        {
            Ok(message) => {
                next = message.sequence + 1;
                found.push(message);
            }
            Err(_) => break,
        }
    }
    found
}

/// Waits until exactly `count` messages are stored on `subject` and returns them.
pub async fn wait_stored(
    js: &Context,
    stream: &str,
    subject: &str,
    count: usize,
) -> Vec<StreamMessage> {
    let messages = eventually(
        Duration::from_secs(20),
        &format!("{count} message(s) on {subject}"),
        || async {
            let messages = stored(js, stream, subject).await;
            (messages.len() >= count).then_some(messages)
        },
    )
    .await;
    assert_eq!(
        messages.len(),
        count,
        "expected exactly {count} message(s) on {subject}, found {}",
        messages.len()
    );
    messages
}

pub fn failed_events(messages: &[StreamMessage]) -> Vec<AnalysisFailed> {
    messages
        .iter()
        .map(|message| {
            serde_json::from_slice::<CloudEvent<AnalysisFailed>>(&message.payload)
                .expect("failed events follow the contract")
                .data
        })
        .collect()
}

pub fn tickets(messages: &[StreamMessage]) -> Vec<CloudEvent<PipelineTicket>> {
    messages
        .iter()
        .map(|message| {
            serde_json::from_slice(&message.payload).expect("tickets follow the contract")
        })
        .collect()
}

/// Info about a stage's durable consumer.
pub async fn consumer_info(js: &Context, stage: Stage) -> async_nats::jetstream::consumer::Info {
    let stream = js
        .get_stream(subjects::input_stream_of(stage))
        .await
        .unwrap();
    stream
        .consumer_info(subjects::durable_of(stage))
        .await
        .unwrap()
}

/// Waits until the stage's durable consumer exists (the runtime provisioned it).
pub async fn wait_provisioned(js: &Context, stage: Stage) {
    eventually(
        Duration::from_secs(20),
        "the consumer to be provisioned",
        || async {
            let stream = js.get_stream(subjects::input_stream_of(stage)).await.ok()?;
            stream
                .consumer_info(subjects::durable_of(stage))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await
}

/// Reads the job record.
pub async fn job_status(js: &Context, job_id: &str) -> Option<vexxy_events::JobStatus> {
    let kv = js.get_key_value(subjects::STATUS_BUCKET).await.ok()?;
    let bytes = kv.get(job_id).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Creates the job record as intake would have.
pub async fn seed_job(js: &Context, ticket: &PipelineTicket, stage: Stage) {
    let kv = js.get_key_value(subjects::STATUS_BUCKET).await.unwrap();
    let record = vexxy_runtime::status::new_job(
        &ticket.request,
        vexxy_events::request_fingerprint(&ticket.request),
        1,
        stage,
    );
    vexxy_runtime::status::create(&kv, &record).await.unwrap();
}

/// A plain HTTP GET against 127.0.0.1 (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}
