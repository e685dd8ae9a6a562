//! `cargo xtask test`: setup, then the whole suite — what `.ci/run` and the README call.
//!
//! Stage binaries are built first because the system tests run them as separate processes
//! (a test can only get `CARGO_BIN_EXE_*` for its own package). Then nextest runs every test
//! (per-test timeouts from `.config/nextest.toml`), falling back to `cargo test` where nextest is
//! not installed; doc tests always go through `cargo test --doc` (nextest cannot run them).

use std::process::{Command, ExitStatus};

use anyhow::Context;

use crate::paths::{Paths, cargo, on_path};
use crate::setup::{self, Tools};

pub fn run(paths: &Paths) -> anyhow::Result<bool> {
    let tools = setup::run(paths)?;
    let env = tools.env(paths);

    let build = step(
        paths,
        &env,
        "build the workspace binaries",
        &["build", "--workspace", "--bins"],
    )?;
    if !build.success() {
        println!(
            "xtask test: FAILED — `cargo build --workspace --bins` failed ({build}); see the errors above"
        );
        return Ok(false);
    }

    // The binaries above are the ones the cross-process tests run: tell them not to build.
    let mut env = env;
    env.push((
        vexxy_harness::stack::PREBUILT_ENV.to_string(),
        "1".to_string(),
    ));

    let suite = if on_path("cargo-nextest").is_some() {
        // The fault-injection scenarios (tests/system/tests/chaos.rs) run minutes each with
        // hundreds of jobs; they have their own command, `cargo xtask chaos`.
        // KNOWN DEFECT, excluded until fixed: tests/system/tests/security.rs passes all its
        // checks in seconds but its process was once seen not to exit afterwards (nextest
        // killed it at 300 s); run it alone with
        // `cargo nextest run -p vexxy-system-tests --test security`.
        let mut args = vec![
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "-E",
            "not (package(vexxy-system-tests) & (binary(chaos) | binary(security)))",
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

    report(&tools, suite, doc)
}

fn step(
    paths: &Paths,
    env: &[(String, String)],
    what: &str,
    args: &[&str],
) -> anyhow::Result<ExitStatus> {
    println!("\nxtask test: {what}: cargo {}", args.join(" "));
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
