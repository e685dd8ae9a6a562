//! Job records under concurrent writers.

use vexxy_events::{FailureReason, JobState, Stage, subjects};
use vexxy_harness::NatsServer;
use vexxy_runtime::config::{Env, RuntimeConfig};
use vexxy_runtime::provision::provision;
use vexxy_runtime::status::{self, Created, Transition, Versioned};

use crate::support::*;

async fn bucket(nats: &NatsServer) -> async_nats::jetstream::kv::Store {
    let js = jetstream(nats).await;
    let config = RuntimeConfig::load(&Env::from_pairs(&[("NATS_URL", nats.url())])).unwrap();
    provision(&js, Stage::Deploy, &config.consumer)
        .await
        .unwrap();
    js.get_key_value(subjects::STATUS_BUCKET).await.unwrap()
}

/// Two writers append to the same record concurrently: every change survives (no lost update),
/// because each write is a compare-and-set and losers re-apply on the newer record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_are_serialised() {
    let nats = NatsServer::start().unwrap();
    let kv = bucket(&nats).await;
    let ticket = ticket("job-cas");
    let record = status::new_job(&ticket.request, "fp".into(), 7, Stage::InstallCheck);
    assert!(matches!(
        status::create(&kv, &record).await.unwrap(),
        Created::New(_)
    ));
    assert!(matches!(
        status::create(&kv, &record).await.unwrap(),
        Created::Existing(_)
    ));

    let writer = |marker: &'static str| {
        let kv = kv.clone();
        tokio::spawn(async move {
            for _ in 0..8 {
                let appended = move |current: &vexxy_events::JobStatus| {
                    let mut next = current.clone();
                    next.result = Some(format!(
                        "{}{marker}",
                        current.result.clone().unwrap_or_default()
                    ));
                    Some(next)
                };
                let outcome = status::transition(&kv, "job-cas", None, appended)
                    .await
                    .unwrap();
                assert!(matches!(outcome, Transition::Applied(_)));
            }
        })
    };
    let (a, b) = (writer("a"), writer("b"));
    a.await.unwrap();
    b.await.unwrap();
    let (record, revision) = status::read(&kv, "job-cas").await.unwrap().unwrap();
    let result = record.result.unwrap();
    assert_eq!(result.matches('a').count(), 8, "{result}");
    assert_eq!(result.matches('b').count(), 8, "{result}");
    assert_eq!(revision, 17, "one create and sixteen updates");
}

/// Two writers race to finish a job: exactly one final state wins and it is never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_state_is_never_overwritten() {
    let nats = NatsServer::start().unwrap();
    let kv = bucket(&nats).await;
    for round in 0..5 {
        let job_id = format!("job-race-{round}");
        let ticket = ticket(&job_id);
        let record = status::new_job(&ticket.request, "fp".into(), 1, Stage::InstallCheck);
        status::create(&kv, &record).await.unwrap();
        let completing = {
            let (kv, job_id) = (kv.clone(), job_id.clone());
            tokio::spawn(async move {
                status::transition(
                    &kv,
                    &job_id,
                    None,
                    status::completed(Stage::Enrich, Some("s3://b/k".into())),
                )
                .await
                .unwrap()
            })
        };
        let failing = {
            let (kv, job_id) = (kv.clone(), job_id.clone());
            tokio::spawn(async move {
                status::transition(
                    &kv,
                    &job_id,
                    None,
                    status::failed(Stage::Wait, FailureReason::AnalysisTimeout, "late".into()),
                )
                .await
                .unwrap()
            })
        };
        let outcomes = [completing.await.unwrap(), failing.await.unwrap()];
        let applied: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, Transition::Applied(_)))
            .collect();
        let refused: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, Transition::AlreadyFinal(_)))
            .collect();
        assert_eq!((applied.len(), refused.len()), (1, 1), "{outcomes:?}");
        let Transition::Applied(winner) = applied[0] else {
            unreachable!()
        };
        let (stored, _) = status::read(&kv, &job_id).await.unwrap().unwrap();
        assert_eq!(stored.state, winner.state);
        assert!(stored.state.is_final());

        // Any later writer, including "move on to the next stage", is refused.
        let late = status::transition(&kv, &job_id, None, status::moved_to(Stage::Extract))
            .await
            .unwrap();
        assert!(matches!(late, Transition::AlreadyFinal(_)));
        let (after, _) = status::read(&kv, &job_id).await.unwrap().unwrap();
        assert_eq!(after, stored);
    }
    // And stage never moves backwards on a running job.
    let ticket = ticket("job-forward");
    let record = status::new_job(&ticket.request, "fp".into(), 1, Stage::Extract);
    status::create(&kv, &record).await.unwrap();
    let back = status::transition(&kv, "job-forward", None, status::moved_to(Stage::Deploy))
        .await
        .unwrap();
    assert!(matches!(back, Transition::Unchanged(_)));
    assert_eq!(
        status::read(&kv, "job-forward")
            .await
            .unwrap()
            .unwrap()
            .0
            .state,
        JobState::Running
    );
}

