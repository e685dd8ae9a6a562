//! From parsed evidence to the three documents enrich writes. Pure: no I/O, no clock — every
//! timestamp comes from the evidence, so a redelivered job writes byte-identical documents.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use vexxy_events::completed::Completeness;
use vexxy_events::pipeline::Observation;
use vexxy_events::{EvidenceQuality, Summary, ValidatedRequest};
use vexxy_kubescape::from_bytes::StoredSbom;
use vexxy_kubescape::metadata_only;
use vexxy_kubescape::sbom::ToolMeta;
use vexxy_kubescape::{
    Completion, ContainerProfileInfo, GrypeMatch, KubescapeManifest, KubescapeSbom, KubescapeVex,
    ProfileStatus,
};

use crate::Issuer;
use crate::cyclonedx;
use crate::cyclonedx_sbom::{self, ImagePackages, SbomImage};
use crate::model::{Statement, StatusCounts};
use crate::openvex::{self, DocumentInfo};
use crate::summary::{ImageInfo, KubescapeInfo, SummaryDocument};
use crate::transform::{Fix, FixIndex, Observed, SourceStatement, build_statements};
use vexxy_events::purl::image_purl;

pub const ROLE: &str = "runtime reachability analysis (Kubescape relevancy)";
pub const ANALYSIS_METHOD: &str = "kubescape_runtime";

/// Everything extract saved, parsed. Only `vex` carries statements; the rest adds fix versions,
/// counts and evidence quality. Of the filtered SBOM only its figures are kept: its content is
/// written through by [`filtered_sbom_document`] as soon as it is read.
#[derive(Debug, Default)]
pub struct Evidence {
    pub vex: Option<KubescapeVex>,
    pub filtered_sbom: Option<SbomFacts>,
    pub profile: Option<ContainerProfileInfo>,
    /// The relevancy-filtered manifest (instance slug): the matches Kubescape saw loaded.
    pub manifest: Option<ManifestFacts>,
    /// The image manifest (image slug): every match in the image.
    pub image_manifest: Option<ManifestFacts>,
    /// Packages in the unfiltered SBOM, when it was found.
    pub image_sbom_packages: Option<u64>,
    /// The unfiltered SBOM's OS and packages (those with a purl), for `sbom.cdx.json`.
    pub image_packages: Option<ImagePackages>,
}

/// What enrich uses of a vulnerability manifest. The manifest is held while the documents render
/// (statements borrow from it), so the rest of each Grype match (severity, match details, the
/// artifact's other fields, …) is dropped when it is read: a [`KubescapeManifest`] match costs
/// several times these facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestFacts {
    pub matches: Vec<MatchFacts>,
    /// The scanner that matched (`spec.metadata.tool`).
    pub tool: ToolMeta,
    /// `spec.metadata.report.createdAt`, as stored.
    pub created_at: Option<String>,
}

/// One Grype match: the vulnerability, the package and its fix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchFacts {
    pub vulnerability: String,
    /// The vulnerability's `dataSource` (empty when Grype gave none).
    pub data_source: String,
    /// The package's purl (empty when Grype gave none).
    pub purl: String,
    /// The package's name.
    pub package: String,
    /// [`GrypeMatch::fix_versions`]: the fixed versions, when the fix state is `fixed`.
    pub fix_versions: Option<Vec<String>>,
}

impl From<KubescapeManifest> for ManifestFacts {
    fn from(manifest: KubescapeManifest) -> ManifestFacts {
        // Not collected in place: that would keep the matches' larger allocation.
        let mut matches = Vec::with_capacity(manifest.payload.matches.len());
        matches.extend(manifest.payload.matches.into_iter().map(MatchFacts::from));
        ManifestFacts {
            matches,
            tool: manifest.metadata.tool,
            created_at: manifest.metadata.report.created_at,
        }
    }
}

impl From<GrypeMatch> for MatchFacts {
    fn from(m: GrypeMatch) -> MatchFacts {
        let fixed = m.fix_versions().is_some();
        MatchFacts {
            fix_versions: m
                .vulnerability
                .fix
                .filter(|_| fixed)
                .map(|fix| fix.versions),
            vulnerability: m.vulnerability.id,
            data_source: m.vulnerability.data_source,
            purl: m.artifact.purl,
            package: m.artifact.name,
        }
    }
}

