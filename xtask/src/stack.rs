//! `cargo xtask up` / `down`: the local stack as background processes.
//!
//! nats-server (JetStream, store in `.vexxy/nats`), kubesim (the local Kubernetes API with
//! Kubescape installed, kubeconfig at `.vexxy/kubeconfig`) and the five stage binaries, each
//! detached into its own session so closing the terminal does not stop them. Each process has a
//! log in `.vexxy/logs/<name>.log` and a pid file in `.vexxy/pids/<name>.pid` that also records
//! the program it ran, so `down` never signals a recycled pid that now belongs to someone else.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use vexxy_harness::stack::{
    KUBESIM, LOCAL_MIN_ANALYSIS_SECONDS, STAGES, StackEndpoints, health_port, local_stage_env,
    log_tail,
};
use vexxy_harness::{free_port, http_get_status, port_is_open};

use crate::paths::{Paths, cargo};
use crate::setup::Tools;

const NATS: &str = "nats-server";
/// The real control plane as one process (`tests/harness/src/bin/vexxy-realcluster.rs`).
const REAL_CLUSTER: &str = "vexxy-realcluster";
/// A cold control plane (etcd, apiserver, controller-manager, scheduler, kwok) on a busy 2-core
/// machine takes tens of seconds.
const REAL_CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Kubescape's default learning period in the local stack (a job's `analysis_duration` sets its
/// own through the pod label): long enough to be a real window, short enough that the demo
/// finishes in well under a minute.
const LOCAL_LEARNING_PERIOD_MS: u64 = 5_000;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STAGE_STOP_GRACE: Duration = Duration::from_secs(20);
const SERVER_STOP_GRACE: Duration = Duration::from_secs(10);

/// Which Kubernetes the local stack runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterKind {
    /// kubesim: our API server with controllers and the Kubescape emulator (fast, the default).
    Sim,
    /// A real kube-apiserver, etcd, controller-manager, scheduler and kwok (built by
    /// `cargo xtask setup` with Go), with kubesim only as Kubescape (storage API, node-agent,
    /// kubevuln).
    Real,
}

impl ClusterKind {
    fn as_str(self) -> &'static str {
        match self {
            ClusterKind::Sim => "sim",
            ClusterKind::Real => "real",
        }
    }

    /// The kind a running stack was started with (`.vexxy/cluster`; sim when absent).
    fn of_stack(paths: &Paths) -> ClusterKind {
        match std::fs::read_to_string(paths.stack().join("cluster")) {
            Ok(text) if text.trim() == "real" => ClusterKind::Real,
            _ => ClusterKind::Sim,
        }
    }
}

/// What `up` wrote to `.vexxy/env`, read back by `demo`.
#[derive(Debug, Clone)]
pub struct StackEnv {
    pub nats_url: String,
    pub kubeconfig: PathBuf,
    pub store: String,
}

impl StackEnv {
    fn render(&self) -> String {
        // The CLI checks a request against the same variables as the stages, so it gets the
        // local stack's policy too (windows down to 2 s), or it would refuse what the stack takes.
        format!(
            "# written by `cargo xtask up`; `source .vexxy/env` to talk to the local stack\n\
             export NATS_URL={}\n\
             export KUBECONFIG={}\n\
             export VEXXY_STORE={}\n\
             export VEXXY_MIN_ANALYSIS_DURATION={LOCAL_MIN_ANALYSIS_SECONDS}\n",
            shell_quote(&self.nats_url),
            shell_quote(&self.kubeconfig.display().to_string()),
            shell_quote(&self.store),
        )
    }

    fn parse(text: &str) -> Option<StackEnv> {
        let value = |name: &str| {
            text.lines()
                .filter_map(|line| line.trim().strip_prefix("export "))
                .filter_map(|line| line.split_once('='))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.trim_matches('\'').to_string())
        };
        Some(StackEnv {
            nats_url: value("NATS_URL")?,
            kubeconfig: PathBuf::from(value("KUBECONFIG")?),
            store: value("VEXXY_STORE")?,
        })
    }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Every process of the stack, in start order.
fn process_names(cluster: ClusterKind) -> Vec<&'static str> {
    let mut names = vec![NATS];
    if cluster == ClusterKind::Real {
        names.push(REAL_CLUSTER);
    }
    names.push(KUBESIM);
    names.extend(STAGES);
    names
}

