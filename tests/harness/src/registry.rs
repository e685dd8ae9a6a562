//! A real OCI registry for one test: go-containerregistry's `crane registry serve` on 127.0.0.1
//! (built from the Go module proxy by `cargo xtask setup`), and `crane append` to push an image
//! made of one layer of given files. Scanners pull from it as from any plain-HTTP registry.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use tempfile::TempDir;

use crate::{ChildProcess, find_binary, free_port};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct OciRegistry {
    crane: PathBuf,
    port: u16,
    dir: TempDir,
    process: Option<ChildProcess>,
}

impl OciRegistry {
    pub fn start() -> anyhow::Result<Self> {
        let crane = find_binary("VEXXY_CRANE", "crane")?;
        let dir = tempfile::Builder::new()
            .prefix("vexxy-registry-")
            .tempdir()
            .context("cannot create a temporary directory for the registry")?;
        let port = free_port();
        let mut command = Command::new(&crane);
        command
            .args(["registry", "serve", "--address"])
            .arg(format!("127.0.0.1:{port}"));
        let log = dir.path().join("registry.log");
        let process = ChildProcess::spawn_listening(
            "crane registry serve",
            command,
            &log,
            port,
            READY_TIMEOUT,
        )?;
        Ok(OciRegistry {
            crane,
            port,
            dir,
            process: Some(process),
        })
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `repository:tag` holding one layer of `files` (path inside the image, contents),
    /// with fixed times and owners so the same files give the same digest. Returns the
    /// manifest's `sha256:` digest.
    pub fn push(
        &self,
        repository: &str,
        tag: &str,
        files: &[(String, Vec<u8>)],
    ) -> anyhow::Result<String> {
        let layer = self
            .dir
            .path()
            .join(format!("{}-{tag}.tar", repository.replace('/', "_")));
        let mut archive = tar::Builder::new(
            std::fs::File::create(&layer)
                .with_context(|| format!("cannot create {}", layer.display()))?,
        );
        for (path, contents) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            archive
                .append_data(&mut header, path, contents.as_slice())
                .with_context(|| format!("cannot add {path} to the layer"))?;
        }
        archive.into_inner()?.sync_all()?;
        let reference = format!("{}/{repository}:{tag}", self.host());
        let output = Command::new(&self.crane)
            .arg("append")
            .arg("--new_layer")
            .arg(&layer)
            .args(["--new_tag", &reference, "--insecure"])
            .output()
            .context("cannot run crane append")?;
        ensure!(
            output.status.success(),
            "crane append {reference} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // crane prints the pushed image by digest: `<host>/<repository>@sha256:…`.
        let printed = String::from_utf8_lossy(&output.stdout);
        let digest = printed
            .trim()
            .rsplit_once('@')
            .map(|(_, digest)| digest.to_string())
            .filter(|digest| digest.starts_with("sha256:"))
            .with_context(|| format!("crane append printed no digest: {printed:?}"))?;
        Ok(digest)
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
        }
    }
}
