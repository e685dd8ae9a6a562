//! `vexxy-realcluster`: the real control plane of [`vexxy_harness::realcluster`] as one
//! foreground process, for `cargo xtask up --cluster real` (tests start it in-process).
//!
//! `vexxy-realcluster --kubeconfig FILE [--ready-file FILE]` starts etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok with fake nodes, copies the admin kubeconfig
//! to FILE (its certificates stay in the cluster's temporary directory while it runs), writes
//! the API server's URL to the ready file, and stops everything on SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::{Context, bail};
use vexxy_harness::realcluster::RealCluster;

fn main() -> anyhow::Result<()> {
    let mut kubeconfig: Option<PathBuf> = None;
    let mut ready_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .map(PathBuf::from)
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--kubeconfig" => kubeconfig = Some(value()?),
            "--ready-file" => ready_file = Some(value()?),
            other => bail!(
                "unknown argument {other:?}; usage: vexxy-realcluster --kubeconfig FILE [--ready-file FILE]"
            ),
        }
    }
    let kubeconfig = kubeconfig.context("--kubeconfig FILE is required")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime for signal handling")?;
    let mut cluster = RealCluster::start()?;
    std::fs::copy(cluster.kubeconfig(), &kubeconfig)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    if let Some(ready_file) = &ready_file {
        let partial = ready_file.with_extension("partial");
        std::fs::write(&partial, format!("{}\n", cluster.url()))
            .and_then(|()| std::fs::rename(&partial, ready_file))
            .with_context(|| format!("cannot write {}", ready_file.display()))?;
    }
    println!(
        "vexxy-realcluster: {} ready (kubeconfig {}, logs in {})",
        cluster.url(),
        kubeconfig.display(),
        cluster.dir().display()
    );
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!("vexxy-realcluster: stopping");
    cluster.stop()
}
