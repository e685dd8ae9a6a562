//! # enrich: Kubescape's evidence in, a scanner-ready result out
//!
//! **Consumes** `vexxy.pipeline.enrich`: a ticket whose `evidence` names the raw Kubescape
//! objects extract saved under `analyses/<job_id>/evidence/`.
//!
//! **Decides**, from Kubescape's VEX (parsed from its stored bytes by `vexxy_kubescape::from_bytes::read_vex_bytes`, both kubevuln
//! generations and the legacy shape), the vulnerability manifests and the ContainerProfile:
//! one statement per (vulnerability, image, package) after de-duplication (the least suppressing
//! status wins), the image named by a `pkg:oci` purl Grype and Trivy match ([`vexxy_events::purl`]),
//! each package by a purl without the qualifiers scanners spell differently ([`purl::scanner_neutral`];
//! a Debian epoch also in Trivy's spelling),
//! `affected` with an upgrade action (fix version from the manifest when known),
//! `not_affected` with the justification `vulnerable_code_not_in_execute_path` (the package is in
//! the image but was never loaded while Kubescape watched; the window, the completed learning and
//! Kubescape's own words are in `status_notes`). **Partial evidence never yields `not_affected`**: such statements become
//! `under_investigation` with a note saying why; `affected` stays `affected`. When Kubescape
//! wrote no VEX (extract lets that through only for partial evidence or an image without
//! vulnerabilities), statements come from the manifests: loaded matches `affected`, the rest of
//! the image `under_investigation`.
//!
//! **Writes** (deterministic keys; timestamps taken from the evidence, so a redelivery writes
//! the same bytes; each document rendered, written and dropped before the next, so peak memory
//! holds one output at a time):
//! * `analyses/<job_id>/vex.openvex.json`: OpenVEX 0.2.0, valid against the official schema —
//!   not written for an image without vulnerabilities (a document needs ≥ 1 statement);
//! * `analyses/<job_id>/vex.cdx.json`: the same statements as a CycloneDX 1.6 VEX
//!   ([`cyclonedx`]), written whenever the OpenVEX document is, listed in
//!   `artifacts.extra.cyclonedx`;
//! * `analyses/<job_id>/sbom.cdx.json`: the image's CycloneDX 1.6 SBOM ([`cyclonedx_sbom`]),
//!   which the CycloneDX VEX's BOM-Links point into, listed in `artifacts.extra.sbom_cyclonedx`;
//! * `analyses/<job_id>/sbom.filtered.json`: `spec.syft` of the SBOMSyftFiltered, verbatim;
//! * `analyses/<job_id>/summary.json`: job metadata, counts equal to the statements, evidence quality.
//!
//! **Emits** `Outcome::Completed` (the runtime publishes `vexxy.analysis.completed`).
//!
//! ## Environment
//! * `VEXXY_VEX_AUTHOR` (required): the organisation issuing the documents, their `author`.
//! * `VEXXY_VEX_ID_BASE` (required): IRI prefix, under the issuer's control, of the documents'
//!   `@id` (`<base>/<job_id>/vex`) and statement `@id`s.

pub mod cyclonedx;
pub mod cyclonedx_sbom;
pub mod documents;
pub mod memory;
pub mod model;
pub mod openvex;
pub mod purl;
pub mod summary;
pub mod transform;

use bytes::Bytes;
use chrono::Utc;
use cyclonedx_sbom::ImagePackages;
use serde_json::Value;
use vexxy_events::completed::StageTiming;
use vexxy_events::{
    AnalysisCompleted, Artifacts, ExtraArtifacts, FailureReason, PipelineTicket, Stage,
};
use vexxy_kubescape::ParseError;
use vexxy_kubescape::from_bytes::{self, ReadError};
use vexxy_runtime::{
    ConfigError, Env, Handler, JobContext, Outcome, StageDefaults, StageError, Store, StoreError,
};

/// Milliseconds to seconds of CPU and store work per job: a few dozen in flight are plenty.
pub const RUNTIME_DEFAULTS: StageDefaults = StageDefaults { max_in_flight: 32 };

pub use documents::{
    Conclusions, Evidence, ManifestFacts, MatchFacts, Produced, SbomFacts, conclude,
    filtered_sbom_document, filtered_sbom_from_stored, produce,
};

/// Who issues the documents: an OpenVEX document is a claim, and its `author` and `@id` must
/// name the organisation making it, so neither has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// `VEXXY_VEX_AUTHOR`: the OpenVEX `author`, e.g. `ACME Product Security <psirt@acme.example>`.
    pub author: String,
    /// `VEXXY_VEX_ID_BASE`: IRI prefix of document and statement `@id`s (`<base>/<job_id>/vex`).
    pub id_base: String,
}

