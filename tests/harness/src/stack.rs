//! The vexxy pipeline as real processes: kubesim and the five stage binaries, each a
//! [`ChildProcess`] with its own log, plus the environment every stage of a local stack shares.
//!
//! Used by the end-to-end test (short timings, everything in a temporary directory) and by
//! `cargo xtask` (which runs the same binaries detached, see `xtask/src/stack.rs`): what both need
//! — where the binaries are, the local-stack environment of a stage, reading a stage's health
//! address file, log tails for failure messages — lives here once.
//!
//! The binaries are the ones cargo built into the target directory (`cargo build --bins`);
//! [`build_binaries`] runs that build when the caller runs under cargo, so a test never exercises
//! a stale binary.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{ChildProcess, http_get_status, wait_until};

/// The stage binaries in pipeline order.
pub const STAGES: [&str; 5] = [
    "vexxy-install-check",
    "vexxy-deploy",
    "vexxy-wait",
    "vexxy-extract",
    "vexxy-enrich",
];
pub const KUBESIM: &str = "kubesim";
/// The packages whose binaries a stack runs (each package's binary has the package's name).
pub const STACK_BINARIES: [&str; 6] = [
    KUBESIM,
    "vexxy-install-check",
    "vexxy-deploy",
    "vexxy-wait",
    "vexxy-extract",
    "vexxy-enrich",
];

/// Set (to anything) by `cargo xtask test` once it has built every workspace binary.
pub const PREBUILT_ENV: &str = "VEXXY_STACK_PREBUILT";

