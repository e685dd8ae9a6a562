//! The NATS connection settings: server URLs, one authentication method, TLS.

use std::path::PathBuf;

use super::env::{ConfigError, Env};
use crate::secret::Secret;

/// How the stage authenticates to NATS. At most one kind may be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// An nkey seed (`SU...`).
    Nkey(Secret),
    /// A `.creds` file (JWT + nkey seed).
    CredsFile(PathBuf),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Extra root CA (PEM) to trust, for private server certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Refuse to talk to a server that does not offer TLS.
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// One or more comma-separated server URLs.
    pub url: String,
    pub auth: NatsAuth,
    pub tls: NatsTls,
}

/// Reads `NATS_URL`, the authentication variables and the TLS variables.
pub(super) fn load(env: &Env<'_>) -> Result<NatsConfig, ConfigError> {
    let nats = NatsConfig {
        url: env
            .raw("NATS_URL")
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_string()),
        auth: load_auth(env)?,
        tls: load_tls(env)?,
    };
    validate_nats_urls(&nats.url)?;
    Ok(nats)
}

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

fn load_auth(env: &Env<'_>) -> Result<NatsAuth, ConfigError> {
    let user = env.raw("NATS_USER");
    let password = env.raw("NATS_PASSWORD");
    let token = env.raw("NATS_TOKEN");
    let nkey = env.raw("NATS_NKEY");
    let creds = env.raw("NATS_CREDS");

    let mut chosen = Vec::new();
    if user.is_some() || password.is_some() {
        chosen.push("NATS_USER/NATS_PASSWORD");
    }
    if token.is_some() {
        chosen.push("NATS_TOKEN");
    }
    if nkey.is_some() {
        chosen.push("NATS_NKEY");
    }
    if creds.is_some() {
        chosen.push("NATS_CREDS");
    }
    if chosen.len() > 1 {
        return Err(ConfigError::Inconsistent {
            name: chosen.join(", "),
            problem: "more than one NATS authentication method is set; set only one".to_string(),
        });
    }

    match (user, password) {
        (Some(user), Some(password)) => {
            return Ok(NatsAuth::UserPassword {
                user,
                password: Secret::new(password),
            });
        }
        (Some(_), None) => {
            return Err(ConfigError::Inconsistent {
                name: "NATS_PASSWORD".to_string(),
                problem: "NATS_USER is set but NATS_PASSWORD is not; set both or neither"
                    .to_string(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Inconsistent {
                name: "NATS_USER".to_string(),
                problem: "NATS_PASSWORD is set but NATS_USER is not; set both or neither"
                    .to_string(),
            });
        }
        (None, None) => {}
    }
    if let Some(token) = token {
        return Ok(NatsAuth::Token(Secret::new(token)));
    }
    if let Some(seed) = nkey {
        if !seed.trim().starts_with('S') {
            // Never echo the value: it is (or was meant to be) a secret.
            return Err(ConfigError::invalid(
                "NATS_NKEY",
                "<redacted>",
                "expected an nkey seed starting with 'S' (e.g. SUAB...), not a public key",
            ));
        }
        return Ok(NatsAuth::Nkey(Secret::new(seed.trim())));
    }
    if let Some(path) = creds {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(ConfigError::invalid(
                "NATS_CREDS",
                &path.display().to_string(),
                "no such file; point it at a NATS .creds file",
            ));
        }
        return Ok(NatsAuth::CredsFile(path));
    }
    Ok(NatsAuth::None)
}

fn load_tls(env: &Env<'_>) -> Result<NatsTls, ConfigError> {
    let existing_file = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
        match env.raw(name) {
            None => Ok(None),
            Some(value) => {
                let path = PathBuf::from(&value);
                if path.is_file() {
                    Ok(Some(path))
                } else {
                    Err(ConfigError::invalid(
                        name,
                        &value,
                        "no such file; point it at a PEM file",
                    ))
                }
            }
        }
    };
    let ca_file = existing_file("NATS_TLS_CA")?;
    let cert = existing_file("NATS_TLS_CERT")?;
    let key = existing_file("NATS_TLS_KEY")?;
    let client_cert = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Inconsistent {
                name: "NATS_TLS_KEY".to_string(),
                problem: "NATS_TLS_CERT is set without NATS_TLS_KEY; set both for mutual TLS"
                    .to_string(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Inconsistent {
                name: "NATS_TLS_CERT".to_string(),
                problem: "NATS_TLS_KEY is set without NATS_TLS_CERT; set both for mutual TLS"
                    .to_string(),
            });
        }
    };
    Ok(NatsTls {
        ca_file,
        client_cert,
        required: env.flag("NATS_TLS_REQUIRED", false)?,
    })
}

fn validate_nats_urls(urls: &str) -> Result<(), ConfigError> {
    for url in urls.split(',').map(str::trim) {
        if url.parse::<async_nats::ServerAddr>().is_err() {
            return Err(ConfigError::invalid(
                "NATS_URL",
                urls,
                format!(
                    "{url:?} is not a NATS server address; write e.g. nats://nats:4222 (comma-separate several)"
                ),
            ));
        }
    }
    Ok(())
}
