//! Fault injection with many jobs in flight: vexxy must lose nothing, report nothing twice and
//! leave no sandbox behind while its processes, broker, object store and Kubernetes API misbehave.
//!
//! Every scenario runs the five stage binaries (one or two replicas each) against a real
//! nats-server (or a three-node cluster), s3s-fs and the kubesim binary, publishes `Scale::jobs`
//! requests at once, injects its faults while the jobs are moving, and then makes the checks of
//! `chaos_support` (one outcome per job of the expected kind, artifacts resolve, KV final, no
//! sandbox left or created twice, no stage died on its own). The same scenario runner drives
//! `real_chaos.rs` against the real control plane.
//!
//! Sizes come from `VEXXY_CHAOS_JOBS` / `VEXXY_CHAOS_S3_OUTAGE` (40 jobs / 10 s by default, for a
//! direct `cargo test`; `cargo xtask chaos`, which CI runs, sets 200 jobs / 30 s; `cargo xtask
//! test` leaves these tests out) and every run appends its figures to `$VEXXY_CHAOS_REPORT` (see
//! `vexxy_harness::chaos::Figures`).

mod chaos_support;
mod cluster_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use vexxy_events::subjects;
use vexxy_harness::chaos::{Scale, in_flight};
use vexxy_harness::stack::STAGES;

use chaos_support::{
    Broker, ChaosStack, Fault, Injected, MID_WORK_KILLS_MUST_LAND, MID_WORK_TIMEOUT, Options,
    finished, kill_during_shutdown, kill_each_stage_mid_work, kubesim_fault_args,
    kubesim_fault_fired, run_scenario, wait_for_outcomes, with_stack,
};
use cluster_support::ClusterKind;

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 1. `kill -9` of each stage process in turn while it holds work, then a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_each_stage_mid_work_loses_and_duplicates_nothing() -> Result<()> {
    run_scenario(
        "kill9",
        Options::new(ClusterKind::Sim),
        |stack, _outcomes, _jobs| kill_each_stage_mid_work(stack),
    )
    .await
}

/// 2. nats-server stopped and started again (same port, same file store) mid-run: the stages
///    reconnect and rebuild their consumers without being restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_run_the_stages_reconnect_without_a_restart() -> Result<()> {
    run_scenario("nats-restart", Options::new(ClusterKind::Sim), |stack, outcomes, jobs| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        wait_for_outcomes(&outcomes, (jobs / 4).max(1), deadline).await;
        let before = finished(&outcomes);
        let stopped = with_stack(&stack, |s| match &mut s.broker {
            Broker::Single(server) => server.stop().map(|()| Instant::now()),
            Broker::Cluster(_) => bail!("this scenario runs one server"),
        })
        .await?;
        // The deliberate outage.
        tokio::time::sleep(Duration::from_secs(3)).await;
        with_stack(&stack, |s| match &mut s.broker {
            Broker::Single(server) => server.start_again(),
            Broker::Cluster(_) => bail!("this scenario runs one server"),
        })
        .await?;
        Ok(Injected {
            description: format!(
                "nats-server stopped for 3 s and restarted (file store) after {before} of {jobs} outcomes"
            ),
            extra: BTreeMap::new(),
            pids_must_stay: true,
            faults: vec![Fault::certain("nats-server stopped", stopped)],
            timing_dependent_must_land: 0,
        })
    })
    .await
}

/// 3. The object store is down for `Scale::s3_outage` while jobs are extracting and enriching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_mid_run_retries_and_reports_nothing_half_written() -> Result<()> {
    let outage = Scale::from_env()?.s3_outage;
    run_scenario("s3-outage", Options::new(ClusterKind::Sim), |stack, outcomes, jobs| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        wait_for_outcomes(&outcomes, (jobs / 5).max(1), deadline).await;
        let before = finished(&outcomes);
        let stopped = with_stack(&stack, |s| s.s3.stop().map(|()| Instant::now())).await?;
        tokio::time::sleep(outage).await;
        let during = finished(&outcomes) - before;
        with_stack(&stack, |s| s.s3.start_again()).await?;
        Ok(Injected {
            description: format!(
                "s3s-fs down for {} s after {before} of {jobs} outcomes ({during} outcomes arrived during the outage)",
                outage.as_secs()
            ),
            extra: BTreeMap::new(),
            pids_must_stay: false,
            faults: vec![Fault::certain("s3s-fs stopped", stopped)],
            timing_dependent_must_land: 0,
        })
    })
    .await
}

