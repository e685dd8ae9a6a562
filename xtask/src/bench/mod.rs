//! `cargo xtask bench`: vexxy's overhead measured against the physical floor, every benchmark in
//! one run so ratios are taken side by side. Prints a table and writes `target/bench/report.json`.
//! These are benchmarks, not tests: nothing fails on a time (the command fails only when a
//! benchmark cannot run). See docs/BENCHMARKS.md for what each one measures and the results.
//!
//! * [`stack`]: a release-built stack (nats-server, `file://` store, zero-delay kubesim, stages).
//! * [`pipeline`]: end to end, throughput, API requests, wait in-flight, start to ready.
//! * the per-hop and enrich benchmarks are separate binaries (`tests/system/examples/bench_*`),
//!   one process per measurement so peak RSS belongs to that measurement.

mod pipeline;
mod real;
mod stack;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::paths::{Paths, cargo};
use crate::setup::{self, Tools};

/// One row of the table.
pub struct Figure {
    pub name: String,
    pub target: String,
    pub met: bool,
    pub summary: String,
    pub figures: Value,
}

impl Figure {
    /// The row, or one of its runs, could not be measured (its figures hold an `error`).
    fn unmeasured(&self) -> bool {
        let failed = |figures: &Value| figures.get("error").is_some();
        failed(&self.figures)
            || self.figures["runs"]
                .as_array()
                .is_some_and(|runs| runs.iter().any(failed))
    }
}

/// The value at quantile `p` of an ascending slice (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Analyses for the end-to-end latency benchmark.
    #[arg(long, default_value_t = 1000)]
    pub analyses: usize,
    /// Analyses for the throughput benchmark.
    #[arg(long, default_value_t = 2000)]
    pub throughput_analyses: usize,
    /// Analyses held by the wait process.
    #[arg(long, default_value_t = 5000)]
    pub hold: usize,
    /// Analyses per window in the API-request benchmark.
    #[arg(long, default_value_t = 10)]
    pub api_analyses: usize,
    /// The long window of the API-request benchmark, seconds.
    #[arg(long, default_value_t = 300)]
    pub long_window: u64,
    /// Analyses of the end-to-end comparison between the real control plane and kubesim.
    #[arg(long, default_value_t = 100)]
    pub real_analyses: usize,
    /// Run only these benchmarks (comma-separated, e.g. `--only e2e,api`); all when omitted.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Benchmark>,
}

/// One benchmark of the run, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Benchmark {
    /// End-to-end overhead per analysis.
    E2e,
    /// Sustained analyses per second.
    Throughput,
    /// Kubernetes API requests per analysis (10 s and long window).
    Api,
    /// Per-hop overhead vs the JetStream floor.
    Hop,
    /// Enrich vs raw serde_json.
    Enrich,
    /// In-flight analyses held by one wait process.
    Hold,
    /// Stage process start to ready.
    Start,
    /// Against the real control plane: API requests and end-to-end overhead per analysis,
    /// beside kubesim's.
    Real,
}

impl BenchArgs {
    fn runs(&self, benchmark: Benchmark) -> bool {
        self.only.is_empty() || self.only.contains(&benchmark)
    }
}

/// A benchmark that could not run becomes a row saying why, so one failure does not lose the
/// other figures.
fn row(name: &str, result: Result<Figure>) -> Figure {
    result.unwrap_or_else(|error| {
        println!("bench: {name} could not be measured: {error:#}");
        Figure {
            name: name.to_string(),
            target: String::new(),
            met: false,
            summary: format!("not measured: {error:#}"),
            figures: json!({"error": format!("{error:#}")}),
        }
    })
}

