//! Building blocks for the fault-injection ("chaos") tests and `cargo xtask chaos`.
//!
//! * [`NatsCluster`]: a three-node (or n-node) nats-server cluster on loopback with JetStream,
//!   each node with its own store directory, killable and restartable one node at a time.
//! * [`StageFleet`]: the five stage binaries with any number of replicas each, where one replica
//!   can be killed (`kill -9`), terminated (SIGTERM) and started again on its own.
//! * [`Scale`]: how big a run is (jobs in flight, storage outage), from the environment, so the
//!   same test is short when run directly with `cargo test` and full-size in `cargo xtask chaos`.
//! * [`Figures`]: what a run measured, appended as one JSON line to `$VEXXY_CHAOS_REPORT` for
//!   `cargo xtask chaos` to turn into the table in docs/RELIABILITY.md.
//! * [`http_request`]: a bare HTTP/1.0 client for kubesim's control endpoints and `/metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use crate::stack::{STAGES, StageProcess, binary, log_tail};
use crate::{ChildProcess, find_binary, free_port, http_get_status, port_is_open, wait_until};

/// Jobs per scenario when `VEXXY_CHAOS_JOBS` is unset (a direct `cargo test`; `cargo xtask chaos`
/// sets 200).
pub const DEFAULT_JOBS: usize = 40;
/// Jobs per scenario on the real control plane tier when `VEXXY_CHAOS_REAL_JOBS` is unset (a
/// direct `cargo test` and `cargo xtask test` alike: a real kube-apiserver, etcd and the
/// controllers share the 2 cores with the stages, so these runs stay small).
pub const DEFAULT_REAL_JOBS: usize = 30;
/// Storage outage when `VEXXY_CHAOS_S3_OUTAGE` is unset (a direct `cargo test`; `cargo xtask
/// chaos` sets 30 s).
pub const DEFAULT_S3_OUTAGE: Duration = Duration::from_secs(10);
/// Where a run appends its [`Figures`] (one JSON object per line) when set.
pub const REPORT_ENV: &str = "VEXXY_CHAOS_REPORT";

/// The size of a chaos run.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Requests published at once per scenario.
    pub jobs: usize,
    /// Requests published at once per scenario against the real control plane.
    pub real_jobs: usize,
    /// How long the object store is down in the storage-outage scenario.
    pub s3_outage: Duration,
}

impl Scale {
    /// `VEXXY_CHAOS_JOBS` (1..=2000), `VEXXY_CHAOS_REAL_JOBS` (1..=2000) and
    /// `VEXXY_CHAOS_S3_OUTAGE` (seconds, 1..=600), defaulting to the test-suite size. A bad value
    /// is an error naming the variable.
    pub fn from_env() -> anyhow::Result<Self> {
        let jobs = jobs_from_env("VEXXY_CHAOS_JOBS", DEFAULT_JOBS)?;
        let real_jobs = jobs_from_env("VEXXY_CHAOS_REAL_JOBS", DEFAULT_REAL_JOBS)?;
        let s3_outage = match std::env::var("VEXXY_CHAOS_S3_OUTAGE") {
            Ok(text) => text
                .trim()
                .trim_end_matches('s')
                .parse::<u64>()
                .ok()
                .filter(|secs| (1..=600).contains(secs))
                .map(Duration::from_secs)
                .with_context(|| {
                    format!(
                        "VEXXY_CHAOS_S3_OUTAGE={text:?} is not a number of seconds from 1 to 600"
                    )
                })?,
            Err(_) => DEFAULT_S3_OUTAGE,
        };
        Ok(Scale {
            jobs,
            real_jobs,
            s3_outage,
        })
    }
}

fn jobs_from_env(variable: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(variable) {
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|jobs| (1..=2000).contains(jobs))
            .with_context(|| format!("{variable}={text:?} is not a number of jobs from 1 to 2000")),
        Err(_) => Ok(default),
    }
}

/// What one chaos run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    pub scenario: String,
    pub jobs: usize,
    /// The faults injected, in words (e.g. "kill -9 of each stage once, mid-work").
    pub faults: String,
    pub completed: usize,
    pub failed: usize,
    /// Failed jobs per reason code (`image_pull_failed`: 5, ...).
    pub failed_reasons: BTreeMap<String, usize>,
    /// Failed jobs that were expected to fail that way (the pull-fail images).
    pub failed_as_expected: usize,
    /// Jobs for which the downstream subscriber saw more than one outcome event.
    pub duplicates: usize,
    /// Jobs without any outcome when the run gave up waiting.
    pub missing: usize,
    /// Sandbox Deployments still present after the run.
    pub leaked_sandboxes: usize,
    pub wall_seconds: f64,
    /// Anything else worth a column (`kubesim_faults_injected`: 412, ...).
    pub extra: BTreeMap<String, String>,
    /// True when every check of the scenario passed.
    pub passed: bool,
}

