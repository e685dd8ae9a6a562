//! Security of a real run: credentials never leak, and the sandbox is locked down.
//!
//! One stack (nats-server requiring a user and password, s3s-fs with its own keys, kubesim, the
//! five stage binaries) runs real analyses with distinctive secret values: the NATS password and
//! the S3 secret key are random strings that appear nowhere but in the stages' environment. Then:
//!
//! * **No credential leaks.** Every stage's log file, every message (payload and headers) on the
//!   three streams (VEXXY_ANALYSIS, VEXXY_PIPELINE, VEXXY_DEAD_LETTER), every value in the job
//!   KV bucket, every object stored in S3 and the sandbox objects created in the cluster are
//!   scanned for both secrets. The scan is shown to look at real content: logs must name the
//!   configured options (`aws_secret_access_key`, `UserPassword`) whose values are redacted, and
//!   each source must be non-empty.
//! * **Sandbox hardening** on the Deployment the deploy stage created for a real run (captured by
//!   a watch as it appeared; extract deletes it afterwards): no service-account token, no service
//!   links, CPU/memory/ephemeral-storage limits, no privilege escalation, not privileged,
//!   capabilities dropped, seccomp RuntimeDefault (pod and container); the deny-all-egress
//!   NetworkPolicy (`VEXXY_SANDBOX_DENY_EGRESS=true`) selecting exactly the job's pod; the sandbox
//!   namespace, created by vexxy, labelled for Pod Security admission.
//! * **Only digest-pinned images run**: the Deployment's and the pod's image is
//!   `repository@sha256:<digest>` even when the request named a tag; a registry not on
//!   `VEXXY_REGISTRY_ALLOWLIST` is refused and never reaches the cluster.
//!
//! Each check is reported by name (PASS/FAIL), and a failure lists every failing check.

mod security_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use serde_json::json;
use vexxy_events::{AnalysisOutcome, FailureReason, subjects};

use security_support::{
    CheckReport, DeadLetter, Outcomes, SANDBOX_NAMESPACE, SandboxCapture, StackOptions, TestStack,
    all_messages, publish_raw,
};

