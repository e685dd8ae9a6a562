//! The Dockerfile, checked by reading it (no container engine runs here): a multi-stage build
//! from a Rust builder to a distroless non-root runtime that is the default target, shipping
//! every binary the manifests and compose run, each of them a binary of this workspace.

mod deploy_manifests_support;

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use deploy_manifests_support::{KUSTOMIZATIONS, dockerfile_binaries, kind, render, root};
use vexxy_harness::stack::STAGES;

/// Binaries the image ships whose crates are still being written, with who writes them. The
/// build of the image fails until they exist; this list keeps the check honest meanwhile.
const AWAITED: [(&str, &str); 1] = [("vexxy-gateway", "the REST gateway, issue 6")];

struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<String>,
}

fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    // Join continuation lines so each instruction is one string.
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(line);
            logical.push(std::mem::take(&mut current));
        }
    }
    for instruction in logical {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        if words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
        {
            let base = words.get(1).copied().unwrap_or("").to_string();
            let name = match words.as_slice() {
                [_, _, as_, name, ..] if as_.eq_ignore_ascii_case("AS") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                base,
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        }
    }
    stages
}

fn workspace_binaries() -> Result<BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root())
        .output()
        .context("cannot run cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect())
}

#[test]
fn the_image_is_a_small_non_root_multi_stage_build() -> Result<()> {
    let text = std::fs::read_to_string(root().join("Dockerfile"))?;
    let stages = stages(&text);
    let by_name = |name: &str| stages.iter().find(|s| s.name.as_deref() == Some(name));

    let builder = by_name("builder").context("no `AS builder` stage")?;
    ensure!(
        builder.base.starts_with("rust:"),
        "the builder must be a rust image, is {}",
        builder.base
    );
    ensure!(
        builder
            .instructions
            .iter()
            .any(|i| i.contains("cargo build --release --locked")),
        "the builder must run `cargo build --release --locked` (reproducible from Cargo.lock)"
    );

    let last = stages.last().context("no stages")?;
    ensure!(
        last.name.as_deref() == Some("runtime"),
        "the default (last) target must be `runtime`"
    );
    let base = by_name(&last.base).context("runtime must build on a named stage")?;
    ensure!(
        base.base.starts_with("gcr.io/distroless/cc") && base.base.ends_with(":nonroot"),
        "the runtime base must be distroless/cc :nonroot, is {}",
        base.base
    );
    let user = base
        .instructions
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .context("the runtime sets no USER")?;
    let uid = user.split(':').next().unwrap_or("");
    ensure!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "USER must be a numeric non-root uid (Kubernetes runAsNonRoot needs a number), is {user}"
    );
    ensure!(
        !last.instructions.iter().any(|i| i.starts_with("USER")),
        "runtime must not change the user"
    );
    // Everything COPYed from the build context exists.
    for instruction in stages.iter().flat_map(|s| &s.instructions) {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        if words.first() == Some(&"COPY") && !words.iter().any(|w| w.starts_with("--from")) {
            let source = words[1];
            ensure!(
                source == "." || root().join(source).exists(),
                "COPY {source}: no such path in the repository"
            );
        }
    }
    let ignore =
        std::fs::read_to_string(root().join(".dockerignore")).context("no .dockerignore")?;
    for excluded in ["target/", ".git/", ".tools/"] {
        ensure!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore must exclude {excluded}"
        );
    }
    Ok(())
}

#[test]
fn the_image_ships_every_binary_the_manifests_run_and_only_workspace_binaries() -> Result<()> {
    let shipped: BTreeSet<String> = dockerfile_binaries()?.into_iter().collect();
    let workspace = workspace_binaries()?;
    let mut problems = Vec::new();
    for binary in &shipped {
        let awaited = AWAITED.iter().find(|(name, _)| name == binary);
        match (workspace.contains(binary), awaited) {
            (true, _) => {}
            (false, Some((_, by))) => {
                eprintln!("note: {binary} is not in the workspace yet ({by})")
            }
            (false, None) => problems.push(format!(
                "the Dockerfile builds {binary}, which no workspace package provides"
            )),
        }
    }
    for stage in STAGES {
        if !shipped.contains(stage) {
            problems.push(format!("the image does not ship the stage {stage}"));
        }
    }
    if !shipped.contains("vexxy") {
        problems.push("the image does not ship the CLI (vexxy)".into());
    }
    for dir in KUSTOMIZATIONS {
        for object in render(dir)?.iter().filter(|o| kind(o) == "Deployment") {
            for container in object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if !container["image"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("ghcr.io/vexxy/vexxy")
                {
                    continue;
                }
                let command = container["command"][0].as_str().unwrap_or("");
                let binary = command.strip_prefix("/usr/local/bin/").unwrap_or(command);
                if !shipped.contains(binary) {
                    problems.push(format!(
                        "{dir}: a Deployment runs {command}, which the image does not ship"
                    ));
                }
            }
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
