//! Turning a request message into a job (only the first stage reads requests).
//!
//! The request is validated by the events crate; then the job record is created in KV with a
//! create-if-absent, which is what tells the three cases apart when the job id already exists:
//!
//! * the record names this very message (same stream sequence): a redelivery of a request we
//!   already accepted, e.g. after a crash. Carry on with the job.
//! * same request fingerprint, different message: someone submitted the same request again.
//!   Rejected with `duplicate_request`; the existing job is not touched.
//! * different fingerprint: the job id was reused for another image or configuration.
//!   Rejected with `job_id_conflict`.

use async_nats::jetstream::kv;
use vexxy_events::{
    FailureReason, JobStatus, PipelineTicket, Rejection, Stage, ValidationPolicy, parse_request,
    request_fingerprint,
};

use crate::publish::Delivery;
use crate::status::{self, Created, StatusError, Versioned};

pub enum Intake {
    /// Work to do: the ticket for the first stage's handler, and the job record as it is now
    /// (so the record's next update needs no read).
    Accepted {
        ticket: Box<PipelineTicket>,
        record: Versioned,
    },
    /// A redelivery of a request whose job already finished: nothing left to do.
    AlreadyFinal(JobStatus),
    /// Not accepted; becomes a `failed` event and a dead letter.
    Rejected(Rejection),
}

/// Validates the request in `delivery` and creates (or finds) its job record.
pub async fn accept(
    kv: &kv::Store,
    policy: &ValidationPolicy,
    delivery: &Delivery,
) -> Result<Intake, StatusError> {
    let request = match parse_request(&delivery.payload, delivery.msg_id.as_deref(), policy) {
        Ok(request) => request,
        Err(rejection) => return Ok(Intake::Rejected(rejection)),
    };
    let fingerprint = request_fingerprint(&request);
    let record = status::new_job(
        &request,
        fingerprint.clone(),
        delivery.stream_sequence,
        Stage::InstallCheck,
    );
    let existing = match status::create(kv, &record).await? {
        Created::New(record) => {
            return Ok(Intake::Accepted {
                ticket: Box::new(first_ticket(request)),
                record,
            });
        }
        Created::Existing(existing) => existing,
    };
    if existing.status.request_sequence == delivery.stream_sequence {
        if existing.status.state.is_final() {
            return Ok(Intake::AlreadyFinal(existing.status));
        }
        return Ok(Intake::Accepted {
            ticket: Box::new(first_ticket(request)),
            record: existing,
        });
    }
    let existing = existing.status;
    let (reason, message) = if existing.request_fingerprint == fingerprint {
        (
            FailureReason::DuplicateRequest,
            format!(
                "job {} already exists for this request (state {:?}, created {} from message {} \
                 of {}); this new submission was not started. Watch that job's events, or submit \
                 with a different job_id to analyse the image again",
                existing.job_id,
                existing.state,
                existing.created_at.to_rfc3339(),
                existing.request_sequence,
                delivery.stream
            ),
        )
    } else {
        (
            FailureReason::JobIdConflict,
            format!(
                "job id {} is already used by a different request (image {}@{}); choose a new \
                 job_id for this image or configuration",
                existing.job_id, existing.image_ref, existing.image_digest
            ),
        )
    };
    Ok(Intake::Rejected(Rejection {
        reason,
        message,
        job_id: Some(request.job_id.clone()),
        image_ref: Some(request.image_ref.clone()),
        image_digest: Some(request.image_digest.clone()),
        labels: request.labels.clone(),
    }))
}

fn first_ticket(request: vexxy_events::ValidatedRequest) -> PipelineTicket {
    PipelineTicket {
        request,
        timings: Vec::new(),
        sandbox: None,
        observation: None,
        evidence: None,
    }
}
