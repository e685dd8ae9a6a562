//! `cargo xtask test`: setup, then the whole suite — what `.ci/run` and the README call.
//!
//! Stage binaries are built first because the system tests run them as separate processes
//! (a test can only get `CARGO_BIN_EXE_*` for its own package). Then nextest runs every test
//! (per-test timeouts from `.config/nextest.toml`), falling back to `cargo test` where nextest is
//! not installed; doc tests always go through `cargo test --doc` (nextest cannot run them).
//!
//! The fault-injection scenarios are left out under nextest (`cargo xtask chaos` runs them at
//! full size); plain `cargo test` cannot leave out one test binary, so without nextest they run
//! here at their default size (40 jobs, 10 s storage outage).

use std::process::{Command, ExitStatus};

use anyhow::Context;

use crate::gotools::{self, GoTools};
use crate::paths::{Paths, cargo, on_path};
use crate::setup::{self, Tools};

/// The test binaries of the real control plane tier (`tests/system/tests/real_*.rs`): they need
/// the Go-built Kubernetes binaries and fail without them.
const REAL_TIER: &str = "(package(vexxy-system-tests) & binary(/^real_/))";
/// Set by `.ci/run`: a run where the real tier could not run is a failure, not a note.
const REQUIRE_REAL_TIER_ENV: &str = "VEXXY_REQUIRE_REAL_TIER";

pub fn run(paths: &Paths) -> anyhow::Result<bool> {
    let tools = setup::run(paths)?;
    let real_tier = gotools::ensure_all(paths)?;
    if let GoTools::Missing { why } = &real_tier {
        println!("{}", real_tier_banner(why));
    }

    let Some(env) = build_stack_binaries(paths, tools.env(paths), "xtask test")? else {
        return Ok(false);
    };

    let suite = if on_path("cargo-nextest").is_some() {
        // The fault-injection scenarios (tests/system/tests/chaos.rs) run minutes each with
        // hundreds of jobs; they have their own command, `cargo xtask chaos`, which CI runs
        // after this one.
        let filter = if real_tier.is_ready() {
            "not (package(vexxy-system-tests) & binary(chaos))".to_string()
        } else {
            format!("not (package(vexxy-system-tests) & binary(chaos)) & not {REAL_TIER}")
        };
        let mut args = vec![
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "-E",
            filter.as_str(),
        ];
        if std::env::var_os("CI").is_some() {
            args.extend(["--profile", "ci"]);
        }
        step(paths, &env, "run the test suite (nextest)", &args)?
    } else {
        step(
            paths,
            &env,
            "run the test suite (cargo test)",
            &[
                "test",
                "--workspace",
                "--no-fail-fast",
                "--lib",
                "--bins",
                "--tests",
            ],
        )?
    };
    let doc = step(
        paths,
        &env,
        "run the doc tests",
        &["test", "--workspace", "--doc", "--no-fail-fast"],
    )?;

    let real_tier_required = std::env::var_os(REQUIRE_REAL_TIER_ENV).is_some();
    let real_tier_ok = match &real_tier {
        GoTools::Ready { .. } => true,
        GoTools::Missing { why } => {
            // Said again at the end, where a reader of a long log looks first.
            println!("{}", real_tier_banner(why));
            if real_tier_required {
                println!(
                    "xtask test: FAILED — {REQUIRE_REAL_TIER_ENV} is set and the real control plane tier did not run"
                );
            }
            !real_tier_required
        }
    };
    Ok(report(&tools, suite, doc)? && real_tier_ok)
}

fn real_tier_banner(why: &str) -> String {
    format!(
        "\n================================================================================\n\
         xtask test: THE REAL CONTROL PLANE TIER DID NOT RUN: {why}.\n\
         Only kubesim was tested; the tests against a real kube-apiserver, etcd, scheduler,\n\
         controller-manager and kwok (tests/system/tests/real_*.rs) were left out.\n\
         ================================================================================"
    )
}

/// `cargo build --workspace --bins`, then `env` plus the variable that tells the cross-process
/// tests to run these binaries instead of building their own (`None`, after saying why on
/// stdout, when the build failed). `cargo xtask chaos` builds the same way, so after
/// `cargo xtask test` its build is a no-op.
pub fn build_stack_binaries(
    paths: &Paths,
    mut env: Vec<(String, String)>,
    command: &str,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let build = step(
        paths,
        &env,
        "build the workspace binaries",
        &["build", "--workspace", "--bins"],
    )?;
    if !build.success() {
        println!(
            "{command}: FAILED — `cargo build --workspace --bins` failed ({build}); see the errors above"
        );
        return Ok(None);
    }
    // A `--package` build inside a test would unify dependency features differently from the
    // workspace build and recompile kube, rustls and friends inside the test's time limit.
    env.push((
        vexxy_harness::stack::PREBUILT_ENV.to_string(),
        "1".to_string(),
    ));
    Ok(Some(env))
}

pub fn step(
    paths: &Paths,
    env: &[(String, String)],
    what: &str,
    args: &[&str],
) -> anyhow::Result<ExitStatus> {
    println!("\nxtask: {what}: cargo {}", args.join(" "));
    Command::new(cargo())
        .args(args)
        .current_dir(&paths.root)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .status()
        .with_context(|| format!("cannot run cargo to {what}"))
}

fn report(tools: &Tools, suite: ExitStatus, doc: ExitStatus) -> anyhow::Result<bool> {
    let verdict = |status: ExitStatus| {
        if status.success() {
            "passed".to_string()
        } else {
            format!("FAILED ({status})")
        }
    };
    println!(
        "\nxtask test: test suite {}, doc tests {} (nats-server {}, s3s-fs {})",
        verdict(suite),
        verdict(doc),
        tools.nats_server.display(),
        tools.s3s_fs.display()
    );
    if tools.kubectl.is_none() {
        println!(
            "xtask test: note: kubectl was not on PATH, so tests that need it report that as their failure"
        );
    }
    Ok(suite.success() && doc.success())
}
