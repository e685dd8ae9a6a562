//! The real entry point (`vexxy_runtime::run`) in a real process: environment configuration,
//! exit codes, SIGTERM.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use vexxy_events::{Stage, subjects};
use vexxy_harness::{ChildProcess, NatsServer, wait_until};

use crate::support::*;

/// The runtime's example stage binary, built by cargo for these tests.
fn example_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vexxy-example-stage"))
}

fn stage_command(envs: &[(&str, String)]) -> Command {
    let mut command = Command::new(example_binary());
    command.env_clear();
    for (name, value) in envs {
        command.env(name, value);
    }
    command
}

#[test]
fn a_configuration_error_names_the_variable_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stage.log");
    let command = stage_command(&[("VEXXY_ACK_WAIT", "soon".to_string())]);
    let mut stage = ChildProcess::spawn("pass-through stage", command, &log).unwrap();
    let status = stage
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("exits at once");
    assert_eq!(status.code(), Some(2));
    let output = stage.logs();
    assert!(output.contains("VEXXY_ACK_WAIT"), "{output}");
    assert_eq!(output.trim().lines().count(), 1, "one clear line: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_process_consumes_and_exits_0_on_sigterm() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("health.addr");
    let command = stage_command(&[
        ("NATS_URL", nats.url()),
        (
            "VEXXY_STORE",
            format!("file://{}", dir.path().join("store").display()),
        ),
        ("VEXXY_HEALTH_ADDR", "127.0.0.1:0".to_string()),
        ("VEXXY_HEALTH_ADDR_FILE", addr_file.display().to_string()),
        ("VEXXY_LOG_FORMAT", "json".to_string()),
        ("VEXXY_PULL_EXPIRES", "1s".to_string()),
        ("RUST_LOG", "info".to_string()),
    ]);
    let mut stage =
        ChildProcess::spawn("pass-through stage", command, &dir.path().join("stage.log")).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || addr_file.is_file()),
        "{}",
        stage.logs()
    );
    let addr: std::net::SocketAddr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .parse()
        .unwrap();
    eventually(Duration::from_secs(20), "/readyz to answer 200", || async {
        (http_get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;

    let js = jetstream(&nats).await;
    publish_ticket(&js, Stage::Deploy, ticket("job-process")).await;
    wait_stored(&js, subjects::PIPELINE_STREAM, "vexxy.pipeline.wait", 1).await;

    let status = tokio::task::spawn_blocking(move || {
        let status = stage.terminate(Duration::from_secs(20));
        (status, stage.logs())
    })
    .await
    .unwrap();
    let (status, logs) = status;
    assert_eq!(status.unwrap().code(), Some(0), "{logs}");
    // JSON log lines carry the job id of the message they were written for.
    let line = logs
        .lines()
        .find(|line| line.contains("passing the ticket on"))
        .unwrap_or_else(|| panic!("no handler log line in {logs}"));
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["span"]["job_id"], "job-process", "{line}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
}
