//! A child process whose output goes to a log file, with bounded waits.
//!
//! Tests start real servers and stage binaries; when one misbehaves the first question is "what
//! did it print?", so output always lands in a file the failure message can point at. Every wait
//! is bounded so a stuck process fails a test instead of hanging it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl ChildProcess {
    /// Spawns `command` with stdout and stderr appended to `log_path` (created if missing).
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> anyhow::Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("cannot open log file {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("cannot duplicate the log file handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(ChildProcess {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
        })
    }

    /// Spawns `command` like [`ChildProcess::spawn`] and waits until something accepts
    /// connections on 127.0.0.1:`port`; fails with the process's log (and kills it) when it
    /// exits or `timeout` passes first.
    pub fn spawn_listening(
        name: &str,
        command: Command,
        log_path: &Path,
        port: u16,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let mut process = Self::spawn(name, command, log_path)?;
        let ready = crate::wait_until(timeout, || {
            crate::port_is_open(port) || !process.is_running()
        });
        if !ready || !process.is_running() {
            let logs = process.logs();
            let _ = process.kill();
            anyhow::bail!(
                "{name} on port {port} did not start within {timeout:?}; its log:\n{logs}"
            );
        }
        Ok(process)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `None` while running, the exit status once it exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("cannot query the state of {}", self.name))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a Unix signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which we
        // have not reaped yet, so it cannot have been reused by another process.
        let result = unsafe { libc::kill(pid, signal) };
        if result != 0 {
            let err = std::io::Error::last_os_error();
            anyhow::bail!(
                "cannot send signal {signal} to {} ({pid}): {err}",
                self.name
            );
        }
        Ok(())
    }

    /// SIGTERM, then wait up to `grace` for a clean exit. If the process is still running after
    /// that, it is killed and an error says so (a stuck shutdown is a bug worth failing on).
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        self.kill()?;
        anyhow::bail!(
            "{} did not exit within {grace:?} of SIGTERM and was killed; see {}",
            self.name,
            self.log_path.display()
        )
    }

    /// `kill -9` and reap, for crash tests.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        self.child
            .kill()
            .with_context(|| format!("cannot kill {}", self.name))?;
        self.child
            .wait()
            .with_context(|| format!("cannot reap {}", self.name))?;
        Ok(())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // A test that panics must not leave servers running behind it.
        let _ = self.kill();
    }
}
