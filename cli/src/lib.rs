//! The `vexxy` command line: what a platform engineer types to submit images, follow jobs, fetch
//! results and check that the VEX suppresses what their scanner reports.
//!
//! * [`cli`]: the commands and flags (clap), with examples in `--help`.
//! * [`connection`]: NATS, the job-status bucket and the object store, configured exactly like
//!   the stages (`NATS_URL`, `NATS_*` auth, `VEXXY_STORE`, `AWS_*`), with errors that say what to do.
//! * [`submit`], [`jobs`] (status, watch, list), [`results`], [`subscribe`]: the commands that
//!   talk to a running vexxy.
//! * [`apply`] and [`purl`]: applying an OpenVEX document to a Grype or Trivy JSON report the way
//!   those scanners do (pure functions, no I/O).
//! * [`output`]: `-o table|json|yaml`.
//!
//! Exit codes: 0 success (a watched job completed), 1 a watched job failed, 2 bad input or usage
//! (including a request rejected by local validation), 3 vexxy unreachable or not set up.

pub mod apply;
pub mod cli;
pub mod connection;
pub mod jobs;
pub mod output;
pub mod purl;
pub mod results;
pub mod submit;
pub mod subscribe;

/// Exit codes, documented in `--help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const JOB_FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const UNAVAILABLE: u8 = 3;
}

/// An error for the user: what happened and what to do, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input is wrong (request, file, flag): exit 2.
    #[error("{0}")]
    BadInput(String),
    /// NATS, the bucket or the store cannot be used: exit 3.
    #[error("{0}")]
    Unavailable(String),
    /// A watched job ended in `failed`: exit 1 (the message holds reason and text).
    #[error("{0}")]
    JobFailed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_) => exit::BAD_INPUT,
            CliError::Unavailable(_) => exit::UNAVAILABLE,
            CliError::JobFailed(_) => exit::JOB_FAILED,
        }
    }
}
