//! vexxy's own VEX model: what the analysis concluded, independent of any output format.
//!
//! The OpenVEX writer ([`crate::openvex`]) renders it today; a CycloneDX writer can render the
//! same values (status, justification, notes, action) without going back to Kubescape's shapes.
//! Statements borrow their identifiers from the parsed evidence, so building the model does not
//! copy the (possibly large) Kubescape documents.

use std::borrow::Cow;

/// The OpenVEX statuses (ordered by caution: the least suppressing of contradicting duplicates
/// wins, [`VexStatus`]'s `max`) and justifications, as the Kubescape reader parses them.
pub use vexxy_kubescape::{Justification, VexStatus};

/// One conclusion about one vulnerability in one package of the analysed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement<'a> {
    /// The CVE/GHSA id, e.g. `CVE-2023-4911`.
    pub vulnerability: &'a str,
    /// Where the vulnerability is described (the scanner's data source), when that is an IRI.
    pub vulnerability_iri: Option<&'a str>,
    /// Package URL of the package inside the image; `None` when Kubescape named no package.
    pub subcomponent: Option<&'a str>,
    pub status: VexStatus,
    /// Only for `not_affected`.
    pub justification: Option<Justification>,
    pub status_notes: Option<Cow<'a, str>>,
    /// Only for `affected`.
    pub action_statement: Option<Cow<'a, str>>,
}

/// Counts over a list of statements; they always add up to `statements`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub statements: u64,
    pub not_affected: u64,
    pub affected: u64,
    pub fixed: u64,
    pub under_investigation: u64,
    pub distinct_vulnerabilities: u64,
}

impl StatusCounts {
    /// Counts `statements`, which must be sorted by vulnerability (as [`crate::transform`] leaves them).
    pub fn of(statements: &[Statement<'_>]) -> StatusCounts {
        let mut counts = StatusCounts {
            statements: statements.len() as u64,
            ..StatusCounts::default()
        };
        let mut previous: Option<&str> = None;
        for statement in statements {
            match statement.status {
                VexStatus::NotAffected => counts.not_affected += 1,
                VexStatus::Affected => counts.affected += 1,
                VexStatus::Fixed => counts.fixed += 1,
                VexStatus::UnderInvestigation => counts.under_investigation += 1,
            }
            if previous != Some(statement.vulnerability) {
                counts.distinct_vulnerabilities += 1;
                previous = Some(statement.vulnerability);
            }
        }
        counts
    }
}
