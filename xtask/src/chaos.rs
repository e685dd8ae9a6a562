//! `cargo xtask chaos`: the fault-injection scenarios of `tests/system/tests/chaos.rs` at full
//! size (200 jobs in flight each, a 30 s object-store outage), one scenario at a time so each has
//! the machine to itself, then the figures as the table docs/RELIABILITY.md shows. `.ci/run`
//! runs it after `cargo xtask test`.
//!
//! `cargo xtask test` leaves these tests out (they take minutes each; its nextest filter excludes
//! the `chaos` binary). Run directly (`cargo test -p vexxy-system-tests --test chaos`) they default
//! to 40 jobs and a 10 s outage; only the size differs (`VEXXY_CHAOS_JOBS`,
//! `VEXXY_CHAOS_S3_OUTAGE`). The binaries and the test are built exactly as `cargo xtask test`
//! builds them (`--workspace`, so the same dependency features), so after it nothing recompiles.
//! Each scenario appends its figures to `target/chaos/figures.jsonl`; the table goes to
//! `target/chaos/report.md` and stdout.

use std::process::Command;

use anyhow::Context;
use vexxy_harness::chaos::{Figures, REPORT_ENV};

use crate::paths::{Paths, cargo};
use crate::{setup, test};

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Requests in flight per scenario.
    #[arg(long, default_value_t = 200)]
    pub jobs: usize,
    /// How long the object store is down in the storage scenario, in seconds.
    #[arg(long, default_value_t = 30)]
    pub s3_outage: u64,
    /// Run only the scenarios whose test name contains this (e.g. `cluster`).
    #[arg(long)]
    pub filter: Option<String>,
}

pub fn run(paths: &Paths, args: &ChaosArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        (1..=2000).contains(&args.jobs),
        "--jobs {} is out of range: choose 1 to 2000 jobs per scenario",
        args.jobs
    );
    anyhow::ensure!(
        (1..=600).contains(&args.s3_outage),
        "--s3-outage {} is out of range: choose 1 to 600 seconds",
        args.s3_outage
    );
    let tools = setup::run(paths)?;
    let Some(env) = test::build_stack_binaries(paths, tools.env(paths), "xtask chaos")? else {
        return Ok(false);
    };
    let out_dir = paths.target_dir().join("chaos");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let figures_path = out_dir.join("figures.jsonl");
    let _ = std::fs::remove_file(&figures_path);

    let mut test_args = vec![
        "test",
        "--workspace",
        "--test",
        "chaos",
        "--",
        "--test-threads",
        "1",
        "--nocapture",
    ];
    if let Some(filter) = &args.filter {
        test_args.push(filter);
    }
    let command_line = format!(
        "cargo xtask chaos --jobs {} --s3-outage {}{}",
        args.jobs,
        args.s3_outage,
        args.filter
            .as_ref()
            .map(|f| format!(" --filter {f}"))
            .unwrap_or_default()
    );
    println!("xtask chaos: {command_line}: cargo {}", test_args.join(" "));
    let started = chrono::Utc::now();
    // Figures from a shared machine mean little without how busy it was.
    let load_before = load_average();
    let status = Command::new(cargo())
        .args(&test_args)
        .current_dir(&paths.root)
        .envs(env)
        .env("VEXXY_CHAOS_JOBS", args.jobs.to_string())
        .env("VEXXY_CHAOS_S3_OUTAGE", args.s3_outage.to_string())
        .env(REPORT_ENV, &figures_path)
        .status()
        .context("cannot run cargo test for the chaos scenarios")?;

    let figures = read_figures(&figures_path)?;
    let report = format!(
        "Measured with `{command_line}` on {} ({}; 1-minute load average {} before the \
         scenarios, {} after), {}.\n\n{}",
        started.format("%Y-%m-%d %H:%M UTC"),
        machine(),
        load_before,
        load_average(),
        if status.success() {
            "every check passed"
        } else {
            "SOME CHECKS FAILED (see the test output)"
        },
        table(&figures)
    );
    let report_path = out_dir.join("report.md");
    std::fs::write(&report_path, &report)
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    println!(
        "\n{report}\nxtask chaos: table written to {}",
        report_path.display()
    );
    let all_passed = !figures.is_empty() && figures.iter().all(|f| f.passed);
    Ok(status.success() && all_passed)
}