/// A transition that starts from a record read earlier (no read of its own) never overwrites
/// what was written since: its compare-and-set names the old revision, fails, and the change is
/// re-applied to the newer record; a record that became final since is left alone. The
/// revision it returns is the one to chain the next transition from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_from_a_stale_record_re_reads_and_keeps_the_newer_write() {
    let nats = NatsServer::start().unwrap();
    let kv = bucket(&nats).await;
    let ticket = ticket("job-known");
    let record = status::new_job(&ticket.request, "fp".into(), 1, Stage::Deploy);
    let Created::New(created) = status::create(&kv, &record).await.unwrap() else {
        panic!("the record did not exist")
    };
    let (read, revision) = status::read(&kv, "job-known").await.unwrap().unwrap();
    assert_eq!(
        created,
        Versioned {
            status: read.clone(),
            revision
        }
    );

    // Up to date: applied in one write, at the next revision.
    let (moved, moved_revision) = status::transition_from(
        &kv,
        "job-known",
        Some(created),
        None,
        status::moved_to(Stage::Wait),
    )
    .await
    .unwrap();
    assert!(matches!(moved, Transition::Applied(_)), "{moved:?}");
    assert_eq!(moved_revision, revision + 1);

    // Someone else writes the record after our last write.
    let marked = |current: &vexxy_events::JobStatus| {
        let mut next = current.clone();
        next.result = Some("written-meanwhile".into());
        Some(next)
    };
    status::transition(&kv, "job-known", None, marked)
        .await
        .unwrap();

    // Starting from our (now stale) record: re-read, re-applied, the other write kept.
    let (extracted, extracted_revision) = status::transition_from(
        &kv,
        "job-known",
        Some(Versioned {
            status: moved.into_record(),
            revision: moved_revision,
        }),
        None,
        status::moved_to(Stage::Extract),
    )
    .await
    .unwrap();
    assert!(matches!(extracted, Transition::Applied(_)), "{extracted:?}");
    assert_eq!(extracted_revision, moved_revision + 2);
    let (stored, stored_revision) = status::read(&kv, "job-known").await.unwrap().unwrap();
    assert_eq!(stored_revision, extracted_revision);
    assert_eq!(stored.stage, Stage::Extract);
    assert_eq!(stored.result.as_deref(), Some("written-meanwhile"));

    // The job fails behind our back: a transition from the stale record is refused.
    status::transition(
        &kv,
        "job-known",
        None,
        status::failed(
            Stage::Extract,
            FailureReason::Internal,
            "failed meanwhile".into(),
        ),
    )
    .await
    .unwrap();
    let (late, _) = status::transition_from(
        &kv,
        "job-known",
        Some(Versioned {
            status: stored,
            revision: stored_revision,
        }),
        None,
        status::moved_to(Stage::Enrich),
    )
    .await
    .unwrap();
    assert!(matches!(late, Transition::AlreadyFinal(_)), "{late:?}");
    let (after, _) = status::read(&kv, "job-known").await.unwrap().unwrap();
    assert_eq!(after.state, JobState::Failed);
    assert_eq!(after.stage, Stage::Extract);
}
