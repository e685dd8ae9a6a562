//! deploy/ as users apply it: `kubectl kustomize` renders the base and both overlays; every object
//! parses into its k8s-openapi type without losing a field; the overlays apply cleanly (twice) to
//! kubesim with `kubectl apply`; and the properties the issue asks for hold in every rendering
//! (hardened pods, probes on the health port, termination grace above the shutdown grace, one
//! ServiceAccount per stage, the sandbox namespace's Pod Security labels and deny-all policy).

mod deploy_manifests_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use deploy_manifests_support::{
    KUSTOMIZATIONS, check_applied, container_env, describe, find, kind, kubectl, name, namespace,
    render, vexxy_deployment,
};
use serde_json::Value;
use vexxy_harness::stack::STAGES;

/// Deserializes into `T`, serializes back and requires the same JSON: a field k8s-openapi does
/// not know (a typo, a wrong indentation level, a field of another version) would be dropped.
fn round_trip<T>(object: &Value) -> Result<()>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_path_to_error::deserialize(object.clone()).map_err(|e| {
        anyhow::anyhow!(
            "{}: does not parse as its type at {}: {}",
            describe(object),
            e.path(),
            e.inner()
        )
    })?;
    let back = serde_json::to_value(&typed)?;
    if &back != object {
        bail!(
            "{}: fields lost or changed by the typed round trip:\n{}",
            describe(object),
            json_differences(object, &back, "").join("\n")
        );
    }
    Ok(())
}

/// The paths where two JSON values differ.
fn json_differences(expected: &Value, actual: &Value, path: &str) -> Vec<String> {
    match (expected, actual) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .flat_map(|key| {
                    let here = format!("{path}.{key}");
                    match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => json_differences(x, y, &here),
                        (Some(x), None) => vec![format!("  {here}: {x} is lost")],
                        (None, Some(y)) => vec![format!("  {here}: {y} appears")],
                        (None, None) => vec![],
                    }
                })
                .collect()
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (x, y))| json_differences(x, y, &format!("{path}[{i}]")))
            .collect(),
        _ if expected == actual => vec![],
        _ => vec![format!("  {path}: {expected} became {actual}")],
    }
}

fn check_typed(object: &Value) -> Result<()> {
    use k8s_openapi::api::{apps, batch, core, networking, policy, rbac};
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    match (api_version, kind(object)) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(object),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(object),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(object),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(object),
        ("v1", "Service") => round_trip::<core::v1::Service>(object),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(object),
        ("batch/v1", "Job") => round_trip::<batch::v1::Job>(object),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip::<networking::v1::NetworkPolicy>(object)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            round_trip::<policy::v1::PodDisruptionBudget>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<rbac::v1::RoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip::<rbac::v1::ClusterRole>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(object)
        }
        (other_version, other_kind) => bail!(
            "{}: no typed check for {other_version} {other_kind}; add its k8s-openapi type to \
             check_typed in tests/system/tests/deploy_manifests.rs",
            describe(object)
        ),
    }
}

#[test]
fn every_rendered_object_parses_into_its_k8s_openapi_type_without_losing_fields() -> Result<()> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for dir in KUSTOMIZATIONS {
        let objects = render(dir)?;
        ensure!(!objects.is_empty(), "{dir} renders nothing");
        for object in &objects {
            checked += 1;
            if let Err(problem) = check_typed(object) {
                problems.push(format!("{dir}: {problem:#}"));
            }
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("{checked} rendered objects round-tripped through k8s-openapi");
    Ok(())
}

#[test]
fn the_typed_round_trip_catches_a_misplaced_field() {
    // The check itself: a probe written one level too high is silently dropped by the type.
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "vexxy"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
                "containers": [{"name": "c", "image": "i"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8081}}
            }}
        }
    });
    let error = check_typed(&deployment).expect_err("a misplaced probe must be reported");
    assert!(
        error
            .to_string()
            .contains("spec.template.spec.livenessProbe"),
        "{error}"
    );
}

