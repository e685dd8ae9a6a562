//! The one parser of environment variables, for the runtime and every stage's own settings.
//!
//! One set of rules everywhere: an empty value counts as unset (a `FOO=` in a compose file means
//! "default"); flags are `true|1|yes|on` or `false|0|no|off`; durations are humantime (`30s`,
//! `5m`, `1h 30m`) or plain seconds (`30`); every error names the variable and what would be
//! accepted. Values are read through a lookup function rather than `std::env` directly, so tests
//! can build a configuration without touching the process environment (shared by all tests).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
    #[error("{name} is not set: {problem}")]
    Missing { name: String, problem: String },
}

impl ConfigError {
    pub fn invalid(name: &str, value: &str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    /// `name` is wrong given other variables; `problem` says which and how to fix it.
    pub fn inconsistent(name: &str, problem: impl Into<String>) -> Self {
        ConfigError::Inconsistent {
            name: name.to_string(),
            problem: problem.into(),
        }
    }

    /// The variable the error is about.
    pub fn variable(&self) -> &str {
        match self {
            ConfigError::Invalid { name, .. }
            | ConfigError::Inconsistent { name, .. }
            | ConfigError::Missing { name, .. } => name,
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

    /// No variables at all: every setting takes its default.
    pub fn empty() -> Env<'static> {
        Env {
            lookup: Box::new(|_| None),
        }
    }

    /// Any lookup function, e.g. over a `HashMap` in tests.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            lookup: Box::new(lookup),
        }
    }

    /// A fixed list of `(name, value)` pairs; a later pair wins over an earlier one.
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

    /// The raw value; empty strings count as unset.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    /// The value exactly as set, empty included, for the rare setting where "set but empty"
    /// means something of its own.
    pub fn verbatim(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// The trimmed value of a setting without a sensible default; unset, an error whose
    /// `problem` says what to set it to.
    pub fn required(&self, name: &str, problem: &str) -> Result<String, ConfigError> {
        self.raw(name)
            .map(|value| value.trim().to_string())
            .ok_or_else(|| ConfigError::Missing {
                name: name.to_string(),
                problem: problem.to_string(),
            })
    }

    /// The trimmed value, or `default` when unset.
    pub fn text(&self, name: &str, default: &str) -> String {
        self.raw(name)
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| default.to_string())
    }

    /// The trimmed value (or `default`) if `is_valid` accepts it; otherwise an error saying
    /// what is `expected`, e.g. "a Kubernetes quantity such as 500m or 4Gi".
    pub fn checked(
        &self,
        name: &str,
        default: &str,
        is_valid: impl Fn(&str) -> bool,
        expected: &str,
    ) -> Result<String, ConfigError> {
        let value = self.text(name, default);
        if is_valid(&value) {
            Ok(value)
        } else {
            Err(ConfigError::invalid(
                name,
                &value,
                format!("expected {expected}"),
            ))
        }
    }

    /// One of a fixed set of words (`choices` pairs each word with its meaning), or `default`.
    pub fn choice<T: Clone>(
        &self,
        name: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(value) = self.raw(name) else {
            return Ok(default);
        };
        let word = value.trim();
        choices
            .iter()
            .find(|(choice, _)| *choice == word)
            .map(|(_, meaning)| meaning.clone())
            .ok_or_else(|| {
                let words: Vec<&str> = choices.iter().map(|(choice, _)| *choice).collect();
                ConfigError::invalid(name, &value, format!("expected {}", words.join(" or ")))
            })
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

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, in any case).
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

