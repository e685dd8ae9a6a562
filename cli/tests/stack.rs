//! Every command that talks to vexxy, as a user runs it: the `vexxy` binary against a local stack
//! (nats-server, s3s-fs, kubesim and the five stage binaries as processes), output piped (so plain
//! lines, no spinner), exit codes checked. One stack serves the whole scenario to keep it short:
//! a completed job (alpine fixture, 2 s window) and a failed one (an image whose pull fails).

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use vexxy_harness::stack::{self, KubesimProcess, Pipeline, StackEndpoints};
use vexxy_harness::{NatsServer, S3Server, workspace_root};

struct Stack {
    _dir: tempfile::TempDir,
    nats: NatsServer,
    s3: S3Server,
    _kubesim: KubesimProcess,
    pipeline: Pipeline,
}

fn start() -> Stack {
    stack::build_binaries(&workspace_root()).expect("stack binaries build");
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().unwrap();
    let s3 = S3Server::start().unwrap();
    let args: Vec<String> = [
        "--pod-start-delay-ms",
        "100",
        "--consolidation-delay-ms",
        "200",
        "--scan-delay-ms",
        "200",
    ]
    .map(String::from)
    .to_vec();
    let kubesim = KubesimProcess::start(dir.path(), &args).unwrap();
    let endpoints = StackEndpoints {
        nats_url: nats.url(),
        store: format!("s3://{}", s3.bucket()),
        kubeconfig: kubesim.kubeconfig().to_path_buf(),
    };
    let aws = s3.aws_env();
    let mut pipeline = Pipeline::start(dir.path(), |_, health| {
        let mut env = stack::local_stage_env(&endpoints, health, 1);
        env.extend(aws.iter().cloned());
        for (k, v) in [
            ("VEXXY_ACK_WAIT", "5s"),
            ("VEXXY_RETRY_BASE_DELAY", "200ms"),
            ("VEXXY_RETRY_MAX_DELAY", "1s"),
            ("VEXXY_PULL_EXPIRES", "1s"),
            ("VEXXY_VEX_SETTLE", "1s"),
            ("VEXXY_WAIT_GRACE", "20s"),
            ("VEXXY_ON_TIMEOUT", "fail"),
            ("SANDBOX_CPU_REQUEST", "100m"),
            ("SANDBOX_MEMORY_REQUEST", "128Mi"),
        ] {
            env.push((k.into(), v.into()));
        }
        env
    })
    .unwrap();
    if let Err(e) = pipeline.wait_ready(Duration::from_secs(60)) {
        panic!("{e}\n{}", pipeline.log_tails(20));
    }
    Stack {
        _dir: dir,
        nats,
        s3,
        _kubesim: kubesim,
        pipeline,
    }
}

impl Stack {
    fn vexxy(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vexxy"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NATS_URL", self.nats.url())
            .env("VEXXY_STORE", format!("s3://{}", self.s3.bucket()))
            .env("VEXXY_MIN_ANALYSIS_DURATION", "1");
        command.envs(self.s3.aws_env());
        let output = command.output().expect("vexxy runs");
        eprintln!(
            "$ vexxy {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_against_a_running_stack() {
    let mut stack = start();
    let alpine = format!(
        "docker.io/library/alpine@{}",
        kubesim::catalogue::ALPINE_FIXTURE_DIGEST
    );

    // Local validation: a rejected request never reaches NATS, exit 2 with the reason.
    let rejected = stack.vexxy(&["submit", "alpine:3.19"]);
    assert_eq!(rejected.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("missing_digest"));

    // submit --wait: the job id on stdout, plain progress lines (piped), exit 0 on completion.
    let submitted = stack.vexxy(&[
        "submit",
        &alpine,
        "--duration",
        "2",
        "--label",
        "suite=cli",
        "--msg-id",
        "cli-alpine",
        "--wait",
        "--timeout",
        "90s",
    ]);
    let job = vexxy_events::derive_job_id(b"", Some("cli-alpine"));
    if !submitted.status.success() {
        panic!("submit --wait failed\n{}", stack.pipeline.log_tails(30));
    }
    let out = stdout(&submitted);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(job.as_str()), "the job id comes first");
    let progress: Vec<&str> = lines.collect();
    assert!(
        progress
            .iter()
            .all(|l| l.starts_with(&job) && !l.contains('\r')),
        "plain lines: {progress:?}"
    );
    assert!(
        progress.last().unwrap().contains("completed"),
        "{progress:?}"
    );

    // status -o json, watch of a finished job (exit 0 at once).
    let status: Value =
        serde_json::from_slice(&stack.vexxy(&["status", &job, "-o", "json"]).stdout).unwrap();
    assert_eq!(status["state"], "completed");
    assert_eq!(stack.vexxy(&["watch", &job]).status.code(), Some(0));

    // results: the four documents downloaded; the CycloneDX VEX is there.
    let out_dir = tempfile::tempdir().unwrap();
    let results = stack.vexxy(&[
        "results",
        &job,
        "--out",
        out_dir.path().to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(results.status.success());
    for name in [
        "vex.openvex.json",
        "vex.cdx.json",
        "sbom.filtered.json",
        "summary.json",
    ] {
        let text = std::fs::read_to_string(out_dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    }
    let cdx: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("vex.cdx.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cdx["specVersion"], "1.6");

    // A failing job: watch exits 1 with the reason.
    let failing = stack.vexxy(&["submit", "quay.io/bigco/pull-fail-app@sha256:5eed444444444444444444444444444444444444444444444444444444444444", "--duration", "2", "--job-id", "cli-pull-fail"]);
    assert!(failing.status.success());
    let watched = stack.vexxy(&["watch", "cli-pull-fail", "--timeout", "90s"]);
    assert_eq!(watched.status.code(), Some(1), "a failed job exits 1");
    assert!(String::from_utf8_lossy(&watched.stderr).contains("image_pull_failed"));
    let results_of_failed = stack.vexxy(&["results", "cli-pull-fail"]);
    assert_eq!(results_of_failed.status.code(), Some(1));

    // list: both jobs with their state; table and yaml.
    let table = stdout(&stack.vexxy(&["list"]));
    assert!(table.starts_with("JOB"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&job) && l.contains("completed")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("cli-pull-fail")
            && l.contains("failed")
            && l.contains("image_pull_failed")),
        "{table}"
    );
    let yaml = stdout(&stack.vexxy(&["list", "-o", "yaml"]));
    assert!(
        yaml.contains("state: completed") && yaml.contains("state: failed"),
        "{yaml}"
    );

    // subscribe: replay both outcomes from the stream, one JSON line each; a durable resumes.
    let events = stack.vexxy(&[
        "subscribe",
        "--all",
        "--count",
        "2",
        "-o",
        "json",
        "--durable",
        "cli-test",
    ]);
    assert!(events.status.success());
    let outcomes: Vec<Value> = stdout(&events)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let results: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|o| (o["job_id"].as_str().unwrap(), o["result"].as_str().unwrap()))
        .collect();
    assert!(
        results.contains(&(job.as_str(), "completed")),
        "{results:?}"
    );
    assert!(
        results.contains(&("cli-pull-fail", "image_pull_failed")),
        "{results:?}"
    );

    // Unknown job and unreachable NATS: exit 2 and 3, each saying what to do.
    let unknown = stack.vexxy(&["status", "no-such-job"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("vexxy list"));
    let down = stack.vexxy(&[
        "list",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--connect-timeout",
        "1s",
    ]);
    assert_eq!(down.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cargo xtask up"));
    stack.pipeline.terminate(Duration::from_secs(5));
}
