//! kubesim answers like the real kube-apiserver (see `real_control_plane.rs` for the tier).
//!
//! The same requests go to a fresh kubesim and to the real API server; the test compares status
//! codes and the shape of each answer (kind, apiVersion, a Status's status, reason, code and
//! details, which metadata a list or object carries). kubectl's own requests (protobuf bodies
//! for core kinds) are compared by kubectl's exit status. Each difference must be fixed in
//! kubesim or be listed in [`KNOWN_DIFFERENCES`] with its reason, and named in
//! `tests/kubesim/README.md`; a listed difference that no longer differs fails too, so the list
//! stays true.
//!
//! The storage group is not compared here: its reference, Kubescape's storage server, cannot be
//! built on these machines; kubesim's storage behaviour follows its source (see
//! `tests/kubesim/tests/storage_quirks.rs`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use vexxy_harness::realcluster::RealCluster;

/// Case name → why kubesim still answers differently.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "kubectl create namespace (protobuf)",
        "kubesim cannot decode protobuf bodies and answers 415 (kubectl does not fall back to JSON)",
    ),
    (
        "kubectl create configmap (protobuf)",
        "kubesim cannot decode protobuf bodies and answers 415 (kubectl does not fall back to JSON)",
    ),
    (
        "create an invalid Deployment",
        "kubesim validates object names only, not fields; the real tier checks deploy/ and the sandboxes",
    ),
];

/// One request, sent as is to both servers.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json_case(name: &'static str, method: &'static str, path: &str, body: Value) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        content_type: "application/json",
        body: serde_json::to_vec(&body).expect("JSON"),
    }
}

fn get(name: &'static str, path: &str) -> Case {
    Case {
        name,
        method: "GET",
        path: path.to_string(),
        content_type: "application/json",
        body: Vec::new(),
    }
}

fn cases() -> Vec<Case> {
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "conformance-job"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "registry.example/job@sha256:".to_string() + &"1".repeat(64)}]}}},
    });
    let pdb = json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "conformance-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}},
    });
    let invalid_deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "conformance-invalid"},
        "spec": {"template": {"spec": {"containers": []}}},
    });
    let big_config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "conformance-big"},
        "data": {"blob": "x".repeat(3 * 1024 * 1024 + 1024)},
    });
    vec![
        get("list namespaces", "/api/v1/namespaces"),
        get(
            "get a missing namespace",
            "/api/v1/namespaces/conformance-missing",
        ),
        json_case(
            "create a namespace",
            "POST",
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "conformance"}}),
        ),
        json_case(
            "create the same namespace again",
            "POST",
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "conformance"}}),
        ),
        get("get the namespace", "/api/v1/namespaces/conformance"),
        json_case(
            "create a Job",
            "POST",
            "/apis/batch/v1/namespaces/conformance/jobs",
            job,
        ),
        get("list Jobs", "/apis/batch/v1/namespaces/conformance/jobs"),
        json_case(
            "create a PodDisruptionBudget",
            "POST",
            "/apis/policy/v1/namespaces/conformance/poddisruptionbudgets",
            pdb,
        ),
        json_case(
            "create an invalid Deployment",
            "POST",
            "/apis/apps/v1/namespaces/conformance/deployments",
            invalid_deployment,
        ),
        Case {
            name: "create with an unsupported media type",
            method: "POST",
            path: "/api/v1/namespaces".into(),
            content_type: "text/plain",
            body: b"name: conformance-text".to_vec(),
        },
        json_case(
            "create an object over the request size limit",
            "POST",
            "/api/v1/namespaces/conformance/configmaps",
            big_config_map,
        ),
        get(
            "get from an unknown group",
            "/apis/unknown.example.com/v1/things",
        ),
        json_case(
            "create in a missing namespace",
            "POST",
            "/api/v1/namespaces/conformance-missing/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        ),
    ]
}

