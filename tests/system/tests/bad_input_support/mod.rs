//! Bad input, end to end through the running stage processes: the scenario shared by
//! `bad_input.rs` (kubesim is the cluster) and `real_bad_input.rs` (a real kube-apiserver,
//! etcd, scheduler, controller-manager and kwok, each stage as its own ServiceAccount under
//! `deploy/base`'s RBAC, the sandbox namespace's Pod Security enforced by the real admission;
//! kubesim is only Kubescape). On the real tier the input that reaches Kubernetes is decided by
//! the real API server: the `$(...)` literals are stored and read back escaped, and a job whose
//! container crash-loops (kwok reports `CrashLoopBackOff`) fails in wait with
//! `container_crash_looping` while the rest of the batch completes.
//!
//! One stack (nats-server, s3s-fs, the cluster, the five stage binaries) runs with a registry
//! allowlist (`VEXXY_REGISTRY_ALLOWLIST=docker.io,ghcr.io,quay.io`) and a 16 KiB request limit
//! (`VEXXY_MAX_REQUEST_BYTES=16384`). Every case of the catalogue below is published on
//! `vexxy.analysis.requested` as raw bytes with its own `Nats-Msg-Id`, exactly as a user would,
//! interleaved with good requests in the same batch. Then, per case:
//!
//! * exactly one `failed` event, from install-check, with the expected machine-readable reason,
//!   `retryable: false`, and a message naming the field at fault and what to do;
//! * the original bytes on `vexxy.dlq.install-check`, byte for byte, with the reason header,
//!   and the `failed` event pointing at it (stream sequence, msg id, dead-letter subject);
//!
//! and for the whole batch: every good job completes (one `completed` event each), the
//! `$(...)` in a good job's env, command and args reaches the Deployment escaped as `$$(` (a
//! literal for Kubernetes) while the job still runs to completion, and all five stage processes
//! are still the same processes (same PID) answering `/healthz`.
//!
//! The stack is started once and the cases run as rows of one table, because nextest runs each
//! test function in its own process (a shared stack per function would mean one stack per case).
//! The report prints every case with PASS/FAIL and the failure lists each failing case by name
//! with what was wrong, so a case is never hidden behind another.
//!
//! A request above the broker's `max_payload` (1 MiB by default) never reaches vexxy: the user's
//! own publish fails with the client's "maximum payload exceeded" error. That is checked here too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use vexxy_events::{AnalysisOutcome, FailureReason as R, JobState, JobStatus, Stage, subjects};
use vexxy_harness::chaos::process_start_ticks;
use vexxy_harness::http_get_status;
use vexxy_harness::realcluster::KwokLifecycles;

use crate::security_support::{
    CheckReport, Outcomes, SandboxCapture, StackOptions, TestStack, dead_letters, publish_raw,
};

const ALLOWLIST: &str = "docker.io,ghcr.io,quay.io";
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(120);
const DLQ_SUBJECT: &str = "vexxy.dlq.install-check";

fn good_body(image_ref: &str, digest: &str, job_id: &str, seconds: u64) -> Value {
    json!({
        "job_id": job_id,
        "image_ref": image_ref,
        "image_digest": digest,
        "config": {"analysis_duration": seconds},
        "labels": {"suite": "bad-input"}
    })
}

/// A valid request to bend into a bad one.
fn base() -> Value {
    json!({
        "image_ref": "ghcr.io/acme/app",
        "image_digest": crate::security_support::digest("abc", '1'),
        "config": {"analysis_duration": 2}
    })
}

fn with(path: &[&str], value: Value) -> Value {
    let mut body = base();
    let mut at = &mut body;
    for key in &path[..path.len() - 1] {
        at = at
            .as_object_mut()
            .unwrap()
            .entry(key.to_string())
            .or_insert(json!({}));
    }
    at[path[path.len() - 1]] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = base();
    body.as_object_mut().unwrap().remove(field);
    body
}

fn cloud_event(specversion: Value, event_type: &str) -> Value {
    json!({
        "specversion": specversion,
        "type": event_type,
        "id": "evt-1",
        "source": "/ci/bad-input",
        "datacontenttype": "application/json",
        "data": base()
    })
}

