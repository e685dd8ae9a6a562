//! Values that must never appear in logs (NATS password, token, nkey seed, S3 secret key).
//! Configuration is logged at start, so it keeps them in [`Secret`], whose `Debug` prints
//! `<redacted>`.

use std::fmt;

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
