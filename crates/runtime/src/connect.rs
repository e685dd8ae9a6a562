//! The NATS connection: authentication, TLS and reconnect behaviour.
//!
//! A stage must survive the broker going away (restart, rolling upgrade, network blip), so the
//! client retries the initial connection and reconnects forever; JetStream state lives on the
//! server and a reconnect loses nothing. Connection events are logged without any credential.
//!
//! A server that is up but refuses us is different: wrong credentials or a certificate we do not
//! trust fail the same way on every retry, so the first attempt's answer is reported at once
//! ([`ConnectError::Rejected`], [`ConnectError::Tls`]) naming the variables to fix, instead of a
//! stage that retries in the background forever and never becomes ready. Only a server that
//! cannot be reached yet is waited for.

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
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
    #[error("NATS at {url} refused the connection ({source}): {hint}")]
    Rejected {
        url: String,
        hint: &'static str,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "the TLS connection to NATS at {url} failed ({source}): set NATS_TLS_CA to the PEM file of \
         the CA that signed the server's certificate, and for a server that verifies clients \
         (mutual TLS) NATS_TLS_CERT and NATS_TLS_KEY to this stage's certificate and key"
    )]
    Tls {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

impl ConnectError {
    /// True for a refusal that retrying cannot fix (credentials, TLS): a configuration error.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            ConnectError::Rejected { .. } | ConnectError::Tls { .. }
        )
    }
}

/// What to check when the server refuses the configured authentication (never the values).
fn auth_hint(auth: &NatsAuth) -> &'static str {
    match auth {
        NatsAuth::None => {
            "the server requires authentication: set NATS_USER and NATS_PASSWORD, NATS_TOKEN, \
             NATS_NKEY or NATS_CREDS"
        }
        NatsAuth::UserPassword { .. } => {
            "check NATS_USER and NATS_PASSWORD (and, with mutual TLS, NATS_TLS_CERT and \
             NATS_TLS_KEY)"
        }
        NatsAuth::Token(_) => {
            "check NATS_TOKEN (and, with mutual TLS, NATS_TLS_CERT and NATS_TLS_KEY)"
        }
        NatsAuth::Nkey(_) => {
            "check NATS_NKEY: it must be the seed (SU...) of a user nkey the server lists"
        }
        NatsAuth::CredsFile(_) => {
            "check NATS_CREDS: the .creds file must hold a user JWT signed by an account the \
             server trusts (not expired or revoked) and that user's seed"
        }
    }
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
    let hint = auth_hint(&config.auth);
    Ok(options
        .name(format!("vexxy-{stage}"))
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
                Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                    tracing::error!(%stage, "NATS refused the credentials on reconnect: {hint}")
                }
                Event::ServerError(error) => tracing::error!(%stage, %error, "NATS server error"),
                Event::ClientError(error) => tracing::error!(%stage, %error, "NATS client error"),
            }
        }))
}

/// True when the TLS handshake failed (untrusted server certificate, client certificate refused).
/// async-nats reports most handshake failures as I/O errors wrapping the rustls error, so the
/// error chain is searched rather than the kind alone.
fn is_tls_failure(error: &async_nats::ConnectError) -> bool {
    if error.kind() == ConnectErrorKind::Tls {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    // Bounded: error chains are short, and a cycle must not hang the start-up.
    for _ in 0..16 {
        let Some(current) = cause else { return false };
        if current.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error::source skips its own payload, so look inside explicitly.
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Connects: one attempt now, which reports a refusal (credentials, TLS) as an error; if the
/// server cannot be reached yet, the client keeps trying in the background.
pub async fn connect(config: &NatsConfig, stage: Stage) -> Result<Client, ConnectError> {
    let urls: Vec<async_nats::ServerAddr> = config
        .url
        .split(',')
        .map(str::trim)
        .filter_map(|url| url.parse().ok())
        .collect();
    let url = config.url.clone();
    let first = options(config, stage).await?.connect(urls.clone()).await;
    let unreachable = match first {
        Ok(client) => return Ok(client),
        Err(source) => match source.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                return Err(ConnectError::Rejected {
                    url,
                    hint: auth_hint(&config.auth),
                    source,
                });
            }
            _ if is_tls_failure(&source) => return Err(ConnectError::Tls { url, source }),
            _ => source,
        },
    };
    tracing::warn!(%stage, url = %url, error = %unreachable, "NATS is not reachable yet; retrying in the background");
    options(config, stage)
        .await?
        .retry_on_initial_connect()
        .connect(urls)
        .await
        .map_err(|source| ConnectError::Connect { url, source })
}