    /// A number from `min` to `max` (inclusive).
    pub fn bounded<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse(name, default).map_err(|error| match error {
            ConfigError::Invalid { name, value, .. } => ConfigError::Invalid {
                name,
                value,
                problem: format!("expected a whole number from {min} to {max}"),
            },
            other => other,
        })?;
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

/// `30s`, `5m`, `1h 30m` or a plain number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(value)
        .map_err(|e| format!("{e}; write a duration such as 30s, 5m or 1h, or plain seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_one_set_of_words_in_any_case() {
        for (value, expected) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("on", true),
            ("TRUE", true),
            (" Yes ", true),
            ("false", false),
            ("0", false),
            ("no", false),
            ("off", false),
            ("Off", false),
        ] {
            let env = Env::from_pairs(&[("X_FLAG", value)]);
            assert_eq!(env.flag("X_FLAG", !expected), Ok(expected), "{value:?}");
        }
        assert_eq!(
            Env::from_pairs(&[("X_FLAG", "")]).flag("X_FLAG", true),
            Ok(true)
        );
        let error = Env::from_pairs(&[("X_FLAG", "perhaps")])
            .flag("X_FLAG", false)
            .unwrap_err();
        assert_eq!(error.variable(), "X_FLAG");
        assert!(error.to_string().contains("X_FLAG"), "{error}");
        assert!(error.to_string().contains("true or false"), "{error}");
    }

    #[test]
    fn durations_are_humantime_or_plain_seconds() {
        let env = Env::from_pairs(&[
            ("A", "300"),
            ("B", "5m"),
            ("C", "1h 30m"),
            ("D", "250ms"),
            ("E", "0"),
        ]);
        let default = Duration::from_secs(9);
        assert_eq!(env.duration("A", default), Ok(Duration::from_secs(300)));
        assert_eq!(env.duration("B", default), Ok(Duration::from_secs(300)));
        assert_eq!(env.duration("C", default), Ok(Duration::from_secs(5400)));
        assert_eq!(env.duration("D", default), Ok(Duration::from_millis(250)));
        assert_eq!(env.duration("E", default), Ok(Duration::ZERO));
        assert_eq!(env.duration("UNSET", default), Ok(default));
        let error = Env::from_pairs(&[("X_TTL", "five minutes")])
            .duration("X_TTL", default)
            .unwrap_err();
        assert_eq!(error.variable(), "X_TTL");
        assert!(error.to_string().contains("X_TTL"), "{error}");
        assert!(error.to_string().contains("30s"), "{error}");
    }

    #[test]
    fn every_kind_of_value_names_its_variable_when_wrong() {
        let env = Env::from_pairs(&[
            ("NUMBER", "many"),
            ("RANGE", "7"),
            ("WORD", "xml"),
            ("LABEL", "Bad_Name"),
        ]);
        let errors = [
            env.parse::<u32>("NUMBER", 1).unwrap_err(),
            env.bounded("NUMBER", 1u32, 1, 5).unwrap_err(),
            env.bounded("RANGE", 1u32, 1, 5).unwrap_err(),
            env.choice("WORD", 0, &[("human", 0), ("json", 1)])
                .unwrap_err(),
            env.checked(
                "LABEL",
                "ok",
                |v| v.chars().all(|c| c.is_ascii_lowercase()),
                "lower-case letters",
            )
            .unwrap_err(),
        ];
        for (error, name) in errors
            .iter()
            .zip(["NUMBER", "NUMBER", "RANGE", "WORD", "LABEL"])
        {
            assert_eq!(error.variable(), name, "{error}");
            assert!(error.to_string().contains(name), "{error}");
        }
        assert!(
            errors[1].to_string().contains("from 1 to 5"),
            "{}",
            errors[1]
        );
        assert!(
            errors[3].to_string().contains("human or json"),
            "{}",
            errors[3]
        );
    }

    #[test]
    fn empty_is_unset_except_where_asked_for_verbatim() {
        let env = Env::from_pairs(&[("EMPTY", " "), ("PADDED", "  value  ")]);
        assert_eq!(env.raw("EMPTY"), None);
        assert_eq!(env.text("EMPTY", "default"), "default");
        assert_eq!(env.verbatim("EMPTY").as_deref(), Some(" "));
        assert_eq!(env.text("PADDED", "default"), "value");
        assert_eq!(env.verbatim("UNSET"), None);
    }
}
