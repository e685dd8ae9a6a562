//! Kubescape's statements → vexxy's statements: de-duplicated, honest about partial evidence,
//! every `affected` with an action and every `not_affected` with exactly one justification.
//!
//! Pure and linear: one hash map pass to merge duplicates, one sort for a deterministic order.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::model::{Justification, Statement, VexStatus};

/// One Kubescape statement flattened to a single package, with the v0.3.159 field swap already
/// undone by the reader (`vulnerability` is the CVE/GHSA id, `vulnerability_url` the data source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceStatement<'a> {
    pub vulnerability: &'a str,
    pub vulnerability_url: Option<&'a str>,
    pub subcomponent: Option<&'a str>,
    pub status: &'a str,
    pub justification: Option<&'a str>,
    pub impact_statement: Option<&'a str>,
    pub action_statement: Option<&'a str>,
}

/// Fix versions the vulnerability manifest knows, by (vulnerability id, package purl).
#[derive(Debug, Default)]
pub struct FixIndex<'a> {
    fixes: HashMap<(&'a str, &'a str), Fix<'a>>,
}

#[derive(Debug, Clone)]
pub struct Fix<'a> {
    pub package: &'a str,
    pub versions: Vec<&'a str>,
}

impl<'a> FixIndex<'a> {
    pub fn insert(&mut self, vulnerability: &'a str, purl: &'a str, fix: Fix<'a>) {
        if fix.versions.is_empty() {
            return;
        }
        self.fixes.entry((vulnerability, purl)).or_insert(fix);
    }

    pub fn get(&self, vulnerability: &'a str, purl: &'a str) -> Option<&Fix<'a>> {
        self.fixes.get(&(vulnerability, purl))
    }

    pub fn len(&self) -> usize {
        self.fixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fixes.is_empty()
    }
}

/// What the runtime observation covered, told to the reader of every statement it decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Learning completed: `note` says what was watched and when, for the `not_affected`
    /// statements it supports.
    Complete { note: String },
    /// Learning did not complete: `explanation` says why, for every statement it weakened.
    Partial { explanation: String },
}

/// Kubescape's impact statement for a package it never saw loaded: the observation says it.
const KUBESCAPE_NOT_LOADED: &str = "Vulnerable component is not loaded into the memory";

/// Default action when no fixed version is known.
pub const NO_FIX_ACTION: &str = "No fixed version is known yet. Kubescape saw this package loaded at runtime: \
remove the package or the code path that loads it if the image does not need it, apply the vendor's \
mitigations, and upgrade as soon as a fixed version is published.";

/// Builds the final statements: merges duplicates (least suppressing status wins), shapes each
/// status the way OpenVEX requires, weakens `not_affected` to `under_investigation` under
/// partial evidence, and sorts by (vulnerability, package).
pub fn build_statements<'a>(
    source: impl IntoIterator<Item = SourceStatement<'a>>,
    fixes: &FixIndex<'a>,
    observed: &Observed,
) -> Vec<Statement<'a>> {
    let merged = merge_duplicates(source);
    // Not collected in place: that would keep the larger allocation of `merged` (sized for the
    // merge records) for as long as the statements live, which is while every document renders.
    let mut statements: Vec<Statement<'a>> = Vec::with_capacity(merged.len());
    statements.extend(merged.into_iter().map(|m| shape(m, fixes, observed)));
    statements.sort_unstable_by(|a, b| {
        (a.vulnerability, a.subcomponent).cmp(&(b.vulnerability, b.subcomponent))
    });
    statements
}

/// A (vulnerability, package) after merging; `status` is `None` when Kubescape wrote a status
/// vexxy does not know (kept, shown as `under_investigation`, never dropped).
struct Merged<'a> {
    winner: SourceStatement<'a>,
    status: Option<VexStatus>,
    vulnerability_url: Option<&'a str>,
}

