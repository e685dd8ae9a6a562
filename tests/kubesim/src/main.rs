//! The `kubesim` binary: a local Kubernetes API server with a Kubescape emulator.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kubesim::{Config, FaultRule, Generation, GenerationOverride, Server};

/// A local Kubernetes API server (plain HTTP on 127.0.0.1) with controllers and a Kubescape
/// emulator, for tests and the demo. Runtime controls live under /kubesim/ on the same port.
#[derive(Debug, Parser)]
#[command(name = "kubesim", version)]
struct Cli {
    /// Port on 127.0.0.1 (0 = a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a kubeconfig (cluster/context/user `kubesim`) here once listening.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Write the server URL here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Seed for pod names and fault draws (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value = "kubesim")]
    cluster_name: String,
    /// Most events kept in the watch history, a memory bound (older resourceVersions get 410
    /// Gone).
    #[arg(long, default_value_t = 1_000_000)]
    watch_history: usize,
    /// Seconds an event stays in the watch history (a real API server: etcd's 5-minute
    /// compaction).
    #[arg(long, default_value_t = 300)]
    watch_history_seconds: u64,

    /// Pod creation -> running.
    #[arg(long, default_value_t = 500)]
    pod_start_delay_ms: u64,
    /// Default node-agent learning period (pod label kubescape.io/max-sniffing-time overrides).
    #[arg(long, default_value_t = 5_000)]
    learning_period_ms: u64,
    /// node-agent's first ContainerProfile save (`initialDelay`; chart
    /// `nodeAgent.config.learningPeriod`, default 2m). Only a container still learning then gets
    /// a `ready` profile and a learning-time scan.
    #[arg(long, default_value_t = 120_000)]
    first_save_delay_ms: u64,
    /// Storage's consolidation period (real: 30 s): a profile save shows in the consolidated
    /// profile up to this long after it.
    #[arg(long, default_value_t = 500)]
    consolidation_delay_ms: u64,
    /// Consolidated profile version ready/completed -> kubevuln writes.
    #[arg(long, default_value_t = 500)]
    scan_delay_ms: u64,
    #[arg(long, default_value_t = 1_000)]
    bookmark_interval_ms: u64,

    /// Image substrings that fail to pull (repeatable).
    #[arg(long = "pull-fail-pattern", default_values_t = vec!["pull-fail".to_string()])]
    pull_fail: Vec<String>,
    /// Image substrings that crash-loop (repeatable).
    #[arg(long = "crashloop-pattern", default_values_t = vec!["crashloop".to_string()])]
    crashloop: Vec<String>,
    /// Image substrings whose container exits 1 once, then runs after a restart (repeatable).
    #[arg(long = "crash-once-pattern", default_values_t = vec!["crash-once".to_string()])]
    crash_once: Vec<String>,
    /// Image substrings that cannot be scheduled (repeatable).
    #[arg(long = "unschedulable-pattern", default_values_t = vec!["unschedulable".to_string()])]
    unschedulable: Vec<String>,

    /// Added latency per API request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fault rule as JSON, e.g. '{"verb":"get","resource":"pods","status":500,"rate":0.5,"max":3}' (repeatable).
    #[arg(long = "fault")]
    faults: Vec<String>,
    #[arg(long)]
    watch_drop_after_events: Option<u64>,
    #[arg(long)]
    watch_drop_after_ms: Option<u64>,
    #[arg(long, default_value_t = 1)]
    retry_after_seconds: u64,

    /// Start without Kubescape installed.
    #[arg(long)]
    no_kubescape: bool,
    /// capabilities.vexGeneration
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    vex_generation: bool,
    /// kubevuln.config.storeFilteredSboms
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    store_filtered_sbom: bool,
    /// capabilities.relevancy
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    relevancy: bool,
    /// storage.enabled
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    storage: bool,
    /// Emulated kubevuln: v0.3.159 or main.
    #[arg(long, default_value = "v0.3.159")]
    kubevuln_generation: Generation,
    /// Per-image override PATTERN=GENERATION (repeatable).
    #[arg(long = "generation-override")]
    generation_overrides: Vec<String>,
    /// DIGEST=LIKE: the image DIGEST holds what the image LIKE holds (repeatable), e.g. a real
    /// image a test built from a fixture's files (`kubesim::catalogue::image_files`).
    #[arg(long = "same-content")]
    same_content: Vec<String>,
    /// Storage VEX cleanup interval (None = off).
    #[arg(long)]
    vex_cleanup_interval_ms: Option<u64>,
    /// Be Kubescape for the real cluster this kubeconfig reaches: serve only the storage API,
    /// over HTTPS, registered with that cluster's API server, and emulate node-agent and
    /// kubevuln for its pods.
    #[arg(long)]
    upstream_kubeconfig: Option<PathBuf>,
    /// Namespaces node-agent ignores (repeatable).
    #[arg(long = "excluded-namespace", default_values_t = vec!["kubescape".to_string(), "kube-system".to_string()])]
    excluded_namespaces: Vec<String>,
}