/// What enrich uses of the relevancy-filtered SBOM besides its verbatim content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbomFacts {
    /// Packages Kubescape saw loaded (`spec.syft.artifacts`).
    pub packages: u64,
    /// `<name> <version>` of the tool that wrote it, when named.
    pub tool: Option<String>,
}

impl SbomFacts {
    pub fn of(sbom: &KubescapeSbom) -> SbomFacts {
        let tool = &sbom.metadata.tool;
        SbomFacts {
            packages: sbom.syft.artifacts.len() as u64,
            tool: (!tool.name.is_empty()).then(|| format!("{} {}", tool.name, tool.version)),
        }
    }
}

impl SbomFacts {
    /// The same figures from an SBOM read from its stored bytes.
    pub fn of_stored(stored: &StoredSbom<'_>) -> SbomFacts {
        SbomFacts {
            packages: stored.artifacts as u64,
            ..SbomFacts::of(&stored.sbom)
        }
    }
}

/// `sbom.filtered.json`: `spec.syft` of the SBOMSyftFiltered object verbatim, or an empty Syft
/// document when Kubescape stored none (no object, or one whose spec has no content: the
/// storage server's metadata-only view carries a zero-valued `spec.syft`).
pub fn filtered_sbom_document(object: Option<&Value>) -> Result<Vec<u8>, ProduceError> {
    let object = object.filter(|o| metadata_only::has_content(o.get("spec")));
    syft_document(object.and_then(|o| o.pointer("/spec/syft")))
}

/// `syft` pretty-printed, or the empty Syft document.
fn syft_document(syft: Option<&Value>) -> Result<Vec<u8>, ProduceError> {
    match syft {
        Some(syft) => serde_json::to_vec_pretty(syft),
        None => serde_json::to_vec_pretty(&serde_json::json!({
            "artifacts": [], "artifactRelationships": [], "source": {}, "distro": {}, "descriptor": {}, "schema": {}
        })),
    }
    .map_err(|source| ProduceError::Serialise {
        document: "filtered SBOM",
        source,
    })
}

/// [`filtered_sbom_document`] from `spec.syft` as stored: the same bytes, written straight from
/// the stored text instead of through a `Value` tree. A `Value` keeps only the last of repeated
/// keys (at the first one's place); text with a repeated key goes through a `Value` so the
/// document stays the same.
pub fn filtered_sbom_from_stored(syft: &RawValue) -> Result<Vec<u8>, ProduceError> {
    let serialise = |source| ProduceError::Serialise {
        document: "filtered SBOM",
        source,
    };
    let keys_unique = serde_json::from_str::<UniqueKeys>(syft.get()).map_err(serialise)?;
    if !keys_unique.0 {
        let syft: Value = serde_json::from_str(syft.get()).map_err(serialise)?;
        return syft_document(Some(&syft));
    }
    // Pretty printing adds indentation; half again the stored size avoids most regrowth.
    let mut out = Vec::with_capacity(syft.get().len() + syft.get().len() / 2);
    let mut reader = serde_json::Deserializer::from_str(syft.get());
    let mut writer = serde_json::Serializer::pretty(&mut out);
    serde_transcode::transcode(&mut reader, &mut writer).map_err(serialise)?;
    Ok(out)
}

