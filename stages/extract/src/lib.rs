//! # extract: save Kubescape's evidence, then remove the sandbox
//!
//! **Consumes** `vexxy.pipeline.extract`: a ticket with `sandbox` (deploy) and `observation`
//! (wait: the instance slug Kubescape named its objects after, and whether learning completed).
//!
//! **Reads** by name, with a GET each (full spec — a LIST of the storage API returns metadata
//! only): in the Kubescape namespace the OpenVulnerabilityExchangeContainer, SBOMSyftFiltered
//! and filtered VulnerabilityManifest named by the instance slug; in the sandbox namespace the
//! ContainerProfile (slug) and the VulnerabilityManifestSummary
//! (`deployment-<deployment>-<container>`); then the image's unfiltered VulnerabilityManifest
//! and SBOMSyft (the summary's `vulnerabilitiesRef.all.name`, else the image slug), which may be
//! absent.
//!
//! **Decides** what a missing VEX means ([`decide`]): zero vulnerabilities → an empty result;
//! vulnerabilities but no VEX → `Permanent` `no_vex_produced` explaining the storage server's
//! 500,000-byte cap (`storage.kindQueues.openvulnerabilityexchangecontainers.maxObjectSize`),
//! unless learning did not complete, in which case the manifests are partial evidence and the
//! job goes on (enrich then marks everything not seen loaded `under_investigation`).
//!
//! **Writes** each raw object, the JSON bytes exactly as the API server sent them (never decoded
//! and encoded again; only the metadata, the summary and, without a VEX, the manifests are
//! decoded), to `analyses/<job_id>/evidence/<kind>.json` (deterministic keys: a redelivery
//! overwrites), **deletes** the sandbox Deployment and its NetworkPolicy
//! (background propagation; already gone is fine) and **emits** the ticket with `evidence` (keys
//! only, never documents: they can exceed the NATS payload limit) to `vexxy.pipeline.enrich`.
//!
//! A **janitor** ([`janitor`]) runs in the same process, as a background task of the runtime
//! (on the stage's NATS connection, stopped on shutdown): at start, a TTL after a job failed,
//! and at the latest every `VEXXY_JANITOR_INTERVAL`, it deletes vexxy sandboxes older than
//! `K8S_JOB_TTL_SECONDS` whose job is final or unknown in the `vexxy-jobs` KV bucket.
//!
//! ## Environment
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `K8S_IN_CLUSTER` / `KUBECONFIG` | kubeconfig | which cluster |
//! | `VEXXY_KUBESCAPE_NAMESPACE` | `kubescape` | where kubevuln writes VEX, SBOMs and manifests |
//! | `K8S_SANDBOX_NAMESPACE` | `vexxy-sandbox` | where sandboxes run (janitor scope) |
//! | `VEXXY_JANITOR_INTERVAL` | `K8S_JOB_TTL_SECONDS` | longest time between janitor sweeps (humantime, or seconds); a failed job's sandbox is swept a TTL after the failure regardless, so this only bounds what no event announces |
//! | `K8S_JOB_TTL_SECONDS` | `600` | a sandbox older than this whose job is not running is removed |

pub mod cluster;
pub mod decide;
pub mod janitor;

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use kube::Client;
use serde_json::Value;
use vexxy_events::completed::StageTiming;
use vexxy_events::pipeline::EvidenceRefs;
use vexxy_events::{PipelineTicket, Stage};
use vexxy_kubescape::keys::{self, kinds};
use vexxy_kubescape::metadata_only;
use vexxy_kubescape::names;
use vexxy_runtime::{
    BackgroundTask, ConfigError, Env, Handler, JobContext, Outcome, StageDefaults, StageError,
    Store,
};

/// Seconds of API and store work per job: a few dozen in flight keep both busy enough.
pub const RUNTIME_DEFAULTS: StageDefaults = StageDefaults { max_in_flight: 32 };

