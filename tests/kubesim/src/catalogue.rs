//! Deterministic Kubescape content for emulated images: the objects node-agent and kubevuln write
//! (ContainerProfile, SBOMs, VulnerabilityManifests, VEX, summary), with their real names, labels
//! and annotations (facts §3) and both kubevuln generations' VEX quirks (facts §4).
//!
//! Content rules by digest are documented in [`content`]. Timestamps are the wall clock (as
//! kubevuln's are), everything else is a function of the instance and the digest.

pub mod content;
pub mod files;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use vexxy_kubescape::names::{self, ContainerType, InstanceOwner};
use vexxy_kubescape::{keys, metadata_only};

use content::{ImageContent, Match, content_for};

pub use content::{
    ALPINE_FIXTURE_DIGEST, HUGE_PREFIX, LARGE_FITTING_PREFIX, NGINX_DEBIAN9_FIXTURE_DIGEST,
    NGINX_FIXTURE_DIGESTS, ZERO_VULN_PREFIX, advisories, declare_same_content,
};
pub use files::image_files;

const API_VERSION: &str = "spdx.softwarecomposition.kubescape.io/v1beta1";
const KUBESCAPE_NAMESPACE: &str = "kubescape";
pub const LOADED_IMPACT: &str = "Vulnerable component is loaded into the memory";
pub const NOT_LOADED_IMPACT: &str = "Vulnerable component is not loaded into the memory";
pub const DEFAULT_ACTION: &str =
    "Upgrade the vulnerable component to a version that is not affected";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    pub cluster: String,
    pub workload_namespace: String,
    /// Top-level workload: "Deployment", "vexxy-abc".
    pub workload_kind: String,
    pub workload_name: String,
    /// The pod's ownerReferences[0]: "apps/v1", "ReplicaSet", "vexxy-abc-5d78c9869d".
    pub owner_api_version: String,
    pub owner_kind: String,
    pub owner_name: String,
    pub template_hash: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
    pub image: String,
    /// "sha256:<hex>"
    pub image_digest: String,
    pub learning_period: String,
    pub started_at: DateTime<Utc>,
}

