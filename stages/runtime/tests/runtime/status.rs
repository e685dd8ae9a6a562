//! Job records under concurrent writers.

use vexxy_events::{FailureReason, JobState, Stage, subjects};
use vexxy_harness::NatsServer;
use vexxy_runtime::config::{Env, RuntimeConfig};
use vexxy_runtime::provision::provision;
use vexxy_runtime::status::{self, Created, Transition};

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