fn kubectl_at(kubeconfig: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(kubectl()?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run kubectl")?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn applies_cleanly(dir: &str) -> Result<()> {
    let sim = kubesim::Server::start(kubesim::Config {
        seed: Some(3),
        ..kubesim::Config::default()
    })
    .await?;
    let temp = tempfile::tempdir()?;
    let kubeconfig = temp.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)?;

    let objects = render(dir)?;
    let applied: Vec<&Value> = objects.iter().collect();
    let stream: String = applied
        .iter()
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).expect("YAML")))
        .collect();
    let expected: BTreeSet<String> = applied
        .iter()
        .map(|o| format!("{}/{}", kind(o).to_ascii_lowercase(), name(o)))
        .collect();

    for round in ["first", "second"] {
        let kubeconfig = kubeconfig.clone();
        let input = stream.clone();
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || {
                kubectl_at(
                    &kubeconfig,
                    &["apply", "-f", "-", "-o", "name"],
                    Some(&input),
                )
            }),
        )
        .await
        .with_context(|| format!("{dir}: kubectl apply did not finish in 60 s"))???;
        check_applied(dir, round, &expected, &output)?;
    }

    // Read back: each object exists where the manifests put it.
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    for object in &applied {
        let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
            api_version: object["apiVersion"].as_str().unwrap_or("").to_string(),
            kind: kind(object).to_string(),
        })?;
        let (resource, _) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .with_context(|| format!("{dir}: kubesim does not know {}", describe(object)))?;
        let api: kube::Api<kube::core::DynamicObject> = match namespace(object) {
            Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &resource),
            None => kube::Api::all_with(client.clone(), &resource),
        };
        ensure!(
            api.get_opt(name(object)).await?.is_some(),
            "{dir}: {} was applied but cannot be read back",
            describe(object)
        );
    }
    eprintln!(
        "{dir}: {} objects applied twice to kubesim and read back",
        applied.len()
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_overlay_applies_cleanly_to_kubesim() -> Result<()> {
    applies_cleanly("deploy/overlays/dev").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_overlay_applies_cleanly_to_kubesim() -> Result<()> {
    applies_cleanly("deploy/overlays/production").await
}

/// Every process the manifests run: the five stages and the gateway.
fn processes() -> Vec<&'static str> {
    STAGES.iter().copied().chain(["vexxy-gateway"]).collect()
}

fn check_process(objects: &[Value], process: &str) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let deployment = vexxy_deployment(objects, process)?;
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mut fail = |what: String| problems.push(format!("{process}: {what}"));

    let image = container["image"].as_str().unwrap_or("");
    if !image.starts_with("ghcr.io/vexxy/vexxy:") {
        fail(format!("image {image:?} is not ghcr.io/vexxy/vexxy:<tag>"));
    }
    let command = container["command"].clone();
    if command != serde_json::json!([format!("/usr/local/bin/{process}")]) {
        fail(format!(
            "command {command} is not [\"/usr/local/bin/{process}\"]"
        ));
    }
    if pod["serviceAccountName"] != process {
        fail(format!(
            "serviceAccountName {} is not its own ({process})",
            pod["serviceAccountName"]
        ));
    }

    // Restricted security context.
    let pod_security = &pod["securityContext"];
    let container_security = &container["securityContext"];
    for (what, actual, wanted) in [
        (
            "pod runAsNonRoot",
            &pod_security["runAsNonRoot"],
            serde_json::json!(true),
        ),
        (
            "pod seccompProfile",
            &pod_security["seccompProfile"]["type"],
            serde_json::json!("RuntimeDefault"),
        ),
        (
            "allowPrivilegeEscalation",
            &container_security["allowPrivilegeEscalation"],
            serde_json::json!(false),
        ),
        (
            "readOnlyRootFilesystem",
            &container_security["readOnlyRootFilesystem"],
            serde_json::json!(true),
        ),
        (
            "capabilities.drop",
            &container_security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
        ),
    ] {
        if *actual != wanted {
            fail(format!("{what} is {actual}, expected {wanted}"));
        }
    }
    if pod_security["runAsUser"]
        .as_i64()
        .is_none_or(|uid| uid == 0)
    {
        fail("runAsUser must be a non-zero uid".to_string());
    }
    if container["resources"]["requests"].is_null()
        || container["resources"]["limits"]["memory"].is_null()
    {
        fail("resources need requests and a memory limit".to_string());
    }

    // Probes on the port the process serves them on.
    let env = container_env(objects, deployment)?;
    let port_name = if process == "vexxy-gateway" {
        "http"
    } else {
        "health"
    };
    let port = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == port_name)
        .and_then(|p| p["containerPort"].as_i64());
    let listens_on = if process == "vexxy-gateway" {
        env.get("VEXXY_GATEWAY_ADDR")
    } else {
        env.get("VEXXY_HEALTH_ADDR")
    };
    let listened_port = listens_on
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<i64>().ok());
    if port.is_none() || port != listened_port {
        fail(format!(
            "container port {port_name} ({port:?}) differs from the address it listens on ({listens_on:?})"
        ));
    }
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        if get["path"] != path || get["port"] != port_name {
            fail(format!(
                "{probe} is {}, expected GET {path} on port {port_name}",
                container[probe]
            ));
        }
    }

    // SIGKILL must not come before the in-flight jobs were handed back.
    if process != "vexxy-gateway" {
        let grace = env
            .get("VEXXY_SHUTDOWN_GRACE")
            .map(|g| vexxy_runtime::config::parse_duration(g).map_err(anyhow::Error::msg))
            .transpose()?
            .unwrap_or(Duration::from_secs(25));
        let period = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        if period < grace.as_secs() + 10 {
            fail(format!(
                "terminationGracePeriodSeconds {period} leaves less than 10 s after VEXXY_SHUTDOWN_GRACE ({grace:?}) to hand jobs back"
            ));
        }
    }

    // Processes that never call the API hold no token.
    if matches!(process, "vexxy-enrich" | "vexxy-gateway")
        && pod["automountServiceAccountToken"] != false
    {
        fail(
            "must not mount a service-account token (it never calls the Kubernetes API)"
                .to_string(),
        );
    }
    Ok(problems)
}

