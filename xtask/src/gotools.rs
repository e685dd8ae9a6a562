//! The Go programs vexxy is tested against (the real Kubernetes control plane, etcd, kwok), built
//! with the go command from the Go module proxy — one mechanism for all of them.
//!
//! Each tool is a small Go module of ours under `tests/gotools/<tool>/` whose `go.mod` pins the
//! upstream module (with `tool` directives naming the packages to build) and whose `go.sum` is
//! committed, so a build is reproducible and `-mod=readonly` refuses anything not pinned. No
//! binary and no upstream source is ever committed.
//!
//! Binaries are cached outside the checkout, by tool, version and a hash of everything that
//! decides the build (go.mod, go.sum, packages, flags, go version): `$VEXXY_GOTOOLS_CACHE`, else
//! `$XDG_CACHE_HOME/vexxy/gotools`, else `~/.cache/vexxy/gotools`. A fresh clone on a machine
//! that built them before only links them into `.tools/bin`; a cold build of Kubernetes takes
//! 15–25 minutes on 2 cores (go's own module and build caches make a rebuild much faster).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

use crate::paths::{Paths, on_path};

/// One Go module of ours that builds one or more binaries.
#[derive(Debug, Clone, Copy)]
pub struct GoTool {
    /// Folder under `tests/gotools/` and the cache entry's name.
    pub name: &'static str,
    /// The upstream version the module pins (informational; the go.mod decides).
    pub version: &'static str,
    /// Packages to build, each with the name its binary gets in `.tools/bin`.
    pub packages: &'static [(&'static str, &'static str)],
    /// `-ldflags`, e.g. Kubernetes' version stamp (unstamped builds report v0.0.0-master).
    pub ldflags: &'static str,
    /// Extra environment of the build, e.g. Trivy's `GOEXPERIMENT=jsonv2`.
    pub env: &'static [(&'static str, &'static str)],
}

const KUBERNETES_LDFLAGS: &str = "-s -w \
    -X k8s.io/component-base/version.gitVersion=v1.36.3 \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=36 \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=v1.36.3";

/// Everything the real-cluster tier needs, in build order (cheapest first, so a partial cache
/// after an interrupted cold build still holds something useful).
pub const TOOLS: &[GoTool] = &[
    GoTool {
        name: "etcd",
        version: "v3.6.17",
        packages: &[("go.etcd.io/etcd/server/v3", "etcd")],
        ldflags: "-s -w",
        env: &[],
    },
    GoTool {
        name: "kwok",
        version: "v0.8.0",
        packages: &[("sigs.k8s.io/kwok/cmd/kwok", "kwok")],
        ldflags: "-s -w",
        env: &[],
    },
    GoTool {
        name: "kubernetes",
        version: "v1.36.3",
        packages: &[
            ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
            (
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-controller-manager",
            ),
            ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
            ("k8s.io/kubernetes/cmd/kubectl", "kubectl"),
        ],
        ldflags: KUBERNETES_LDFLAGS,
        env: &[],
    },
    GoTool {
        name: "natscli",
        version: "v0.5.0",
        packages: &[("github.com/nats-io/natscli/nats", "nats")],
        ldflags: "-s -w",
        env: &[],
    },
    // vexctl is not served by the Go module proxy (403 for every version); go-vex, the library
    // it is built on, is, and our `vexview` loads and merges documents with it the same way.
    GoTool {
        name: "govex",
        version: "v0.2.7",
        packages: &[("vexxy.dev/gotools/govex/vexview", "vexview")],
        ldflags: "-s -w",
        env: &[],
    },
    // The real helm, for the Kubescape chart install-check's auto-install runs.
    GoTool {
        name: "helm",
        version: "v4.3.2",
        packages: &[("helm.sh/helm/v4/cmd/helm", "helm")],
        ldflags: "-s -w -X helm.sh/helm/v4/internal/version.version=v4.3.2",
        env: &[],
    },
    // A real OCI registry (`crane registry serve`) and the client that pushes the test images
    // `trivy image` scans.
    GoTool {
        name: "crane",
        version: "v0.22.1",
        packages: &[("github.com/google/go-containerregistry/cmd/crane", "crane")],
        ldflags: "-s -w",
        env: &[],
    },
    // Each scanner with our builder of its vulnerability database, written with the scanner's
    // own database code at the same version, so the format is the one the scanner reads.
    GoTool {
        name: "grype",
        version: "v0.121.3",
        packages: &[
            ("github.com/anchore/grype/cmd/grype", "grype"),
            ("vexxy.dev/gotools/grype/vulndb", "grype-vulndb"),
        ],
        ldflags: "-s -w",
        env: &[],
    },
    GoTool {
        name: "trivy",
        version: "v0.74.0",
        packages: &[
            ("github.com/aquasecurity/trivy/cmd/trivy", "trivy"),
            ("vexxy.dev/gotools/trivy/vulndb", "trivy-vulndb"),
        ],
        ldflags: "-s -w",
        // Trivy v0.74 imports encoding/json/v2, still an experiment in Go 1.26.
        env: &[("GOEXPERIMENT", "jsonv2")],
    },
];

