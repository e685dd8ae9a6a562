//! The NATS connection: authentication, TLS and reconnect behaviour.
//!
//! A stage must survive the broker going away (restart, rolling upgrade, network blip), so the
//! client retries the initial connection and reconnects forever; JetStream state lives on the
//! server and a reconnect loses nothing. Connection events are logged without any credential.

use async_nats::{Client, ConnectOptions, Event};
use vexxy_events::Stage;

use crate::config::{NatsAuth, NatsConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read the NATS credentials file {path}: {source}; check NATS_CREDS")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot connect to NATS at {url}: {source}; check NATS_URL and the authentication variables"
    )]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Builds the client options for `config`: auth, TLS, unbounded reconnects, event logging.
pub async fn options(config: &NatsConfig, stage: Stage) -> Result<ConnectOptions, ConnectError> {
    let mut options = match &config.auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.expose().to_string())
        }
        NatsAuth::Token(token) => ConnectOptions::with_token(token.expose().to_string()),
        NatsAuth::Nkey(seed) => ConnectOptions::with_nkey(seed.expose().to_string()),
        NatsAuth::CredsFile(path) => ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|source| ConnectError::Credentials {
                path: path.display().to_string(),
                source,
            })?,
    };
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls.client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls.required {
        options = options.require_tls(true);
    }
    Ok(options
        .name(format!("vexxy-{stage}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| async move {
            match event {
                Event::Connected => tracing::info!(%stage, "connected to NATS"),
                Event::Disconnected => {
                    tracing::warn!(%stage, "disconnected from NATS; reconnecting")
                }
                Event::LameDuckMode => {
                    tracing::warn!(%stage, "NATS server entering lame duck mode")
                }
                Event::Draining => tracing::info!(%stage, "draining the NATS connection"),
                Event::Closed => tracing::info!(%stage, "NATS connection closed"),
                Event::SlowConsumer(sid) => tracing::warn!(%stage, sid, "slow consumer"),
                // Server and client errors describe the problem, never the credentials.
                Event::ServerError(error) => tracing::error!(%stage, %error, "NATS server error"),
                Event::ClientError(error) => tracing::error!(%stage, %error, "NATS client error"),
            }
        }))
}

/// Connects (in the background if the server is not up yet: the client keeps trying).
pub async fn connect(config: &NatsConfig, stage: Stage) -> Result<Client, ConnectError> {
    let options = options(config, stage).await?;
    let urls: Vec<async_nats::ServerAddr> = config
        .url
        .split(',')
        .map(str::trim)
        .filter_map(|url| url.parse().ok())
        .collect();
    options
        .connect(urls)
        .await
        .map_err(|source| ConnectError::Connect {
            url: config.url.clone(),
            source,
        })
}
