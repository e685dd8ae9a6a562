//! Object storage round trips on a directory and on a real S3 protocol server.

use bytes::Bytes;
use vexxy_events::FailureReason;
use vexxy_harness::S3Server;
use vexxy_runtime::config::Secret;
use vexxy_runtime::{StageError, Store, StoreError, job_key};

async fn round_trip(store: &Store) {
    let key = job_key("job-store", "summary.json");
    assert!(!store.exists(&key).await.unwrap());
    let value = serde_json::json!({"counts": {"affected": 2}, "name": "ünïcode"});
    let url = store.put_json(&key, &value).await.unwrap();
    assert_eq!(url, store.url(&key));
    assert!(store.exists(&key).await.unwrap());
    let read: serde_json::Value =
        serde_json::from_slice(&store.get_bytes(&key).await.unwrap()).unwrap();
    assert_eq!(read, value);

    // Same key again: overwritten in place, not duplicated.
    let raw = Bytes::from_static(b"\x00binary\xff");
    store.put_bytes(&key, raw.clone()).await.unwrap();
    store.put_bytes(&key, raw.clone()).await.unwrap();
    assert_eq!(store.get_bytes(&key).await.unwrap(), raw);

    let missing = store
        .get_bytes(&job_key("job-store", "absent"))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
}

#[tokio::test]
async fn file_store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("file://{}", dir.path().display()), &[]).unwrap();
    round_trip(&store).await;
    let on_disk = dir.path().join("analyses/job-store/summary.json");
    assert_eq!(std::fs::read(&on_disk).unwrap(), b"\x00binary\xff");
    let url = store.url("analyses/job-store/summary.json");
    assert!(url.starts_with("file:///"), "{url}");
    assert!(url.ends_with("/analyses/job-store/summary.json"), "{url}");
}

fn s3_options(server: &S3Server) -> Vec<(String, Secret)> {
    server
        .aws_env()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), Secret::new(value)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_round_trip_against_s3s_fs() {
    let server = S3Server::start().unwrap();
    let url = format!("s3://{}/tenant-a", server.bucket());
    let store = Store::open(&url, &s3_options(&server)).unwrap();
    round_trip(&store).await;
    assert_eq!(
        store.url("analyses/job-store/summary.json"),
        format!(
            "s3://{}/tenant-a/analyses/job-store/summary.json",
            server.bucket()
        )
    );
    // s3s-fs keeps objects as files under <root>/<bucket>/<key>: the write really went through S3.
    let on_disk = server
        .root_dir()
        .join(server.bucket())
        .join("tenant-a/analyses/job-store/summary.json");
    assert_eq!(std::fs::read(on_disk).unwrap(), b"\x00binary\xff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_is_a_transient_storage_error_and_recovers() {
    let mut server = S3Server::start().unwrap();
    let store = Store::open(&format!("s3://{}", server.bucket()), &s3_options(&server)).unwrap();
    store
        .put_bytes("analyses/j/a", Bytes::from_static(b"one"))
        .await
        .unwrap();

    server.stop().unwrap();
    let error = store
        .put_bytes("analyses/j/b", Bytes::from_static(b"two"))
        .await
        .unwrap_err();
    match StageError::from(error) {
        StageError::Transient { reason, message } => {
            assert_eq!(reason, FailureReason::StorageUnavailable);
            assert!(message.contains("analyses/j/b"), "{message}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }

    server.start_again().unwrap();
    store
        .put_bytes("analyses/j/b", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes("analyses/j/a").await.unwrap(),
        Bytes::from_static(b"one")
    );
}

#[test]
fn an_unknown_store_scheme_is_refused_naming_the_variable() {
    let error = Store::open("ftp://nowhere", &[]).unwrap_err();
    assert!(error.to_string().contains("VEXXY_STORE"), "{error}");
}
