//! Everything a stage is configured with, read from environment variables once at start.
//!
//! Configuration is validated before anything connects: a typo in `VEXXY_ACK_WAIT` must stop
//! the process with a message naming the variable, not surface an hour later as odd retries.
//! Every variable is read with [`Env`], the one parser stages use for their own settings too.
//! What differs by stage (how many messages one replica handles at once) the stage declares in
//! [`StageDefaults`]. Secrets are kept in [`Secret`]: configuration is logged at start.

mod env;
mod nats;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vexxy_events::ValidationPolicy;

pub use self::env::{ConfigError, Env, parse_duration};
pub use self::nats::{DEFAULT_NATS_URL, NatsAuth, NatsConfig, NatsTls};
pub use crate::secret::Secret;

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

pub const DEFAULT_STORE: &str = "file://./.vexxy/store";
pub const DEFAULT_HEALTH_ADDR: &str = "0.0.0.0:8080";

impl RuntimeConfig {
    /// Reads and validates the configuration from the process environment, with the defaults
    /// the stage declared.
    pub fn from_env(defaults: StageDefaults) -> Result<Self, ConfigError> {
        Self::load_for(&Env::process(), defaults)
    }

    /// Reads and validates the configuration from `env`, with the runtime's own defaults
    /// (for clients and tests that declare no stage).
    pub fn load(env: &Env<'_>) -> Result<Self, ConfigError> {
        Self::load_for(env, StageDefaults::default())
    }

    /// Reads and validates the configuration from `env`, with a stage's defaults.
    pub fn load_for(env: &Env<'_>, defaults: StageDefaults) -> Result<Self, ConfigError> {
        let nats = nats::load(env)?;

        let store_url = env
            .raw("VEXXY_STORE")
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        crate::store::check_url(&store_url)
            .map_err(|problem| ConfigError::invalid("VEXXY_STORE", &store_url, problem))?;
        let store_options = AWS_VARIABLES
            .iter()
            .filter_map(|name| {
                env.raw(name)
                    .map(|value| (name.to_ascii_lowercase(), Secret::new(value)))
            })
            .collect();

        let health_addr = env.parse(
            "VEXXY_HEALTH_ADDR",
            DEFAULT_HEALTH_ADDR
                .parse()
                .expect("the default address parses"),
        )?;
        let health_addr_file = env.raw("VEXXY_HEALTH_ADDR_FILE").map(PathBuf::from);
        let log_format = env.choice(
            "VEXXY_LOG_FORMAT",
            LogFormat::Human,
            &[("human", LogFormat::Human), ("json", LogFormat::Json)],
        )?;

        let consumer = load_consumer(env, defaults)?;
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

/// Upper bound for `VEXXY_MAX_IN_FLIGHT` (also the consumer's max_ack_pending).
pub const MAX_IN_FLIGHT_LIMIT: usize = 100_000;

/// What a stage declares about itself where stages differ. The runtime knows no stage's needs:
/// each stage binary passes its own to [`crate::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageDefaults {
    /// `VEXXY_MAX_IN_FLIGHT` when unset: messages handled at once by one replica.
    pub max_in_flight: usize,
}

impl Default for StageDefaults {
    /// For processes that declare no stage (clients, tests): a handful in flight.
    fn default() -> Self {
        StageDefaults { max_in_flight: 4 }
    }
}

fn load_consumer(env: &Env<'_>, defaults: StageDefaults) -> Result<ConsumerTuning, ConfigError> {
    let max_in_flight = env.bounded(
        "VEXXY_MAX_IN_FLIGHT",
        defaults.max_in_flight,
        1,
        MAX_IN_FLIGHT_LIMIT,
    )?;
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
    let stream_storage = env.choice(
        "VEXXY_STREAM_STORAGE",
        StreamStorage::File,
        &[
            ("file", StreamStorage::File),
            ("memory", StreamStorage::Memory),
        ],
    )?;
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
