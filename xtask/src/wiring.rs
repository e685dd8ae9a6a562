//! Every stage crate is wired into every place a stage must appear: a stage left out of one of
//! them builds and passes its own tests, and then is missing from the image, the cluster or the
//! test stacks. `cargo xtask check-deps` runs this check (and `cargo xtask test` through this
//! module's test on the real tree); ARCHITECTURE.md's "How to add a stage" lists the same places.
//!
//! Presence only: what each place must say about a stage (hardening, probes, budgets, compose
//! health checks) is checked by the system tests, for every stage the harness's `STAGES` names.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// The places a stage `stages/<dir>` must appear, one sentence per missing one; `stages` are
/// (dir, package name) pairs and `harness_stages` the harness's `STAGES`.
pub fn problems(root: &Path, stages: &[(String, String)], harness_stages: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let read = |relative: &str| std::fs::read_to_string(root.join(relative));
    let dockerfile = read("Dockerfile").unwrap_or_default();
    let image_binaries = dockerfile_binaries(&dockerfile);
    let kustomization = yaml_documents(&read("deploy/base/kustomization.yaml").unwrap_or_default());
    let base_resources: BTreeSet<String> = kustomization
        .first()
        .and_then(|k| k["resources"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    let service_accounts = named("ServiceAccount", &read("deploy/base/serviceaccounts.yaml"));
    let budgets = named(
        "PodDisruptionBudget",
        &read("deploy/overlays/production/pdb.yaml"),
    );
    let compose = yaml_documents(&read("compose/docker-compose.yml").unwrap_or_default());
    let services = compose.first().map(|c| &c["services"]);

    for (dir, package) in stages {
        let binary = format!("vexxy-{dir}");
        let mut missing = |place: String| {
            problems.push(format!(
                "stage stages/{dir} ({package}) is missing from {place}; see ARCHITECTURE.md, \
                 \"How to add a stage\""
            ));
        };
        if *package != binary {
            missing(format!(
                "its own name: the package (and binary) must be called {binary}"
            ));
        }
        if !harness_stages.contains(&binary.as_str()) {
            missing("STAGES in tests/harness/src/stack.rs (the test stacks)".into());
        }
        if !image_binaries.contains(&binary) {
            missing("VEXXY_BINARIES in the Dockerfile (the image)".into());
        }
        let manifest = format!("{dir}.yaml");
        let deployments = named("Deployment", &read(&format!("deploy/base/{manifest}")));
        if !deployments.contains(&binary) {
            missing(format!(
                "deploy/base/{manifest}, which must hold the Deployment {binary}"
            ));
        }
        if !base_resources.contains(&manifest) {
            missing(format!(
                "the resources of deploy/base/kustomization.yaml ({manifest})"
            ));
        }
        if !service_accounts.contains(&binary) {
            missing(format!(
                "deploy/base/serviceaccounts.yaml (the ServiceAccount {binary})"
            ));
        }
        if !budgets.contains(&binary) {
            missing(format!(
                "deploy/overlays/production/pdb.yaml (the PodDisruptionBudget {binary})"
            ));
        }
        let command = services
            .and_then(|s| s[dir.as_str()]["command"][0].as_str())
            .unwrap_or("");
        if command != format!("/usr/local/bin/{binary}") {
            missing(format!(
                "compose/docker-compose.yml (a service {dir} running /usr/local/bin/{binary})"
            ));
        }
    }
    // A crate under stages/ that is no workspace member is invisible to cargo metadata, which
    // `stages` comes from: found on disk instead.
    let on_disk = std::fs::read_dir(root.join("stages"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(String::from));
    for dir in on_disk {
        if !stages.iter().any(|(member, _)| *member == dir) {
            problems.push(format!(
                "stages/{dir} is no member of the workspace (Cargo.toml's [workspace] members); \
                 see ARCHITECTURE.md, \"How to add a stage\""
            ));
        }
    }
    for listed in harness_stages {
        if !stages
            .iter()
            .any(|(dir, _)| format!("vexxy-{dir}") == *listed)
        {
            problems.push(format!(
                "STAGES in tests/harness/src/stack.rs names {listed}, which is no crate under stages/"
            ));
        }
    }
    problems
}

/// The binaries of the Dockerfile's `ARG VEXXY_BINARIES="…"`.
fn dockerfile_binaries(dockerfile: &str) -> BTreeSet<String> {
    dockerfile
        .lines()
        .find_map(|line| line.trim().strip_prefix("ARG VEXXY_BINARIES="))
        .map(|list| {
            list.trim_matches('"')
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|document| Value::deserialize(document).ok())
        .filter(|document| !document.is_null())
        .collect()
}

/// The names of the objects of `kind` in a manifest file (none if it cannot be read).
fn named(kind: &str, text: &std::io::Result<String>) -> BTreeSet<String> {
    let Ok(text) = text else {
        return BTreeSet::new();
    };
    yaml_documents(text)
        .into_iter()
        .filter(|object| object["kind"] == kind)
        .filter_map(|object| object["metadata"]["name"].as_str().map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files this check reads, copied from the real tree into a scratch one.
    fn copy_of_the_tree() -> tempfile::TempDir {
        let root = crate::paths::Paths::discover().root;
        let scratch = tempfile::tempdir().expect("tempdir");
        let stages = ["install-check", "deploy", "wait", "extract", "enrich"];
        let files = [
            "Dockerfile",
            "deploy/base/kustomization.yaml",
            "deploy/base/serviceaccounts.yaml",
            "deploy/overlays/production/pdb.yaml",
            "compose/docker-compose.yml",
        ]
        .into_iter()
        .map(String::from)
        .chain(stages.iter().map(|s| format!("deploy/base/{s}.yaml")));
        for file in files {
            let to = scratch.path().join(&file);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(root.join(&file), &to).expect("copy");
        }
        scratch
    }

    fn real_stages() -> Vec<(String, String)> {
        let root = crate::paths::Paths::discover().root;
        crate::deps::stage_packages(&crate::deps::load_metadata(&root).expect("metadata"))
    }

    #[test]
    fn every_stage_of_the_real_tree_is_wired_everywhere() {
        let root = crate::paths::Paths::discover().root;
        let stages = real_stages();
        assert_eq!(stages.len(), 5, "{stages:?}");
        let problems = problems(&root, &stages, &vexxy_harness::stack::STAGES);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// A new stage crate that nothing else knows yet is reported once per place.
    #[test]
    fn a_stage_wired_nowhere_is_reported_for_each_place() {
        let tree = copy_of_the_tree();
        let mut stages = real_stages();
        stages.push(("scan".into(), "vexxy-scan".into()));
        let problems = problems(tree.path(), &stages, &vexxy_harness::stack::STAGES);
        let places = [
            "STAGES in tests/harness",
            "VEXXY_BINARIES in the Dockerfile",
            "deploy/base/scan.yaml",
            "the resources of deploy/base/kustomization.yaml",
            "deploy/base/serviceaccounts.yaml",
            "deploy/overlays/production/pdb.yaml",
            "compose/docker-compose.yml",
        ];
        assert_eq!(problems.len(), places.len(), "{problems:#?}");
        for place in places {
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("stages/scan") && p.contains(place)),
                "nothing says {place}: {problems:#?}"
            );
        }
    }

    /// A stage crate on disk that the workspace does not list is reported.
    #[test]
    fn a_stage_crate_outside_the_workspace_is_reported() {
        let tree = copy_of_the_tree();
        let crate_dir = tree.path().join("stages/scan");
        std::fs::create_dir_all(&crate_dir).expect("mkdir");
        std::fs::write(
            crate_dir.join("Cargo.toml"),
            "[package]\nname = \"vexxy-scan\"\n",
        )
        .expect("write");
        for (dir, _) in real_stages() {
            let member = tree.path().join("stages").join(dir);
            std::fs::create_dir_all(&member).expect("mkdir");
            std::fs::write(member.join("Cargo.toml"), "").expect("write");
        }
        let problems = problems(tree.path(), &real_stages(), &vexxy_harness::stack::STAGES);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("stages/scan is no member of the workspace"));
    }

    /// Each place, removed for one existing stage, is noticed.
    #[test]
    fn removing_a_stage_from_any_one_place_is_noticed() {
        let edits: [(&str, &str, &str); 6] = [
            ("Dockerfile", " vexxy-wait ", " "),
            ("deploy/base/kustomization.yaml", "  - wait.yaml\n", ""),
            (
                "deploy/base/serviceaccounts.yaml",
                "name: vexxy-wait\n",
                "name: vexxy-waiter\n",
            ),
            (
                "deploy/overlays/production/pdb.yaml",
                "  name: vexxy-wait\n",
                "  name: vexxy-waiter\n",
            ),
            (
                "compose/docker-compose.yml",
                "/usr/local/bin/vexxy-wait\"",
                "/usr/local/bin/vexxy-waiter\"",
            ),
            (
                "deploy/base/wait.yaml",
                "name: vexxy-wait\n",
                "name: vexxy-waiter\n",
            ),
        ];
        for (file, from, to) in edits {
            let tree = copy_of_the_tree();
            let path = tree.path().join(file);
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(text.contains(from), "{file} no longer contains {from:?}");
            std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
            let problems = problems(tree.path(), &real_stages(), &vexxy_harness::stack::STAGES);
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("stages/wait") && p.contains(file)),
                "removing vexxy-wait from {file} went unnoticed: {problems:?}"
            );
        }
        let without_wait: Vec<&str> = vexxy_harness::stack::STAGES
            .into_iter()
            .filter(|s| *s != "vexxy-wait")
            .collect();
        let problems = problems(
            &crate::paths::Paths::discover().root,
            &real_stages(),
            &without_wait,
        );
        assert!(
            problems.iter().any(|p| p.contains("STAGES")),
            "{problems:?}"
        );
    }
}