use crate::cluster::StorageObject;
use crate::decide::{MissingVex, VulnerabilityCount, missing_vex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractConfig {
    pub kubescape_namespace: String,
    pub sandbox_namespace: String,
    pub janitor_interval: Duration,
    pub job_ttl: Duration,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            kubescape_namespace: "kubescape".into(),
            sandbox_namespace: "vexxy-sandbox".into(),
            janitor_interval: Duration::from_secs(600),
            job_ttl: Duration::from_secs(600),
        }
    }
}

impl ExtractConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    pub fn load(env: &Env<'_>) -> Result<Self, ConfigError> {
        let defaults = ExtractConfig::default();
        let namespace = |name: &str, default: &str| {
            env.checked(name, default, names::is_dns_label, names::DNS_LABEL_RULE)
        };
        let job_ttl =
            Duration::from_secs(env.parse("K8S_JOB_TTL_SECONDS", defaults.job_ttl.as_secs())?);
        // Sweeping at least once a TTL keeps an orphan at most about two TTLs old.
        let janitor_interval = env.duration(
            "VEXXY_JANITOR_INTERVAL",
            job_ttl.max(Duration::from_secs(1)),
        )?;
        if janitor_interval.is_zero() {
            return Err(ConfigError::invalid(
                "VEXXY_JANITOR_INTERVAL",
                "0",
                "expected a positive duration such as 60s, 5m or 30",
            ));
        }
        Ok(ExtractConfig {
            kubescape_namespace: namespace(
                "VEXXY_KUBESCAPE_NAMESPACE",
                &defaults.kubescape_namespace,
            )?,
            sandbox_namespace: namespace("K8S_SANDBOX_NAMESPACE", &defaults.sandbox_namespace)?,
            janitor_interval,
            job_ttl,
        })
    }

    pub fn janitor(&self) -> janitor::JanitorConfig {
        janitor::JanitorConfig {
            namespace: self.sandbox_namespace.clone(),
            interval: self.janitor_interval,
            ttl: self.job_ttl,
        }
    }
}

/// Object-store key of one evidence object.
pub fn evidence_key(job_id: &str, kind: &str) -> String {
    format!("analyses/{job_id}/evidence/{kind}.json")
}

pub struct Extract {
    client: Client,
    config: ExtractConfig,
}

/// The raw objects found for one job.
#[derive(Debug, Default)]
struct Found {
    vex: Option<StorageObject>,
    filtered_sbom: Option<StorageObject>,
    profile: Option<StorageObject>,
    summary: Option<StorageObject>,
    manifest: Option<StorageObject>,
    image_manifest: Option<StorageObject>,
    image_sbom: Option<StorageObject>,
}

impl Found {
    /// The summary as Kubescape wrote it, if found and readable (it is small; the other objects
    /// are only decoded where a decision needs them).
    fn summary(&self) -> Option<vexxy_kubescape::KubescapeSummary> {
        let summary: Value = serde_json::from_slice(&self.summary.as_ref()?.bytes).ok()?;
        vexxy_kubescape::read_summary(&summary).ok()
    }
}

impl Extract {
    /// The stage as the binary runs it: configuration from the environment and the cluster from
    /// `K8S_IN_CLUSTER`/`KUBECONFIG`. The janitor comes with it as a background task
    /// ([`Handler::background_tasks`]).
    pub async fn from_env() -> anyhow::Result<Self> {
        let env = Env::process();
        let config = ExtractConfig::load(&env)?;
        let client = vexxy_runtime::kubernetes::client(&env).await?;
        Ok(Extract::new(client, config))
    }

    pub fn new(client: Client, config: ExtractConfig) -> Self {
        Extract { client, config }
    }