fn merge_duplicates<'a>(source: impl IntoIterator<Item = SourceStatement<'a>>) -> Vec<Merged<'a>> {
    let mut index: HashMap<(&'a str, Option<&'a str>), usize> = HashMap::new();
    let mut merged: Vec<Merged<'a>> = Vec::new();
    for statement in source {
        let status = VexStatus::parse(statement.status);
        let url = statement.vulnerability_url.filter(|u| is_iri(u));
        match index.get(&(statement.vulnerability, statement.subcomponent)) {
            None => {
                index.insert(
                    (statement.vulnerability, statement.subcomponent),
                    merged.len(),
                );
                merged.push(Merged {
                    winner: statement,
                    status,
                    vulnerability_url: url,
                });
            }
            Some(&at) => {
                let existing = &mut merged[at];
                if rank(status) > rank(existing.status) {
                    existing.winner = statement;
                    existing.status = status;
                }
                if existing.vulnerability_url.is_none() {
                    existing.vulnerability_url = url;
                }
            }
        }
    }
    merged
}

/// Unknown statuses rank with `under_investigation`: they must not suppress anything.
fn rank(status: Option<VexStatus>) -> VexStatus {
    status.unwrap_or(VexStatus::UnderInvestigation)
}

fn shape<'a>(merged: Merged<'a>, fixes: &FixIndex<'a>, observed: &Observed) -> Statement<'a> {
    let source = merged.winner;
    let impact = source.impact_statement.filter(|s| !s.trim().is_empty());
    let mut statement = Statement {
        vulnerability: source.vulnerability,
        vulnerability_iri: merged.vulnerability_url,
        subcomponent: source.subcomponent,
        status: VexStatus::UnderInvestigation,
        justification: None,
        status_notes: impact.map(Cow::Borrowed),
        action_statement: None,
    };
    match merged.status {
        None => {
            statement.status_notes = Some(Cow::Owned(format!(
                "Kubescape reported the unknown status {:?}; vexxy cannot tell whether this package is affected.",
                source.status
            )));
        }
        Some(VexStatus::Affected) => {
            statement.status = VexStatus::Affected;
            statement.action_statement = Some(action_for(&source, fixes));
        }
        Some(VexStatus::NotAffected) => match observed {
            Observed::Partial { explanation } => {
                statement.status_notes = Some(Cow::Owned(match impact {
                    Some(impact) => {
                        format!("{explanation} Kubescape's observation so far: {impact}.")
                    }
                    None => explanation.clone(),
                }));
            }
            Observed::Complete { note } => {
                // Kubescape's not_affected means "never loaded while it watched": the package
                // is in the image, so its code is present but was not in the execute path.
                // Kubescape spells that vulnerable_code_not_present; its words are kept when they
                // say more than the observation.
                statement.status = VexStatus::NotAffected;
                statement.justification = Some(Justification::VulnerableCodeNotInExecutePath);
                // Kubescape's own words only when they add to the observation.
                statement.status_notes =
                    Some(match impact.filter(|i| *i != KUBESCAPE_NOT_LOADED) {
                        Some(impact) => Cow::Owned(format!("{note} Kubescape: {impact}.")),
                        None => Cow::Owned(note.clone()),
                    });
            }
        },
        Some(VexStatus::Fixed) => statement.status = VexStatus::Fixed,
        Some(VexStatus::UnderInvestigation) => {}
    }
    statement
}

fn action_for<'a>(source: &SourceStatement<'a>, fixes: &FixIndex<'a>) -> Cow<'a, str> {
    let fix = source
        .subcomponent
        .and_then(|purl| fixes.get(source.vulnerability, purl));
    if let Some(fix) = fix {
        return Cow::Owned(format!(
            "Upgrade {} to {} or later.",
            fix.package,
            fix.versions.join(" or ")
        ));
    }
    match source.action_statement.filter(|s| !s.trim().is_empty()) {
        Some(action) => Cow::Borrowed(action),
        None => Cow::Borrowed(NO_FIX_ACTION),
    }
}

