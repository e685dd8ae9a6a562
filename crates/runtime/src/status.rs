//! Job status records in the `vexxy-jobs` KV bucket.
//!
//! Several processes write the same record (every stage, every replica, the dead-letter
//! watcher), so every write is a compare-and-set on the revision read just before: a writer that
//! lost the race reads again and re-applies its change to the newer record. The one rule that
//! makes racing safe: a final state (completed or failed) is never changed again, so a slow
//! writer can never resurrect or overwrite a finished job.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use bytes::Bytes;
use chrono::Utc;
use vexxy_events::status::StatusError as RecordedError;
use vexxy_events::{FailureReason, JobState, JobStatus, Stage, ValidatedRequest};

/// Attempts at a compare-and-set before giving up; each lost race means another writer made
/// progress, so a handful is plenty.
const MAX_ATTEMPTS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("job status store unavailable for job {job_id}: {message}")]
    Unavailable { job_id: String, message: String },
    #[error("job status record of {job_id} is not a valid JobStatus: {source}")]
    Corrupt {
        job_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("job {job_id} has no status record")]
    Missing { job_id: String },
    #[error("job status of {job_id} kept changing under {attempts} attempts to update it")]
    Contended { job_id: String, attempts: usize },
}

/// Result of a create-on-intake.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// This call created the record.
    New(Versioned),
    /// A record for the job id already existed; it is returned untouched.
    Existing(Versioned),
}

/// A job record together with the KV revision it was read at (or written as): what a
/// compare-and-set must name to replace it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub status: JobStatus,
    pub revision: u64,
}

/// Result of a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The change was written; the new record.
    Applied(JobStatus),
    /// The record was already final; nothing was written.
    AlreadyFinal(JobStatus),
    /// The change function asked for no change.
    Unchanged(JobStatus),
}

impl Transition {
    /// The record as it is in KV after the transition.
    pub fn record(&self) -> &JobStatus {
        match self {
            Transition::Applied(record)
            | Transition::AlreadyFinal(record)
            | Transition::Unchanged(record) => record,
        }
    }

    pub fn into_record(self) -> JobStatus {
        match self {
            Transition::Applied(record)
            | Transition::AlreadyFinal(record)
            | Transition::Unchanged(record) => record,
        }
    }
}

/// The record of a job accepted from `request` (message `sequence` of the request stream).
pub fn new_job(
    request: &ValidatedRequest,
    fingerprint: String,
    sequence: u64,
    stage: Stage,
) -> JobStatus {
    let now = Utc::now();
    JobStatus {
        job_id: request.job_id.clone(),
        state: JobState::Running,
        stage,
        image_ref: request.image_ref.clone(),
        image_digest: request.image_digest.clone(),
        request_fingerprint: fingerprint,
        request_sequence: sequence,
        created_at: now,
        updated_at: now,
        error: None,
        result: None,
    }
}