impl Cli {
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = Config {
            port: self.port,
            seed: self.seed,
            cluster_name: self.cluster_name.clone(),
            watch_history: self.watch_history,
            watch_history_seconds: self.watch_history_seconds,
            ..Config::default()
        };
        c.timings.pod_start_delay_ms = self.pod_start_delay_ms;
        c.timings.learning_period_ms = self.learning_period_ms;
        c.timings.first_save_delay_ms = self.first_save_delay_ms;
        c.timings.consolidation_delay_ms = self.consolidation_delay_ms;
        c.timings.scan_delay_ms = self.scan_delay_ms;
        c.timings.bookmark_interval_ms = self.bookmark_interval_ms;
        c.failures.pull_fail = self.pull_fail.clone();
        c.failures.crashloop = self.crashloop.clone();
        c.failures.crash_once = self.crash_once.clone();
        c.failures.unschedulable = self.unschedulable.clone();
        c.faults.latency_ms = self.latency_ms;
        c.faults.watch_drop_after_events = self.watch_drop_after_events;
        c.faults.watch_drop_after_ms = self.watch_drop_after_ms;
        c.faults.retry_after_seconds = self.retry_after_seconds;
        for f in &self.faults {
            let rule: FaultRule = serde_json::from_str(f)
                .with_context(|| format!("--fault {f:?} is not a fault rule (see --help)"))?;
            c.faults.rules.push(rule);
        }
        let k = &mut c.kubescape;
        k.installed = !self.no_kubescape;
        k.capabilities.vex_generation = self.vex_generation;
        k.capabilities.store_filtered_sbom = self.store_filtered_sbom;
        k.capabilities.relevancy = self.relevancy;
        k.capabilities.storage = self.storage;
        k.generation = self.kubevuln_generation;
        for o in &self.generation_overrides {
            let (pattern, generation) = o.split_once('=').with_context(|| {
                format!("--generation-override {o:?}: expected PATTERN=GENERATION, e.g. nginx=main")
            })?;
            let generation = generation
                .parse::<Generation>()
                .map_err(anyhow::Error::msg)?;
            k.generation_overrides.push(GenerationOverride {
                pattern: pattern.to_string(),
                generation,
            });
        }
        k.vex_cleanup_interval_ms = self.vex_cleanup_interval_ms;
        k.excluded_namespaces = self.excluded_namespaces.clone();
        c.upstream_kubeconfig = self
            .upstream_kubeconfig
            .as_ref()
            .map(|path| path.display().to_string());
        Ok(c)
    }

    /// `--same-content`: content is a function of the digest, kept process-wide.
    fn declare_same_content(&self) -> anyhow::Result<()> {
        for declared in &self.same_content {
            let (digest, like) = declared.split_once('=').with_context(|| {
                format!("--same-content {declared:?}: expected DIGEST=LIKE, two sha256: digests")
            })?;
            kubesim::catalogue::declare_same_content(digest, like);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kubesim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = cli.config()?;
    cli.declare_same_content()?;
    let handle = Server::start(config)
        .await
        .context("kubesim could not start")?;
    let url = handle.url();
    if let Some(path) = &cli.kubeconfig {
        handle
            .write_kubeconfig(path)
            .context("writing the kubeconfig")?;
    }
    if let Some(path) = &cli.ready_file {
        write_atomically(path, &format!("{url}\n"))
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    println!("{url}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    handle.shutdown().await;
    Ok(())
}

/// Writes `text` to a temporary file beside `path`, then renames it into place: whoever waits
/// for the ready file to exist must never read it empty or half-written (`std::fs::write`
/// creates the file before writing to it).
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}
