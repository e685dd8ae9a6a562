//! Who the stages are on a real cluster: the Namespaces, ServiceAccounts and RBAC of
//! `deploy/base` applied with kubectl, and one kubeconfig per stage that authenticates with a
//! token of the stage's own ServiceAccount. The real authorizer then decides every request a
//! stage makes, with exactly the grants the manifests give it.
//!
//! Used by the real tier's end-to-end, chaos and bad-input tests and by `cargo xtask bench`'s
//! real-stack figures (whose request counts are per ServiceAccount, read from the API server's
//! audit log).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::realcluster::RealCluster;
use crate::stack::STAGES;

/// The namespace `deploy/base` puts the stages and their ServiceAccounts in.
pub const VEXXY_NAMESPACE: &str = "vexxy";

/// The kinds of `deploy/base` that make up who the stages are and what they may do.
const IDENTITY_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// The user name the API server (and its audit log) gives a stage's ServiceAccount.
pub fn user_of(stage: &str) -> String {
    format!("system:serviceaccount:{VEXXY_NAMESPACE}:{stage}")
}

pub struct StageIdentities {
    kubeconfigs: BTreeMap<String, PathBuf>,
}

impl StageIdentities {
    /// Applies the identities (and the `kubescape` namespace the Roles of install-check and
    /// extract live in, which exists before vexxy is installed: the chart, or the dev overlay's
    /// auto-install component) and writes one token kubeconfig per stage into `dir`.
    pub fn apply(real: &RealCluster, dir: &Path) -> Result<StageIdentities> {
        real.kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kubescape\n",
        )
        .context("creating the kubescape namespace")?;
        let base = crate::workspace_root().join("deploy/base");
        let rendered = real
            .kubectl_ok(&["kustomize", &base.display().to_string()])
            .context("rendering deploy/base with kubectl kustomize")?;
        let mut objects = String::new();
        for document in yaml_documents(&rendered)? {
            if IDENTITY_KINDS.contains(&document["kind"].as_str().unwrap_or("")) {
                objects.push_str("---\n");
                objects.push_str(&serde_json::to_string(&document)?);
                objects.push('\n');
            }
        }
        real.kubectl_stdin(&["apply", "-f", "-"], &objects)
            .context("applying deploy/base's identities to the real cluster")?;
        let ca = std::fs::read(real.ca_cert()).context("cannot read the cluster's CA")?;
        let mut kubeconfigs = BTreeMap::new();
        for stage in STAGES {
            let token = real
                .kubectl_ok(&[
                    "create",
                    "token",
                    stage,
                    "-n",
                    VEXXY_NAMESPACE,
                    "--duration",
                    "2h",
                ])
                .with_context(|| format!("a token for ServiceAccount {VEXXY_NAMESPACE}/{stage}"))?;
            let path = dir.join(format!("{stage}.kubeconfig"));
            std::fs::write(&path, token_kubeconfig(&real.url(), &ca, token.trim()))?;
            // The API server sees the stage as its ServiceAccount, and nothing more.
            let path_arg = path.display().to_string();
            let whoami = real.kubectl_ok(&[
                "auth",
                "whoami",
                "--kubeconfig",
                &path_arg,
                "-o",
                "jsonpath={.status.userInfo.username}",
            ])?;
            ensure!(
                whoami == user_of(stage),
                "{stage}'s kubeconfig authenticates as {whoami:?}"
            );
            kubeconfigs.insert(stage.to_string(), path);
        }
        Ok(StageIdentities { kubeconfigs })
    }

    /// The stage's kubeconfig, and no sandbox namespace created on demand (the base has it,
    /// and no stage may create namespaces).
    pub fn env_of(&self, stage: &str) -> Vec<(String, String)> {
        let mut env = vec![("VEXXY_CREATE_SANDBOX_NAMESPACE".into(), "false".into())];
        if let Some(path) = self.kubeconfigs.get(stage) {
            env.push(("KUBECONFIG".into(), path.display().to_string()));
        }
        env
    }
}

/// Every non-empty document of a multi-document YAML text, as JSON values.
fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .with_context(|| format!("YAML document {index} of deploy/base does not parse"))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn token_kubeconfig(server: &str, ca: &[u8], token: &str) -> String {
    let ca = data_encoding::BASE64.encode(ca);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: real
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: stage
  user:
    token: {token}
contexts:
- name: stage
  context:
    cluster: real
    user: stage
current-context: stage
"
    )
}