pub fn run(paths: &Paths, args: &BenchArgs) -> Result<bool> {
    // The source the binaries are built from: taken before the build, since the tree may move on
    // during a run that lasts many minutes.
    let source = source_revision(paths);
    let tools = setup::run(paths)?;
    build(
        paths,
        &tools,
        args.runs(Benchmark::Hop) || args.runs(Benchmark::Enrich),
    )?;
    let release = paths.target_dir().join("release");
    // SAFETY: set before any thread of ours exists (the runtime is created below); the harness
    // reads it to find the release-built stage binaries and kubesim.
    unsafe {
        std::env::set_var("VEXXY_BIN_DIR", &release);
        for (name, value) in tools.env(paths) {
            std::env::set_var(name, value);
        }
    }
    let load_before = load_average();
    let scratch = scratch_filesystem();
    println!(
        "bench: stacks keep their stores under {} ({} {}); set TMPDIR to move them",
        scratch["dir"].as_str().unwrap_or("?"),
        scratch["type"].as_str().unwrap_or("?"),
        scratch["options"].as_str().unwrap_or("?")
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();

    // The two single-process benchmarks first, on a machine nothing else of ours runs on: each
    // compares two paths measured in one process, and the API stacks' jobs running beside them
    // disturbed their ratios.
    if args.runs(Benchmark::Hop) {
        println!("bench: per-hop overhead vs the JetStream floor");
        rows.push(row("per-hop overhead vs JetStream floor", hop(&release)));
    }
    if args.runs(Benchmark::Enrich) {
        println!("bench: enrich vs raw serde_json");
        rows.push(row("enrich vs raw serde_json", enrich(&release)));
    }

    // The API-request benchmark runs in the background on two stacks of its own: the long
    // window really lasts, and the two windows are measured under the same conditions.
    let mut api_runs = Vec::new();
    if args.runs(Benchmark::Api) {
        println!(
            "bench: starting the API-request stacks (10 s and {} s windows)",
            args.long_window
        );
        let windows = [10, args.long_window];
        let all_finished = std::sync::Arc::new(tokio::sync::Barrier::new(windows.len()));
        for window in windows {
            let bench_stack = stack::BenchStack::start(&format!("api{window}"))?;
            let analyses = args.api_analyses;
            let all_finished = all_finished.clone();
            api_runs.push(runtime.spawn(async move {
                let result =
                    pipeline::api_requests(&bench_stack, analyses, window, all_finished).await;
                bench_stack.stop();
                result
            }));
        }
    }

    if [Benchmark::Start, Benchmark::E2e, Benchmark::Throughput]
        .into_iter()
        .any(|benchmark| args.runs(benchmark))
    {
        println!("bench: start-to-ready, end to end, throughput (one stack)");
        let main_stack = stack::BenchStack::start("main")?;
        if args.runs(Benchmark::Start) {
            rows.push(row(
                "stage process start to ready",
                pipeline::start_to_ready(&main_stack, 5),
            ));
        }
        if args.runs(Benchmark::E2e) {
            rows.push(row(
                "end-to-end overhead per analysis",
                runtime.block_on(pipeline::end_to_end(&main_stack, args.analyses, 25)),
            ));
        }
        if args.runs(Benchmark::Throughput) {
            rows.push(row(
                "sustained analyses per second",
                runtime.block_on(pipeline::throughput(&main_stack, args.throughput_analyses)),
            ));
        }
        main_stack.stop();
    }

    if args.runs(Benchmark::Hold) {
        println!("bench: {} analyses held by one wait process", args.hold);
        let mut hold_stack = stack::BenchStack::start("hold")?;
        rows.push(row(
            "in-flight analyses held by one wait process",
            runtime.block_on(pipeline::wait_in_flight(&mut hold_stack, args.hold)),
        ));
        hold_stack.stop();
    }

    if args.runs(Benchmark::Api) {
        println!("bench: waiting for the API-request runs");
        rows.push(api_row(&runtime, api_runs)?);
    }

    let mut not_measurable = Vec::new();
    if args.runs(Benchmark::Real) {
        println!("bench: against the real control plane (kube-apiserver, etcd, kwok)");
        rows.extend(real::rows(&runtime, args));
        println!("bench: NOT MEASURED: {}", real::STORAGE_429);
        not_measurable.push(
            json!({"name": "analyses per second before real Kubescape storage answers 429",
                                   "reason": real::STORAGE_429}),
        );
    }

    let load_after = load_average();
    print_table(&rows);
    let report = json!({
        "machine": machine(&source, &load_before, &load_after, scratch),
        "command": "cargo xtask bench",
        "only": args.only.iter().map(|b| format!("{b:?}").to_lowercase()).collect::<Vec<_>>(),
        "not_measurable": not_measurable,
        "benchmarks": rows.iter().map(|r| json!({"name": r.name, "target": r.target, "met": r.met,
                                                  "summary": r.summary, "figures": r.figures})).collect::<Vec<_>>(),
    });
    let dir = paths.target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("bench: report written to {}", path.display());
    // A target missed is a result; a benchmark that could not run is a failure of the bench.
    let unmeasured: Vec<&str> = rows
        .iter()
        .filter(|row| row.unmeasured())
        .map(|row| row.name.as_str())
        .collect();
    if !unmeasured.is_empty() {
        println!(
            "bench: FAILED — not measured: {} (see the reasons above)",
            unmeasured.join("; ")
        );
    }
    Ok(unmeasured.is_empty())
}

/// Collects the two API-request runs into one row.
fn api_row(
    runtime: &tokio::runtime::Runtime,
    api_runs: Vec<tokio::task::JoinHandle<Result<Value>>>,
) -> Result<Figure> {
    // A run that could not finish is reported in its row rather than losing the whole report.
    let mut api = Vec::new();
    for run in api_runs {
        api.push(match runtime.block_on(run)? {
            Ok(result) => result,
            Err(error) => json!({"error": format!("{error:#}")}),
        });
    }
    // Judged over the same stretch of time for every window (see `pipeline::api_requests`);
    // the figures at each run's own end are shown too.
    let per: Vec<f64> = api
        .iter()
        .map(|r| {
            r["same_period"]["per_analysis"]
                .as_f64()
                .unwrap_or(f64::MAX)
        })
        .collect();
    let describe = |figures: &Value| {
        format!(
            "{:.1} ({:.1} per job + {} stack-wide watch/list)",
            figures["per_analysis"].as_f64().unwrap_or(f64::NAN),
            figures["per_analysis_without_watch_and_list"]
                .as_f64()
                .unwrap_or(f64::NAN),
            figures["watch_and_list_requests"]
        )
    };
    Ok(Figure {
        name: "Kubernetes API requests per analysis".into(),
        target: "≤ 12 and the same for both windows".into(),
        met: per.iter().all(|n| *n <= 12.0) && per.windows(2).all(|w| (w[0] - w[1]).abs() < 0.5),
        summary: api
            .iter()
            .map(|run| {
                if run["same_period"].is_object() {
                    format!(
                        "{} s window: {} until all runs ended; {} at its own last outcome ({:.0} s)",
                        run["window_s"],
                        describe(&run["same_period"]),
                        describe(run),
                        run["elapsed_s"].as_f64().unwrap_or(f64::NAN)
                    )
                } else {
                    format!("not measured: {}", run["error"])
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        figures: json!({"runs": api}),
    })
}

fn build(paths: &Paths, tools: &Tools, bench_binaries: bool) -> Result<()> {
    let builds = [
        &["build", "--release", "--workspace", "--bins"][..],
        &[
            "build",
            "--release",
            "-p",
            "vexxy-system-tests",
            "--example",
            "bench_hop",
            "--example",
            "bench_enrich",
        ][..],
    ];
    let needed = if bench_binaries {
        &builds[..]
    } else {
        &builds[..1]
    };
    for &args in needed {
        println!("bench: cargo {}", args.join(" "));
        let status = Command::new(cargo())
            .args(args)
            .current_dir(&paths.root)
            .envs(tools.env(paths))
            .status()
            .context("cannot run cargo")?;
        anyhow::ensure!(
            status.success(),
            "`cargo {}` failed ({status})",
            args.join(" ")
        );
    }
    Ok(())
}

/// Runs a bench binary and returns its `BENCH_RESULT` JSON.
fn bench_binary(binary: &Path, args: &[&str]) -> Result<Value> {
    let output = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("BENCH_RESULT "))
        .with_context(|| {
            format!(
                "{} {args:?} printed no result ({}); stderr:\n{}",
                binary.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(serde_json::from_str(line)?)
}

fn hop(release: &Path) -> Result<Figure> {
    let result = bench_binary(&release.join("examples/bench_hop"), &["2000"])?;
    let figure = |name: &str, percentile: &str| {
        result[name][percentile]
            .as_f64()
            .with_context(|| format!("bench_hop reported no {name}.{percentile}"))
    };
    let floor = figure("floor", "p50_us")?;
    let hand_off = figure("hand_off", "p50_us")?;
    let ratio = hand_off / floor;
    let ratio_p90 = figure("hand_off", "p90_us")? / figure("floor", "p90_us")?;
    // Reported beside the target, never in its place: the hand-off's round trips by hand
    // (without the runtime's code and claims), one stage's whole traversal (a ticket in and a
    // ticket out: two message transfers against the floor's one), and the hand-off again from
    // outside (two stages' traversal minus one stage's, without the handlers' marks).
    let design_floor = figure("hand_off_design_floor", "p50_us")?;
    let traversal = figure("traversal", "p50_us")?;
    let from_outside = figure("two_stage_traversal", "p50_us")? - traversal;
    Ok(Figure {
        name: "per-hop overhead vs JetStream floor".into(),
        target: "≤ 3× the floor".into(),
        met: ratio <= 3.0,
        summary: format!(
            "hand-off p50 {hand_off:.0} µs vs floor p50 {floor:.0} µs = {ratio:.1}× (p90 {ratio_p90:.1}×); its round trips by hand: {design_floor:.0} µs = {:.1}×; the hand-off from outside (two stages' traversal − one stage's): {from_outside:.0} µs; one stage's traversal, ticket in to ticket out: {traversal:.0} µs = {:.1}×",
            design_floor / floor,
            traversal / floor
        ),
        figures: json!({
            "hand_off_ratio_p50": ratio,
            "hand_off_ratio_p90": ratio_p90,
            "traversal_ratio_p50": traversal / floor,
            "hand_off_from_outside_p50_us": from_outside,
            "result": result,
        }),
    })
}

fn enrich(release: &Path) -> Result<Figure> {
    let binary = release.join("examples/bench_enrich");
    let dir = tempfile::Builder::new()
        .prefix("vexxy-bench-enrich-")
        .tempdir()?;
    let dir_arg = dir
        .path()
        .to_str()
        .context("temporary directory is not UTF-8")?;
    let prepared = bench_binary(&binary, &["prepare", dir_arg])?;
    let raw = bench_binary(&binary, &["raw", dir_arg, "7"])?;
    let enriched = bench_binary(&binary, &["enrich", dir_arg, "7"])?;
    // A missing figure fails the row: read as 0 it would count as "met".
    let figure = |result: &Value, mode: &str, key: &str| {
        result[key]
            .as_f64()
            .filter(|value| *value > 0.0)
            .with_context(|| format!("bench_enrich {mode} reported no {key}: {result}"))
    };
    let (raw_ms, enrich_ms) = (
        figure(&raw, "raw", "median_ms")?,
        figure(&enriched, "enrich", "median_ms")?,
    );
    let input = figure(&enriched, "enrich", "input_bytes")?;
    let rss = figure(&enriched, "enrich", "peak_rss_bytes")?;
    let (ratio, rss_ratio) = (enrich_ms / raw_ms, rss / input);
    Ok(Figure {
        name: "enrich 10k-statement VEX + 5k-artifact SBOM vs raw serde_json".into(),
        target: "≤ 1.5×, peak RSS ≤ 3× the document size".into(),
        met: ratio <= 1.5 && rss_ratio <= 3.0,
        summary: format!(
            "{enrich_ms:.0} ms vs {raw_ms:.0} ms = {ratio:.1}×; peak RSS {:.0} MB = {rss_ratio:.1}× the {:.1} MB input",
            rss / 1048576.0,
            input / 1048576.0
        ),
        figures: json!({"ratio": ratio, "rss_ratio": rss_ratio, "prepared": prepared, "raw": raw, "enrich": enriched}),
    })
}

fn print_table(rows: &[Figure]) {
    println!();
    println!("| benchmark | measured | target | met |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.name,
            row.summary,
            row.target,
            if row.met { "yes" } else { "no" }
        );
    }
    println!();
}

fn load_average() -> String {
    crate::machine::load_average(3).unwrap_or_default()
}

/// `HEAD`'s commit, with ` (uncommitted changes)` when the working tree differs from it.
fn source_revision(paths: &Paths) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&paths.root)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.is_empty());
    Some(if dirty {
        format!("{commit} (uncommitted changes)")
    } else {
        commit
    })
}

fn machine(source: &Option<String>, load_before: &str, load_after: &str, scratch: Value) -> Value {
    json!({
        "nproc": crate::machine::cores(),
        "memory_mb": crate::machine::memory_mb(),
        "cpu_model": crate::machine::cpu_model(),
        "date": chrono::Utc::now().to_rfc3339(),
        "git_commit": source,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "scratch": scratch,
    })
}

/// Where the stacks keep nats-server's store and the `file://` object store (the system temp
/// directory, `TMPDIR`), and the filesystem under it: its latency shows up in extract's and
/// enrich's handlers and in the broker hops, so a figure means little without it.
fn scratch_filesystem() -> Value {
    let dir = std::env::temp_dir();
    let mount = crate::machine::mount_of(&dir);
    json!({
        "dir": dir.display().to_string(),
        "mount_point": mount.as_ref().map(|m| &m.point),
        "type": mount.as_ref().map(|m| &m.fs_type),
        "options": mount.as_ref().map(|m| &m.options),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_benchmark_that_could_not_run_or_a_failed_run_is_unmeasured() {
        let failed = row("hold", Err(anyhow::anyhow!("wait did not start")));
        assert!(failed.unmeasured() && !failed.met);
        let figure = |figures: Value| Figure {
            name: "api".into(),
            target: String::new(),
            met: true,
            summary: String::new(),
            figures,
        };
        assert!(!figure(json!({"ratio": 1.0})).unmeasured());
        assert!(
            figure(json!({"runs": [{"per_analysis": 3.0}, {"error": "stack died"}]})).unmeasured()
        );
        assert!(!figure(json!({"runs": [{"per_analysis": 3.0}]})).unmeasured());
    }
}
