//! Steps 1 and 2 of a message: its ticket, and the job claimed for this stage. How the ticket is
//! made depends on the stage's [`Input`], chosen when the worker was built.

use async_nats::jetstream::message::Message;
use vexxy_events::{FailureReason, JobStatus, PipelineTicket, subjects};

use super::{Failure, JobFacts, Worker, fail, skip_final, skip_handed_on, status_unavailable};
use crate::Handler;
use crate::input::{Input, decode_ticket};
use crate::intake::{self, Intake};
use crate::metrics::MessageOutcome;
use crate::publish::Delivery;
use crate::status::{self, StatusError, Transition, Versioned};

/// Steps 1 and 2: the ticket, and the job claimed for this stage (with the record as written,
/// for the status writes after the handler); or how the message was disposed of instead.
///
/// The job record comes back as last read or written here, with its revision: each status
/// write after the handler is a compare-and-set starting from it, so it needs no read of its
/// own unless someone else wrote the record in between (then it reads and re-applies, like any
/// lost race).
pub(super) async fn admit<H: Handler>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
) -> Result<(PipelineTicket, Option<Versioned>), MessageOutcome> {
    match worker.input {
        Input::Request => admit_request(worker, message, delivery).await,
        Input::Ticket => admit_ticket(worker, message, delivery).await,
    }
}

/// A request: intake validates it, creates the job record and says whether the job is already
/// final or owned by a later stage (step 2 for requests).
async fn admit_request<H: Handler>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
) -> Result<(PipelineTicket, Option<Versioned>), MessageOutcome> {
    let (ticket, known) = match intake::accept(&worker.status, &worker.policy, delivery).await {
        // A redelivered request whose job a later stage already owns (see step 2).
        Ok(Intake::Accepted { record, .. }) if status::is_past(&record.status, worker.stage) => {
            return Err(skip_handed_on(message, &record.status).await);
        }
        Ok(Intake::Accepted { ticket, record }) => (*ticket, Some(record)),
        Ok(Intake::AlreadyFinal(status)) => return Err(skip_final(message, &status).await),
        Ok(Intake::Rejected(rejection)) => {
            tracing::Span::current().record("job_id", rejection.job_id.as_deref().unwrap_or("-"));
            let outcome = if rejection.reason == FailureReason::DuplicateRequest {
                MessageOutcome::Duplicate
            } else {
                MessageOutcome::DeadLettered
            };
            tracing::warn!(reason = rejection.reason.as_str(), message = %rejection.message, "request rejected");
            let failure = Failure {
                facts: JobFacts {
                    job_id: rejection.job_id,
                    image_ref: rejection.image_ref,
                    image_digest: rejection.image_digest,
                    request_msg_id: delivery.msg_id.clone(),
                    labels: rejection.labels,
                },
                reason: rejection.reason,
                message: rejection.message,
                retryable: false,
                update_status: false,
            };
            return Err(fail(worker, message, delivery, failure, outcome).await);
        }
        Err(error) => return Err(status_unavailable(worker, message, delivery, error).await),
    };
    tracing::Span::current().record("job_id", ticket.request.job_id.as_str());
    Ok((ticket, known))
}

