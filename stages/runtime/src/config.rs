//! Everything a stage is configured with, read from environment variables once at start.
//!
//! Configuration is validated before anything connects: a typo in `VEXXY_ACK_WAIT` must stop
//! the process with a message naming the variable, not surface an hour later as odd retries.
//! Values are read through a lookup function rather than `std::env` directly, so tests can build
//! a configuration without touching the process environment (which is shared by all tests).
//!
//! Secrets (NATS password, token, nkey seed, S3 secret key) are kept in [`Secret`], whose
//! `Debug` prints `<redacted>`: configuration is logged at start and must never leak them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use vexxy_events::ValidationPolicy;

/// A configuration problem, always naming the variable and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {problem}")]
    Invalid {
        name: String,
        value: String,
        problem: String,
    },
    #[error("{name} is not valid: {problem}")]
    Inconsistent { name: String, problem: String },
}

impl ConfigError {
    pub fn invalid(name: &str, value: &str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    /// The variable the error is about.
    pub fn variable(&self) -> &str {
        match self {
            ConfigError::Invalid { name, .. } | ConfigError::Inconsistent { name, .. } => name,
        }
    }
}

/// Where configuration values come from: the process environment, or a map in tests.
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

impl<'a> Env<'a> {
    /// The process environment.
    pub fn process() -> Env<'static> {
        Env {
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// Any lookup function, e.g. over a `HashMap` in tests.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            lookup: Box::new(lookup),
        }
    }

    /// A fixed list of `(name, value)` pairs.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Env<'static> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        Env {
            lookup: Box::new(move |name| {
                pairs
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            }),
        }
    }

    /// The raw value; empty strings count as unset (a `FOO=` in a compose file means "default").
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    /// The variable parsed with `FromStr`, or `default` when unset.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(name, &value, e.to_string())),
        }
    }

    /// A duration in humantime (`30s`, `5m`, `1h 30m`) or plain seconds (`30`).
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => parse_duration(&value)
                .map_err(|problem| ConfigError::invalid(name, &value, problem)),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::invalid(name, &value, "expected true or false")),
            },
        }
    }

    /// A whole number within `range` (inclusive).
    pub fn bounded<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse(name, default)?;
        if value < min || value > max {
            return Err(ConfigError::invalid(
                name,
                &value.to_string(),
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(value)
    }

    /// A comma-separated list; blanks dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.raw(name)
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Reads one variable from the process environment, parsed with `FromStr`, for stages' own
/// settings (`K8S_SANDBOX_NAMESPACE`, `SANDBOX_CPU_LIMIT`, ...).
pub fn env_var<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    Env::process().parse(name, default)
}

/// Like [`env_var`] for a duration (humantime or plain seconds).
pub fn env_duration(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    Env::process().duration(name, default)
}

/// Like [`env_var`] for a boolean flag.
pub fn env_flag(name: &str, default: bool) -> Result<bool, ConfigError> {
    Env::process().flag(name, default)
}

/// `30s`, `5m`, `1h 30m` or a plain number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(value)
        .map_err(|e| format!("{e}; write a duration such as 30s, 5m or 1h, or plain seconds"))
}

/// A value that must never appear in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (the client library).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStorage {
    File,
    Memory,
}

/// How the stage's durable consumer and the streams are set up.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerTuning {
    /// Most messages handled at once by one replica (and how many it pulls at a time).
    pub max_in_flight: usize,
    /// How long the server waits for an ack (or an in-progress signal) before redelivering.
    pub ack_wait: Duration,
    /// Deliveries per message before it is given up (dead-lettered).
    pub max_deliver: i64,
    /// First delay before redelivering after a transient error; doubled per delivery.
    pub retry_base_delay: Duration,
    /// Cap on the redelivery delay.
    pub retry_max_delay: Duration,
    /// 1 for a single server, 3 for a NATS cluster.
    pub stream_replicas: usize,
    pub stream_storage: StreamStorage,
    /// JetStream de-duplication window (`Nats-Msg-Id`).
    pub duplicate_window: Duration,
    /// How long one pull request waits for messages before it is renewed.
    pub pull_expires: Duration,
}