    /// Extracts one job, writing evidence through `store`.
    pub async fn run(
        &self,
        store: &Store,
        mut ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        let started_at = Utc::now();
        let job_id = ticket.request.job_id.clone();
        let sandbox = ticket.sandbox_for(Stage::Extract)?.clone();
        let observation = ticket.observation_for(Stage::Extract)?.clone();
        let slug = observation.instance_slug.as_str();
        let ks = self.config.kubescape_namespace.as_str();

        let get = |ns: &str, kind: &'static str, plural: &'static str, name: String| {
            let client = self.client.clone();
            let ns = ns.to_string();
            async move { cluster::get_storage_object(&client, &ns, kind, plural, &name).await }
        };
        let summary_name =
            names::summary_name("deployment", &sandbox.deployment, &sandbox.container);
        // The image's manifest and SBOM are named after the image slug the summary records;
        // asking for the slug the ticket implies in the same round saves a second round trip
        // whenever both agree (kubevuln derives it from the same digest-pinned image).
        let expected_image_slug = expected_image_slug(&ticket);
        let (vex, filtered_sbom, profile, summary, manifest, image_manifest, image_sbom) = tokio::try_join!(
            get(ks, kinds::VEX, kinds::VEX_PLURAL, slug.to_string()),
            get(
                ks,
                kinds::SBOM_FILTERED,
                kinds::SBOM_FILTERED_PLURAL,
                slug.to_string()
            ),
            get(
                &sandbox.namespace,
                kinds::CONTAINER_PROFILE,
                kinds::CONTAINER_PROFILE_PLURAL,
                slug.to_string()
            ),
            get(
                &sandbox.namespace,
                kinds::SUMMARY,
                kinds::SUMMARY_PLURAL,
                summary_name
            ),
            get(
                ks,
                kinds::MANIFEST,
                kinds::MANIFEST_PLURAL,
                slug.to_string()
            ),
            get(
                ks,
                kinds::MANIFEST,
                kinds::MANIFEST_PLURAL,
                expected_image_slug.clone()
            ),
            get(
                ks,
                kinds::SBOM,
                kinds::SBOM_PLURAL,
                expected_image_slug.clone()
            ),
        )?;
        let mut found = Found {
            vex,
            filtered_sbom,
            profile,
            summary,
            manifest,
            image_manifest,
            image_sbom,
        };

        let image_slug = image_slug(&ticket, &found);
        if image_slug != expected_image_slug {
            tracing::info!(job_id = %job_id, %image_slug, %expected_image_slug, "the image's objects are named differently than the ticket implies; reading them by the recorded name");
            let (image_manifest, image_sbom) = tokio::try_join!(
                get(
                    ks,
                    kinds::MANIFEST,
                    kinds::MANIFEST_PLURAL,
                    image_slug.clone()
                ),
                get(ks, kinds::SBOM, kinds::SBOM_PLURAL, image_slug.clone()),
            )?;
            found.image_manifest = image_manifest;
            found.image_sbom = image_sbom;
        }
        if found.image_sbom.is_none() {
            tracing::info!(job_id = %job_id, image_slug = %image_slug, "unfiltered SBOM not found; total_components_in_image will be unknown");
        }

        if found.vex.is_none() {
            let count = vulnerability_count(&found);
            match missing_vex(slug, ks, count, observation.partial) {
                MissingVex::EmptyResult => {
                    tracing::info!(job_id = %job_id, slug, "no VEX and no vulnerabilities: empty result")
                }
                MissingVex::PartialEvidence => {
                    tracing::info!(job_id = %job_id, slug, "no VEX, learning incomplete: going on with the manifests as partial evidence")
                }
                MissingVex::Fail {
                    reason,
                    message,
                    retryable,
                } => {
                    // The sandbox is not needed for a resubmission; the janitor would remove it
                    // later anyway, but removing it now frees the node sooner.
                    cluster::delete_sandbox(&self.client, &sandbox.namespace, &sandbox.deployment)
                        .await?;
                    return Err(StageError::Permanent {
                        reason,
                        message,
                        retryable,
                    });
                }
            }
        }

        let refs = save(store, &job_id, found).await?;
        cluster::delete_sandbox(&self.client, &sandbox.namespace, &sandbox.deployment).await?;

        ticket.evidence = Some(refs);
        let finished_at = Utc::now();
        ticket.timings.push(StageTiming {
            stage: Stage::Extract,
            started_at,
            finished_at,
            duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
        });
        Ok(Outcome::Next(ticket))
    }
}

