//! The VEX spec read straight from its stored text into findings, one statement at a time: a
//! statement is normalised and dropped as soon as it is parsed, so a 10,000 statement document
//! is never held as statements (they cost several times the stored text).
//!
//! The checks come in this order: a JSON type error anywhere in the spec first (the whole spec is
//! still parsed after a statement is refused), then the document's timestamps, then the first
//! statement that cannot be normalised.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

use crate::error::ParseError;
use crate::object::{ObjectInfo, null_as_default};
use crate::vex::{
    self, Finding, KubescapeVex, ShapeClues, VexDocumentInfo, VexStatement, non_empty, parse_time,
};

/// The VEX document (`spec`), with the statements normalised as they are read; unknown fields
/// are skipped without being kept.
#[derive(Deserialize)]
pub(crate) struct VexDocument {
    #[serde(rename = "@context", default, deserialize_with = "null_as_default")]
    context: String,
    #[serde(rename = "@id", default, deserialize_with = "null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    author: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    last_updated: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    version: i64,
    #[serde(default)]
    tooling: Option<String>,
    #[serde(default)]
    supplier: Option<String>,
    #[serde(default)]
    statements: NormalisedStatements,
}

impl VexDocument {
    /// The findings, shape and counts, with the object's envelope.
    pub(crate) fn normalise(self, info: ObjectInfo) -> Result<KubescapeVex, ParseError> {
        let name = info.name.clone();
        let time = |path: &str, value: &Option<String>| parse_time(value, &name, path.into());
        let document = VexDocumentInfo {
            timestamp: time("spec.timestamp", &self.timestamp)?,
            last_updated: time("spec.last_updated", &self.last_updated)?,
            id: self.id,
            context: self.context,
            author: self.author,
            role: non_empty(&self.role),
            version: self.version,
            tooling: non_empty(&self.tooling),
            supplier: non_empty(&self.supplier),
        };
        let mut statements = self.statements;
        if let Some(error) = statements.first_error {
            return Err(named(error, name));
        }
        // The findings outlive the read (enrich renders its documents from them): drop the
        // room the vector kept for growth.
        statements.findings.shrink_to_fit();
        Ok(KubescapeVex {
            object: info,
            document,
            shape: statements.clues.shape(),
            findings: statements.findings,
            statement_count: statements.count,
            duplicates_merged: statements.duplicates_merged,
            conflicting_duplicates: statements.conflicting_duplicates,
        })
    }
}

/// The statements' error is made without the object's name (the statements are read before the
/// envelope is at hand); it is put in here.
fn named(error: ParseError, object_name: String) -> ParseError {
    match error {
        ParseError::InvalidField {
            kind,
            path,
            message,
            ..
        } => ParseError::InvalidField {
            kind,
            name: object_name,
            path,
            message,
        },
        ParseError::MissingField {
            kind, path, why, ..
        } => ParseError::MissingField {
            kind,
            name: object_name,
            path,
            why,
        },
        other => other,
    }
}

/// The findings of every statement, de-duplicated as [`crate::read_vex`] describes.
#[derive(Default)]
struct NormalisedStatements {
    count: usize,
    findings: Vec<Finding>,
    index: FindingIndex,
    duplicates_merged: usize,
    conflicting_duplicates: usize,
    clues: ShapeClues,
    /// The first statement that could not be normalised; the later ones are still parsed (a
    /// type error in them is reported first, as for any other field) but not normalised.
    first_error: Option<ParseError>,
}

impl NormalisedStatements {
    fn add(&mut self, statement: VexStatement) {
        let i = self.count;
        self.count += 1;
        if self.first_error.is_some() {
            return;
        }
        self.clues.add(&statement);
        let findings = match vex::statement_findings(&statement, i, "") {
            Ok(findings) => findings,
            Err(error) => {
                self.first_error = Some(error);
                return;
            }
        };
        drop(statement);
        for finding in findings {
            match self.index.position(&self.findings, &finding) {
                None => {
                    self.index.insert(&finding, self.findings.len());
                    self.findings.push(finding);
                }
                Some(at) => {
                    self.duplicates_merged += 1;
                    if self.findings[at].status != finding.status {
                        self.conflicting_duplicates += 1;
                    }
                    let earlier = std::mem::replace(&mut self.findings[at], placeholder());
                    self.findings[at] = vex::merge_duplicate(earlier, finding);
                }
            }
        }
    }
}