impl Figures {
    /// Appends these figures to `$VEXXY_CHAOS_REPORT` (if set) and prints them to stderr.
    pub fn report(&self) -> anyhow::Result<()> {
        let line = serde_json::to_string(self).context("figures serialize to JSON")?;
        eprintln!("chaos figures: {line}");
        let Some(path) = std::env::var_os(REPORT_ENV) else {
            return Ok(());
        };
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "cannot open {REPORT_ENV}={}",
                    PathBuf::from(&path).display()
                )
            })?;
        writeln!(file, "{line}").context("cannot append to the chaos report")?;
        Ok(())
    }
}

/// A minimal HTTP/1.0 request to `127.0.0.1:port`; returns the status code and the body.
/// Enough for kubesim's control endpoints and a stage's `/metrics` without an HTTP client crate.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("cannot connect to 127.0.0.1:{port} for {method} {path}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .with_context(|| format!("cannot send {method} {path} to 127.0.0.1:{port}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("cannot read the answer to {method} {path} from port {port}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP answer to {method} {path}: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status code in the answer to {method} {path}: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The port of an `http://127.0.0.1:PORT` URL.
pub fn port_of(url: &str) -> anyhow::Result<u16> {
    url.trim_end_matches('/')
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .with_context(|| format!("{url} does not end in a port"))
}

/// The value of `vexxy_in_flight` in a stage's `/metrics` (0 when absent).
pub fn in_flight(health_port: u16) -> Option<u64> {
    let (status, body) = http_request(health_port, "GET", "/metrics", None).ok()?;
    if status != 200 {
        return None;
    }
    Some(
        body.lines()
            .filter(|line| line.starts_with("vexxy_in_flight"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|value| value.max(0.0) as u64)
            .sum(),
    )
}

/// When the process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`);
/// `None` when there is no such process (or no `/proc`).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name in parentheses, may hold spaces: count from its closing paren,
    // after which field 3 comes first.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    after_name.split(' ').nth(22 - 3)?.parse().ok()
}

const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One node of a [`NatsCluster`].
struct ClusterNode {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    process: Option<ChildProcess>,
}

/// A nats-server cluster on 127.0.0.1: every node runs JetStream with its own store directory
/// and `server_name`, and routes to every other node, so streams with 3 replicas have a real
/// RAFT group to live in.
pub struct NatsCluster {
    binary: PathBuf,
    dir: TempDir,
    nodes: Vec<ClusterNode>,
}

