//! compose/: the files validate against the official Compose Specification JSON schema, and the
//! stack they describe is wired as the issue asks (JetStream on a volume, the bucket created
//! before the stages start, health-gated start order, the kubeconfig read-only, commands naming
//! binaries the image ships).

mod deploy_manifests_support;

use anyhow::{Context, Result, ensure};
use deploy_manifests_support::{dockerfile_binaries, read_yaml, root};
use serde_json::Value;
use vexxy_harness::stack::STAGES;

fn compose_schema() -> Result<jsonschema::Validator> {
    let path = std::path::Path::new("/work/shared/reference/schemas/compose-spec.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the Compose Specification schema {}",
                path.display()
            )
        })?)?;
    jsonschema::draft7::new(&schema)
        .map_err(|e| anyhow::anyhow!("the compose schema does not compile: {e}"))
}

fn validate(file: &str) -> Result<Value> {
    let document = read_yaml(&root().join(file))?;
    let validator = compose_schema()?;
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("  at {}: {}", e.instance_path(), e))
        .collect();
    ensure!(
        errors.is_empty(),
        "{file} does not validate against the Compose Specification:\n{}",
        errors.join("\n")
    );
    Ok(document)
}

#[test]
fn the_compose_files_validate_against_the_compose_specification() -> Result<()> {
    validate("compose/docker-compose.yml")?;
    validate("compose/docker-compose.kind.yml")?;
    Ok(())
}

#[test]
fn the_schema_check_rejects_a_broken_file() -> Result<()> {
    let validator = compose_schema()?;
    let broken: Value = serde_json::json!({"services": {"nats": {"image": "nats", "depends_on": {"x": {"condition": "service_ready"}}}}});
    ensure!(
        !validator.is_valid(&broken),
        "an unknown depends_on condition must be rejected"
    );
    let unknown: Value = serde_json::json!({"services": {"nats": {"image": "nats", "healthcheck": {"command": "true"}}}});
    ensure!(
        !validator.is_valid(&unknown),
        "an unknown healthcheck field must be rejected"
    );
    Ok(())
}

#[test]
fn the_stack_is_wired_for_one_command_start() -> Result<()> {
    let compose = validate("compose/docker-compose.yml")?;
    let services = compose["services"].as_object().context("no services")?;
    let shipped = dockerfile_binaries()?;
    let mut problems = Vec::new();

    let nats = &services["nats"];
    let nats_command = nats["command"].to_string();
    if !nats_command.contains("--jetstream") || !nats_command.contains("/data") {
        problems.push(format!(
            "nats must run JetStream storing in /data: {nats_command}"
        ));
    }
    if !nats["volumes"].to_string().contains("nats-data:/data") {
        problems.push(
            "nats' /data must be the named volume nats-data (JetStream survives restarts)".into(),
        );
    }
    if !nats["healthcheck"]["test"]
        .to_string()
        .contains(":8222/healthz")
    {
        problems.push("nats' healthcheck must ask the monitoring port's /healthz".into());
    }
    let init = services["minio-init"].to_string();
    if !init.contains("mc") || !init.contains("mb") {
        problems.push("minio-init must create the bucket with mc mb".into());
    }

    let vexxy: Vec<(&str, &str)> = STAGES
        .iter()
        .map(|binary| (binary.trim_start_matches("vexxy-"), *binary))
        .chain([("gateway", "vexxy-gateway")])
        .collect();
    for (service_name, binary) in vexxy {
        let Some(service) = services.get(service_name) else {
            problems.push(format!("no service {service_name}"));
            continue;
        };
        let command = service["command"]
            .as_array()
            .and_then(|c| c.first())
            .and_then(Value::as_str)
            .unwrap_or("");
        if command != format!("/usr/local/bin/{binary}") || !shipped.iter().any(|b| b == binary) {
            problems.push(format!(
                "{service_name}: command {command:?} is not the image's /usr/local/bin/{binary}"
            ));
        }
        if service["build"]["dockerfile"] != "Dockerfile" || service["build"]["context"] != ".." {
            problems.push(format!(
                "{service_name}: must be built from the repository's Dockerfile"
            ));
        }
        for (dependency, condition) in [
            ("nats", "service_healthy"),
            ("minio-init", "service_completed_successfully"),
        ] {
            if service["depends_on"][dependency]["condition"] != condition {
                problems.push(format!(
                    "{service_name}: must depend on {dependency} with {condition}"
                ));
            }
        }
        if !service["healthcheck"]["test"]
            .to_string()
            .contains("/readyz")
        {
            problems.push(format!("{service_name}: healthcheck must ask /readyz"));
        }
        let environment = &service["environment"];
        let store = environment["VEXXY_STORE"].as_str().unwrap_or("");
        if !store.contains("vexxy-analyses") || !init.contains("vexxy-analyses") {
            problems.push(format!(
                "{service_name}: VEXXY_STORE {store:?} is not the bucket minio-init creates"
            ));
        }
        let talks_to_kubernetes = !matches!(service_name, "enrich" | "gateway");
        if talks_to_kubernetes {
            let mounts = service["volumes"].to_string();
            if !mounts.contains(":/home/nonroot/.kube/config:ro") {
                problems.push(format!("{service_name}: the kubeconfig must be mounted read-only at /home/nonroot/.kube/config"));
            }
            if environment["K8S_IN_CLUSTER"] != "false"
                || environment["KUBECONFIG"] != "/home/nonroot/.kube/config"
            {
                problems.push(format!("{service_name}: K8S_IN_CLUSTER=false and KUBECONFIG=/home/nonroot/.kube/config are required"));
            }
        } else if service["volumes"] != serde_json::json!([]) {
            problems.push(format!(
                "{service_name}: never calls Kubernetes and must not get the kubeconfig"
            ));
        }
        if service["read_only"] != true || service["cap_drop"] != serde_json::json!(["ALL"]) {
            problems.push(format!(
                "{service_name}: must run read-only with all capabilities dropped"
            ));
        }
        // The runtime accepts the configuration (compose's ${VAR:-default} resolved to defaults).
        let resolved: Vec<(String, String)> = environment
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| !key.starts_with("KUBECONFIG"))
            .map(|(key, value)| (key.clone(), resolve_defaults(value.as_str().unwrap_or(""))))
            .collect();
        if let Err(error) = vexxy_runtime::config::RuntimeConfig::load(
            &vexxy_runtime::config::Env::from_pairs(&resolved),
        ) {
            problems.push(format!(
                "{service_name}: the runtime refuses its environment: {error}"
            ));
        }
    }
    ensure!(
        problems.is_empty(),
        "compose/docker-compose.yml:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// `${NAME:-default}` → `default` (what compose substitutes when NAME is unset).
fn resolve_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn defaults_resolve_like_compose() {
    assert_eq!(
        resolve_defaults("s3://${B:-vexxy-analyses}"),
        "s3://vexxy-analyses"
    );
    assert_eq!(resolve_defaults("${UNSET}x"), "x");
    assert_eq!(resolve_defaults("plain"), "plain");
}
