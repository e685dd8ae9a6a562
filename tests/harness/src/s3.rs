//! A private S3 protocol server (s3s-fs) for one test.
//!
//! s3s-fs serves a directory over the real S3 HTTP API with SigV4 authentication; a bucket is a
//! sub-directory of its root, so "creating" one is a `mkdir`. Tests point vexxy's object store
//! at it through the standard `AWS_*` settings, exactly as they would point it at MinIO or AWS.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::{ChildProcess, find_binary, free_port, port_is_open, wait_until};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct S3Server {
    binary: PathBuf,
    port: u16,
    bucket: String,
    access_key: String,
    secret_key: String,
    dir: TempDir,
    process: Option<ChildProcess>,
}

impl S3Server {
    /// Starts s3s-fs on 127.0.0.1 with a free port and one empty bucket named `vexxy-test`.
    pub fn start() -> anyhow::Result<Self> {
        let binary = find_binary("VEXXY_S3S_FS", "s3s-fs")?;
        let dir = tempfile::Builder::new()
            .prefix("vexxy-s3-")
            .tempdir()
            .context("cannot create a temporary directory for s3s-fs")?;
        let bucket = "vexxy-test".to_string();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(&bucket)).with_context(|| {
            format!(
                "cannot create the bucket directory under {}",
                root.display()
            )
        })?;
        let mut server = S3Server {
            binary,
            port: free_port(),
            bucket,
            access_key: "vexxy-test-access".to_string(),
            secret_key: "vexxy-test-secret-key".to_string(),
            dir,
            process: None,
        };
        server.launch()?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The directory holding the bucket directories (to inspect what was written).
    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The `AWS_*` variables that point an object_store client at this server.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    /// Stops the server (simulating a storage outage); the data stays.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        let port = self.port;
        anyhow::ensure!(
            wait_until(STOP_TIMEOUT, || !port_is_open(port)),
            "s3s-fs still accepts connections on port {port} after stopping"
        );
        Ok(())
    }

    /// Starts the server again on the same port and data directory.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "s3s-fs is already running");
        self.launch()
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--access-key")
            .arg(&self.access_key)
            .arg("--secret-key")
            .arg(&self.secret_key)
            .arg(self.root_dir());
        let process = ChildProcess::spawn_listening(
            "s3s-fs",
            command,
            &self.log_path(),
            self.port,
            READY_TIMEOUT,
        )?;
        self.process = Some(process);
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
        }
    }
}