impl Issuer {
    /// `author` and `id_base` as set in `VEXXY_VEX_AUTHOR` and `VEXXY_VEX_ID_BASE`.
    pub fn new(author: &str, id_base: &str) -> Result<Self, ConfigError> {
        let author = author.trim();
        if author.is_empty() {
            return Err(ConfigError::invalid(
                "VEXXY_VEX_AUTHOR",
                author,
                "expected the name of the organisation issuing the VEX, e.g. \
                 \"ACME Product Security <psirt@acme.example>\"",
            ));
        }
        let base = id_base.trim().trim_end_matches('/');
        if !transform::is_iri(&format!("{base}/job/vex"))
            || !base.contains("://") && !base.starts_with("urn:")
        {
            return Err(ConfigError::invalid(
                "VEXXY_VEX_ID_BASE",
                id_base,
                "expected an absolute IRI your organisation controls, such as \
                 https://security.acme.example/vex or urn:acme:vex",
            ));
        }
        Ok(Issuer {
            author: author.to_string(),
            id_base: base.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichConfig {
    pub issuer: Issuer,
}

impl EnrichConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    pub fn load(env: &Env<'_>) -> Result<Self, ConfigError> {
        let author = env.required(
            "VEXXY_VEX_AUTHOR",
            "set it to the organisation issuing the VEX documents (their OpenVEX author), \
             e.g. \"ACME Product Security <psirt@acme.example>\"",
        )?;
        let id_base = env.required(
            "VEXXY_VEX_ID_BASE",
            "set it to an IRI prefix your organisation controls for the documents' @id, \
             e.g. https://security.acme.example/vex",
        )?;
        Ok(EnrichConfig {
            issuer: Issuer::new(&author, &id_base)?,
        })
    }
}

/// Object-store keys of the job's outputs.
pub fn vex_key(job_id: &str) -> String {
    format!("analyses/{job_id}/vex.openvex.json")
}
pub fn cyclonedx_key(job_id: &str) -> String {
    format!("analyses/{job_id}/vex.cdx.json")
}
pub fn sbom_cyclonedx_key(job_id: &str) -> String {
    format!("analyses/{job_id}/sbom.cdx.json")
}
pub fn sbom_key(job_id: &str) -> String {
    format!("analyses/{job_id}/sbom.filtered.json")
}
pub fn summary_key(job_id: &str) -> String {
    format!("analyses/{job_id}/summary.json")
}

pub struct Enrich {
    config: EnrichConfig,
}

impl Enrich {
    /// The stage; also fixes how the process's allocator returns large buffers
    /// ([`memory::return_large_buffers_to_the_system`]), here so that every process that runs
    /// jobs — the binary and anything measuring it — runs them with the same allocator settings.
    pub fn new(config: EnrichConfig) -> Self {
        memory::return_large_buffers_to_the_system();
        Enrich { config }
    }

    /// The stage as the binary runs it, configured from the environment.
    pub async fn from_env() -> anyhow::Result<Self> {
        Ok(Enrich::new(EnrichConfig::from_env()?))
    }

    /// Enriches one job, reading and writing through `store`.
    pub async fn run(&self, store: &Store, ticket: PipelineTicket) -> Result<Outcome, StageError> {
        let started_at = Utc::now();
        let job_id = ticket.request.job_id.clone();
        let observation = ticket.observation_for(Stage::Enrich)?;
        let refs = ticket.evidence_for(Stage::Enrich)?;
        let keys = refs.keys_by_name();

        let mut evidence = Evidence::default();
        if let Some(key) = refs.vex.as_deref() {
            // The largest object: read from its bytes, never held as a `serde_json::Value`.
            let bytes = store.get_bytes(key).await.map_err(storage_error)?;
            let vex = from_bytes::read_vex_bytes(&bytes).map_err(|e| unreadable(key, e))?;
            evidence.vex = Some(vex);
        }
        if let Some(key) = refs.container_profile.as_deref() {
            evidence.profile =
                Some(read(store, key, vexxy_kubescape::read_container_profile).await?);
        }
        if let Some(key) = refs.vulnerability_manifest.as_deref() {
            evidence.manifest = Some(read_manifest(store, key).await?);
        }
        if let Some(key) = refs.other.vulnerability_manifest_image.as_deref() {
            evidence.image_manifest = Some(read_manifest(store, key).await?);
        }
        if let Some(key) = refs.other.sbom_image.as_deref() {
            let bytes = store.get_bytes(key).await.map_err(storage_error)?;
            let stored = from_bytes::read_sbom_bytes(&bytes).map_err(|e| unreadable(key, e))?;
            evidence.image_sbom_packages = Some(stored.artifacts as u64);
            let sbom = stored.into_sbom().map_err(|e| bad_evidence(key, e))?;
            evidence.image_packages = Some(ImagePackages::from_syft(&sbom.syft));
        }

        // The SBOM last, once every other piece of evidence has been read and checked (so
        // evidence enrich refuses leaves nothing written): its content is only copied through,
        // so it is written now, from its stored text, and neither its bytes nor the document are
        // held while the VEX documents are rendered.
        let filtered_sbom = match refs.filtered_sbom.as_deref() {
            Some(key) => {
                let bytes = store.get_bytes(key).await.map_err(storage_error)?;
                let stored = from_bytes::read_sbom_bytes(&bytes).map_err(|e| unreadable(key, e))?;
                evidence.filtered_sbom = Some(SbomFacts::of_stored(&stored));
                filtered_sbom_from_stored(stored.syft)
            }
            None => filtered_sbom_document(None),
        }
        .map_err(|e| internal(&job_id, e))?;
        let sbom = sbom_key(&job_id);
        write(store, &sbom, filtered_sbom).await?;
        let conclusions = conclude(
            &ticket.request,
            observation,
            &evidence,
            &keys,
            &self.config.issuer,
        )
        .map_err(|e| internal(&job_id, e))?;

        // One document rendered, written and dropped before the next is rendered.
        let openvex_url = match conclusions.openvex().map_err(|e| internal(&job_id, e))? {
            Some(body) => {
                let key = vex_key(&job_id);
                write(store, &key, body).await?;
                Some(store.url(&key))
            }
            None => None,
        };
        let mut extra = ExtraArtifacts::default();
        if let Some(body) = conclusions.cyclonedx().map_err(|e| internal(&job_id, e))? {
            let key = cyclonedx_key(&job_id);
            write(store, &key, body).await?;
            extra.cyclonedx = Some(store.url(&key));
        }
        let body = conclusions
            .sbom_cyclonedx()
            .map_err(|e| internal(&job_id, e))?;
        let key = sbom_cyclonedx_key(&job_id);
        write(store, &key, body).await?;
        extra.sbom_cyclonedx = Some(store.url(&key));
        let summary = summary_key(&job_id);
        let Conclusions {
            summary_json,
            summary: counts,
            quality,
            ..
        } = conclusions;
        write(store, &summary, summary_json).await?;

        let mut timings = ticket.timings.clone();
        let finished_at = Utc::now();
        timings.push(StageTiming {
            stage: Stage::Enrich,
            started_at,
            finished_at,
            duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
        });
        let evidence_urls = keys.values().map(|k| store.url(k)).collect();
        let request = ticket.request;
        Ok(Outcome::Completed(Box::new(AnalysisCompleted {
            job_id: request.job_id,
            image_ref: request.image_ref,
            image_digest: request.image_digest,
            request_msg_id: request.request_msg_id,
            summary: counts,
            evidence: quality,
            artifacts: Artifacts {
                openvex: openvex_url,
                filtered_sbom: store.url(&sbom),
                summary: store.url(&summary),
                evidence: evidence_urls,
                extra,
            },
            timings,
            labels: request.labels,
        })))
    }
}

async fn load(store: &Store, key: &str) -> Result<Value, StageError> {
    let bytes = store.get_bytes(key).await.map_err(storage_error)?;
    serde_json::from_slice(&bytes).map_err(|e| not_json(key, e))
}

fn not_json(key: &str, error: serde_json::Error) -> StageError {
    StageError::Permanent {
        reason: FailureReason::Internal,
        message: format!(
            "evidence object {key} is not JSON ({error}); it was written by extract, so the object store content is damaged: resubmit the analysis"
        ),
        retryable: true,
    }
}

async fn read<T>(
    store: &Store,
    key: &str,
    reader: fn(&Value) -> Result<T, ParseError>,
) -> Result<T, StageError> {
    let object = load(store, key).await?;
    reader(&object).map_err(|e| bad_evidence(key, e))
}

async fn read_manifest(store: &Store, key: &str) -> Result<ManifestFacts, StageError> {
    let bytes = store.get_bytes(key).await.map_err(storage_error)?;
    from_bytes::read_manifest_bytes(&bytes)
        .map(ManifestFacts::from)
        .map_err(|e| unreadable(key, e))
}

fn unreadable(key: &str, error: ReadError) -> StageError {
    match error {
        ReadError::NotJson(e) => not_json(key, e),
        ReadError::Invalid(e) => bad_evidence(key, e),
    }
}

async fn write(store: &Store, key: &str, body: Vec<u8>) -> Result<(), StageError> {
    store
        .put_bytes(key, Bytes::from(body))
        .await
        .map(|_| ())
        .map_err(storage_error)
}

impl Handler for Enrich {
    async fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        self.run(&job.store, ticket).await
    }
}

fn internal(job_id: &str, error: documents::ProduceError) -> StageError {
    StageError::Permanent {
        reason: FailureReason::Internal,
        message: format!(
            "job {job_id}: {error}; this is a vexxy bug, please report it with the job's evidence"
        ),
        retryable: false,
    }
}

fn bad_evidence(key: &str, error: ParseError) -> StageError {
    StageError::Permanent {
        reason: FailureReason::Internal,
        message: format!(
            "Kubescape evidence {key} cannot be read: {error}. The Kubescape version may write a shape vexxy does not know; report it with this object"
        ),
        retryable: false,
    }
}

fn storage_error(error: StoreError) -> StageError {
    match error {
        StoreError::NotFound { url } => StageError::Permanent {
            reason: FailureReason::StorageUnavailable,
            message: format!(
                "evidence object {url} is gone from the object store (deleted or expired between extract and enrich); resubmit the analysis"
            ),
            retryable: true,
        },
        other => StageError::from(other),
    }
}
