//! Starts and stops the real services vexxy's tests and `cargo xtask` need.
//!
//! Every test gets its own private servers on 127.0.0.1 with free ports and temporary data
//! directories, so tests run in parallel without seeing each other's state. Servers can be
//! stopped (gracefully or with `kill -9`) and started again on the same port and data directory,
//! which is how outage and recovery tests are written.
//!
//! * [`process`]: a child process with its output in a log file and bounded stop/wait.
//! * [`nats`]: a JetStream-enabled nats-server.
//! * [`s3`]: s3s-fs, a real S3 protocol server backed by a directory.
//! * [`stack`]: kubesim and the five stage binaries as processes (end-to-end tests, xtask).
//! * [`realcluster`]: the real control plane (etcd, kube-apiserver, controllers, kwok) and
//!   [`identities`]: the stages as their own ServiceAccounts on it.
//! * [`chaos`]: a nats-server cluster, restartable stage replicas, run sizes and figures for the
//!   fault-injection tests and `cargo xtask chaos`.

pub mod chaos;
pub mod identities;
pub mod nats;
pub mod process;
pub mod realcluster;
pub mod registry;
pub mod s3;
pub mod stack;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use nats::NatsServer;
pub use process::ChildProcess;
pub use registry::OciRegistry;
pub use s3::S3Server;

/// The root of the vexxy workspace (where the top-level `Cargo.toml` lives).
pub fn workspace_root() -> PathBuf {
    // This crate lives at `<root>/tests/harness`; the path is fixed at compile time, so it is
    // right no matter which directory a test or xtask runs from.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root above tests/harness exists")
}

/// Where `cargo xtask setup` installs the pinned tool binaries.
pub fn tools_dir() -> PathBuf {
    workspace_root().join(".tools").join("bin")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before it is returned, so another process could grab it in between;
/// that window is tiny and a server failing to bind reports it clearly.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 always works");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// Finds a tool binary: `$env_var` if set, else `.tools/bin/<name>`, else `<name>` on PATH.
pub fn find_binary(env_var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "{env_var}={} does not name a file; point it at the {name} binary or unset it",
            path.display()
        );
        return Ok(path);
    }
    let local = tools_dir().join(name);
    if local.is_file() {
        return Ok(local);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    anyhow::bail!(
        "{name} not found (looked at ${env_var}, {}, and PATH); run `cargo xtask setup` to install it",
        local.display()
    )
}

/// Polls `ready` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when something accepts TCP connections on `127.0.0.1:port`.
pub fn port_is_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A minimal HTTP/1.0 GET returning the status code, for readiness probes (no HTTP client
/// dependency needed for a single request line).
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..read]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