pub fn up(paths: &Paths, tools: &Tools, cluster: ClusterKind) -> anyhow::Result<StackEnv> {
    let running = ClusterKind::of_stack(paths);
    match running_state(paths)? {
        StackState::Running(_) if running != cluster => {
            bail!(
                "the local stack is already running with --cluster {}; stop it with `cargo xtask down` first",
                running.as_str()
            );
        }
        StackState::Running(env) => {
            println!("up: the local stack is already running");
            print_env(paths, &env);
            return Ok(env);
        }
        StackState::Partial(alive) if running != cluster => {
            bail!(
                "the local stack is partly running with --cluster {} ({}); stop it with `cargo xtask down` first",
                running.as_str(),
                alive.join(", ")
            );
        }
        StackState::Partial(alive) => match restart_plan(cluster, &alive, saved_env(paths)) {
            Restart::Missing { env, missing } => {
                println!(
                    "up: the stack is partly running; starting only what is missing ({})",
                    missing.join(", ")
                );
                return restart_missing(paths, tools, env, &missing);
            }
            Restart::Everything { why } => {
                println!(
                    "up: the stack is only partly running ({}); {why}: stopping it to start afresh",
                    alive.join(", ")
                );
                down(paths)?;
            }
        },
        StackState::Stopped => {}
    }
    for dir in [
        paths.logs(),
        paths.pids(),
        paths.run(),
        paths.nats_store(),
        paths.object_store(),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    build_binaries(paths)?;
    std::fs::write(paths.stack().join("cluster"), cluster.as_str())
        .context("cannot write .vexxy/cluster")?;

    let env = StackEnv {
        nats_url: String::new(),
        kubeconfig: paths.kubeconfig(),
        store: format!("file://{}", paths.object_store().display()),
    };
    let mut started = Started::default();
    let result = start_all(paths, tools, cluster, env, &mut started);
    match result {
        Ok(env) => {
            std::fs::write(paths.env_file(), env.render())
                .with_context(|| format!("cannot write {}", paths.env_file().display()))?;
            println!(
                "up: the local stack is ready (logs in {})",
                paths.logs().display()
            );
            print_env(paths, &env);
            Ok(env)
        }
        Err(error) => {
            println!("up: start-up failed; stopping what was started");
            if let Err(stop_error) = down(paths) {
                println!("up: stopping also failed: {stop_error:#}");
            }
            Err(error)
        }
    }
}

fn print_env(paths: &Paths, env: &StackEnv) {
    println!("\n{}", env.render());
    println!(
        "Use it with `source {}`; stop the stack with `cargo xtask down`.",
        paths.env_file().display()
    );
}

fn build_binaries(paths: &Paths) -> anyhow::Result<()> {
    // The whole workspace, like `cargo xtask test` does: building a subset unifies dependency
    // features differently and would rebuild rustls, kube and friends on every switch.
    println!("up: building kubesim and the stage binaries (cargo build --workspace --bins) ...");
    let status = Command::new(cargo())
        .args(["build", "--workspace", "--bins"])
        .current_dir(&paths.root)
        .status()
        .context("cannot run cargo build")?;
    ensure!(
        status.success(),
        "building the stack's binaries failed ({status}); see the compiler output above"
    );
    Ok(())
}

/// Children started by this `up`, kept so an early exit is noticed while waiting for readiness.
#[derive(Default)]
struct Started {
    children: Vec<(String, Child)>,
}

impl Started {
    /// Fails with the process's log when it already exited.
    fn check_alive(&mut self, paths: &Paths, name: &str) -> anyhow::Result<()> {
        let Some((_, child)) = self
            .children
            .iter_mut()
            .find(|(started, _)| started == name)
        else {
            return Ok(());
        };
        if let Some(status) = child.try_wait().context("cannot query a child process")? {
            bail!(
                "{name} exited during start-up ({status}); the end of its log ({}):\n{}",
                paths.log_of(name).display(),
                log_tail(&paths.log_of(name), 30)
            );
        }
        Ok(())
    }
}

fn start_all(
    paths: &Paths,
    tools: &Tools,
    cluster: ClusterKind,
    mut env: StackEnv,
    started: &mut Started,
) -> anyhow::Result<StackEnv> {
    // 4222 is what the `nats` CLI and client examples default to; take another port when busy.
    let nats_port = if port_is_open(4222) {
        free_port()
    } else {
        4222
    };
    env.nats_url = format!("nats://127.0.0.1:{nats_port}");
    start_nats(paths, tools, nats_port, started)?;
    println!("up: nats-server ready at {}", env.nats_url);

    let ready_file = paths.run().join("kubesim.ready");
    let _ = std::fs::remove_file(&ready_file);
    let mut kubesim = Command::new(paths.built_binary(KUBESIM));
    kubesim
        .arg("--ready-file")
        .arg(&ready_file)
        .arg("--learning-period-ms")
        .arg(LOCAL_LEARNING_PERIOD_MS.to_string());
    match cluster {
        ClusterKind::Sim => {
            kubesim.arg("--kubeconfig").arg(&env.kubeconfig);
        }
        ClusterKind::Real => {
            start_real_cluster(paths, tools, &env.kubeconfig, started)?;
            // kubesim is only Kubescape here, registered with the real API server.
            kubesim.arg("--upstream-kubeconfig").arg(&env.kubeconfig);
        }
    }
    spawn_detached(paths, KUBESIM, kubesim, started)?;
    wait_for(paths, started, KUBESIM, || ready_file.is_file())?;
    println!(
        "up: kubesim ready (kubeconfig {})",
        env.kubeconfig.display()
    );

    start_stages(paths, &env, &STAGES, started)?;
    Ok(env)
}

/// nats-server with JetStream on `port`, its store in `.vexxy/nats` (so a restart keeps the
/// streams, consumers and KV buckets), waited on until healthy.
fn start_nats(
    paths: &Paths,
    tools: &Tools,
    port: u16,
    started: &mut Started,
) -> anyhow::Result<()> {
    let monitor_port = free_port();
    let mut nats = Command::new(&tools.nats_server);
    nats.args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &monitor_port.to_string(),
        "-js",
        "-sd",
    ])
    .arg(paths.nats_store());
    spawn_detached(paths, NATS, nats, started)?;
    wait_for(paths, started, NATS, || {
        http_get_status(monitor_port, "/healthz") == Some(200)
    })
}

