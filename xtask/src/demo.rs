//! `cargo xtask demo`: one analysis end to end against the local stack, as a real client would
//! run it — publish a request on `vexxy.analysis.requested` with a `Nats-Msg-Id`, follow the job
//! record in the `vexxy-jobs` KV bucket, and wait for its `completed` or `failed` event.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, kv};
use futures::StreamExt;
use vexxy_events::{
    AnalysisCompleted, AnalysisOutcome, AnalysisRequest, CloudEvent, JobState, JobStatus,
    RunConfig, Stage, subjects,
};

use crate::paths::Paths;
use crate::stack::StackEnv;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Image repository to analyse.
    #[arg(long, default_value = DEMO_IMAGE_REF)]
    pub image_ref: String,
    /// Image digest (`sha256:<64 hex>`).
    #[arg(long, default_value = DEMO_IMAGE_DIGEST)]
    pub image_digest: String,
    /// Analysis window in seconds (the local stack accepts a few seconds).
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Give up after this many seconds without a completed or failed event.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// How many VEX statements to print.
    #[arg(long, default_value_t = 5)]
    pub statements: usize,
}

/// The sample image: kubesim's catalogue derives an image's content from its digest, and for
/// this digest serves the real Syft SBOM and Grype report of alpine 3 (15 packages, 20 matches)
/// with busybox, musl and libcrypto3 loaded — a realistic mix of affected and not_affected.
/// Must equal `kubesim::catalogue::ALPINE_FIXTURE_DIGEST` (a test checks).
const DEMO_IMAGE_REF: &str = "docker.io/library/alpine";
const DEMO_IMAGE_DIGEST: &str =
    "sha256:e2e16842c9b54d985bf1ef9242a313f36b856181f188de21313820e177002501";

pub fn run(paths: &Paths, env: &StackEnv, args: &DemoArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(paths, env, args))
}

async fn run_async(paths: &Paths, env: &StackEnv, args: &DemoArgs) -> anyhow::Result<bool> {
    let client = async_nats::connect(&env.nats_url).await.with_context(|| {
        format!(
            "cannot connect to the local stack's NATS at {}; is it up? (`cargo xtask up`)",
            env.nats_url
        )
    })?;
    let js = jetstream::new(client);

    let job_id = format!("demo-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S-%3f"));
    let msg_id = format!("{job_id}.request");

    // Subscribe before publishing, so an outcome that comes quickly is not missed.
    let public = js
        .get_stream(subjects::PUBLIC_STREAM)
        .await
        .with_context(|| {
            format!(
                "the stream {} does not exist; the stages create it when they start — see {}",
                subjects::PUBLIC_STREAM,
                paths.log_of("vexxy-install-check").display()
            )
        })?;
    let mut outcomes = public
        .create_consumer(OrderedConfig {
            filter_subjects: vec![
                subjects::COMPLETED.to_string(),
                subjects::FAILED.to_string(),
            ],
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .context("cannot create a consumer for the completed/failed events")?
        .messages()
        .await
        .context("cannot read the completed/failed events")?;
    let jobs = js
        .get_key_value(subjects::STATUS_BUCKET)
        .await
        .with_context(|| {
            format!(
                "the KV bucket {} does not exist; the stages create it when they start — see {}",
                subjects::STATUS_BUCKET,
                paths.logs().display()
            )
        })?;
    let mut status_updates = jobs
        .watch(&job_id)
        .await
        .context("cannot watch the job status")?;

    let request = AnalysisRequest {
        job_id: Some(job_id.clone()),
        image_ref: args.image_ref.clone(),
        image_digest: Some(args.image_digest.clone()),
        config: Some(RunConfig {
            analysis_duration: Some(args.duration),
            ..Default::default()
        }),
        labels: [("requested-by".to_string(), "cargo-xtask-demo".to_string())].into(),
    };
    let body = serde_json::to_vec(&request).context("cannot serialise the request")?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id.as_str());
    js.publish_with_headers(subjects::REQUESTED, headers, body.clone().into())
        .await
        .context("cannot publish the request")?
        .await
        .context("JetStream did not acknowledge the request")?;
    println!(
        "demo: published on {} (Nats-Msg-Id {msg_id}):",
        subjects::REQUESTED
    );
    println!("  {}", String::from_utf8_lossy(&body));
    println!(
        "demo: job {job_id} — progress from the {} KV bucket:",
        subjects::STATUS_BUCKET
    );

    let started = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout));
    tokio::pin!(deadline);
    let mut last_status: Option<JobStatus> = None;
    let outcome = loop {
        tokio::select! {
            _ = &mut deadline => {
                report_stuck(paths, &job_id, last_status.as_ref(), args.timeout);
                return Ok(false);
            }
            update = status_updates.next() => match update {
                Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                    match serde_json::from_slice::<JobStatus>(&entry.value) {
                        Ok(status) => {
                            let changed = last_status.as_ref().is_none_or(|last| last.stage != status.stage || last.state != status.state);
                            if changed {
                                println!("  {:>6.1}s  {:<14} {}", started.elapsed().as_secs_f64(), status.stage.as_str(), state_name(status.state));
                            }
                            last_status = Some(status);
                        }
                        Err(error) => println!("  (unreadable job record at revision {}: {error})", entry.revision),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("watching the job status failed: {error}"),
                None => bail!("the job status watch ended unexpectedly (NATS connection lost?)"),
            },
            message = outcomes.next() => match message {
                Some(Ok(message)) => {
                    if let Some(outcome) = read_outcome(&message.payload, &job_id)? {
                        break outcome;
                    }
                }
                Some(Err(error)) => bail!("reading completed/failed events failed: {error}"),
                None => bail!("the completed/failed event stream ended unexpectedly (NATS connection lost?)"),
            },
        }
    };
    let elapsed = started.elapsed();
    match outcome {
        AnalysisOutcome::Completed(completed) => {
            print_completed(&completed, args.statements, elapsed);
            println!("\nThe local stack keeps running; stop it with `cargo xtask down`.");
            Ok(true)
        }
        AnalysisOutcome::Failed(failed) => {
            println!(
                "\ndemo: job {job_id} FAILED in {} after {:.1}s: {} — {}",
                failed.stage,
                elapsed.as_secs_f64(),
                failed.reason.as_str(),
                failed.message
            );
            println!(
                "  retry could help: {}; the stage's log: {}",
                failed.retryable,
                paths
                    .log_of(&format!("vexxy-{}", failed.stage.as_str()))
                    .display()
            );
            println!("\nThe local stack keeps running; stop it with `cargo xtask down`.");
            Ok(false)
        }
    }
}

