//! `cargo xtask`: the project's developer commands (see README.md).

mod bench;
mod chaos;
mod demo;
mod deps;
mod gotools;
mod lint;
mod machine;
mod paths;
mod setup;
mod stack;
mod test;
mod wiring;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::paths::Paths;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "vexxy developer commands",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the tools tests and the local stack need into .tools/bin (idempotent), and build
    /// the real control plane's Go programs when Go is present (cached outside the checkout).
    Setup,
    /// Setup, then build and run the whole test suite (what CI runs).
    Test,
    /// Write the JSON Schemas of every event to events/schemas/.
    Schemas,
    /// Start the local stack in the background and write .vexxy/env.
    Up {
        /// `sim`: kubesim is the cluster; `real`: a real kube-apiserver, etcd, scheduler,
        /// controller-manager and kwok (built by setup with Go), kubesim only as Kubescape.
        #[arg(long, value_enum, default_value = "sim")]
        cluster: stack::ClusterKind,
    },
    /// Stop the local stack (safe to run when nothing is running).
    Down,
    /// Setup, start the stack (or reuse it), run one analysis end to end and print the result.
    Demo(demo::DemoArgs),
    /// Check the workspace dependency rules and that every stage is wired into the image, the
    /// manifests, compose and the test stacks (also part of `test`).
    CheckDeps,
    /// `cargo fmt --check` and `cargo clippy --workspace --all-targets -- -D warnings`.
    Lint,
    /// Build in release mode and run the benchmarks (docs/BENCHMARKS.md); writes
    /// target/bench/report.json.
    Bench(bench::BenchArgs),
    /// Setup, then run the fault-injection scenarios at full size (200 jobs each, 30 s storage
    /// outage) and print the figures table of docs/RELIABILITY.md (target/chaos/report.md).
    Chaos(chaos::ChaosArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let paths = Paths::discover();
    match run(&paths, cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)` is a failure already explained on stdout (failed tests, failed job).
fn run(paths: &Paths, command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Setup => {
            setup::run(paths)?;
            match gotools::ensure_all(paths)? {
                gotools::GoTools::Ready { bin } => {
                    println!(
                        "setup: the real control plane's binaries are in {}",
                        bin.display()
                    );
                }
                gotools::GoTools::Missing { why } => {
                    println!("setup: WARNING: the real control plane cannot be built: {why}");
                }
            }
            Ok(true)
        }
        Command::Test => test::run(paths),
        Command::Up { cluster } => {
            let tools = setup::run(paths)?;
            if cluster == stack::ClusterKind::Real
                && let gotools::GoTools::Missing { why } = gotools::ensure_all(paths)?
            {
                anyhow::bail!("--cluster real needs the real control plane's binaries: {why}");
            }
            stack::up(paths, &tools, cluster).map(|_| true)
        }
        Command::Schemas => {
            let dir = paths.root.join("events").join("schemas");
            vexxy_events::schemas::write_all(&dir)
                .with_context(|| format!("cannot write the event schemas to {}", dir.display()))?;
            println!("schemas: wrote the event JSON Schemas to {}", dir.display());
            Ok(true)
        }
        Command::Down => stack::down(paths).map(|()| true),
        Command::Demo(args) => {
            let tools = setup::run(paths)?;
            let env = match stack::running_env(paths)? {
                Some(env) => {
                    println!(
                        "demo: reusing the running local stack (NATS {})",
                        env.nats_url
                    );
                    env
                }
                None => stack::up(paths, &tools, stack::ClusterKind::Sim)?,
            };
            demo::run(paths, &env, &args)
        }
        Command::Bench(args) => bench::run(paths, &args),
        Command::Lint => lint::run(paths),
        Command::Chaos(args) => chaos::run(paths, &args),
        Command::CheckDeps => {
            let metadata = deps::load_metadata(&paths.root)?;
            let mut problems = deps::violations(&metadata);
            problems.extend(wiring::problems(
                &paths.root,
                &deps::stage_packages(&metadata),
                &vexxy_harness::stack::STAGES,
            ));
            for problem in &problems {
                println!("check-deps: {problem}");
            }
            if problems.is_empty() {
                println!(
                    "check-deps: the workspace follows the dependency rules, and every stage is \
                     wired into the image, the manifests, compose and the test stacks"
                );
            }
            Ok(problems.is_empty())
        }
    }
}
