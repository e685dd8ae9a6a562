//! The workspace's dependency rules, checked against `cargo metadata`:
//!
//! * production crates (`events/`, `crates/*`, `stages/*`) never depend on test or tooling crates
//!   (`tests/*`, `xtask`) — dev-dependencies may, that is what they are for;
//! * `events` (the public contract) depends on no crate of ours, so a client can take it alone;
//! * a stage never depends on another stage (they talk only through events, KV and the store);
//! * user-facing clients (`cli/`, `gateway/`) are production crates too, and talk to the stages
//!   the way users do — through the contract — so they never depend on a stage.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Contract,
    /// Shared production libraries under `crates/` (runtime, kubescape).
    SharedLibrary,
    Stage,
    /// User surfaces at the top level: the `vexxy` CLI, the REST gateway.
    Client,
    TestInfrastructure,
    Tooling,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    workspace_root: String,
}

#[derive(Debug, Deserialize)]
struct Package {
    id: String,
    name: String,
    manifest_path: String,
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    name: String,
    /// `null` for normal dependencies, else `"dev"` or `"build"`.
    kind: Option<String>,
}

impl Dependency {
    fn is_dev(&self) -> bool {
        self.kind.as_deref() == Some("dev")
    }
}

pub fn load_metadata(root: &Path) -> anyhow::Result<Metadata> {
    let output = std::process::Command::new(crate::paths::cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("cannot parse cargo metadata output")
}

/// The role of a workspace crate from where it lives, `None` for an unknown location (itself a
/// violation: a new top-level crate must be given a role here).
fn role_of(relative_dir: &Path) -> Option<Role> {
    let parts: Vec<&str> = relative_dir
        .iter()
        .filter_map(|part| part.to_str())
        .collect();
    match parts.as_slice() {
        ["events"] => Some(Role::Contract),
        ["crates", _] => Some(Role::SharedLibrary),
        ["stages", _] => Some(Role::Stage),
        ["tests", _] => Some(Role::TestInfrastructure),
        ["cli"] | ["gateway"] => Some(Role::Client),
        ["xtask"] => Some(Role::Tooling),
        _ => None,
    }
}

/// The stage crates, `stages/<dir>`, as (dir, package name) in directory order.
pub fn stage_packages(metadata: &Metadata) -> Vec<(String, String)> {
    let root = Path::new(&metadata.workspace_root);
    let mut stages: Vec<(String, String)> = metadata
        .packages
        .iter()
        .filter(|package| metadata.workspace_members.contains(&package.id))
        .filter_map(|package| {
            let dir = Path::new(&package.manifest_path).parent()?;
            let relative = dir.strip_prefix(root).ok()?;
            (role_of(relative) == Some(Role::Stage)).then(|| {
                let name = relative.file_name()?.to_str()?.to_string();
                Some((name, package.name.clone()))
            })?
        })
        .collect();
    stages.sort();
    stages
}

/// Every rule violation, as a sentence naming both crates; empty when the workspace is clean.
pub fn violations(metadata: &Metadata) -> Vec<String> {
    let root = Path::new(&metadata.workspace_root);
    let mut roles = BTreeMap::new();
    let mut problems = Vec::new();
    let members: Vec<&Package> = metadata
        .packages
        .iter()
        .filter(|package| metadata.workspace_members.contains(&package.id))
        .collect();
    for package in &members {
        let dir = Path::new(&package.manifest_path).parent().unwrap_or(root);
        let relative = dir.strip_prefix(root).unwrap_or(dir);
        match role_of(relative) {
            Some(role) => {
                roles.insert(package.name.as_str(), role);
            }
            None => problems.push(format!(
                "{} lives at {}, which has no role in the dependency rules; put it under events/, \
                 crates/, stages/, cli/, gateway/, tests/ or xtask/, or teach xtask/src/deps.rs \
                 about it",
                package.name,
                relative.display()
            )),
        }
    }
    for package in &members {
        let Some(&role) = roles.get(package.name.as_str()) else {
            continue;
        };
        for dependency in &package.dependencies {
            let Some(&target) = roles.get(dependency.name.as_str()) else {
                continue;
            };
            let production = matches!(
                role,
                Role::Contract | Role::SharedLibrary | Role::Stage | Role::Client
            );
            if production
                && !dependency.is_dev()
                && matches!(target, Role::TestInfrastructure | Role::Tooling)
            {
                problems.push(format!(
                    "production crate {} depends on {} ({target:?}); test and tooling crates may \
                     only be dev-dependencies of production crates",
                    package.name, dependency.name
                ));
            }
            if role == Role::Contract && !dependency.is_dev() {
                problems.push(format!(
                    "the contract crate {} depends on the workspace crate {}; it must stand alone \
                     so clients can depend on it without the rest of vexxy",
                    package.name, dependency.name
                ));
            }
            if role == Role::Client && target == Role::Stage {
                problems.push(format!(
                    "client {} depends on stage {}; clients use the public contract (vexxy-events) \
                     and the runtime's shared pieces, never a stage's internals",
                    package.name, dependency.name
                ));
            }
            if role == Role::Stage && target == Role::Stage {
                problems.push(format!(
                    "stage {} depends on stage {}; stages talk only through events, the KV status \
                     and the object store — move shared code to crates/runtime or crates/kubescape",
                    package.name, dependency.name
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, dir: &str, deps: &[(&str, Option<&str>)]) -> serde_json::Value {
        json!({
            "id": format!("path+file:///w/{dir}#{name}@0.1.0"),
            "name": name,
            "manifest_path": format!("/w/{dir}/Cargo.toml"),
            "dependencies": deps.iter().map(|(dep, kind)| json!({"name": dep, "kind": kind})).collect::<Vec<_>>(),
        })
    }

    fn metadata(packages: Vec<serde_json::Value>) -> Metadata {
        let members: Vec<serde_json::Value> = packages.iter().map(|p| p["id"].clone()).collect();
        serde_json::from_value(json!({
            "packages": packages,
            "workspace_members": members,
            "workspace_root": "/w",
        }))
        .expect("synthetic metadata parses")
    }

    fn clean_workspace() -> Vec<serde_json::Value> {
        vec![
            package(
                "vexxy-events",
                "events",
                &[("serde", None), ("jsonschema", Some("dev"))],
            ),
            package(
                "vexxy-runtime",
                "crates/runtime",
                &[("vexxy-events", None), ("vexxy-harness", Some("dev"))],
            ),
            package("vexxy-kubescape", "crates/kubescape", &[("kube", None)]),
            package(
                "vexxy-wait",
                "stages/wait",
                &[
                    ("vexxy-runtime", None),
                    ("vexxy-kubescape", None),
                    ("kubesim", Some("dev")),
                ],
            ),
            package(
                "vexxy-enrich",
                "stages/enrich",
                &[("vexxy-runtime", None), ("vexxy-events", None)],
            ),
            package("kubesim", "tests/kubesim", &[("vexxy-kubescape", None)]),
            package("vexxy-harness", "tests/harness", &[]),
            package(
                "xtask",
                "xtask",
                &[("vexxy-harness", None), ("vexxy-events", None)],
            ),
        ]
    }

    #[test]
    fn a_clean_workspace_passes() {
        assert_eq!(
            violations(&metadata(clean_workspace())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_stage_depending_on_kubesim_fails() {
        let mut packages = clean_workspace();
        packages[3] = package(
            "vexxy-wait",
            "stages/wait",
            &[("vexxy-runtime", None), ("kubesim", None)],
        );
        let problems = violations(&metadata(packages));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("vexxy-wait depends on kubesim"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_runtime_depending_on_the_harness_fails() {
        let mut packages = clean_workspace();
        packages[1] = package(
            "vexxy-runtime",
            "crates/runtime",
            &[("vexxy-harness", Some("build"))],
        );
        let problems = violations(&metadata(packages));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("vexxy-runtime depends on vexxy-harness"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_contract_depending_on_any_workspace_crate_fails() {
        let mut packages = clean_workspace();
        packages[0] = package("vexxy-events", "events", &[("vexxy-kubescape", None)]);
        let problems = violations(&metadata(packages));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(
            "contract crate vexxy-events depends on the workspace crate vexxy-kubescape"
        ));
    }

    #[test]
    fn a_stage_depending_on_another_stage_fails_even_as_dev_dependency() {
        let mut packages = clean_workspace();
        packages[4] = package(
            "vexxy-enrich",
            "stages/enrich",
            &[("vexxy-runtime", None), ("vexxy-wait", Some("dev"))],
        );
        let problems = violations(&metadata(packages));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("stage vexxy-enrich depends on stage vexxy-wait"));
    }

    #[test]
    fn a_client_depending_on_a_stage_or_the_harness_fails() {
        let mut packages = clean_workspace();
        packages.push(package(
            "vexxy-cli",
            "cli",
            &[
                ("vexxy-events", None),
                ("vexxy-runtime", None),
                ("vexxy-harness", Some("dev")),
            ],
        ));
        assert_eq!(violations(&metadata(packages)), Vec::<String>::new());
        let mut packages = clean_workspace();
        packages.push(package(
            "vexxy-cli",
            "cli",
            &[("vexxy-enrich", None), ("vexxy-harness", None)],
        ));
        let problems = violations(&metadata(packages));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("client vexxy-cli depends on stage vexxy-enrich"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("production crate vexxy-cli depends on vexxy-harness"))
        );
    }

    #[test]
    fn a_crate_outside_the_known_layout_fails() {
        let mut packages = clean_workspace();
        packages.push(package("stray", "misc/stray", &[]));
        let problems = violations(&metadata(packages));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("stray lives at misc/stray"));
    }

    /// The real workspace, as cargo sees it now.
    #[test]
    fn the_workspace_follows_the_dependency_rules() {
        let root = crate::paths::Paths::discover().root;
        let metadata = load_metadata(&root).expect("cargo metadata runs on the workspace");
        let stages = stage_packages(&metadata).len();
        assert_eq!(stages, 5, "expected the five stage crates under stages/");
        let problems = violations(&metadata);
        assert!(
            problems.is_empty(),
            "dependency rules broken:\n{}",
            problems.join("\n")
        );
    }
}
