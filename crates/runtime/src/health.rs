//! `/healthz`, `/readyz` and `/metrics` over HTTP.
//!
//! Liveness and readiness are different questions: a stage waiting for the broker to come back
//! is alive (restarting it would not help) but not ready (it cannot take work).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Readiness, shared between the consume loop (which sets it) and the HTTP server.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on VEXXY_HEALTH_ADDR={addr}: {source}; choose a free address and port")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the health address to VEXXY_HEALTH_ADDR_FILE={path}: {source}")]
    AddrFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    metrics: Metrics,
}

/// Binds `addr` and serves in the background until `shutdown` resolves; returns the bound address
/// (useful with port 0), after writing it to `addr_file` if given.
pub async fn serve(
    addr: SocketAddr,
    addr_file: Option<PathBuf>,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HealthError::Bind { addr, source })?;
    if let Some(path) = addr_file {
        // Write-then-rename so a reader never sees a half-written address.
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, bound.to_string())
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|source| HealthError::AddrFile { path, source })?;
    }
    tracing::info!(%bound, "serving /healthz, /readyz and /metrics");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { readiness, metrics });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "health server stopped");
        }
    });
    Ok(bound)
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not connected to NATS or streams not provisioned yet\n",
        )
    }
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