impl ContainerInstance {
    fn owner(&self) -> InstanceOwner<'_> {
        InstanceOwner {
            api_version: &self.owner_api_version,
            namespace: &self.workload_namespace,
            kind: &self.owner_kind,
            name: &self.owner_name,
        }
    }

    pub fn instance_id(&self) -> String {
        names::instance_id(
            &self.owner(),
            ContainerType::Container,
            &self.container_name,
        )
    }

    pub fn slug(&self) -> String {
        names::slug_for(
            &self.owner(),
            ContainerType::Container,
            &self.container_name,
        )
    }

    pub fn wlid(&self) -> String {
        names::wlid(
            &self.cluster,
            &self.workload_namespace,
            &self.workload_kind,
            &self.workload_name,
        )
    }

    /// `kubescape.io/image-id`: `<normalised repository>@sha256:<hex>`.
    pub fn image_id(&self) -> String {
        format!(
            "{}@{}",
            crate::images::repository(&self.image),
            self.image_digest
        )
    }

    /// `kubescape.io/image-tag`: the normalised reference the pod asked for, without its digest.
    pub fn image_tag(&self) -> String {
        let normalized = crate::images::normalize(&self.image);
        match normalized.split_once('@') {
            Some((name, _))
                if name
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains(':')) =>
            {
                name.to_string()
            }
            Some(_) => self.image_id(),
            None => normalized,
        }
    }

    pub fn image_slug(&self) -> String {
        names::image_slug(&self.image_tag(), &self.image_digest)
    }

    pub fn summary_name(&self) -> String {
        names::summary_name(
            &self.workload_kind,
            &self.workload_name,
            &self.container_name,
        )
    }

    fn api_group(&self) -> &str {
        self.owner_api_version
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubevulnGeneration {
    V0_3_159,
    Main,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn string_map(pairs: &[(&str, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<Map<_, _>>(),
    )
}

/// node-agent's workload labels (top-level workload kind/name since node-agent v0.3.158).
fn workload_labels(inst: &ContainerInstance) -> Vec<(&'static str, String)> {
    vec![
        (keys::INSTANCE_TEMPLATE_HASH, inst.template_hash.clone()),
        (keys::LEARNING_PERIOD, inst.learning_period.clone()),
        (keys::WORKLOAD_API_GROUP, inst.api_group().to_string()),
        (keys::WORKLOAD_API_VERSION, "v1".to_string()),
        (keys::WORKLOAD_CONTAINER_NAME, inst.container_name.clone()),
        (keys::WORKLOAD_KIND, inst.workload_kind.clone()),
        (keys::WORKLOAD_NAME, inst.workload_name.clone()),
        (keys::WORKLOAD_NAMESPACE, inst.workload_namespace.clone()),
        (keys::WORKLOAD_RESOURCE_VERSION, "1".to_string()),
    ]
}

/// A consolidated ContainerProfile (workload namespace, instance slug) as tests build one
/// directly. Execs and opens list the marker file of every package the container loads (none
/// while `initializing`). The emulator's own consolidated profiles are storage's merge of
/// node-agent's saves ([`time_series_profile`]).
pub fn container_profile(inst: &ContainerInstance, status: &str, completion: &str) -> Value {
    profile_object(
        inst,
        inst.slug(),
        string_map(&[
            (keys::COMPLETION, completion.to_string()),
            (keys::INSTANCE_ID, inst.instance_id()),
            (keys::STATUS, status.to_string()),
            (keys::WLID, inst.wlid()),
            (keys::WORKLOAD_CONTAINER_TYPE, "containers".to_string()),
        ]),
        status != "initializing",
    )
}

/// What one node-agent save says about its run.
pub struct SeriesSave<'a> {
    pub status: &'a str,
    pub completion: &'a str,
    /// `kubescape.io/report-series-id`: one per container run.
    pub series_id: &'a str,
    /// The run's previous save's report timestamp (Go's zero time for its first save).
    pub previous_report: &'a str,
    pub report: &'a str,
    /// Whether the save carries recorded events (execs, opens, syscalls).
    pub with_data: bool,
}

/// node-agent's per-save ContainerProfile (`saveContainerProfile`): `<slug>-<suffix>` (the
/// suffix is 32 hex digits, `GetOneTimeSlug`) in the workload namespace, which storage merges
/// into the consolidated `<slug>` and then deletes.
pub fn time_series_profile(inst: &ContainerInstance, suffix: &str, save: &SeriesSave) -> Value {
    let slug = inst.slug();
    // `GetOneTimeSlug` keeps the name within a DNS subdomain's 253 characters.
    let keep = slug.len().min(253 - suffix.len() - 1);
    profile_object(
        inst,
        format!("{}-{suffix}", &slug[..keep]),
        string_map(&[
            (keys::COMPLETION, save.completion.to_string()),
            (keys::INSTANCE_ID, inst.instance_id()),
            (
                keys::PREVIOUS_REPORT_TIMESTAMP,
                save.previous_report.to_string(),
            ),
            (keys::REPORT_SERIES_ID, save.series_id.to_string()),
            (keys::REPORT_TIMESTAMP, save.report.to_string()),
            (keys::STATUS, save.status.to_string()),
            (keys::WLID, inst.wlid()),
            (keys::WORKLOAD_CONTAINER_TYPE, "containers".to_string()),
        ]),
        save.with_data,
    )
}

fn profile_object(
    inst: &ContainerInstance,
    name: String,
    annotations: Value,
    with_data: bool,
) -> Value {
    let content = content_for(&inst.image_digest);
    let files: Vec<&str> = if with_data {
        content
            .loaded
            .iter()
            .map(|&i| content.packages[i].marker_file.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let is_exec = |f: &str| f.contains("/bin/") || f.contains("/sbin/") || f == "/app/server";
    let execs: Vec<Value> = files
        .iter()
        .filter(|f| is_exec(f))
        .map(|f| json!({"path": f, "args": [f]}))
        .collect();
    let mut opens: Vec<&str> = files.iter().copied().filter(|f| !is_exec(f)).collect();
    opens.sort_unstable();
    opens.dedup();
    json!({
        "apiVersion": API_VERSION,
        "kind": "ContainerProfile",
        "metadata": {
            "name": name,
            "namespace": inst.workload_namespace,
            "annotations": annotations,
            "labels": string_map(&workload_labels(inst)),
        },
        "spec": {
            "architectures": ["amd64"],
            "capabilities": null,
            "execs": execs,
            "opens": opens.iter().map(|p| json!({"path": p, "flags": ["O_RDONLY", "O_CLOEXEC"]})).collect::<Vec<_>>(),
            "syscalls": if with_data { json!(["execve", "openat", "read", "mmap", "close"]) } else { json!([]) },
            "imageID": inst.image_id(),
            "imageTag": inst.image_tag(),
            "identifiedCallStacks": null,
            "rulePolicies": {},
        },
    })
}

/// What kubevuln's ScanCP writes for one instance. The image's own SBOM and unfiltered manifest
/// are not among them: kubevuln keeps those per image and reuses them (see [`image_sbom`]).
pub struct ScanOutputs {
    pub vex: Value,
    pub sbom_filtered: Value,
    pub manifest_filtered: Value,
    pub summary: Value,
}

/// The image's SBOMSyft, named by the image slug: what kubevuln's `getOrCreateSBOM` stores when
/// storage has none for the image yet, and reuses for every later scan of it.
pub fn image_sbom(inst: &ContainerInstance) -> Value {
    let content = content_for(&inst.image_digest);
    sbom_object(
        "SBOMSyft",
        &inst.image_slug(),
        image_annotations(inst),
        json!({}),
        syft(inst, &content, |_| true),
    )
}

/// The image's unfiltered VulnerabilityManifest, named by the image slug: what ScanCP stores when
/// `GetCVE` finds none for the image and the current scanner and database versions. A `rescan`
/// sees the emulated database update (matches flagged late).
pub fn image_manifest(inst: &ContainerInstance, rescan: bool) -> Value {
    let content = content_for(&inst.image_digest);
    let matches: Vec<&Match> = content.matches_for_scan(rescan).collect();
    manifest_object(
        inst,
        &inst.image_slug(),
        image_annotations(inst),
        json!({}),
        false,
        &matches,
        &content,
    )
}

fn image_annotations(inst: &ContainerInstance) -> Value {
    string_map(&[
        (keys::IMAGE_ID, inst.image_id()),
        (keys::IMAGE_TAG, inst.image_tag()),
        (keys::STATUS, "ready".to_string()),
    ])
}

/// kubevuln's ScanCP for this instance. `previous_vex` is the VEX currently stored under the
/// slug: it makes this a rescan (matches flagged late are reported from now on) and the VEX is
/// updated the way the generation's `updateVEX` does it.
pub fn scan(
    inst: &ContainerInstance,
    generation: KubevulnGeneration,
    previous_vex: Option<&Value>,
) -> ScanOutputs {
    let content = content_for(&inst.image_digest);
    let rescan = previous_vex.is_some();
    let matches: Vec<&Match> = content.matches_for_scan(rescan).collect();
    let relevant: Vec<&Match> = matches
        .iter()
        .copied()
        .filter(|m| content.loaded.contains(&m.package))
        .collect();
    let scan_id =
        hex::encode(&Sha256::digest(format!("{}:{}", inst.instance_id(), now()).as_bytes())[..16]);

    let (filtered_annotations, filtered_labels) = relevancy_metadata(inst, &scan_id);
    let sbom_filtered = sbom_object(
        "SBOMSyftFiltered",
        &inst.slug(),
        filtered_annotations.clone(),
        filtered_labels.clone(),
        syft(inst, &content, |i| content.loaded.contains(&i)),
    );
    let manifest_filtered = manifest_object(
        inst,
        &inst.slug(),
        filtered_annotations.clone(),
        filtered_labels.clone(),
        true,
        &relevant,
        &content,
    );
    let vex = match generation {
        KubevulnGeneration::V0_3_159 => vex_v0_3_159(inst, &matches, &relevant, previous_vex),
        KubevulnGeneration::Main => vex_main(inst, &matches, &relevant, previous_vex),
    };
    let mut vex_object = json!({
        "apiVersion": API_VERSION,
        "kind": "OpenVulnerabilityExchangeContainer",
        "metadata": {"name": inst.slug(), "namespace": KUBESCAPE_NAMESPACE, "annotations": null, "labels": null},
        "spec": null,
    });
    put(
        &mut vex_object,
        "/metadata/annotations",
        filtered_annotations,
    );
    put(&mut vex_object, "/metadata/labels", filtered_labels);
    put(&mut vex_object, "/spec", vex);
    ScanOutputs {
        vex: vex_object,
        sbom_filtered,
        manifest_filtered,
        summary: summary_object(inst, &matches, &relevant),
    }
}

/// Annotations and labels of the relevancy-filtered manifest, which the VEX and filtered SBOM copy.
fn relevancy_metadata(inst: &ContainerInstance, scan_id: &str) -> (Value, Value) {
    let annotations = string_map(&[
        (keys::COMPLETION, "complete".to_string()),
        (keys::IMAGE_ID, inst.image_id()),
        (keys::IMAGE_TAG, inst.image_tag()),
        (keys::INSTANCE_ID, inst.instance_id()),
        (keys::SCAN_ID, scan_id.to_string()),
        (keys::STATUS, "ready".to_string()),
        (keys::WLID, inst.wlid()),
        (keys::WORKLOAD_CONTAINER_NAME, inst.container_name.clone()),
    ]);
    let mut labels = workload_labels(inst);
    labels.push((keys::SBOM_TYPE, "container".to_string()));
    labels.push((keys::CONTEXT, "filtered".to_string()));
    (annotations, string_map(&labels))
}

/// Puts `value` where `json!` left a `null` for it (at `pointer`), keeping the key's place.
/// `json!` turns an interpolated `Value` into a new tree through `Serialize`, a deep copy; the
/// SBOM, manifest and VEX arrays each scan builds are large enough for that to dominate
/// kubesim's CPU.
fn put(doc: &mut Value, pointer: &str, value: Value) {
    let slot = doc
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the object"));
    debug_assert!(slot.is_null(), "{pointer} is reserved with null");
    *slot = value;
}

/// A copy of `items` as a JSON array.
fn array_of<'a>(items: impl Iterator<Item = &'a Value>) -> Value {
    Value::Array(items.cloned().collect())
}

fn sbom_object(kind: &str, name: &str, annotations: Value, labels: Value, syft: Value) -> Value {
    let mut object = json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": KUBESCAPE_NAMESPACE, "annotations": null, "labels": null},
        "spec": {"metadata": {"tool": {"name": "syft", "version": "v1.32.0"}, "report": {"createdAt": now()}}, "syft": null},
    });
    put(&mut object, "/metadata/annotations", annotations);
    put(&mut object, "/metadata/labels", labels);
    put(&mut object, "/spec/syft", syft);
    object
}

fn syft(inst: &ContainerInstance, content: &ImageContent, keep: impl Fn(usize) -> bool) -> Value {
    let artifacts = array_of(
        content
            .packages
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, p)| &p.artifact),
    );
    let repo = crate::images::repository(&inst.image);
    let mut syft = json!({
        "artifacts": null,
        "artifactRelationships": [],
        "files": [],
        "source": {"id": inst.image_digest.trim_start_matches("sha256:"), "name": repo, "version": inst.image_digest, "type": "image",
                   "metadata": {"userInput": inst.image_id(), "manifestDigest": inst.image_digest, "repoDigests": [inst.image_id()], "architecture": "amd64", "os": "linux"}},
        "distro": null,
        "descriptor": {"name": "syft", "version": "v1.32.0"},
        "schema": null,
    });
    put(&mut syft, "/artifacts", artifacts);
    put(&mut syft, "/distro", content.distro.clone());
    put(&mut syft, "/schema", content.schema.clone());
    syft
}

