use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use vexxy_events::Stage;
use vexxy_gateway::{AppState, router};
use vexxy_runtime::config::{Env, RuntimeConfig};
use vexxy_runtime::{Store, connect};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vexxy-gateway: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let env = Env::process();
    let config = RuntimeConfig::load(&env)?;
    let addr: SocketAddr = env.parse("VEXXY_GATEWAY_ADDR", "0.0.0.0:8080".parse()?)?;
    let timeout = env.duration("VEXXY_GATEWAY_TIMEOUT", Duration::from_secs(30))?;
    let store = Store::open(&config.store_url, &config.store_options)?;
    let nats = connect::connect(&config.nats, Stage::InstallCheck).await?;
    let state = AppState::new(nats, store, config.policy.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}; set VEXXY_GATEWAY_ADDR"))?;
    let bound = listener.local_addr()?;
    if let Some(file) = env.raw("VEXXY_GATEWAY_ADDR_FILE") {
        std::fs::write(&file, bound.to_string())?;
    }
    tracing::info!(%bound, "vexxy-gateway listening");
    axum::serve(listener, router(state, timeout))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}
