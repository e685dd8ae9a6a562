//! A private JetStream-enabled nats-server for one test.
//!
//! The store directory outlives restarts, so a test can stop the server (gracefully or with
//! `kill -9`), start it again on the same port, and check that streams, consumers and KV state
//! survived — exactly what a stage sees when the broker restarts under it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::{ChildProcess, find_binary, free_port, http_get_status, port_is_open, wait_until};

/// async-nats 0.51 needs JetStream API features (KV create, consumer actions) from 2.10.
const MIN_VERSION: (u32, u32) = (2, 10);
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    extra_args: Vec<String>,
    dir: TempDir,
    process: Option<ChildProcess>,
}

impl NatsServer {
    /// Starts a nats-server with JetStream on 127.0.0.1 and a free port; returns once it is ready.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start), with extra command-line flags (e.g. `--user u --pass p`).
    pub fn start_with_args(extra_args: &[&str]) -> anyhow::Result<Self> {
        let binary = find_binary("VEXXY_NATS_SERVER", "nats-server")?;
        check_version(&binary)?;
        let dir = tempfile::Builder::new()
            .prefix("vexxy-nats-")
            .tempdir()
            .context("cannot create a temporary directory for nats-server")?;
        let mut server = NatsServer {
            binary,
            port: free_port(),
            monitor_port: free_port(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            dir,
            process: None,
        };
        // free_port only finds ports free at that moment: another test's process can bind one
        // before nats-server does. A bind conflict takes new ports and tries again.
        let mut attempt = 1;
        loop {
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(error)
                    if attempt < 3 && format!("{error:#}").contains("address already in use") =>
                {
                    attempt += 1;
                    server.port = free_port();
                    server.monitor_port = free_port();
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (not while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// JetStream's store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A plain client connection, for tests that publish and inspect.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(self.url())
            .await
            .with_context(|| format!("cannot connect to the test nats-server at {}", self.url()))
    }

    /// Graceful stop (SIGTERM): the server flushes JetStream state and closes client connections.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            let status = process.terminate(STOP_TIMEOUT)?;
            tracing::debug!(%status, "nats-server stopped");
        }
        self.wait_port_closed()
    }

    /// `kill -9`: the server dies without any chance to clean up.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        self.wait_port_closed()
    }

    /// Starts the server again on the same port with the same store directory. Stops it
    /// gracefully first if it is still running.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Starts a server that was stopped or killed, on the same port and store.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "nats-server is already running");
        self.launch()
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.store_dir())
            .args(&self.extra_args);
        let log_path = self.log_path();
        let mut process = ChildProcess::spawn("nats-server", command, &log_path)?;
        // /healthz answers 200 only once JetStream is up, which is what every test needs.
        let monitor_port = self.monitor_port;
        let ready = wait_until(READY_TIMEOUT, || {
            http_get_status(monitor_port, "/healthz") == Some(200) || !process.is_running()
        });
        if !ready || !process.is_running() {
            let logs = process.logs();
            let _ = process.kill();
            anyhow::bail!(
                "nats-server on port {} did not become ready within {READY_TIMEOUT:?}; its log ({}):\n{logs}",
                self.port,
                log_path.display()
            );
        }
        self.process = Some(process);
        Ok(())
    }

    fn wait_port_closed(&self) -> anyhow::Result<()> {
        let port = self.port;
        anyhow::ensure!(
            wait_until(STOP_TIMEOUT, || !port_is_open(port)),
            "nats-server still accepts connections on port {port} after stopping"
        );
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
        }
    }
}

fn check_version(binary: &Path) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = parse_version(&text).with_context(|| {
        format!(
            "cannot read the version of {} from {text:?}; run `cargo xtask setup`",
            binary.display()
        )
    })?;
    anyhow::ensure!(
        version >= MIN_VERSION,
        "{} is version {}.{}, vexxy needs nats-server {}.{} or newer; run `cargo xtask setup` \
         (or point VEXXY_NATS_SERVER at a newer binary)",
        binary.display(),
        version.0,
        version.1,
        MIN_VERSION.0,
        MIN_VERSION.1
    );
    Ok(())
}

/// Reads `(major, minor)` from `nats-server: v2.15.1`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let start = text.rfind(" v")? + 2;
    let mut parts = text[start..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn reads_the_version_line() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.25"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
    }
}
