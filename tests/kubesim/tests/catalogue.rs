//! The emulated Kubescape content parses with vexxy-kubescape's readers (the same code that reads
//! the real fixtures), is deterministic, and shows each kubevuln generation's documented quirks.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use kubesim::catalogue::{
    self, ALPINE_FIXTURE_DIGEST, ContainerInstance, KubevulnGeneration, NGINX_FIXTURE_DIGESTS,
    ScanOutputs,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use vexxy_kubescape::{
    Completion, KubevulnShape, ProfileStatus, SbomKind, VexStatus, read_container_profile,
    read_manifest, read_sbom, read_summary, read_vex,
};

fn digest_of(seed: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(seed.as_bytes())))
}

fn instance(image: &str, digest: &str) -> ContainerInstance {
    ContainerInstance {
        cluster: "kubesim".into(),
        workload_namespace: "vexxy-sandbox".into(),
        workload_kind: "Deployment".into(),
        workload_name: "vexxy-abc".into(),
        owner_api_version: "apps/v1".into(),
        owner_kind: "ReplicaSet".into(),
        owner_name: "vexxy-abc-5d78c9869d".into(),
        template_hash: "5d78c9869d".into(),
        pod_name: "vexxy-abc-5d78c9869d-x2x4q".into(),
        pod_uid: "0b6f7d0e-1c1a-4d59-9a53-2f3c1c0e9a11".into(),
        container_name: "app".into(),
        image: format!("{image}@{digest}"),
        image_digest: digest.into(),
        learning_period: "2m".into(),
        started_at: Utc.with_ymd_and_hms(2026, 7, 21, 10, 0, 0).unwrap(),
    }
}

const GENERATED: &str = "kubesim-catalogue-test-1";