/// The whole runtime configuration of a stage process.
#[derive(Clone)]
pub struct RuntimeConfig {
    pub nats: NatsConfig,
    /// `file:///abs/path` or `s3://bucket[/prefix]`.
    pub store_url: String,
    /// `AWS_*` settings for an `s3://` store (names lower-cased for object_store). Values are
    /// secrets as far as logging goes.
    pub store_options: Vec<(String, Secret)>,
    pub health_addr: SocketAddr,
    /// If set, the bound health address is written here (for tests using port 0).
    pub health_addr_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub consumer: ConsumerTuning,
    pub policy: ValidationPolicy,
    /// How long in-flight handlers may run after SIGTERM before they are handed back.
    pub shutdown_grace: Duration,
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so a future field cannot leak a secret through a derive.
        let store_option_names: Vec<&str> = self
            .store_options
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("RuntimeConfig")
            .field("nats", &self.nats)
            .field("store_url", &self.store_url)
            .field("store_options", &store_option_names)
            .field("health_addr", &self.health_addr)
            .field("health_addr_file", &self.health_addr_file)
            .field("log_format", &self.log_format)
            .field("consumer", &self.consumer)
            .field("policy", &self.policy)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_STORE: &str = "file://./.vexxy/store";
pub const DEFAULT_HEALTH_ADDR: &str = "0.0.0.0:8080";

impl RuntimeConfig {
    /// Reads and validates the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    /// Reads and validates the configuration from `env`.
    pub fn load(env: &Env<'_>) -> Result<Self, ConfigError> {
        let nats = NatsConfig {
            url: env
                .raw("NATS_URL")
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_string()),
            auth: load_auth(env)?,
            tls: load_tls(env)?,
        };
        validate_nats_urls(&nats.url)?;

        let store_url = env
            .raw("VEXXY_STORE")
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        crate::store::check_url(&store_url)
            .map_err(|problem| ConfigError::invalid("VEXXY_STORE", &store_url, problem))?;
        let store_options = AWS_VARIABLES
            .iter()
            .filter_map(|name| {
                env.raw(name)
                    .map(|value| (name.to_ascii_lowercase(), Secret(value)))
            })
            .collect();

        let health_addr = env.parse(
            "VEXXY_HEALTH_ADDR",
            DEFAULT_HEALTH_ADDR
                .parse()
                .expect("the default address parses"),
        )?;
        let health_addr_file = env.raw("VEXXY_HEALTH_ADDR_FILE").map(PathBuf::from);
        let log_format = match env.raw("VEXXY_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "VEXXY_LOG_FORMAT",
                    other,
                    "expected human or json",
                ));
            }
        };

        let consumer = load_consumer(env)?;
        let policy = load_policy(env)?;
        let shutdown_grace = env.duration("VEXXY_SHUTDOWN_GRACE", Duration::from_secs(25))?;

        Ok(RuntimeConfig {
            nats,
            store_url,
            store_options,
            health_addr,
            health_addr_file,
            log_format,
            consumer,
            policy,
            shutdown_grace,
        })
    }
}

/// The `AWS_*` variables passed on to the S3 client (object_store's standard names).
const AWS_VARIABLES: [&str; 9] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

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
                password: Secret(password),
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
        return Ok(NatsAuth::Token(Secret(token)));
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
        return Ok(NatsAuth::Nkey(Secret(seed.trim().to_string())));
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

/// Upper bound for `VEXXY_MAX_IN_FLIGHT` (also the consumer's max_ack_pending).
pub const MAX_IN_FLIGHT_LIMIT: usize = 100_000;

/// In-flight messages per replica when `VEXXY_MAX_IN_FLIGHT` is unset. Wait holds a job for
/// its whole analysis window, but a waiting job is only a parked future (no thread, no API
/// traffic: the watches are shared), so it holds thousands; the other stages do seconds of
/// work per job and a few dozen in flight keep their API server and store busy enough.
pub fn default_max_in_flight(stage: vexxy_events::Stage) -> usize {
    match stage {
        vexxy_events::Stage::Wait => 5_000,
        _ => 32,
    }
}

