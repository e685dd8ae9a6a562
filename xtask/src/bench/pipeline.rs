//! The benchmarks that run the whole pipeline as processes: end-to-end overhead, sustained
//! throughput, Kubernetes API requests per analysis, analyses held by one wait process, and
//! stage start-up time.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use vexxy_events::Stage;
use vexxy_harness::stack::{self, STAGES};
use vexxy_harness::{ChildProcess, free_port, http_get_status};

use super::stack::{BenchStack, Outcomes, Seen, http, stage_env, submit};
use super::{Figure, percentile};
use crate::machine;

/// Window of the end-to-end and throughput analyses: the policy minimum (it cannot be 0).
pub const MIN_WINDOW_SECONDS: u64 = 1;

/// `analyses` analyses, `concurrency` at a time (closed loop): latency from publishing the
/// request to the completed event, minus the 1 s window.
pub async fn end_to_end(stack: &BenchStack, analyses: usize, concurrency: usize) -> Result<Figure> {
    let js = jetstream::new(stack.nats.client().await?);
    let outcomes = Arc::new(Outcomes::subscribe(&js, "bench-e2e").await?);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    // The workers start spread over one window, not together: every analysis takes the same
    // window, so workers started at one instant stay in step for the whole run and their
    // analyses all leave the window at once, each then queueing behind the others' extract and
    // enrich. That burst is made by the bench, not by the pipeline; spread out, the same load
    // (`concurrency` analyses per window) arrives evenly.
    let stagger = Duration::from_secs(MIN_WINDOW_SECONDS) / concurrency.max(1) as u32;
    for worker in 0..concurrency {
        let (js, outcomes, next) = (js.clone(), outcomes.clone(), next.clone());
        workers.spawn(async move {
            tokio::time::sleep(stagger * worker as u32).await;
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= analyses {
                    return Ok::<_, anyhow::Error>(samples);
                }
                let job = format!("bench-e2e-{i}");
                let (started, started_wall) = (Instant::now(), Utc::now());
                submit(&js, &job, MIN_WINDOW_SECONDS).await?;
                let seen = outcomes
                    .wait_for(&job, Duration::from_secs(120))
                    .await
                    .with_context(|| format!("{job} had no outcome within 120 s"))?;
                anyhow::ensure!(seen.completed, "{job} failed; see the stage logs");
                samples.push((seen.at - started, path_steps(started_wall, &seen)));
            }
        });
    }
    let mut latencies = Vec::new();
    let mut steps = PathSteps::default();
    while let Some(result) = workers.join_next().await {
        for (latency, sample_steps) in result?? {
            latencies.push(latency.as_secs_f64() * 1e3 - (MIN_WINDOW_SECONDS * 1000) as f64);
            for (step, ms) in sample_steps {
                steps.push(step, ms);
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let steps_p50 = steps.p50();
    let p50 = percentile(&latencies, 0.5);
    Ok(Figure {
        name: "end-to-end overhead per analysis".into(),
        target: "p50 ≤ 20 ms".into(),
        met: p50 <= 20.0,
        summary: format!(
            "p50 {p50:.1} ms, p99 {:.1} ms over {} analyses (window 1 s subtracted); p50 per step: {}",
            percentile(&latencies, 0.99),
            latencies.len(),
            steps_p50
                .iter()
                .map(|(step, ms)| format!("{step} {ms:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        figures: json!({"analyses": latencies.len(), "concurrency": concurrency, "window_subtracted_ms": MIN_WINDOW_SECONDS * 1000,
                        "p50_ms": p50, "p90_ms": percentile(&latencies, 0.9), "p99_ms": percentile(&latencies, 0.99),
                        "max_ms": latencies.last().copied().unwrap_or(0.0),
                        "path_step_p50_ms": steps_p50.iter().map(|(step, ms)| json!({"step": step, "p50_ms": ms})).collect::<Vec<_>>()}),
    })
}

/// User + system CPU seconds each process has used so far, by name.
fn cpu_seconds(processes: &[(String, u32)]) -> BTreeMap<String, f64> {
    processes
        .iter()
        .filter_map(|(name, pid)| Some((name.clone(), machine::process_cpu_seconds(*pid)?)))
        .collect()
}

/// One analysis's path, step by step in pipeline order: each stage's handler (wait's minus the
/// window) and each gap between one stage finishing and the next starting — the broker hop, the
/// next stage's status read and claim — from the stages' own timestamps (all on this machine's
/// clock), plus the request's way in and the completed event's way out.
fn path_steps(submitted_at: DateTime<Utc>, seen: &Seen) -> Vec<(String, f64)> {
    let ms = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1e3
    };
    let mut steps = Vec::new();
    let mut previous = ("request", submitted_at);
    for timing in &seen.timings {
        let stage = timing.stage.as_str();
        steps.push((
            format!("{} → {stage}", previous.0),
            ms(previous.1, timing.started_at),
        ));
        let mut handler = ms(timing.started_at, timing.finished_at);
        if timing.stage == Stage::Wait {
            handler -= (MIN_WINDOW_SECONDS * 1000) as f64;
        }
        steps.push((stage.to_string(), handler));
        previous = (stage, timing.finished_at);
    }
    if !seen.timings.is_empty() {
        steps.push((
            format!("{} → subscriber", previous.0),
            ms(previous.1, seen.at_wall),
        ));
    }
    steps
}

/// Samples per step, keeping the order steps were first seen in.
#[derive(Default)]
struct PathSteps(Vec<(String, Vec<f64>)>);

impl PathSteps {
    fn push(&mut self, step: String, ms: f64) {
        match self.0.iter_mut().find(|(known, _)| *known == step) {
            Some((_, samples)) => samples.push(ms),
            None => self.0.push((step, vec![ms])),
        }
    }

    fn p50(self) -> Vec<(String, f64)> {
        self.0
            .into_iter()
            .map(|(step, mut samples)| {
                samples.sort_by(|a, b| a.total_cmp(b));
                (step, percentile(&samples, 0.5))
            })
            .collect()
    }
}

/// `analyses` requests published at once; completions per second.
pub async fn throughput(stack: &BenchStack, analyses: usize) -> Result<Figure> {
    let js = jetstream::new(stack.nats.client().await?);
    let outcomes = Outcomes::subscribe(&js, "bench-throughput").await?;
    let cpu_before = cpu_seconds(&stack.processes());
    let machine_before = machine::cpu_times();
    let started = Instant::now();
    let mut publishes = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let js = js.clone();
        publishes.spawn(async move {
            for i in (chunk..analyses).step_by(8) {
                submit(&js, &format!("bench-tput-{i}"), MIN_WINDOW_SECONDS).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = publishes.join_next().await {
        result??;
    }
    let published = started.elapsed();
    let arrived = outcomes
        .wait_count(analyses, Duration::from_secs(900))
        .await;
    let cpu_after = cpu_seconds(&stack.processes());
    let machine_after = machine::cpu_times();
    let seen = outcomes.seen.lock().expect("not poisoned").clone();
    let failed = seen.values().filter(|s| !s.completed).count();
    // CPU each process used from the first request to the last outcome, per analysis.
    let cpu_ms_per_analysis: BTreeMap<String, f64> = cpu_after
        .iter()
        .filter_map(|(name, after)| {
            let before = cpu_before.get(name)?;
            Some((name.clone(), (after - before) * 1e3 / analyses as f64))
        })
        .collect();
    let mut done: Vec<f64> = seen
        .values()
        .map(|s| (s.at - started).as_secs_f64())
        .collect();
    done.sort_by(|a, b| a.total_cmp(b));
    anyhow::ensure!(
        arrived == analyses,
        "only {arrived} of {analyses} analyses finished within 900 s"
    );
    let total = done.last().copied().unwrap_or(0.0);
    // Steady state: between the 10th and the 90th percentile completion.
    let (low, high) = (percentile(&done, 0.1), percentile(&done, 0.9));
    let steady = (0.8 * analyses as f64) / (high - low).max(1e-9);
    let overall = analyses as f64 / total;
    let cpu_ms_total: f64 = cpu_ms_per_analysis.values().sum();
    // Whether the run was short of CPU: the stack's share of the machine's busy time, and the
    // time the machine's cores stood idle meanwhile (a run slower than its CPU explains shows
    // idle cores, or busy time that is not the stack's).
    let stack_cpu_s = cpu_ms_total * analyses as f64 / 1e3;
    let machine_cpu = machine_before
        .zip(machine_after)
        .map(|(before, after)| after.since(&before));
    let machine_summary = machine_cpu.as_ref().map_or(String::new(), |cpu| {
        format!(
            "; machine meanwhile: {:.1} s busy ({stack_cpu_s:.1} s of it the stack's), {:.1} s idle",
            cpu.busy_s, cpu.idle_s
        )
    });
    Ok(Figure {
        name: "sustained analyses per second (5 stages + kubesim)".into(),
        target: "≥ 200/s".into(),
        met: steady >= 200.0 && failed == 0,
        summary: format!(
            "{steady:.0}/s steady ({overall:.0}/s overall, {analyses} analyses, {failed} failed); CPU per analysis {cpu_ms_total:.1} ms: {}{machine_summary}",
            cpu_ms_per_analysis
                .iter()
                .map(|(name, ms)| format!("{} {ms:.1}", name.trim_start_matches("vexxy-")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        figures: json!({"analyses": analyses, "failed": failed, "published_in_s": published.as_secs_f64(),
                        "last_outcome_s": total, "overall_per_s": overall, "steady_per_s": steady,
                        "cpu_ms_per_analysis": cpu_ms_per_analysis,
                        "cpu_ms_per_analysis_total": cpu_ms_total,
                        "machine_cpu": machine_cpu.map(|cpu| json!({
                            "busy_s": cpu.busy_s, "idle_s": cpu.idle_s, "stack_s": stack_cpu_s,
                            "other_busy_s": (cpu.busy_s - stack_cpu_s).max(0.0)}))}),
    })
}

/// wait's default `VEXXY_WAIT_GRACE`, which the bench stacks keep.
const WAIT_GRACE_SECONDS: u64 = 600;

/// Runs `analyses` analyses with a `window_seconds` window on a fresh stack and counts kubesim's
/// requests twice: when this run's last outcome has arrived, and again once every run sharing
/// `all_finished` has (so that runs with different windows are also compared over the same
/// stretch of time: requests a stack sends per unit of time — watch renewals, janitor sweeps —
/// then weigh the same in both, and only what depends on the window differs).
pub async fn api_requests(
    stack: &BenchStack,
    analyses: usize,
    window_seconds: u64,
    all_finished: Arc<tokio::sync::Barrier>,
) -> Result<Value> {
    let own = api_requests_until_done(stack, analyses, window_seconds).await;
    // Reached on every path, or a failed run would leave the others waiting for ever.
    all_finished.wait().await;
    let mut figures = own?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    figures["same_period"] = request_figures(&stack.counters()?, analyses);
    Ok(figures)
}

async fn api_requests_until_done(
    stack: &BenchStack,
    analyses: usize,
    window_seconds: u64,
) -> Result<Value> {
    let js = jetstream::new(stack.nats.client().await?);
    let outcomes = Outcomes::subscribe(&js, &format!("bench-api-{window_seconds}")).await?;
    stack.reset_counters()?;
    let started = Instant::now();
    for i in 0..analyses {
        submit(
            &js,
            &format!("bench-api-{window_seconds}-{i}"),
            window_seconds,
        )
        .await?;
    }
    // wait decides every job by its deadline (window + VEXXY_WAIT_GRACE, 10 min by default); a
    // window longer than node-agent's first save takes wait's rule B and may need up to
    // VEXXY_LEARNING_SCAN_BOUND (315 s) after completion, so a shorter bound would cut real runs.
    let arrived = outcomes
        .wait_count(
            analyses,
            Duration::from_secs(window_seconds + WAIT_GRACE_SECONDS + 60),
        )
        .await;
    anyhow::ensure!(
        arrived == analyses,
        "{window_seconds}s window: only {arrived} of {analyses} finished"
    );
    let failed = outcomes
        .seen
        .lock()
        .expect("not poisoned")
        .values()
        .filter(|s| !s.completed)
        .count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut figures = request_figures(&stack.counters()?, analyses);
    figures["window_s"] = json!(window_seconds);
    figures["analyses"] = json!(analyses);
    figures["failed"] = json!(failed);
    figures["elapsed_s"] = json!(started.elapsed().as_secs_f64());
    Ok(figures)
}

/// kubesim's counters as requests per analysis, with shared watches and lists split out.
fn request_figures(counters: &Value, analyses: usize) -> Value {
    let total = counters["total"].as_u64().unwrap_or(0);
    let shared = watches_and_lists(&counters["requests"]);
    json!({"total_requests": total, "per_analysis": total as f64 / analyses as f64,
           "watch_and_list_requests": shared,
           "per_analysis_without_watch_and_list": (total - shared) as f64 / analyses as f64,
           "requests": counters["requests"]})
}

/// WATCH and LIST requests: stack-wide by nature (wait's four shared watches and their renewals,
/// the janitor's sweeps), so they grow with wall-clock time rather than with the jobs.
fn watches_and_lists(requests: &Value) -> u64 {
    requests
        .as_object()
        .map(|resources| {
            resources
                .values()
                .map(|verbs| {
                    verbs["watch"].as_u64().unwrap_or(0) + verbs["list"].as_u64().unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The resources wait watches, as kubesim's counters name them.
const WAIT_WATCHES: [&str; 4] = [
    "pods",
    "deployments.apps",
    "containerprofiles.spdx.softwarecomposition.kubescape.io",
    "openvulnerabilityexchangecontainers.spdx.softwarecomposition.kubescape.io",
];

/// `analyses` analyses with a long window submitted at once; waits until the wait stage holds
/// them all, then reads the wait process's RSS and kubesim's watch counters.
pub async fn wait_in_flight(stack: &mut BenchStack, analyses: usize) -> Result<Figure> {
    let js = jetstream::new(stack.nats.client().await?);
    let mut publishes = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let js = js.clone();
        publishes.spawn(async move {
            for i in (chunk..analyses).step_by(8) {
                submit(&js, &format!("bench-hold-{i}"), 3600).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = publishes.join_next().await {
        result??;
    }
    let wait = stack
        .pipeline
        .stage("vexxy-wait")
        .context("no wait stage")?;
    let port = wait.health_port().context("wait has no health port")?;
    let pid = wait.process.pid();
    let started = Instant::now();
    let mut held = 0.0;
    while started.elapsed() < Duration::from_secs(600) {
        let metrics = http(port, "GET", "/metrics")?;
        held = metrics
            .lines()
            .find(|line| line.starts_with("vexxy_in_flight"))
            .and_then(|line| line.split_whitespace().last())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        if held >= analyses as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reached_after = started.elapsed().as_secs_f64();
    // Let the watches settle on the full set before reading memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    // A figure that cannot be read fails the row: 0 MB would count as "met".
    let kb = |key: &str| -> Result<u64> {
        status
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/status of wait has no {key} line"))
    };
    let (rss_mb, hwm_mb) = (kb("VmRSS:")? as f64 / 1024.0, kb("VmHWM:")? as f64 / 1024.0);
    let counters = stack.counters()?;
    let per_resource = |key: &str| -> BTreeMap<String, u64> {
        counters[key]
            .as_object()
            .map(|resources| {
                resources
                    .iter()
                    .filter_map(|(resource, n)| Some((resource.clone(), n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The target is about how many watches the process holds, so it is judged on the most open
    // at once; a watch the server ended (it closes one whose client fell behind, like the
    // apiserver) is re-opened and counts as a second request, not a second watch.
    let peak_open = per_resource("peak_open_watches");
    let closed_behind = per_resource("watches_closed_behind");
    let watch_requests: BTreeMap<String, u64> = counters["requests"]
        .as_object()
        .map(|resources| {
            resources
                .iter()
                .filter_map(|(resource, verbs)| Some((resource.clone(), verbs["watch"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    // The four kinds wait watches (stages/wait/src/view.rs); it is the only stage that watches.
    let one_watch_per_kind = WAIT_WATCHES
        .iter()
        .all(|kind| peak_open.get(*kind) == Some(&1))
        && peak_open.len() == WAIT_WATCHES.len();
    Ok(Figure {
        name: "in-flight analyses held by one wait process".into(),
        target: "5,000 at ≤ 200 MB RSS, one watch per resource kind".into(),
        met: held >= analyses as f64 && hwm_mb <= 200.0 && one_watch_per_kind,
        summary: format!(
            "{held:.0} held, RSS {rss_mb:.0} MB (peak {hwm_mb:.0} MB), most watches open at once {peak_open:?} (watch requests {watch_requests:?}, closed by the server for falling behind {closed_behind:?})"
        ),
        figures: json!({"submitted": analyses, "held": held, "reached_after_s": reached_after,
                        "rss_mb": rss_mb, "peak_rss_mb": hwm_mb,
                        "peak_open_watches_by_resource": peak_open,
                        "watch_requests_by_resource": watch_requests,
                        "watches_closed_behind_by_resource": closed_behind}),
    })
}

/// Spawns each stage binary `runs` times against a running broker and cluster; time from
/// spawn to the first `/readyz` 200 (polled every millisecond).
pub fn start_to_ready(stack: &BenchStack, runs: usize) -> Result<Figure> {
    let endpoints = stack.endpoints();
    let mut per_stage = BTreeMap::new();
    let mut all = Vec::new();
    for name in STAGES {
        let mut samples = Vec::new();
        for run in 0..runs {
            let port = free_port();
            let health_file = stack.dir.path().join(format!("ready-{name}-{run}.addr"));
            let mut command = Command::new(stack::binary(name)?);
            command.env_clear();
            for inherited in ["PATH", "HOME", "TMPDIR"] {
                if let Some(value) = std::env::var_os(inherited) {
                    command.env(inherited, value);
                }
            }
            command.envs(stage_env(&endpoints, &health_file));
            command.env("VEXXY_HEALTH_ADDR", format!("127.0.0.1:{port}"));
            let log = stack.dir.path().join(format!("ready-{name}-{run}.log"));
            let started = Instant::now();
            let mut process = ChildProcess::spawn(name, command, &log)?;
            loop {
                if http_get_status(port, "/readyz") == Some(200) {
                    break;
                }
                anyhow::ensure!(
                    process.is_running(),
                    "{name} exited during start; see {}",
                    log.display()
                );
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(30),
                    "{name} not ready in 30 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            samples.push(started.elapsed().as_secs_f64() * 1e3);
            process.terminate(Duration::from_secs(10))?;
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        all.extend(samples.iter().copied());
        per_stage.insert(
            name,
            json!({"p50_ms": percentile(&samples, 0.5), "max_ms": samples.last()}),
        );
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let (p50, max) = (percentile(&all, 0.5), all.last().copied().unwrap_or(0.0));
    Ok(Figure {
        name: "stage process start to ready".into(),
        target: "≤ 100 ms".into(),
        met: max <= 100.0,
        summary: format!("p50 {p50:.0} ms, max {max:.0} ms ({runs} starts per stage)"),
        figures: json!({"runs_per_stage": runs, "p50_ms": p50, "max_ms": max, "per_stage": per_stage}),
    })
}