fn manifest_object(
    inst: &ContainerInstance,
    name: &str,
    annotations: Value,
    labels: Value,
    with_relevancy: bool,
    matches: &[&Match],
    content: &ImageContent,
) -> Value {
    let mut object = json!({
        "apiVersion": API_VERSION,
        "kind": "VulnerabilityManifest",
        "metadata": {"name": name, "namespace": KUBESCAPE_NAMESPACE, "annotations": null, "labels": null},
        "spec": {
            "metadata": {"withRelevancy": with_relevancy,
                         "tool": {"name": "grype", "version": "v0.92.2", "databaseVersion": "sha256:5c1e8d3a9f0b7e2d4c6a8b0e1f3d5c7a9b1e3f5d7c9a1b3e5f7d9c1a3b5e7f9d"},
                         "report": {"createdAt": now()}},
            "payload": {
                "matches": null,
                "source": {"type": "image", "target": {"userInput": inst.image_id(), "manifestDigest": inst.image_digest}},
                "distro": null,
                "descriptor": {"name": "grype", "version": "v0.92.2"},
            },
        },
    });
    put(&mut object, "/metadata/annotations", annotations);
    put(&mut object, "/metadata/labels", labels);
    put(
        &mut object,
        "/spec/payload/matches",
        array_of(matches.iter().map(|m| &m.grype)),
    );
    put(
        &mut object,
        "/spec/payload/distro",
        content.grype_distro.clone(),
    );
    object
}

