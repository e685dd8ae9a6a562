//! Where xtask keeps things. Everything lives under the workspace root so a checkout is
//! self-contained: `.tools/` (installed tool binaries, git-ignored) and `.vexxy/` (the local
//! stack's state, logs and pids, git-ignored).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn discover() -> Self {
        // xtask lives at `<root>/xtask`; the path is fixed at compile time, so `cargo xtask`
        // works from any directory of the checkout.
        let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(manifest_dir);
        Paths { root }
    }

    /// `cargo install --root` target: binaries end up in `tools_bin()`.
    pub fn tools_root(&self) -> PathBuf {
        self.root.join(".tools")
    }

    pub fn tools_bin(&self) -> PathBuf {
        self.tools_root().join("bin")
    }

    /// Records of what setup installed and how (one file per tool).
    pub fn stamps(&self) -> PathBuf {
        self.tools_root().join("stamps")
    }

    /// Cargo's target directory (honours `CARGO_TARGET_DIR`).
    pub fn target_dir(&self) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    self.root.join(dir)
                }
            }
            None => self.root.join("target"),
        }
    }

    /// A binary built by `cargo build` (debug profile).
    pub fn built_binary(&self, name: &str) -> PathBuf {
        self.target_dir().join("debug").join(name)
    }

    /// The local stack's state directory.
    pub fn stack(&self) -> PathBuf {
        self.root.join(".vexxy")
    }

    pub fn logs(&self) -> PathBuf {
        self.stack().join("logs")
    }

    pub fn log_of(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    pub fn pids(&self) -> PathBuf {
        self.stack().join("pids")
    }

    /// Files processes write at start-up (health address, kubesim readiness).
    pub fn run(&self) -> PathBuf {
        self.stack().join("run")
    }

    pub fn nats_store(&self) -> PathBuf {
        self.stack().join("nats")
    }

    pub fn object_store(&self) -> PathBuf {
        self.stack().join("store")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.stack().join("kubeconfig")
    }

    pub fn env_file(&self) -> PathBuf {
        self.stack().join("env")
    }
}

/// `cargo` as invoked by the user (cargo sets `CARGO` for the processes it runs).
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Looks `name` up on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