/// What is compared of an answer: the status code and the parts of the body that are not
/// per-server values (names are kept, uids and timestamps only as present or absent).
fn projection(status: u16, body: &[u8]) -> Value {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return json!({"code": status, "body": "not JSON"});
    };
    let present = |pointer: &str| body.pointer(pointer).is_some_and(|v| !v.is_null());
    let mut shape = json!({
        "code": status,
        "kind": body["kind"],
        "apiVersion": body["apiVersion"],
    });
    if body["kind"] == "Status" {
        for key in ["status", "reason", "code"] {
            shape[key] = body[key].clone();
        }
        shape["details"] = json!({
            "name": body.pointer("/details/name"),
            "group": body.pointer("/details/group"),
            "kind": body.pointer("/details/kind"),
        });
    } else if body["items"].is_array() {
        shape["metadata.resourceVersion"] = json!(present("/metadata/resourceVersion"));
    } else {
        shape["metadata.name"] = body
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        for field in ["uid", "resourceVersion", "creationTimestamp"] {
            shape[format!("metadata.{field}")] = json!(present(&format!("/metadata/{field}")));
        }
    }
    shape
}

async fn send(client: &kube::Client, case: &Case) -> Result<Value> {
    let request = http::Request::builder()
        .method(case.method)
        .uri(&case.path)
        .header("content-type", case.content_type)
        .header("accept", "application/json")
        .body(case.body.clone().into())
        .context("building the request")?;
    let response = client
        .send(request)
        .await
        .with_context(|| format!("{}: the request failed", case.name))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect_bytes().await?;
    Ok(projection(status, &body))
}

async fn client_of(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let yaml = std::fs::read_to_string(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&yaml)?,
        &Default::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// kubectl's own requests, compared by whether kubectl succeeded.
fn kubectl_answer(kubeconfig: &std::path::Path, args: &[&str]) -> Result<Value> {
    let kubectl = vexxy_harness::find_binary("VEXXY_KUBECTL", "kubectl")?;
    let output = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()?;
    Ok(json!({"success": output.status.success()}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubesim_answers_like_the_real_api_server() -> Result<()> {
    let real = tokio::task::block_in_place(RealCluster::start)?;
    let sim = kubesim::Server::start(kubesim::Config {
        seed: Some(11),
        ..kubesim::Config::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let sim_kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&sim_kubeconfig)?;
    let real_client = client_of(real.kubeconfig()).await?;
    let sim_client = client_of(&sim_kubeconfig).await?;

    let mut answers: BTreeMap<&str, (Value, Value)> = BTreeMap::new();
    for case in cases() {
        let real_answer = send(&real_client, &case).await?;
        let sim_answer = send(&sim_client, &case).await?;
        answers.insert(case.name, (real_answer, sim_answer));
    }
    let kubectl_cases: [(&str, Vec<&str>); 2] = [
        (
            "kubectl create namespace (protobuf)",
            vec!["create", "namespace", "conformance-kubectl"],
        ),
        (
            "kubectl create configmap (protobuf)",
            vec![
                "create",
                "configmap",
                "conformance-kubectl",
                "-n",
                "conformance-kubectl",
                "--from-literal=a=b",
            ],
        ),
    ];
    for (name, args) in kubectl_cases {
        let real_answer = tokio::task::block_in_place(|| kubectl_answer(real.kubeconfig(), &args))?;
        let sim_answer = tokio::task::block_in_place(|| kubectl_answer(&sim_kubeconfig, &args))?;
        answers.insert(name, (real_answer, sim_answer));
    }

    let readme =
        std::fs::read_to_string(vexxy_harness::workspace_root().join("tests/kubesim/README.md"))?;
    let mut problems = Vec::new();
    for (name, (real_answer, sim_answer)) in &answers {
        let known = KNOWN_DIFFERENCES.iter().find(|(case, _)| case == name);
        match (real_answer == sim_answer, known) {
            (true, None) => {}
            (true, Some(_)) => problems.push(format!(
                "{name}: kubesim now answers like the real API server; remove it from KNOWN_DIFFERENCES and the README"
            )),
            (false, None) => problems.push(format!(
                "{name}: real {real_answer}\n    kubesim {sim_answer}"
            )),
            (false, Some((_, reason))) => {
                if !readme.contains(name) {
                    problems.push(format!(
                        "{name}: a known difference ({reason}) that tests/kubesim/README.md does not name"
                    ));
                }
            }
        }
    }
    sim.shutdown().await;
    if !problems.is_empty() {
        bail!(
            "{} difference(s) between kubesim and the real API server:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    Ok(())
}
