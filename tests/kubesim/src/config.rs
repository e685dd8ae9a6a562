//! Everything that can be set at start (and most of it at run time through `/kubesim/...`).
//! All durations are milliseconds so the same JSON works for the control endpoints.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Seed for pod names and fault draws; None = from the clock.
    pub seed: Option<u64>,
    /// Cluster name used in wlids and the Kubescape configuration.
    pub cluster_name: String,
    /// Most events kept in the watch history (a memory bound); a watch from an older
    /// resourceVersion gets 410 Gone.
    pub watch_history: usize,
    /// How long events stay in the watch history. A real API server serves watches from etcd's
    /// history, compacted every 5 minutes by default (`--etcd-compaction-interval`), so a
    /// resourceVersion stays watchable for about that long however many events happen.
    pub watch_history_seconds: u64,
    pub timings: Timings,
    pub failures: FailurePatterns,
    pub faults: Faults,
    pub kubescape: KubescapeConfig,
    /// A real cluster's kubeconfig: kubesim then serves only Kubescape's storage API, over
    /// HTTPS, as an aggregated API server of that cluster, and emulates node-agent and kubevuln
    /// for its pods (see `upstream`). None: kubesim is the whole cluster.
    pub upstream_kubeconfig: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            seed: None,
            cluster_name: "kubesim".into(),
            watch_history: 1_000_000,
            watch_history_seconds: 300,
            timings: Timings::default(),
            failures: FailurePatterns::default(),
            faults: Faults::default(),
            kubescape: KubescapeConfig::default(),
            upstream_kubeconfig: None,
        }
    }
}

/// How fast things move.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timings {
    /// Pod creation -> containers running (and the step between failure states).
    pub pod_start_delay_ms: u64,
    /// Default node-agent learning period when the pod has no `kubescape.io/max-sniffing-time` label.
    pub learning_period_ms: u64,
    /// node-agent's first ContainerProfile save: its `initialDelay`, set by the chart's
    /// `nodeAgent.config.learningPeriod` (default 2m). A Kubescape setting, not machinery speed:
    /// only a container still learning at its first save ever has a `ready` (learning-time)
    /// profile and a learning-time scan; for one whose learning ends earlier the first save is
    /// the one at the end of learning, and its profile first appears `completed`.
    pub first_save_delay_ms: u64,
    /// Kubescape storage's consolidation period (`containerprofile_processor.go`: 30 s): every
    /// this long, the per-save objects `<slug>-<32 hex>` node-agent wrote since are merged into
    /// the consolidated profile `<slug>` and deleted, so a save shows in `<slug>` up to this
    /// long after it. 0: at once.
    pub consolidation_delay_ms: u64,
    /// A consolidated profile version (`ready`, or `completed`) -> kubevuln's ScanCP writes
    /// (operator cooldown + scan time).
    pub scan_delay_ms: u64,
    /// Interval between BOOKMARK events on watches that ask for them.
    pub bookmark_interval_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            pod_start_delay_ms: 500,
            learning_period_ms: 5_000,
            first_save_delay_ms: 120_000,
            consolidation_delay_ms: 500,
            scan_delay_ms: 500,
            bookmark_interval_ms: 1_000,
        }
    }
}

impl Timings {
    pub fn pod_start_delay(&self) -> Duration {
        Duration::from_millis(self.pod_start_delay_ms)
    }
    pub fn learning_period(&self) -> Duration {
        Duration::from_millis(self.learning_period_ms)
    }
    pub fn first_save_delay(&self) -> Duration {
        Duration::from_millis(self.first_save_delay_ms)
    }
    pub fn consolidation_delay(&self) -> Duration {
        Duration::from_millis(self.consolidation_delay_ms)
    }
    pub fn scan_delay(&self) -> Duration {
        Duration::from_millis(self.scan_delay_ms)
    }
}

/// Image patterns (substrings of the image reference) that fail like real clusters fail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FailurePatterns {
    /// ErrImagePull, then ImagePullBackOff.
    pub pull_fail: Vec<String>,
    /// Runs, exits 1, CrashLoopBackOff with growing restartCount.
    pub crashloop: Vec<String>,
    /// Runs, exits 1 once, backs off, then runs for good (restartCount 1, `lastState` the exit).
    pub crash_once: Vec<String>,
    /// Stays Pending: PodScheduled False, reason Unschedulable.
    pub unschedulable: Vec<String>,
}