/// Whether no object in a JSON text repeats a key.
struct UniqueKeys(bool);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut unique = true;
        let mut keys: Vec<Key<'de>> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            unique &= map.next_value::<UniqueKeys>()?.0;
            keys.push(key);
        }
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(UniqueKeys(
            unique && keys.windows(2).all(|w| w[0].0 != w[1].0),
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        let mut unique = true;
        while let Some(element) = seq.next_element::<UniqueKeys>()? {
            unique &= element.0;
        }
        Ok(UniqueKeys(unique))
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(true))
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(true))
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(true))
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(true))
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(true))
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(true))
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The documents and the figures for the completed event, all rendered at once (see
/// [`Conclusions`] for rendering one document at a time).
#[derive(Debug)]
pub struct Produced {
    /// `None` for an image without vulnerabilities (an OpenVEX document needs a statement).
    pub openvex: Option<Vec<u8>>,
    /// CycloneDX 1.6 VEX of the same statements; present exactly when `openvex` is.
    pub cyclonedx: Option<Vec<u8>>,
    /// The image's CycloneDX 1.6 SBOM the VEX links into; always written.
    pub sbom_cyclonedx: Vec<u8>,
    pub summary_json: Vec<u8>,
    pub summary: Summary,
    pub quality: EvidenceQuality,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot serialise the {document}: {source}")]
    Serialise {
        document: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The IRI of a job's VEX document.
pub fn document_id(base: &str, job_id: &str) -> String {
    format!("{}/{job_id}/vex", base.trim_end_matches('/'))
}

/// What the analysis concluded, before the VEX documents are rendered: the caller renders and
/// writes one document at a time, so no two of the large ones are in memory together.
#[derive(Debug)]
pub struct Conclusions<'e> {
    pub statements: Vec<Statement<'e>>,
    pub summary: Summary,
    pub quality: EvidenceQuality,
    pub summary_json: Vec<u8>,
    product: String,
    /// The VEX document's IRI, which also names the SBOM (its serial number is derived from it).
    document_id: String,
    document: Option<DocumentFields>,
    image_packages: Option<&'e ImagePackages>,
    repository: &'e str,
    digest: &'e str,
}

/// Document-level values both VEX formats share.
#[derive(Debug)]
struct DocumentFields {
    id: String,
    author: String,
    tooling: String,
    timestamp: DateTime<Utc>,
    last_updated: DateTime<Utc>,
}

impl Conclusions<'_> {
    /// The OpenVEX document; `None` for an image without vulnerabilities.
    pub fn openvex(&self) -> Result<Option<Vec<u8>>, ProduceError> {
        let Some(document) = &self.document else {
            return Ok(None);
        };
        let info = DocumentInfo {
            id: &document.id,
            author: &document.author,
            role: ROLE,
            timestamp: document.timestamp,
            last_updated: document.last_updated,
            version: 1,
            tooling: &document.tooling,
            product: &self.product,
        };
        openvex::render(&info, &self.statements)
            .map(Some)
            .map_err(|source| ProduceError::Serialise {
                document: "OpenVEX document",
                source,
            })
    }

    /// The CycloneDX VEX; present exactly when the OpenVEX document is.
    pub fn cyclonedx(&self) -> Result<Option<Vec<u8>>, ProduceError> {
        let Some(document) = &self.document else {
            return Ok(None);
        };
        let bom = cyclonedx::BomInfo {
            document_id: &document.id,
            timestamp: document.timestamp,
            product: &self.product,
            repository: self.repository,
            digest: self.digest,
            kubescape_tooling: &document.tooling,
            sbom_serial_number: &cyclonedx::sbom_serial_number(&self.document_id),
        };
        cyclonedx::render(&bom, &self.statements)
            .map(Some)
            .map_err(|source| ProduceError::Serialise {
                document: "CycloneDX VEX",
                source,
            })
    }
}

impl Conclusions<'_> {
    /// The image's CycloneDX SBOM (`sbom.cdx.json`): the packages of Kubescape's SBOM of the
    /// image and every package a statement names, so each BOM-Link of the VEX resolves.
    pub fn sbom_cyclonedx(&self) -> Result<Vec<u8>, ProduceError> {
        let mut packages = self.image_packages.cloned().unwrap_or_default();
        for purl in self.statements.iter().filter_map(|s| s.subcomponent) {
            if purl != self.product {
                packages.add_purl(purl);
            }
        }
        let timestamp = self
            .document
            .as_ref()
            .map_or_else(|| self.quality.window_end, |d| d.timestamp);
        let image = SbomImage {
            purl: &self.product,
            repository: self.repository,
            digest: self.digest,
        };
        cyclonedx_sbom::render(
            &cyclonedx::sbom_serial_number(&self.document_id),
            &openvex::rfc3339(timestamp),
            &image,
            &packages,
        )
        .map_err(|source| ProduceError::Serialise {
            document: "CycloneDX SBOM",
            source,
        })
    }
}