/// 4. kubesim answers with 500s, 429s with Retry-After, 409 conflicts on creates and updates,
///    slowly, and drops every watch often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_faults_neither_lose_nor_double_deploy() -> Result<()> {
    let rules = [
        r#"{"verb":"*","resource":"*","status":500,"rate":0.05}"#,
        r#"{"verb":"*","resource":"*","status":429,"rate":0.03}"#,
        r#"{"verb":"create","resource":"deployments.apps","status":409,"rate":0.2}"#,
        r#"{"verb":"create","resource":"deployments.apps","status":500,"rate":0.1}"#,
        r#"{"verb":"delete","resource":"deployments.apps","status":500,"rate":0.2}"#,
        r#"{"verb":"patch","resource":"*","status":409,"rate":0.1}"#,
        r#"{"verb":"update","resource":"*","status":409,"rate":0.1}"#,
    ];
    let options = Options {
        kubesim_args: kubesim_fault_args(&rules),
        ..Options::new(ClusterKind::Sim)
    };
    run_scenario("kube-faults", options, |stack, _outcomes, _jobs| async move {
        let fired = kubesim_fault_fired(&stack, "kubesim answered with an injected fault").await?;
        Ok(Injected {
            description: "every API call 15 ms slower; 5% 500, 3% 429 (Retry-After 1 s); \
                          Deployment create 20% 409 + 10% 500, delete 20% 500; 10% 409 on patch/update; \
                          every watch dropped after 25 events or 3 s"
                .to_string(),
            extra: BTreeMap::new(),
            pids_must_stay: false,
            faults: vec![fired],
            timing_dependent_must_land: 0,
        })
    })
    .await
}