/// Starts `stages` and waits until each answers `/readyz`.
fn start_stages(
    paths: &Paths,
    env: &StackEnv,
    stages: &[&str],
    started: &mut Started,
) -> anyhow::Result<()> {
    let mut health_files = Vec::new();
    for stage in stages {
        let health_file = paths.run().join(format!("{stage}.addr"));
        let _ = std::fs::remove_file(&health_file);
        let mut command = Command::new(paths.built_binary(stage));
        command.envs(stage_env(env, &health_file));
        spawn_detached(paths, stage, command, started)?;
        health_files.push((stage, health_file));
    }
    for (stage, health_file) in &health_files {
        wait_for(paths, started, stage, || {
            health_port(health_file)
                .is_some_and(|port| http_get_status(port, "/readyz") == Some(200))
        })?;
        println!(
            "up: {stage} ready (health on 127.0.0.1:{})",
            health_port(health_file).unwrap_or(0)
        );
    }
    Ok(())
}

/// What `up` does with a stack of which only some processes run.
#[derive(Debug)]
enum Restart {
    /// Start these (in start order) with the saved environment; the others keep running.
    Missing {
        env: StackEnv,
        missing: Vec<&'static str>,
    },
    /// Stop what runs and start afresh, for this reason.
    Everything { why: &'static str },
}

/// Only the cluster holds state no restart brings back: kubesim keeps its objects in memory (and
/// is the registered storage server of the real control plane, whose etcd lives in a temporary
/// directory). Everything else can come back alone: nats-server on its old port with its store
/// on disk, a stage with the same settings (JetStream redelivers what it had in flight).
fn restart_plan(cluster: ClusterKind, alive: &[String], env: Option<StackEnv>) -> Restart {
    let is_alive = |name: &str| alive.iter().any(|a| a == name);
    if !is_alive(KUBESIM) || (cluster == ClusterKind::Real && !is_alive(REAL_CLUSTER)) {
        return Restart::Everything {
            why: "the cluster stopped and its objects went with it",
        };
    }
    let Some(env) = env else {
        return Restart::Everything {
            why: "its .vexxy/env is missing or unreadable",
        };
    };
    let missing = process_names(cluster)
        .into_iter()
        .filter(|name| !is_alive(name))
        .collect();
    Restart::Missing { env, missing }
}

fn saved_env(paths: &Paths) -> Option<StackEnv> {
    std::fs::read_to_string(paths.env_file())
        .ok()
        .and_then(|text| StackEnv::parse(&text))
}

/// Starts the processes of a partly running stack that are missing, on the addresses the rest
/// of the stack (and `.vexxy/env`) already use.
fn restart_missing(
    paths: &Paths,
    tools: &Tools,
    env: StackEnv,
    missing: &[&'static str],
) -> anyhow::Result<StackEnv> {
    build_binaries(paths)?;
    let mut started = Started::default();
    if missing.contains(&NATS) {
        let port = env
            .nats_url
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .with_context(|| format!("cannot read the port of NATS_URL={} in .vexxy/env; stop the stack with `cargo xtask down` and start it again", env.nats_url))?;
        ensure!(
            !port_is_open(port),
            "nats-server is not running but something else listens on its port {port}; stop that or run `cargo xtask down` and `cargo xtask up` to start on a new port"
        );
        start_nats(paths, tools, port, &mut started)?;
        println!("up: nats-server ready again at {}", env.nats_url);
    }
    let stages: Vec<&str> = STAGES
        .iter()
        .copied()
        .filter(|stage| missing.contains(stage))
        .collect();
    start_stages(paths, &env, &stages, &mut started)?;
    println!(
        "up: the local stack is ready again (logs in {})",
        paths.logs().display()
    );
    print_env(paths, &env);
    Ok(env)
}

/// The real control plane, detached like every other process of the stack; its admin
/// kubeconfig is written to `kubeconfig`.
fn start_real_cluster(
    paths: &Paths,
    tools: &Tools,
    kubeconfig: &Path,
    started: &mut Started,
) -> anyhow::Result<()> {
    let ready_file = paths.run().join("realcluster.ready");
    let _ = std::fs::remove_file(&ready_file);
    let mut command = Command::new(paths.built_binary(REAL_CLUSTER));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--ready-file")
        .arg(&ready_file);
    // Setup linked the Go-built binaries into .tools/bin, which this PATH puts first.
    command.envs(tools.env(paths));
    spawn_detached(paths, REAL_CLUSTER, command, started)?;
    let deadline = Instant::now() + REAL_CLUSTER_READY_TIMEOUT;
    while !ready_file.is_file() {
        started.check_alive(paths, REAL_CLUSTER)?;
        if Instant::now() >= deadline {
            bail!(
                "the real control plane did not become ready within {REAL_CLUSTER_READY_TIMEOUT:?}; the end of its log ({}):\n{}",
                paths.log_of(REAL_CLUSTER).display(),
                log_tail(&paths.log_of(REAL_CLUSTER), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "up: real control plane ready (kube-apiserver {})",
        std::fs::read_to_string(&ready_file)
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}

/// The environment of a stage process in the local stack (the same one the tests use).
fn stage_env(env: &StackEnv, health_file: &Path) -> Vec<(String, String)> {
    let endpoints = StackEndpoints {
        nats_url: env.nats_url.clone(),
        store: env.store.clone(),
        kubeconfig: env.kubeconfig.clone(),
    };
    local_stage_env(&endpoints, health_file, LOCAL_MIN_ANALYSIS_SECONDS)
}

fn wait_for(
    paths: &Paths,
    started: &mut Started,
    name: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        started.check_alive(paths, name)?;
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{name} did not become ready within {READY_TIMEOUT:?}; the end of its log ({}):\n{}",
                paths.log_of(name).display(),
                log_tail(&paths.log_of(name), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_detached(
    paths: &Paths,
    name: &str,
    mut command: Command,
    started: &mut Started,
) -> anyhow::Result<()> {
    let log_path = paths.log_of(name);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .context("cannot duplicate a log file handle")?;
    let program = PathBuf::from(command.get_program());
    command.stdin(Stdio::null()).stdout(log).stderr(log_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it only moves the
    // child into its own session so a Ctrl-C in the terminal that ran `up` does not reach it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {name} ({})", program.display()))?;
    let record = PidRecord {
        pid: child.id(),
        program,
    };
    std::fs::write(pid_file(paths, name), record.render())
        .with_context(|| format!("cannot write the pid file of {name}"))?;
    started.children.push((name.to_string(), child));
    Ok(())
}

fn pid_file(paths: &Paths, name: &str) -> PathBuf {
    paths.pids().join(format!("{name}.pid"))
}

/// A pid file: the pid and the program it ran.
#[derive(Debug, Clone, PartialEq)]
struct PidRecord {
    pid: u32,
    program: PathBuf,
}

impl PidRecord {
    fn render(&self) -> String {
        format!("{}\n{}\n", self.pid, self.program.display())
    }

    fn parse(text: &str) -> Option<PidRecord> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let program = PathBuf::from(lines.next()?.trim());
        Some(PidRecord { pid, program })
    }

    /// Alive and still running our program (not a zombie, not a recycled pid).
    fn is_ours_and_alive(&self) -> bool {
        let proc_dir = PathBuf::from(format!("/proc/{}", self.pid));
        let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
            return false;
        };
        // The state letter follows the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z') | Some('X') | None) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
            return false;
        };
        let argv0 = cmdline.split(|byte| *byte == 0).next().unwrap_or_default();
        Path::new(std::ffi::OsStr::from_bytes(argv0)) == self.program
    }

    fn signal(&self, signal: i32) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid was just checked to be
            // running our program.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

enum StackState {
    Running(StackEnv),
    Partial(Vec<String>),
    Stopped,
}

fn running_state(paths: &Paths) -> anyhow::Result<StackState> {
    let names = process_names(ClusterKind::of_stack(paths));
    let mut alive = Vec::new();
    for name in &names {
        if read_pid(paths, name).is_some_and(|record| record.is_ours_and_alive()) {
            alive.push(name.to_string());
        }
    }
    if alive.is_empty() {
        return Ok(StackState::Stopped);
    }
    let env = std::fs::read_to_string(paths.env_file())
        .ok()
        .and_then(|text| StackEnv::parse(&text));
    match env {
        Some(env) if alive.len() == names.len() => Ok(StackState::Running(env)),
        _ => Ok(StackState::Partial(alive)),
    }
}

/// The environment of a running stack, `None` when it is not (fully) running.
pub fn running_env(paths: &Paths) -> anyhow::Result<Option<StackEnv>> {
    Ok(match running_state(paths)? {
        StackState::Running(env) => Some(env),
        _ => None,
    })
}

fn read_pid(paths: &Paths, name: &str) -> Option<PidRecord> {
    std::fs::read_to_string(pid_file(paths, name))
        .ok()
        .and_then(|text| PidRecord::parse(&text))
}

/// Stops the stack: stages first (they finish or hand back in-flight work while NATS is still
/// up), then kubesim, then nats-server. SIGTERM, then SIGKILL after a bound. Safe to repeat.
pub fn down(paths: &Paths) -> anyhow::Result<()> {
    let mut stopped_any = false;
    let stages: Vec<&str> = STAGES.to_vec();
    for (group, grace) in [
        (stages, STAGE_STOP_GRACE),
        (vec![KUBESIM], SERVER_STOP_GRACE),
        (vec![REAL_CLUSTER], SERVER_STOP_GRACE),
        (vec![NATS], SERVER_STOP_GRACE),
    ] {
        let mut running = Vec::new();
        for name in group {
            let file = pid_file(paths, name);
            match read_pid(paths, name) {
                Some(record) if record.is_ours_and_alive() => {
                    record.signal(libc::SIGTERM);
                    running.push((name, record));
                }
                _ => {}
            }
            if file.exists() {
                std::fs::remove_file(&file)
                    .with_context(|| format!("cannot remove {}", file.display()))?;
            }
        }
        let deadline = Instant::now() + grace;
        while running.iter().any(|(_, record)| record.is_ours_and_alive())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (name, record) in running {
            stopped_any = true;
            if record.is_ours_and_alive() {
                record.signal(libc::SIGKILL);
                println!(
                    "down: {name} (pid {}) ignored SIGTERM for {grace:?} and was killed; see {}",
                    record.pid,
                    paths.log_of(name).display()
                );
            } else {
                println!("down: stopped {name} (pid {})", record.pid);
            }
        }
    }
    if paths.env_file().exists() {
        std::fs::remove_file(paths.env_file()).context("cannot remove .vexxy/env")?;
    }
    if !stopped_any {
        println!("down: nothing was running");
    }
    println!(
        "down: logs and data stay in {} (delete it for a fresh start)",
        paths.stack().display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_round_trips() {
        let env = StackEnv {
            nats_url: "nats://127.0.0.1:4222".into(),
            kubeconfig: PathBuf::from("/work/it's here/.vexxy/kubeconfig"),
            store: "file:///work/main/.vexxy/store".into(),
        };
        let rendered = env.render();
        assert!(rendered.contains("export NATS_URL='nats://127.0.0.1:4222'\n"));
        let parsed = StackEnv::parse(&rendered).expect("rendered env parses");
        assert_eq!(parsed.nats_url, env.nats_url);
        assert_eq!(parsed.store, env.store);
    }

    #[test]
    fn a_partial_stack_restarts_only_what_is_missing_unless_the_cluster_went() {
        let env = StackEnv {
            nats_url: "nats://127.0.0.1:4222".into(),
            kubeconfig: PathBuf::from("/tmp/kubeconfig"),
            store: "file:///tmp/store".into(),
        };
        let alive = |dead: &[&str], cluster| -> Vec<String> {
            process_names(cluster)
                .into_iter()
                .filter(|name| !dead.contains(name))
                .map(String::from)
                .collect()
        };
        let dead = [NATS, "vexxy-wait", "vexxy-extract"];
        match restart_plan(
            ClusterKind::Sim,
            &alive(&dead, ClusterKind::Sim),
            Some(env.clone()),
        ) {
            Restart::Missing { missing, env: kept } => {
                assert_eq!(missing, dead.to_vec(), "in start order");
                assert_eq!(kept.nats_url, env.nats_url, "the same addresses");
            }
            other => panic!("{other:?}"),
        }
        for (cluster, dead) in [
            (ClusterKind::Sim, KUBESIM),
            (ClusterKind::Real, KUBESIM),
            (ClusterKind::Real, REAL_CLUSTER),
        ] {
            assert!(
                matches!(
                    restart_plan(cluster, &alive(&[dead], cluster), Some(env.clone())),
                    Restart::Everything { .. }
                ),
                "{dead} gone on {cluster:?}"
            );
        }
        assert!(matches!(
            restart_plan(
                ClusterKind::Sim,
                &alive(&["vexxy-wait"], ClusterKind::Sim),
                None
            ),
            Restart::Everything { .. }
        ));
    }

    #[test]
    fn env_file_is_valid_shell() {
        let env = StackEnv {
            nats_url: "nats://127.0.0.1:4222".into(),
            kubeconfig: PathBuf::from("/tmp/it's a dir/kubeconfig"),
            store: "file:///tmp/store".into(),
        };
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}\nprintf '%s|%s|%s|%s' \"$NATS_URL\" \"$KUBECONFIG\" \"$VEXXY_STORE\" \"$VEXXY_MIN_ANALYSIS_DURATION\"",
                env.render()
            ))
            .output()
            .expect("sh runs");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!(
                "nats://127.0.0.1:4222|/tmp/it's a dir/kubeconfig|file:///tmp/store|{LOCAL_MIN_ANALYSIS_SECONDS}"
            )
        );
    }

    #[test]
    fn pid_records_only_match_their_own_program() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let program = crate::paths::on_path("sleep").expect("sleep is on PATH");
        let ours = PidRecord {
            pid: child.id(),
            program: PathBuf::from("sleep"),
        };
        let parsed = PidRecord::parse(&ours.render()).expect("pid record parses");
        assert_eq!(parsed, ours);
        // Right after exec the kernel briefly reports an empty command line; `down` only ever
        // looks at processes started long before, so give the child a moment here.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        vexxy_harness::wait_until(Duration::from_secs(5), || {
            std::fs::read(&cmdline).is_ok_and(|bytes| !bytes.is_empty())
        });
        assert!(
            ours.is_ours_and_alive(),
            "a running child with the recorded argv0 is ours"
        );
        let recycled = PidRecord {
            pid: child.id(),
            program,
        };
        assert!(
            !recycled.is_ours_and_alive(),
            "a different program under that pid is not ours"
        );
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        assert!(!ours.is_ours_and_alive(), "an exited process is not alive");
    }
}