/// Every document at once (tests and small jobs); `Enrich::run` renders them one at a time.
pub fn produce(
    request: &ValidatedRequest,
    observation: &Observation,
    evidence: &Evidence,
    evidence_keys: &BTreeMap<&str, &str>,
    issuer: &Issuer,
) -> Result<Produced, ProduceError> {
    let conclusions = conclude(request, observation, evidence, evidence_keys, issuer)?;
    Ok(Produced {
        openvex: conclusions.openvex()?,
        cyclonedx: conclusions.cyclonedx()?,
        sbom_cyclonedx: conclusions.sbom_cyclonedx()?,
        summary_json: conclusions.summary_json,
        summary: conclusions.summary,
        quality: conclusions.quality,
    })
}

pub fn conclude<'e>(
    request: &'e ValidatedRequest,
    observation: &Observation,
    evidence: &'e Evidence,
    evidence_keys: &BTreeMap<&str, &str>,
    issuer: &Issuer,
) -> Result<Conclusions<'e>, ProduceError> {
    let product = image_purl(&request.repository, &request.image_digest);
    let partial = partial_evidence(observation, evidence.profile.as_ref());
    let observed = match &partial {
        Some(explanation) => Observed::Partial {
            explanation: explanation.clone(),
        },
        None => Observed::Complete {
            note: observed_note(observation),
        },
    };
    let fixes = fix_index(evidence);
    let mut notes = Vec::new();

    let statements: Vec<Statement<'_>> = match &evidence.vex {
        Some(vex) => {
            // kubevuln v0.3.159 never marks a statement it appended on a rescan as affected
            // (kubevuln #394), so its VEX can call a loaded package not_affected. The
            // relevancy-filtered manifest is the ground truth for "loaded": its matches join the
            // merge as affected, and the least suppressing status wins.
            let loaded = loaded_sources(evidence);
            let loaded_keys: HashSet<(&str, &str)> = loaded
                .iter()
                .filter_map(|s| Some((s.vulnerability, s.subcomponent?)))
                .collect();
            let contradicted: HashSet<(&str, &str)> = vex
                .findings
                .iter()
                .filter(|f| f.status.as_str() != "affected")
                .filter_map(|f| {
                    Some((f.vulnerability_id.as_str(), f.subcomponent_purl.as_deref()?))
                })
                .filter(|key| loaded_keys.contains(key))
                .collect();
            if !contradicted.is_empty() {
                notes.push(format!(
                    "{} (vulnerability, package) pairs Kubescape's VEX did not mark affected are listed in its \
                     relevancy-filtered vulnerability manifest (the package was loaded); they are reported as \
                     affected (kubevuln v0.3.159 does not re-mark statements appended on a rescan, kubevuln #394).",
                    contradicted.len()
                ));
            }
            build_statements(
                vex.findings.iter().map(source_of_finding).chain(loaded),
                &fixes,
                &observed,
            )
        }
        None => {
            if evidence.manifest.is_some() || evidence.image_manifest.is_some() {
                notes.push(
                    "Kubescape wrote no VEX object for this container; statements were derived from its \
                     vulnerability manifests: matches in the relevancy-filtered manifest are affected, the \
                     other matches of the image are under investigation."
                        .to_string(),
                );
            }
            build_statements(manifest_sources(evidence), &fixes, &observed)
        }
    };
    let counts = StatusCounts::of(&statements);

    let relevant_components = evidence.filtered_sbom.as_ref().map_or(0, |s| s.packages);
    let summary = Summary {
        total_cves_analyzed: counts.statements,
        not_affected: counts.not_affected,
        affected: counts.affected,
        fixed: counts.fixed,
        under_investigation: counts.under_investigation,
        distinct_vulnerabilities: counts.distinct_vulnerabilities,
        total_components_in_image: evidence.image_sbom_packages,
        relevant_components,
    };
    if evidence.image_sbom_packages.is_none() {
        notes.push("The image's unfiltered SBOM was not found; total_components_in_image and the loaded share are unknown.".into());
    }
    if evidence.filtered_sbom.is_none() {
        notes.push("Kubescape stored no filtered SBOM for this container; sbom.filtered.json lists no packages.".into());
    }
    if let Some(partial) = &partial {
        notes.push(partial.clone());
    }

    let shape = evidence.vex.as_ref().map_or("absent", |v| v.shape.as_str());
    let quality = EvidenceQuality {
        completeness: if partial.is_some() {
            Completeness::Partial
        } else {
            Completeness::Complete
        },
        learning_status: evidence
            .profile
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .map_or_else(
                || observation.learning_status.clone(),
                |s| s.as_str().to_string(),
            ),
        learning_completion: evidence
            .profile
            .as_ref()
            .and_then(|p| p.completion.as_ref())
            .map_or_else(
                || observation.learning_completion.clone(),
                |c| c.as_str().to_string(),
            ),
        window_start: observation.window_start,
        window_end: observation.window_end,
        container_restarts: observation.container_restarts,
        loaded_package_ratio: match evidence.image_sbom_packages {
            Some(total) if total > 0 => Some((relevant_components as f64 / total as f64).min(1.0)),
            _ => None,
        },
        kubescape_shape: shape.to_string(),
    };

    let id = document_id(&issuer.id_base, &request.job_id);
    let document = (!statements.is_empty()).then(|| {
        let (timestamp, last_updated) = document_times(evidence, observation);
        DocumentFields {
            id: id.clone(),
            author: issuer.author.clone(),
            tooling: tooling(evidence),
            timestamp,
            last_updated,
        }
    });

    let summary_doc = SummaryDocument {
        job_id: &request.job_id,
        analysis_method: ANALYSIS_METHOD,
        confidence: if partial.is_some() { "low" } else { "high" },
        image: ImageInfo {
            image_ref: &request.image_ref,
            image_digest: &request.image_digest,
            repository: &request.repository,
            purl: &product,
        },
        counts: &summary,
        evidence: &quality,
        kubescape: kubescape_info(evidence, shape),
        evidence_objects: evidence_keys.clone(),
        notes,
    };
    let summary_json =
        serde_json::to_vec_pretty(&summary_doc).map_err(|source| ProduceError::Serialise {
            document: "summary",
            source,
        })?;

    Ok(Conclusions {
        statements,
        summary,
        quality,
        summary_json,
        product,
        document_id: id,
        document,
        image_packages: evidence.image_packages.as_ref(),
        repository: &request.repository,
        digest: &request.image_digest,
    })
}

