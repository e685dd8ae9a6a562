//! vexxy's own VEX model: what the analysis concluded, independent of any output format.
//!
//! The OpenVEX writer ([`crate::openvex`]) renders it today; a CycloneDX writer can render the
//! same values (status, justification, notes, action) without going back to Kubescape's shapes.
//! Statements borrow their identifiers from the parsed evidence, so building the model does not
//! copy the (possibly large) Kubescape documents.

use std::borrow::Cow;

/// OpenVEX statuses, ordered by how much they suppress: when Kubescape says two different things
/// about the same (vulnerability, package) — v0.3.159 appends contradicting duplicates — the
/// *least* suppressing status wins ([`Status::max`]), because a VEX that wrongly hides a
/// vulnerability is worse than one that shows it once too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    NotAffected,
    Fixed,
    UnderInvestigation,
    Affected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotAffected => "not_affected",
            Status::Fixed => "fixed",
            Status::UnderInvestigation => "under_investigation",
            Status::Affected => "affected",
        }
    }

    pub fn parse(value: &str) -> Option<Status> {
        match value {
            "not_affected" => Some(Status::NotAffected),
            "fixed" => Some(Status::Fixed),
            "under_investigation" => Some(Status::UnderInvestigation),
            "affected" => Some(Status::Affected),
            _ => None,
        }
    }
}

/// The OpenVEX 0.2.0 justifications for `not_affected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Justification {
    ComponentNotPresent,
    VulnerableCodeNotPresent,
    VulnerableCodeNotInExecutePath,
    VulnerableCodeCannotBeControlledByAdversary,
    InlineMitigationsAlreadyExist,
}

impl Justification {
    pub fn as_str(self) -> &'static str {
        match self {
            Justification::ComponentNotPresent => "component_not_present",
            Justification::VulnerableCodeNotPresent => "vulnerable_code_not_present",
            Justification::VulnerableCodeNotInExecutePath => "vulnerable_code_not_in_execute_path",
            Justification::VulnerableCodeCannotBeControlledByAdversary => {
                "vulnerable_code_cannot_be_controlled_by_adversary"
            }
            Justification::InlineMitigationsAlreadyExist => "inline_mitigations_already_exist",
        }
    }

    pub fn parse(value: &str) -> Option<Justification> {
        match value {
            "component_not_present" => Some(Justification::ComponentNotPresent),
            "vulnerable_code_not_present" => Some(Justification::VulnerableCodeNotPresent),
            "vulnerable_code_not_in_execute_path" => {
                Some(Justification::VulnerableCodeNotInExecutePath)
            }
            "vulnerable_code_cannot_be_controlled_by_adversary" => {
                Some(Justification::VulnerableCodeCannotBeControlledByAdversary)
            }
            "inline_mitigations_already_exist" => {
                Some(Justification::InlineMitigationsAlreadyExist)
            }
            _ => None,
        }
    }
}

/// One conclusion about one vulnerability in one package of the analysed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement<'a> {
    /// The CVE/GHSA id, e.g. `CVE-2023-4911`.
    pub vulnerability: &'a str,
    /// Where the vulnerability is described (the scanner's data source), when that is an IRI.
    pub vulnerability_iri: Option<&'a str>,
    /// Package URL of the package inside the image; `None` when Kubescape named no package.
    pub subcomponent: Option<&'a str>,
    pub status: Status,
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
                Status::NotAffected => counts.not_affected += 1,
                Status::Affected => counts.affected += 1,
                Status::Fixed => counts.fixed += 1,
                Status::UnderInvestigation => counts.under_investigation += 1,
            }
            if previous != Some(statement.vulnerability) {
                counts.distinct_vulnerabilities += 1;
                previous = Some(statement.vulnerability);
            }
        }
        counts
    }
}