impl NatsCluster {
    /// Starts `size` nodes and returns once each answers `/healthz` (JetStream up and current
    /// with the meta group).
    pub fn start(size: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            size >= 1,
            "a cluster needs at least one node (asked for {size})"
        );
        let binary = find_binary("VEXXY_NATS_SERVER", "nats-server")?;
        let dir = tempfile::Builder::new()
            .prefix("vexxy-nats-cluster-")
            .tempdir()
            .context("cannot create a temporary directory for the nats cluster")?;
        let nodes = (0..size)
            .map(|index| ClusterNode {
                name: format!("vexxy-n{}", index + 1),
                client_port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                process: None,
            })
            .collect();
        let mut cluster = NatsCluster { binary, dir, nodes };
        for index in 0..size {
            cluster.write_config(index)?;
            cluster.spawn(index)?;
        }
        // A node only reports healthy once it has joined the meta group, which needs a quorum of
        // the others, so all are started before any is waited for.
        for index in 0..size {
            cluster.wait_healthy(index)?;
        }
        Ok(cluster)
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|index| self.url(index))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].client_port)
    }

    pub fn name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    pub fn log_path(&self, index: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.nodes[index].name))
    }

    /// A client connected to all nodes (it fails over like a stage does).
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<async_nats::ServerAddr> = (0..self.nodes.len())
            .map(|index| self.url(index).parse())
            .collect::<Result<_, _>>()
            .context("cluster URLs parse")?;
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(urls)
            .await
            .with_context(|| format!("cannot connect to the nats cluster at {}", self.urls()))
    }

    /// `kill -9` of one node: no chance to hand over leadership or flush.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut process) = self.nodes[index].process.take() {
            process.kill()?;
        }
        let port = self.nodes[index].client_port;
        anyhow::ensure!(
            wait_until(NODE_STOP_TIMEOUT, || !port_is_open(port)),
            "{} still accepts connections after kill -9",
            self.nodes[index].name
        );
        Ok(())
    }

    /// Starts a killed node again with the same ports, name and store; returns once healthy.
    pub fn start_again(&mut self, index: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes[index].process.is_none(),
            "{} is already running",
            self.nodes[index].name
        );
        self.spawn(index)?;
        self.wait_healthy(index)
    }

    /// Node indices whose process exited on its own (a node must run until told to stop).
    pub fn exited(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(|node| {
                let process = node.process.as_mut()?;
                (!process.is_running()).then(|| node.name.clone())
            })
            .collect()
    }

    /// The end of every node's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        (0..self.nodes.len())
            .map(|index| {
                format!(
                    "----- {} ({}) -----\n{}",
                    self.nodes[index].name,
                    self.log_path(index).display(),
                    log_tail(&self.log_path(index), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn config_path(&self, index: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.conf", self.nodes[index].name))
    }

    fn write_config(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let store = self.dir.path().join(format!("{}-store", node.name));
        let routes: Vec<String> = self
            .nodes
            .iter()
            .filter(|other| other.name != node.name)
            .map(|other| format!("\"nats-route://127.0.0.1:{}\"", other.cluster_port))
            .collect();
        let config = format!(
            "server_name: \"{name}\"\n\
             listen: \"127.0.0.1:{client}\"\n\
             http: \"127.0.0.1:{monitor}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n}}\n\
             cluster {{\n  name: \"vexxy-chaos\"\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [{routes}]\n}}\n",
            name = node.name,
            client = node.client_port,
            monitor = node.monitor_port,
            store = store.display(),
            cluster = node.cluster_port,
            routes = routes.join(", "),
        );
        let path = self.config_path(index);
        std::fs::write(&path, config)
            .with_context(|| format!("cannot write the node configuration {}", path.display()))
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command.arg("-c").arg(self.config_path(index));
        let name = self.nodes[index].name.clone();
        let process = ChildProcess::spawn(&name, command, &self.log_path(index))?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    fn wait_healthy(&mut self, index: usize) -> anyhow::Result<()> {
        let monitor_port = self.nodes[index].monitor_port;
        let node = &mut self.nodes[index];
        let process = node
            .process
            .as_mut()
            .with_context(|| format!("{} is not running", node.name))?;
        let ready = wait_until(NODE_READY_TIMEOUT, || {
            http_get_status(monitor_port, "/healthz") == Some(200) || !process.is_running()
        });
        if !ready || !process.is_running() {
            bail!(
                "nats cluster node {} did not become healthy within {NODE_READY_TIMEOUT:?}; the end of its log:\n{}",
                node.name,
                log_tail(process.log_path(), 30)
            );
        }
        Ok(())
    }
}

/// A stage's environment: `(stage, health_file) -> variables`.
type StageEnv = Box<dyn Fn(&str, &Path) -> Vec<(String, String)> + Send + Sync>;

/// The five stages with `replicas` processes each, every one restartable on its own.
///
/// Replica `r` of stage `s` logs to `<dir>/<s>-<r>.log` (a restart appends) and writes its health
/// address to `<dir>/<s>-<r>.addr`.
pub struct StageFleet {
    dir: PathBuf,
    env_of: StageEnv,
    pub replicas: Vec<StageProcess>,
    /// (stage, replica index) per entry of `replicas`.
    pub slots: Vec<(&'static str, usize)>,
}

impl StageFleet {
    /// Starts every stage `replicas` times with the environment `env_of(stage, health_file)`
    /// (plus `PATH`/`HOME`/`TMPDIR` only).
    pub fn start(
        dir: &Path,
        replicas: usize,
        env_of: impl Fn(&str, &Path) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let mut fleet = StageFleet {
            dir: dir.to_path_buf(),
            env_of: Box::new(env_of),
            replicas: Vec::new(),
            slots: Vec::new(),
        };
        for name in STAGES {
            for replica in 0..replicas {
                let process = fleet.spawn(name, replica)?;
                fleet.replicas.push(process);
                fleet.slots.push((name, replica));
            }
        }
        Ok(fleet)
    }

    fn index_of(&self, stage: &str, replica: usize) -> anyhow::Result<usize> {
        self.slots
            .iter()
            .position(|(name, index)| *name == stage && *index == replica)
            .with_context(|| format!("no replica {replica} of {stage} in this fleet"))
    }

    fn spawn(&self, name: &'static str, replica: usize) -> anyhow::Result<StageProcess> {
        let health_file = self.dir.join(format!("{name}-{replica}.addr"));
        let _ = std::fs::remove_file(&health_file);
        let mut command = Command::new(binary(name)?);
        command.env_clear();
        for inherited in ["PATH", "HOME", "TMPDIR"] {
            if let Some(value) = std::env::var_os(inherited) {
                command.env(inherited, value);
            }
        }
        command.envs((self.env_of)(name, &health_file));
        command.current_dir(&self.dir);
        let log = self.dir.join(format!("{name}-{replica}.log"));
        let process = ChildProcess::spawn(&format!("{name}-{replica}"), command, &log)?;
        Ok(StageProcess {
            name,
            process,
            health_file,
        })
    }

    pub fn get(&self, stage: &str, replica: usize) -> anyhow::Result<&StageProcess> {
        Ok(&self.replicas[self.index_of(stage, replica)?])
    }

    pub fn get_mut(&mut self, stage: &str, replica: usize) -> anyhow::Result<&mut StageProcess> {
        let index = self.index_of(stage, replica)?;
        Ok(&mut self.replicas[index])
    }

    /// `kill -9` of one replica.
    pub fn kill(&mut self, stage: &str, replica: usize) -> anyhow::Result<()> {
        self.get_mut(stage, replica)?.process.kill()
    }

    /// Starts a replica again (it must have exited) and waits for it to be ready.
    pub fn start_again(
        &mut self,
        stage: &str,
        replica: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let index = self.index_of(stage, replica)?;
        anyhow::ensure!(
            !self.replicas[index].process.is_running(),
            "{stage}-{replica} is still running"
        );
        let name = self.slots[index].0;
        self.replicas[index] = self.spawn(name, replica)?;
        wait_ready(&mut self.replicas[index], timeout)
    }

    /// Waits until every replica answers `/readyz` with 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for replica in &mut self.replicas {
            let left = deadline.saturating_duration_since(Instant::now());
            wait_ready(replica, left)?;
        }
        Ok(())
    }

    /// (slot name, pid) of every replica, as the harness spawned them.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.replicas
            .iter()
            .zip(&self.slots)
            .map(|(replica, (name, index))| (format!("{name}-{index}"), replica.process.pid()))
            .collect()
    }

    /// (slot name, pid, the kernel's start time of that pid) of every replica, read from
    /// `/proc`: a process restarted behind a test's back differs in its start time even if it got
    /// the same pid back, and a dead one has none.
    pub fn identities(&self) -> Vec<(String, u32, Option<u64>)> {
        self.pids()
            .into_iter()
            .map(|(name, pid)| {
                let started = process_start_ticks(pid);
                (name, pid, started)
            })
            .collect()
    }

    /// Replicas that exited, with their status.
    pub fn exited(&mut self) -> Vec<String> {
        self.replicas
            .iter_mut()
            .filter_map(|replica| match replica.process.try_wait() {
                Ok(Some(status)) => Some(format!("{} ({status})", replica.process.name())),
                _ => None,
            })
            .collect()
    }

    /// The end of every replica's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.replicas
            .iter()
            .map(|replica| {
                format!(
                    "----- {} ({}) -----\n{}",
                    replica.process.name(),
                    replica.process.log_path().display(),
                    log_tail(replica.process.log_path(), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn wait_ready(replica: &mut StageProcess, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = replica.process.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); the end of its log ({}):\n{}",
                replica.process.name(),
                replica.process.log_path().display(),
                log_tail(replica.process.log_path(), 30)
            );
        }
        if replica
            .health_port()
            .is_some_and(|port| http_get_status(port, "/readyz") == Some(200))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not become ready within {timeout:?}; the end of its log ({}):\n{}",
                replica.process.name(),
                replica.process.log_path().display(),
                log_tail(replica.process.log_path(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_of_reads_the_port() {
        assert_eq!(port_of("http://127.0.0.1:4321").unwrap(), 4321);
        assert_eq!(port_of("http://127.0.0.1:4321/").unwrap(), 4321);
        assert!(port_of("http://127.0.0.1").is_err());
    }

    #[test]
    fn figures_round_trip_through_json() {
        let figures = Figures {
            scenario: "kill".into(),
            jobs: 3,
            completed: 2,
            failed: 1,
            failed_reasons: [("image_pull_failed".to_string(), 1)].into(),
            passed: true,
            ..Figures::default()
        };
        let line = serde_json::to_string(&figures).unwrap();
        assert_eq!(serde_json::from_str::<Figures>(&line).unwrap(), figures);
    }

    #[test]
    fn a_three_node_cluster_survives_one_node_restart() {
        let mut cluster = NatsCluster::start(3).expect("cluster starts");
        assert_eq!(cluster.urls().split(',').count(), 3);
        cluster.kill(1).expect("kill -9 node 2");
        cluster.start_again(1).expect("node 2 rejoins");
        assert!(cluster.exited().is_empty(), "{}", cluster.log_tails(20));
    }
}