/// 5. Two replicas of every stage share the work; one replica of each stage is killed with
///    `kill -9` in the middle of its graceful shutdown (after SIGTERM, before it finished).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_a_kill_during_graceful_shutdown_give_one_result_per_job() -> Result<()> {
    let options = Options {
        replicas: 2,
        ..Options::new(ClusterKind::Sim)
    };
    run_scenario(
        "replicas-shutdown-kill",
        options,
        |stack, outcomes, jobs| async move {
            // Poll every stage's replica 0 and strike whichever holds work first, so each is
            // caught with messages in hand (its graceful shutdown then waits for them).
            let mut pending: Vec<&'static str> = STAGES.to_vec();
            let mut faults = Vec::new();
            let deadline = Instant::now() + MID_WORK_TIMEOUT * 2;
            while !pending.is_empty() && Instant::now() < deadline && finished(&outcomes) < jobs {
                let busy = with_stack(&stack, |s| {
                    Ok(pending.iter().position(|stage| {
                        s.fleet
                            .get(stage, 0)
                            .ok()
                            .and_then(|replica| replica.health_port())
                            .and_then(in_flight)
                            .is_some_and(|count| count > 0)
                    }))
                })
                .await?;
                match busy {
                    Some(index) => {
                        let stage = pending.remove(index);
                        faults.push(
                            with_stack(&stack, |s| kill_during_shutdown(&mut s.fleet, stage))
                                .await?,
                        );
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            // Stages never seen busy are still put through the same SIGTERM + kill -9.
            for stage in pending {
                faults.push(
                    with_stack(&stack, |s| kill_during_shutdown(&mut s.fleet, stage)).await?,
                );
            }
            let caught = faults.iter().filter(|fault| fault.landed).count();
            Ok(Injected {
                description: format!(
                    "2 replicas per stage; replica 0 of each stage sent SIGTERM, then kill -9 100 ms later ({caught} of 5 holding work and still in their graceful shutdown when killed), then restarted"
                ),
                extra: [("replicas".to_string(), "2".to_string())].into(),
                pids_must_stay: false,
                faults,
                timing_dependent_must_land: MID_WORK_KILLS_MUST_LAND,
            })
        },
    )
    .await
}

/// 6. A three-node JetStream cluster with every stream and the KV bucket replicated three
///    times; one node is killed (`kill -9`) mid-run and brought back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_node_killed_mid_run_loses_and_duplicates_nothing() -> Result<()> {
    let options = Options {
        nats_cluster: true,
        ..Options::new(ClusterKind::Sim)
    };
    run_scenario("nats-cluster-node-kill", options, |stack, outcomes, jobs| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        wait_for_outcomes(&outcomes, (jobs / 4).max(1), deadline).await;
        let before = finished(&outcomes);
        let node = with_stack(&stack, |s| match &s.broker {
            Broker::Cluster(cluster) => Ok(cluster.name(0).to_string()),
            Broker::Single(_) => bail!("this scenario runs a cluster"),
        })
        .await?;
        let replicated = replication_of(&stack, &node).await?;
        let killed = with_stack(&stack, |s| match &mut s.broker {
            Broker::Cluster(cluster) => cluster.kill(0).map(|()| Instant::now()),
            Broker::Single(_) => bail!("this scenario runs a cluster"),
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        with_stack(&stack, |s| match &mut s.broker {
            Broker::Cluster(cluster) => cluster.start_again(0),
            Broker::Single(_) => bail!("this scenario runs a cluster"),
        })
        .await?;
        // Still R3 with the node back: nothing was scaled down to get through the kill.
        replication_of(&stack, &node).await?;
        Ok(Injected {
            description: format!(
                "3-node cluster, streams and KV R3; node {node} killed -9 after {before} of {jobs} outcomes, back after 3 s"
            ),
            extra: [("replicas_of_the_killed_node".to_string(), replicated.join(" "))].into(),
            pids_must_stay: false,
            faults: vec![Fault::certain(
                format!("kill -9 of nats node {node}, a replica of {}", replicated.join(", ")),
                killed,
            )],
            timing_dependent_must_land: 0,
        })
    })
    .await
}

/// Reads back every stream vexxy uses (the KV bucket's included) and fails unless each is
/// replicated three times with `node` in its replica set (leader or follower). Returns, per
/// stream, `name:leader|follower`.
async fn replication_of(
    stack: &Arc<tokio::sync::Mutex<ChaosStack>>,
    node: &str,
) -> Result<Vec<String>> {
    let client = { stack.lock().await.broker_client().await? };
    let js = async_nats::jetstream::new(client);
    let mut held = Vec::new();
    let bucket_stream = format!("KV_{}", subjects::STATUS_BUCKET);
    for name in [
        subjects::PUBLIC_STREAM,
        subjects::PIPELINE_STREAM,
        subjects::DEAD_LETTER_STREAM,
        bucket_stream.as_str(),
    ] {
        let info = stream_info(&js, name).await?;
        ensure!(
            info.config.num_replicas == 3,
            "stream {name} has {} replica(s), the scenario claims 3",
            info.config.num_replicas
        );
        let cluster = info
            .cluster
            .as_ref()
            .with_context(|| format!("stream {name} reports no cluster placement"))?;
        let role = if cluster.leader.as_deref() == Some(node) {
            "leader"
        } else if cluster.replicas.iter().any(|peer| peer.name == node) {
            "follower"
        } else {
            bail!(
                "node {node} holds no replica of stream {name} (leader {:?}, followers {:?})",
                cluster.leader,
                cluster
                    .replicas
                    .iter()
                    .map(|peer| &peer.name)
                    .collect::<Vec<_>>()
            );
        };
        held.push(format!("{name}:{role}"));
    }
    Ok(held)
}

/// The info of stream `name`, asked again for up to 30 s while the JetStream API answers with an
/// error or the stream reports no leader: right after a node rejoins, the meta group and the stream's own group may still be
/// electing a leader, and such an answer says nothing about the replication.
async fn stream_info(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Result<async_nats::jetstream::stream::Info> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = match js.get_stream(name).await {
            Ok(mut stream) => stream.info().await.cloned().map_err(anyhow::Error::from),
            Err(error) => Err(anyhow::Error::from(error)),
        };
        let settled = |info: &async_nats::jetstream::stream::Info| {
            info.cluster.as_ref().is_some_and(|c| c.leader.is_some())
        };
        match result {
            Ok(info) if settled(&info) || Instant::now() >= deadline => return Ok(info),
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("cannot read the info of stream {name}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
