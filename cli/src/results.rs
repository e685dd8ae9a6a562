//! `vexxy results`: a completed job's documents from the object store, written to a directory.
//!
//! The documents live at fixed keys `analyses/<job_id>/<name>` (written by the enrich stage), so
//! only the job id is needed; the job record says whether they are final.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vexxy_events::{JobState, JobStatus};
use vexxy_runtime::{Store, StoreError, job_key};

use crate::CliError;

/// (document, file name, required). The OpenVEX and CycloneDX documents are absent for an image
/// without vulnerabilities.
pub const DOCUMENTS: [(&str, &str, bool); 5] = [
    ("openvex", "vex.openvex.json", false),
    ("cyclonedx", "vex.cdx.json", false),
    ("sbom_cyclonedx", "sbom.cdx.json", false),
    ("filtered_sbom", "sbom.filtered.json", true),
    ("summary", "summary.json", true),
];

#[derive(Debug, Clone, Serialize)]
pub struct Downloaded {
    pub document: String,
    /// Where it was written, `None` when the job has no such document.
    pub path: Option<PathBuf>,
    pub bytes: u64,
    pub source: String,
}

/// Refuses a job that is not completed, with what to do instead.
pub fn ensure_completed(job: &JobStatus) -> Result<(), CliError> {
    match job.state {
        JobState::Completed => Ok(()),
        JobState::Running => Err(CliError::BadInput(format!(
            "job {} is still running (stage {}): wait with `vexxy watch {}`",
            job.job_id, job.stage, job.job_id
        ))),
        JobState::Failed => Err(CliError::JobFailed(format!(
            "job {} failed in {} and has no results: {}",
            job.job_id,
            job.stage,
            job.error
                .as_ref()
                .map(|e| format!("{}: {}", e.reason, e.message))
                .unwrap_or_default()
        ))),
    }
}

pub async fn download(
    store: &Store,
    job_id: &str,
    dir: &Path,
) -> Result<Vec<Downloaded>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::BadInput(format!(
            "cannot create the directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut out = Vec::new();
    for (document, name, required) in DOCUMENTS {
        let key = job_key(job_id, name);
        let source = store.url(&key);
        match store.get_bytes(&key).await {
            Ok(bytes) => {
                let path = dir.join(name);
                std::fs::write(&path, &bytes).map_err(|e| {
                    CliError::BadInput(format!("cannot write {}: {e}", path.display()))
                })?;
                out.push(Downloaded {
                    document: document.to_string(),
                    path: Some(path),
                    bytes: bytes.len() as u64,
                    source,
                });
            }
            Err(StoreError::NotFound { .. }) if !required => out.push(Downloaded {
                document: document.to_string(),
                path: None,
                bytes: 0,
                source,
            }),
            Err(e) => {
                return Err(CliError::Unavailable(format!(
                    "cannot download {document} of job {job_id}: {e}; check VEXXY_STORE (and AWS_* for S3) point at the store the stages write to"
                )));
            }
        }
    }
    Ok(out)
}

pub fn rows(downloaded: &[Downloaded]) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["DOCUMENT".into(), "FILE".into(), "BYTES".into()]];
    for d in downloaded {
        rows.push(vec![
            d.document.clone(),
            d.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none: no vulnerabilities)".into()),
            d.bytes.to_string(),
        ]);
    }
    rows
}
