//! Turning SIGTERM/SIGINT into a future the runtime can wait on.
//!
//! Kubernetes sends SIGTERM and waits `terminationGracePeriodSeconds` (30 s by default) before
//! SIGKILL; the runtime's default grace (`VEXXY_SHUTDOWN_GRACE`, 25 s) leaves time to hand back
//! unfinished messages and drain the connection inside that window.

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => tracing::info!("SIGINT received; shutting down"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the stage");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!("interrupt received; shutting down");
    }
}