/// Where each (vulnerability id, product id, subcomponent purl) is in the findings, keyed by a
/// hash of the three instead of copies of them; a key whose hash another key already has (rare)
/// is kept in full.
#[derive(Default)]
struct FindingIndex<S = RandomState> {
    hasher: S,
    by_hash: HashMap<u64, usize>,
    collided: HashMap<(String, String, Option<String>), usize>,
}

impl<S: BuildHasher> FindingIndex<S> {
    fn hash(&self, f: &Finding) -> u64 {
        self.hasher.hash_one((
            f.vulnerability_id.as_str(),
            f.product_id.as_str(),
            f.subcomponent_purl.as_deref(),
        ))
    }

    fn position(&self, findings: &[Finding], finding: &Finding) -> Option<usize> {
        let at = *self.by_hash.get(&self.hash(finding))?;
        if same_key(&findings[at], finding) {
            return Some(at);
        }
        self.collided.get(&owned_key(finding)).copied()
    }

    fn insert(&mut self, finding: &Finding, at: usize) {
        match self.by_hash.entry(self.hash(finding)) {
            Entry::Vacant(slot) => {
                slot.insert(at);
            }
            Entry::Occupied(_) => {
                self.collided.insert(owned_key(finding), at);
            }
        }
    }
}

fn same_key(a: &Finding, b: &Finding) -> bool {
    a.vulnerability_id == b.vulnerability_id
        && a.product_id == b.product_id
        && a.subcomponent_purl == b.subcomponent_purl
}

fn owned_key(f: &Finding) -> (String, String, Option<String>) {
    (
        f.vulnerability_id.clone(),
        f.product_id.clone(),
        f.subcomponent_purl.clone(),
    )
}

/// Stands in for a finding while it is merged with its duplicate (no allocation).
fn placeholder() -> Finding {
    Finding {
        vulnerability_id: String::new(),
        data_source_url: None,
        aliases: Vec::new(),
        description: None,
        product_id: String::new(),
        subcomponent_purl: None,
        status: vex::VexStatus::NotAffected,
        status_notes: None,
        justification: None,
        impact_statement: None,
        action_statement: None,
        action_statement_timestamp: None,
        timestamp: None,
        last_updated: None,
        statement_index: 0,
    }
}

impl<'de> Deserialize<'de> for NormalisedStatements {
    /// As `Vec<VexStatement>` with `null_as_default`: null is no statements.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(StatementsVisitor)
    }
}

struct StatementsVisitor;

impl<'de> Visitor<'de> for StatementsVisitor {
    type Value = NormalisedStatements;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_none<E>(self) -> Result<NormalisedStatements, E> {
        Ok(NormalisedStatements::default())
    }

    fn visit_unit<E>(self) -> Result<NormalisedStatements, E> {
        Ok(NormalisedStatements::default())
    }

    fn visit_some<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<NormalisedStatements, D::Error> {
        deserializer.deserialize_seq(StatementsVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NormalisedStatements, A::Error> {
        let mut statements = NormalisedStatements::default();
        while let Some(statement) = seq.next_element::<VexStatement>()? {
            statements.add(statement);
        }
        Ok(statements)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasherDefault, Hasher};

    use super::*;

    /// Every key has the same hash.
    #[derive(Default)]
    struct Constant;

    impl Hasher for Constant {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    fn finding(vulnerability: &str, purl: Option<&str>) -> Finding {
        Finding {
            vulnerability_id: vulnerability.into(),
            product_id: "pkg:oci/nginx".into(),
            subcomponent_purl: purl.map(str::to_string),
            ..placeholder()
        }
    }

    #[test]
    fn keys_with_the_same_hash_are_still_told_apart() {
        let mut index = FindingIndex::<BuildHasherDefault<Constant>>::default();
        let mut findings = Vec::new();
        let keys = [
            finding("CVE-1", Some("pkg:deb/a")),
            finding("CVE-1", Some("pkg:deb/b")),
            finding("CVE-1", None),
            finding("CVE-2", Some("pkg:deb/a")),
        ];
        for key in &keys {
            assert_eq!(index.position(&findings, key), None);
            index.insert(key, findings.len());
            findings.push(key.clone());
        }
        for (at, key) in keys.iter().enumerate() {
            assert_eq!(index.position(&findings, key), Some(at));
        }
        assert_eq!(
            index.position(&findings, &finding("CVE-3", Some("pkg:deb/a"))),
            None
        );
    }
}