pub struct Case {
    pub name: &'static str,
    pub body: Vec<u8>,
    reason: R,
    /// Each must appear in the failure message: the field at fault and what to do.
    mentions: Vec<&'static str>,
}

fn case(name: &'static str, body: Value, reason: R, mentions: &[&'static str]) -> Case {
    raw(name, serde_json::to_vec(&body).unwrap(), reason, mentions)
}

fn raw(name: &'static str, body: Vec<u8>, reason: R, mentions: &[&'static str]) -> Case {
    Case {
        name,
        body,
        reason,
        mentions: mentions.to_vec(),
    }
}

/// The catalogue published in one batch. (The job-id conflict and the duplicate of a running
/// job need a job to exist first; they are built in the test.)
pub fn catalogue() -> Vec<Case> {
    let many_env: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("VAR_{i}"), json!("x"))).collect();
    let many_command: Vec<String> = (0..65).map(|i| format!("--flag-{i}")).collect();
    let big_value = "x".repeat(MAX_REQUEST_BYTES + 100);
    let mut duplicate_keys = br#"{"image_ref": "ghcr.io/acme/app", "image_ref": "ghcr.io/acme/other", "image_digest": ""#.to_vec();
    duplicate_keys.extend_from_slice(crate::security_support::digest("abc", '1').as_bytes());
    duplicate_keys.extend_from_slice(b"\"}");
    vec![
        raw(
            "malformed_json_truncated",
            br#"{"image_ref": "ghcr.io/acme/app", "image_digest": "sha256:"#.to_vec(),
            R::MalformedRequest,
            &["not valid JSON", "send one JSON object"],
        ),
        raw(
            "malformed_json_trailing_garbage",
            br#"{"image_ref": "ghcr.io/acme/app"} trailing"#.to_vec(),
            R::MalformedRequest,
            &["not valid JSON"],
        ),
        raw(
            "empty_body",
            Vec::new(),
            R::MalformedRequest,
            &["not valid JSON"],
        ),
        raw(
            "non_utf8_bytes",
            b"{\"image_ref\": \"ghcr.io/acme/\xff\xfeapp\"}".to_vec(),
            R::MalformedRequest,
            &["not valid UTF-8", "offset 28", "UTF-8 encoded JSON"],
        ),
        raw(
            "duplicate_keys",
            duplicate_keys,
            R::MalformedRequest,
            &["duplicate key `image_ref`"],
        ),
        case(
            "body_is_an_array",
            json!([base()]),
            R::InvalidRequest,
            &["JSON array", "must be a JSON object"],
        ),
        case(
            "image_ref_wrong_type",
            with(&["image_ref"], json!(42)),
            R::InvalidRequest,
            &["image_ref", "string"],
        ),
        case(
            "environment_wrong_type",
            with(&["config", "environment"], json!(["A=b"])),
            R::InvalidRequest,
            &["config.environment", "object"],
        ),
        case(
            "command_element_wrong_type",
            with(&["config", "command"], json!(["/app", 7])),
            R::InvalidRequest,
            &["config.command[1]", "string"],
        ),
        case(
            "missing_image_ref",
            without("image_ref"),
            R::MissingField,
            &["image_ref"],
        ),
        case(
            "unknown_top_level_field",
            with(&["priority"], json!("high")),
            R::UnknownField,
            &["priority", "Known fields"],
        ),
        case(
            "misspelt_config_field",
            with(&["config", "analysis_duraton"], json!(60)),
            R::UnknownField,
            &[
                "config.analysis_duraton",
                "Did you mean `config.analysis_duration`?",
            ],
        ),
        case(
            "payload_over_vexxy_limit",
            with(&["labels"], json!({"blob": big_value})),
            R::PayloadTooLarge,
            &["the limit is 16384 bytes"],
        ),
        case(
            "tag_only_reference",
            json!({"image_ref": "ghcr.io/acme/app:1.2.3"}),
            R::MissingDigest,
            &["image_digest", "sha256"],
        ),
        case(
            "digest_uppercase_hex",
            with(
                &["image_digest"],
                json!(format!("sha256:{}", "AB".repeat(32))),
            ),
            R::InvalidDigest,
            &["image_digest", "lowercase"],
        ),
        case(
            "digest_too_short",
            with(&["image_digest"], json!("sha256:abc123")),
            R::InvalidDigest,
            &["image_digest", "64"],
        ),
        case(
            "digest_sha512",
            with(
                &["image_digest"],
                json!(format!("sha512:{}", "a".repeat(128))),
            ),
            R::InvalidDigest,
            &["image_digest", "sha256"],
        ),
        case(
            "reference_with_space",
            with(&["image_ref"], json!("ghcr.io/acme/my app")),
            R::InvalidImageRef,
            &["image_ref"],
        ),
        case(
            "uppercase_repository",
            with(&["image_ref"], json!("ghcr.io/Acme/App")),
            R::InvalidImageRef,
            &["image_ref", "lowercase"],
        ),
        case(
            "registry_port_out_of_range",
            with(&["image_ref"], json!("ghcr.io:99999/acme/app")),
            R::InvalidImageRef,
            &["ghcr.io:99999", "host[:port]"],
        ),
        case(
            "registry_not_on_allowlist",
            with(&["image_ref"], json!("registry.evil.example/acme/app")),
            R::RegistryNotAllowed,
            &[
                "registry.evil.example",
                "allowlist",
                "docker.io, ghcr.io, quay.io",
            ],
        ),
        case(
            "env_name_not_identifier",
            with(&["config", "environment"], json!({"1BAD-NAME": "x"})),
            R::InvalidEnvironment,
            &["1BAD-NAME", "letters, digits and `_`"],
        ),
        case(
            "env_value_yaml_injection",
            with(
                &["config", "environment"],
                json!({"MODE": "x\n---\napiVersion: v1\nkind: Secret"}),
            ),
            R::InvalidEnvironment,
            &["config.environment.MODE", "newline", "printable text"],
        ),
        case(
            "command_yaml_injection",
            with(
                &["config", "command"],
                json!(["/app", "--x\nkind: Secret\nmetadata: {name: stolen}"]),
            ),
            R::InvalidCommand,
            &["config.command[1]", "newline"],
        ),
        case(
            "args_terminal_escape",
            with(&["config", "args"], json!(["\u{1b}[2J\u{1b}[31mOK"])),
            R::InvalidCommand,
            &["config.args[0]", "printable text"],
        ),
        case(
            "env_value_oversized",
            with(
                &["config", "environment"],
                json!({"BLOB": "y".repeat(9000)}),
            ),
            R::InvalidEnvironment,
            &["config.environment.BLOB", "8192 bytes"],
        ),
        case(
            "env_too_many_variables",
            with(&["config", "environment"], Value::Object(many_env)),
            R::InvalidEnvironment,
            &["65 variables", "at most 64"],
        ),
        case(
            "command_too_many_elements",
            with(&["config", "command"], json!(many_command)),
            R::InvalidCommand,
            &["65 elements", "at most 64"],
        ),
        case(
            "duration_zero",
            with(&["config", "analysis_duration"], json!(0)),
            R::InvalidDuration,
            &[
                "config.analysis_duration is zero",
                "whole number of seconds",
            ],
        ),
        case(
            "duration_negative",
            with(&["config", "analysis_duration"], json!(-30)),
            R::InvalidDuration,
            &["negative (-30)"],
        ),
        case(
            "duration_huge",
            with(
                &["config", "analysis_duration"],
                json!(1_000_000_000_000u64),
            ),
            R::InvalidDuration,
            &["too large", "86400"],
        ),
        case(
            "duration_fractional",
            with(&["config", "analysis_duration"], json!(2.5)),
            R::InvalidDuration,
            &["fractional (2.5)"],
        ),
        case(
            "duration_as_string",
            with(&["config", "analysis_duration"], json!("300")),
            R::InvalidDuration,
            &["config.analysis_duration", "string"],
        ),
        case(
            "cloudevent_wrong_specversion",
            cloud_event(json!("0.3"), "io.vexxy.analysis.requested.v1"),
            R::UnsupportedEvent,
            &["specversion", "\"1.0\""],
        ),
        case(
            "cloudevent_wrong_type",
            cloud_event(json!("1.0"), "com.example.build.finished"),
            R::UnsupportedEvent,
            &[
                "com.example.build.finished",
                "io.vexxy.analysis.requested.v1",
            ],
        ),
        case(
            "job_id_invalid",
            with(&["job_id"], json!("Bad_Job!")),
            R::InvalidJobId,
            &["job_id"],
        ),
        case(
            "label_value_injection",
            with(&["labels"], json!({"team": "payments\nadmin: true"})),
            R::InvalidLabels,
            &["labels.team"],
        ),
        case(
            "port_out_of_range",
            with(&["config", "ports"], json!([8080, 70000])),
            R::InvalidPorts,
            &["config.ports[1]", "1 to 65535"],
        ),
    ]
}

