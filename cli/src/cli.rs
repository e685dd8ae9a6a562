//! Commands and flags. Every data-printing command takes `-o table|json|yaml`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const MAIN_HELP: &str = "\
Examples:
  # analyse an image for 5 minutes and wait for the verdict
  vexxy submit ghcr.io/acme/payments-api@sha256:4f2c...556a --duration 300 --wait
  # follow a job, fetch its documents, check them against your scanner
  vexxy watch j1a2b3c4d5e6f7a8b9c0d1e2f3
  vexxy results j1a2b3c4d5e6f7a8b9c0d1e2f3 --out ./vex
  grype ghcr.io/acme/payments-api@sha256:4f2c...556a -o json > grype.json
  vexxy apply --vex ./vex/vex.openvex.json --report grype.json

Configuration (same variables as the vexxy stages; flags win):
  NATS_URL (default nats://127.0.0.1:4222), NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY,
  NATS_CREDS, NATS_TLS_*; VEXXY_STORE (file:///dir or s3://bucket[/prefix]) with AWS_* for S3.
  A local stack: `cargo xtask up`.

Exit codes: 0 ok / job completed, 1 job failed, 2 bad input, 3 vexxy unreachable or not set up.";

#[derive(Debug, Parser)]
#[command(name = "vexxy", version, about = "Runtime-verified VEX for container images", after_help = MAIN_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectionFlags {
    /// NATS server URL(s), comma-separated [env: NATS_URL]
    #[arg(long, global = true)]
    pub nats_url: Option<String>,
    /// Object store of the results: file:///dir or s3://bucket[/prefix] [env: VEXXY_STORE]
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// How long to wait for the NATS connection.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit an image for analysis; prints the job id.
    #[command(after_help = "\
Examples:
  vexxy submit docker.io/library/nginx@sha256:6a59...b3ae
  vexxy submit ghcr.io/acme/api@sha256:4f2c...556a --duration 600 --env PORT=8080 \\
      --command /app/server --args --listen --args :8080 --port 8080 --label team=payments --wait
  vexxy submit --file request.json

The request is validated locally with the same rules the service applies, so a mistake is
reported at once (exit 2). It is published on vexxy.analysis.requested with a Nats-Msg-Id
(--msg-id, or a fresh one), which names the job unless --job-id is given.")]
    Submit(SubmitArgs),
    /// Show a job's state and stage.
    #[command(after_help = "Example:\n  vexxy status j1a2b3c4d5e6f7a8b9c0d1e2f3 -o json")]
    Status {
        job_id: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Follow a job stage by stage until it completes (exit 0) or fails (exit 1).
    #[command(after_help = "\
Example:
  vexxy watch j1a2b3c4d5e6f7a8b9c0d1e2f3 --timeout 15m

A spinner on a terminal; one line per change when piped.")]
    Watch(WatchArgs),
    /// Download a completed job's documents: OpenVEX, CycloneDX VEX, filtered SBOM, summary.
    #[command(after_help = "Example:\n  vexxy results j1a2b3c4d5e6f7a8b9c0d1e2f3 --out ./vex")]
    Results {
        job_id: String,
        /// Directory to write the documents to (default ./<job_id>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List recent jobs and their state.
    #[command(after_help = "Example:\n  vexxy list --limit 50 -o yaml")]
    List {
        /// At most this many jobs, most recently updated first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Print completed and failed events as they arrive (the reference downstream consumer).
    #[command(after_help = "\
Examples:
  vexxy subscribe                       # new events, ephemeral consumer
  vexxy subscribe --durable ci-results  # resumes where the last run stopped
  vexxy subscribe --all --count 10 -o json")]
    Subscribe(SubscribeArgs),
    /// Apply an OpenVEX document to a Grype or Trivy JSON report: suppressed findings are removed
    /// (or marked with --mark); the count goes to stderr.
    #[command(after_help = "\
Examples:
  grype IMAGE@DIGEST -o json > grype.json
  vexxy apply --vex vex.openvex.json --report grype.json > grype.filtered.json
  trivy image --format json IMAGE@DIGEST > trivy.json
  vexxy apply --vex vex.openvex.json --report trivy.json --mark

A finding is suppressed the way Grype and Trivy do it: a statement for the same vulnerability
(id or alias) with status not_affected or fixed, whose product matches the scanned image's
pkg:oci purl (type, name, digest, and every qualifier the VEX gives) and, when the statement
names subcomponents, one of them matches the finding's package purl.")]
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The image, pinned: REPOSITORY[:TAG]@sha256:<64 hex>.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub image: Option<String>,
    /// A request document (JSON, as published on vexxy.analysis.requested); `-` reads stdin.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Seconds the workload runs under observation.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Environment variable for the workload, NAME=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_pair)]
    pub environment: Vec<(String, String)>,
    /// Replace the image entrypoint (repeat for each element).
    #[arg(long, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Replace the image arguments (repeat for each element).
    #[arg(long, allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Container port to declare (repeatable).
    #[arg(long)]
    pub port: Vec<u16>,
    /// Label echoed in every event, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// Choose the job id instead of deriving it from the message id.
    #[arg(long)]
    pub job_id: Option<String>,
    /// The Nats-Msg-Id to publish with (default: a fresh `vexxy-cli-<uuid>`).
    #[arg(long)]
    pub msg_id: Option<String>,
    /// Follow the job until it finishes (as `vexxy watch`).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    pub job_id: String,
    /// Give up (exit 3) after this long without the job finishing.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Use (or create) this durable consumer, so a restart resumes where it stopped.
    #[arg(long)]
    pub durable: Option<String>,
    /// Start from the oldest event still in the stream instead of new events only.
    #[arg(long)]
    pub all: bool,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<usize>,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The OpenVEX document (vexxy's vex.openvex.json or any OpenVEX 0.2.0).
    #[arg(long)]
    pub vex: PathBuf,
    /// A Grype (`-o json`) or Trivy (`--format json`) report; the format is detected.
    #[arg(long)]
    pub report: PathBuf,
    /// Keep suppressed findings, marked with the VEX status instead of removed.
    #[arg(long)]
    pub mark: bool,
}

fn parse_pair(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {value:?}"))
}

fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    vexxy_runtime::config::parse_duration(value)
}