fn summary_object(inst: &ContainerInstance, all: &[&Match], relevant: &[&Match]) -> Value {
    let mut severities: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for m in all {
        severities.entry(severity_key(m)).or_default().0 += 1;
    }
    for m in relevant {
        severities.entry(severity_key(m)).or_default().1 += 1;
    }
    let severities: Map<String, Value> = severities
        .into_iter()
        .map(|(k, (a, r))| (k, json!({"all": a, "relevant": r})))
        .collect();
    json!({
        "apiVersion": API_VERSION,
        "kind": "VulnerabilityManifestSummary",
        "metadata": {
            "name": inst.summary_name(),
            "namespace": inst.workload_namespace,
            "annotations": string_map(&[(keys::WLID, inst.wlid()), (keys::IMAGE_TAG, inst.image_tag()), (keys::IMAGE_ID, inst.image_id())]),
            "labels": string_map(&workload_labels(inst)),
        },
        "spec": {
            "severities": severities,
            "vulnerabilitiesRef": {
                "all": {"namespace": inst.workload_namespace, "name": inst.image_slug(), "kind": "vulnerabilitymanifest"},
                "relevant": {"namespace": inst.workload_namespace, "name": inst.slug(), "kind": "vulnerabilitymanifest"},
            },
        },
    })
}