/// Everything except wall-clock times and the per-scan id.
fn without_clock(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for k in [
                    "timestamp",
                    "last_updated",
                    "createdAt",
                    "@id",
                    "kubescape.io/scan-id",
                ] {
                    if map.get(k).is_some_and(|x| {
                        x.is_string() && !x.as_str().unwrap().starts_with("https://kubescape.io/")
                    }) {
                        map.remove(k);
                    }
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn all_objects(o: &ScanOutputs) -> [&Value; 4] {
    [&o.vex, &o.sbom_filtered, &o.manifest_filtered, &o.summary]
}

fn findings_essentials(vex: &Value) -> Vec<(String, String, Option<String>, VexStatus)> {
    let mut out: Vec<_> = read_vex(vex)
        .unwrap()
        .findings
        .into_iter()
        .map(|f| {
            (
                f.vulnerability_id,
                f.product_id,
                f.subcomponent_purl,
                f.status,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn content_is_deterministic_from_the_digest() {
    let inst = instance("docker.io/library/app", &digest_of(GENERATED));
    for generation in [KubevulnGeneration::V0_3_159, KubevulnGeneration::Main] {
        let a = catalogue::scan(&inst, generation, None);
        let b = catalogue::scan(&inst, generation, None);
        for (x, y) in all_objects(&a).into_iter().zip(all_objects(&b)) {
            assert_eq!(without_clock(x.clone()), without_clock(y.clone()));
        }
    }
    for rescan in [false, true] {
        assert_eq!(
            without_clock(catalogue::image_manifest(&inst, rescan)),
            without_clock(catalogue::image_manifest(&inst, rescan))
        );
    }
    assert_eq!(
        without_clock(catalogue::image_sbom(&inst)),
        without_clock(catalogue::image_sbom(&inst))
    );
    assert_eq!(
        catalogue::container_profile(&inst, "ready", "complete"),
        catalogue::container_profile(&inst, "ready", "complete")
    );
    let other = instance("docker.io/library/app", &digest_of("another"));
    assert_ne!(
        without_clock(catalogue::image_sbom(&other)["spec"].clone()),
        without_clock(catalogue::image_sbom(&inst)["spec"].clone())
    );
}

#[test]
fn every_emulated_object_parses_with_the_production_readers() {
    for seed in ["a", "b", "c", "d", "e", "f", GENERATED] {
        let inst = instance("ghcr.io/acme/service", &digest_of(seed));
        for generation in [KubevulnGeneration::V0_3_159, KubevulnGeneration::Main] {
            let first = catalogue::scan(&inst, generation, None);
            let second = catalogue::scan(&inst, generation, Some(&first.vex));
            for (out, rescan) in [(&first, false), (&second, true)] {
                read_vex(&out.vex).unwrap();
                assert_eq!(
                    read_sbom(&out.sbom_filtered).unwrap().kind,
                    SbomKind::Filtered
                );
                assert!(
                    read_manifest(&out.manifest_filtered)
                        .unwrap()
                        .metadata
                        .with_relevancy
                );
                assert!(
                    !read_manifest(&catalogue::image_manifest(&inst, rescan))
                        .unwrap()
                        .metadata
                        .with_relevancy
                );
                read_summary(&out.summary).unwrap();
            }
            assert_eq!(
                read_sbom(&catalogue::image_sbom(&inst)).unwrap().kind,
                SbomKind::Full
            );
        }
        for (status, completion) in [
            ("initializing", "complete"),
            ("ready", "complete"),
            ("completed", "partial"),
        ] {
            let cp =
                read_container_profile(&catalogue::container_profile(&inst, status, completion))
                    .unwrap();
            assert_eq!(cp.status.as_ref().map(ProfileStatus::as_str), Some(status));
            assert_eq!(
                cp.completion.as_ref().map(Completion::as_str),
                Some(completion)
            );
        }
    }
}

#[test]
fn names_labels_and_annotations_are_the_ones_kubescape_writes() {
    let inst = instance("nginx:1.25", &digest_of(GENERATED));
    let slug = inst.slug();
    assert_eq!(
        inst.instance_id(),
        "apiVersion-apps/v1/namespace-vexxy-sandbox/kind-ReplicaSet/name-vexxy-abc-5d78c9869d/containerName-app"
    );
    assert!(slug.starts_with("replicaset-vexxy-abc-5d78c9869d-app-"));
    let out = catalogue::scan(&inst, KubevulnGeneration::V0_3_159, None);
    let vex = read_vex(&out.vex).unwrap();
    assert_eq!(vex.object.name, slug);
    assert_eq!(vex.object.namespace.as_deref(), Some("kubescape"));
    let a = |k: &str| vex.object.annotation(k).map(str::to_string);
    let l = |k: &str| vex.object.label(k).map(str::to_string);
    assert_eq!(a("kubescape.io/instance-id"), Some(inst.instance_id()));
    assert_eq!(
        a("kubescape.io/wlid").as_deref(),
        Some("wlid://cluster-kubesim/namespace-vexxy-sandbox/deployment-vexxy-abc")
    );
    assert_eq!(
        a("kubescape.io/image-id"),
        Some(format!("docker.io/library/nginx@{}", inst.image_digest))
    );
    assert_eq!(
        a("kubescape.io/image-tag").as_deref(),
        Some("docker.io/library/nginx:1.25")
    );
    assert_eq!(
        a("kubescape.io/workload-container-name").as_deref(),
        Some("app")
    );
    assert_eq!(a("kubescape.io/completion").as_deref(), Some("complete"));
    assert_eq!(a("kubescape.io/status").as_deref(), Some("ready"));
    assert!(a("kubescape.io/scan-id").is_some());
    assert_eq!(
        l("kubescape.io/workload-kind").as_deref(),
        Some("Deployment")
    );
    assert_eq!(
        l("kubescape.io/workload-name").as_deref(),
        Some("vexxy-abc")
    );
    assert_eq!(
        l("kubescape.io/workload-namespace").as_deref(),
        Some("vexxy-sandbox")
    );
    assert_eq!(
        l("kubescape.io/workload-api-group").as_deref(),
        Some("apps")
    );
    assert_eq!(
        l("kubescape.io/instance-template-hash").as_deref(),
        Some("5d78c9869d")
    );
    assert_eq!(l("kubescape.io/learning-period").as_deref(), Some("2m"));
    assert_eq!(l("kubescape.io/sbom-type").as_deref(), Some("container"));
    assert_eq!(l("kubescape.io/context").as_deref(), Some("filtered"));

    assert_eq!(read_sbom(&out.sbom_filtered).unwrap().object.name, slug);
    assert_eq!(
        read_manifest(&out.manifest_filtered).unwrap().object.name,
        slug
    );
    let image_slug = format!(
        "docker.io-library-nginx-1.25-{}",
        &inst.image_digest[inst.image_digest.len() - 6..]
    );
    assert_eq!(
        read_sbom(&catalogue::image_sbom(&inst))
            .unwrap()
            .object
            .name,
        image_slug
    );
    assert_eq!(
        read_manifest(&catalogue::image_manifest(&inst, false))
            .unwrap()
            .object
            .name,
        image_slug
    );

    let summary = read_summary(&out.summary).unwrap();
    assert_eq!(summary.object.name, "deployment-vexxy-abc-app");
    assert_eq!(summary.object.namespace.as_deref(), Some("vexxy-sandbox"));
    assert_eq!(summary.relevant.unwrap().name, slug);
    assert_eq!(summary.all.unwrap().name, image_slug);

    let cp = read_container_profile(&catalogue::container_profile(
        &inst,
        "completed",
        "complete",
    ))
    .unwrap();
    assert_eq!(cp.object.name, slug);
    assert_eq!(cp.object.namespace.as_deref(), Some("vexxy-sandbox"));
    assert_eq!(cp.instance_id, Some(inst.instance_id()));
    assert_eq!(cp.wlid, Some(inst.wlid()));
    assert!(cp.learning_finished());
    for f in &vex.findings {
        assert!(
            f.product_id.starts_with("pkg:oci/nginx@sha256:"),
            "{}",
            f.product_id
        );
        assert!(
            f.product_id
                .ends_with("?repository_url=docker.io%2Flibrary"),
            "{}",
            f.product_id
        );
    }
}

#[test]
fn loaded_packages_follow_the_profile_and_are_the_affected_ones() {
    let inst = instance("docker.io/library/app", &digest_of(GENERATED));
    let cp = read_container_profile(&catalogue::container_profile(
        &inst,
        "completed",
        "complete",
    ))
    .unwrap();
    let loaded: BTreeSet<&str> = cp.loaded_paths().collect();
    let out = catalogue::scan(&inst, KubevulnGeneration::Main, None);
    let full_sbom = catalogue::image_sbom(&inst);
    let full = read_sbom(&full_sbom).unwrap();
    let filtered = read_sbom(&out.sbom_filtered).unwrap();
    let expected: BTreeSet<String> = full
        .syft
        .artifacts
        .iter()
        .filter(|a| a.file_paths().iter().any(|p| loaded.contains(p)))
        .map(|a| a.id.clone())
        .collect();
    let actual: BTreeSet<String> = filtered
        .syft
        .artifacts
        .iter()
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(
        actual, expected,
        "filtered SBOM = packages with a file in the profile's execs/opens"
    );
    let share = actual.len() as f64 / full.syft.artifacts.len() as f64;
    assert!((0.05..=0.5).contains(&share), "loaded share {share}");

    let filtered_purls: BTreeSet<String> = filtered
        .syft
        .artifacts
        .iter()
        .filter_map(|a| a.purl.clone())
        .collect();
    let vex = read_vex(&out.vex).unwrap();
    assert!(!vex.findings.is_empty());
    for f in &vex.findings {
        let loaded = filtered_purls.contains(f.subcomponent_purl.as_deref().unwrap());
        assert_eq!(f.status == VexStatus::Affected, loaded, "{f:?}");
        if loaded {
            assert!(
                f.action_statement
                    .as_deref()
                    .unwrap()
                    .starts_with("Upgrade ")
            );
            assert_eq!(f.impact_statement, None);
        } else {
            assert_eq!(
                f.impact_statement.as_deref(),
                Some(catalogue::NOT_LOADED_IMPACT)
            );
        }
    }
    let manifest = read_manifest(&out.manifest_filtered).unwrap();
    assert!(
        manifest
            .payload
            .matches
            .iter()
            .all(|m| filtered_purls.contains(&m.artifact.purl))
    );
}

#[test]
fn generations_show_their_quirks_and_normalise_to_the_same_findings() {
    let inst = instance("docker.io/library/app", &digest_of(GENERATED));
    let old = catalogue::scan(&inst, KubevulnGeneration::V0_3_159, None);
    let new = catalogue::scan(&inst, KubevulnGeneration::Main, None);
    let (o, n) = (read_vex(&old.vex).unwrap(), read_vex(&new.vex).unwrap());
    assert_eq!(o.shape, KubevulnShape::V0_3_159);
    assert_eq!(n.shape, KubevulnShape::Main);
    assert_eq!(o.document.version, 0);
    assert_eq!(n.document.version, 0);
    for doc in [&o, &n] {
        assert_eq!(doc.document.id.len(), 64);
        assert!(
            doc.document.id.chars().all(|c| c.is_ascii_hexdigit()),
            "bare hex @id"
        );
        assert_eq!(doc.document.author, "kubescape.io");
    }
    let statements = old.vex["spec"]["statements"].as_array().unwrap();
    assert!(statements.iter().all(|s| s.get("@id").is_none()));
    assert!(
        statements
            .iter()
            .all(|s| !s["vulnerability"]["@id"].as_str().unwrap().contains("://"))
    );
    let main_statements = new.vex["spec"]["statements"].as_array().unwrap();
    assert!(main_statements.iter().all(|s| {
        s["@id"]
            .as_str()
            .unwrap()
            .starts_with("https://kubescape.io/vex/statement/")
    }));
    assert!(
        main_statements
            .iter()
            .all(|s| s["vulnerability"]["@id"].as_str().unwrap().contains("://"))
    );
    assert_eq!(findings_essentials(&old.vex), findings_essentials(&new.vex));

    // Rescan: v0.3.159 bumps the version and appends the late matches the other way round.
    let old2 = catalogue::scan(&inst, KubevulnGeneration::V0_3_159, Some(&old.vex));
    let o2 = read_vex(&old2.vex).unwrap();
    assert_eq!(o2.document.version, 1);
    let appended = &old2.vex["spec"]["statements"].as_array().unwrap()[statements.len()..];
    assert!(!appended.is_empty(), "the test digest has late matches");
    assert!(
        appended
            .iter()
            .all(|s| s["vulnerability"]["@id"].as_str().unwrap().contains("://"))
    );
    assert!(
        appended.iter().all(|s| s["status"] == "not_affected"),
        "appended statements are never promoted"
    );
    // A third scan appends them again: duplicates accumulate, read_vex merges them.
    let old3 = catalogue::scan(&inst, KubevulnGeneration::V0_3_159, Some(&old2.vex));
    let o3 = read_vex(&old3.vex).unwrap();
    assert_eq!(o3.document.version, 2);
    assert_eq!(o3.statement_count, o2.statement_count + appended.len());
    assert_eq!(o3.findings.len(), o2.findings.len());
    assert!(o3.duplicates_merged >= appended.len());

    // main: a rescan with new matches bumps the version once; an unchanged one leaves the VEX as is.
    let new2 = catalogue::scan(&inst, KubevulnGeneration::Main, Some(&new.vex));
    assert_eq!(read_vex(&new2.vex).unwrap().document.version, 1);
    let new3 = catalogue::scan(&inst, KubevulnGeneration::Main, Some(&new2.vex));
    assert_eq!(new3.vex["spec"], new2.vex["spec"]);
}

#[test]
fn v0_3_159_misses_late_cves_in_loaded_packages_where_main_reports_them() {
    // kubevuln#394: statements appended by updateVEX carry the URL in @id, so markRelevant never
    // finds them. Find a generated image where that hides a loaded vulnerability (bounded search).
    let mut seen = false;
    for i in 0..40 {
        let inst = instance("docker.io/library/app", &digest_of(&format!("late-{i}")));
        let first_old = catalogue::scan(&inst, KubevulnGeneration::V0_3_159, None);
        let first_new = catalogue::scan(&inst, KubevulnGeneration::Main, None);
        let old = findings_essentials(
            &catalogue::scan(&inst, KubevulnGeneration::V0_3_159, Some(&first_old.vex)).vex,
        );
        let new = findings_essentials(
            &catalogue::scan(&inst, KubevulnGeneration::Main, Some(&first_new.vex)).vex,
        );
        assert_eq!(old.len(), new.len());
        let differing: Vec<_> = old.iter().zip(&new).filter(|(a, b)| a != b).collect();
        for (a, b) in &differing {
            assert_eq!((a.3, b.3), (VexStatus::NotAffected, VexStatus::Affected));
        }
        seen |= !differing.is_empty();
        if seen {
            break;
        }
    }
    assert!(
        seen,
        "no generated image among 40 shows the v0.3.159 late-CVE quirk"
    );
}

#[test]
fn zero_vulnerability_digests_have_packages_but_no_statements() {
    let digest = format!("sha256:0000{}", &digest_of("zero")[11..]);
    let inst = instance("docker.io/library/distroless", &digest);
    for generation in [KubevulnGeneration::V0_3_159, KubevulnGeneration::Main] {
        let out = catalogue::scan(&inst, generation, None);
        let vex = read_vex(&out.vex).unwrap();
        assert_eq!(vex.shape, KubevulnShape::Undetermined);
        assert!(vex.findings.is_empty());
        assert!(
            !read_sbom(&catalogue::image_sbom(&inst))
                .unwrap()
                .syft
                .artifacts
                .is_empty()
        );
        assert!(
            read_manifest(&catalogue::image_manifest(&inst, false))
                .unwrap()
                .payload
                .matches
                .is_empty()
        );
    }
}

#[test]
fn huge_digests_exceed_the_storage_cap_and_large_ones_fit() {
    let huge = instance(
        "docker.io/library/monolith",
        &format!("sha256:ffff{}", &digest_of("huge")[11..]),
    );
    let out = catalogue::scan(&huge, KubevulnGeneration::V0_3_159, None);
    let size = serde_json::to_vec(&out.vex).unwrap().len();
    assert!(size > 500_000, "huge VEX is {size} bytes");
    assert_eq!(read_vex(&out.vex).unwrap().statement_count, 10_000);

    let large = instance(
        "docker.io/library/big",
        &format!("sha256:fffe{}", &digest_of("large")[11..]),
    );
    for generation in [KubevulnGeneration::V0_3_159, KubevulnGeneration::Main] {
        let first = catalogue::scan(&large, generation, None);
        let again = catalogue::scan(&large, generation, Some(&first.vex));
        for out in [first, again] {
            let size = serde_json::to_vec(&out.vex).unwrap().len();
            assert!(
                (100_000..500_000).contains(&size),
                "large VEX is {size} bytes"
            );
            assert_eq!(read_vex(&out.vex).unwrap().statement_count, 700);
        }
    }
}

#[test]
fn fixture_images_carry_the_real_packages_and_cves() {
    let alpine = instance("docker.io/library/alpine", ALPINE_FIXTURE_DIGEST);
    let out = catalogue::scan(&alpine, KubevulnGeneration::Main, None);
    assert_eq!(
        read_sbom(&catalogue::image_sbom(&alpine))
            .unwrap()
            .syft
            .artifacts
            .len(),
        15
    );
    let vex = read_vex(&out.vex).unwrap();
    assert_eq!(vex.findings.len(), 20);
    let status = |pkg: &str| {
        vex.findings
            .iter()
            .find(|f| {
                f.vulnerability_id == "CVE-2023-5363"
                    && f.subcomponent_purl.as_deref().unwrap().contains(pkg)
            })
            .unwrap()
            .status
    };
    assert_eq!(status("libcrypto3"), VexStatus::Affected);
    assert_eq!(status("libssl3"), VexStatus::NotAffected);
    let affected = vex
        .findings
        .iter()
        .find(|f| f.status == VexStatus::Affected)
        .unwrap();
    assert!(
        affected
            .action_statement
            .as_deref()
            .unwrap()
            .contains("to version 3.0.")
    );

    for digest in NGINX_FIXTURE_DIGESTS {
        let nginx = instance("docker.io/library/nginx", digest);
        let out = catalogue::scan(&nginx, KubevulnGeneration::V0_3_159, None);
        let filtered = read_sbom(&out.sbom_filtered).unwrap();
        let names: Vec<&str> = filtered
            .syft
            .artifacts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "adduser",
                "debconf",
                "libc6",
                "libcrypt1",
                "libpam0g",
                "libpcre2-8-0",
                "libselinux1",
                "libsemanage2",
                "libsepol2",
                "passwd"
            ]
        );
        assert!(
            read_sbom(&catalogue::image_sbom(&nginx))
                .unwrap()
                .syft
                .artifacts
                .len()
                > 30
        );
    }
}