/// The outcome in `payload` if it is about `job_id`; other jobs' events are skipped whatever
/// they hold (the demo may share a stack with other clients), and a message about this job that
/// is no outcome of the contract is an error.
fn read_outcome(payload: &[u8], job_id: &str) -> anyhow::Result<Option<AnalysisOutcome>> {
    let event: CloudEvent<serde_json::Value> =
        serde_json::from_slice(payload).with_context(|| {
            format!(
                "a message on the outcome subjects is not a CloudEvent: {}",
                String::from_utf8_lossy(payload)
            )
        })?;
    if event.subject.as_deref() != Some(job_id) {
        return Ok(None);
    }
    let received = AnalysisOutcome::from_event(event)
        .context("a message on the outcome subjects is no outcome of the contract")?;
    Ok(Some(received.outcome))
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
    }
}

fn report_stuck(paths: &Paths, job_id: &str, last: Option<&JobStatus>, timeout: u64) {
    match last {
        Some(status) => {
            let log = paths.log_of(&format!("vexxy-{}", status.stage.as_str()));
            println!(
                "\ndemo: no completed or failed event for job {job_id} within {timeout}s; the job is stuck in \
                 stage {} (state {}). Look at its log: {}\n{}",
                status.stage,
                state_name(status.state),
                log.display(),
                vexxy_harness::stack::log_tail(&log, 15)
            );
        }
        None => {
            let log = paths.log_of(&format!("vexxy-{}", Stage::InstallCheck.as_str()));
            println!(
                "\ndemo: no completed or failed event for job {job_id} within {timeout}s, and no stage ever \
                 recorded it in the {} bucket: {} (which consumes {}) did not pick the request up. \
                 Look at its log: {}\n{}",
                subjects::STATUS_BUCKET,
                Stage::InstallCheck,
                subjects::REQUESTED,
                log.display(),
                vexxy_harness::stack::log_tail(&log, 15)
            );
        }
    }
    println!(
        "All logs: {}. The stack keeps running; stop it with `cargo xtask down`.",
        paths.logs().display()
    );
}

fn print_completed(completed: &AnalysisCompleted, statements: usize, elapsed: Duration) {
    let summary = &completed.summary;
    let evidence = &completed.evidence;
    println!(
        "\ndemo: job {} COMPLETED in {:.1}s",
        completed.job_id,
        elapsed.as_secs_f64()
    );
    println!(
        "  image            {}@{}",
        completed.image_ref, completed.image_digest
    );
    println!(
        "  statements       {} ({} distinct vulnerabilities): {} affected, {} not_affected, {} fixed, {} under_investigation",
        summary.total_cves_analyzed,
        summary.distinct_vulnerabilities,
        summary.affected,
        summary.not_affected,
        summary.fixed,
        summary.under_investigation
    );
    let total = summary
        .total_components_in_image
        .map_or_else(|| "unknown".to_string(), |count| count.to_string());
    println!(
        "  components       {} seen loaded of {total} in the image",
        summary.relevant_components
    );
    println!(
        "  evidence         {:?}: learning {} / {}, window {} → {}, {} container restarts, Kubescape {}",
        evidence.completeness,
        evidence.learning_status,
        evidence.learning_completion,
        evidence.window_start.format("%H:%M:%S"),
        evidence.window_end.format("%H:%M:%S"),
        evidence.container_restarts,
        evidence.kubescape_shape
    );
    for timing in &completed.timings {
        println!("  {:<16} {} ms", timing.stage.as_str(), timing.duration_ms);
    }
    println!("  summary          {}", completed.artifacts.summary);
    println!("  filtered SBOM    {}", completed.artifacts.filtered_sbom);
    match &completed.artifacts.openvex {
        Some(url) => {
            println!("  OpenVEX          {url}");
            print_statements(url, statements);
        }
        None => println!("  OpenVEX          none: the image has no known vulnerabilities"),
    }
}