fn source_of_finding(f: &vexxy_kubescape::Finding) -> SourceStatement<'_> {
    SourceStatement {
        vulnerability: &f.vulnerability_id,
        vulnerability_url: f.data_source_url.as_deref(),
        subcomponent: f.subcomponent_purl.as_deref(),
        status: f.status.as_str(),
        justification: f.justification.map(|j| j.as_str()),
        impact_statement: f.impact_statement.as_deref(),
        action_statement: f.action_statement.as_deref(),
    }
}

/// The matches of the relevancy-filtered manifest (packages Kubescape saw loaded), as
/// `affected` statements.
fn loaded_sources(evidence: &Evidence) -> Vec<SourceStatement<'_>> {
    let Some(manifest) = &evidence.manifest else {
        return Vec::new();
    };
    manifest
        .matches
        .iter()
        .map(|m| SourceStatement {
            vulnerability: &m.vulnerability,
            vulnerability_url: Some(m.data_source.as_str()).filter(|s| !s.is_empty()),
            subcomponent: Some(m.purl.as_str()).filter(|s| !s.is_empty()),
            status: "affected",
            justification: None,
            impact_statement: Some(
                "Kubescape saw this package loaded during the observed part of the window",
            ),
            action_statement: None,
        })
        .collect()
}

/// Statements when Kubescape wrote no VEX (only reached with partial evidence, see extract):
/// loaded matches are `affected`, the image's other matches `under_investigation`.
fn manifest_sources(evidence: &Evidence) -> Vec<SourceStatement<'_>> {
    let mut out = loaded_sources(evidence);
    let loaded: HashSet<(&str, Option<&str>)> = out
        .iter()
        .map(|s| (s.vulnerability, s.subcomponent))
        .collect();
    if let Some(manifest) = &evidence.image_manifest {
        for m in &manifest.matches {
            let purl = Some(m.purl.as_str()).filter(|s| !s.is_empty());
            if loaded.contains(&(m.vulnerability.as_str(), purl)) {
                continue;
            }
            out.push(SourceStatement {
                vulnerability: &m.vulnerability,
                vulnerability_url: Some(m.data_source.as_str()).filter(|s| !s.is_empty()),
                subcomponent: purl,
                status: "under_investigation",
                justification: None,
                impact_statement: Some(
                    "Learning did not complete and Kubescape wrote no VEX; this package was not seen loaded in the observed part of the window",
                ),
                action_statement: None,
            });
        }
    }
    out
}