/// Reads the record of `job_id` and its revision.
pub async fn read(kv: &kv::Store, job_id: &str) -> Result<Option<(JobStatus, u64)>, StatusError> {
    let entry = kv
        .entry(job_id)
        .await
        .map_err(|e| StatusError::Unavailable {
            job_id: job_id.to_string(),
            message: e.to_string(),
        })?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let status =
                serde_json::from_slice(&entry.value).map_err(|source| StatusError::Corrupt {
                    job_id: job_id.to_string(),
                    source,
                })?;
            Ok(Some((status, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// Creates the record if no record exists for its job id; otherwise returns the existing one.
pub async fn create(kv: &kv::Store, status: &JobStatus) -> Result<Created, StatusError> {
    let job_id = &status.job_id;
    for _ in 0..MAX_ATTEMPTS {
        match kv.create(job_id, encode(status)).await {
            Ok(revision) => {
                return Ok(Created::New(Versioned {
                    status: status.clone(),
                    revision,
                }));
            }
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                // Between `create` failing and this read the record could be deleted (an
                // operator purging it); then the next attempt creates it.
                if let Some((status, revision)) = read(kv, job_id).await? {
                    return Ok(Created::Existing(Versioned { status, revision }));
                }
            }
            Err(e) => {
                return Err(StatusError::Unavailable {
                    job_id: job_id.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
    Err(StatusError::Contended {
        job_id: job_id.clone(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Applies `change` to the record of `job_id` with a revision check, retrying on lost races.
///
/// `change` gets the current record and returns the new one, or `None` for "leave it". It is
/// never called on a final record. When no record exists, `change` is applied to `missing` (if
/// given) and the result created: a job whose record was lost (memory storage after a broker
/// restart) gets a fresh one instead of failing the stage.
pub async fn transition(
    kv: &kv::Store,
    job_id: &str,
    missing: Option<JobStatus>,
    change: impl Fn(&JobStatus) -> Option<JobStatus>,
) -> Result<Transition, StatusError> {
    transition_from(kv, job_id, None, missing, change)
        .await
        .map(|(transition, _)| transition)
}

/// [`transition`] starting from a record the caller already read (`known`: the record and its
/// revision), so the first compare-and-set needs no read of its own. That is as safe as reading
/// again: the write names `known`'s revision, so if anyone wrote since, it fails and the change
/// is re-applied to a fresh read, exactly like a lost race. Returns the outcome and the revision
/// of the record it describes (the new one when applied), for chaining the next transition.
pub async fn transition_from(
    kv: &kv::Store,
    job_id: &str,
    mut known: Option<Versioned>,
    missing: Option<JobStatus>,
    change: impl Fn(&JobStatus) -> Option<JobStatus>,
) -> Result<(Transition, u64), StatusError> {
    let mut lost_races = 0;
    for _ in 0..MAX_ATTEMPTS {
        // A write refused for a stale `known` revision is not a race lost to a live writer, so
        // the read after it does not back off; `fresh` tells the two apart.
        let (current, fresh) = match known.take() {
            Some(versioned) => (Some((versioned.status, versioned.revision)), false),
            None => {
                if lost_races > 0 {
                    // Lost a race: give the other writer a moment before reading again.
                    tokio::time::sleep(Duration::from_millis(5 * lost_races as u64)).await;
                }
                (read(kv, job_id).await?, true)
            }
        };
        let (current, revision) = match current {
            Some(found) => found,
            None => {
                let Some(base) = missing.clone() else {
                    return Err(StatusError::Missing {
                        job_id: job_id.to_string(),
                    });
                };
                let record = change(&base).unwrap_or(base);
                match kv.create(job_id, encode(&record)).await {
                    Ok(revision) => return Ok((Transition::Applied(record), revision)),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                        lost_races += 1;
                        continue;
                    }
                    Err(e) => {
                        return Err(StatusError::Unavailable {
                            job_id: job_id.to_string(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        };
        if current.state.is_final() {
            return Ok((Transition::AlreadyFinal(current), revision));
        }
        let Some(mut next) = change(&current) else {
            return Ok((Transition::Unchanged(current), revision));
        };
        next.updated_at = Utc::now();
        match kv.update(job_id, encode(&next), revision).await {
            Ok(revision) => return Ok((Transition::Applied(next), revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                if fresh {
                    lost_races += 1;
                }
                continue;
            }
            Err(e) => {
                return Err(StatusError::Unavailable {
                    job_id: job_id.to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
    Err(StatusError::Contended {
        job_id: job_id.to_string(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Change: the job moved on to `stage` (never backwards: a late redelivery of an earlier stage
/// must not make a job look like it went back in the pipeline).
pub fn moved_to(stage: Stage) -> impl Fn(&JobStatus) -> Option<JobStatus> {
    move |current| {
        if position(stage) <= position(current.stage) {
            return None;
        }
        let mut next = current.clone();
        next.stage = stage;
        Some(next)
    }
}

/// Change: the job completed in `stage` with its result at `result` (the OpenVEX URL, if any).
pub fn completed(stage: Stage, result: Option<String>) -> impl Fn(&JobStatus) -> Option<JobStatus> {
    move |current| {
        let mut next = current.clone();
        next.state = JobState::Completed;
        next.stage = stage;
        next.result = result.clone();
        next.error = None;
        Some(next)
    }
}

/// Change: the job failed in `stage`.
pub fn failed(
    stage: Stage,
    reason: FailureReason,
    message: String,
) -> impl Fn(&JobStatus) -> Option<JobStatus> {
    move |current| {
        let mut next = current.clone();
        next.state = JobState::Failed;
        next.stage = stage;
        next.error = Some(RecordedError {
            reason,
            message: message.clone(),
        });
        Some(next)
    }
}

/// True when the record shows the job in a stage after `stage` (not final: a final job is
/// handled separately because its outcome is already published).
pub fn is_past(current: &JobStatus, stage: Stage) -> bool {
    !current.state.is_final() && position(current.stage) > position(stage)
}

fn position(stage: Stage) -> usize {
    Stage::ALL
        .iter()
        .position(|candidate| *candidate == stage)
        .expect("Stage::ALL lists every stage")
}

fn encode(status: &JobStatus) -> Bytes {
    Bytes::from(serde_json::to_vec(status).expect("a JobStatus always serialises"))
}
