//! The smallest real stage: hands every ticket on unchanged.
//!
//! It shows the whole contract between a stage crate and the runtime (a [`Handler`] and one call
//! to [`vexxy_runtime::run`]) and is what the runtime's process tests start, to exercise the
//! real entry point: configuration from the environment, signals, exit codes.
//!
//! `VEXXY_EXAMPLE_STAGE` picks the stage it pretends to be (default `deploy`).

use std::process::ExitCode;

use vexxy_events::{PipelineTicket, Stage};
use vexxy_runtime::{Handler, JobContext, Outcome, StageDefaults, StageError};

struct PassThrough;

impl Handler for PassThrough {
    async fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        tracing::info!(job_id = %job.job_id, delivery = job.delivery, "passing the ticket on");
        Ok(Outcome::Next(ticket))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let name = std::env::var("VEXXY_EXAMPLE_STAGE").unwrap_or_else(|_| "deploy".to_string());
    let Some(stage) = Stage::ALL.into_iter().find(|stage| stage.as_str() == name) else {
        eprintln!(
            "VEXXY_EXAMPLE_STAGE={name:?} is not a stage; use one of install-check, deploy, wait, extract"
        );
        return ExitCode::from(2);
    };
    // Seconds of work per message, like most stages.
    let defaults = StageDefaults { max_in_flight: 32 };
    vexxy_runtime::run(stage, defaults, |_config| async { Ok(PassThrough) }).await
}