fn read_figures(path: &std::path::Path) -> anyhow::Result<Vec<Figures>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .with_context(|| format!("a line of {} is not figures: {line}", path.display()))
        })
        .collect()
}

/// The results table of docs/RELIABILITY.md.
pub fn table(figures: &[Figures]) -> String {
    let mut out = String::from(
        "| scenario | jobs in flight | faults injected | completed | failed (reasons) | duplicates | missing | leaked sandboxes | wall time | notes | checks |\n\
         | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |\n",
    );
    for f in figures {
        let reasons = if f.failed_reasons.is_empty() {
            String::new()
        } else {
            let listed: Vec<String> = f
                .failed_reasons
                .iter()
                .map(|(reason, count)| format!("{count} `{reason}`"))
                .collect();
            format!(
                " ({}; {} expected)",
                listed.join(", "),
                f.failed_as_expected
            )
        };
        let notes: Vec<String> = f
            .extra
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {}{} | {} | {} | {} | {:.1} s | {} | {} |\n",
            f.scenario,
            f.jobs,
            f.faults.replace('|', "/"),
            f.completed,
            f.failed,
            reasons,
            f.duplicates,
            f.missing,
            f.leaked_sandboxes,
            f.wall_seconds,
            notes.join(", "),
            if f.passed { "pass" } else { "FAIL" }
        ));
    }
    out
}

/// The 1-minute load average from /proc/loadavg ("unknown" where there is none).
fn load_average() -> String {
    crate::machine::load_average(1).unwrap_or_else(|| "unknown".to_string())
}

/// "Linux 6.8 x86_64, 2 cores, <cpu model>" for the report.
fn machine() -> String {
    let uname = Command::new("uname")
        .arg("-srm")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = crate::machine::cores();
    let cpu = crate::machine::cpu_model().unwrap_or_else(|| "unknown CPU".to_string());
    format!("{uname}, {cores} cores, {cpu}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_row_per_scenario_with_reasons_and_verdict() {
        let figures = vec![
            Figures {
                scenario: "kill9".into(),
                jobs: 200,
                faults: "kill -9 | restart".into(),
                completed: 190,
                failed: 10,
                failed_reasons: [("image_pull_failed".to_string(), 10)].into(),
                failed_as_expected: 10,
                wall_seconds: 61.04,
                extra: [("kills".to_string(), "5".to_string())].into(),
                passed: true,
                ..Figures::default()
            },
            Figures {
                scenario: "s3".into(),
                jobs: 3,
                missing: 1,
                passed: false,
                ..Figures::default()
            },
        ];
        let table = table(&figures);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert_eq!(
            rows[2],
            "| kill9 | 200 | kill -9 / restart | 190 | 10 (10 `image_pull_failed`; 10 expected) | 0 | 0 | 0 | 61.0 s | kills 5 | pass |"
        );
        assert!(rows[3].starts_with("| s3 | 3 |") && rows[3].ends_with("| FAIL |"));
    }

    #[test]
    fn figures_are_read_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figures.jsonl");
        assert!(read_figures(&path).unwrap().is_empty());
        let one = Figures {
            scenario: "a".into(),
            ..Figures::default()
        };
        let line = serde_json::to_string(&one).unwrap();
        std::fs::write(&path, format!("{line}\n\n{line}\n")).unwrap();
        assert_eq!(read_figures(&path).unwrap(), vec![one.clone(), one]);
        std::fs::write(&path, "not json\n").unwrap();
        assert!(read_figures(&path).is_err());
    }
}
