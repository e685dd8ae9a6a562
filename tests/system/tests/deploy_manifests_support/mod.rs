//! Shared by the deploy/, compose/ and RBAC checks: rendering kustomize directories with kubectl
//! and reading multi-document YAML as JSON values.

#![allow(dead_code)] // each test crate uses a different part

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The kustomize directories users apply: the base and both overlays.
pub const KUSTOMIZATIONS: [&str; 3] = [
    "deploy/base",
    "deploy/overlays/dev",
    "deploy/overlays/production",
];

pub fn root() -> PathBuf {
    vexxy_harness::workspace_root()
}

/// `kubectl` from PATH, or an error saying how to get it (the checks need kubectl's kustomize).
pub fn kubectl() -> Result<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|candidate| candidate.is_file())
    });
    found.context(
        "kubectl is not on PATH: these checks render deploy/ with `kubectl kustomize` and apply it \
         with `kubectl apply`. Install kubectl >= 1.27 (kustomize v5 built in), e.g. from \
         https://kubernetes.io/docs/tasks/tools/, and run the tests again",
    )
}

/// `kubectl kustomize <dir>` (relative to the workspace root), as one JSON value per object.
pub fn render(dir: &str) -> Result<Vec<Value>> {
    let output = Command::new(kubectl()?)
        .arg("kustomize")
        .arg(root().join(dir))
        .stdin(Stdio::null())
        .output()
        .context("cannot run kubectl kustomize")?;
    if !output.status.success() {
        bail!(
            "`kubectl kustomize {dir}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout).context("kustomize output is not UTF-8")?;
    yaml_documents(&text).with_context(|| format!("reading the output of kubectl kustomize {dir}"))
}

/// Every non-empty document of a multi-document YAML text, as JSON values (merge keys applied).
pub fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let mut value = serde_yaml_ng::Value::deserialize(document)
            .with_context(|| format!("YAML document {index} does not parse"))?;
        if value.is_null() {
            continue;
        }
        value
            .apply_merge()
            .with_context(|| format!("YAML document {index}: merge keys"))?;
        documents.push(
            serde_json::to_value(&value)
                .with_context(|| format!("YAML document {index} is not representable as JSON"))?,
        );
    }
    Ok(documents)
}

pub fn read_yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut documents = yaml_documents(&text)?;
    if documents.len() != 1 {
        bail!(
            "{} holds {} YAML documents, expected one",
            path.display(),
            documents.len()
        );
    }
    Ok(documents.remove(0))
}

pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or("")
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

pub fn namespace(object: &Value) -> Option<&str> {
    object["metadata"]["namespace"].as_str()
}

/// `Kind namespace/name`, for messages.
pub fn describe(object: &Value) -> String {
    match namespace(object) {
        Some(ns) => format!("{} {ns}/{}", kind(object), name(object)),
        None => format!("{} {}", kind(object), name(object)),
    }
}

pub fn find<'a>(objects: &'a [Value], kind_: &str, name_: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|object| kind(object) == kind_ && name(object) == name_)
}

/// The environment a Deployment's first container sees: its ConfigMap and Secret `envFrom`
/// (in order), then its literal `env` (later wins, as in Kubernetes). Secret values are decoded.
pub fn container_env(objects: &[Value], deployment: &Value) -> Result<BTreeMap<String, String>> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let ns = namespace(deployment).unwrap_or("default");
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name_) = source["configMapRef"]["name"].as_str() {
            let map = objects
                .iter()
                .find(|o| kind(o) == "ConfigMap" && name(o) == name_ && namespace(o) == Some(ns))
                .with_context(|| {
                    format!(
                        "{}: ConfigMap {ns}/{name_} is not rendered",
                        describe(deployment)
                    )
                })?;
            for (key, value) in map["data"].as_object().into_iter().flatten() {
                env.insert(key.clone(), value.as_str().unwrap_or("").to_string());
            }
        }
        if let Some(name_) = source["secretRef"]["name"].as_str() {
            let secret = objects
                .iter()
                .find(|o| kind(o) == "Secret" && name(o) == name_ && namespace(o) == Some(ns))
                .with_context(|| {
                    format!(
                        "{}: Secret {ns}/{name_} is not rendered",
                        describe(deployment)
                    )
                })?;
            for (key, value) in secret["data"].as_object().into_iter().flatten() {
                let decoded = decode_base64(value.as_str().unwrap_or(""))
                    .with_context(|| format!("Secret {ns}/{name_} key {key} is not base64"))?;
                env.insert(key.clone(), decoded);
            }
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        if let (Some(key), Some(value)) = (variable["name"].as_str(), variable["value"].as_str()) {
            env.insert(key.to_string(), value.to_string());
        }
    }
    Ok(env)
}

fn decode_base64(text: &str) -> Result<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c)
            .with_context(|| format!("{:?} is not a base64 character", c as char))?;
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(bytes).context("decoded value is not UTF-8")
}

/// The Deployment of a vexxy process (`vexxy-<name>`) in the vexxy namespace.
pub fn vexxy_deployment<'a>(objects: &'a [Value], process: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| kind(o) == "Deployment" && name(o) == process && namespace(o) == Some("vexxy"))
        .with_context(|| format!("no Deployment vexxy/{process} in the rendered manifests"))
}

/// The `VEXXY_BINARIES` the Dockerfile builds and ships.
pub fn dockerfile_binaries() -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(root().join("Dockerfile")).context("cannot read Dockerfile")?;
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG VEXXY_BINARIES="))
        .context("the Dockerfile has no `ARG VEXXY_BINARIES=\"...\"` line")?;
    Ok(line
        .trim_matches('"')
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// The objects `kubectl apply -o name` printed as `kind/name` (it prints
/// `<resource>.<group>/<name>`; the singular resource is the lower-case kind).
pub fn applied_names(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|line| {
            let (resource, object) = line.trim().split_once('/')?;
            let singular = resource.split('.').next()?;
            Some(format!("{singular}/{object}"))
        })
        .collect()
}

/// Fails unless the `round`-th apply of `dir` reported exactly the `expected` objects.
pub fn check_applied(
    dir: &str,
    round: &str,
    expected: &BTreeSet<String>,
    output: &str,
) -> Result<()> {
    let reported = applied_names(output);
    anyhow::ensure!(
        &reported == expected,
        "{dir}: the {round} apply reported other objects than rendered.\nnot reported: {:?}\nunexpected: {:?}",
        expected.difference(&reported).collect::<Vec<_>>(),
        reported.difference(expected).collect::<Vec<_>>()
    );
    Ok(())
}
