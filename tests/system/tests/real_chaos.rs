//! The kill -9 and Kubernetes API fault scenarios of `chaos.rs` against the real control plane:
//! a real kube-apiserver, etcd, controller-manager, scheduler and kwok, with kubesim only as
//! Kubescape (its storage API behind the real aggregator, node-agent and kubevuln for the real
//! pods). The stages authenticate as their own ServiceAccounts with the RBAC of `deploy/base`.
//! Same runner and checks as the kubesim tier (`chaos_support`): one outcome per job of the
//! expected kind, artifacts resolve, KV final, no sandbox left, no Deployment created twice, no
//! stage or control plane process exited on its own.
//!
//! A real API server has no fault rules, so its faults are real ones: `kill -9` of
//! kube-apiserver while deploy holds work (its Deployment POSTs in flight) and of etcd while
//! extract holds work, each started again on the same port and data. Kubescape's storage API is
//! kubesim's, so storage faults still come from its rules (5xx, 429, latency, dropped watches),
//! now through the real aggregator.
//!
//! Size: `VEXXY_CHAOS_REAL_JOBS` (30 by default). These run in `cargo xtask test` with the rest
//! of the real tier (about 10 minutes on 2 cores); `cargo xtask chaos` runs `chaos.rs` only. Figures go to
//! `$VEXXY_CHAOS_REPORT` like the others.

mod chaos_support;
mod cluster_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vexxy_harness::chaos::in_flight;
use vexxy_harness::realcluster::Component;

use chaos_support::{
    ChaosStack, Fault, Injected, Options, SharedOutcomes, finished, kill_each_stage_mid_work,
    kubesim_fault_args, kubesim_fault_fired, run_scenario, wait_mid_work, with_stack,
};
use cluster_support::ClusterKind;

/// How long kube-apiserver stays dead before it is started again (its start adds a few seconds).
const APISERVER_OUTAGE: Duration = Duration::from_secs(3);
/// How long etcd stays dead before it is started again.
const ETCD_OUTAGE: Duration = Duration::from_secs(3);

/// 1. `kill -9` of each stage process in turn while it holds work, then a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_each_stage_mid_work_against_a_real_api_server() -> Result<()> {
    run_scenario(
        "real-kill9",
        Options::new(ClusterKind::Real),
        |stack, _outcomes, _jobs| kill_each_stage_mid_work(stack),
    )
    .await
}

/// 2. kube-apiserver and etcd killed with `kill -9` mid-run and started again; Kubescape's
///    storage API (kubesim) answers 500s, 429s with Retry-After, slowly, and drops every watch
///    often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_and_etcd_killed_mid_run_neither_lose_nor_double_deploy() -> Result<()> {
    let rules = [
        r#"{"verb":"*","resource":"*","status":500,"rate":0.05}"#,
        r#"{"verb":"*","resource":"*","status":429,"rate":0.03}"#,
    ];
    let options = Options {
        kubesim_args: kubesim_fault_args(&rules),
        ..Options::new(ClusterKind::Real)
    };
    run_scenario("real-kube-faults", options, kill_control_plane_mid_run).await
}

/// The fault driver of scenario 2.
async fn kill_control_plane_mid_run(
    stack: Arc<tokio::sync::Mutex<ChaosStack>>,
    outcomes: SharedOutcomes,
    jobs: usize,
) -> Result<Injected> {
    let storage_faults = kubesim_fault_fired(
        &stack,
        "Kubescape's storage API (kubesim) answered with an injected fault",
    )
    .await?;
    let apiserver = kill_and_restart(
        &stack,
        &outcomes,
        "vexxy-deploy",
        Component::ApiServer,
        APISERVER_OUTAGE,
    )
    .await?;
    let etcd = kill_and_restart(
        &stack,
        &outcomes,
        "vexxy-extract",
        Component::Etcd,
        ETCD_OUTAGE,
    )
    .await?;
    let description = format!(
        "kube-apiserver kill -9 {}, back (ready) after {:.1} s; etcd kill -9 {}, back after {:.1} s; \
         storage API (kubesim through the aggregator): every call 15 ms slower, 5% 500, 3% 429 \
         (Retry-After 1 s), every storage watch dropped after 25 events or 3 s",
        apiserver.when(jobs),
        apiserver.outage.as_secs_f64(),
        etcd.when(jobs),
        etcd.outage.as_secs_f64(),
    );
    let extra: BTreeMap<String, String> = [
        ("apiserver_kills".to_string(), "1".to_string()),
        ("etcd_kills".to_string(), "1".to_string()),
    ]
    .into();
    let faults = vec![
        storage_faults,
        Fault::mid_work(
            format!("kill -9 of kube-apiserver while {} worked", apiserver.stage),
            apiserver.killed_at,
            apiserver.held.unwrap_or(0),
        ),
        Fault::mid_work(
            format!("kill -9 of etcd while {} worked", etcd.stage),
            etcd.killed_at,
            etcd.held.unwrap_or(0),
        ),
    ];
    Ok(Injected {
        description,
        extra,
        pids_must_stay: true,
        faults,
        // Two kills, each meant to strike while a stage holds work; one may miss its moment.
        timing_dependent_must_land: 1,
    })
}

/// One kill of a control plane component, as it happened.
struct Kill {
    stage: &'static str,
    /// `vexxy_in_flight` of the stage when the component was killed (`None`: it never held
    /// work within the wait, or its metrics did not answer).
    held: Option<u64>,
    outcomes_before: usize,
    killed_at: Instant,
    /// From the kill until the API server answered `/readyz` again.
    outage: Duration,
}

impl Kill {
    fn when(&self, jobs: usize) -> String {
        let held = match self.held {
            Some(count) if count > 0 => format!("while {} held {count} message(s)", self.stage),
            _ => format!("with {} idle", self.stage),
        };
        format!("{held} after {} of {jobs} outcomes", self.outcomes_before)
    }
}

/// Waits (bounded) until `stage` holds work, kills `component` with `kill -9`, keeps it down for
/// `outage` and starts it again on the same port and data.
async fn kill_and_restart(
    stack: &Arc<tokio::sync::Mutex<ChaosStack>>,
    outcomes: &SharedOutcomes,
    stage: &'static str,
    component: Component,
    outage: Duration,
) -> Result<Kill> {
    let (held, killed_at) = with_stack(stack, |s| {
        wait_mid_work(&s.fleet, stage, 0);
        let held = s.fleet.get(stage, 0)?.health_port().and_then(in_flight);
        let real = s
            .real
            .as_mut()
            .context("this scenario runs the real tier")?;
        real.kill(component)?;
        Ok((held, Instant::now()))
    })
    .await?;
    let outcomes_before = finished(outcomes);
    tokio::time::sleep(outage).await;
    with_stack(stack, |s| {
        let real = s
            .real
            .as_mut()
            .context("this scenario runs the real tier")?;
        real.start_again(component)
    })
    .await?;
    Ok(Kill {
        stage,
        held,
        outcomes_before,
        killed_at,
        outage: killed_at.elapsed(),
    })
}