impl Default for FailurePatterns {
    fn default() -> Self {
        FailurePatterns {
            pull_fail: vec!["pull-fail".into()],
            crashloop: vec!["crashloop".into()],
            crash_once: vec!["crash-once".into()],
            unschedulable: vec!["unschedulable".into()],
        }
    }
}

/// Injected faults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API request (not to `/kubesim/...`).
    pub latency_ms: u64,
    pub rules: Vec<FaultRule>,
    /// Close every watch after this many events were sent.
    pub watch_drop_after_events: Option<u64>,
    /// Close every watch after this long.
    pub watch_drop_after_ms: Option<u64>,
    /// The `Retry-After` seconds of injected 429s.
    pub retry_after_seconds: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            rules: Vec::new(),
            watch_drop_after_events: None,
            watch_drop_after_ms: None,
            retry_after_seconds: 1,
        }
    }
}

/// Fail a share of the requests of one verb on one resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// get, list, watch, create, update, patch, delete, deletecollection, or "*".
    #[serde(default = "star")]
    pub verb: String,
    /// Plural as in the counters (`pods`, `deployments.apps`, `pods/status`,
    /// `openvulnerabilityexchangecontainers.spdx.softwarecomposition.kubescape.io`) or "*".
    #[serde(default = "star")]
    pub resource: String,
    /// 500, 429 or 409.
    pub status: u16,
    /// Share of matching requests that fail, 0.0..=1.0.
    #[serde(default = "one")]
    pub rate: f64,
    /// Stop after this many injected failures (None = unbounded).
    #[serde(default)]
    pub max: Option<u64>,
}

fn star() -> String {
    "*".into()
}
fn one() -> f64 {
    1.0
}

/// The kubevuln release whose output is emulated.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum Generation {
    /// The release the current chart pins (swapped fields, appended duplicates, version from 0).
    #[serde(rename = "v0.3.159")]
    #[default]
    V0_3_159,
    /// Unreleased main.
    #[serde(rename = "main")]
    Main,
}

impl std::str::FromStr for Generation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v0.3.159" | "0.3.159" => Ok(Generation::V0_3_159),
            "main" => Ok(Generation::Main),
            other => Err(format!(
                "unknown kubevuln generation {other:?}: use v0.3.159 or main"
            )),
        }
    }
}

/// Kubescape's installation and behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubescapeConfig {
    pub installed: bool,
    pub capabilities: Capabilities,
    pub generation: Generation,
    /// First matching pattern (substring of the image) wins over `generation`.
    pub generation_overrides: Vec<GenerationOverride>,
    /// Delete VEX objects whose instance is no longer running, this often (storage cleanup);
    /// None = never.
    pub vex_cleanup_interval_ms: Option<u64>,
    /// Namespaces node-agent ignores.
    pub excluded_namespaces: Vec<String>,
}

impl Default for KubescapeConfig {
    fn default() -> Self {
        KubescapeConfig {
            installed: true,
            capabilities: Capabilities::default(),
            generation: Generation::default(),
            generation_overrides: Vec::new(),
            vex_cleanup_interval_ms: None,
            excluded_namespaces: vec!["kubescape".into(), "kube-system".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenerationOverride {
    pub pattern: String,
    pub generation: Generation,
}

/// The chart capabilities that decide what kubevuln and node-agent produce; rendered into the
/// `ks-cloud-config` ConfigMap exactly as the chart's `cloudapi-configmap.yaml` does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// `capabilities.vexGeneration == enable` -> `vexGeneration`.
    pub vex_generation: bool,
    /// `kubevuln.config.storeFilteredSboms` -> `storeFilteredSbom`.
    pub store_filtered_sbom: bool,
    /// `capabilities.relevancy == enable` -> `relevantImageVulnerabilitiesEnabled`; off = no profiles.
    pub relevancy: bool,
    /// `storage.enabled` -> `storage`.
    pub storage: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            vex_generation: true,
            store_filtered_sbom: true,
            relevancy: true,
            storage: true,
        }
    }
}