fn severity_key(m: &Match) -> String {
    m.grype
        .pointer("/vulnerability/severity")
        .and_then(Value::as_str)
        .unwrap_or("Unknown")
        .to_lowercase()
}

// ---------------------------------------------------------------------------------------------
// VEX, per generation.

fn cve(m: &Match) -> &str {
    m.grype
        .pointer("/vulnerability/id")
        .and_then(Value::as_str)
        .unwrap_or("")
}
fn data_source(m: &Match) -> &str {
    m.grype
        .pointer("/vulnerability/dataSource")
        .and_then(Value::as_str)
        .unwrap_or("")
}
fn purl(m: &Match) -> &str {
    m.grype
        .pointer("/artifact/purl")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn aliases(m: &Match) -> Value {
    let ids: Vec<&str> = m
        .grype
        .get("relatedVulnerabilities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("id").and_then(Value::as_str))
        .collect();
    json!(ids)
}

fn product(inst: &ContainerInstance, purl: &str) -> Value {
    json!([{"@id": names::oci_product_id(&inst.image_id()), "subcomponents": [{"@id": purl}]}])
}

fn vulnerability(m: &Match, swapped: bool) -> Value {
    let (id, name) = if swapped {
        (cve(m), data_source(m))
    } else {
        (data_source(m), cve(m))
    };
    let mut v = json!({"@id": id, "name": name});
    if let Some(d) = m
        .grype
        .pointer("/vulnerability/description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        v["description"] = json!(d);
    }
    let a = aliases(m);
    if a.as_array().is_some_and(|a| !a.is_empty()) {
        v["aliases"] = a;
    }
    v
}

fn baseline(statement: &mut Value) {
    let s = statement.as_object_mut().expect("statement object");
    s.insert("status".into(), json!("not_affected"));
    s.insert("justification".into(), json!("vulnerable_code_not_present"));
    s.insert("impact_statement".into(), json!(NOT_LOADED_IMPACT));
    s.remove("action_statement");
    s.remove("status_notes");
}

/// (vulnerability `@id`, first subcomponent): the key v0.3.159 finds and marks statements by.
fn id_and_purl(statement: &Value) -> (String, String) {
    (
        statement
            .pointer("/vulnerability/@id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        subcomponent_of(statement).to_string(),
    )
}

fn subcomponent_of(statement: &Value) -> &str {
    statement
        .pointer("/products/0/subcomponents/0/@id")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn document_id(doc: &Value) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(doc).expect("VEX serialises"),
    ))
}

fn new_document(statements: Vec<Value>) -> Value {
    let ts = now();
    let mut doc = json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "",
        "author": "kubescape.io",
        "role": "smart vulnerability scanner :-)",
        "timestamp": ts,
        "last_updated": ts,
        "version": 0,
        "tooling": "kubescape-vulnerability-analyzer",
        "statements": null,
    });
    put(&mut doc, "/statements", Value::Array(statements));
    doc
}