/// `cargo build --bins` for kubesim and the stages, with the cargo that runs us (cargo sets
/// `CARGO` for the tests and programs it runs). Outside cargo nothing is built and the binaries
/// must already exist ([`binary`] says how to build them when they do not).
///
/// Up to date binaries make this a fingerprint check of a second or two; it waits for cargo's
/// lock when someone else is building in the same target directory.
pub fn build_binaries(workspace: &Path) -> anyhow::Result<()> {
    // `cargo xtask test` builds every workspace binary before the suite and says so. Building
    // again here would be worse than redundant: a `--package` build unifies dependency features
    // differently from the workspace build, so it recompiles kube, rustls and friends inside a
    // test's time limit while holding cargo's lock against every other test.
    if std::env::var_os(PREBUILT_ENV).is_some() {
        return Ok(());
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut command = Command::new(&cargo);
    command.args(["build", "--bins"]);
    for package in STACK_BINARIES {
        command.args(["--package", package]);
    }
    let started = Instant::now();
    let output = command
        .current_dir(workspace)
        .output()
        .with_context(|| format!("cannot run {} build", PathBuf::from(&cargo).display()))?;
    if !output.status.success() {
        bail!(
            "`cargo build --bins` of the stack's binaries failed ({}):\n{}",
            output.status,
            tail_of(&String::from_utf8_lossy(&output.stderr), 40)
        );
    }
    eprintln!(
        "stack: binaries built/up to date in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The directory cargo puts binaries in for the profile that built the running executable.
///
/// A test executable lives in `target/<profile>/deps/`, xtask in `target/<profile>/`; the
/// binaries are in `target/<profile>/`. `VEXXY_BIN_DIR` overrides (e.g. release binaries).
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VEXXY_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find the running executable's path")?;
    let dir = exe
        .parent()
        .context("the running executable has no parent directory")?;
    Ok(if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

/// The path of a built binary, or an error saying how to build it.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = binary_dir()?.join(name);
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "the binary {name} is not built (looked for {}); run `cargo build --bins --package {name}` \
         (or `cargo xtask test`, which builds every binary first), or set VEXXY_BIN_DIR to where it is",
        path.display()
    )
}

/// The issuer of a local stack's VEX documents (`VEXXY_VEX_AUTHOR`, `VEXXY_VEX_ID_BASE`).
pub const LOCAL_VEX_AUTHOR: &str = "local vexxy stack (not for publication)";
pub const LOCAL_VEX_ID_BASE: &str = "urn:vexxy-local:analyses";

/// The shortest analysis window the local stack (`cargo xtask up`) accepts, as
/// `VEXXY_MIN_ANALYSIS_DURATION` (production default is a minute). Tests that stand in for the
/// local stack, such as the executed docs, use it too.
pub const LOCAL_MIN_ANALYSIS_SECONDS: u64 = 2;

/// Where a stack's processes run: cluster, broker and store.
#[derive(Debug, Clone)]
pub struct StackEndpoints {
    pub nats_url: String,
    /// `VEXXY_STORE`: `file:///dir` or `s3://bucket`.
    pub store: String,
    pub kubeconfig: PathBuf,
}

/// The environment of a stage in a local stack (kubesim, local NATS): health on a free port
/// written to `health_file`, the sandbox namespace created on demand (kubesim starts with only the
/// standard namespaces; in a real cluster it is the operator's to create), and analysis windows
/// down to `min_analysis_seconds`. Callers add their own settings after these (later wins).
pub fn local_stage_env(
    endpoints: &StackEndpoints,
    health_file: &Path,
    min_analysis_seconds: u64,
) -> Vec<(String, String)> {
    vec![
        ("NATS_URL".into(), endpoints.nats_url.clone()),
        ("VEXXY_STORE".into(), endpoints.store.clone()),
        (
            "KUBECONFIG".into(),
            endpoints.kubeconfig.display().to_string(),
        ),
        ("K8S_IN_CLUSTER".into(), "false".into()),
        ("VEXXY_HEALTH_ADDR".into(), "127.0.0.1:0".into()),
        (
            "VEXXY_HEALTH_ADDR_FILE".into(),
            health_file.display().to_string(),
        ),
        ("VEXXY_CREATE_SANDBOX_NAMESPACE".into(), "true".into()),
        (
            "VEXXY_MIN_ANALYSIS_DURATION".into(),
            min_analysis_seconds.to_string(),
        ),
        // Documents of a local stack are nobody's claim: named so, never a borrowed identity.
        ("VEXXY_VEX_AUTHOR".into(), LOCAL_VEX_AUTHOR.into()),
        ("VEXXY_VEX_ID_BASE".into(), LOCAL_VEX_ID_BASE.into()),
        (
            "RUST_LOG".into(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ]
}

/// The port in a stage's health address file (`127.0.0.1:PORT`), once the stage wrote it.
pub fn health_port(file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    text.trim().rsplit_once(':')?.1.parse().ok()
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    tail_of(&std::fs::read_to_string(path).unwrap_or_default(), lines)
}

fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `kubesim` binary as a child process, with its kubeconfig written.
pub struct KubesimProcess {
    process: ChildProcess,
    url: String,
    kubeconfig: PathBuf,
}

const KUBESIM_READY_TIMEOUT: Duration = Duration::from_secs(20);

impl KubesimProcess {
    /// Starts kubesim with `args` (its command-line flags), writing its kubeconfig, ready file and
    /// log into `dir`; returns once it listens.
    pub fn start(dir: &Path, args: &[String]) -> anyhow::Result<Self> {
        let kubeconfig = dir.join("kubeconfig");
        let ready_file = dir.join("kubesim.ready");
        let _ = std::fs::remove_file(&ready_file);
        let mut command = Command::new(binary(KUBESIM)?);
        command
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(args);
        let mut process = ChildProcess::spawn(KUBESIM, command, &dir.join("kubesim.log"))?;
        // Complete means the URL and its newline: kubesim renames the file into place, and
        // checking the content as well keeps a reader from ever taking a half-written file.
        let ready = wait_until(KUBESIM_READY_TIMEOUT, || {
            std::fs::read_to_string(&ready_file).is_ok_and(|text| text.ends_with('\n'))
                || !process.is_running()
        });
        let url = std::fs::read_to_string(&ready_file)
            .map(|text| text.trim().to_string())
            .unwrap_or_default();
        if !ready || url.is_empty() || !process.is_running() {
            let logs = log_tail(process.log_path(), 30);
            let _ = process.kill();
            bail!(
                "kubesim did not start within {KUBESIM_READY_TIMEOUT:?}; the end of its log ({}):\n{logs}",
                dir.join("kubesim.log").display()
            );
        }
        Ok(KubesimProcess {
            process,
            url,
            kubeconfig,
        })
    }

    /// `http://127.0.0.1:<port>`: the API and the `/kubesim/...` controls.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

/// One stage binary running, with the file it writes its health address to.
pub struct StageProcess {
    pub name: &'static str,
    pub process: ChildProcess,
    pub health_file: PathBuf,
}

impl StageProcess {
    /// The health port once the stage has bound it.
    pub fn health_port(&self) -> Option<u16> {
        health_port(&self.health_file)
    }
}

/// The five stages as child processes (killed when dropped).
pub struct Pipeline {
    pub stages: Vec<StageProcess>,
}

impl Pipeline {
    /// Starts every stage with the environment `env_of(stage, health_file)` (only that
    /// environment plus `PATH`/`HOME`: nothing of the caller's leaks into a stage); logs go to
    /// `<log_dir>/<stage>.log`.
    pub fn start(
        log_dir: &Path,
        env_of: impl Fn(&str, &Path) -> Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let mut stages = Vec::new();
        for name in STAGES {
            let health_file = log_dir.join(format!("{name}.addr"));
            let _ = std::fs::remove_file(&health_file);
            let mut command = Command::new(binary(name)?);
            command.env_clear();
            for inherited in ["PATH", "HOME", "TMPDIR"] {
                if let Some(value) = std::env::var_os(inherited) {
                    command.env(inherited, value);
                }
            }
            command.envs(env_of(name, &health_file));
            command.current_dir(log_dir);
            let process = ChildProcess::spawn(name, command, &log_dir.join(format!("{name}.log")))?;
            stages.push(StageProcess {
                name,
                process,
                health_file,
            });
        }
        Ok(Pipeline { stages })
    }

    /// Waits until every stage answers `/readyz` with 200 (connected, streams and consumers
    /// provisioned). Fails at once with the stage's log when one exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for stage in &mut self.stages {
            loop {
                if let Some(status) = stage.process.try_wait()? {
                    bail!(
                        "{} exited during start-up ({status}); the end of its log ({}):\n{}",
                        stage.name,
                        stage.process.log_path().display(),
                        log_tail(stage.process.log_path(), 30)
                    );
                }
                if stage
                    .health_port()
                    .is_some_and(|port| http_get_status(port, "/readyz") == Some(200))
                {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} did not become ready within {timeout:?}; the end of its log ({}):\n{}",
                        stage.name,
                        stage.process.log_path().display(),
                        log_tail(stage.process.log_path(), 30)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn stage(&self, name: &str) -> Option<&StageProcess> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    /// Stages that exited, with their status (a stage must run until told to stop).
    pub fn exited(&mut self) -> Vec<(&'static str, ExitStatus)> {
        self.stages
            .iter_mut()
            .filter_map(|stage| match stage.process.try_wait() {
                Ok(Some(status)) => Some((stage.name, status)),
                _ => None,
            })
            .collect()
    }

    /// The last `lines` lines of every stage's log, each under a header naming the file.
    pub fn log_tails(&self, lines: usize) -> String {
        self.stages
            .iter()
            .map(|stage| {
                format!(
                    "----- {} ({}) -----\n{}",
                    stage.name,
                    stage.process.log_path().display(),
                    log_tail(stage.process.log_path(), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM to every stage at once, then waits up to `grace` for each; returns each stage's
    /// exit status or the error of a stage that had to be killed.
    pub fn terminate(
        &mut self,
        grace: Duration,
    ) -> Vec<(&'static str, anyhow::Result<ExitStatus>)> {
        for stage in &self.stages {
            let _ = stage.process.signal(libc::SIGTERM);
        }
        self.stages
            .iter_mut()
            .map(|stage| (stage.name, stage.process.terminate(grace)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_port_reads_the_address_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("stage.addr");
        assert_eq!(health_port(&file), None);
        std::fs::write(&file, "127.0.0.1:38123\n").expect("write");
        assert_eq!(health_port(&file), Some(38123));
        std::fs::write(&file, "not an address").expect("write");
        assert_eq!(health_port(&file), None);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        assert_eq!(tail_of("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_of("a", 5), "a");
        assert_eq!(log_tail(Path::new("/nonexistent/vexxy.log"), 3), "");
    }

    #[test]
    fn local_stage_env_points_at_the_stack() {
        let endpoints = StackEndpoints {
            nats_url: "nats://127.0.0.1:4222".into(),
            store: "s3://bucket".into(),
            kubeconfig: PathBuf::from("/tmp/kubeconfig"),
        };
        let env = local_stage_env(&endpoints, Path::new("/tmp/stage.addr"), 2);
        let get = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("NATS_URL"), Some("nats://127.0.0.1:4222"));
        assert_eq!(get("VEXXY_STORE"), Some("s3://bucket"));
        assert_eq!(get("KUBECONFIG"), Some("/tmp/kubeconfig"));
        assert_eq!(get("VEXXY_HEALTH_ADDR_FILE"), Some("/tmp/stage.addr"));
        assert_eq!(get("VEXXY_MIN_ANALYSIS_DURATION"), Some("2"));
    }
}