impl GoTool {
    /// (the file `go build -o DIR/` writes, the name it is linked as) for each package.
    pub fn binaries(&self) -> Vec<(String, &'static str)> {
        self.packages
            .iter()
            .map(|(package, link_as)| (binary_name(package), *link_as))
            .collect()
    }

    fn package_paths(&self) -> Vec<&'static str> {
        self.packages.iter().map(|(package, _)| *package).collect()
    }

    fn link_names(&self) -> String {
        let names: Vec<&str> = self.packages.iter().map(|(_, name)| *name).collect();
        names.join(", ")
    }

    fn module_dir(&self, paths: &Paths) -> PathBuf {
        paths.root.join("tests").join("gotools").join(self.name)
    }
}

/// The name `go build` gives a package's binary.
fn binary_name(package: &str) -> String {
    let mut parts = package.rsplit('/');
    let last = parts.next().unwrap_or(package);
    let is_major_version =
        last.len() > 1 && last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit());
    if is_major_version {
        parts.next().unwrap_or(last).to_string()
    } else {
        last.to_string()
    }
}

/// What setup could provide: the binaries linked into `.tools/bin`, or why not.
#[derive(Debug, Clone)]
pub enum GoTools {
    Ready { bin: PathBuf },
    Missing { why: String },
}

impl GoTools {
    pub fn is_ready(&self) -> bool {
        matches!(self, GoTools::Ready { .. })
    }
}

/// The cache folder for built Go tools.
pub fn cache_root() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VEXXY_GOTOOLS_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .context("neither VEXXY_GOTOOLS_CACHE, XDG_CACHE_HOME nor HOME is set")?;
            PathBuf::from(home).join(".cache")
        }
    };
    Ok(base.join("vexxy").join("gotools"))
}

/// Builds (or finds in the cache) every tool and links its binaries into `.tools/bin`.
/// Without a go command the real-cluster tier cannot run: `Missing` says so, and the callers
/// decide how loud to be.
pub fn ensure_all(paths: &Paths) -> anyhow::Result<GoTools> {
    let Some(go) = on_path("go") else {
        return Ok(GoTools::Missing {
            why: "the go command is not on PATH (Go 1.26 builds the real control plane from the \
                  Go module proxy; Debian: apt-get install golang-go, or put Go 1.26 on PATH)"
                .into(),
        });
    };
    let go_version = go_version(&go)?;
    let cache = cache_root()?;
    for tool in TOOLS {
        let dir = ensure_tool(paths, &go, &go_version, &cache, tool)?;
        for (built, link_as) in tool.binaries() {
            link(&dir.join(&built), &paths.tools_bin().join(link_as))?;
        }
    }
    Ok(GoTools::Ready {
        bin: paths.tools_bin(),
    })
}

fn go_version(go: &Path) -> anyhow::Result<String> {
    let output = Command::new(go)
        .arg("version")
        .output()
        .with_context(|| format!("cannot run {} version", go.display()))?;
    ensure!(
        output.status.success(),
        "`go version` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The cache entry's name: tool, version and a hash of what decides the build.
fn cache_key(paths: &Paths, go_version: &str, tool: &GoTool) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for file in ["go.mod", "go.sum"] {
        let path = tool.module_dir(paths).join(file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        hasher.update(&bytes);
    }
    hasher.update(tool.package_paths().join(" "));
    hasher.update(tool.ldflags);
    for (name, value) in tool.env {
        hasher.update(format!("{name}={value}"));
    }
    hasher.update(go_version);
    // Our own packages (the databases' builders) are part of the build too.
    for (package, _) in tool.packages {
        if let Some(local) = package.strip_prefix(&format!("vexxy.dev/gotools/{}/", tool.name)) {
            hash_dir(&mut hasher, &tool.module_dir(paths).join(local))?;
        }
    }
    let digest = hasher.finalize();
    let mut short = String::new();
    for byte in &digest[..6] {
        write!(short, "{byte:02x}").expect("writing to a String cannot fail");
    }
    Ok(format!("{}-{}-{short}", tool.name, tool.version))
}

/// Every file of `dir` (names and contents, in name order) into `hasher`.
fn hash_dir(hasher: &mut Sha256, dir: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hash_dir(hasher, &path)?;
        } else {
            hasher.update(path.file_name().unwrap_or_default().as_encoded_bytes());
            hasher.update(
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            );
        }
    }
    Ok(())
}