/// The name of the image's unfiltered manifest and SBOM: the summary's `vulnerabilitiesRef.all`,
/// else kubevuln's image slug of the image tag it recorded (else the pinned image).
fn image_slug(ticket: &PipelineTicket, found: &Found) -> String {
    if let Some(all) = found.summary().and_then(|summary| summary.all) {
        return all.name;
    }
    let annotation = |key: &str| {
        [&found.vex, &found.manifest, &found.filtered_sbom]
            .into_iter()
            .flatten()
            .find_map(|o| o.annotation(key))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let image = annotation(keys::IMAGE_TAG).unwrap_or_else(|| ticket.request.pinned_image());
    let hash = annotation(keys::IMAGE_ID).unwrap_or_else(|| ticket.request.image_digest.clone());
    names::image_slug(&image, &hash)
}

/// The image slug kubevuln gives a digest-pinned image: its normalised reference and digest.
fn expected_image_slug(ticket: &PipelineTicket) -> String {
    names::image_slug(
        &names::normalize_image_reference(&ticket.request.pinned_image()),
        &ticket.request.image_digest,
    )
}

/// Writes every object found, all at once (each key is its own file or S3 object), as the API
/// server sent it, and returns their keys.
async fn save(store: &Store, job_id: &str, found: Found) -> Result<EvidenceRefs, StageError> {
    let objects = [
        ("vex", found.vex),
        ("sbom-filtered", found.filtered_sbom),
        ("container-profile", found.profile),
        ("vulnerability-summary", found.summary),
        ("vulnerability-manifest", found.manifest),
        ("vulnerability-manifest-image", found.image_manifest),
        ("sbom-image", found.image_sbom),
    ];
    let bodies: Vec<(&str, String, Bytes)> = objects
        .into_iter()
        .filter_map(|(kind, object)| object.map(|o| (kind, evidence_key(job_id, kind), o.bytes)))
        .collect();
    futures::future::try_join_all(
        bodies
            .iter()
            .map(|(_, key, body)| store.put_bytes(key, body.clone())),
    )
    .await?;

    let mut refs = EvidenceRefs::default();
    for (kind, key, _) in bodies {
        let slot = match kind {
            "vex" => &mut refs.vex,
            "sbom-filtered" => &mut refs.filtered_sbom,
            "container-profile" => &mut refs.container_profile,
            "vulnerability-summary" => &mut refs.vulnerability_summary,
            "vulnerability-manifest" => &mut refs.vulnerability_manifest,
            "vulnerability-manifest-image" => &mut refs.other.vulnerability_manifest_image,
            _ => &mut refs.other.sbom_image,
        };
        *slot = Some(key);
    }
    Ok(refs)
}

/// Matches in the manifests, or the summary's counts when no manifest was found. Only asked
/// when there is no VEX, so the manifests are decoded here and nowhere else. A manifest whose
/// spec has no content (the storage server's metadata-only view, `matches: null`) counts as not
/// found rather than as one without matches.
fn vulnerability_count(found: &Found) -> VulnerabilityCount {
    let matches = |o: &Option<StorageObject>| {
        let manifest = serde_json::from_slice::<Value>(&o.as_ref()?.bytes).ok();
        if manifest
            .as_ref()
            .is_some_and(|m| !metadata_only::has_content(m.get("spec")))
        {
            return None;
        }
        Some(
            manifest
                .and_then(|m| {
                    m.pointer("/spec/payload/matches")
                        .and_then(Value::as_array)
                        .map(|a| a.len() as u64)
                })
                .unwrap_or(0),
        )
    };
    let manifests = [matches(&found.manifest), matches(&found.image_manifest)];
    if manifests.iter().any(Option::is_some) {
        return VulnerabilityCount::Known(manifests.into_iter().flatten().sum());
    }
    match found.summary() {
        Some(summary) => {
            let s = &summary.severities;
            let all = [
                &s.critical,
                &s.high,
                &s.medium,
                &s.low,
                &s.negligible,
                &s.unknown,
            ]
            .iter()
            .map(|c| c.all.max(c.relevant).max(0) as u64)
            .sum();
            VulnerabilityCount::Known(all)
        }
        None => VulnerabilityCount::Unknown,
    }
}

impl Handler for Extract {
    async fn handle(
        &self,
        job: &JobContext,
        ticket: PipelineTicket,
    ) -> Result<Outcome, StageError> {
        self.run(&job.store, ticket).await
    }

    /// The janitor, reading job liveness from the `vexxy-jobs` KV bucket on the stage's own
    /// connection. Stopping it mid-sweep is harmless: deletes are idempotent and the next
    /// process sweeps at start.
    fn background_tasks(&self) -> Vec<BackgroundTask> {
        let client = self.client.clone();
        let config = self.config.janitor();
        vec![BackgroundTask::new("janitor", move |context| async move {
            tokio::select! {
                () = janitor::run(client, context.jetstream, config) => {}
                () = context.shutdown.requested() => {}
            }
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c = ExtractConfig::load(&vexxy_runtime::Env::empty()).unwrap();
        assert_eq!(c, ExtractConfig::default());
        let c = ExtractConfig::load(&vexxy_runtime::Env::from_fn(|n| match n {
            "VEXXY_JANITOR_INTERVAL" => Some("5s".into()),
            "K8S_JOB_TTL_SECONDS" => Some("30".into()),
            "VEXXY_KUBESCAPE_NAMESPACE" => Some("ks".into()),
            _ => None,
        }))
        .unwrap();
        assert_eq!(
            (
                c.janitor_interval,
                c.job_ttl,
                c.kubescape_namespace.as_str()
            ),
            (Duration::from_secs(5), Duration::from_secs(30), "ks")
        );
        let err = ExtractConfig::load(&vexxy_runtime::Env::from_fn(|n| {
            (n == "K8S_JOB_TTL_SECONDS").then(|| "ten".into())
        }))
        .unwrap_err();
        assert!(err.to_string().contains("K8S_JOB_TTL_SECONDS"));
        let err = ExtractConfig::load(&vexxy_runtime::Env::from_fn(|n| {
            (n == "VEXXY_JANITOR_INTERVAL").then(|| "0".into())
        }))
        .unwrap_err();
        assert!(err.to_string().contains("VEXXY_JANITOR_INTERVAL"));
    }

    #[test]
    fn missing_manifests_fall_back_to_the_summary_counts() {
        let summary = serde_json::json!({
            "kind": "VulnerabilityManifestSummary",
            "metadata": {"name": "deployment-x-app", "namespace": "vexxy-sandbox"},
            "spec": {"severities": {"high": {"all": 3, "relevant": 1}}, "vulnerabilitiesRef": {}}
        });
        let summary = StorageObject::from_bytes(Bytes::from(summary.to_string())).unwrap();
        let found = Found {
            summary: Some(summary),
            ..Found::default()
        };
        assert_eq!(vulnerability_count(&found), VulnerabilityCount::Known(3));
        assert_eq!(
            vulnerability_count(&Found::default()),
            VulnerabilityCount::Unknown
        );
        // The storage server's metadata-only view of a manifest (`matches: null`) is no
        // manifest with zero matches: the summary still counts.
        let view = serde_json::json!({
            "kind": kinds::MANIFEST,
            "metadata": {"name": "replicaset-x-app-0000-ffff", "namespace": "kubescape"},
            "spec": metadata_only::zero_spec(kinds::MANIFEST).unwrap(),
            "status": {},
        });
        let found = Found {
            manifest: Some(StorageObject::from_bytes(Bytes::from(view.to_string())).unwrap()),
            ..found
        };
        assert_eq!(vulnerability_count(&found), VulnerabilityCount::Known(3));
    }
}