#[test]
fn every_process_runs_hardened_with_probes_grace_and_its_own_identity() -> Result<()> {
    let mut problems = Vec::new();
    for dir in KUSTOMIZATIONS {
        let objects = render(dir)?;
        for process in processes() {
            problems.extend(
                check_process(&objects, process)?
                    .into_iter()
                    .map(|p| format!("{dir}: {p}")),
            );
            let account = objects.iter().find(|o| {
                kind(o) == "ServiceAccount" && name(o) == process && namespace(o) == Some("vexxy")
            });
            if account.is_none() {
                problems.push(format!("{dir}: no ServiceAccount vexxy/{process}"));
            }
        }
        if dir.ends_with("production") {
            for process in processes() {
                let deployment = vexxy_deployment(&objects, process)?;
                if deployment["spec"]["replicas"].as_i64().unwrap_or(1) < 2 {
                    problems.push(format!("{dir}: {process} runs fewer than 2 replicas"));
                }
                if deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_null() {
                    problems.push(format!("{dir}: {process} has no pod anti-affinity"));
                }
                let budget = find(&objects, "PodDisruptionBudget", process);
                let selects = budget.is_some_and(|b| {
                    b["spec"]["selector"]["matchLabels"]
                        == deployment["spec"]["selector"]["matchLabels"]
                });
                if !selects {
                    problems.push(format!(
                        "{dir}: no PodDisruptionBudget selecting {process}'s pods"
                    ));
                }
            }
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn the_sandbox_namespace_is_labelled_for_pod_security_and_denies_all_traffic() -> Result<()> {
    for dir in KUSTOMIZATIONS {
        let objects = render(dir)?;
        let sandbox = find(&objects, "Namespace", "vexxy-sandbox")
            .with_context(|| format!("{dir}: no Namespace vexxy-sandbox"))?;
        let labels = &sandbox["metadata"]["labels"];
        for (label, value) in [
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/warn", "restricted"),
            ("pod-security.kubernetes.io/audit", "restricted"),
        ] {
            ensure!(
                labels[label] == value,
                "{dir}: vexxy-sandbox label {label} is {}, expected {value}",
                labels[label]
            );
        }
        let policy = objects
            .iter()
            .find(|o| kind(o) == "NetworkPolicy" && namespace(o) == Some("vexxy-sandbox"))
            .with_context(|| format!("{dir}: no NetworkPolicy in vexxy-sandbox"))?;
        let spec = &policy["spec"];
        ensure!(
            spec["podSelector"] == serde_json::json!({})
                && spec["policyTypes"] == serde_json::json!(["Ingress", "Egress"])
                && spec["ingress"].is_null()
                && spec["egress"].is_null(),
            "{dir}: {} does not deny all ingress and egress of every pod: {spec}",
            describe(policy)
        );
        let env = container_env(&objects, vexxy_deployment(&objects, "vexxy-deploy")?)?;
        ensure!(
            env.get("K8S_SANDBOX_NAMESPACE").map(String::as_str) == Some("vexxy-sandbox"),
            "{dir}: deploy's K8S_SANDBOX_NAMESPACE is {:?}, not the labelled namespace",
            env.get("K8S_SANDBOX_NAMESPACE")
        );
    }
    Ok(())
}

#[test]
fn overlays_point_at_their_broker_and_store() -> Result<()> {
    let env_of = |dir: &str| -> Result<std::collections::BTreeMap<String, String>> {
        let objects = render(dir)?;
        container_env(&objects, vexxy_deployment(&objects, "vexxy-extract")?)
    };
    let dev = env_of("deploy/overlays/dev")?;
    assert_eq!(dev["NATS_URL"], "nats://nats.vexxy:4222");
    assert_eq!(dev["AWS_ENDPOINT_URL"], "http://minio.vexxy:9000");
    assert_eq!(dev["VEXXY_KUBESCAPE_AUTO_INSTALL"], "true");
    let production = env_of("deploy/overlays/production")?;
    assert!(
        production["NATS_URL"]
            .split(',')
            .all(|url| url.starts_with("tls://")),
        "{}",
        production["NATS_URL"]
    );
    assert_eq!(production["NATS_TLS_REQUIRED"], "true");
    assert_eq!(production["VEXXY_STREAM_REPLICAS"], "3");
    assert!(
        production
            .get("AWS_ENDPOINT_URL")
            .is_none_or(|e| e.is_empty()),
        "production talks to S3 itself"
    );
    assert_eq!(production["VEXXY_KUBESCAPE_AUTO_INSTALL"], "false");
    // The stages accept these settings: the runtime validates them as a stage would at start
    // (files named by NATS_TLS_CA exist only in the pod, so that one is left out here).
    for env in [&dev, &production] {
        let lookup: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.as_str() != "NATS_TLS_CA")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vexxy_runtime::config::RuntimeConfig::load(&vexxy_runtime::config::Env::from_pairs(
            &lookup,
        ))
        .map_err(|e| {
            anyhow::anyhow!("the rendered configuration is refused by the runtime: {e}")
        })?;
    }
    Ok(())
}