/// The folder holding the tool's binaries, built now if the cache does not have them.
fn ensure_tool(
    paths: &Paths,
    go: &Path,
    go_version: &str,
    cache: &Path,
    tool: &GoTool,
) -> anyhow::Result<PathBuf> {
    let key = cache_key(paths, go_version, tool)?;
    let dir = cache.join(&key);
    let binaries = tool.binaries();
    if binaries.iter().all(|(built, _)| dir.join(built).is_file()) {
        println!(
            "setup: {} {} ({}): cached in {}",
            tool.name,
            tool.version,
            tool.link_names(),
            dir.display()
        );
        return Ok(dir);
    }
    println!(
        "setup: building {} {} ({}) with {go_version} from the Go module proxy into {} — \
         once per machine; Kubernetes takes 15–25 minutes cold on 2 cores ...",
        tool.name,
        tool.version,
        tool.link_names(),
        dir.display()
    );
    let partial = cache.join(format!("{key}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot clear {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let started = std::time::Instant::now();
    let status = Command::new(go)
        .current_dir(tool.module_dir(paths))
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=readonly")
        .envs(tool.env.iter().copied())
        .args(["build", "-trimpath", "-ldflags", tool.ldflags, "-o"])
        .arg(format!("{}/", partial.display()))
        .args(tool.package_paths())
        .status()
        .context("cannot run go build")?;
    if !status.success() {
        bail!(
            "`go build` of {} {} failed ({status}; output above). Check that the Go module \
             proxy serves every module tests/gotools/{}/go.sum names (GOPROXY={})",
            tool.name,
            tool.version,
            tool.name,
            std::env::var("GOPROXY").unwrap_or_else(|_| "go's default".into())
        );
    }
    for (binary, _) in &binaries {
        ensure!(
            partial.join(binary).is_file(),
            "go build of {} produced no {binary} in {}",
            tool.name,
            partial.display()
        );
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("cannot move {} into place", partial.display()))?;
    println!(
        "setup: built {} {} in {:.0} s",
        tool.name,
        tool.version,
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// `.tools/bin/<name>` → the cached binary (replacing whatever was there).
fn link(target: &Path, link: &Path) -> anyhow::Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(_) => std::fs::remove_file(link)
            .with_context(|| format!("cannot replace {}", link.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot stat {}", link.display())),
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_named_like_go_build_names_them() {
        assert_eq!(binary_name("go.etcd.io/etcd/server/v3"), "server");
        assert_eq!(binary_name("sigs.k8s.io/kwok/cmd/kwok"), "kwok");
        assert_eq!(
            binary_name("k8s.io/kubernetes/cmd/kube-apiserver"),
            "kube-apiserver"
        );
        assert_eq!(binary_name("example.com/v2tool"), "v2tool");
    }

    #[test]
    fn every_tool_module_is_committed_with_its_go_sum() {
        let paths = Paths::discover();
        for tool in TOOLS {
            let dir = tool.module_dir(&paths);
            let go_mod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
            assert!(
                dir.join("go.sum").is_file(),
                "{}: go.sum missing",
                tool.name
            );
            let ours = format!("vexxy.dev/gotools/{}/", tool.name);
            for (package, _) in tool.packages {
                match package.strip_prefix(&ours) {
                    Some(local) => assert!(
                        dir.join(local).is_dir(),
                        "{}: no folder for our package {package}",
                        tool.name
                    ),
                    None => assert!(
                        go_mod.contains(package),
                        "{}: go.mod has no tool directive for {package}",
                        tool.name
                    ),
                }
            }
            assert!(
                go_mod.contains(tool.version),
                "{}: go.mod does not pin {}",
                tool.name,
                tool.version
            );
        }
    }
}