fn finish(mut doc: Value) -> Value {
    doc["@id"] = json!("");
    let id = document_id(&doc);
    doc["@id"] = json!(id);
    doc
}

/// The VEX document kubevuln updates: the previous object's spec when it has one with
/// statements (a metadata-only view has a zero-valued spec, `statements: null`).
fn previous_document(previous: Option<&Value>) -> Option<&Value> {
    previous
        .and_then(|p| p.get("spec"))
        .filter(|spec| metadata_only::has_content(Some(spec)) && spec["statements"].is_array())
}

/// v0.3.159 (`createVEX`/`updateVEX` at tag v0.3.159): create writes vulnerability `@id` = CVE,
/// `name` = URL, no statement `@id`, one statement per match; update appends a statement for
/// every match it cannot find by (`@id` == CVE, first subcomponent == purl) with the mapping the
/// other way round (so appended ones are never found again and pile up), marks affected only the
/// statements whose `@id` is the CVE (sticky: never reset), bumps `version` and `last_updated`.
fn vex_v0_3_159(
    inst: &ContainerInstance,
    matches: &[&Match],
    relevant: &[&Match],
    previous: Option<&Value>,
) -> Value {
    let mut doc = match previous_document(previous) {
        None => {
            let statements = matches
                .iter()
                .map(|m| {
                    let mut s = json!({"vulnerability": vulnerability(m, true), "products": product(inst, purl(m))});
                    baseline(&mut s);
                    s
                })
                .collect();
            new_document(statements)
        }
        Some(spec) => {
            let mut doc = spec.clone();
            let statements = doc["statements"].as_array_mut().expect("statements array");
            let found: std::collections::HashSet<(String, String)> =
                statements.iter().map(id_and_purl).collect();
            for m in matches {
                if !found.contains(&(cve(m).to_string(), purl(m).to_string())) {
                    let mut s = json!({"vulnerability": vulnerability(m, false), "products": product(inst, purl(m))});
                    baseline(&mut s);
                    statements.push(s);
                }
            }
            doc["last_updated"] = json!(now());
            doc["version"] = json!(doc["version"].as_i64().unwrap_or(0) + 1);
            doc
        }
    };
    let relevant_keys: std::collections::HashSet<(String, String)> = relevant
        .iter()
        .map(|m| (cve(m).to_string(), purl(m).to_string()))
        .collect();
    let statements = doc["statements"].as_array_mut().expect("statements array");
    {
        for s in statements.iter_mut() {
            if relevant_keys.contains(&id_and_purl(s)) {
                let o = s.as_object_mut().expect("statement object");
                o.insert("status".into(), json!("affected"));
                o.remove("justification");
                o.insert("impact_statement".into(), json!(LOADED_IMPACT));
            }
        }
    }
    finish(doc)
}

