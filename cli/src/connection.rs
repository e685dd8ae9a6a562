//! Where vexxy is: NATS (and through it the job-status bucket) and the object store, configured
//! from the same environment variables as the stages, with `--nats-url`/`--store` winning.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use vexxy_events::{Stage, subjects};
use vexxy_runtime::config::{Env, RuntimeConfig};
use vexxy_runtime::{Store, connect};

use crate::CliError;
use crate::cli::ConnectionFlags;

/// The stages' configuration as seen from here (flags applied).
pub fn config(flags: &ConnectionFlags) -> Result<RuntimeConfig, CliError> {
    let process = Env::process();
    let env = Env::from_fn(|name| match name {
        "NATS_URL" if flags.nats_url.is_some() => flags.nats_url.clone(),
        "VEXXY_STORE" if flags.store.is_some() => flags.store.clone(),
        _ => process.raw(name),
    });
    RuntimeConfig::load(&env).map_err(|e| {
        CliError::BadInput(format!(
            "{e}; fix or unset {} (vexxy reads the same variables as its stages)",
            e.variable()
        ))
    })
}

/// A connected NATS client, or an error naming the URL and how to get a server there.
pub async fn nats(
    config: &RuntimeConfig,
    timeout: Duration,
) -> Result<async_nats::Client, CliError> {
    let unreachable = |detail: String| {
        CliError::Unavailable(format!(
            "cannot connect to NATS at {}: {detail}; start the local stack with `cargo xtask up` or set NATS_URL (or --nats-url) to your vexxy's NATS",
            config.nats.url
        ))
    };
    // The stage options (auth, TLS) with this program's name; the stages retry the first
    // connection forever, so a bounded flush tells us whether a server is really there.
    let options = connect::options(&config.nats, Stage::InstallCheck)
        .await
        .map_err(|e| CliError::BadInput(e.to_string()))?
        .name("vexxy-cli")
        .connection_timeout(timeout);
    let urls: Vec<async_nats::ServerAddr> = config
        .nats
        .url
        .split(',')
        .map(str::trim)
        .filter_map(|url| url.parse().ok())
        .collect();
    let client = tokio::time::timeout(timeout, options.connect(urls))
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(timeout, client.flush()).await {
        Ok(Ok(())) => Ok(client),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}

/// The `vexxy-jobs` bucket, which the stages create when they start.
pub async fn status_bucket(js: &jetstream::Context) -> Result<kv::Store, CliError> {
    js.get_key_value(subjects::STATUS_BUCKET).await.map_err(|e| {
        CliError::Unavailable(format!(
            "the job status bucket {} is not available ({e}); the vexxy stages create it when they start: start them (`cargo xtask up`) against this NATS",
            subjects::STATUS_BUCKET
        ))
    })
}

/// The object store the stages write results to.
pub fn store(config: &RuntimeConfig) -> Result<Store, CliError> {
    Store::open(&config.store_url, &config.store_options).map_err(|e| {
        CliError::BadInput(format!(
            "{e}; set VEXXY_STORE (or --store) to where the stages write results"
        ))
    })
}
