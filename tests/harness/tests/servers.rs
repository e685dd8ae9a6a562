//! The harness starts, stops and restarts real servers.

use std::time::Duration;

use vexxy_harness::{ChildProcess, NatsServer, S3Server, port_is_open};

#[tokio::test]
async fn nats_restarts_on_the_same_port_and_keeps_jetstream_state() {
    let mut server = NatsServer::start().unwrap();
    let js = async_nats::jetstream::new(server.client().await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "KEPT".to_string(),
        subjects: vec!["kept.>".to_string()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("kept.one", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let port = server.port();
    server.stop().unwrap();
    assert!(!port_is_open(port));
    server.restart().unwrap();
    assert_eq!(server.port(), port);

    let js = async_nats::jetstream::new(server.client().await.unwrap());
    let mut stream = js.get_stream("KEPT").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    server.kill().unwrap();
    server.start_again().unwrap();
    let js = async_nats::jetstream::new(server.client().await.unwrap());
    let mut stream = js.get_stream("KEPT").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[test]
fn s3_server_starts_stops_and_starts_again() {
    let mut server = S3Server::start().unwrap();
    let port: u16 = server
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(port_is_open(port));
    assert!(server.root_dir().join(server.bucket()).is_dir());
    server.stop().unwrap();
    assert!(!port_is_open(port));
    server.start_again().unwrap();
    assert!(port_is_open(port));
}

#[test]
fn child_process_logs_and_terminates() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("echo started; trap 'echo got-term; exit 3' TERM; while true; do sleep 0.05; done");
    let mut child = ChildProcess::spawn("sh", command, &log).unwrap();
    assert!(vexxy_harness::wait_until(Duration::from_secs(5), || child
        .logs()
        .contains("started")));
    let status = child.terminate(Duration::from_secs(5)).unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(child.logs().contains("got-term"));
}