/// A valid request: accepted by vexxy, and then run in the cluster.
struct Good {
    msg_id: String,
    job_id: &'static str,
    body: Vec<u8>,
    /// `None`: it completes; else the stage and reason it must fail with (the cluster refused
    /// to run it).
    fails: Option<(Stage, R)>,
}

fn good(job_id: &'static str, body: Value) -> Good {
    Good {
        msg_id: format!("{job_id}.request"),
        job_id,
        body: serde_json::to_vec(&body).unwrap(),
        fails: None,
    }
}

/// The job whose container keeps exiting 1 on the real tier (kwok's crash-loop Stage).
pub const CRASH_LOOP_JOB: &str = "bi-crash-loop";

/// Starts the stack on the cluster `real` asks for (`None`: kubesim) and runs the scenario.
pub async fn run_scenario(prefix: &str, real: bool) -> Result<()> {
    let started = Instant::now();
    let options = StackOptions {
        stage_env: vec![
            ("VEXXY_REGISTRY_ALLOWLIST".into(), ALLOWLIST.into()),
            (
                "VEXXY_MAX_REQUEST_BYTES".into(),
                MAX_REQUEST_BYTES.to_string(),
            ),
        ],
        real_cluster: real.then(|| KwokLifecycles {
            crash_loop_jobs: vec![CRASH_LOOP_JOB.to_string()],
            ..KwokLifecycles::default()
        }),
        ..StackOptions::default()
    };
    let mut stack = TestStack::start(prefix, options, async_nats::ConnectOptions::new()).await?;
    eprintln!(
        "bad input: stack ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let result = run(&mut stack, real).await;
    if let Err(error) = result {
        let diagnostics = stack.diagnostics();
        stack.keep_logs();
        bail!("{error:#}\n\n{diagnostics}");
    }
    eprintln!(
        "bad input: whole test {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Values that look like shell or Kubernetes expansion: accepted (they are data), escaped so
/// Kubernetes leaves them literal.
const SHELL_ENV: &str = "$(cat /etc/shadow)";
const SHELL_ARG: &str = "$(whoami) && rm -rf / ; `id` ${HOME}";

fn good_jobs(real: bool) -> Vec<Good> {
    let cloud = json!({
        "specversion": "1.0",
        "type": "io.vexxy.analysis.requested.v1",
        "id": "ce-good-1",
        "source": "/ci/bad-input",
        "data": good_body("quay.io/bigco/checkout", &crate::security_support::digest("2bad5eed", '3'), "bi-good-cloudevent", 2)
    });
    let mut shell = good_body(
        "docker.io/library/alpine",
        kubesim::catalogue::ALPINE_FIXTURE_DIGEST,
        "bi-good-shell-literal",
        2,
    );
    shell["config"]["environment"] = json!({"PAYLOAD": SHELL_ENV});
    shell["config"]["command"] = json!(["/bin/sh", "-c", "echo $(id)"]);
    shell["config"]["args"] = json!([SHELL_ARG]);
    let mut jobs = vec![
        good(
            "bi-good-plain",
            good_body(
                "ghcr.io/acme/cart",
                &crate::security_support::digest("1c0ffee", '7'),
                "bi-good-plain",
                2,
            ),
        ),
        good("bi-good-cloudevent", cloud),
        good("bi-good-shell-literal", shell),
        // Accepted first; the conflict case reuses its job id for another image.
        good(
            "bi-reused",
            good_body(
                "ghcr.io/acme/cart",
                &crate::security_support::digest("7e57", 'a'),
                "bi-reused",
                2,
            ),
        ),
        // Still running (8 s window) when the same request is submitted again.
        good(
            "bi-running",
            good_body(
                "ghcr.io/acme/cart",
                &crate::security_support::digest("7e57", 'b'),
                "bi-running",
                8,
            ),
        ),
    ];
    if real {
        jobs.push(Good {
            fails: Some((Stage::Wait, R::ContainerCrashLooping)),
            ..good(
                CRASH_LOOP_JOB,
                good_body(
                    "ghcr.io/acme/cart",
                    &crate::security_support::digest("c4a54", 'd'),
                    CRASH_LOOP_JOB,
                    2,
                ),
            )
        });
    }
    jobs
}

async fn run(stack: &mut TestStack, real: bool) -> Result<()> {
    let js = stack.js();
    // The kernel's start time with the pid: a stage restarted onto a reused pid is caught too.
    let pids: Vec<(&str, u32, Option<u64>)> = stack
        .pipeline
        .stages
        .iter()
        .map(|s| {
            (
                s.name,
                s.process.pid(),
                process_start_ticks(s.process.pid()),
            )
        })
        .collect();
    let capture = SandboxCapture::start(stack.kube_client().await?).await?;
    let mut outcomes = Outcomes::subscribe(&js, "bad-input-downstream").await?;
    let kv = js.get_key_value(subjects::STATUS_BUCKET).await?;

    let cases = catalogue();
    let goods = good_jobs(real);
    let mut sequences: BTreeMap<String, u64> = BTreeMap::new();

    // The two jobs the conflict and duplicate cases need go first.
    for job in goods.iter().filter(|g| g.job_id.starts_with("bi-r")) {
        sequences.insert(
            job.msg_id.clone(),
            publish_raw(&js, &job.msg_id, job.body.clone()).await?,
        );
    }
    // The batch: bad cases with the other good jobs interleaved.
    let mut others = goods.iter().filter(|g| !g.job_id.starts_with("bi-r"));
    for (index, case) in cases.iter().enumerate() {
        if index % 12 == 0
            && let Some(job) = others.next()
        {
            sequences.insert(
                job.msg_id.clone(),
                publish_raw(&js, &job.msg_id, job.body.clone()).await?,
            );
        }
        let msg_id = format!("bad-{}", case.name);
        sequences.insert(
            msg_id.clone(),
            publish_raw(&js, &msg_id, case.body.clone()).await?,
        );
    }
    for job in others {
        sequences.insert(
            job.msg_id.clone(),
            publish_raw(&js, &job.msg_id, job.body.clone()).await?,
        );
    }

    // The same job id for a different image, once the first job exists.
    wait_for_job(&kv, "bi-reused", |_| true).await?;
    let conflict = raw(
        "job_id_reused_for_another_image",
        serde_json::to_vec(&good_body(
            "ghcr.io/acme/other",
            &crate::security_support::digest("0be", 'c'),
            "bi-reused",
            2,
        ))?,
        R::JobIdConflict,
        &[
            "bi-reused",
            "already used by a different request",
            "choose a new job_id",
        ],
    );
    // The same request again while its job runs (a new message, not a redelivery).
    wait_for_job(&kv, "bi-running", |s| {
        s.state == JobState::Running && s.stage != Stage::InstallCheck
    })
    .await?;
    let running_body = goods
        .iter()
        .find(|g| g.job_id == "bi-running")
        .unwrap()
        .body
        .clone();
    let duplicate = raw(
        "duplicate_of_running_job",
        running_body,
        R::DuplicateRequest,
        &["bi-running", "already exists", "different job_id"],
    );
    let mut all_cases = cases;
    for case in [conflict, duplicate] {
        let msg_id = format!("bad-{}", case.name);
        sequences.insert(
            msg_id.clone(),
            publish_raw(&js, &msg_id, case.body.clone()).await?,
        );
        all_cases.push(case);
    }

    // Above the broker's max_payload: the user's own publish fails; vexxy never sees it.
    let over_broker_limit = over_max_payload(&js, stack.client.server_info().max_payload).await;

    let expected: Vec<String> = sequences.keys().cloned().collect();
    outcomes
        .collect(&expected, OUTCOME_TIMEOUT, Duration::from_secs(1))
        .await?;
    let letters = dead_letters(&js).await?;

    let mut report = CheckReport::new("bad input", "cases");
    for case in &all_cases {
        let msg_id = format!("bad-{}", case.name);
        let result = check_case(case, &msg_id, sequences[&msg_id], &outcomes, &letters);
        report.add(case.name, result);
    }
    for job in &goods {
        let result = check_good(job, &outcomes, &capture);
        report.add(&format!("good job {}", job.job_id), result);
    }
    report.add("request above the broker's max_payload", over_broker_limit);
    report.add(
        "no outcome for anything not published",
        check_no_strays(&outcomes, &expected),
    );
    report.add(
        "dead letters are exactly the rejected requests and the jobs that must fail",
        check_dead_letter_count(
            &letters,
            all_cases.len() + goods.iter().filter(|job| job.fails.is_some()).count(),
        ),
    );
    report.add(
        "stage processes kept running",
        check_processes(stack, &pids),
    );
    eprintln!(
        "bad input: {} cases, {} good jobs",
        all_cases.len(),
        goods.len()
    );
    report.finish()
}

async fn wait_for_job(
    kv: &async_nats::jetstream::kv::Store,
    job_id: &str,
    ready: impl Fn(&JobStatus) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(bytes) = kv.get(job_id).await? {
            let status: JobStatus = serde_json::from_slice(&bytes)?;
            if ready(&status) {
                return Ok(());
            }
            ensure!(
                !status.state.is_final(),
                "{job_id} ended ({:?} in {}) before the case could be published",
                status.state,
                status.stage
            );
        }
        ensure!(
            Instant::now() < deadline,
            "{job_id} did not reach the expected state within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn over_max_payload(js: &async_nats::jetstream::Context, max_payload: usize) -> Result<()> {
    ensure!(max_payload > 0, "the server announced no max_payload");
    let body = vec![b' '; max_payload + 1];
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "bad-over-broker-max-payload");
    match js
        .publish_with_headers(subjects::REQUESTED, headers, body.into())
        .await
    {
        Ok(_) => bail!(
            "a {} byte publish was accepted by the client",
            max_payload + 1
        ),
        Err(error) => {
            let text = error.to_string();
            eprintln!(
                "bad input: publishing {} bytes fails with: {text}",
                max_payload + 1
            );
            ensure!(
                text.to_lowercase().contains("payload"),
                "the publish error does not say the payload is too big: {text}"
            );
            Ok(())
        }
    }
}

fn check_case(
    case: &Case,
    msg_id: &str,
    sequence: u64,
    outcomes: &Outcomes,
    letters: &[crate::security_support::DeadLetter],
) -> Result<()> {
    let events = outcomes
        .by_msg_id
        .get(msg_id)
        .context("no outcome event at all")?;
    ensure!(
        events.len() == 1,
        "{} outcome events: {events:?}",
        events.len()
    );
    let AnalysisOutcome::Failed(failed) = &events[0] else {
        bail!("completed instead of failed: {:?}", events[0]);
    };
    ensure!(
        failed.reason == case.reason,
        "reason {}, expected {}: {}",
        failed.reason,
        case.reason,
        failed.message
    );
    ensure!(
        failed.stage == Stage::InstallCheck && !failed.retryable,
        "stage {} retryable {}",
        failed.stage,
        failed.retryable
    );
    for mention in &case.mentions {
        ensure!(
            failed.message.contains(mention),
            "the message does not mention {mention:?}: {}",
            failed.message
        );
    }
    ensure!(
        failed.message.len() < 1200 && !failed.message.contains('\n'),
        "the message is not one readable line: {:?}",
        failed.message
    );
    let original = &failed.original;
    ensure!(
        original.stream == subjects::PUBLIC_STREAM
            && original.subject == subjects::REQUESTED
            && original.stream_sequence == sequence
            && original.msg_id.as_deref() == Some(msg_id)
            && original.dead_letter_subject.as_deref() == Some(DLQ_SUBJECT),
        "the failed event points elsewhere: {original:?} (published as sequence {sequence})"
    );
    let copies: Vec<_> = letters
        .iter()
        .filter(|l| l.headers.get("Vexxy-Original-Msg-Id").map(String::as_str) == Some(msg_id))
        .collect();
    ensure!(
        copies.len() == 1,
        "{} dead letters for {msg_id}",
        copies.len()
    );
    let letter = copies[0];
    ensure!(
        letter.subject == DLQ_SUBJECT,
        "dead letter on {}",
        letter.subject
    );
    ensure!(
        letter.payload == case.body,
        "the dead letter is not the original bytes ({} vs {} bytes)",
        letter.payload.len(),
        case.body.len()
    );
    ensure!(
        letter
            .headers
            .get("Vexxy-Dead-Letter-Reason")
            .map(String::as_str)
            == Some(case.reason.as_str())
            && letter.headers.get("Vexxy-Original-Sequence") == Some(&sequence.to_string()),
        "dead-letter headers: {:?}",
        letter.headers
    );
    Ok(())
}

fn check_good(job: &Good, outcomes: &Outcomes, capture: &SandboxCapture) -> Result<()> {
    let events = outcomes
        .by_msg_id
        .get(&job.msg_id)
        .context("no outcome event")?;
    ensure!(
        events.len() == 1,
        "{} outcome events: {events:?}",
        events.len()
    );
    match (&events[0], job.fails) {
        (AnalysisOutcome::Completed(completed), None) => ensure!(
            completed.job_id == job.job_id,
            "completed names job {}",
            completed.job_id
        ),
        (AnalysisOutcome::Failed(failed), Some((stage, reason)))
            if failed.stage == stage && failed.reason == reason =>
        {
            ensure!(
                failed.job_id.as_deref() == Some(job.job_id),
                "failed names job {:?}",
                failed.job_id
            );
        }
        (AnalysisOutcome::Completed(_), Some((stage, reason))) => {
            bail!("completed, but it must fail in {stage} with {reason}")
        }
        (AnalysisOutcome::Failed(failed), _) => bail!(
            "failed in {} with {}: {}",
            failed.stage,
            failed.reason,
            failed.message
        ),
    }
    if job.job_id == "bi-good-shell-literal" {
        let name = format!("vexxy-{}", job.job_id);
        let deployment = capture
            .deployment(&name)
            .with_context(|| format!("the watch never saw Deployment {name}"))?;
        let container = &deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .context("no pod spec")?
            .containers[0];
        let env = container
            .env
            .as_ref()
            .and_then(|env| env.iter().find(|e| e.name == "PAYLOAD"))
            .and_then(|e| e.value.clone());
        ensure!(
            env.as_deref() == Some("$$(cat /etc/shadow)"),
            "env PAYLOAD in the Deployment is {env:?}, expected the escaped literal $$(cat /etc/shadow)"
        );
        ensure!(
            container.command.as_deref()
                == Some(&["/bin/sh".to_string(), "-c".into(), "echo $$(id)".into()][..]),
            "command in the Deployment is {:?}",
            container.command
        );
        let expected_arg = SHELL_ARG.replace("$(", "$$(");
        ensure!(
            container.args.as_deref() == Some(&[expected_arg.clone()][..]),
            "args in the Deployment are {:?}, expected [{expected_arg:?}]",
            container.args
        );
    }
    Ok(())
}

fn check_no_strays(outcomes: &Outcomes, expected: &[String]) -> Result<()> {
    let strays: Vec<&String> = outcomes
        .by_msg_id
        .keys()
        .filter(|id| !expected.contains(id))
        .collect();
    ensure!(
        strays.is_empty(),
        "outcomes for unpublished messages: {strays:?}"
    );
    Ok(())
}

fn check_dead_letter_count(
    letters: &[crate::security_support::DeadLetter],
    cases: usize,
) -> Result<()> {
    ensure!(
        letters.len() == cases,
        "{} dead letters for {cases} requests that were rejected or must fail",
        letters.len()
    );
    Ok(())
}

fn check_processes(stack: &mut TestStack, pids: &[(&str, u32, Option<u64>)]) -> Result<()> {
    let exited = stack.pipeline.exited();
    ensure!(exited.is_empty(), "stages exited: {exited:?}");
    for (name, pid, started) in pids {
        let stage = stack.pipeline.stage(name).context("stage missing")?;
        let started_now = process_start_ticks(stage.process.pid());
        ensure!(
            stage.process.pid() == *pid && started.is_some() && started_now == *started,
            "{name} is a different process now (pid {pid} started at tick {started:?}; now pid {} started at tick {started_now:?})",
            stage.process.pid()
        );
        let port = stage.health_port().context("no health port")?;
        ensure!(
            http_get_status(port, "/healthz") == Some(200),
            "{name} /healthz is not 200"
        );
    }
    Ok(())
}
