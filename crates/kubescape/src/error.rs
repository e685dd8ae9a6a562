//! One error type for everything read from Kubescape's storage API, precise enough that the
//! person reading a log knows which object and which field to look at.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ParseError {
    /// The object is of another kind than the reader expects (e.g. an SBOM given to `read_vex`).
    #[error(
        "expected a Kubescape {expected} object but got kind {found:?}; pass the object read from the {expected} resource"
    )]
    WrongKind {
        expected: &'static str,
        found: String,
    },

    /// The object has no `spec` (or an empty one). The storage API strips specs from LIST
    /// responses unless `resourceVersion=fullSpec` is given.
    #[error(
        "{kind} {name:?} has no spec; the storage API returns metadata only for LIST and for GET with resourceVersion=metadata: GET the object itself or LIST with resourceVersion=fullSpec"
    )]
    SpecMissing { kind: &'static str, name: String },

    /// A field has the wrong JSON type or an unknown value.
    #[error("{kind} {name:?}: field `{path}` is not valid: {message}")]
    InvalidField {
        kind: &'static str,
        name: String,
        path: String,
        message: String,
    },

    /// A field the object cannot be understood without is absent or empty.
    #[error("{kind} {name:?}: field `{path}` is missing or empty: {why}")]
    MissingField {
        kind: &'static str,
        name: String,
        path: String,
        why: &'static str,
    },
}

impl ParseError {
    pub(crate) fn from_serde(
        kind: &'static str,
        name: &str,
        prefix: &str,
        err: serde_path_to_error::Error<serde_json::Error>,
    ) -> Self {
        let inner = err.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner,
            (false, "." | "") => prefix.to_string(),
            (false, _) => format!("{prefix}.{inner}"),
        };
        ParseError::InvalidField {
            kind,
            name: name.to_string(),
            path,
            message: err.into_inner().to_string(),
        }
    }
}
