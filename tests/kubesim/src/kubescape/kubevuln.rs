//! The operator and kubevuln: a scan per consolidated ContainerProfile version that may be
//! scanned, and kubevuln's writes in its order.
//!
//! * operator (`watcher/containerprofilewatcher.go`, `utils/containerprofile.go`
//!   `SkipContainerProfile`): a write of a consolidated profile (not a per-save object) whose
//!   status is `""`, `ready` or `completed` and that names its instance and workload
//!   (`kubescape.io/instance-id`, `kubescape.io/wlid`) is sent to kubevuln after its cooldown;
//! * kubevuln (`adapters/v1/container_profile.go` `GetContainerRelevancyScans`, v0.3.159):
//!   reads the profile and scans it only when its completion is `complete` (the chart leaves
//!   `partialRelevancy` off) and its status `ready` or `completed`;
//! * kubevuln `core/services/scan.go` `ScanCP` (v0.3.159): the image's SBOM and unfiltered
//!   manifest when storage has none for the image (`GetSBOM`/`GetCVE`; a rescan stands for a
//!   vulnerability-database update and rewrites the manifest), then the filtered SBOM (if
//!   `storeFilteredSbom`), the filtered manifest, the summary and last the VEX (if
//!   `vexGeneration`).
//!
//! `scan_delay_ms` is the whole of cooldown and scan time. Not modelled: the image-level summary
//! ScanCP writes right after building an image manifest (the relevancy summary of the same name
//! replaces it a moment later), SecurityExceptions.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::catalogue::{self, ContainerInstance, KubevulnGeneration};
use crate::change_feed::{ObjectKey, Timers, key_of};
use crate::config::{Config, Generation};
use crate::resources;
use crate::store::Store;

use super::consolidation::{COMPLETION, STATUS, is_time_series};
use super::{NAMESPACE, generation_for};

fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `SkipContainerProfile` inverted: a profile version the operator sends to kubevuln.
pub fn operator_sends(profile: &Value) -> bool {
    !is_time_series(profile)
        && matches!(annotation(profile, STATUS), "" | "ready" | "completed")
        && !annotation(profile, "kubescape.io/instance-id").is_empty()
        && !annotation(profile, "kubescape.io/wlid").is_empty()
}

/// kubevuln's own check of the profile it reads.
pub fn kubevuln_scans(profile: &Value) -> bool {
    annotation(profile, COMPLETION) == "complete"
        && matches!(annotation(profile, STATUS), "ready" | "completed")
}

#[derive(Default)]
pub struct Kubevuln {
    /// (profile, sequence number): one scan per profile version sent.
    due: Timers<(ObjectKey, u64)>,
    sent: u64,
}

impl Kubevuln {
    pub fn clear(&mut self) {
        *self = Kubevuln::default();
    }

    /// A consolidated profile version was written.
    pub fn profile_written(&mut self, profile: &Value, scan_delay: Duration, now: Instant) {
        if operator_sends(profile) {
            self.sent += 1;
            self.due.at(now + scan_delay, (key_of(profile), self.sent));
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.due.next()
    }

    /// Runs the scans that are due.
    pub fn advance(
        &mut self,
        store: &Store,
        cfg: &Config,
        instances: &HashMap<ObjectKey, ContainerInstance>,
        now: Instant,
    ) {
        let profiles = resources::kubescape("containerprofiles");
        for ((ns, name), _) in self.due.take_due(now) {
            let Ok(profile) = store.get_shared(profiles, &ns, &name) else {
                continue;
            };
            // Without `storage` kubevuln keeps nothing in the cluster; an instance the emulated
            // node-agent never saw (a profile some client wrote) has no image to scan.
            let Some(instance) = instances.get(&(ns, name)) else {
                continue;
            };
            if kubevuln_scans(&profile) && cfg.kubescape.capabilities.storage {
                scan(store, cfg, instance);
            }
        }
    }
}

fn write(store: &Store, plural: &str, obj: Value, namespace: &str) {
    let name = crate::store::name_of(&obj).to_string();
    if let Err(e) = store.upsert(resources::kubescape(plural), namespace, obj) {
        // kubevuln only logs a failed write (e.g. 413 for a too-large VEX).
        tracing::warn!(error = %e, kind = plural, name, "emulated Kubescape write failed");
    }
}

/// kubevuln's ScanCP for one instance, its writes in its order.
pub fn scan(store: &Store, cfg: &Config, inst: &ContainerInstance) {
    let generation = match generation_for(&cfg.kubescape, &inst.image) {
        Generation::V0_3_159 => KubevulnGeneration::V0_3_159,
        Generation::Main => KubevulnGeneration::Main,
    };
    let vex = resources::kubescape("openvulnerabilityexchangecontainers");
    let previous = store.get_shared(vex, NAMESPACE, &inst.slug()).ok();
    let rescan = previous.is_some();
    let out = catalogue::scan(inst, generation, previous.as_deref());
    let caps = &cfg.kubescape.capabilities;
    let stored = |plural: &str| {
        store
            .get_shared(resources::kubescape(plural), NAMESPACE, &inst.image_slug())
            .is_ok()
    };
    if !stored("sbomsyfts") {
        write(store, "sbomsyfts", catalogue::image_sbom(inst), NAMESPACE);
    }
    if rescan || !stored("vulnerabilitymanifests") {
        write(
            store,
            "vulnerabilitymanifests",
            catalogue::image_manifest(inst, rescan),
            NAMESPACE,
        );
    }
    if caps.store_filtered_sbom {
        write(store, "sbomsyftfiltereds", out.sbom_filtered, NAMESPACE);
    }
    write(
        store,
        "vulnerabilitymanifests",
        out.manifest_filtered,
        NAMESPACE,
    );
    write(
        store,
        "vulnerabilitymanifestsummaries",
        out.summary,
        &inst.workload_namespace,
    );
    if caps.vex_generation {
        write(
            store,
            "openvulnerabilityexchangecontainers",
            out.vex,
            NAMESPACE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_operator_sends_consolidated_learning_and_completed_profiles_kubevuln_scans_complete_ones()
     {
        let profile = |status: &str, completion: &str, series: Option<&str>| {
            let mut annotations = json!({"kubescape.io/status": status, "kubescape.io/completion": completion,
                "kubescape.io/instance-id": "i", "kubescape.io/wlid": "w"});
            if let Some(s) = series {
                annotations["kubescape.io/report-series-id"] = json!(s);
            }
            json!({"metadata": {"name": "p", "namespace": "ns", "annotations": annotations}})
        };
        assert!(operator_sends(&profile("ready", "complete", None)));
        assert!(operator_sends(&profile("completed", "partial", None)));
        assert!(!operator_sends(&profile("ready", "complete", Some("s"))));
        assert!(!operator_sends(&profile("too-large", "complete", None)));
        assert!(!operator_sends(
            &json!({"metadata": {"annotations": {"kubescape.io/status": "completed"}}})
        ));
        assert!(kubevuln_scans(&profile("ready", "complete", None)));
        assert!(kubevuln_scans(&profile("completed", "complete", None)));
        assert!(!kubevuln_scans(&profile("completed", "partial", None)));
    }
}