fn load_consumer(env: &Env<'_>) -> Result<ConsumerTuning, ConfigError> {
    let max_in_flight = env.bounded("VEXXY_MAX_IN_FLIGHT", 4usize, 1, MAX_IN_FLIGHT_LIMIT)?;
    let ack_wait = env.duration("VEXXY_ACK_WAIT", Duration::from_secs(30))?;
    if ack_wait < Duration::from_millis(500) {
        return Err(ConfigError::invalid(
            "VEXXY_ACK_WAIT",
            &format!("{ack_wait:?}"),
            "must be at least 500ms (in-progress signals are sent every third of it)",
        ));
    }
    let max_deliver = env.bounded("VEXXY_MAX_DELIVER", 5i64, 1, 1000)?;
    let retry_base_delay = env.duration("VEXXY_RETRY_BASE_DELAY", Duration::from_secs(5))?;
    let retry_max_delay = env.duration("VEXXY_RETRY_MAX_DELAY", Duration::from_secs(300))?;
    if retry_max_delay < retry_base_delay {
        return Err(ConfigError::Inconsistent {
            name: "VEXXY_RETRY_MAX_DELAY".to_string(),
            problem: "must not be shorter than VEXXY_RETRY_BASE_DELAY".to_string(),
        });
    }
    let stream_replicas = env.parse("VEXXY_STREAM_REPLICAS", 1usize)?;
    if stream_replicas != 1 && stream_replicas != 3 {
        return Err(ConfigError::invalid(
            "VEXXY_STREAM_REPLICAS",
            &stream_replicas.to_string(),
            "expected 1 (single server) or 3 (NATS cluster)",
        ));
    }
    let stream_storage = match env.raw("VEXXY_STREAM_STORAGE").as_deref().map(str::trim) {
        None | Some("file") => StreamStorage::File,
        Some("memory") => StreamStorage::Memory,
        Some(other) => {
            return Err(ConfigError::invalid(
                "VEXXY_STREAM_STORAGE",
                other,
                "expected file or memory",
            ));
        }
    };
    let duplicate_window = env.duration("VEXXY_DUPLICATE_WINDOW", Duration::from_secs(600))?;
    if duplicate_window.is_zero() {
        return Err(ConfigError::invalid(
            "VEXXY_DUPLICATE_WINDOW",
            "0",
            "must be positive: it is what makes redelivered publishes harmless",
        ));
    }
    let pull_expires = env.duration("VEXXY_PULL_EXPIRES", Duration::from_secs(5))?;
    if pull_expires < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "VEXXY_PULL_EXPIRES",
            &format!("{pull_expires:?}"),
            "must be at least 1s",
        ));
    }
    Ok(ConsumerTuning {
        max_in_flight,
        ack_wait,
        max_deliver,
        retry_base_delay,
        retry_max_delay,
        stream_replicas,
        stream_storage,
        duplicate_window,
        pull_expires,
    })
}