/// main: statement `@id` = `https://kubescape.io/vex/statement/<cve>/<purl>`, vulnerability
/// `@id` = URL, `name` = CVE. Create writes one statement per match (a CVE Grype reports twice
/// for one package gives two statements with the same `@id`, as `createVEX` does); update appends
/// only unknown (CVE, purl) pairs, resets every statement to the baseline and re-marks the relevant
/// ones (not sticky), and leaves the document untouched when nothing changed.
fn vex_main(
    inst: &ContainerInstance,
    matches: &[&Match],
    relevant: &[&Match],
    previous: Option<&Value>,
) -> Value {
    let fresh = |m: &Match| {
        let mut s = json!({"@id": names::statement_id(cve(m), purl(m)), "vulnerability": vulnerability(m, false), "products": product(inst, purl(m))});
        baseline(&mut s);
        s
    };
    let key = |s: &Value| {
        (
            s.pointer("/vulnerability/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            subcomponent_of(s).to_string(),
        )
    };
    let previous_spec = previous_document(previous);
    let mut doc = match previous_spec {
        None => new_document(matches.iter().map(|m| fresh(m)).collect()),
        Some(spec) => {
            let mut doc = spec.clone();
            let statements = doc["statements"].as_array_mut().expect("statements array");
            let mut known: std::collections::HashSet<(String, String)> =
                statements.iter().map(key).collect();
            for m in matches {
                if known.insert((cve(m).to_string(), purl(m).to_string())) {
                    statements.push(fresh(m));
                }
            }
            for s in statements.iter_mut() {
                baseline(s);
            }
            doc
        }
    };
    let relevant_keys: std::collections::HashMap<(String, String), &Match> = relevant
        .iter()
        .map(|m| ((cve(m).to_string(), purl(m).to_string()), *m))
        .collect();
    for s in doc["statements"].as_array_mut().expect("statements array") {
        if let Some(m) = relevant_keys.get(&key(s)) {
            let action = action_statement(m);
            let o = s.as_object_mut().expect("statement object");
            o.insert("status".into(), json!("affected"));
            o.remove("justification");
            o.remove("impact_statement");
            o.insert("action_statement".into(), json!(action));
        }
    }
    if let Some(spec) = previous_spec {
        if spec.get("statements") == doc.get("statements") {
            return spec.clone();
        }
        doc["last_updated"] = json!(now());
        doc["version"] = json!(doc["version"].as_i64().unwrap_or(0) + 1);
    }
    finish(doc)
}

/// kubevuln main's `buildActionStatement`.
fn action_statement(m: &Match) -> String {
    let fix = m.grype.pointer("/vulnerability/fix");
    let state = fix
        .and_then(|f| f.get("state"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let versions: Vec<&str> = fix
        .and_then(|f| f.get("versions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if state == "fixed" && !versions.is_empty() {
        format!("Upgrade {} to version {}", purl(m), versions.join(" or "))
    } else {
        DEFAULT_ACTION.to_string()
    }
}