const NATS_USER: &str = "vexxy-stages";
const NATS_PASSWORD: &str = "nats-pw-7d1f9c2e44b0-do-not-log";
const S3_ACCESS_KEY: &str = "vexxy-security-access";
const S3_SECRET_KEY: &str = "s3-secret-91b3e0d4c7a2-do-not-log";
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_leaks_no_credentials_and_runs_only_pinned_images_in_a_hardened_sandbox()
-> Result<()> {
    let started = Instant::now();
    let options = StackOptions {
        nats_args: ["--user", NATS_USER, "--pass", NATS_PASSWORD]
            .map(String::from)
            .to_vec(),
        nats_auth_env: vec![
            ("NATS_USER".into(), NATS_USER.into()),
            ("NATS_PASSWORD".into(), NATS_PASSWORD.into()),
        ],
        s3_access_key: S3_ACCESS_KEY.into(),
        s3_secret_key: S3_SECRET_KEY.into(),
        stage_env: vec![
            ("VEXXY_SANDBOX_DENY_EGRESS".into(), "true".into()),
            (
                "VEXXY_REGISTRY_ALLOWLIST".into(),
                "docker.io,ghcr.io,quay.io".into(),
            ),
            // Debug logging everywhere: the most a stage ever writes must still hold no secret.
            ("RUST_LOG".into(), "debug".into()),
        ],
        real_cluster: None,
    };
    let connect =
        async_nats::ConnectOptions::with_user_and_password(NATS_USER.into(), NATS_PASSWORD.into());
    let mut stack = TestStack::start("vexxy-security-", options, connect).await?;
    eprintln!(
        "security: stack ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let result = run(&mut stack).await;
    if let Err(error) = result {
        let diagnostics = stack.diagnostics();
        stack.keep_logs();
        bail!("{error:#}\n\n{diagnostics}");
    }
    eprintln!(
        "security: whole test {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Job {
    job_id: &'static str,
    body: serde_json::Value,
}

fn jobs() -> Vec<Job> {
    vec![
        // Named by tag and digest: the sandbox must run the digest.
        Job {
            job_id: "sec-tagged",
            body: json!({
                "job_id": "sec-tagged",
                "image_ref": "ghcr.io/acme/cart:v1.2.3",
                "image_digest": security_support::digest("5ec", '1'),
                "config": {"analysis_duration": 2, "environment": {"LOG_LEVEL": "debug"}}
            }),
        },
        Job {
            job_id: "sec-alpine",
            body: json!({
                "job_id": "sec-alpine",
                "image_ref": "docker.io/library/alpine",
                "image_digest": kubesim::catalogue::ALPINE_FIXTURE_DIGEST,
                "config": {"analysis_duration": 2}
            }),
        },
        Job {
            job_id: "sec-not-allowed",
            body: json!({
                "job_id": "sec-not-allowed",
                "image_ref": "registry.attacker.example/acme/cart",
                "image_digest": security_support::digest("ba4", '2'),
                "config": {"analysis_duration": 2}
            }),
        },
    ]
}

async fn run(stack: &mut TestStack) -> Result<()> {
    let js = stack.js();
    let kube = stack.kube_client().await?;
    let capture = SandboxCapture::start(kube.clone()).await?;
    // VEXXY_PIPELINE is a work queue (acked tickets are removed), so its traffic is recorded
    // on the wire as it passes.
    let wire = record_wire(&stack.client, "vexxy.pipeline.>").await?;
    let mut outcomes = Outcomes::subscribe(&js, "security-downstream").await?;
    let jobs = jobs();
    let mut expected = Vec::new();
    for job in &jobs {
        let msg_id = format!("{}.request", job.job_id);
        publish_raw(&js, &msg_id, serde_json::to_vec(&job.body)?).await?;
        expected.push(msg_id);
    }
    outcomes
        .collect(&expected, OUTCOME_TIMEOUT, Duration::from_millis(500))
        .await?;
    let outcome = |job_id: &str| -> Result<AnalysisOutcome> {
        let events = outcomes
            .by_msg_id
            .get(&format!("{job_id}.request"))
            .with_context(|| format!("no outcome for {job_id}"))?;
        ensure!(events.len() == 1, "{job_id}: {} outcomes", events.len());
        Ok(events[0].clone())
    };

    let mut report = CheckReport::new("security", "checks");
    report.add("analyses complete over an authenticated NATS connection", {
        let mut result = Ok(());
        for id in ["sec-tagged", "sec-alpine"] {
            match outcome(id) {
                Ok(AnalysisOutcome::Completed(_)) => {}
                Ok(AnalysisOutcome::Failed(failed)) => {
                    result = Err(anyhow::anyhow!(
                        "{id} failed: {} {}",
                        failed.reason,
                        failed.message
                    ));
                }
                Err(error) => result = Err(error),
            }
        }
        result
    });
    report.add(
        "a registry not on the allowlist is refused before the cluster",
        check_not_allowed(outcome("sec-not-allowed"), &capture),
    );

    // Hardening and pinning, on what the deploy stage really created.
    report.add(
        "sandbox Deployment is hardened",
        check_hardened(&capture, "sec-tagged"),
    );
    report.add(
        "only digest-pinned images run (Deployment and pod)",
        check_pinned(&capture),
    );
    report.add(
        "deny-all-egress NetworkPolicy per analysis",
        check_egress_policy(&capture, "sec-tagged"),
    );
    report.add(
        "sandbox namespace labelled for Pod Security admission",
        check_namespace(&kube).await,
    );

    // The secret scan.
    let secrets = [
        ("NATS password", NATS_PASSWORD),
        ("S3 secret key", S3_SECRET_KEY),
    ];
    let stage_logs: Vec<_> = stack
        .pipeline
        .stages
        .iter()
        .map(|s| s.process.log_path().to_path_buf())
        .collect();
    report.add(
        "no secret in any stage log (debug level)",
        scan_logs(&stage_logs, &secrets),
    );
    report.add(
        "logs show the credentials were configured (redacted), so the scan is not vacuous",
        check_redaction_visible(&stage_logs),
    );
    report.add(
        "no secret in VEXXY_ANALYSIS events",
        scan_stream(&js, subjects::PUBLIC_STREAM, &secrets).await,
    );
    report.add(
        "no secret in VEXXY_PIPELINE tickets (recorded as they passed)",
        scan_messages("vexxy.pipeline.>", &wire.lock().unwrap(), &secrets),
    );
    report.add(
        "no secret in VEXXY_DEAD_LETTER",
        scan_stream(&js, subjects::DEAD_LETTER_STREAM, &secrets).await,
    );
    report.add(
        "no secret in the job KV bucket",
        scan_stream(&js, &format!("KV_{}", subjects::STATUS_BUCKET), &secrets).await,
    );
    report.add(
        "no secret in the stored artifacts",
        scan_dir(&stack.s3.root, &secrets),
    );
    report.add(
        "no secret in the sandbox objects sent to the cluster",
        scan_capture(&capture, &secrets),
    );
    report.finish()
}

fn check_not_allowed(outcome: Result<AnalysisOutcome>, capture: &SandboxCapture) -> Result<()> {
    let AnalysisOutcome::Failed(failed) = outcome? else {
        bail!("the disallowed image completed");
    };
    ensure!(
        failed.reason == FailureReason::RegistryNotAllowed,
        "reason {}: {}",
        failed.reason,
        failed.message
    );
    ensure!(
        capture.deployment("vexxy-sec-not-allowed").is_none(),
        "a Deployment was created for the disallowed image"
    );
    Ok(())
}

fn check_hardened(capture: &SandboxCapture, job_id: &str) -> Result<()> {
    let name = format!("vexxy-{job_id}");
    let deployment = capture
        .deployment(&name)
        .with_context(|| format!("the watch never saw Deployment {name}"))?;
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("no pod template")?;
    ensure!(
        pod.automount_service_account_token == Some(false),
        "automountServiceAccountToken is {:?}",
        pod.automount_service_account_token
    );
    ensure!(
        pod.enable_service_links == Some(false),
        "enableServiceLinks is {:?}",
        pod.enable_service_links
    );
    let pod_seccomp = pod
        .security_context
        .as_ref()
        .and_then(|c| c.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    ensure!(
        pod_seccomp == Some("RuntimeDefault"),
        "pod seccomp {pod_seccomp:?}"
    );
    ensure!(
        pod.containers.len() == 1,
        "{} containers",
        pod.containers.len()
    );
    let container = &pod.containers[0];
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .context("no resource limits")?;
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        ensure!(
            limits.contains_key(resource),
            "no {resource} limit: {limits:?}"
        );
    }
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .context("no resource requests")?;
    ensure!(
        requests.contains_key("cpu") && requests.contains_key("memory"),
        "requests {requests:?}"
    );
    let security = container
        .security_context
        .as_ref()
        .context("no container securityContext")?;
    ensure!(
        security.allow_privilege_escalation == Some(false),
        "allowPrivilegeEscalation {:?}",
        security.allow_privilege_escalation
    );
    ensure!(
        security.privileged == Some(false),
        "privileged {:?}",
        security.privileged
    );
    let dropped = security
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    ensure!(dropped == ["ALL"], "capabilities dropped: {dropped:?}");
    let added = security
        .capabilities
        .as_ref()
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    ensure!(added.is_empty(), "capabilities added: {added:?}");
    let seccomp = security.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    ensure!(
        seccomp == Some("RuntimeDefault"),
        "container seccomp {seccomp:?}"
    );
    ensure!(
        pod.host_network != Some(true) && pod.host_pid != Some(true) && pod.host_ipc != Some(true),
        "host namespaces shared"
    );
    ensure!(
        pod.volumes
            .as_ref()
            .is_none_or(|v| v.iter().all(|v| v.host_path.is_none())),
        "a hostPath volume is mounted"
    );
    Ok(())
}

fn check_pinned(capture: &SandboxCapture) -> Result<()> {
    let expected = [
        (
            "sec-tagged",
            format!("ghcr.io/acme/cart@{}", security_support::digest("5ec", '1')),
        ),
        (
            "sec-alpine",
            format!(
                "docker.io/library/alpine@{}",
                kubesim::catalogue::ALPINE_FIXTURE_DIGEST
            ),
        ),
    ];
    for (job_id, image) in &expected {
        let deployment = capture
            .deployment(&format!("vexxy-{job_id}"))
            .with_context(|| format!("no Deployment seen for {job_id}"))?;
        let deployed = deployment
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
        ensure!(
            deployed.as_deref() == Some(image.as_str()),
            "{job_id}: Deployment image {deployed:?}, expected {image}"
        );
        let pods = capture.pods.lock().unwrap().clone();
        let pod_images: Vec<String> = pods
            .values()
            .filter(|pod| {
                pod.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("vexxy.io/job-id"))
                    .map(String::as_str)
                    == Some(*job_id)
            })
            .flat_map(|pod| pod.spec.iter().flat_map(|s| s.containers.iter()))
            .filter_map(|c| c.image.clone())
            .collect();
        ensure!(!pod_images.is_empty(), "{job_id}: no pod seen");
        ensure!(
            pod_images.iter().all(|i| i == image),
            "{job_id}: pod images {pod_images:?}, expected {image}"
        );
    }
    // Every image that ran at all is pinned.
    for pod in capture.pods.lock().unwrap().values() {
        for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let image = container.image.clone().unwrap_or_default();
            let pinned = image.rsplit_once("@sha256:").is_some_and(|(_, hex)| {
                hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
            ensure!(
                pinned,
                "pod {:?} runs unpinned image {image}",
                pod.metadata.name
            );
        }
    }
    Ok(())
}

fn check_egress_policy(capture: &SandboxCapture, job_id: &str) -> Result<()> {
    let name = format!("vexxy-{job_id}");
    let policy = capture
        .policy(&name)
        .with_context(|| format!("no NetworkPolicy {name} seen"))?;
    let spec = policy.spec.context("NetworkPolicy without spec")?;
    ensure!(
        spec.policy_types.as_deref() == Some(&["Egress".to_string()][..]),
        "policyTypes {:?}",
        spec.policy_types
    );
    ensure!(
        spec.egress.as_ref().is_some_and(Vec::is_empty),
        "egress rules {:?} (deny-all has none)",
        spec.egress
    );
    let selector = spec
        .pod_selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    ensure!(
        selector.get("vexxy.io/job-id").map(String::as_str) == Some(job_id),
        "the policy selects {selector:?}, not the job's pod"
    );
    Ok(())
}

async fn check_namespace(kube: &kube::Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    let namespace = namespaces
        .get(SANDBOX_NAMESPACE)
        .await
        .context("the sandbox namespace does not exist")?;
    let labels = namespace.metadata.labels.unwrap_or_default();
    let label = |key: &str| labels.get(key).map(String::as_str);
    ensure!(
        label("pod-security.kubernetes.io/enforce") == Some("baseline")
            && label("pod-security.kubernetes.io/warn") == Some("restricted")
            && label("pod-security.kubernetes.io/audit") == Some("restricted"),
        "Pod Security labels {labels:?}"
    );
    Ok(())
}

fn find_secrets(haystack: &[u8], secrets: &[(&str, &str)]) -> Vec<String> {
    secrets
        .iter()
        .filter(|(_, value)| {
            haystack
                .windows(value.len())
                .any(|window| window == value.as_bytes())
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

fn scan_logs(files: &[std::path::PathBuf], secrets: &[(&str, &str)]) -> Result<()> {
    let mut total = 0;
    for file in files {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        ensure!(!bytes.is_empty(), "{} is empty", file.display());
        total += bytes.len();
        let found = find_secrets(&bytes, secrets);
        ensure!(found.is_empty(), "{} contains {found:?}", file.display());
    }
    eprintln!(
        "security: scanned {} stage logs, {total} bytes",
        files.len()
    );
    Ok(())
}

fn check_redaction_visible(files: &[std::path::PathBuf]) -> Result<()> {
    for file in files {
        let text = std::fs::read_to_string(file)?;
        ensure!(
            text.contains("aws_secret_access_key") && text.contains("UserPassword"),
            "{} does not show the configured (redacted) credentials; the scan may be looking at \
             the wrong thing",
            file.display()
        );
    }
    Ok(())
}

type Recorded = Arc<Mutex<Vec<DeadLetter>>>;

/// Records every message published on `subject` from now on (a core NATS subscription).
async fn record_wire(client: &async_nats::Client, subject: &str) -> Result<Recorded> {
    let mut subscription = client.subscribe(subject.to_string()).await?;
    client.flush().await?;
    let recorded: Recorded = Arc::default();
    let sink = recorded.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            let headers = message
                .headers
                .as_ref()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|(name, values)| {
                            let value: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                            (name.to_string(), value.join(","))
                        })
                        .collect()
                })
                .unwrap_or_default();
            sink.lock().unwrap().push(DeadLetter {
                subject: message.subject.to_string(),
                payload: message.payload.to_vec(),
                headers,
            });
        }
    });
    Ok(recorded)
}