fn load_policy(env: &Env<'_>) -> Result<ValidationPolicy, ConfigError> {
    let defaults = ValidationPolicy::default();
    let seconds = |name: &str, default: u64| -> Result<u64, ConfigError> {
        Ok(env.duration(name, Duration::from_secs(default))?.as_secs())
    };
    let min = seconds(
        "VEXXY_MIN_ANALYSIS_DURATION",
        defaults.min_analysis_duration,
    )?;
    let max = seconds(
        "VEXXY_MAX_ANALYSIS_DURATION",
        defaults.max_analysis_duration,
    )?;
    let default = seconds(
        "DEFAULT_ANALYSIS_DURATION",
        defaults.default_analysis_duration,
    )?;
    if min > max {
        return Err(ConfigError::Inconsistent {
            name: "VEXXY_MIN_ANALYSIS_DURATION".to_string(),
            problem: format!("{min}s is above VEXXY_MAX_ANALYSIS_DURATION ({max}s)"),
        });
    }
    if default < min || default > max {
        return Err(ConfigError::Inconsistent {
            name: "DEFAULT_ANALYSIS_DURATION".to_string(),
            problem: format!(
                "{default}s is outside VEXXY_MIN_ANALYSIS_DURATION..VEXXY_MAX_ANALYSIS_DURATION ({min}s..{max}s)"
            ),
        });
    }
    let max_request_bytes = env.bounded(
        "VEXXY_MAX_REQUEST_BYTES",
        defaults.max_request_bytes,
        1024,
        1024 * 1024,
    )?;
    Ok(ValidationPolicy {
        min_analysis_duration: min,
        max_analysis_duration: max,
        default_analysis_duration: default,
        registry_allowlist: env.list("VEXXY_REGISTRY_ALLOWLIST"),
        max_request_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<RuntimeConfig, ConfigError> {
        RuntimeConfig::load(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_need_no_variables() {
        let config = load(&[]).unwrap();
        assert_eq!(config.nats.url, DEFAULT_NATS_URL);
        assert_eq!(config.nats.auth, NatsAuth::None);
        assert_eq!(config.store_url, DEFAULT_STORE);
        assert_eq!(config.consumer.ack_wait, Duration::from_secs(30));
        assert_eq!(config.consumer.max_deliver, 5);
        assert_eq!(config.policy, ValidationPolicy::default());
    }

    #[test]
    fn durations_accept_humantime_and_plain_seconds() {
        let config = load(&[("VEXXY_ACK_WAIT", "2s"), ("VEXXY_SHUTDOWN_GRACE", "7")]).unwrap();
        assert_eq!(config.consumer.ack_wait, Duration::from_secs(2));
        assert_eq!(config.shutdown_grace, Duration::from_secs(7));
        let config = load(&[("VEXXY_RETRY_BASE_DELAY", "250ms")]).unwrap();
        assert_eq!(config.consumer.retry_base_delay, Duration::from_millis(250));
    }

    #[test]
    fn every_error_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("VEXXY_ACK_WAIT", "soon")], "VEXXY_ACK_WAIT"),
            (&[("VEXXY_MAX_IN_FLIGHT", "0")], "VEXXY_MAX_IN_FLIGHT"),
            (&[("VEXXY_MAX_DELIVER", "many")], "VEXXY_MAX_DELIVER"),
            (&[("VEXXY_STREAM_REPLICAS", "2")], "VEXXY_STREAM_REPLICAS"),
            (&[("VEXXY_STREAM_STORAGE", "disk")], "VEXXY_STREAM_STORAGE"),
            (&[("VEXXY_HEALTH_ADDR", "localhost")], "VEXXY_HEALTH_ADDR"),
            (&[("VEXXY_LOG_FORMAT", "xml")], "VEXXY_LOG_FORMAT"),
            (&[("VEXXY_STORE", "ftp://x")], "VEXXY_STORE"),
            (&[("VEXXY_STORE", "file://relative/dir")], "VEXXY_STORE"),
            (&[("NATS_URL", "nats://a:b:c:d")], "NATS_URL"),
            (&[("NATS_USER", "u")], "NATS_PASSWORD"),
            (&[("NATS_CREDS", "/nonexistent/x.creds")], "NATS_CREDS"),
            (&[("NATS_TLS_CA", "/nonexistent/ca.pem")], "NATS_TLS_CA"),
            (&[("NATS_NKEY", "UABC")], "NATS_NKEY"),
            (&[("NATS_TLS_REQUIRED", "perhaps")], "NATS_TLS_REQUIRED"),
            (
                &[("DEFAULT_ANALYSIS_DURATION", "10")],
                "DEFAULT_ANALYSIS_DURATION",
            ),
            (
                &[
                    ("VEXXY_MIN_ANALYSIS_DURATION", "100"),
                    ("VEXXY_MAX_ANALYSIS_DURATION", "50"),
                ],
                "VEXXY_MIN_ANALYSIS_DURATION",
            ),
        ];
        for (pairs, variable) in cases {
            let error = load(pairs).expect_err(&format!("{pairs:?} must be rejected"));
            assert_eq!(error.variable(), *variable, "{pairs:?}: {error}");
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn two_auth_methods_are_refused() {
        let error = load(&[
            ("NATS_TOKEN", "t"),
            ("NATS_USER", "u"),
            ("NATS_PASSWORD", "p"),
        ])
        .unwrap_err();
        assert!(error.variable().contains("NATS_TOKEN"), "{error}");
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let config = load(&[
            ("NATS_USER", "alice"),
            ("NATS_PASSWORD", "hunter2-password"),
            ("AWS_SECRET_ACCESS_KEY", "s3-secret-value"),
            ("AWS_ACCESS_KEY_ID", "access-id"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2-password"), "{printed}");
        assert!(!printed.contains("s3-secret-value"), "{printed}");
        assert!(printed.contains("alice"));
        let token = load(&[("NATS_TOKEN", "tok-secret")]).unwrap();
        assert!(!format!("{token:?}").contains("tok-secret"));
    }

    #[test]
    fn request_policy_comes_from_env() {
        let config = load(&[
            ("VEXXY_MIN_ANALYSIS_DURATION", "1"),
            ("VEXXY_MAX_ANALYSIS_DURATION", "1h"),
            ("DEFAULT_ANALYSIS_DURATION", "30s"),
            ("VEXXY_REGISTRY_ALLOWLIST", "ghcr.io, docker.io,,"),
        ])
        .unwrap();
        assert_eq!(config.policy.min_analysis_duration, 1);
        assert_eq!(config.policy.max_analysis_duration, 3600);
        assert_eq!(config.policy.default_analysis_duration, 30);
        assert_eq!(
            config.policy.registry_allowlist,
            vec!["ghcr.io", "docker.io"]
        );
    }
}