/// Whether `value` is an absolute IRI as the OpenVEX schema's `iri` format requires.
pub fn is_iri(value: &str) -> bool {
    fluent_uri::Iri::parse(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> Observed {
        Observed::Complete {
            note: "Observed from 10:00 to 10:05.".into(),
        }
    }

    fn source<'a>(vuln: &'a str, purl: &'a str, status: &'a str) -> SourceStatement<'a> {
        SourceStatement {
            vulnerability: vuln,
            vulnerability_url: Some("https://nvd.nist.gov/vuln/detail/x"),
            subcomponent: Some(purl),
            status,
            justification: None,
            impact_statement: None,
            action_statement: None,
        }
    }

    #[test]
    fn duplicates_merge_and_affected_wins() {
        let input = vec![
            source("CVE-2", "pkg:deb/debian/a@1", "not_affected"),
            source("CVE-1", "pkg:deb/debian/a@1", "not_affected"),
            source("CVE-2", "pkg:deb/debian/a@1", "affected"),
            source("CVE-2", "pkg:deb/debian/a@1", "not_affected"),
        ];
        let out = build_statements(input, &FixIndex::default(), &complete());
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].vulnerability, out[0].status),
            ("CVE-1", VexStatus::NotAffected)
        );
        assert_eq!(
            (out[1].vulnerability, out[1].status),
            ("CVE-2", VexStatus::Affected)
        );
        assert_eq!(out[1].action_statement.as_deref(), Some(NO_FIX_ACTION));
    }

    #[test]
    fn affected_gets_the_fix_version_from_the_manifest() {
        let mut fixes = FixIndex::default();
        fixes.insert(
            "CVE-1",
            "pkg:deb/debian/libc6@2.31",
            Fix {
                package: "libc6",
                versions: vec!["2.31-13+deb11u7"],
            },
        );
        let out = build_statements(
            vec![source("CVE-1", "pkg:deb/debian/libc6@2.31", "affected")],
            &fixes,
            &complete(),
        );
        assert_eq!(
            out[0].action_statement.as_deref(),
            Some("Upgrade libc6 to 2.31-13+deb11u7 or later.")
        );
    }

    #[test]
    fn not_loaded_is_not_in_execute_path_with_the_observation_in_notes() {
        let mut s = source("CVE-1", "pkg:deb/debian/a@1", "not_affected");
        s.justification = Some("vulnerable_code_not_present");
        s.impact_statement = Some("Vulnerable component is not loaded into the memory");
        let out = build_statements(vec![s], &FixIndex::default(), &complete());
        assert_eq!(
            out[0].justification,
            Some(Justification::VulnerableCodeNotInExecutePath)
        );
        assert_eq!(
            out[0].status_notes.as_deref(),
            Some("Observed from 10:00 to 10:05.")
        );
        let mut s = source("CVE-1", "pkg:deb/debian/a@1", "not_affected");
        s.impact_statement = Some("Only reachable through a disabled module");
        let out = build_statements(vec![s], &FixIndex::default(), &complete());
        assert_eq!(
            out[0].status_notes.as_deref(),
            Some(
                "Observed from 10:00 to 10:05. Kubescape: Only reachable through a disabled module."
            )
        );
    }

    #[test]
    fn partial_evidence_never_says_not_affected_but_keeps_affected() {
        let partial = Observed::Partial {
            explanation: "Learning did not complete.".into(),
        };
        let input = vec![
            source("CVE-1", "pkg:deb/debian/a@1", "not_affected"),
            source("CVE-2", "pkg:deb/debian/a@1", "affected"),
        ];
        let out = build_statements(input, &FixIndex::default(), &partial);
        assert_eq!(out[0].status, VexStatus::UnderInvestigation);
        assert!(
            out[0]
                .status_notes
                .as_deref()
                .unwrap()
                .starts_with("Learning did not complete.")
        );
        assert_eq!(out[0].justification, None);
        assert_eq!(out[1].status, VexStatus::Affected);
    }

    #[test]
    fn unknown_status_is_kept_as_under_investigation() {
        let out = build_statements(
            vec![source("CVE-1", "pkg:x/a@1", "exploitable")],
            &FixIndex::default(),
            &complete(),
        );
        assert_eq!(out[0].status, VexStatus::UnderInvestigation);
        assert!(
            out[0]
                .status_notes
                .as_deref()
                .unwrap()
                .contains("exploitable")
        );
    }

    #[test]
    fn non_iri_urls_are_not_used_as_ids() {
        let mut s = source("CVE-1", "pkg:x/a@1", "affected");
        s.vulnerability_url = Some("not an iri");
        let out = build_statements(vec![s], &FixIndex::default(), &complete());
        assert_eq!(out[0].vulnerability_iri, None);
        assert!(is_iri(
            "https://security-tracker.debian.org/tracker/CVE-2004-0971"
        ));
        assert!(is_iri("urn:vexxy:x"));
    }
}