async fn scan_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
    secrets: &[(&str, &str)],
) -> Result<()> {
    let messages = all_messages(js, stream).await?;
    scan_messages(stream, &messages, secrets)
}

fn scan_messages(stream: &str, messages: &[DeadLetter], secrets: &[(&str, &str)]) -> Result<()> {
    ensure!(!messages.is_empty(), "{stream} holds no messages");
    for message in messages {
        let mut bytes = message.payload.clone();
        for (name, value) in &message.headers {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(value.as_bytes());
        }
        let found = find_secrets(&bytes, secrets);
        ensure!(
            found.is_empty(),
            "a message on {} contains {found:?}",
            message.subject
        );
    }
    eprintln!("security: scanned {} messages of {stream}", messages.len());
    Ok(())
}

fn scan_dir(root: &Path, secrets: &[(&str, &str)]) -> Result<()> {
    let mut files = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        ensure!(files < 100_000, "too many files under {}", root.display());
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                let found = find_secrets(&std::fs::read(&path)?, secrets);
                ensure!(found.is_empty(), "{} contains {found:?}", path.display());
            }
        }
    }
    ensure!(files > 0, "no artifacts stored under {}", root.display());
    eprintln!("security: scanned {files} stored objects");
    Ok(())
}

fn scan_capture(capture: &SandboxCapture, secrets: &[(&str, &str)]) -> Result<()> {
    let objects = serde_json::to_vec(&(
        &*capture.deployments.lock().unwrap(),
        &*capture.policies.lock().unwrap(),
        &*capture.pods.lock().unwrap(),
    ))?;
    let found = find_secrets(&objects, secrets);
    ensure!(found.is_empty(), "sandbox objects contain {found:?}");
    Ok(())
}