/// Prints the first statements of a VEX document stored at a `file://` URL (for other stores
/// the URL is all we print: reading S3 here would need the user's credentials).
fn print_statements(url: &str, limit: usize) {
    let Some(path) = file_path(url) else {
        return;
    };
    let document: serde_json::Value = match std::fs::read(&path)
        .map_err(anyhow::Error::from)
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(anyhow::Error::from))
    {
        Ok(document) => document,
        Err(error) => {
            println!("  (cannot read {}: {error})", path.display());
            return;
        }
    };
    let statements = document["statements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!(
        "\n  first {} of {} statements:",
        limit.min(statements.len()),
        statements.len()
    );
    for statement in statements.iter().take(limit) {
        let product = statement["products"][0]["subcomponents"][0]["@id"]
            .as_str()
            .or_else(|| statement["products"][0]["@id"].as_str())
            .unwrap_or("?");
        let reason = statement["justification"]
            .as_str()
            .or_else(|| statement["action_statement"].as_str())
            .or_else(|| statement["impact_statement"].as_str())
            .or_else(|| statement["status_notes"].as_str())
            .unwrap_or("");
        println!(
            "    {:<20} {:<20} {product}  {reason}",
            statement["vulnerability"]["name"].as_str().unwrap_or("?"),
            statement["status"].as_str().unwrap_or("?"),
        );
    }
}

fn file_path(url: &str) -> Option<PathBuf> {
    let parsed = url::Url::parse(url).ok()?;
    (parsed.scheme() == "file")
        .then(|| parsed.to_file_path().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexxy_events::envelope::event_id;
    use vexxy_events::{AnalysisFailed, EventType};

    #[test]
    fn outcomes_of_other_jobs_are_skipped() {
        let failed = AnalysisFailed {
            job_id: Some("other-job".into()),
            image_ref: None,
            image_digest: None,
            request_msg_id: None,
            stage: Stage::Deploy,
            reason: vexxy_events::FailureReason::ImagePullFailed,
            message: "cannot pull".into(),
            retryable: false,
            original: vexxy_events::failed::OriginalMessage {
                stream: subjects::PIPELINE_STREAM.into(),
                subject: "vexxy.pipeline.deploy".into(),
                stream_sequence: 3,
                msg_id: None,
                dead_letter_subject: None,
            },
            labels: Default::default(),
        };
        let event = CloudEvent::new(
            EventType::Failed,
            "/vexxy/stages/deploy",
            event_id("other-job", "failed"),
            "other-job",
            failed,
        );
        let payload = serde_json::to_vec(&event).unwrap();
        assert!(read_outcome(&payload, "demo-job").unwrap().is_none());
        match read_outcome(&payload, "other-job").unwrap() {
            Some(AnalysisOutcome::Failed(failed)) => assert_eq!(failed.stage, Stage::Deploy),
            _ => panic!("the failed event of the job itself is its outcome"),
        }
    }

    #[test]
    fn a_non_cloudevent_on_the_outcome_subjects_is_an_error() {
        assert!(read_outcome(b"{\"job_id\": \"x\"}", "x").is_err());
        assert!(read_outcome(b"not json", "x").is_err());
    }

    #[test]
    fn another_jobs_event_is_skipped_whatever_it_holds() {
        let event = serde_json::json!({"specversion": "1.0", "id": "o.x", "source": "/elsewhere",
            "type": "io.example.other.v1", "subject": "other-job", "data": {"n": 1}});
        let payload = serde_json::to_vec(&event).expect("bytes");
        assert!(
            read_outcome(&payload, "demo-job")
                .expect("skipped")
                .is_none()
        );
        assert!(
            read_outcome(&payload, "other-job").is_err(),
            "its own would be an error"
        );
    }

    #[test]
    fn the_demo_image_is_kubesims_alpine_fixture() {
        assert_eq!(DEMO_IMAGE_DIGEST, kubesim::catalogue::ALPINE_FIXTURE_DIGEST);
    }

    #[test]
    fn only_file_urls_are_read_locally() {
        assert_eq!(
            file_path("file:///tmp/a/vex.json"),
            Some(PathBuf::from("/tmp/a/vex.json"))
        );
        assert_eq!(file_path("s3://bucket/analyses/x/vex.openvex.json"), None);
    }
}
