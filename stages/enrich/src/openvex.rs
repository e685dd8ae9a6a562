//! Renders the model as an OpenVEX 0.2.0 document that validates against the official schema:
//! no field the schema does not define, IRIs where it wants IRIs, `version` ≥ 1, RFC 3339 times.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use sha2::{Digest, Sha256};

use crate::model::{Statement, VexStatus};
use crate::purl;
use crate::transform::is_iri;

pub const CONTEXT: &str = "https://openvex.dev/ns/v0.2.0";

/// Document-level fields.
#[derive(Debug, Clone)]
pub struct DocumentInfo<'a> {
    /// IRI of the document, e.g. `https://vexxy.io/analyses/<job>/vex`.
    pub id: &'a str,
    pub author: &'a str,
    pub role: &'a str,
    pub timestamp: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
    pub version: u64,
    pub tooling: &'a str,
    /// The product every statement is about: the image purl.
    pub product: &'a str,
}

/// Serialises the document. `statements` must not be empty (the schema needs one) — the caller
/// writes no document at all for an image without vulnerabilities.
pub fn render(
    info: &DocumentInfo<'_>,
    statements: &[Statement<'_>],
) -> Result<Vec<u8>, serde_json::Error> {
    debug_assert!(
        !statements.is_empty(),
        "an OpenVEX document needs at least one statement"
    );
    let document = Document {
        context: CONTEXT,
        id: info.id,
        author: info.author,
        role: info.role,
        timestamp: rfc3339(info.timestamp),
        last_updated: rfc3339(info.last_updated),
        version: info.version.max(1),
        tooling: info.tooling,
        statements: StatementList { info, statements },
    };
    // ~850 bytes per statement with the observation notes (pretty-printed); reserving that
    // avoids growing, and so briefly holding twice, a buffer of several MB.
    let mut out = Vec::with_capacity(512 + statements.len() * 900);
    serde_json::to_writer_pretty(&mut out, &document)?;
    out.push(b'\n');
    Ok(out)
}

pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A deterministic statement IRI under the document IRI, derived from what the statement is about.
pub fn statement_id(document_id: &str, statement: &Statement<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(statement.vulnerability.as_bytes());
    hasher.update([0]);
    hasher.update(statement.subcomponent.unwrap_or("").as_bytes());
    let digest = hasher.finalize();
    format!("{document_id}/statements/{}", hex::encode(&digest[..12]))
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "@context")]
    context: &'static str,
    #[serde(rename = "@id")]
    id: &'a str,
    author: &'a str,
    role: &'a str,
    timestamp: String,
    last_updated: String,
    version: u64,
    tooling: &'a str,
    statements: StatementList<'a>,
}

struct StatementList<'a> {
    info: &'a DocumentInfo<'a>,
    statements: &'a [Statement<'a>],
}

impl Serialize for StatementList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.statements.iter().map(|s| StatementOut {
            info: self.info,
            statement: s,
        }))
    }
}

struct StatementOut<'a> {
    info: &'a DocumentInfo<'a>,
    statement: &'a Statement<'a>,
}

impl Serialize for StatementOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.statement;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("@id", &statement_id(self.info.id, s))?;
        map.serialize_entry(
            "vulnerability",
            &Vulnerability {
                id: s.vulnerability_iri,
                name: s.vulnerability,
            },
        )?;
        map.serialize_entry(
            "products",
            &[Product {
                id: self.info.product,
                subcomponent: s.subcomponent.map(Subcomponent),
            }],
        )?;
        map.serialize_entry("status", s.status.as_str())?;
        if let Some(notes) = &s.status_notes {
            map.serialize_entry("status_notes", notes)?;
        }
        if let (VexStatus::NotAffected, Some(justification)) = (s.status, s.justification) {
            map.serialize_entry("justification", justification.as_str())?;
        }
        if let (VexStatus::Affected, Some(action)) = (s.status, &s.action_statement) {
            map.serialize_entry("action_statement", action)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Vulnerability<'a> {
    #[serde(rename = "@id", skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    name: &'a str,
}

struct Product<'a> {
    id: &'a str,
    subcomponent: Option<Subcomponent<'a>>,
}

impl Serialize for Product<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("@id", self.id)?;
        if let Some(sub) = &self.subcomponent {
            map.serialize_entry("subcomponents", &[sub])?;
        }
        map.end()
    }
}

struct Subcomponent<'a>(&'a str);

impl Serialize for Subcomponent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        // Dropping qualifiers keeps an IRI an IRI.
        if is_iri(self.0) {
            map.serialize_entry("@id", &Written(purl::ScannerNeutral(self.0)))?;
            // go-vex matches a component by its `@id` or its `identifiers.purl`.
            if let Some(trivy_spelling) =
                purl::epoch_as_qualifier(self.0).map(|p| purl::scanner_neutral(&p))
            {
                map.serialize_entry(
                    "identifiers",
                    &PurlIdentifier {
                        purl: &trivy_spelling,
                    },
                )?;
            }
        } else {
            // A purl that is not a valid IRI (e.g. an unencoded space) still identifies the
            // package; `identifiers.purl` has no IRI format constraint.
            let purl = purl::scanner_neutral(self.0);
            map.serialize_entry("identifiers", &PurlIdentifier { purl: &purl })?;
        }
        map.end()
    }
}

/// A value serialised as the string its `Display` writes.
struct Written<T>(T);

impl<T: std::fmt::Display> Serialize for Written<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct PurlIdentifier<'a> {
    purl: &'a str,
}