fn fix_index(evidence: &Evidence) -> FixIndex<'_> {
    let mut fixes = FixIndex::default();
    for manifest in [&evidence.manifest, &evidence.image_manifest]
        .into_iter()
        .flatten()
    {
        for m in &manifest.matches {
            if let Some(versions) = &m.fix_versions {
                fixes.insert(
                    &m.vulnerability,
                    &m.purl,
                    Fix {
                        package: &m.package,
                        versions: versions.iter().map(String::as_str).collect(),
                    },
                );
            }
        }
    }
    fixes
}

/// Partial when wait said so, or when the ContainerProfile itself shows learning did not finish
/// over the whole run (vexxy never trusts `not_affected` from an incomplete profile).
fn partial_evidence(
    observation: &Observation,
    profile: Option<&ContainerProfileInfo>,
) -> Option<String> {
    let profile_partial = profile.is_some_and(|p| {
        matches!(p.completion, Some(Completion::Partial))
            || p.status
                .as_ref()
                .is_some_and(|s| *s != ProfileStatus::Completed)
    });
    if !observation.partial && !profile_partial {
        return None;
    }
    let status = profile
        .and_then(|p| p.status.as_ref())
        .map_or(observation.learning_status.as_str(), |s| s.as_str());
    let completion = profile
        .and_then(|p| p.completion.as_ref())
        .map_or(observation.learning_completion.as_str(), |c| c.as_str());
    Some(format!(
        "Evidence is partial: Kubescape's learning for this container did not complete (profile status {status:?}, \
         completion {completion:?}) within the analysis window {} – {}, so a package not seen loaded may still be \
         loaded later; vexxy reports it as under investigation instead of not affected.",
        openvex::rfc3339(observation.window_start),
        openvex::rfc3339(observation.window_end),
    ))
}

/// What a `not_affected` statement rests on when learning completed: the image ran, watched
/// by Kubescape's node agent for the whole window, and the package's files were never loaded.
fn observed_note(observation: &Observation) -> String {
    format!(
        "Not loaded while the container ran {} to {} (learning completed): in the image, not in the execute path.",
        openvex::rfc3339(observation.window_start),
        openvex::rfc3339(observation.window_end),
    )
}

/// Document times from the evidence: Kubescape's VEX times, else the manifest report time, else
/// the end of the observation window.
fn document_times(
    evidence: &Evidence,
    observation: &Observation,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let manifest_time = evidence
        .manifest
        .iter()
        .chain(evidence.image_manifest.iter())
        .filter_map(|m| m.created_at.as_deref())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .max();
    let vex = evidence.vex.as_ref().map(|v| &v.document);
    let timestamp = vex
        .and_then(|d| d.timestamp)
        .or(manifest_time)
        .unwrap_or(observation.window_end);
    let last_updated = vex
        .and_then(|d| d.last_updated)
        .unwrap_or(timestamp)
        .max(timestamp);
    (timestamp, last_updated)
}

fn tooling(evidence: &Evidence) -> String {
    let source = match &evidence.vex {
        Some(vex) => format!(
            "Kubescape {} VEX (shape {})",
            vex.document.tooling.as_deref().unwrap_or("kubevuln"),
            vex.shape.as_str()
        ),
        None => "Kubescape vulnerability manifests (no VEX object)".to_string(),
    };
    let scanner = evidence
        .manifest
        .iter()
        .chain(evidence.image_manifest.iter())
        .map(|m| &m.tool)
        .find(|t| !t.name.is_empty())
        .map(|t| format!(", matches by {} {}", t.name, t.version))
        .unwrap_or_default();
    format!("vexxy {} from {source}{scanner}", env!("CARGO_PKG_VERSION"))
}

