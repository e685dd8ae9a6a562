//! `vexxy submit`: build the request, validate it exactly as the service will
//! (`vexxy_events::parse_request`), publish it with a `Nats-Msg-Id`.

use std::collections::BTreeMap;
use std::io::Read;

use async_nats::jetstream;
use vexxy_events::{
    AnalysisRequest, RunConfig, ValidatedRequest, ValidationPolicy, parse_request, subjects,
};

use crate::CliError;
use crate::cli::SubmitArgs;

/// The request body the flags describe (or the file's bytes, unchanged).
pub fn request_body(args: &SubmitArgs) -> Result<Vec<u8>, CliError> {
    if let Some(path) = &args.file {
        let mut body = Vec::new();
        let read = if path.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut body).map(|_| ())
        } else {
            std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut body).map(|_| ()))
        };
        read.map_err(|e| {
            CliError::BadInput(format!(
                "cannot read the request file {}: {e}",
                path.display()
            ))
        })?;
        return Ok(body);
    }
    let image = args.image.clone().unwrap_or_default();
    let config = RunConfig {
        analysis_duration: args.duration,
        environment: args.environment.iter().cloned().collect::<BTreeMap<_, _>>(),
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        args: (!args.args.is_empty()).then(|| args.args.clone()),
        ports: args.port.clone(),
    };
    let request = AnalysisRequest {
        job_id: args.job_id.clone(),
        image_ref: image,
        image_digest: None,
        config: (config != RunConfig::default()).then_some(config),
        labels: args.labels.iter().cloned().collect(),
    };
    Ok(serde_json::to_vec(&request).expect("a request serialises"))
}

/// Validates `body` with the service's rules; the error names the reason code and what to do.
pub fn validate(
    body: &[u8],
    msg_id: &str,
    policy: &ValidationPolicy,
) -> Result<ValidatedRequest, CliError> {
    parse_request(body, Some(msg_id), policy).map_err(|rejection| {
        CliError::BadInput(format!(
            "request rejected ({}): {}",
            rejection.reason, rejection.message
        ))
    })
}

/// Publishes the request; returns whether JetStream saw it as a duplicate of an earlier one.
pub async fn publish(
    js: &jetstream::Context,
    body: Vec<u8>,
    msg_id: &str,
) -> Result<bool, CliError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let no_stream = |e: String| {
        CliError::Unavailable(format!(
            "cannot publish to {}: {e}; the stream {} must exist — start the vexxy stages (`cargo xtask up`) against this NATS",
            subjects::REQUESTED,
            subjects::PUBLIC_STREAM
        ))
    };
    let ack = js
        .publish_with_headers(subjects::REQUESTED, headers, body.into())
        .await
        .map_err(|e| no_stream(e.to_string()))?
        .await
        .map_err(|e| no_stream(e.to_string()))?;
    Ok(ack.duplicate)
}

/// A fresh message id for a submission without `--msg-id`.
pub fn new_msg_id() -> String {
    format!("vexxy-cli-{}", uuid::Uuid::new_v4())
}