/// A hand-off: decoded while its job record is read, then step 2.
async fn admit_ticket<H: Handler>(
    worker: &Worker<H>,
    message: &Message,
    delivery: &Delivery,
) -> Result<(PipelineTicket, Option<Versioned>), MessageOutcome> {
    let mut known: Option<Versioned> = None;
    let (decoded, early_read) = decode_while_reading(worker, delivery).await;
    let ticket = match decoded {
        Ok(ticket) => ticket,
        Err((reason, problem)) => {
            let job_id = delivery.header(subjects::HEADER_JOB_ID);
            tracing::Span::current().record("job_id", job_id.as_deref().unwrap_or("-"));
            tracing::warn!(reason = reason.as_str(), %problem, "undecodable pipeline message");
            let failure = Failure {
                facts: JobFacts {
                    job_id,
                    request_msg_id: delivery.header(subjects::HEADER_REQUEST_MSG_ID),
                    ..JobFacts::default()
                },
                reason,
                message: format!(
                    "the {} stage received a hand-off it cannot read ({problem}); this is a \
                     bug or a message published by hand: resubmit the analysis request",
                    worker.stage
                ),
                retryable: true,
                update_status: true,
            };
            return Err(fail(
                worker,
                message,
                delivery,
                failure,
                MessageOutcome::DeadLettered,
            )
            .await);
        }
    };
    let job_id = ticket.request.job_id.clone();
    tracing::Span::current().record("job_id", job_id.as_str());

    // 2. Nothing to do for a job that already ended (intake checked this itself) or that a
    //    later stage already owns: this delivery is a stale copy whose hand-off was published
    //    before the crash that prevented its ack. Redoing it could contradict the later stage
    //    (wait would find the sandbox extract deleted and report a failure). Otherwise claim
    //    the job for this stage first, so that an older stage's stale delivery sees the claim.
    //    The claim starts from the record just read: usually the previous stage already moved
    //    the record here and the claim writes nothing.
    let read = match early_read {
        Some(EarlyRead {
            job_id: read_for,
            result,
        }) if read_for == job_id => result,
        // No job id header, or one naming another job than the ticket: the ticket decides.
        _ => status::read(&worker.status, &job_id).await,
    };
    match read {
        Ok(Some((status, _))) if status.state.is_final() => {
            return Err(skip_final(message, &status).await);
        }
        Ok(Some((status, _))) if status::is_past(&status, worker.stage) => {
            return Err(skip_handed_on(message, &status).await);
        }
        Ok(Some((status, revision))) => {
            let claim = status::transition_from(
                &worker.status,
                &job_id,
                Some(Versioned { status, revision }),
                None,
                status::moved_to(worker.stage),
            )
            .await;
            match claim {
                // Both only after a lost race: someone wrote the record since the read.
                Ok((Transition::AlreadyFinal(status), _)) => {
                    return Err(skip_final(message, &status).await);
                }
                Ok((Transition::Unchanged(status), _))
                    if status::is_past(&status, worker.stage) =>
                {
                    return Err(skip_handed_on(message, &status).await);
                }
                Ok((claimed, revision)) => {
                    known = Some(Versioned {
                        status: claimed.into_record(),
                        revision,
                    });
                }
                Err(error) => {
                    return Err(status_unavailable(worker, message, delivery, error).await);
                }
            }
        }
        Ok(None) => {}
        Err(error) => return Err(status_unavailable(worker, message, delivery, error).await),
    }
    Ok((ticket, known))
}

/// A job record read started from the job id header of a hand-off, before its ticket was
/// decoded.
struct EarlyRead {
    job_id: String,
    result: Result<Option<(JobStatus, u64)>, StatusError>,
}

/// Decodes the hand-off in `delivery` while its job record is being read.
///
/// The record read (a KV round trip) is on every hand-off's timed path and needs only the job
/// id, which the publisher also puts in a header; decoding needs only the payload. So the
/// request goes out first and the payload is decoded while it is in flight. The read is used
/// only when the header names the job the decoded ticket names (otherwise step 2 reads the
/// ticket's own record), and it is used exactly as a read after decoding would be: it has no
/// effect of its own, and it is still taken before the claim and the handler.
async fn decode_while_reading<H>(
    worker: &Worker<H>,
    delivery: &Delivery,
) -> (
    Result<PipelineTicket, (FailureReason, String)>,
    Option<EarlyRead>,
) {
    let Some(job_id) = delivery.header(subjects::HEADER_JOB_ID) else {
        return (decode_ticket(delivery), None);
    };
    // `join!` polls in order: the read sends its request and waits; then the decode runs.
    let (result, decoded) = futures::join!(status::read(&worker.status, &job_id), async {
        decode_ticket(delivery)
    });
    (decoded, Some(EarlyRead { job_id, result }))
}
