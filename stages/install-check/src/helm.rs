//! Installing Kubescape with the helm CLI, the way its documentation does it.
//!
//! The binary is the operator's choice (`VEXXY_HELM_BIN`); it talks to the same cluster as this
//! process because it inherits `KUBECONFIG` (or the in-cluster service account).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::checks::RELEASE_NAME;

/// How to run helm.
#[derive(Debug, Clone)]
pub struct HelmInstall {
    pub helm_bin: PathBuf,
    /// The chart as helm takes it: `kubescape/kubescape-operator` (from `repo_url`), or a chart
    /// directory, archive or `oci://` reference.
    pub chart: String,
    /// Chart repository added as `kubescape` before installing a `kubescape/…` chart; `None`
    /// when the repository is already configured (air-gapped mirrors).
    pub repo_url: Option<String>,
    pub namespace: String,
    pub values_file: PathBuf,
    /// `--version` of the chart; `None` installs the newest.
    pub chart_version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("the helm binary {0:?} was not found")]
    NotFound(PathBuf),
    #[error("the values file {0:?} does not exist")]
    ValuesMissing(PathBuf),
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` exited with {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    TimedOut { command: String, timeout: Duration },
}

impl HelmInstall {
    /// The argument lists helm is run with, in order.
    pub fn invocations(&self) -> Vec<Vec<String>> {
        let mut calls = Vec::new();
        if let Some(url) = self
            .repo_url
            .as_ref()
            .filter(|_| self.chart.starts_with("kubescape/"))
        {
            calls.push(
                ["repo", "add", "kubescape", url.as_str(), "--force-update"]
                    .map(String::from)
                    .to_vec(),
            );
        }
        let mut install: Vec<String> = [
            "upgrade",
            "--install",
            RELEASE_NAME,
            &self.chart,
            "-n",
            &self.namespace,
            "--create-namespace",
            "-f",
        ]
        .map(String::from)
        .to_vec();
        install.push(self.values_file.display().to_string());
        if let Some(version) = &self.chart_version {
            install.push("--version".to_string());
            install.push(version.clone());
        }
        calls.push(install);
        calls
    }

    /// The install as one shell line, for messages telling the user to run it themselves.
    pub fn command_line(&self) -> String {
        self.invocations()
            .iter()
            .map(|args| format!("{} {}", self.helm_bin.display(), args.join(" ")))
            .collect::<Vec<_>>()
            .join(" && ")
    }

    /// Runs every invocation; the whole sequence is bounded by `timeout`.
    pub async fn run(&self, timeout: Duration) -> Result<(), HelmError> {
        if !self.values_file.is_file() {
            return Err(HelmError::ValuesMissing(self.values_file.clone()));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        for args in self.invocations() {
            run_one(&self.helm_bin, &args, deadline, timeout).await?;
        }
        Ok(())
    }
}

async fn run_one(
    helm: &Path,
    args: &[String],
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), HelmError> {
    let command = format!("{} {}", helm.display(), args.join(" "));
    tracing::info!(%command, "running helm");
    let child = Command::new(helm)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out helm must not keep changing the cluster behind our back.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => HelmError::NotFound(helm.to_path_buf()),
            _ => HelmError::Spawn {
                command: command.clone(),
                source,
            },
        })?;
    let output = match tokio::time::timeout_at(deadline, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(HelmError::Spawn { command, source }),
        Err(_) => return Err(HelmError::TimedOut { command, timeout }),
    };
    if output.status.success() {
        return Ok(());
    }
    Err(HelmError::Failed {
        command,
        status: output.status.to_string(),
        stderr: tail(&String::from_utf8_lossy(&output.stderr), 20),
    })
}

/// The last `lines` lines: helm puts the cause at the end.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim().lines().collect();
    let start = all.len().saturating_sub(lines);
    let joined = all[start..].join(" | ");
    if joined.is_empty() {
        "(no output on stderr)".to_string()
    } else {
        joined
    }
}
