//! Job records from the `vexxy-jobs` KV bucket: `status`, `watch`, `list`.

use std::io::IsTerminal;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use vexxy_events::{JobState, JobStatus, Stage};

use crate::CliError;
use crate::cli::Format;
use crate::output;

fn unavailable(job_id: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Unavailable(format!(
        "cannot read the status of job {job_id} from the job status bucket: {e}; check that NATS is up"
    ))
}

fn decode(job_id: &str, bytes: &[u8]) -> Result<JobStatus, CliError> {
    serde_json::from_slice(bytes).map_err(|e| {
        CliError::Unavailable(format!(
            "the status record of job {job_id} is not a job status ({e}); this vexxy may be a different version than this CLI"
        ))
    })
}

/// The record of `job_id`, or an error saying it does not exist.
pub async fn read(bucket: &kv::Store, job_id: &str) -> Result<JobStatus, CliError> {
    match bucket
        .get(job_id)
        .await
        .map_err(|e| unavailable(job_id, e))?
    {
        Some(bytes) => decode(job_id, &bytes),
        None => Err(CliError::BadInput(format!(
            "no job {job_id}: vexxy has no record of it (a request is recorded once install-check accepts it; a rejected request only gets a failed event — see `vexxy subscribe`). Check the id with `vexxy list`"
        ))),
    }
}

pub fn status_rows(jobs: &[JobStatus]) -> Vec<Vec<String>> {
    let mut rows = vec![
        ["JOB", "STATE", "STAGE", "IMAGE", "UPDATED", "REASON"]
            .map(String::from)
            .to_vec(),
    ];
    for job in jobs {
        rows.push(vec![
            job.job_id.clone(),
            state_name(job.state).to_string(),
            job.stage.to_string(),
            format!("{}@{}", job.image_ref, short_digest(&job.image_digest)),
            job.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            job.error
                .as_ref()
                .map(|e| e.reason.to_string())
                .unwrap_or_default(),
        ]);
    }
    rows
}

pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
    }
}

fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

pub fn print_status(job: &JobStatus, format: Format) {
    output::print(format, job, || {
        let mut rows = status_rows(std::slice::from_ref(job));
        if let Some(error) = &job.error {
            rows.push(vec![String::new()]);
            rows.push(vec![format!("message: {}", error.message)]);
        }
        if let Some(result) = &job.result {
            rows.push(vec![format!("result: {result}")]);
        }
        rows
    });
}

/// The most recently updated `limit` jobs.
pub async fn list(bucket: &kv::Store, limit: usize) -> Result<Vec<JobStatus>, CliError> {
    let mut keys = bucket.keys().await.map_err(|e| unavailable("(all)", e))?;
    let mut jobs = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| unavailable("(all)", e))?;
        if let Some(bytes) = bucket.get(&key).await.map_err(|e| unavailable(&key, e))? {
            // A record this CLI cannot read is listed by nobody rather than failing the list.
            if let Ok(job) = serde_json::from_slice::<JobStatus>(&bytes) {
                jobs.push(job);
            }
        }
    }
    jobs.sort_by_key(|job| std::cmp::Reverse(job.updated_at));
    jobs.truncate(limit);
    Ok(jobs)
}

/// One line per change of a job's record, for logs and pipes.
pub fn progress_line(job: &JobStatus) -> String {
    let position = Stage::ALL.iter().position(|s| *s == job.stage).unwrap_or(0) + 1;
    match job.state {
        JobState::Running => format!("{} running: stage {position}/5 {}", job.job_id, job.stage),
        JobState::Completed => format!(
            "{} completed{}",
            job.job_id,
            job.result
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_else(|| " (no vulnerabilities: no VEX document)".to_string())
        ),
        JobState::Failed => {
            let (reason, message) = job
                .error
                .as_ref()
                .map(|e| (e.reason.to_string(), e.message.clone()))
                .unwrap_or_else(|| ("internal".to_string(), "no reason recorded".to_string()));
            format!(
                "{} failed in {}: {reason}: {message}",
                job.job_id, job.stage
            )
        }
    }
}

/// Follows `job_id` until it is final. Ok(record) when completed; `JobFailed` when failed.
pub async fn watch(
    bucket: &kv::Store,
    job_id: &str,
    timeout: Duration,
) -> Result<JobStatus, CliError> {
    let interactive = std::io::stderr().is_terminal();
    let bar = interactive.then(|| {
        let bar = ProgressBar::new(Stage::ALL.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:20}] {pos}/{len} {msg} ({elapsed})")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(format!("{job_id}: waiting for the job to be accepted"));
        bar
    });
    let follow = async {
        let mut updates = bucket
            .watch_with_history(job_id)
            .await
            .map_err(|e| unavailable(job_id, e))?;
        let mut last_line = String::new();
        while let Some(entry) = updates.next().await {
            let entry = entry.map_err(|e| unavailable(job_id, e))?;
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let job = decode(job_id, &entry.value)?;
            let line = progress_line(&job);
            match &bar {
                Some(bar) => {
                    let position = Stage::ALL.iter().position(|s| *s == job.stage).unwrap_or(0);
                    bar.set_position(position as u64 + u64::from(job.state.is_final()));
                    bar.set_message(format!("{job_id}: {}", job.stage));
                }
                None if line != last_line => println!("{line}"),
                None => {}
            }
            last_line = line;
            if job.state.is_final() {
                return Ok(job);
            }
        }
        Err(unavailable(
            job_id,
            "the watch ended (NATS connection closed)",
        ))
    };
    let outcome = tokio::time::timeout(timeout, follow).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let job = outcome.map_err(|_| {
        CliError::Unavailable(format!(
            "job {job_id} did not finish within {timeout:?}; it may still be running: `vexxy status {job_id}`"
        ))
    })??;
    if bar.is_some() {
        eprintln!("{}", progress_line(&job));
    }
    match job.state {
        JobState::Failed => Err(CliError::JobFailed(progress_line(&job))),
        _ => Ok(job),
    }
}