fn kubescape_info(evidence: &Evidence, shape: &str) -> KubescapeInfo {
    let tool = evidence
        .manifest
        .iter()
        .chain(evidence.image_manifest.iter())
        .map(|m| &m.tool)
        .find(|t| !t.name.is_empty());
    KubescapeInfo {
        vex_shape: shape.to_string(),
        vex_author: evidence.vex.as_ref().map(|v| v.document.author.clone()),
        vex_tooling: evidence
            .vex
            .as_ref()
            .and_then(|v| v.document.tooling.clone()),
        vex_version: evidence.vex.as_ref().map(|v| v.document.version),
        source_statements: evidence
            .vex
            .as_ref()
            .map_or(0, |v| v.statement_count as u64),
        duplicates_merged: evidence
            .vex
            .as_ref()
            .map_or(0, |v| v.duplicates_merged as u64),
        sbom_tool: evidence.filtered_sbom.as_ref().and_then(|s| s.tool.clone()),
        scanner: tool.map(|t| format!("{} {}", t.name, t.version)),
        scanner_db: tool.and_then(|t| t.database_version.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn both_ways(syft: &str) -> (Vec<u8>, Vec<u8>) {
        // `spec.metadata` has content, so an empty `syft` is written as stored too.
        let stored = format!(
            r#"{{"kind": "SBOMSyftFiltered", "spec": {{"metadata": {{"tool": {{"name": "syft"}}}}, "syft": {syft}}}}}"#
        );
        let object: Value = serde_json::from_str(&stored).unwrap();
        let through_value = filtered_sbom_document(Some(&object)).unwrap();
        #[derive(Deserialize)]
        struct Outer<'a> {
            #[serde(borrow)]
            spec: Spec<'a>,
        }
        #[derive(Deserialize)]
        struct Spec<'a> {
            #[serde(borrow)]
            syft: &'a RawValue,
        }
        let outer: Outer = serde_json::from_str(&stored).unwrap();
        (
            through_value,
            filtered_sbom_from_stored(outer.spec.syft).unwrap(),
        )
    }

    #[test]
    fn a_metadata_only_sbom_is_written_as_the_empty_document() {
        let empty = filtered_sbom_document(None).unwrap();
        let view = json!({
            "kind": "SBOMSyftFiltered",
            "metadata": {"name": "replicaset-x-app-0000-ffff"},
            "spec": metadata_only::zero_spec("SBOMSyftFiltered").unwrap(),
            "status": {},
        });
        assert_eq!(filtered_sbom_document(Some(&view)).unwrap(), empty);
        let mut full = view.clone();
        full["spec"]["syft"]["artifacts"] = json!([{"name": "libc6"}]);
        assert_ne!(filtered_sbom_document(Some(&full)).unwrap(), empty);
    }

    #[test]
    fn the_sbom_written_from_its_stored_text_is_the_sbom_written_from_a_value() {
        for syft in [
            r#"{"artifacts": [{"name": "a\"b\\c\u00e9\ud83d\ude00\n", "n": [1, -2, 3.5, 1e3, -0, 18446744073709551615, 0.1e-7],
                "x": {}, "y": [], "z": null, "t": true}], "schema": {"version": "16.0.20"}, "esc\u0041ped": "é"}"#,
            r#"{"b": 1, "a": 2, "b": 3, "nested": [{"k": 1, "k": 2}]}"#,
            r#"{"outer": {"k": {"a": 1}, "k": {"b": 2}}, "z": 0}"#,
            r#"{"weird key \"quoted\"": 1, "weird key \"quoted\"": 2}"#,
            "{}",
        ] {
            let (expected, actual) = both_ways(syft);
            assert_eq!(
                String::from_utf8(actual).unwrap(),
                String::from_utf8(expected).unwrap(),
                "{syft}"
            );
        }
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth() {
        let unique = |text: &str| serde_json::from_str::<UniqueKeys>(text).unwrap().0;
        assert!(unique(r#"{"a": [{"b": 1, "c": 2}], "d": {"b": 1}}"#));
        assert!(!unique(r#"{"a": [{"b": 1, "b": 2}]}"#));
        assert!(!unique(r#"{"a\u0062": 1, "ab": 2}"#));
        assert!(unique(
            &serde_json::to_string(&json!([1, "x", null])).unwrap()
        ));
    }
}
